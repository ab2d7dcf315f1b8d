//! Parameter, weight-byte and per-step FLOP/byte accounting.
//!
//! The op list mirrors the engine's forward pass (DESIGN.md, "The GPU engine"): every RMSNorm after the first is
//! fused with the residual add before it, RoPE is fused with the KV-cache append, the QKV bias is applied in the
//! GEMM epilogue, lm_head writes f32 logits. Each op's FLOPs and bytes are affine in the rows it processes (tokens
//! or sampled sequences), `attn_pairs` and `kv_read_tokens`, and an op with no rows costs nothing (it is not
//! launched, so it reads no weights): `sim::analytic` relies on exactly this shape to precompute its coefficients.

use super::{FP16_BYTES, ModelSpec, StepShape};
use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum OpKind {
    Gemm,
    Attention,
    Elementwise,
}

/// FLOPs and bytes moved by one op of a step, summed over layers.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct OpCost {
    pub name: &'static str,
    pub kind: OpKind,
    pub flops: f64,
    pub bytes: f64,
    /// Kernel launches this op takes in the step (layers × launches per layer).
    pub launches: u32,
}

/// Every op of one step, in the order of [`StepOps::NAMES`]. A fixed array so that building one never allocates.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StepOps {
    pub ops: [OpCost; StepOps::COUNT],
}

impl StepOps {
    /// Number of ops in a step.
    pub const COUNT: usize = 13;

    /// The ops of one step in execution order (per-layer ops are summed over layers).
    pub const NAMES: [&'static str; StepOps::COUNT] = [
        "embedding",
        "input_norm",
        "qkv_gemm",
        "rope_kv_append",
        "attention",
        "o_gemm",
        "post_attn_norm",
        "gate_up_gemm",
        "silu_mul",
        "down_gemm",
        "final_norm",
        "lm_head",
        "argmax",
    ];

    pub fn flops(&self) -> f64 {
        self.ops.iter().map(|o| o.flops).sum()
    }

    pub fn bytes(&self) -> f64 {
        self.ops.iter().map(|o| o.bytes).sum()
    }

    pub fn launches(&self) -> u32 {
        self.ops.iter().map(|o| o.launches).sum()
    }

    /// The op called `name` (one of [`StepOps::NAMES`]).
    pub fn op(&self, name: &str) -> Option<&OpCost> {
        self.ops.iter().find(|o| o.name == name)
    }
}

/// Bytes of one f32 logit: lm_head accumulates and writes logits in f32 so that argmax ties break as in the
/// float32 reference.
const LOGIT_BYTES: f64 = 4.0;
/// Bytes of one sampled token id (i32).
const TOKEN_ID_BYTES: f64 = 4.0;

impl ModelSpec {
    /// All weights, Qwen2/Llama layout: per layer q/k/v projections (+ bias when `qkv_bias`), o, gate, up, down
    /// (no bias) and two RMSNorm weights; the embedding, the final norm, and lm_head only when it is not tied to the
    /// embedding.
    pub fn parameters(&self) -> u64 {
        let h = u64::from(self.hidden);
        let i = u64::from(self.intermediate);
        let (qd, kvd) = (self.q_dim(), self.kv_dim());
        let qkv_out = qd + 2 * kvd;
        let bias = if self.qkv_bias { qkv_out } else { 0 };
        let per_layer = h * qkv_out + bias + qd * h + 3 * h * i + 2 * h;
        let embedding = u64::from(self.vocab) * h;
        let lm_head = if self.tied_embeddings { 0 } else { embedding };
        u64::from(self.layers) * per_layer + embedding + h + lm_head
    }

    /// fp16 weights.
    pub fn weight_bytes(&self) -> u64 {
        self.parameters() * FP16_BYTES
    }

