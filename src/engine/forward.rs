//! The GPU engine: weights, a paged KV cache, activation buffers sized for the largest step, and the forward pass
//! of one [`StepPlan`] (prefill chunks and decodes mixed in one pass).
//!
//! Per step: embedding → L × [RMSNorm → QKV GEMM (+bias) → RoPE + KV append → attention (one launch for every
//! decode, one for every prefill chunk) → O GEMM → residual add + RMSNorm → gate/up GEMM → SiLU·mul (in our GEMM's
//! epilogue, or a kernel of its own after cuBLAS) → down GEMM → residual add + next RMSNorm] → the rows that sample
//! gathered → lm_head → argmax, and the sampled ids copied to the host, which is when the step's tokens exist. Row
//! order and padding: see [`super::step`].

use std::path::Path;

use crate::gpu::{
    DecodePlan, DecodeShape, DecodeWorkspace, F16Buffer, GemmPlan, Gpu, GpuError, I32Buffer, KvAppendShape, KvCacheMut,
    PagedKv, PagedKvLayout, PrefillShape, Staging, Succession,
};
use crate::model::{ActivationBuffers, BufferSize, EngineSizing, ModelError, ModelSpec, cublas_rows, graph_partitions};
use crate::sched::{ReqId, StepPlan};

use super::device::{GpuWeights, qkv_dim};
use super::step::{GRAPH_BUCKETS, Sequences, StepError, StepInputs, graph_bucket, padded_for_graph, padding_step};
use super::weights::{HostWeights, WeightsError};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Gpu(#[from] GpuError),
    #[error(transparent)]
    Step(#[from] StepError),
    #[error(transparent)]
    Weights(#[from] WeightsError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("model {model} cannot run on batchlab's kernels: {detail}")]
    Unsupported { model: String, detail: String },
    #[error(
        "{what} needs {needed_mib} MiB of GPU memory but only {free_mib} MiB are free{after}: use a smaller \
         capacity (or model), or free the GPU"
    )]
    OutOfMemory {
        what: String,
        needed_mib: u64,
        free_mib: u64,
        after: &'static str,
    },
    #[error("invalid engine configuration: {0}")]
    Config(String),
    #[error("request {id}: its logits hold no number (NaN): the forward pass broke down")]
    NanLogits { id: ReqId },
}

/// How many KV slots the cache holds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum KvCapacity {
    /// At least this many token slots (rounded up to whole blocks); an error before anything runs when they do not
    /// fit in the GPU's free memory.
    Slots(u64),
    /// This fraction (0, 1] of the memory free once weights and workspace are allocated.
    FreeMemory { fraction: f64 },
    /// `slots`, or as many as `fraction` of the free memory holds if that is fewer.
    AtMost { slots: u64, fraction: f64 },
}

/// Which implementation runs a GEMM.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GemmBackend {
    /// cuBLAS GemmEx (the bias, where there is one, by a separate epilogue kernel).
    #[default]
    Cublas,
    /// Our tensor-core kernel (bias fused).
    Ours,
}

/// The engine's GEMMs, named as the calibration profile names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GemmOp {
    Qkv,
    O,
    GateUp,
    Down,
    LmHead,
}

/// `backend` for `op` when the GEMM has at most `max_rows` rows; with our kernel, launched as `plan` where one is
/// given (the plan calibration found fastest for these rows), else as [`crate::gpu::gemm_plan`] picks; with
/// cuBLAS, on the rows asked or, with `pad`, on [`cublas_rows`] of them (where the profile timed cuBLAS).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GemmRule {
    pub op: GemmOp,
    pub max_rows: usize,
    pub backend: GemmBackend,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<GemmPlan>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pad: bool,
}

/// Which backend runs each GEMM: the first rule matching (op, rows), else `default`. A calibration profile knows
/// per weight shape and row count which backend is faster; it becomes rules here. Decode graphs of up to
/// `graph_ours_rows` rows run our kernel for every GEMM instead (with the rules' plans): a graph holding a cuBLAS
/// kernel runs serially, without programmatic launch ([`GemmPolicy::in_graph`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GemmPolicy {
    pub default: GemmBackend,
    pub rules: Vec<GemmRule>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub graph_ours_rows: usize,
}

fn is_zero(v: &usize) -> bool {
    *v == 0
}

impl GemmPolicy {
    pub fn always(backend: GemmBackend) -> Self {
        Self {
            default: backend,
            rules: Vec::new(),
            graph_ours_rows: 0,
        }
    }

    /// The policy a decode graph of `rows` rows runs: our kernel for every GEMM, launched with the rules' plans,
    /// where `rows` is at most `graph_ours_rows`; else this one.
    pub fn in_graph(&self, rows: usize) -> std::borrow::Cow<'_, GemmPolicy> {
        use std::borrow::Cow;
        if rows > self.graph_ours_rows {
            return Cow::Borrowed(self);
        }
        let rules = (self.rules.iter())
            .map(|r| GemmRule {
                backend: GemmBackend::Ours,
                ..*r
            })
            .collect();
        Cow::Owned(GemmPolicy {
            default: GemmBackend::Ours,
            rules,
            graph_ours_rows: self.graph_ours_rows,
        })
    }

    /// Whether any GEMM this policy runs goes to cuBLAS.
    pub fn uses_cublas(&self) -> bool {
        self.default == GemmBackend::Cublas || self.rules.iter().any(|r| r.backend == GemmBackend::Cublas)
    }

    pub fn backend(&self, op: GemmOp, rows: usize) -> GemmBackend {
        self.choice(op, rows).0
    }

    /// The backend for (op, rows) and, for our kernel, the launch plan its rule names (`None`: the default plan).
    pub fn choice(&self, op: GemmOp, rows: usize) -> (GemmBackend, Option<GemmPlan>) {
        self.rule(op, rows)
            .map_or((self.default, None), |r| (r.backend, r.plan))
    }

    /// The rows a cuBLAS GEMM of (op, rows) runs on: [`cublas_rows`] of them where its rule pads, else `rows`.
    pub fn cublas_m(&self, op: GemmOp, rows: usize) -> usize {
        match self.rule(op, rows) {
            Some(r) if r.pad => cublas_rows(rows as u64) as usize,
            _ => rows,
        }
    }

    fn rule(&self, op: GemmOp, rows: usize) -> Option<&GemmRule> {
        self.rules.iter().find(|r| r.op == op && rows <= r.max_rows)
    }
}

/// How the engine is built.
#[derive(Clone, Debug, PartialEq)]
pub struct EngineConfig {
    /// Tokens per KV block.
    pub block_size: u32,
    pub kv: KvCapacity,
    /// Activation buffers are allocated for steps of this many rows (padding included) and grow if a step has more.
    pub max_step_tokens: usize,
    /// Sequences one step may hold (bounds the rows that sample and the block tables).
    pub max_seqs: usize,
    /// Longest context a sequence reaches (sizes the decode attention workspace); `None`: the model's.
    pub max_context: Option<u32>,
    pub gemm: GemmPolicy,
    /// Seed of the synthetic prompt tokens ([`super::step::prompt_token`]).
    pub prompt_seed: u64,
    /// Also time each step's GPU work with CUDA events ([`StepTiming::gpu_ns`]); calibration does.
    pub time_gpu: bool,
    /// Run decode-only steps as CUDA graphs, captured at start-up per batch-size bucket
    /// ([`super::step::GRAPH_BUCKETS`]) with the step padded up to its bucket: such a step then costs GPU time,
    /// not one host launch per kernel.
    pub decode_graphs: bool,
    /// How the kernels of a decode graph follow each other: [`Succession::Programmatic`] lets each kernel launch
    /// (and start streaming its weights) while the one before it finishes, on GPUs that can (sm_90+).
    pub succession: Succession,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            block_size: 16,
            kv: KvCapacity::FreeMemory { fraction: 0.9 },
            max_step_tokens: 8192,
            max_seqs: 256,
            max_context: None,
            gemm: GemmPolicy::default(),
            prompt_seed: 0,
            time_gpu: false,
            decode_graphs: true,
            succession: Succession::Programmatic,
        }
    }
}

impl EngineConfig {
    /// An engine serving a run as `validate` runs it (and `calibrate` its serving bursts, so that the step model is
    /// fitted to engines like the ones it predicts): sized by `sizing` as the simulator sizes the run's workspace,
    /// a KV cache of `kv_slots` or what 95% of the free memory holds if fewer, steps timed on the GPU too.
    pub fn serving(sizing: &EngineSizing, kv_slots: u64, gemm: GemmPolicy, prompt_seed: u64) -> Self {
        Self {
            block_size: sizing.block_size,
            // The simulator sizes the cache from its GPU preset; the real card may hold a little less.
            kv: KvCapacity::AtMost {
                slots: kv_slots,
                fraction: 0.95,
            },
            max_step_tokens: usize::try_from(sizing.max_step_tokens).unwrap_or(usize::MAX),
            max_seqs: usize::try_from(sizing.max_seqs).unwrap_or(usize::MAX),
            // Decode graphs cover the longest context the run reaches (their attention is sized by it).
            max_context: Some(u32::try_from(sizing.max_context).unwrap_or(u32::MAX)),
            prompt_seed,
            gemm,
            decode_graphs: sizing.decode_graphs,
            time_gpu: true,
            ..Self::default()
        }
    }
}

