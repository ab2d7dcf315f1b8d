//! The engine's correctness reference: a Qwen2/Llama forward pass in f32 on the CPU over a per-sequence KV cache,
//! written for clarity, not speed. It is checked against transformers (via `scripts/hf_reference.py`) and the GPU
//! engine is checked against it, so it reuses the per-kernel references of [`crate::gpu::reference`] rather than a
//! second copy of the same arithmetic.

use std::collections::HashMap;
use std::path::Path;

use safetensors::SafeTensors;

use crate::gpu::reference as kernel;
use crate::model::ModelSpec;

use super::weights::{HostWeights, WeightsError, layer_tensor, to_f32};

/// Identifies one sequence's KV cache.
pub type SeqId = u32;

/// One sequence's cached K and V: per layer `[len, kv_heads, head_dim]` after RoPE (K) / as projected (V).
#[derive(Clone, Debug, Default)]
struct SeqCache {
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    len: usize,
}

/// An f32 Qwen2 (Llama when `qkv_bias` is off) forward pass over a KV cache per sequence.
#[derive(Clone, Debug)]
pub struct ReferenceModel {
    spec: ModelSpec,
    weights: HostWeights,
    caches: HashMap<SeqId, SeqCache>,
}

impl ReferenceModel {
    pub fn new(spec: ModelSpec, weights: HostWeights) -> Self {
        Self {
            spec,
            weights,
            caches: HashMap::new(),
        }
    }

    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    pub fn weights(&self) -> &HostWeights {
        &self.weights
    }

    /// Tokens cached for `seq` (0 for an unknown sequence).
    pub fn context_len(&self, seq: SeqId) -> usize {
        self.caches.get(&seq).map_or(0, |c| c.len)
    }

    /// Forgets `seq`'s cache.
    pub fn release(&mut self, seq: SeqId) {
        self.caches.remove(&seq);
    }

    /// Appends `tokens` to `seq` (creating it when new) and returns the logits of every new position, row-major
    /// `[tokens.len(), vocab]`.
    ///
    /// # Panics
    /// When a token id is not below `vocab`.
    pub fn forward(&mut self, seq: SeqId, tokens: &[u32]) -> Vec<f32> {
        let spec = &self.spec;
        let (hidden, inter, vocab) = (spec.hidden as usize, spec.intermediate as usize, spec.vocab as usize);
        let (heads, kv_heads, d) = (spec.heads as usize, spec.kv_heads as usize, spec.head_dim as usize);
        let (q_dim, kv_dim) = (heads * d, kv_heads * d);
        let eps = spec.rms_eps as f32;
        let n = tokens.len();
        let w = &self.weights;
        let cache = self.caches.entry(seq).or_insert_with(|| SeqCache {
            k: vec![Vec::new(); spec.layers as usize],
            v: vec![Vec::new(); spec.layers as usize],
            len: 0,
        });
        let first_pos = cache.len;

        let ids: Vec<i32> = tokens
            .iter()
            .map(|&t| {
                assert!(
                    t < spec.vocab,
                    "token id {t} is not below the vocabulary size {}",
                    spec.vocab
                );
                t as i32
            })
            .collect();
        let mut x = kernel::embedding(&ids, w.get("model.embed_tokens.weight"), hidden);

        for layer in 0..spec.layers as usize {
            let name = |suffix: &str| layer_tensor(layer, suffix);
            let proj = |input: &[f32], p: &str, out: usize, inp: usize| {
                let bias = spec.qkv_bias.then(|| w.get(&name(&format!("self_attn.{p}.bias"))));
                kernel::gemm(
                    input,
                    w.get(&name(&format!("self_attn.{p}.weight"))),
                    bias,
                    (n, out, inp),
                )
            };

            let h = kernel::rmsnorm(&x, w.get(&name("input_layernorm.weight")), hidden, eps);
            let mut q = proj(&h, "q_proj", q_dim, hidden);
            let mut k = proj(&h, "k_proj", kv_dim, hidden);
            let v = proj(&h, "v_proj", kv_dim, hidden);
            for (r, (qr, kr)) in q.chunks_exact_mut(q_dim).zip(k.chunks_exact_mut(kv_dim)).enumerate() {
                let pos = first_pos + r;
                rope_heads(qr, d, pos, spec.rope_theta);
                rope_heads(kr, d, pos, spec.rope_theta);
            }
            cache.k[layer].extend_from_slice(&k);
            cache.v[layer].extend_from_slice(&v);
            let attn = kernel::attention(&q, &cache.k[layer], &cache.v[layer], first_pos, (heads, kv_heads, d));
            let o = kernel::gemm(&attn, w.get(&name("self_attn.o_proj.weight")), None, (n, hidden, q_dim));
            add_in_place(&mut x, &o);

            let h = kernel::rmsnorm(&x, w.get(&name("post_attention_layernorm.weight")), hidden, eps);
            let gate = kernel::gemm(&h, w.get(&name("mlp.gate_proj.weight")), None, (n, inter, hidden));
            let up = kernel::gemm(&h, w.get(&name("mlp.up_proj.weight")), None, (n, inter, hidden));
            let act: Vec<f32> = gate.iter().zip(&up).map(|(&g, &u)| silu(g) * u).collect();
            let down = kernel::gemm(&act, w.get(&name("mlp.down_proj.weight")), None, (n, hidden, inter));
            add_in_place(&mut x, &down);
        }
        cache.len += n;

        let h = kernel::rmsnorm(&x, w.get("model.norm.weight"), hidden, eps);
        let head = if spec.tied_embeddings {
            "model.embed_tokens.weight"
        } else {
            "lm_head.weight"
        };
        kernel::gemm(&h, w.get(head), None, (n, vocab, hidden))
    }

