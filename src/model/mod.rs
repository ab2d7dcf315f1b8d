//! Architecture specs and their accounting: parameters, weight bytes, KV bytes per token, the FLOPs and bytes of
//! every op of one serving step, and the engine's workspace for a sizing ([`EngineWorkspace`]). No GPU, no I/O beyond reading a `config.json`.

mod accounting;
mod catalog;
mod hf;
mod workspace;

pub use accounting::{OpCost, OpKind, StepOps};
pub use catalog::{CATALOG, by_name};
pub use hf::from_hf_config;
pub use workspace::{
    ALLOCATION_GRANULE_BYTES, ActivationBuffers, BufferSize, CUBLAS_PADDED_MAX, DECODE_PARTITION_MAX,
    DECODE_PARTITION_MIN, DECODE_UNSPLIT_MAX, DEFAULT_RUNTIME_OVERHEAD_BYTES, DEFAULT_SM_COUNT,
    DecodeAttentionWorkspace, EngineSizing, EngineWorkspace, GRAPH_BUCKETS, cublas_grid, cublas_rows, decode_partition,
    decode_partition_within, graph_partitions, mapped_workspace,
};

use serde::{Deserialize, Serialize};

/// A decoder-only transformer of the Qwen2/Llama family, fp16 weights and KV cache.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelSpec {
    pub name: String,
    pub hidden: u32,
    pub intermediate: u32,
    pub layers: u32,
    pub heads: u32,
    pub kv_heads: u32,
    pub head_dim: u32,
    pub vocab: u32,
    pub tied_embeddings: bool,
    pub rope_theta: f64,
    pub rms_eps: f64,
    /// Bias on the q/k/v projections (Qwen2: yes; Llama: no).
    pub qkv_bias: bool,
    pub max_context: u32,
}

/// Bytes of one fp16 element.
pub const FP16_BYTES: u64 = 2;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("unknown model `{name}`; built-in models: {}", catalog::names().join(", "))]
    Unknown { name: String },
    #[error("cannot read model config {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("model config {path}: {message}")]
    Config { path: String, message: String },
}

impl ModelSpec {
    /// K and V of one token over all layers, fp16.
    pub fn kv_bytes_per_token(&self) -> u64 {
        2 * u64::from(self.layers) * u64::from(self.kv_heads) * u64::from(self.head_dim) * FP16_BYTES
    }

    pub fn q_dim(&self) -> u64 {
        u64::from(self.heads) * u64::from(self.head_dim)
    }

    pub fn kv_dim(&self) -> u64 {
        u64::from(self.kv_heads) * u64::from(self.head_dim)
    }
}

/// The shape of one forward step, aggregated from a step plan: everything the accounting and the analytic and
/// linear cost models need. Counts are over the whole batch; per-layer quantities are per layer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StepShape {
    /// Rows through the dense layers: prefill chunk tokens (padding included) + one per decode sequence.
    pub tokens: u64,
    pub prefill_tokens: u64,
    pub decode_tokens: u64,
    /// Of `tokens`, those computed only because of padding.
    pub padding_tokens: u64,
    pub prefill_seqs: u64,
    pub decode_seqs: u64,
    /// Rows through lm_head and sampling: one per sequence that samples a token this step.
    pub sampled_seqs: u64,
    /// Σ over query rows of the keys each attends to (causal): attention does 4·q_dim·attn_pairs FLOPs a layer.
    pub attn_pairs: u64,
    /// Σ over sequences of the context tokens whose K and V attention reads (per layer).
    pub kv_read_tokens: u64,
    /// Longest context in the step.
    pub max_context: u64,
    /// Of `attn_pairs`, those of prefill chunks.
    pub prefill_attn_pairs: u64,
    /// Σ of the decode sequences' contexts (their share of `attn_pairs` and `kv_read_tokens`).
    pub decode_context_sum: u64,
    /// Longest decode context: split-K decode attention waits for it.
    pub decode_max_context: u64,
}

impl StepShape {
    pub fn seqs(&self) -> u64 {
        self.prefill_seqs + self.decode_seqs
    }

    /// Adds a prefill chunk of `len` tokens whose first token sits at position `offset` (tokens already cached).
    pub fn add_prefill(&mut self, offset: u64, len: u64, padding: u64, samples: bool) {
        self.tokens += len;
        self.prefill_tokens += len;
        self.padding_tokens += padding;
        self.prefill_seqs += 1;
        self.sampled_seqs += u64::from(samples);
        let pairs = len * offset + len * (len + 1) / 2;
        self.attn_pairs += pairs;
        self.prefill_attn_pairs += pairs;
        self.kv_read_tokens += offset + len;
        self.max_context = self.max_context.max(offset + len);
    }

    /// Adds a decode of one token whose attention covers `context` tokens (itself included).
    pub fn add_decode(&mut self, context: u64, padding: bool) {
        self.tokens += 1;
        self.decode_tokens += 1;
        self.padding_tokens += u64::from(padding);
        self.decode_seqs += 1;
        self.sampled_seqs += 1;
        self.attn_pairs += context;
        self.kv_read_tokens += context;
        self.max_context = self.max_context.max(context);
        self.decode_context_sum += context;
        self.decode_max_context = self.decode_max_context.max(context);
    }
}