/// GPU memory as the engine measured it (`cuMemGetInfo`: used = total − free, so the CUDA context and anything
/// else on the GPU are included) and as it computed it, in bytes. Readings are taken with the stream synchronised.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct EngineMemory {
    pub total: u64,
    /// Used before the engine allocated anything (the context, other processes, what the process keeps on the GPU
    /// across engines).
    pub used_before: u64,
    /// The weights' bytes (fp16 parameters).
    pub weights: u64,
    /// What used memory grew by while the weights were allocated: `weights` and the allocator's rounding.
    pub weights_mapped: u64,
    /// Activation buffers, allocated up front (computed: [`crate::model::ActivationBuffers::bytes`]).
    pub buffers: u64,
    /// What used memory grew by while the activation buffers were allocated.
    pub buffers_mapped: u64,
    /// Decode attention's workspace, allocated by the first decode step (computed:
    /// [`crate::model::DecodeAttentionWorkspace::bytes`]).
    pub decode_attention: u64,
    /// The KV cache: K and V of every layer and block.
    pub kv_cache: u64,
    /// What used memory grew by while the KV cache was allocated: `kv_cache` and the allocator's rounding, which
    /// depends on the cache's size (a run's capacity, not its use).
    pub kv_cache_mapped: u64,
    /// Held back, not allocated, when checking that the engine fits: for what is not computed (cuBLAS's handle and
    /// workspace, the GEMM's split-K scratch, CUDA graphs, the allocator's rounding).
    pub reserve: u64,
    pub used_after_setup: u64,
    /// Used once the decode graphs were captured (decode attention's workspace allocated by then).
    pub used_after_graphs: u64,
    /// The most ever seen used: after setup, after the decode graphs, and after each step [`Engine::record_memory`]
    /// was called for.
    pub peak_used: u64,
}

impl EngineMemory {
    /// The workspace computed for the engine's sizing: its buffers and decode attention's workspace
    /// ([`crate::model::EngineWorkspace::bytes`]).
    pub fn workspace(&self) -> u64 {
        self.buffers + self.decode_attention
    }
}

/// An engine's workspace measured once the engine is gone ([`Engine::close`]), beside the one it computed.
///
/// Measured = the most memory used while the engine lived − the memory used once it was dropped and its memory
/// freed − its weights − its KV cache as mapped. The baseline is taken after the engine, not before it: what the
/// process keeps on the GPU across engines (kernel code loaded on first use, cuBLAS's handle and workspace, the GEMM's
/// split-K scratch) is then never counted, whether this engine or an earlier one paid for it, so every engine of a
/// process is measured alike. The KV cache counts as mapped, rounding included: the rounding follows the cache's
/// capacity, and capacity is not what peak memory measures (the KV in use is).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct WorkspaceMeasurement {
    pub memory: EngineMemory,
    /// Used once the engine was dropped and the stream synchronised (freed pool memory is returned to the driver
    /// then).
    pub used_after_release: u64,
    pub measured: u64,
    /// [`EngineMemory::workspace`].
    pub computed: u64,
}

impl WorkspaceMeasurement {
    fn new(memory: EngineMemory, used_after_release: u64) -> Self {
        let measured = memory
            .peak_used
            .saturating_sub(used_after_release + memory.weights + memory.kv_cache_mapped);
        Self {
            memory,
            used_after_release,
            measured,
            computed: memory.workspace(),
        }
    }

    /// The computed workspace in whole allocator chunks beside the weights ([`crate::model::mapped_workspace`]):
    /// what the engine should hold beyond its weights and KV cache.
    pub fn computed_mapped(&self) -> u64 {
        crate::model::mapped_workspace(self.memory.weights, self.computed)
    }

    /// What the engine held beyond its computed workspace in whole chunks (or 0: an engine that met chunks the
    /// process had already mapped holds less than it needs on its own): CUDA graphs, small allocations of the
    /// driver, anything the formula does not know.
    pub fn runtime_overhead(&self) -> u64 {
        self.measured.saturating_sub(self.computed_mapped())
    }

    /// What the process kept on the GPU that it had not before this engine: first-use costs it paid (kernel
    /// code, cuBLAS, the split-K scratch growing). Not part of [`WorkspaceMeasurement::measured`].
    pub fn kept_by_process(&self) -> u64 {
        self.used_after_release.saturating_sub(self.memory.used_before)
    }

    /// Logs the measurement beside what was computed (info level): `calibrate` and `validate` both log each engine's.
    pub fn log(&self) {
        let mib = |b: u64| b as f64 / f64::from(1 << 20);
        tracing::info!(
            measured_mib = mib(self.measured),
            computed_mib = mib(self.computed),
            computed_mapped_mib = mib(self.computed_mapped()),
            runtime_overhead_mib = mib(self.runtime_overhead()),
            kept_by_process_mib = mib(self.kept_by_process()),
            "engine workspace"
        );
    }
}

/// Where a step's wall time went.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StepTiming {
    /// From the plan handed over to the last kernel issued (host preparation, input copies, every launch).
    pub issue_ns: u64,
    /// From the plan handed over to the sampled tokens on the host: the step's time.
    pub total_ns: u64,
    /// The GPU's own time from the first input copy to the last kernel (only with `time_gpu`).
    pub gpu_ns: Option<u64>,
    /// The rows of the decode graph the step replayed (its bucket), if it ran as one.
    pub graph_rows: Option<usize>,
}

/// What a step sampled: for each row that samples, its request and token, in the step's row order (decodes, then
/// the prefill chunks that sample).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StepOutput {
    pub ids: Vec<ReqId>,
    pub tokens: Vec<u32>,
    /// `[ids.len(), vocab]` f32 logits, only from [`Engine::step_with_logits`].
    pub logits: Vec<f32>,
    pub timing: StepTiming,
}

/// The paged KV cache of every layer.
struct KvCache {
    layout: PagedKvLayout,
    k: Vec<F16Buffer>,
    v: Vec<F16Buffer>,
}

/// Activation and input buffers, reused by every step.
struct Buffers {
    rows: usize,
    seqs: usize,
    table_width: usize,
    residual: F16Buffer,
    normed: F16Buffer,
    qkv: F16Buffer,
    q: F16Buffer,
    attn: F16Buffer,
    proj: F16Buffer,
    gate_up: F16Buffer,
    act: F16Buffer,
    final_rows: F16Buffer,
    logits: F16Buffer,
    tokens: I32Buffer,
    positions: I32Buffer,
    slots: I32Buffer,
    decode_context: I32Buffer,
    decode_tables: I32Buffer,
    prefill_cu: I32Buffer,
    prefill_context: I32Buffer,
    prefill_tables: I32Buffer,
    sample_rows: I32Buffer,
    sampled: I32Buffer,
}

impl Buffers {
    /// Allocates every buffer of `sizes`, each exactly as large as it says: what the engine holds is what
    /// [`ActivationBuffers::bytes`] computes, and the simulator predicts with the same numbers.
    fn new(gpu: &Gpu, sizes: &ActivationBuffers) -> Result<Self, GpuError> {
        // Destructured without `..`: every size is allocated, and nothing is allocated without a size.
        let ActivationBuffers {
            rows,
            seqs,
            table_width,
            residual,
            normed,
            qkv,
            q,
            attn,
            proj,
            gate_up,
            act,
            final_rows,
            logits,
            tokens,
            positions,
            slots,
            decode_context,
            decode_tables,
            prefill_cu,
            prefill_context,
            prefill_tables,
            sample_rows,
            sampled,
            // Allocated beside the buffers, by `Engine::new` (the decode graphs read it).
            decode_split: _,
        } = *sizes;
        Ok(Self {
            rows: rows as usize,
            seqs: seqs as usize,
            table_width: table_width as usize,
            residual: f16_buffer(gpu, residual)?,
            normed: f16_buffer(gpu, normed)?,
            qkv: f16_buffer(gpu, qkv)?,
            q: f16_buffer(gpu, q)?,
            attn: f16_buffer(gpu, attn)?,
            proj: f16_buffer(gpu, proj)?,
            gate_up: f16_buffer(gpu, gate_up)?,
            act: f16_buffer(gpu, act)?,
            final_rows: f16_buffer(gpu, final_rows)?,
            logits: f16_buffer(gpu, logits)?,
            tokens: i32_buffer(gpu, tokens)?,
            positions: i32_buffer(gpu, positions)?,
            slots: i32_buffer(gpu, slots)?,
            decode_context: i32_buffer(gpu, decode_context)?,
            decode_tables: i32_buffer(gpu, decode_tables)?,
            prefill_cu: i32_buffer(gpu, prefill_cu)?,
            prefill_context: i32_buffer(gpu, prefill_context)?,
            prefill_tables: i32_buffer(gpu, prefill_tables)?,
            sample_rows: i32_buffer(gpu, sample_rows)?,
            sampled: i32_buffer(gpu, sampled)?,
        })
    }

    fn fits(&self, x: &StepInputs) -> bool {
        fits(self.rows, self.seqs, self.table_width, x)
    }

