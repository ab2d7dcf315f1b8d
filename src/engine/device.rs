//! A model's weights on the GPU, fp16, in the engine's fused layout: one QKV projection per layer
//! (`[(q_heads + 2 kv_heads) · head_dim, hidden]`, q rows then k then v, with its fused bias) and one gate/up
//! projection (`[2 · intermediate, hidden]`, gate and up rows interleaved — row `2c` is gate row `c`, row `2c + 1`
//! up row `c` — so each value's gate and up leave the product side by side: what [`Gpu::silu_mul`] expects of its
//! input, and what lets our GEMM apply SiLU·mul in its epilogue, [`Gpu::gemm_silu_mul_with`]).

use crate::gpu::{F16Buffer, Gpu, GpuError, mix64};
use crate::model::ModelSpec;

use super::weights::{HostWeights, layer_tensor};

/// One decoder layer's weights.
pub struct LayerWeights {
    pub input_norm: F16Buffer,
    /// `[qkv_dim, hidden]`.
    pub qkv: F16Buffer,
    /// `[qkv_dim]`, when the model has q/k/v biases.
    pub qkv_bias: Option<F16Buffer>,
    /// `[hidden, q_dim]`.
    pub o: F16Buffer,
    pub post_norm: F16Buffer,
    /// `[2 · intermediate, hidden]`, gate and up rows interleaved ([`interleave_rows`]).
    pub gate_up: F16Buffer,
    /// `[hidden, intermediate]`.
    pub down: F16Buffer,
}

/// Every weight of a model on the GPU.
pub struct GpuWeights {
    /// `[vocab, hidden]`.
    pub embedding: F16Buffer,
    pub layers: Vec<LayerWeights>,
    pub final_norm: F16Buffer,
    /// `[vocab, hidden]`; `None` when tied to the embedding.
    lm_head: Option<F16Buffer>,
    bytes: u64,
}

/// The rows of `gate` and `up` (each `[rows, cols]`) interleaved: gate row `c` becomes row `2c`, up row `c` row
/// `2c + 1`.
pub fn interleave_rows(gate: &[f32], up: &[f32], cols: usize) -> Vec<f32> {
    assert_eq!(gate.len(), up.len(), "gate and up are the same shape");
    (gate.chunks_exact(cols).zip(up.chunks_exact(cols)))
        .flat_map(|(g, u)| g.iter().chain(u).copied())
        .collect()
}

/// [`interleave_rows`] undone: (gate, up).
pub fn deinterleave_rows(rows: &[f32], cols: usize) -> (Vec<f32>, Vec<f32>) {
    let (mut gate, mut up) = (Vec::with_capacity(rows.len() / 2), Vec::with_capacity(rows.len() / 2));
    for pair in rows.chunks_exact(2 * cols) {
        gate.extend_from_slice(&pair[..cols]);
        up.extend_from_slice(&pair[cols..]);
    }
    (gate, up)
}

/// Rows of the fused QKV projection.
pub fn qkv_dim(spec: &ModelSpec) -> usize {
    (spec.q_dim() + 2 * spec.kv_dim()) as usize
}