    /// FLOPs, bytes moved and kernel launches of every op of one forward step, all tensors fp16 except the f32
    /// logits. Weights are read once per step by each op that uses them; activations are read and written once per
    /// op (no fusion beyond what the op list says); attention reads the K and V of `kv_read_tokens` tokens.
    pub fn step_ops(&self, shape: &StepShape) -> StepOps {
        let b = FP16_BYTES as f64;
        let l = f64::from(self.layers);
        let h = f64::from(self.hidden);
        let i = f64::from(self.intermediate);
        let qd = self.q_dim() as f64;
        let kvd = self.kv_dim() as f64;
        let v = f64::from(self.vocab);
        let t = shape.tokens as f64;
        let s = shape.sampled_seqs as f64;
        let layers = self.layers;
        let bias = self.qkv_bias;

        let ops = [
            // Gathers one embedding row per token: the table itself is not streamed.
            op("embedding", OpKind::Elementwise, t, 1, 0.0, t * 2.0 * h * b),
            // Layer 0's input norm has no residual to add yet (the embedding output becomes the residual stream);
            // the other L − 1 are fused add + norm.
            rms_norm("input_norm", t, h, 1.0, l - 1.0, layers),
            gemm("qkv_gemm", l, t, qd + 2.0 * kvd, h, bias, b, layers),
            // Reads q, k, v; writes the rotated q in place and the rotated k and v into the cache. Rotating one
            // element is 3 FLOPs (x·cos − y·sin).
            op(
                "rope_kv_append",
                OpKind::Elementwise,
                t,
                layers,
                l * t * 3.0 * (qd + kvd),
                l * t * b * 2.0 * (qd + 2.0 * kvd),
            ),
            op(
                "attention",
                OpKind::Attention,
                t,
                layers,
                l * 4.0 * qd * shape.attn_pairs as f64,
                l * b * (2.0 * t * qd + 2.0 * kvd * shape.kv_read_tokens as f64),
            ),
            gemm("o_gemm", l, t, h, qd, false, b, layers),
            rms_norm("post_attn_norm", t, h, 0.0, l, layers),
            gemm("gate_up_gemm", l, t, 2.0 * i, h, false, b, layers),
            // SiLU(g)·u = g·u / (1 + e^−g): exp, add, divide, multiply per output element.
            op(
                "silu_mul",
                OpKind::Elementwise,
                t,
                layers,
                l * t * 4.0 * i,
                l * t * b * 3.0 * i,
            ),
            gemm("down_gemm", l, t, h, i, false, b, layers),
            rms_norm("final_norm", t, h, 0.0, 1.0, 1),
            // Only the rows that sample a token go through lm_head; a tied lm_head reads the embedding table.
            gemm("lm_head", 1.0, s, v, h, false, LOGIT_BYTES, 1),
            // One comparison per logit; writes one token id per row.
            op(
                "argmax",
                OpKind::Elementwise,
                s,
                1,
                s * v,
                s * (v * LOGIT_BYTES + TOKEN_ID_BYTES),
            ),
        ];
        StepOps { ops }
    }
}

/// An op over `rows` rows; an op with no rows is not launched and costs nothing.
fn op(name: &'static str, kind: OpKind, rows: f64, launches: u32, flops: f64, bytes: f64) -> OpCost {
    if rows == 0.0 {
        return OpCost {
            name,
            kind,
            flops: 0.0,
            bytes: 0.0,
            launches: 0,
        };
    }
    OpCost {
        name,
        kind,
        flops,
        bytes,
        launches,
    }
}

/// `count` GEMMs (one per layer) of `[m, k] × [k, n]`: 2·m·n·k FLOPs (+ m·n for a bias), reading the weights once
/// and the input once, writing the output once with `out_bytes` per element.
#[allow(clippy::too_many_arguments)]
fn gemm(name: &'static str, count: f64, m: f64, n: f64, k: f64, bias: bool, out_bytes: f64, launches: u32) -> OpCost {
    let b = FP16_BYTES as f64;
    let bias_elems = if bias { n } else { 0.0 };
    let flops = count * (2.0 * m * n * k + if bias { m * n } else { 0.0 });
    let bytes = count * (b * (n * k + bias_elems) + b * m * k + out_bytes * m * n);
    op(name, OpKind::Gemm, m, launches, flops, bytes)
}