    /// Staging for two steps' inputs (every input buffer full, and a decode split): one step's copies can still
    /// be in flight while the next is written.
    fn staging_len(&self) -> usize {
        let inputs = [
            &self.tokens,
            &self.positions,
            &self.slots,
            &self.decode_context,
            &self.decode_tables,
            &self.prefill_cu,
            &self.prefill_context,
            &self.prefill_tables,
            &self.sample_rows,
        ];
        2 * (inputs.iter().map(|b| b.len()).sum::<usize>() + 2)
    }
}

/// A zeroed fp16 buffer of `size` (which must be of 2-byte elements).
fn f16_buffer(gpu: &Gpu, size: BufferSize) -> Result<F16Buffer, GpuError> {
    assert_eq!(size.elem_bytes, 2, "an fp16 buffer");
    gpu.zeros(size.elements as usize)
}

/// A zeroed i32 buffer of `size` (which must be of 4-byte elements).
fn i32_buffer(gpu: &Gpu, size: BufferSize) -> Result<I32Buffer, GpuError> {
    assert_eq!(size.elem_bytes, 4, "an i32 buffer");
    gpu.zeros(size.elements as usize)
}

/// Whether buffers of `rows` rows, `seqs` sequences and block tables `table_width` wide hold the step `x` (its rows,
/// padding included; its decodes, chunks and sampling rows; its block tables).
pub fn fits(rows: usize, seqs: usize, table_width: usize, x: &StepInputs) -> bool {
    let step_seqs = x.decodes().max(x.chunks()).max(x.sample_rows.len());
    let width = x.decode_blocks_per_seq.max(x.prefill_blocks_per_seq);
    x.rows() <= rows && step_seqs <= seqs && width <= table_width
}

/// What an engine of `config` is sized for (`max_context` defaults to the model's).
pub fn sizing(config: &EngineConfig, spec: &ModelSpec) -> EngineSizing {
    EngineSizing {
        max_step_tokens: config.max_step_tokens as u64,
        max_seqs: config.max_seqs as u64,
        max_context: u64::from(config.max_context.unwrap_or(spec.max_context).max(1)),
        block_size: config.block_size,
        decode_graphs: config.decode_graphs,
    }
}

/// Checks that the kernels support `spec`'s shapes.
pub fn check_supported(spec: &ModelSpec) -> Result<(), EngineError> {
    let bad = |detail: String| {
        Err(EngineError::Unsupported {
            model: spec.name.clone(),
            detail,
        })
    };
    if !matches!(spec.head_dim, 64 | 128) {
        return bad(format!(
            "head_dim {} (the attention kernels take 64 or 128)",
            spec.head_dim
        ));
    }
    if spec.kv_heads == 0 || !spec.heads.is_multiple_of(spec.kv_heads) {
        return bad(format!("{} query heads over {} kv heads", spec.heads, spec.kv_heads));
    }
    let group = spec.heads / spec.kv_heads;
    if group as usize > crate::gpu::ops::MAX_GQA_GROUP {
        return bad(format!(
            "{group} query heads per kv head (at most {})",
            crate::gpu::ops::MAX_GQA_GROUP
        ));
    }
    for (what, v) in [
        ("hidden", spec.hidden as u64),
        ("q_dim", spec.q_dim()),
        ("intermediate", spec.intermediate as u64),
    ] {
        if v == 0 || !v.is_multiple_of(8) {
            return bad(format!("{what} = {v} is not a positive multiple of 8 (a GEMM's k)"));
        }
    }
    if spec.vocab == 0 {
        return bad("an empty vocabulary".into());
    }
    Ok(())
}

const MIB: u64 = 1 << 20;
/// Held back beside the computed workspace when checking that an engine fits (and never allocated as such): cuBLAS's
/// own workspace, the GEMM's split-K scratch (at most 16 slices of a product under two blocks per SM: tens of MiB on
/// an H100), CUDA graphs and the allocator's rounding.
const LIBRARY_RESERVE: u64 = 128 * MIB;

/// The engine: a model on one GPU with its KV cache and the requests it serves.
pub struct Engine {
    gpu: Gpu,
    spec: ModelSpec,
    config: EngineConfig,
    weights: GpuWeights,
    kv: KvCache,
    seqs: Sequences,
    bufs: Buffers,
    decode_ws: DecodeWorkspace,
    /// The split of a graphed decode step's attention ({partitions, tokens each}), written before each replay.
    decode_split: I32Buffer,
    /// Page-locked memory the step inputs are copied to the GPU from ([`Buffers::staging_len`]).
    staging: Staging,
    memory: EngineMemory,
    stopwatch: Option<crate::gpu::Stopwatch>,
    /// Decode graphs by bucket.
    graphs: std::collections::HashMap<usize, CapturedGraph>,
    last_timing: StepTiming,
    /// The host's time by kind of call over the steps issued since [`Engine::time_host_calls`] switched it on.
    host_calls: Option<Vec<HostCalls>>,
}

/// A decode step captured for one bucket, and the generations of the workspaces it writes into: when one has
/// moved since, the graph is captured again.
struct CapturedGraph {
    graph: crate::gpu::Graph,
    scratch: u64,
    workspace: u64,
    /// The attention partitions its grid covers ([`Engine::bucket_parts`]).
    parts: usize,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("model", &self.spec.name)
            .field("kv", &self.kv.layout)
            .field("memory", &self.memory)
            .finish_non_exhaustive()
    }
}

/// Where the weights come from.
pub enum WeightSource<'a> {
    /// Generated on the GPU from a seed.
    Random { seed: u64 },
    /// Uploaded from the host.
    Host(&'a HostWeights),
}

impl Engine {
    /// A model with seeded random weights generated on the GPU.
    pub fn random(gpu: Gpu, spec: ModelSpec, seed: u64, config: EngineConfig) -> Result<Self, EngineError> {
        Self::new(gpu, spec, WeightSource::Random { seed }, config)
    }

    /// A Hugging Face checkpoint folder (`config.json` + `*.safetensors`).
    pub fn from_checkpoint(gpu: Gpu, dir: &Path, config: EngineConfig) -> Result<Self, EngineError> {
        let spec = crate::model::from_hf_config(dir)?;
        check_supported(&spec)?;
        let host = HostWeights::load(dir, &spec)?;
        Self::new(gpu, spec, WeightSource::Host(&host), config)
    }

