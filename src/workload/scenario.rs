//! The scenario file schema. Every key a user can write is a field here, with its default and its meaning in a doc
//! comment; README.md's "Scenario format" section mirrors this file.
//!
//! Sections are flat structs with `deny_unknown_fields` rather than tagged enums: flat structs keep the TOML
//! parser's spans, so an unknown or mistyped key is reported at its file:line:column.

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// A short name; used in report titles and output folder names.
    pub name: String,
    /// Free text shown by `batchlab explain`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Seed of every random draw of the workload (ChaCha8). Same seed, same scenario: byte-identical outputs.
    #[serde(default = "default_seed")]
    pub seed: u64,
    pub model: ModelSection,
    #[serde(default)]
    pub hardware: HardwareSection,
    pub cost: CostSection,
    #[serde(default)]
    pub memory: MemorySection,
    pub scheduler: SchedulerSection,
    pub workload: WorkloadSection,
    #[serde(default)]
    pub slo: SloSection,
    #[serde(default)]
    pub output: OutputSection,
    /// Dotted paths into this scenario → lists of values; the runs are the cartesian product, in key order.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub sweep: IndexMap<String, Vec<toml::Value>>,
}

pub fn default_seed() -> u64 {
    0
}

/// Exactly one of `name` (a built-in catalog entry) or `config` (a Hugging Face `config.json`, relative paths are
/// taken from the scenario file's folder).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<PathBuf>,
}

/// The GPU the workload runs on: a preset, with any figure overridable. Used by the `analytic` cost model and to
/// size the KV cache from GPU memory.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HardwareSection {
    /// Preset name, see `batchlab gpus` / `sim::hardware::GPU_PRESETS`.
    #[serde(default = "default_gpu")]
    pub gpu: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_gib: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_bandwidth_gbps: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fp16_tflops: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launch_overhead_us: Option<f64>,
}

fn default_gpu() -> String {
    "h100-sxm".to_string()
}

impl Default for HardwareSection {
    fn default() -> Self {
        HardwareSection {
            gpu: default_gpu(),
            memory_gib: None,
            mem_bandwidth_gbps: None,
            fp16_tflops: None,
            launch_overhead_us: None,
        }
    }
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CostKind {
    Linear,
    Analytic,
    Calibrated,
}

/// How a step's duration is predicted. Keys that belong to another `kind` are an error.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CostSection {
    pub kind: CostKind,
    // linear: base + per_token·tokens + per_seq·seqs + per_kv_token·kv_tokens_read
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_token_us: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_seq_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_kv_token_ns: Option<f64>,
    // analytic: fractions of the datasheet roofline that kernels reach
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth_efficiency: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compute_efficiency: Option<f64>,
    /// analytic: fixed host time per step (scheduling, sampling copy-back), on top of kernel launches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_overhead_us: Option<f64>,
    // calibrated: a profile written by `batchlab calibrate`
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<PathBuf>,
    /// Any kind: every step's predicted time is multiplied by this (default 1) — a what-if for a machine whose
    /// steps run that much slower or faster than the model's (a slower host, a card at a lower clock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_scale: Option<f64>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MemorySection {
    /// Fraction of GPU memory batchlab may use (weights + KV + workspace), as vLLM's `gpu_memory_utilization`.
    #[serde(default = "default_utilization")]
    pub gpu_memory_utilization: f64,
    /// The engine's workspace beside weights and KV cache; default: computed for the policy's largest step plus the
    /// calibration profile's measured runtime overhead, in whole allocator chunks (`sim::run::WorkspaceModel`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace_mib: Option<f64>,
    /// KV capacity in tokens; overrides the capacity derived from GPU memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_capacity_tokens: Option<u64>,
    /// Tokens per KV block (paged policies).
    #[serde(default = "default_block_size")]
    pub block_size: u32,
}

fn default_utilization() -> f64 {
    0.9
}

fn default_block_size() -> u32 {
    16
}

impl Default for MemorySection {
    fn default() -> Self {
        MemorySection {
            gpu_memory_utilization: default_utilization(),
            workspace_mib: None,
            kv_capacity_tokens: None,
            block_size: default_block_size(),
        }
    }
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum PolicyKind {
    Static,
    Continuous,
    Grouped,
}

impl PolicyKind {
    pub const ALL: [PolicyKind; 3] = [PolicyKind::Static, PolicyKind::Continuous, PolicyKind::Grouped];