/// `plain` RMSNorms and `fused` residual-add + RMSNorms over `rows` rows of width `h`. A norm reads x and writes
/// the normed x: 4 FLOPs an element (square, sum, scale by 1/rms, scale by the weight). The fused one also reads
/// the residual and writes the new residual: one more FLOP (the add), two more tensors.
fn rms_norm(name: &'static str, rows: f64, h: f64, plain: f64, fused: f64, launches: u32) -> OpCost {
    let b = FP16_BYTES as f64;
    let flops = rows * h * (4.0 * plain + 5.0 * fused);
    let bytes = b * h * (plain + fused) + b * rows * h * (2.0 * plain + 4.0 * fused);
    op(name, OpKind::Elementwise, rows, launches, flops, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::by_name;

    /// Small enough to check every figure by hand: hidden 8, intermediate 16, 2 layers, 2 heads of 4, 1 KV head,
    /// vocab 32. q_dim 8, kv_dim 4.
    fn tiny() -> ModelSpec {
        ModelSpec {
            name: "tiny".into(),
            hidden: 8,
            intermediate: 16,
            layers: 2,
            heads: 2,
            kv_heads: 1,
            head_dim: 4,
            vocab: 32,
            tied_embeddings: true,
            rope_theta: 1e4,
            rms_eps: 1e-6,
            qkv_bias: true,
            max_context: 128,
        }
    }

    #[test]
    fn parameter_counts_match_hugging_face() {
        assert_eq!(by_name("qwen2.5-0.5b").unwrap().parameters(), 494_032_768);
        assert_eq!(by_name("qwen2.5-1.5b").unwrap().parameters(), 1_543_714_304);
        assert_eq!(by_name("qwen2.5-7b").unwrap().parameters(), 7_615_616_512);
        assert_eq!(by_name("qwen2.5-7b").unwrap().weight_bytes(), 2 * 7_615_616_512);
    }

    #[test]
    fn tiny_parameters_by_hand() {
        // per layer: q 8·8 + 8, k 8·4 + 4, v 8·4 + 4, o 8·8, gate/up/down 3·8·16, norms 2·8 = 608
        // 2 layers + embedding 32·8 + final norm 8 = 1216 + 256 + 8
        assert_eq!(tiny().parameters(), 1480);
        // no bias: 2 layers × 16 fewer; untied: a second 32·8 matrix
        let untied = ModelSpec {
            tied_embeddings: false,
            qkv_bias: false,
            ..tiny()
        };
        assert_eq!(untied.parameters(), 1480 - 2 * 16 + 256);
    }

    #[test]
    fn step_ops_by_hand() {
        // A 3-token prompt prefilled from scratch (samples) and one decode at context 5:
        // tokens 4, sampled 2, attn_pairs 6 + 5 = 11, kv_read_tokens 3 + 5 = 8.
        let mut shape = StepShape::default();
        shape.add_prefill(0, 3, 0, true);
        shape.add_decode(5, false);
        assert_eq!(
            (shape.tokens, shape.sampled_seqs, shape.attn_pairs, shape.kv_read_tokens),
            (4, 2, 11, 8)
        );

        let ops = tiny().step_ops(&shape);
        let expected: [(&str, f64, f64, u32); StepOps::COUNT] = [
            // 4 rows × (read 8 + write 8) × 2 B
            ("embedding", 0.0, 128.0, 1),
            // flops 4·(4·8 + 5·8); bytes 2 weights·8·2 + 4·2·(2·8 + 4·8)
            ("input_norm", 288.0, 416.0, 2),
            // n = 16: flops 2·(2·4·16·8 + 4·16); bytes 2·(2·(16·8 + 16) + 2·4·8 + 2·4·16)
            ("qkv_gemm", 2176.0, 960.0, 2),
            // flops 2·4·3·(8 + 4); bytes 2·4·2·(16 + 16)
            ("rope_kv_append", 288.0, 512.0, 2),
            // flops 2·4·8·11; bytes 2·2·(2·4·8 + 2·4·8)
            ("attention", 704.0, 512.0, 2),
            // flops 2·2·4·8·8; bytes 2·(2·64 + 2·4·8 + 2·4·8)
            ("o_gemm", 1024.0, 512.0, 2),
            // flops 2·4·5·8; bytes 2·8·2 + 2·2·4·4·8
            ("post_attn_norm", 320.0, 544.0, 2),
            // n = 32: flops 2·2·4·32·8; bytes 2·(2·256 + 2·4·8 + 2·4·32)
            ("gate_up_gemm", 4096.0, 1664.0, 2),
            // flops 2·4·4·16; bytes 2·4·2·3·16
            ("silu_mul", 512.0, 768.0, 2),
            // flops 2·2·4·8·16; bytes 2·(2·128 + 2·4·16 + 2·4·8)
            ("down_gemm", 2048.0, 896.0, 2),
            // flops 4·5·8; bytes 8·2 + 2·4·4·8
            ("final_norm", 160.0, 272.0, 1),
            // 2 rows: flops 2·2·32·8; bytes 2·32·8 + 2·2·8 + 4·2·32
            ("lm_head", 1024.0, 800.0, 1),
            // flops 2·32; bytes 2·(4·32 + 4)
            ("argmax", 64.0, 264.0, 1),
        ];
        for (got, (name, flops, bytes, launches)) in ops.ops.iter().zip(expected) {
            assert_eq!(
                (got.name, got.flops, got.bytes, got.launches),
                (name, flops, bytes, launches)
            );
        }
        assert_eq!(ops.launches(), 4 + 9 * 2);
        assert_eq!(ops.flops(), expected.iter().map(|e| e.1).sum::<f64>());
    }

    #[test]
    fn op_names_follow_the_declared_order() {
        let mut shape = StepShape::default();
        shape.add_decode(10, false);
        let ops = tiny().step_ops(&shape);
        let names: Vec<_> = ops.ops.iter().map(|o| o.name).collect();
        assert_eq!(names, StepOps::NAMES);
        assert_eq!(ops.op("attention").unwrap().kind, OpKind::Attention);
        assert!(ops.op("softmax").is_none());
    }

    #[test]
    fn ops_without_rows_are_not_launched() {
        // A middle chunk of a chunked prefill samples nothing: no lm_head, no argmax, no vocab-sized weight read.
        let mut shape = StepShape::default();
        shape.add_prefill(64, 32, 0, false);
        let ops = tiny().step_ops(&shape);
        for name in ["lm_head", "argmax"] {
            let op = ops.op(name).unwrap();
            assert_eq!((op.flops, op.bytes, op.launches), (0.0, 0.0, 0), "{name}");
        }
        assert_eq!(ops.launches(), 2 + 9 * 2);
        assert_eq!(tiny().step_ops(&StepShape::default()).launches(), 0);
    }

    #[test]
    fn one_decode_step_streams_every_weight_but_the_embedding_table() {
        // No attention context, so bytes = weights + rows · per-row activations: weights = 2·bytes(1) − bytes(2).
        let one = StepShape {
            tokens: 1,
            sampled_seqs: 1,
            ..StepShape::default()
        };
        let two = StepShape {
            tokens: 2,
            sampled_seqs: 2,
            ..StepShape::default()
        };
        for name in ["qwen2.5-0.5b", "qwen2.5-7b"] {
            let m = by_name(name).unwrap();
            let weights = 2.0 * m.step_ops(&one).bytes() - m.step_ops(&two).bytes();
            let table = f64::from(m.vocab) * f64::from(m.hidden) * FP16_BYTES as f64;
            // Tied: lm_head reads the embedding table itself. Untied: the table is gathered from, never streamed.
            let expected = m.weight_bytes() as f64 - if m.tied_embeddings { 0.0 } else { table };
            assert_eq!(weights, expected, "{name}");
        }
    }

    #[test]
    fn attention_grows_with_context_and_gemms_do_not() {
        let m = by_name("qwen2.5-1.5b").unwrap();
        let (mut short, mut long) = (StepShape::default(), StepShape::default());
        short.add_decode(100, false);
        long.add_decode(10_000, false);
        let (a, b) = (m.step_ops(&short), m.step_ops(&long));
        let kv_per_token = m.kv_bytes_per_token() as f64;
        assert_eq!(
            b.op("attention").unwrap().bytes - a.op("attention").unwrap().bytes,
            9_900.0 * kv_per_token
        );
        assert_eq!(b.op("qkv_gemm"), a.op("qkv_gemm"));
    }
}