    /// Checks the model and the configuration, measures free memory, and refuses (before allocating anything
    /// large) a model, workspace or KV capacity that does not fit; then allocates weights, buffers and the cache.
    pub fn new(
        gpu: Gpu,
        spec: ModelSpec,
        weights: WeightSource<'_>,
        config: EngineConfig,
    ) -> Result<Self, EngineError> {
        check_supported(&spec)?;
        if config.block_size == 0 || config.max_seqs == 0 || config.max_step_tokens == 0 {
            return Err(EngineError::Config(format!(
                "block_size, max_seqs and max_step_tokens must be positive: {config:?}"
            )));
        }
        if let KvCapacity::FreeMemory { fraction } | KvCapacity::AtMost { fraction, .. } = config.kv
            && !(fraction > 0.0 && fraction <= 1.0)
        {
            return Err(EngineError::Config(format!(
                "the KV cache's share of free memory must be in (0, 1], got {fraction}"
            )));
        }
        // cuBLAS's handle and its workspace belong to the GPU handle (made once, kept for later engines): made
        // before this engine's memory baseline, so that no engine counts them as its own.
        if config.gemm.uses_cublas() {
            gpu.prepare_cublas()?;
        }
        // Memory freed but not yet handed back (the allocator returns it when the stream is synchronised) is not
        // in use: wait for it.
        gpu.synchronize()?;
        let (free, total) = gpu.memory()?;
        let (free, total) = (free as u64, total as u64);
        let used_before = total - free;
        let bs = config.block_size as usize;
        let workspace = spec.engine_workspace(&sizing(&config, &spec), gpu.info().sm_count);
        let reserve = LIBRARY_RESERVE;
        let fixed = spec.weight_bytes() + workspace.bytes() + reserve;
        if fixed > free {
            return Err(EngineError::OutOfMemory {
                what: format!(
                    "{} (weights {} MiB, activations {} MiB, decode attention {} MiB, libraries {} MiB)",
                    spec.name,
                    spec.weight_bytes() / MIB,
                    workspace.buffers.bytes() / MIB,
                    workspace.decode_attention.bytes() / MIB,
                    reserve / MIB
                ),
                needed_mib: fixed.div_ceil(MIB),
                free_mib: free / MIB,
                after: "",
            });
        }
        let block_bytes = spec.kv_bytes_per_token() * config.block_size as u64;
        let free_for_kv = free - fixed;
        let num_blocks = match config.kv {
            KvCapacity::Slots(slots) => {
                let blocks = slots.div_ceil(config.block_size as u64).max(1);
                if blocks * block_bytes > free_for_kv {
                    return Err(EngineError::OutOfMemory {
                        what: format!("a KV cache of {slots} token slots"),
                        needed_mib: (blocks * block_bytes).div_ceil(MIB),
                        free_mib: free_for_kv / MIB,
                        after: " once the weights and workspace are allocated",
                    });
                }
                blocks
            }
            KvCapacity::FreeMemory { fraction } | KvCapacity::AtMost { fraction, .. } => {
                let mut blocks = (free_for_kv as f64 * fraction) as u64 / block_bytes;
                if let KvCapacity::AtMost { slots, .. } = config.kv {
                    blocks = blocks.min(slots.div_ceil(config.block_size as u64).max(1));
                }
                if blocks == 0 {
                    return Err(EngineError::OutOfMemory {
                        what: "one KV block".into(),
                        needed_mib: block_bytes.div_ceil(MIB),
                        free_mib: free_for_kv / MIB,
                        after: " once the weights and workspace are allocated",
                    });
                }
                blocks
            }
        };
        let num_blocks = u32::try_from(num_blocks)
            .ok()
            .filter(|&b| i32::try_from(b as u64 * config.block_size as u64).is_ok())
            .ok_or_else(|| EngineError::Config(format!("{num_blocks} KV blocks do not fit the kernels' i32 slots")))?;

        // Used memory after each allocation, the stream synchronised: what each took, the allocator's rounding
        // included (it maps memory in chunks, so the readings step by 2 MiB and more).
        let used_now = |gpu: &Gpu| -> Result<u64, GpuError> {
            gpu.synchronize()?;
            let (free_now, _) = gpu.memory()?;
            Ok(total - free_now as u64)
        };
        let weights = match weights {
            WeightSource::Random { seed } => GpuWeights::random(&gpu, &spec, seed)?,
            WeightSource::Host(host) => GpuWeights::upload(&gpu, &spec, host)?,
        };
        let used_after_weights = used_now(&gpu)?;
        let mut bufs = Buffers::new(&gpu, &workspace.buffers)?;
        let used_after_buffers = used_now(&gpu)?;
        let layout = PagedKvLayout {
            num_blocks: num_blocks as usize,
            block_size: bs,
            kv_heads: spec.kv_heads as usize,
            head_dim: spec.head_dim as usize,
        };
        let mut k = Vec::with_capacity(spec.layers as usize);
        let mut v = Vec::with_capacity(spec.layers as usize);
        for _ in 0..spec.layers {
            k.push(gpu.zeros::<u16>(layout.elements())?);
            v.push(gpu.zeros::<u16>(layout.elements())?);
        }
        let used_after_kv = used_now(&gpu)?;
        // The kernels cuBLAS picks for the engine's shapes are loaded now, not in a step's time. They stay with the
        // GPU handle for later engines, so they are not this engine's workspace (see `WorkspaceMeasurement`).
        let warmed = warm_cublas(&gpu, &config.gemm, &spec, &weights, &mut bufs)?;
        if warmed > 0 {
            tracing::debug!(shapes = warmed, "cuBLAS shapes warmed");
        }
        let used_after_setup = used_now(&gpu)?;
        let memory = EngineMemory {
            total,
            used_before,
            weights: weights.bytes(),
            weights_mapped: used_after_weights.saturating_sub(used_before),
            buffers: workspace.buffers.bytes(),
            buffers_mapped: used_after_buffers.saturating_sub(used_after_weights),
            decode_attention: workspace.decode_attention.bytes(),
            kv_cache: 2 * spec.layers as u64 * layout.elements() as u64 * 2,
            kv_cache_mapped: used_after_kv.saturating_sub(used_after_buffers),
            reserve,
            used_after_setup,
            used_after_graphs: used_after_setup,
            peak_used: used_after_setup,
        };
        tracing::info!(
            model = %spec.name,
            kv_blocks = num_blocks,
            kv_slots = layout.num_slots(),
            weights_mib = memory.weights / MIB,
            kv_mib = memory.kv_cache / MIB,
            workspace_mib = memory.workspace() / MIB,
            used_mib = used_after_setup / MIB,
            used_before_mib = used_before / MIB,
            first_gate_up_at = %format!("{:#x}", weights.layers.first().map_or(0, |l| gpu.address(&l.gate_up))),
            lm_head_at = %format!("{:#x}", gpu.address(weights.lm_head())),
            first_k_at = %format!("{:#x}", k.first().map_or(0, |b| gpu.address(b))),
            last_v_at = %format!("{:#x}", v.last().map_or(0, |b| gpu.address(b))),
            "engine ready"
        );
        let seqs = Sequences::new(config.block_size, num_blocks, spec.vocab, config.prompt_seed);
        let gpu_split = i32_buffer(&gpu, workspace.buffers.decode_split)?;
        let staging = gpu.staging(bufs.staging_len())?;
        let stopwatch = if config.time_gpu { Some(gpu.stopwatch()?) } else { None };
        let mut engine = Self {
            gpu,
            spec,
            config,
            weights,
            kv: KvCache { layout, k, v },
            seqs,
            bufs,
            decode_ws: DecodeWorkspace::new(),
            decode_split: gpu_split,
            staging,
            memory,
            stopwatch,
            graphs: std::collections::HashMap::new(),
            last_timing: StepTiming::default(),
            host_calls: None,
        }
        .with_graphs()?;
        engine.memory.used_after_graphs = engine.record_memory()?;
        tracing::debug!(memory = ?engine.memory, "engine memory after setup");
        Ok(engine)
    }

    /// The engine with its decode graphs ([`Engine::capture_graphs`]).
    fn with_graphs(mut self) -> Result<Self, EngineError> {
        self.capture_graphs()?;
        Ok(self)
    }

    /// Drops every decode graph and captures and instantiates them all again, as at start-up (each launched once):
    /// whether a step's pace belongs to its engine or to the graphs it replays (`bench-engine --recapture`). Without
    /// decode graphs, nothing.
    pub fn recapture_decode_graphs(&mut self) -> Result<(), EngineError> {
        self.gpu.synchronize()?;
        self.graphs.clear();
        self.capture_graphs()
    }

    /// Captures a decode graph for every bucket the buffers hold, largest first (so the workspaces grow once),
    /// again while a capture moved a workspace an earlier one uses.
    fn capture_graphs(&mut self) -> Result<(), EngineError> {
        if !self.config.decode_graphs {
            return Ok(());
        }
        let limit = self.bufs.seqs.min(self.bufs.rows);
        let buckets: Vec<usize> = GRAPH_BUCKETS.iter().rev().copied().filter(|&b| b <= limit).collect();
        for _ in 0..3 {
            for &b in &buckets {
                if !self.graph_current(b) {
                    let x = padding_step(b, self.bufs.table_width, self.config.block_size as usize);
                    let parts = self.bucket_parts(b);
                    self.write_split(&x, parts)?;
                    self.capture(b, &x, parts)?;
                }
            }
            if buckets.iter().all(|&b| self.graph_current(b)) {
                break;
            }
        }
        // Each graph launched once before any step (see `replay_all_graphs`).
        self.replay_all_graphs()?;
        self.gpu.synchronize()?;
        let used = self.record_memory()?;
        // Where the buffers the graphs hold beside the engine's own lie (the GEMM split-K scratch is the process's,
        // decode attention's workspace the engine's): what to set beside each engine's pace (`validate` names the
        // engine of each run; reports/pace-keep-h100/).
        let [part_out, part_ml, counters] = self.decode_ws.addresses(&self.gpu);
        tracing::info!(
            buckets = buckets.len(),
            used_mib = used / MIB,
            gemm_scratch_at = %format!("{:#x}", self.gpu.scratch_address()),
            gemm_scratch_generation = self.gpu.scratch_generation(),
            decode_partials_at = %format!("{part_out:#x}"),
            decode_max_sum_at = %format!("{part_ml:#x}"),
            decode_counters_at = %format!("{counters:#x}"),
            "decode graphs captured"
        );
        Ok(())
    }

    /// Launches every captured decode graph once, smallest first, each on its bucket's padding step with the
    /// attention split it was captured for — exactly what its capture ran, so no KV is written and the decode
    /// attention's merge counters end at zero as they began. Measured on an H100 (driver 580): nearly every engine
    /// whose graphs had only been captured replayed them about 100 µs per step slower (qwen2.5-0.5b's one-row step
    /// 1.14–1.17 against 1.05–1.09 ms; qwen2.5-1.5b's 2.12–2.17 against 2.00–2.04 ms) until a step launched some
    /// graph for the first time, so whether a `validate` run measured 10% slower depended on the runs before it.
    /// Launched once each right after capture, every engine probed replayed at the faster time from its first step.
    /// Why is not known. A graph a step captures again later (after a workspace moved) is not launched this way:
    /// probes found such graphs slow again, and one launch of every graph put five of six engines right.
    fn replay_all_graphs(&mut self) -> Result<(), EngineError> {
        let mut buckets: Vec<usize> = self.graphs.keys().copied().collect();
        buckets.sort_unstable();
        for b in buckets {
            let x = padding_step(b, self.bufs.table_width, self.config.block_size as usize);
            let most = self.graphs[&b].parts;
            let parts = self.write_split(&x, most)?;
            self.upload_inputs(&x)?;
            self.launch_graph(b, parts)?;
        }
        Ok(())
    }

    /// Whether decode attention's merge counters (one per sequence and kv head, reset by the last partition to
    /// finish) are all zero, as they must be between steps: a launch that left one set would make a later step merge
    /// before all its partitions are done. For tests.
    pub fn decode_counters_at_rest(&self) -> Result<bool, EngineError> {
        Ok(self.decode_ws.counters_at_rest(&self.gpu)?)
    }

    /// Whether bucket `b` has a graph whose workspaces are still where they were.
    fn graph_current(&self, b: usize) -> bool {
        self.graph_moved(b) == Some((false, false))
    }