impl GpuWeights {
    /// The matrix lm_head multiplies by: its own, or the embedding when tied.
    pub fn lm_head(&self) -> &F16Buffer {
        self.lm_head.as_ref().unwrap_or(&self.embedding)
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Uploads host weights (f32, Hugging Face names and layout), fusing QKV and gate/up (interleaved).
    pub fn upload(gpu: &Gpu, spec: &ModelSpec, host: &HostWeights) -> Result<Self, GpuError> {
        let up = |v: &[f32]| gpu.upload_f32_as_f16(v);
        let cat = |names: &[String]| -> Result<F16Buffer, GpuError> {
            let mut all = Vec::new();
            for n in names {
                all.extend_from_slice(host.get(n));
            }
            up(&all)
        };
        let mut layers = Vec::with_capacity(spec.layers as usize);
        for l in 0..spec.layers as usize {
            let t = |s: &str| layer_tensor(l, s);
            let proj = |p: &str, what: &str| t(&format!("self_attn.{p}.{what}"));
            let qkv_bias = if spec.qkv_bias {
                Some(cat(&[
                    proj("q_proj", "bias"),
                    proj("k_proj", "bias"),
                    proj("v_proj", "bias"),
                ])?)
            } else {
                None
            };
            layers.push(LayerWeights {
                input_norm: up(host.get(&t("input_layernorm.weight")))?,
                qkv: cat(&[
                    proj("q_proj", "weight"),
                    proj("k_proj", "weight"),
                    proj("v_proj", "weight"),
                ])?,
                qkv_bias,
                o: up(host.get(&t("self_attn.o_proj.weight")))?,
                post_norm: up(host.get(&t("post_attention_layernorm.weight")))?,
                gate_up: up(&interleave_rows(
                    host.get(&t("mlp.gate_proj.weight")),
                    host.get(&t("mlp.up_proj.weight")),
                    spec.hidden as usize,
                ))?,
                down: up(host.get(&t("mlp.down_proj.weight")))?,
            });
        }
        let lm_head = if spec.tied_embeddings {
            None
        } else {
            Some(up(host.get("lm_head.weight"))?)
        };
        Ok(Self {
            embedding: up(host.get("model.embed_tokens.weight"))?,
            layers,
            final_norm: up(host.get("model.norm.weight"))?,
            lm_head,
            bytes: spec.weight_bytes(),
        })
    }

    /// Seeded random weights generated on the GPU (no host copy: a 1.5B model is ready in milliseconds). The same
    /// scheme as [`HostWeights::random`], not its values: matrices uniform in ±sqrt(3/fan_in) (variance 1/fan_in,
    /// so activations stay O(1) through every layer and fp16 never overflows), norm weights 1 ± 0.1, biases ±0.1.
    pub fn random(gpu: &Gpu, spec: &ModelSpec, seed: u64) -> Result<Self, GpuError> {
        let (h, i, v) = (spec.hidden as usize, spec.intermediate as usize, spec.vocab as usize);
        let (q_dim, qkv) = (spec.q_dim() as usize, qkv_dim(spec));
        let mut index = 0u64;
        let mut fill = |len: usize, center: f32, half_width: f32| -> Result<F16Buffer, GpuError> {
            index += 1;
            let mut buf = gpu.zeros::<u16>(len)?;
            gpu.init_uniform_f16(&mut buf, mix64(seed ^ mix64(index)), center, half_width)?;
            Ok(buf)
        };
        let matrix = |fan_in: usize| (3.0 / fan_in as f32).sqrt();
        let embedding = fill(v * h, 0.0, matrix(h))?;
        let mut layers = Vec::with_capacity(spec.layers as usize);
        for _ in 0..spec.layers {
            layers.push(LayerWeights {
                input_norm: fill(h, 1.0, 0.1)?,
                qkv: fill(qkv * h, 0.0, matrix(h))?,
                qkv_bias: if spec.qkv_bias {
                    Some(fill(qkv, 0.0, 0.1)?)
                } else {
                    None
                },
                o: fill(h * q_dim, 0.0, matrix(q_dim))?,
                post_norm: fill(h, 1.0, 0.1)?,
                gate_up: fill(2 * i * h, 0.0, matrix(h))?,
                down: fill(h * i, 0.0, matrix(i))?,
            });
        }
        let final_norm = fill(h, 1.0, 0.1)?;
        let lm_head = if spec.tied_embeddings {
            None
        } else {
            Some(fill(v * h, 0.0, matrix(h))?)
        };
        Ok(Self {
            embedding,
            layers,
            final_norm,
            lm_head,
            bytes: spec.weight_bytes(),
        })
    }

    /// The weights back on the host, split into Hugging Face tensors (for checking GPU-generated weights against
    /// the CPU reference).
    pub fn download(&self, gpu: &Gpu, spec: &ModelSpec) -> Result<HostWeights, GpuError> {
        let mut host = HostWeights::zeros(spec);
        let down = |b: &F16Buffer| gpu.download_f16_as_f32(b);
        let (h, q, kv) = (spec.hidden as usize, spec.q_dim() as usize, spec.kv_dim() as usize);
        host.get_mut("model.embed_tokens.weight")
            .copy_from_slice(&down(&self.embedding)?);
        host.get_mut("model.norm.weight")
            .copy_from_slice(&down(&self.final_norm)?);
        if let Some(head) = &self.lm_head {
            host.get_mut("lm_head.weight").copy_from_slice(&down(head)?);
        }
        for (l, w) in self.layers.iter().enumerate() {
            let t = |s: &str| layer_tensor(l, s);
            let mut put = |name: String, values: &[f32]| host.get_mut(&name).copy_from_slice(values);
            put(t("input_layernorm.weight"), &down(&w.input_norm)?);
            put(t("post_attention_layernorm.weight"), &down(&w.post_norm)?);
            put(t("self_attn.o_proj.weight"), &down(&w.o)?);
            put(t("mlp.down_proj.weight"), &down(&w.down)?);
            let qkv = down(&w.qkv)?;
            put(t("self_attn.q_proj.weight"), &qkv[..q * h]);
            put(t("self_attn.k_proj.weight"), &qkv[q * h..(q + kv) * h]);
            put(t("self_attn.v_proj.weight"), &qkv[(q + kv) * h..]);
            if let Some(b) = &w.qkv_bias {
                let b = down(b)?;
                put(t("self_attn.q_proj.bias"), &b[..q]);
                put(t("self_attn.k_proj.bias"), &b[q..q + kv]);
                put(t("self_attn.v_proj.bias"), &b[q + kv..]);
            }
            let (gate, up) = deinterleave_rows(&down(&w.gate_up)?, h);
            put(t("mlp.gate_proj.weight"), &gate);
            put(t("mlp.up_proj.weight"), &up);
        }
        Ok(host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::weights::expected_tensors;

    /// The engine's fused tensors hold exactly the checkpoint's parameters, which the accounting counts.
    #[test]
    fn fused_layout_holds_every_parameter() {
        for name in ["qwen2.5-0.5b", "qwen2.5-7b"] {
            let spec = crate::model::by_name(name).unwrap();
            let params: usize = expected_tensors(&spec).iter().map(|t| t.numel()).sum();
            let (h, i) = (spec.hidden as usize, spec.intermediate as usize);
            let per_layer = 2 * h
                + qkv_dim(&spec) * (h + usize::from(spec.qkv_bias))
                + h * spec.q_dim() as usize
                + 2 * i * h
                + h * i;
            let head = if spec.tied_embeddings { 0 } else { 1 };
            let fused = (1 + head) * spec.vocab as usize * h + spec.layers as usize * per_layer + h;
            assert_eq!(fused, params, "{name}");
            assert_eq!(spec.weight_bytes(), 2 * params as u64, "{name}");
        }
    }

    #[test]
    fn gate_and_up_rows_interleave_and_come_apart_again() {
        // Two rows of three columns each: gate rows 0 and 1, up rows 0 and 1.
        let gate = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let up = [-1.0, -2.0, -3.0, -4.0, -5.0, -6.0];
        let rows = interleave_rows(&gate, &up, 3);
        assert_eq!(rows, [1.0, 2.0, 3.0, -1.0, -2.0, -3.0, 4.0, 5.0, 6.0, -4.0, -5.0, -6.0]);
        let (g, u) = deinterleave_rows(&rows, 3);
        assert_eq!((g.as_slice(), u.as_slice()), (&gate[..], &up[..]));
    }

    /// One product with the interleaved rows, then SiLU·mul of adjacent outputs (what our GEMM's epilogue and the
    /// SiLU·mul kernel compute), equals the checkpoint's silu(x · gateᵀ) · (x · upᵀ).
    #[test]
    fn the_interleaved_product_through_silu_mul_is_the_mlp_activation() {
        use crate::gpu::reference as r;
        let (m, inter, k) = (3, 5, 4);
        let value = |i: usize, scale: f32| ((i * 7 + 3) % 11) as f32 * scale - 0.5;
        let x: Vec<f32> = (0..m * k).map(|i| value(i, 0.1)).collect();
        let gate: Vec<f32> = (0..inter * k).map(|i| value(i + 1, 0.13)).collect();
        let up: Vec<f32> = (0..inter * k).map(|i| value(i + 5, 0.07)).collect();
        let fused = r::silu_mul(&r::gemm(&x, &interleave_rows(&gate, &up, k), None, (m, 2 * inter, k)));
        let (g, u) = (
            r::gemm(&x, &gate, None, (m, inter, k)),
            r::gemm(&x, &up, None, (m, inter, k)),
        );
        let want: Vec<f32> = g.iter().zip(&u).map(|(&g, &u)| g / (1.0 + (-g).exp()) * u).collect();
        assert_eq!(fused.len(), want.len());
        for (a, b) in fused.iter().zip(&want) {
            assert!((a - b).abs() <= 1e-6 * b.abs().max(1.0), "{a} against {b}");
        }
    }
}