    pub fn as_str(self) -> &'static str {
        match self {
            PolicyKind::Static => "static",
            PolicyKind::Continuous => "continuous",
            PolicyKind::Grouped => "grouped",
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SchedulerSection {
    pub policy: PolicyKind,
    /// static/grouped: batch slots; continuous: most sequences in one step (vLLM `max_num_seqs`).
    pub max_batch_size: u32,
    /// continuous: most tokens in one step (vLLM `max_num_batched_tokens`).
    #[serde(default = "default_max_batch_tokens")]
    pub max_batch_tokens: u32,
    /// continuous: split prompts to fit the token budget (Sarathi-style).
    #[serde(default = "default_true")]
    pub chunked_prefill: bool,
    /// continuous: mix prefill chunks and decodes in one step; false = prefill-only and decode-only steps.
    #[serde(default = "default_true")]
    pub mix_prefill_decode: bool,
    /// continuous: allocate KV blocks on demand and preempt (recompute) the newest request when they run out;
    /// false = reserve a request's whole KV (prompt + output) at admission, never preempt.
    #[serde(default = "default_true")]
    pub preemption: bool,
    /// static, open-loop arrivals: launch a partial batch once its oldest request has waited this long.
    #[serde(default)]
    pub max_wait_ms: f64,
}

fn default_max_batch_tokens() -> u32 {
    8192
}

fn default_true() -> bool {
    true
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ArrivalKind {
    /// Every request at t = 0.
    Burst,
    /// Exponential inter-arrival gaps at `rate` requests/s; the first request arrives after the first gap.
    Poisson,
    /// Gamma inter-arrival gaps with mean 1/`rate` and coefficient of variation `cv` (shape 1/cv², scale cv²/rate);
    /// the first request arrives after the first gap. cv = 1 is Poisson, cv > 1 burstier.
    Gamma,
    /// Request i at i/`rate` s (the first at 0).
    Constant,
    /// `clients` closed-loop clients: each sends its next request `think_ms` after its previous one completes.
    Closed,
    /// Arrival, prompt and output lengths from the `trace` file: CSV with the header `arrival_s,prompt_len,output_len`
    /// or JSON Lines objects with those keys; sorted by arrival.
    Trace,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WorkloadSection {
    /// Number of requests (for `trace`: at most this many, default all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<u64>,
    pub arrival: ArrivalKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cv: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clients: Option<u32>,
    #[serde(default)]
    pub think_ms: f64,
    /// The trace file of `arrival = "trace"`; a relative path is taken from the scenario file's folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<PathBuf>,
    /// Required, except with a trace, where a given spec replaces the trace's lengths (the arrivals stay).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_len: Option<LengthSpec>,
    /// As `prompt_len`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_len: Option<LengthSpec>,
}

/// A length distribution: an integer (fixed), a list (cycled by request index), or a table with `dist`.
///
/// Deserialized by hand rather than with `#[serde(untagged)]`: untagged enums swallow the inner error ("data did
/// not match any variant"), while users need to hear "missing field `sigma`" or "unknown variant `lognorm`".
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(untagged)]
pub enum LengthSpec {
    Fixed(u32),
    Cycle(Vec<u32>),
    Dist(LengthDist),
}

impl<'de> Deserialize<'de> for LengthSpec {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(LengthSpecVisitor)
    }
}

struct LengthSpecVisitor;

impl LengthSpecVisitor {
    fn length<E: serde::de::Error>(self, v: i128) -> Result<u32, E> {
        u32::try_from(v).map_err(|_| E::invalid_value(serde::de::Unexpected::Other(&v.to_string()), &self))
    }
}

impl<'de> serde::de::Visitor<'de> for LengthSpecVisitor {
    type Value = LengthSpec;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a length: an integer, a list of integers (cycled), or a table with `dist`")
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<LengthSpec, E> {
        self.length(v.into()).map(LengthSpec::Fixed)
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<LengthSpec, E> {
        self.length(v.into()).map(LengthSpec::Fixed)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<LengthSpec, A::Error> {
        let mut lengths = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(length) = seq.next_element::<u32>()? {
            lengths.push(length);
        }
        Ok(LengthSpec::Cycle(lengths))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<LengthSpec, A::Error> {
        LengthDist::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(LengthSpec::Dist)
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "dist", rename_all = "lowercase", deny_unknown_fields)]
pub enum LengthDist {
    /// Integers uniform on [min, max].
    Uniform { min: u32, max: u32 },
    /// Rounded normal, clamped to [min, max] (min defaults to 1).
    Normal {
        mean: f64,
        std: f64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        min: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max: Option<u32>,
    },
    /// Rounded lognormal with the given *mean of the lengths* and log-space sigma, clamped to [min, max].
    Lognormal {
        mean: f64,
        sigma: f64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        min: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max: Option<u32>,
    },
    /// Zipf over 1..=max with exponent s, times `scale` (default 1).
    Zipf {
        max: u32,
        exponent: f64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        scale: Option<u32>,
    },
}

/// Service-level objectives for goodput: a request counts when it meets every one given.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SloSection {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttft_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpot_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e2e_ms: Option<f64>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OutputSection {
    /// Write `steps.parquet` (one row per step) for every run.
    #[serde(default = "default_true")]
    pub steps: bool,
    /// Write `tokens.parquet` (one row per output token) for runs with at most this many output tokens.
    #[serde(default = "default_token_trace_limit")]
    pub token_trace_limit: u64,
}

fn default_token_trace_limit() -> u64 {
    100_000
}

impl Default for OutputSection {
    fn default() -> Self {
        OutputSection {
            steps: true,
            token_trace_limit: default_token_trace_limit(),
        }
    }
}