    /// For bucket `b`'s graph, whether the GEMM scratch and the decode attention workspace moved since it was
    /// captured (`None`: there is no graph).
    fn graph_moved(&self, b: usize) -> Option<(bool, bool)> {
        self.graphs.get(&b).map(|g| {
            (
                g.scratch != self.gpu.scratch_generation(),
                g.workspace != self.decode_ws.generation(),
            )
        })
    }

    /// The most decode attention partitions a step in bucket `b` can need, over every batch that runs in it and
    /// every context the block tables hold ([`crate::model::graph_partitions`], which the simulator sizes the
    /// workspace with too).
    fn bucket_parts(&self, b: usize) -> usize {
        let longest = self.bufs.table_width as u64 * u64::from(self.config.block_size);
        graph_partitions(self.gpu.info().sm_count, u64::from(self.spec.kv_heads), b, longest) as usize
    }

    /// Writes the attention split of the decode-only step `x` (before padding) as a graph whose grid covers `most`
    /// partitions reads it, and returns its partitions (at most `most`): what the graph launches
    /// ([`Graph::set_partitions`](crate::gpu::Graph::set_partitions)).
    fn write_split(&mut self, x: &StepInputs, most: usize) -> Result<usize, GpuError> {
        let shape = DecodeShape {
            num_seqs: x.decodes().max(1),
            q_heads: self.spec.heads as usize,
            max_context_len: x.max_decode_context.max(1),
            partition_size: None,
        };
        let (parts, size) = self.gpu.decode_split(&shape, self.spec.kv_heads as usize);
        let (parts, size) = if parts <= most {
            (parts, size)
        } else {
            (most, shape.max_context_len.div_ceil(most))
        };
        self.gpu
            .write_prefix_staged(&mut self.staging, &[parts as i32, size as i32], &mut self.decode_split)?;
        Ok(parts)
    }

    /// Launches bucket `b`'s graph with its decode attention's grid at `parts` partitions, the step's own.
    fn launch_graph(&mut self, b: usize, parts: usize) -> Result<(), EngineError> {
        let graph = &mut self.graphs.get_mut(&b).expect("a captured graph").graph;
        graph.set_partitions(u32::try_from(parts).unwrap_or(u32::MAX))?;
        Ok(graph.launch()?)
    }

    /// Uploads the padded step `x` and runs it once as usual (every workspace then has its size, and its result
    /// stands), then records the same launches as bucket `b`'s graph, its attention grid covering `parts`
    /// partitions ([`Engine::bucket_parts`]). The attention split must have been written ([`Engine::write_split`]).
    fn capture(&mut self, b: usize, x: &StepInputs, parts: usize) -> Result<(), EngineError> {
        self.upload_inputs(x)?;
        self.forward(x, Some(parts), &mut HostProbe::new(false))?;
        self.gpu.begin_capture()?;
        let issued = self.forward(x, Some(parts), &mut HostProbe::new(false));
        let graph = self.gpu.end_capture(issued, self.config.succession)?;
        self.graphs.insert(
            b,
            CapturedGraph {
                graph,
                scratch: self.gpu.scratch_generation(),
                workspace: self.decode_ws.generation(),
                parts,
            },
        );
        Ok(())
    }

    /// The context partitions the decode attention of the graph serving `rows` decodes launches with now: the last
    /// step's own split (or, before any step, the most its bucket can need). `None` without such a graph. For tests.
    pub fn graph_launch_partitions(&self, rows: usize) -> Option<u32> {
        let b = graph_bucket(rows, self.bufs.seqs.min(self.bufs.rows))?;
        self.graphs.get(&b).and_then(|g| g.graph.partitions())
    }

    /// From now on (`on`) or no longer, sum the host's time in each kind of call of every step's issue (preparing
    /// the inputs, uploading them, each kernel's launch by op: "qkv gemm", "prefill attention", …, a graph's
    /// launch), for [`Engine::take_host_calls`]. The clock is read once a call.
    pub fn time_host_calls(&mut self, on: bool) {
        self.host_calls = on.then(Vec::new);
    }