    /// Prefill of `tokens` (appended to whatever `seq` has cached); the logits of the last position.
    ///
    /// # Panics
    /// When `tokens` is empty or holds an id not below `vocab`.
    pub fn prefill(&mut self, seq: SeqId, tokens: &[u32]) -> Vec<f32> {
        assert!(!tokens.is_empty(), "prefill of no tokens");
        let vocab = self.spec.vocab as usize;
        let logits = self.forward(seq, tokens);
        logits[logits.len() - vocab..].to_vec()
    }

    /// One decode step of `seq`: the logits after appending `token`.
    pub fn decode(&mut self, seq: SeqId, token: u32) -> Vec<f32> {
        self.forward(seq, &[token])
    }

    /// Greedy generation: prefill `prompt`, then `steps` decodes each fed the previous argmax. Returns the sampled
    /// ids (`steps + 1` of them: the prefill's and each decode's).
    pub fn generate_greedy(&mut self, seq: SeqId, prompt: &[u32], steps: usize) -> Vec<u32> {
        let mut out = vec![argmax(&self.prefill(seq, prompt))];
        for _ in 0..steps {
            let last = out[out.len() - 1];
            out.push(argmax(&self.decode(seq, last)));
        }
        out
    }
}

/// Index of the largest logit (the first among equals, as torch.argmax on CPU).
pub fn argmax(logits: &[f32]) -> u32 {
    kernel::argmax(logits, logits.len())[0] as u32
}

/// RoPE of every `d`-long head of `row` at `pos`, HF rotate-half convention (pairs (i, i + d/2)).
pub fn rope_heads(row: &mut [f32], d: usize, pos: usize, theta: f64) {
    let pos = i32::try_from(pos).expect("position fits in i32");
    for head in row.chunks_exact_mut(d) {
        kernel::rope_in_place(head, pos, theta as f32);
    }
}

fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