    /// The host's time by kind of call since it was switched on or last taken, in the order the calls first came;
    /// empty when it is off. Every step marks "prepare" once, so its count is the steps'.
    pub fn take_host_calls(&mut self) -> Vec<HostCalls> {
        self.host_calls.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// Kernel-to-kernel edges made programmatic, over every decode graph captured so far.
    pub fn programmatic_edges(&self) -> usize {
        self.graphs.values().map(|g| g.graph.programmatic_edges()).sum()
    }

    /// Where the last step's time went.
    pub fn last_timing(&self) -> StepTiming {
        self.last_timing
    }

    /// Gives the GPU back (weights, cache and buffers are freed), for the next engine on the same device.
    pub fn into_gpu(self) -> Gpu {
        self.gpu
    }

    /// Gives the GPU back like [`Engine::into_gpu`], once the engine's memory is freed (the stream synchronised:
    /// the allocator returns freed memory to the driver then), and measures the engine's workspace against the
    /// memory in use after it ([`WorkspaceMeasurement`]). `validate` and `calibrate` both measure engines this way.
    pub fn close(self) -> (Gpu, Result<WorkspaceMeasurement, GpuError>) {
        let memory = self.memory;
        // Everything but the GPU handle is dropped in `into_gpu`: its frees are queued on the stream.
        let gpu = self.into_gpu();
        let measured = gpu.synchronize().and_then(|()| gpu.memory()).map(|(free, total)| {
            let m = WorkspaceMeasurement::new(memory, (total - free) as u64);
            tracing::debug!(
                measured_mib = m.measured as f64 / MIB as f64,
                computed_mib = m.computed as f64 / MIB as f64,
                computed_mapped_mib = m.computed_mapped() as f64 / MIB as f64,
                kept_by_process_mib = m.kept_by_process() as f64 / MIB as f64,
                measurement = ?m,
                "engine closed"
            );
            m
        });
        (gpu, measured)
    }

    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    pub fn weights(&self) -> &GpuWeights {
        &self.weights
    }

    /// Token slots the KV cache holds (whole blocks).
    pub fn kv_capacity_slots(&self) -> u64 {
        self.kv.layout.num_slots() as u64
    }

    pub fn kv_layout(&self) -> PagedKvLayout {
        self.kv.layout
    }

    pub fn sequences(&self) -> &Sequences {
        &self.seqs
    }

    pub fn sequences_mut(&mut self) -> &mut Sequences {
        &mut self.seqs
    }

    /// Makes request `id` (a prompt of `prompt_len` synthetic tokens) known to the engine.
    pub fn register(&mut self, id: ReqId, prompt_len: u32) -> Result<(), EngineError> {
        Ok(self.seqs.register(id, prompt_len)?)
    }

    /// Makes request `id` known with the given prompt tokens instead of synthetic ones (reference checks).
    pub fn register_prompt(&mut self, id: ReqId, prompt: Vec<u32>) -> Result<(), EngineError> {
        Ok(self.seqs.register_prompt(id, prompt)?)
    }

    /// Forgets request `id`, its KV blocks freed.
    pub fn release(&mut self, id: ReqId) {
        self.seqs.remove(id);
    }

    pub fn memory(&self) -> EngineMemory {
        self.memory
    }

    /// Measures used GPU memory now and keeps the peak; returns the bytes used.
    pub fn record_memory(&mut self) -> Result<u64, EngineError> {
        let (free, total) = self.gpu.memory()?;
        let used = (total - free) as u64;
        self.memory.peak_used = self.memory.peak_used.max(used);
        Ok(used)
    }

    /// Runs one step and returns the tokens it sampled (on the host: the step is over).
    pub fn step(&mut self, plan: &StepPlan) -> Result<StepOutput, EngineError> {
        self.run(plan, false)
    }

    /// [`Engine::step`], also returning the f32 logits of every row that sampled (for tests).
    pub fn step_with_logits(&mut self, plan: &StepPlan) -> Result<StepOutput, EngineError> {
        self.run(plan, true)
    }

    fn run(&mut self, plan: &StepPlan, want_logits: bool) -> Result<StepOutput, EngineError> {
        let started = std::time::Instant::now();
        if plan.is_empty() {
            for &id in &plan.preempted {
                self.seqs.release_kv(id);
            }
            return Ok(StepOutput::default());
        }
        let mut probe = HostProbe::new(self.host_calls.is_some());
        let x = self.seqs.prepare(plan)?;
        probe.mark("prepare");
        if !self.bufs.fits(&x) {
            let seqs = x.decodes().max(x.chunks()).max(x.sample_rows.len());
            let width = x.decode_blocks_per_seq.max(x.prefill_blocks_per_seq);
            let (rows, seqs, width) = (
                x.rows().max(self.bufs.rows),
                seqs.max(self.bufs.seqs),
                width.max(self.bufs.table_width),
            );
            tracing::warn!(
                rows,
                seqs,
                width,
                "a step outgrew the engine's buffers: reallocating them (its workspace is no longer what was computed \
                 for its sizing)"
            );
            let sizes = ActivationBuffers::new(&self.spec, rows as u64, seqs as u64, width as u64);
            // The graphs hold the old buffers' addresses.
            self.graphs.clear();
            self.bufs = Buffers::new(&self.gpu, &sizes)?;
            self.staging = self.gpu.staging(self.bufs.staging_len())?;
            self.memory.buffers = sizes.bytes();
        }
        if let Some(w) = &self.stopwatch {
            w.start(&self.gpu)?;
        }
        let bucket = (self.config.decode_graphs && x.chunks() == 0 && x.decode_blocks_per_seq <= self.bufs.table_width)
            .then(|| graph_bucket(x.decodes(), self.bufs.seqs.min(self.bufs.rows)))
            .flatten();
        match bucket {
            Some(b) => {
                let p = padded_for_graph(&x, b, self.bufs.table_width, self.config.block_size as usize);
                let current = self.graph_current(b);
                let parts = if current {
                    self.graphs[&b].parts
                } else {
                    self.bucket_parts(b)
                };
                let own = self.write_split(&x, parts)?;
                if current {
                    self.upload_inputs(&p)?;
                    probe.mark("upload");
                    self.launch_graph(b, own)?;
                    probe.mark("graph launch");
                } else {
                    // A workspace moved (or the buffers were reallocated): this step captures the graph anew.
                    let (scratch, workspace) = self.graph_moved(b).unwrap_or_default();
                    // Info, not debug: rare, and a graph captured in mid-serving was seen to replay slower than
                    // one launched once right after its capture (`replay_all_graphs`).
                    tracing::info!(bucket = b, scratch, workspace, "decode graph captured again in a step");
                    self.capture(b, &p, parts)?;
                    probe.mark("graph capture");
                }
            }
            None => {
                self.upload_inputs(&x)?;
                probe.mark("upload");
                self.forward(&x, None, &mut probe)?;
            }
        }
        if let Some(w) = &self.stopwatch {
            w.stop(&self.gpu)?;
        }
        let issue_ns = started.elapsed().as_nanos() as u64;
        if let (Some(all), Some(step)) = (&mut self.host_calls, probe.calls.take()) {
            for c in step {
                add_calls(all, c);
            }
        }
        let n = x.sample_rows.len();
        let raw = self.gpu.download_prefix(&self.bufs.sampled, n)?;
        let total_ns = started.elapsed().as_nanos() as u64;
        let gpu_ns = match &self.stopwatch {
            Some(w) => Some((w.elapsed_ms()? * 1e6) as u64),
            None => None,
        };
        tracing::debug!(
            rows = x.rows(),
            decodes = x.decodes(),
            chunks = x.chunks(),
            graph = ?bucket,
            issue_us = issue_ns / 1000,
            total_us = total_ns / 1000,
            gpu_us = gpu_ns.map(|g| g / 1000),
            slowest_call = probe.slowest.1,
            slowest_call_us = probe.slowest.0.as_micros() as u64,
            "engine step"
        );
        let logits = if want_logits {
            let v = self.spec.vocab as usize;
            let bits = self.gpu.download_prefix(&self.bufs.logits, n * v)?;
            bits.into_iter().map(|b| half::f16::from_bits(b).to_f32()).collect()
        } else {
            Vec::new()
        };
        let mut tokens = Vec::with_capacity(n);
        for (&t, &id) in raw.iter().zip(&x.sample_ids) {
            match u32::try_from(t) {
                Ok(t) if t < self.spec.vocab => tokens.push(t),
                _ => return Err(EngineError::NanLogits { id }),
            }
        }
        self.seqs.commit_samples(&x.sample_ids, &tokens);
        self.last_timing = StepTiming {
            issue_ns,
            total_ns,
            gpu_ns,
            graph_rows: bucket,
        };
        Ok(StepOutput {
            ids: x.sample_ids,
            tokens,
            logits,
            timing: self.last_timing,
        })
    }

    fn upload_inputs(&mut self, x: &StepInputs) -> Result<(), GpuError> {
        let (g, b, st) = (&self.gpu, &mut self.bufs, &mut self.staging);
        g.write_prefix_staged(st, &x.tokens, &mut b.tokens)?;
        g.write_prefix_staged(st, &x.positions, &mut b.positions)?;
        g.write_prefix_staged(st, &x.slots, &mut b.slots)?;
        if x.decodes() > 0 {
            g.write_prefix_staged(st, &x.decode_context, &mut b.decode_context)?;
            g.write_prefix_staged(st, &x.decode_tables, &mut b.decode_tables)?;
        }
        if x.chunks() > 0 {
            g.write_prefix_staged(st, &x.prefill_cu, &mut b.prefill_cu)?;
            g.write_prefix_staged(st, &x.prefill_context, &mut b.prefill_context)?;
            g.write_prefix_staged(st, &x.prefill_tables, &mut b.prefill_tables)?;
        }
        g.write_prefix_staged(st, &x.sample_rows, &mut b.sample_rows)?;
        Ok(())
    }

    /// Issues every kernel of the step on the GPU's stream (nothing waits here). `graph_parts`: the step is a
    /// decode graph's, whose attention grid covers that many partitions and reads its split from the device.
    fn forward(&mut self, x: &StepInputs, graph_parts: Option<usize>, probe: &mut HostProbe) -> Result<(), GpuError> {
        let Self {
            gpu,
            spec,
            config,
            weights,
            kv,
            bufs: b,
            decode_ws,
            decode_split,
            ..
        } = self;
        let t = x.rows();
        // A decode graph's capture: within `graph_ours_rows`, our kernel for every GEMM (programmatic launch).
        let policy = match graph_parts {
            Some(_) if config.succession == Succession::Programmatic => config.gemm.in_graph(t),
            _ => std::borrow::Cow::Borrowed(&config.gemm),
        };
        let policy = policy.as_ref();
        let (h, inter, vocab) = (spec.hidden as usize, spec.intermediate as usize, spec.vocab as usize);
        let (qh, q_dim, qkv) = (spec.heads as usize, spec.q_dim() as usize, qkv_dim(spec));
        let eps = spec.rms_eps as f32;
        let layout = kv.layout;

        gpu.embedding(&b.tokens, &weights.embedding, &mut b.residual, t, (vocab, h))?;
        probe.mark("embedding");
        let first_norm = weights.layers.first().map_or(&weights.final_norm, |l| &l.input_norm);
        gpu.rmsnorm(&b.residual, first_norm, &mut b.normed, t, h, eps)?;
        probe.mark("rmsnorm");
        for (l, w) in weights.layers.iter().enumerate() {
            gemm(
                gpu,
                policy,
                GemmOp::Qkv,
                &b.normed,
                &w.qkv,
                w.qkv_bias.as_ref(),
                &mut b.qkv,
                (t, qkv, h),
            )?;
            probe.mark("qkv gemm");
            let shape = KvAppendShape {
                tokens: t,
                q_heads: qh,
                rope_theta: spec.rope_theta as f32,
            };
            let cache = KvCacheMut {
                layout,
                k: &mut kv.k[l],
                v: &mut kv.v[l],
            };
            gpu.kv_append_rope(&shape, &b.qkv, &b.positions, &b.slots, &mut b.q, cache)?;
            probe.mark("kv append");
            let paged = |block_tables, max_blocks_per_seq| PagedKv {
                layout,
                k: &kv.k[l],
                v: &kv.v[l],
                block_tables,
                max_blocks_per_seq,
            };
            if x.decodes() > 0 {
                let paged = paged(&b.decode_tables, x.decode_blocks_per_seq);
                let shape = DecodeShape {
                    num_seqs: x.decodes(),
                    q_heads: qh,
                    max_context_len: x.max_decode_context,
                    partition_size: None,
                };
                match graph_parts {
                    Some(max_parts) => {
                        let plan = DecodePlan {
                            split: decode_split,
                            max_parts,
                        };
                        gpu.attention_decode_planned(
                            &shape,
                            plan,
                            &b.q,
                            &paged,
                            &b.decode_context,
                            &mut b.attn,
                            decode_ws,
                        )?
                    }
                    None => gpu.attention_decode(&shape, &b.q, &paged, &b.decode_context, &mut b.attn, decode_ws)?,
                }
                probe.mark("decode attention");
            }
            if x.chunks() > 0 {
                let paged = paged(&b.prefill_tables, x.prefill_blocks_per_seq);
                let shape = PrefillShape {
                    num_seqs: x.chunks(),
                    total_tokens: t,
                    q_heads: qh,
                    max_chunk_len: x.max_chunk,
                };
                gpu.attention_prefill(&shape, &b.q, &paged, &b.prefill_cu, &b.prefill_context, &mut b.attn)?;
                probe.mark("prefill attention");
            }
            gemm(gpu, policy, GemmOp::O, &b.attn, &w.o, None, &mut b.proj, (t, h, q_dim))?;
            probe.mark("o gemm");
            gpu.add_rmsnorm_eps(&b.proj, &mut b.residual, &w.post_norm, &mut b.normed, (t, h), eps)?;
            probe.mark("add rmsnorm");
            gate_up_silu_mul(
                gpu,
                policy,
                &b.normed,
                &w.gate_up,
                &mut b.gate_up,
                &mut b.act,
                (t, inter, h),
                probe,
            )?;
            gemm(
                gpu,
                policy,
                GemmOp::Down,
                &b.act,
                &w.down,
                None,
                &mut b.proj,
                (t, h, inter),
            )?;
            probe.mark("down gemm");
            let next_norm = weights.layers.get(l + 1).map_or(&weights.final_norm, |n| &n.input_norm);
            gpu.add_rmsnorm_eps(&b.proj, &mut b.residual, next_norm, &mut b.normed, (t, h), eps)?;
            probe.mark("add rmsnorm");
        }
        let s = x.sample_rows.len();
        if s > 0 {
            // Gather the sampling rows (the embedding kernel gathers rows of any [rows, hidden] table by index).
            gpu.embedding(&b.sample_rows, &b.normed, &mut b.final_rows, s, (t, h))?;
            gemm(
                gpu,
                policy,
                GemmOp::LmHead,
                &b.final_rows,
                weights.lm_head(),
                None,
                &mut b.logits,
                (s, vocab, h),
            )?;
            probe.mark("lm_head gemm");
            gpu.argmax(&b.logits, &mut b.sampled, s, vocab)?;
            probe.mark("argmax");
        }
        Ok(())
    }
}

/// Row counts an engine warms its cuBLAS GEMMs at, up to `max`: every count to 256; beyond, every 8th to 1024 and
/// every 32nd after, each with the count one past it; and `max` itself. cuBLAS's heuristic changes kernels at a few
/// row counts, and the grid alone missed some just past its points: in a validation of the seed matrix on an H100,
/// 4 steps at row counts off it (769, 1,028, 1,537 and 2,052: a prefill of a round token count plus a few decodes)
/// still loaded a kernel, against 41 steps without warming.
fn warm_rows(max: usize) -> impl Iterator<Item = usize> {
    let point = |m: usize| (m <= 1024 && m.is_multiple_of(8)) || m.is_multiple_of(32);
    (1..=max).filter(move |&m| m <= 256 || point(m) || point(m - 1) || m == max)
}

/// Runs each of the model's GEMMs that the policy sends to cuBLAS once at every row count of [`warm_rows`] the
/// buffers hold, skipping shapes this GPU handle has run (see [`Gpu::warm_cublas`]); how many it ran. The first layer's
/// weights serve for all layers (they share shapes).
fn warm_cublas(
    gpu: &Gpu,
    policy: &GemmPolicy,
    spec: &ModelSpec,
    w: &GpuWeights,
    b: &mut Buffers,
) -> Result<usize, GpuError> {
    let Some(layer) = w.layers.first() else {
        return Ok(0);
    };
    let (h, inter, vocab) = (spec.hidden as usize, spec.intermediate as usize, spec.vocab as usize);
    let (rows, sampled) = (b.rows, b.seqs.min(b.rows));
    let mut warmed = 0;
    for op in [GemmOp::Qkv, GemmOp::O, GemmOp::GateUp, GemmOp::Down, GemmOp::LmHead] {
        // Into the buffers the step writes the same product to (nothing is in them yet).
        let (x, weight, y, n, k, most) = match op {
            GemmOp::Qkv => (&b.normed, &layer.qkv, &mut b.qkv, qkv_dim(spec), h, rows),
            GemmOp::O => (&b.attn, &layer.o, &mut b.proj, h, spec.q_dim() as usize, rows),
            GemmOp::GateUp => (&b.normed, &layer.gate_up, &mut b.gate_up, 2 * inter, h, rows),
            GemmOp::Down => (&b.act, &layer.down, &mut b.proj, h, inter, rows),
            GemmOp::LmHead => (&b.final_rows, w.lm_head(), &mut b.logits, vocab, h, sampled),
        };
        for m in warm_rows(most).filter(|&m| policy.backend(op, m) == GemmBackend::Cublas) {
            warmed += usize::from(gpu.warm_cublas(x, weight, y, (policy.cublas_m(op, m), n, k))?);
        }
    }
    Ok(warmed)
}

/// The host's time in one kind of call of the steps' issue ([`Engine::time_host_calls`]): how many such calls, and
/// their time summed.
#[derive(Clone, Debug, PartialEq)]
pub struct HostCalls {
    pub what: &'static str,
    pub calls: u64,
    pub total: std::time::Duration,
}

/// Adds `c` to the calls of its kind in `into` (or as a kind of its own).
fn add_calls(into: &mut Vec<HostCalls>, c: HostCalls) {
    match into.iter_mut().find(|a| a.what == c.what) {
        Some(a) => {
            a.calls += c.calls;
            a.total += c.total;
        }
        None => into.push(c),
    }
}

/// The host's slowest call of a step's issue, for the debug trace (a step that took milliseconds to issue names the
/// call that did: an allocation, a library loading a kernel, a blocked launch queue), and, where asked
/// ([`Engine::time_host_calls`]), every call's time by kind.
/// It reads the clock only while that trace is on or the calls are timed: a prefill step marks a few hundred calls.
/// The trace costs host time (on one H100 start a 64-token prefill of qwen2.5-0.5b took 2.1 ms to issue with it,
/// 1.5 ms without), so steps timed with it on are not the engine's own times; timing the calls alone reads the
/// clock once a call (tens of nanoseconds).
#[derive(Clone, Debug)]
struct HostProbe {
    on: bool,
    last: std::time::Instant,
    slowest: (std::time::Duration, &'static str),
    calls: Option<Vec<HostCalls>>,
}

impl HostProbe {
    /// `calls`: also sum every call's time by kind.
    fn new(calls: bool) -> HostProbe {
        HostProbe {
            on: calls || tracing::enabled!(tracing::Level::DEBUG),
            last: std::time::Instant::now(),
            slowest: (std::time::Duration::ZERO, "none"),
            calls: calls.then(Vec::new),
        }
    }

    /// Ends the call named `what` (the time since the previous mark).
    fn mark(&mut self, what: &'static str) {
        if !self.on {
            return;
        }
        let now = std::time::Instant::now();
        let took = now - self.last;
        if took > self.slowest.0 {
            self.slowest = (took, what);
        }
        if let Some(calls) = &mut self.calls {
            add_calls(
                calls,
                HostCalls {
                    what,
                    calls: 1,
                    total: took,
                },
            );
        }
        self.last = now;
    }
}

/// `act = silu(gate) · up` of the gate/up projection of `x` (`dims`: rows, intermediate, hidden): our GEMM applies
/// SiLU·mul in its epilogue; with cuBLAS the product goes through `gate_up` and the SiLU·mul kernel.
#[allow(clippy::too_many_arguments)] // the product's operands, its two outputs, the policy and the probe
fn gate_up_silu_mul(
    gpu: &Gpu,
    policy: &GemmPolicy,
    x: &F16Buffer,
    w: &F16Buffer,
    gate_up: &mut F16Buffer,
    act: &mut F16Buffer,
    (t, inter, h): (usize, usize, usize),
    probe: &mut HostProbe,
) -> Result<(), GpuError> {
    let dims = (t, 2 * inter, h);
    match policy.choice(GemmOp::GateUp, t) {
        (GemmBackend::Ours, plan) => {
            let plan = plan.unwrap_or_else(|| gpu.gemm_plan(dims.0, dims.1, dims.2));
            gpu.gemm_silu_mul_with(x, w, act, dims, plan)?;
            probe.mark("gate_up gemm");
        }
        (GemmBackend::Cublas, _) => {
            gpu.gemm_cublas(x, w, gate_up, (policy.cublas_m(GemmOp::GateUp, t), dims.1, dims.2))?;
            probe.mark("gate_up gemm");
            gpu.silu_mul(gate_up, act, t, inter)?;
            probe.mark("silu mul");
        }
    }
    Ok(())
}

/// `y = x · wᵀ (+ bias)` by the backend the policy picks for (op, rows).
#[allow(clippy::too_many_arguments)] // the GEMM's own operands plus the policy and the op's name
fn gemm(
    gpu: &Gpu,
    policy: &GemmPolicy,
    op: GemmOp,
    x: &F16Buffer,
    w: &F16Buffer,
    bias: Option<&F16Buffer>,
    y: &mut F16Buffer,
    dims: (usize, usize, usize),
) -> Result<(), GpuError> {
    match policy.choice(op, dims.0) {
        (GemmBackend::Ours, Some(plan)) => gpu.gemm_with(x, w, bias, y, dims, plan),
        (GemmBackend::Ours, None) => gpu.gemm(x, w, bias, y, dims),
        (GemmBackend::Cublas, _) => {
            gpu.gemm_cublas(x, w, y, (policy.cublas_m(op, dims.0), dims.1, dims.2))?;
            match bias {
                Some(bias) => gpu.add_bias(y, bias, dims.0, dims.1),
                None => Ok(()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_sums_each_kind_of_call_only_when_asked() {
        let mut probe = HostProbe::new(true);
        for what in ["prepare", "qkv gemm", "o gemm", "qkv gemm", "o gemm", "qkv gemm"] {
            std::thread::sleep(std::time::Duration::from_micros(200));
            probe.mark(what);
        }
        let calls = probe.calls.clone().unwrap();
        let got: Vec<(&str, u64)> = calls.iter().map(|c| (c.what, c.calls)).collect();
        assert_eq!(got, [("prepare", 1), ("qkv gemm", 3), ("o gemm", 2)]);
        // Each call is the time since the mark before it: at least the sleep, and they add up to the probe's span.
        for c in &calls {
            assert!(
                c.total >= std::time::Duration::from_micros(200) * c.calls as u32,
                "{c:?}"
            );
        }
        let slowest = probe.slowest.0;
        assert!(calls.iter().all(|c| c.total / c.calls as u32 <= slowest));
        // Not asked (and no debug trace in tests): nothing read, nothing summed.
        let mut off = HostProbe::new(false);
        off.mark("prepare");
        assert!(off.calls.is_none());
    }

    #[test]
    fn cublas_is_warmed_at_every_small_row_count_and_on_a_coarser_grid_beyond() {
        let rows: Vec<usize> = warm_rows(2000).collect();
        assert!((1..=256).all(|m| rows.contains(&m)));
        assert!(rows.contains(&264) && rows.contains(&265) && !rows.contains(&260) && rows.contains(&1024));
        assert!(rows.contains(&1025) && rows.contains(&1056) && rows.contains(&1057));
        assert!(!rows.contains(&1032) && !rows.contains(&1026) && rows.contains(&2000));
        assert!(rows.windows(2).all(|w| w[0] < w[1] && w[1] - w[0] <= 32));
        assert_eq!(warm_rows(3).collect::<Vec<_>>(), vec![1, 2, 3]);
    }

    #[test]
    fn a_policy_uses_cublas_by_default_or_by_any_rule() {
        assert!(GemmPolicy::always(GemmBackend::Cublas).uses_cublas());
        assert!(!GemmPolicy::always(GemmBackend::Ours).uses_cublas());
        let rule = |backend| GemmRule {
            op: GemmOp::Down,
            max_rows: 64,
            backend,
            plan: None,
            pad: false,
        };
        let ours_but = |backend| GemmPolicy {
            default: GemmBackend::Ours,
            rules: vec![rule(GemmBackend::Ours), rule(backend)],
            graph_ours_rows: 0,
        };
        assert!(ours_but(GemmBackend::Cublas).uses_cublas());
        assert!(!ours_but(GemmBackend::Ours).uses_cublas());
    }

    #[test]
    fn gemm_policy_takes_the_first_matching_rule() {
        let p = GemmPolicy {
            default: GemmBackend::Cublas,
            rules: vec![
                GemmRule {
                    op: GemmOp::Qkv,
                    max_rows: 16,
                    backend: GemmBackend::Ours,
                    plan: Some(GemmPlan {
                        tile: crate::gpu::GemmTile::S16,
                        split_k: 2,
                    }),
                    pad: false,
                },
                GemmRule {
                    op: GemmOp::Qkv,
                    max_rows: 64,
                    backend: GemmBackend::Cublas,
                    plan: None,
                    pad: true,
                },
                GemmRule {
                    op: GemmOp::Down,
                    max_rows: usize::MAX,
                    backend: GemmBackend::Ours,
                    plan: None,
                    pad: false,
                },
            ],
            graph_ours_rows: 32,
        };
        assert_eq!(p.backend(GemmOp::Qkv, 16), GemmBackend::Ours);
        assert_eq!(
            p.choice(GemmOp::Qkv, 9).1.map(|p| (p.tile.label(), p.split_k)),
            Some(("s16", 2))
        );
        assert_eq!(p.choice(GemmOp::Down, 9), (GemmBackend::Ours, None));
        // A decode graph of up to 32 rows runs our kernel for every GEMM, with the rules' plans; larger ones, and
        // every step launched kernel by kernel, the rules' backends.
        let graph = p.in_graph(17);
        assert_eq!(graph.backend(GemmOp::Qkv, 17), GemmBackend::Ours);
        assert_eq!(graph.choice(GemmOp::Qkv, 9).1, p.choice(GemmOp::Qkv, 9).1);
        assert_eq!(graph.backend(GemmOp::Qkv, 4096), GemmBackend::Ours);
        assert!(matches!(p.in_graph(33), std::borrow::Cow::Borrowed(_)));
        assert_eq!(p.in_graph(33).backend(GemmOp::Qkv, 33), GemmBackend::Cublas);
        // cuBLAS runs on the padded rows where its rule says so, elsewhere on the rows asked.
        assert_eq!((p.cublas_m(GemmOp::Qkv, 17), p.cublas_m(GemmOp::Qkv, 45)), (32, 48));
        assert_eq!((p.cublas_m(GemmOp::Qkv, 9), p.cublas_m(GemmOp::Down, 9)), (9, 9));
        assert_eq!(p.backend(GemmOp::Qkv, 17), GemmBackend::Cublas);
        assert_eq!(p.backend(GemmOp::Qkv, 4096), GemmBackend::Cublas);
        assert_eq!(p.backend(GemmOp::Down, 4096), GemmBackend::Ours);
        assert_eq!(p.backend(GemmOp::O, 1), GemmBackend::Cublas);
        assert_eq!(
            GemmPolicy::always(GemmBackend::Ours).backend(GemmOp::LmHead, 1),
            GemmBackend::Ours
        );
        let json = serde_json::to_string(&p).unwrap();
        assert!(
            json.contains(r#""op":"gate_up""#) || json.contains(r#""op":"qkv""#),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<GemmPolicy>(&json).unwrap(), p);
    }

    #[test]
    fn supported_shapes() {
        let spec = crate::model::by_name("qwen2.5-0.5b").unwrap();
        check_supported(&spec).unwrap();
        let odd = ModelSpec {
            head_dim: 80,
            ..spec.clone()
        };
        let msg = check_supported(&odd).unwrap_err().to_string();
        assert!(msg.contains("head_dim 80"), "{msg}");
        let wide = ModelSpec {
            heads: 34,
            kv_heads: 2,
            ..spec.clone()
        };
        let msg = check_supported(&wide).unwrap_err().to_string();
        assert!(msg.contains("17 query heads per kv head"), "{msg}");
        let ragged = ModelSpec {
            intermediate: 4862,
            ..spec
        };
        let msg = check_supported(&ragged).unwrap_err().to_string();
        assert!(msg.contains("intermediate = 4862"), "{msg}");
    }

    #[test]
    fn the_engine_allocates_the_workspace_the_model_computes() {
        let spec = crate::model::by_name("qwen2.5-0.5b").unwrap();
        let config = EngineConfig {
            max_context: Some(32768),
            ..EngineConfig::default()
        };
        let sizing = sizing(&config, &spec);
        assert_eq!(sizing.table_width(), 2048);
        let w = spec.engine_workspace(&sizing, 132);
        // What `Buffers::new` allocates: 8192 rows of (3·896 + 1152 + 2·896 + 3·4864) fp16, 256 sampled rows of
        // (896 + 151936) fp16, and i32 inputs: 3 per row, (2·2048 + 5) per sequence, one more, and the graphs' split.
        let want = 2 * (20224 * 8192 + 152_832 * 256) + 4 * (3 * 8192 + 256 * 4101 + 1 + 2);
        assert_eq!(w.buffers.bytes(), want);
        // fp16 buffers are `F16Buffer`s and i32 ones `I32Buffer`s: each buffer's element size is its type's.
        let (f16, i32) = (size_of::<u16>() as u64, size_of::<i32>() as u64);
        let ints = [
            "tokens",
            "positions",
            "slots",
            "decode_context",
            "decode_tables",
            "prefill_cu",
            "prefill_context",
            "prefill_tables",
            "sample_rows",
            "sampled",
            "decode_split",
        ];
        for (name, size) in w.buffers.list() {
            let want = if ints.contains(&name) { i32 } else { f16 };
            assert_eq!(size.elem_bytes, want, "{name}");
        }
        // Decode attention as the engine's graphs size it with the tensor-core kernel (the default): the 256-row
        // graph, captured for 193 rows' most partitions over 32768 tokens (32 of 1024), × 14 heads × 64 floats and
        // × 2 floats, each rounded up to a power of two, and 256 × 2 counters.
        use crate::gpu::AttentionKernel;
        assert_eq!(AttentionKernel::default(), AttentionKernel::TensorCore);
        assert_eq!(
            AttentionKernel::TensorCore.max_decode_partition() as u64,
            crate::model::DECODE_PARTITION_MAX
        );
        assert_eq!(
            w.decode_attention.bytes(),
            ((256u64 * 32 * 14 * 64).next_power_of_two() + (256u64 * 32 * 14 * 2).next_power_of_two()) * 4 + 512 * 4
        );
        let mut m = EngineMemory {
            buffers: w.buffers.bytes(),
            decode_attention: w.decode_attention.bytes(),
            ..EngineMemory::default()
        };
        assert_eq!(m.workspace(), w.bytes());

        // Measured against the memory in use once the engine is gone: 1000 MiB were in use after it, the peak saw
        // weights, the KV cache as mapped, the computed workspace in whole chunks beside the weights, and 40 MiB
        // more.
        m.weights = 900 * MIB;
        m.kv_cache_mapped = 5000 * MIB;
        let mapped = crate::model::mapped_workspace(m.weights, m.workspace());
        assert_eq!((m.weights + mapped) % crate::model::ALLOCATION_GRANULE_BYTES, 0);
        m.peak_used = 1000 * MIB + m.weights + m.kv_cache_mapped + mapped + 40 * MIB;
        m.used_before = 950 * MIB;
        let measured = WorkspaceMeasurement::new(m, 1000 * MIB);
        assert_eq!(
            (measured.measured, measured.computed),
            (mapped + 40 * MIB, m.workspace())
        );
        assert_eq!(measured.computed_mapped(), mapped);
        assert_eq!(measured.runtime_overhead(), 40 * MIB);
        assert_eq!(measured.kept_by_process(), 50 * MIB);
    }
}