fn add_in_place(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

/// What `scripts/hf_reference.py` records next to its checkpoint: transformers' logits for a prefill of `prompt`
/// and greedy decode steps. `generated[0]` is the prefill's argmax and decode step `i` is fed `generated[i]`.
#[derive(Clone, Debug, PartialEq)]
pub struct HfLogits {
    pub prompt: Vec<u32>,
    pub generated: Vec<u32>,
    /// `[prompt.len(), vocab]`: every prompt position.
    pub prefill: Vec<f32>,
    /// `[generated.len() - 1, vocab]`: the logits after each decode input.
    pub decode: Vec<f32>,
    pub vocab: usize,
}

/// The relative L2 error of each step against [`HfLogits`]: index 0 is the prefill (all positions), then each decode.
#[derive(Clone, Debug, PartialEq)]
pub struct StepErrors {
    pub prefill: f64,
    pub decode: Vec<f64>,
}

impl HfLogits {
    pub const JSON: &'static str = "logits.json";
    pub const ROWS: &'static str = "logits.safetensors";

    /// Reads `logits.json` (token ids) and `logits.safetensors` (rows) from `dir`.
    pub fn load(dir: &Path) -> Result<Self, WeightsError> {
        let json_file = dir.join(Self::JSON);
        let err = |file: &Path, message: String| WeightsError::Record {
            file: file.to_path_buf(),
            message,
        };
        let text = std::fs::read_to_string(&json_file).map_err(|source| WeightsError::Io {
            path: json_file.clone(),
            source,
        })?;
        let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| err(&json_file, e.to_string()))?;
        let ids = |key: &str| -> Result<Vec<u32>, WeightsError> {
            json.get(key)
                .and_then(|v| v.as_array())
                .and_then(|a| {
                    a.iter()
                        .map(|v| v.as_u64().and_then(|x| u32::try_from(x).ok()))
                        .collect()
                })
                .ok_or_else(|| err(&json_file, format!("`{key}` is not a list of token ids")))
        };
        let (prompt, generated) = (ids("prompt")?, ids("generated")?);

        let rows_file = dir.join(Self::ROWS);
        let bytes = std::fs::read(&rows_file).map_err(|source| WeightsError::Io {
            path: rows_file.clone(),
            source,
        })?;
        let st = SafeTensors::deserialize(&bytes).map_err(|e| err(&rows_file, e.to_string()))?;
        let rows = |name: &str, count: usize| -> Result<(Vec<f32>, usize), WeightsError> {
            let view = st
                .tensor(name)
                .map_err(|e| err(&rows_file, format!("tensor `{name}`: {e}")))?;
            match view.shape() {
                &[n, vocab] if n == count => {
                    let values = to_f32(&view).ok_or_else(|| err(&rows_file, format!("`{name}` is not a float")))?;
                    Ok((values, vocab))
                }
                other => Err(err(
                    &rows_file,
                    format!("`{name}` has shape {other:?}, expected [{count}, vocab]"),
                )),
            }
        };
        let (prefill, vocab) = rows("prefill", prompt.len())?;
        let (decode, decode_vocab) = rows("decode", generated.len().saturating_sub(1))?;
        if decode_vocab != vocab {
            return Err(err(
                &rows_file,
                format!("prefill rows have {vocab} logits, decode rows {decode_vocab}"),
            ));
        }
        Ok(Self {
            prompt,
            generated,
            prefill,
            decode,
            vocab,
        })
    }

    /// Replays the recorded prefill and decodes on `model` (as sequence `seq`, which must be new) and returns the
    /// relative L2 error of each step against the record.
    ///
    /// # Panics
    /// When the record's vocabulary is not the model's.
    pub fn compare(&self, model: &mut ReferenceModel, seq: SeqId) -> StepErrors {
        assert_eq!(
            self.vocab,
            model.spec().vocab as usize,
            "the record's vocabulary is not the model's"
        );
        let prefill = kernel::rel_l2(&model.forward(seq, &self.prompt), &self.prefill);
        let decode = self
            .decode
            .chunks_exact(self.vocab)
            .zip(&self.generated)
            .map(|(want, &token)| kernel::rel_l2(&model.decode(seq, token), want))
            .collect();
        StepErrors { prefill, decode }
    }
}
