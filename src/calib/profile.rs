//! The calibration profile: what `batchlab calibrate` measured on one GPU for one model, versioned JSON.
//!
//! Every time is of one kernel launch for one layer, in microseconds, the median of repeated CUDA-event timings.
//! `spread` beside each table is the relative spread of those repeats ((p90 − p10) / median) per grid point: two
//! calibrations of the same card agree when their medians differ by less than it.

use super::interp::{Curve, Surface};
use crate::model::{DECODE_UNSPLIT_MAX, ModelSpec, cublas_grid, cublas_rows};
use crate::sched::{DecodeSeq, PrefillChunk, StepPlan};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Bumped whenever a field changes meaning; older profiles are refused, not misread.
pub const PROFILE_FORMAT: u32 = 1;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub format: u32,
    pub fingerprint: Fingerprint,
    /// One table per weight shape of the model (qkv, o, gate_up, down, lm_head): time by token count (rows), measured
    /// on tile edges (see [`GemmTable::best_us`]).
    pub gemm: Vec<GemmTable>,
    /// Elementwise and small ops by row count: add_rmsnorm, silu_mul, kv_append_rope, embedding, argmax.
    pub ops: Vec<OpTable>,
    /// Prefill attention of one sequence: x = chunk tokens, y = tokens already cached before the chunk.
    pub attention_prefill: SurfaceTable,
    /// Decode attention: x = batch size, y = context length (every sequence the same).
    pub attention_decode: SurfaceTable,
    /// Decode attention over batches of mixed context lengths, to measure (not assume) what heterogeneity costs.
    pub decode_mixed: Vec<MixedDecode>,
    /// Host and launch time of one step beyond its kernels, for profiles without [`Profile::engine`] (0).
    pub step_overhead_us: f64,
    /// What only whole steps on the engine show: the host's time to issue a step and what follows the last of
    /// host and GPU work (synchronisation, the token copy). Absent in profiles measured before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<EngineSteps>,
    /// Decode graphs of up to this many rows run our GEMM for every projection ([`Profile::graph_ours_rows_of`]),
    /// so that their kernels launch programmatically (PDL), which a graph holding any cuBLAS kernel forgoes; the
    /// engine steps of [`Profile::engine`] were measured so, and the cost model prices such steps with our
    /// kernel's tables. 0 (profiles measured before): decode graphs run the faster kernel of each projection.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub graph_ours_rows: u32,
    pub run: CalibrationRun,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

/// What programmatic dependent launch saves a decode graph per layer at least, where every kernel of the graph is
/// ours: in calibrate's engine steps of every H100 profile on record, the decode graphs holding a cuBLAS kernel
/// (which run serially) spent 100–200 µs more beyond their kernels' time than the graphs of our kernels alone, at
/// neighbouring row counts: 5–7 µs per layer (qwen2.5-0.5b's 24 layers, qwen2.5-1.5b's 28). The lower bound of what
/// was seen, so that a graph gives cuBLAS up only where that surely pays.
pub const PDL_GAIN_PER_LAYER_US: f64 = 4.0;

/// Decode-only, prefill-only and mixed steps differ in the kernels they launch, so each has its own line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepKind {
    Decode,
    Prefill,
    Mixed,
}

impl StepKind {
    pub const ALL: [StepKind; 3] = [StepKind::Decode, StepKind::Prefill, StepKind::Mixed];

    pub fn of(decode_seqs: u64, prefill_seqs: u64) -> StepKind {
        match (decode_seqs > 0, prefill_seqs > 0) {
            (true, false) => StepKind::Decode,
            (false, _) => StepKind::Prefill,
            (true, true) => StepKind::Mixed,
        }
    }
}

/// The engine's whole-step model: a step takes `max(kernels + gap, issue) + tail`, where `kernels` is the sum of
/// the op tables, `gap = gap_us + gap_per_kernel_us × kernels` what the same kernels take beyond that inside a
/// step (input copies, the gaps between dependent kernels), `issue = base_us + per_token_us × tokens` the host's time to prepare and launch the step,
/// and `tail` what follows the GPU's last kernel (synchronisation, the sampled tokens' copy). All four per step
/// kind, from steps measured on the engine.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineSteps {
    pub kinds: Vec<StepKindModel>,
    /// The steps the model was fitted to.
    pub samples: Vec<EngineStepSample>,
    /// A decode-only step runs as the CUDA graph of the smallest of these row counts that holds it (padded to it),
    /// where the engine's batch limit allows; empty in profiles from before graphs were modelled.
    #[serde(default)]
    pub graph_buckets: Vec<u32>,
    /// GPU memory an engine holds at its peak beyond its weights, its KV cache and the workspace batchlab computes
    /// for it (`model::EngineWorkspace`: activation buffers, decode attention's workspace) in whole allocator chunks
    /// (`model::mapped_workspace`), in bytes: CUDA graph memory, small allocations of the driver, whatever else the
    /// engine holds. Measured on every engine `calibrate` runs (`memory_samples`), each against the memory in use
    /// once it was gone (`engine::WorkspaceMeasurement`), as measured − computed in chunks or 0, and the median kept.
    /// The simulator adds it to the computed workspace before rounding to chunks. Absent in profiles measured before
    /// it existed: the simulator then adds `model::DEFAULT_RUNTIME_OVERHEAD_BYTES` (an estimate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_overhead_bytes: Option<u64>,
    /// The engines `runtime_overhead_bytes` was measured on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub memory_samples: Vec<EngineMemorySample>,
}

/// One engine's workspace as `calibrate` measured it, beside the one it computed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineMemorySample {
    /// What the engine was sized for (`model::EngineSizing`).
    pub max_step_tokens: u64,
    pub max_seqs: u64,
    pub max_context: u64,
    /// Its weights (allocated first: the workspace fills the rest of their last chunk).
    pub weight_bytes: u64,
    /// Peak used − used once the engine was gone − weights − KV cache as mapped.
    pub measured_workspace_bytes: u64,
    /// `model::EngineWorkspace::bytes` for its sizing.
    pub computed_workspace_bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepKindModel {
    pub kind: StepKind,
    /// The gap at no kernel time, and how it grows per µs of kernels (0 when it does not).
    pub gap_us: f64,
    #[serde(default)]
    pub gap_per_kernel_us: f64,
    pub issue_base_us: f64,
    pub issue_per_token_us: f64,
    pub tail_us: f64,
    /// For steps replayed as decode graphs: the gap by the graph's rows, (rows, µs) in increasing rows; between
    /// them linear, beyond them the nearest. Replaces `gap_us` and `gap_per_kernel_us` for such steps.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub graph_gap_us: Vec<(u32, f64)>,
    /// The same, fitted to the replays whose longest decode is split into partitions (a context over
    /// [`DECODE_UNSPLIT_MAX`] tokens) alone: their merges make a graph take longer beyond its kernels' tables (on an
    /// H100 about 180 µs more a qwen2.5-1.5b step at one row). Empty in profiles fitted before it was; then, or
    /// where it has no point, `graph_gap_us` serves.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub graph_gap_split_us: Vec<(u32, f64)>,
    /// The same for the replays whose decodes are all unsplit.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub graph_gap_unsplit_us: Vec<(u32, f64)>,
    /// The serving loop's own host time per step (the bookkeeping after a step's tokens, the planning of the next:
    /// what the wall clock adds to the engine's step between two steps served back to back), µs; 0 in profiles
    /// measured before it was.
    #[serde(default)]
    pub loop_us: f64,
}

/// One measured engine step (medians over its repeats).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineStepSample {
    pub kind: StepKind,
    pub decode_seqs: u32,
    /// Mean context of the decodes.
    pub decode_context: u32,
    pub prefill_seqs: u32,
    pub prefill_tokens: u32,
    /// Host time to issue the step.
    pub issue_us: f64,
    /// The GPU's time for the step (CUDA events around it).
    pub gpu_us: f64,
    /// The step's wall time, plan to tokens on the host.
    pub wall_us: f64,
    /// What the op tables alone predict for it.
    pub kernels_us: f64,
    /// The rows of the decode graph it replayed (its bucket); 0: it was not one.
    #[serde(default)]
    pub graph_rows: u32,
    /// For a step served through the serving loop: the time the loop's wall clock recorded for it (from the end of
    /// the step before, when the loop did not wait in between), µs. Absent for steps repeated in isolation and in
    /// profiles measured before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serving_us: Option<f64>,
    /// The step itself, so that `refit-profile` prices it again with this batchlab's cost model (`kernels_us` is
    /// the pricing of the batchlab that measured it). Absent from profiles measured before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<SampledPlan>,
}

/// As much of a step's plan as prices it: each decode's context and whether it emits, each prefill chunk's cached
/// tokens, length, padding and whether it samples (request ids are not kept).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SampledPlan {
    /// (context, emits) of each decode.
    pub decodes: Vec<(u32, bool)>,
    /// (offset, len, padding, samples) of each prefill chunk.
    pub prefills: Vec<(u32, u32, u32, bool)>,
}

impl EngineStepSample {
    /// Whether its longest decode was split into partitions: from its plan, or (in profiles without one) from its
    /// decodes' mean context.
    pub fn splits(&self) -> bool {
        let longest = self.plan.as_ref().map_or(self.decode_context, |p| {
            p.decodes.iter().map(|d| d.0).max().unwrap_or(0)
        });
        decode_splits(u64::from(longest))
    }
}

impl SampledPlan {
    pub fn of(plan: &StepPlan) -> SampledPlan {
        SampledPlan {
            decodes: plan.decodes.iter().map(|d| (d.context, d.emits)).collect(),
            prefills: plan
                .prefills
                .iter()
                .map(|c| (c.offset, c.len, c.padding, c.samples))
                .collect(),
        }
    }

    /// The plan again, its requests numbered in order (chunks first, then decodes).
    pub fn plan(&self) -> StepPlan {
        let chunks = self.prefills.len() as u32;
        StepPlan::new(
            self.prefills
                .iter()
                .zip(0..)
                .map(|(&(offset, len, padding, samples), id)| PrefillChunk {
                    id,
                    offset,
                    len,
                    padding,
                    samples,
                })
                .collect(),
            self.decodes
                .iter()
                .zip(chunks..)
                .map(|(&(context, emits), id)| DecodeSeq { id, context, emits })
                .collect(),
        )
    }
}

impl EngineSteps {
    pub fn kind(&self, kind: StepKind) -> Option<&StepKindModel> {
        self.kinds.iter().find(|k| k.kind == kind)
    }

    /// The whole step from the op tables' `kernels_us` (of the padded step, for a graph's: `graph_rows`); `split`:
    /// whether its longest decode is split into partitions (see [`decode_splits`]).
    pub fn step_us(&self, kind: StepKind, tokens: f64, kernels_us: f64, graph_rows: Option<u32>, split: bool) -> f64 {
        self.parts(kind, tokens, kernels_us, graph_rows, split)
            .map_or(kernels_us, |p| p.total_us())
    }

    /// The step as the model composes it (see [`StepParts`]); `None` for a kind the profile measured no step of.
    pub fn parts(
        &self,
        kind: StepKind,
        tokens: f64,
        kernels_us: f64,
        graph_rows: Option<u32>,
        split: bool,
    ) -> Option<StepParts> {
        let k = self.kind(kind)?;
        let gap = match graph_rows {
            Some(rows) if !k.graph_gap_us.is_empty() => {
                let by_split = if split {
                    &k.graph_gap_split_us
                } else {
                    &k.graph_gap_unsplit_us
                };
                graph_gap(if by_split.is_empty() { &k.graph_gap_us } else { by_split }, rows)
            }
            _ => k.gap_us + k.gap_per_kernel_us * kernels_us,
        };
        Some(StepParts {
            gpu_us: kernels_us + gap,
            issue_us: k.issue_base_us + k.issue_per_token_us * tokens,
            after_us: k.tail_us + k.loop_us,
        })
    }
}

/// A step as the engine step model composes it: the GPU's work and the host's issue of it overlap, and the step
/// ends after the later of the two plus what follows both (the tokens' copy to the host, the serving loop).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepParts {
    /// The GPU's time from the step's first input copy to its last kernel: the kernels and the gap between them.
    pub gpu_us: f64,
    /// The host's time to prepare and issue the step.
    pub issue_us: f64,
    /// The tail after the later of both, and the serving loop's own time.
    pub after_us: f64,
}

impl StepParts {
    pub fn total_us(&self) -> f64 {
        self.gpu_us.max(self.issue_us) + self.after_us
    }
}

/// The rows of the decode graph a decode-only step of `decodes` rows replays on an engine with graphs of `buckets`
/// rows and the batch limit `limit` (a step whose bucket is beyond it is launched kernel by kernel).
pub fn graph_rows(buckets: &[u32], decodes: u32, limit: Option<u32>) -> Option<u32> {
    buckets
        .iter()
        .copied()
        .find(|&b| b >= decodes)
        .filter(|&b| limit.is_none_or(|l| b <= l))
}

/// Whether decode attention splits a context of `longest` tokens into partitions (and merges them).
pub fn decode_splits(longest: u64) -> bool {
    longest > DECODE_UNSPLIT_MAX
}

/// `points` (rows, gap) read at `rows`: linear between points, the nearest beyond them.
fn graph_gap(points: &[(u32, f64)], rows: u32) -> f64 {
    let x = f64::from(rows);
    match points.iter().position(|p| p.0 >= rows) {
        Some(0) => points[0].1,
        Some(i) => {
            let ((x0, y0), (x1, y1)) = (points[i - 1], points[i]);
            let (x0, x1) = (f64::from(x0), f64::from(x1));
            y0 + (y1 - y0) * (x - x0) / (x1 - x0)
        }
        None => points.last().map_or(0.0, |p| p.1),
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fingerprint {
    pub gpu_name: String,
    /// The card's UUID ([`crate::gpu::DeviceInfo::uuid`]): which physical card, of the model `gpu_name` names, was
    /// measured. Absent where the driver did not give it and in profiles measured before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_uuid: Option<String>,
    pub compute_capability: String,
    pub sm_count: u32,
    pub memory_bytes: u64,
    pub driver_version: String,
    pub cuda_version: String,
    /// Measured device-to-device copy bandwidth, GB/s (read + write bytes per second).
    pub copy_bandwidth_gbps: f64,
    /// Measured cuBLAS fp16 GEMM throughput on a large square product, TFLOP/s.
    pub gemm_tflops: f64,
    pub kernel_source_hash: String,
    pub model: ModelSpec,
    pub block_size: u32,
    pub batchlab_version: String,
    /// The engine revision the whole-step samples were measured on ([`crate::engine::ENGINE_REVISION`]; 0 where
    /// the profile predates the field).
    #[serde(default)]
    pub engine_revision: u32,
    /// UTC, ISO 8601.
    pub date: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GemmTable {
    pub name: String,
    /// Output features (weight rows).
    pub n: u32,
    /// Input features.
    pub k: u32,
    pub ours_us: Curve,
    pub cublas_us: Curve,
    pub ours_spread: Vec<f64>,
    pub cublas_spread: Vec<f64>,
    /// The launch plan of our kernel at each grid point up to [`crate::gpu::TUNED_MAX_ROWS`] rows: the fastest
    /// candidate calibration timed there ([`crate::gpu::gemm_candidates`]), which `ours_us` then measured and the
    /// engine runs for the rows up to that point. Absent (profiles measured before plans were tuned): the default
    /// plan ([`crate::gpu::gemm_plan`]) everywhere.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ours_plans: Vec<TunedPlan>,
    /// The times include SiLU·mul (gate/up only): our kernel applies it in its epilogue
    /// ([`crate::gpu::Gpu::gemm_silu_mul_with`]) and cuBLAS's column is its product plus the SiLU·mul kernel, timed
    /// together, so the two columns compare what the engine runs either way and the cost model adds no SiLU·mul of
    /// its own. False in profiles measured before the fusion (their gate/up is the product alone).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub with_silu_mul: bool,
    /// cuBLAS was timed at every row count [`cublas_rows`] pads to, up to its last (`cublas_us.x` is
    /// [`cublas_grid`] of it), and the engine runs it padded so ([`crate::engine::GemmRule::pad`]): the cost model
    /// reads cuBLAS at the padded rows' own point, never between two. Its rules and the choice between the kernels
    /// stay at `ours_us`'s points (a subset). False in profiles measured before (cuBLAS timed where ours was, read
    /// on a line between them and run on the rows asked).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cublas_padded: bool,
}

/// Our GEMM's plan for the rows up to `rows` (down to the previous grid point).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TunedPlan {
    pub rows: u32,
    pub plan: crate::gpu::GemmPlan,
}

/// The tuned plan that covers `rows`: the first of `plans` (sorted by rows) at or above it; none beyond the last.
pub fn tuned_plan(plans: &[TunedPlan], rows: usize) -> Option<crate::gpu::GemmPlan> {
    plans.iter().find(|t| rows <= t.rows as usize).map(|t| t.plan)
}

impl Profile {
    /// The largest decode graph bucket ([`crate::model::GRAPH_BUCKETS`]) up to which, bucket by bucket, what
    /// cuBLAS saves over our kernel in the step's projections (every layer's four and lm_head, where the tables pick
    /// cuBLAS) is less than what programmatic launch saves a graph of our kernels alone
    /// ([`PDL_GAIN_PER_LAYER_US`] a layer): decode graphs of up to that many rows run our GEMM everywhere. 0 on
    /// GPUs before sm_90 (no programmatic launch) or where even one row's graph gains from cuBLAS.
    pub fn graph_ours_rows_of(&self) -> u32 {
        let major = (self.fingerprint.compute_capability.split('.').next())
            .and_then(|m| m.parse::<u32>().ok())
            .unwrap_or(0);
        if major < 9 {
            return 0;
        }
        let layers = f64::from(self.fingerprint.model.layers);
        let mut most = 0;
        for &b in &crate::model::GRAPH_BUCKETS {
            let rows = b as f64;
            let saved: f64 = (self.gemm.iter())
                .map(|g| {
                    let times = if g.name == "lm_head" { 1.0 } else { layers };
                    times * (g.ours_us.at(rows) - g.best_us(rows)).max(0.0)
                })
                .sum();
            if saved >= PDL_GAIN_PER_LAYER_US * layers {
                break;
            }
            most = b as u32;
        }
        most
    }
}

impl GemmTable {
    /// The time of the kernel the engine runs at this token count (see [`GemmTable::ours_faster`]), linear between
    /// the grid points around it. A GEMM's time is not flat over the rows of one tile (a partial tile loads fewer
    /// activation rows, and cuBLAS changes kernels between tile edges): on the offset grids of the H100's and the
    /// H200's calibrations of 2026-11-28 (08:53 and 09:11 UTC) the line between neighbours predicted 1.1–1.3% at
    /// the median against 1.2–1.9% for the next grid point's time, and fewer points beyond 8%.
    pub fn best_us(&self, tokens: f64) -> f64 {
        self.choose(tokens).1
    }

    /// Whether the engine runs our kernel at this token count: unless cuBLAS is faster even at the slow end of its
    /// measured spread. At small shapes cuBLAS's time jumps between runs by a quarter or more while ours holds
    /// steady, and a kernel that is predictable is worth more to a capacity planner than one that is sometimes
    /// a microsecond faster.
    pub fn ours_faster(&self, tokens: f64) -> bool {
        self.choose(tokens).0
    }

    /// (ours chosen, the chosen kernel's time), each table looked up once: the cost model asks per step. Beyond the
    /// grid the choice stays the last point's (the engine's rules end there) while the time is extrapolated. The
    /// choice is our grid point's at or above the token count: the engine's rule for those rows.
    fn choose(&self, tokens: f64) -> (bool, f64) {
        let last = self.ours_us.x.len() - 1;
        let point = self.ours_us.x[self.ours_us.x.partition_point(|&x| x < tokens).min(last)];
        let (cublas, spread) = self.cublas_point(point);
        if self.ours_us.at(point) <= cublas * (1.0 + spread) {
            (true, self.ours_us.at(tokens))
        } else {
            (false, self.cublas_at(tokens))
        }
    }

    /// cuBLAS's time and spread at one of its grid points (the line between its neighbours if it is not one).
    fn cublas_point(&self, rows: f64) -> (f64, f64) {
        let x = &self.cublas_us.x;
        let i = x.partition_point(|&v| v < rows).min(x.len() - 1);
        let spread = self.cublas_spread.get(i).copied().unwrap_or(0.0);
        if x[i] == rows {
            (self.cublas_us.y[i], spread)
        } else {
            (self.cublas_us.at(rows), spread)
        }
    }

    /// What cuBLAS takes for `tokens` rows as the engine runs it: where it runs padded ([`GemmTable::padded_rows`])
    /// the time measured at the padded rows, beyond the grid the line extended; else the line between the grid
    /// points around the rows.
    pub fn cublas_at(&self, tokens: f64) -> f64 {
        match self.padded_rows(tokens) {
            Some(rows) => self.cublas_point(rows).0,
            None => self.cublas_us.at(tokens),
        }
    }

    /// The rows cuBLAS runs on for `tokens` where the engine runs it padded ([`GemmTable::cublas_padded`], within
    /// the grid): [`cublas_rows`] of them, a point of cuBLAS's table. `None` where it runs on the rows asked.
    pub fn padded_rows(&self, tokens: f64) -> Option<f64> {
        let last = self.cublas_us.x.last().copied().unwrap_or(0.0);
        (self.cublas_padded && tokens <= last).then(|| cublas_rows(tokens.ceil().max(1.0) as u64) as f64)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpTable {
    pub name: String,
    pub us: Curve,
    pub spread: Vec<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SurfaceTable {
    pub us: Surface,
    pub spread: Vec<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MixedDecode {
    pub contexts: Vec<u32>,
    pub us: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalibrationRun {
    pub seconds: f64,
    pub warmup: u32,
    /// Timed repeats per point in each pass.
    pub repeats: u32,
    /// Whole passes over the grid; tables hold the median over passes, spreads the range across them.
    pub passes: u32,
    /// How points were timed: `cuda-graph` (launches captured once and replayed: GPU time only) or `launches`
    /// (back-to-back launches from the host, what profiles before graph timing hold).
    #[serde(default = "launches")]
    pub timing: String,
    /// The SM clock while the op tables were measured, and while the engine steps were (NVML's, sampled every few
    /// milliseconds); `None` where it could not be read, or in profiles from before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_tables: Option<ClockSummary>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_engine_steps: Option<ClockSummary>,
    /// The CPU core the thread issuing the GPU's work was pinned to, or `none` (see [`crate::gpu::affinity`]);
    /// `None` in profiles from before it was recorded (2026-12-06), whose thread was not pinned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issue_cpu: Option<String>,
}

/// What a run of clock readings says.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClockSummary {
    pub median_mhz: f64,
    pub min_mhz: f64,
    /// The share of readings taken while power or thermal management held the clock down.
    pub slowed_share: f64,
    pub samples: u64,
}

impl ClockSummary {
    /// Of `(MHz, held down)` readings; `None` for none.
    pub fn of(readings: impl IntoIterator<Item = (u32, bool)>) -> Option<ClockSummary> {
        let (mut mhz, mut slowed) = (Vec::new(), 0u64);
        for (m, s) in readings {
            mhz.push(f64::from(m));
            slowed += u64::from(s);
        }
        if mhz.is_empty() {
            return None;
        }
        mhz.sort_by(f64::total_cmp);
        let n = mhz.len() as u64;
        Some(ClockSummary {
            median_mhz: crate::metrics::percentile_sorted(&mhz, 50.0),
            min_mhz: mhz[0],
            slowed_share: slowed as f64 / n as f64,
            samples: n,
        })
    }
}

fn launches() -> String {
    "launches".into()
}

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("cannot read profile {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("profile {path} is not a batchlab profile: {source}")]
    Json { path: String, source: serde_json::Error },
    #[error("profile {path} has format {found}; this batchlab reads format {PROFILE_FORMAT}: calibrate again")]
    Format { path: String, found: u32 },
    #[error("profile {path}: {message}")]
    Invalid { path: String, message: String },
}

impl Profile {
    pub fn load(path: &Path) -> Result<Profile, ProfileError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ProfileError::Io {
            path: p.clone(),
            source,
        })?;
        // Read the format first, so a future profile is refused with the reason, not with a field error.
        #[derive(Deserialize)]
        struct Version {
            format: u32,
        }
        let v: Version = serde_json::from_str(&text).map_err(|source| ProfileError::Json {
            path: p.clone(),
            source,
        })?;
        if v.format != PROFILE_FORMAT {
            return Err(ProfileError::Format {
                path: p,
                found: v.format,
            });
        }
        let profile: Profile = serde_json::from_str(&text).map_err(|source| ProfileError::Json {
            path: p.clone(),
            source,
        })?;
        profile
            .check()
            .map_err(|message| ProfileError::Invalid { path: p, message })?;
        Ok(profile)
    }

    /// Pretty JSON with a trailing newline (profiles are committed and diffed).
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("profiles serialize");
        s.push('\n');
        s
    }

    pub fn check(&self) -> Result<(), String> {
        for g in &self.gemm {
            g.ours_us.check().map_err(|e| format!("gemm {}: ours: {e}", g.name))?;
            g.cublas_us
                .check()
                .map_err(|e| format!("gemm {}: cublas: {e}", g.name))?;
            if g.cublas_padded {
                let last = g.cublas_us.x.last().copied().unwrap_or(1.0) as u32;
                let grid: Vec<f64> = cublas_grid(last).into_iter().map(f64::from).collect();
                if g.cublas_us.x != grid {
                    return Err(format!(
                        "gemm {}: cublas_padded, but cuBLAS was not timed at every row count the engine pads to up \
                         to {last} (1, 2, 4, 8, then multiples of 16 to 1024 and of 64 beyond)",
                        g.name
                    ));
                }
            }
        }
        for o in &self.ops {
            o.us.check().map_err(|e| format!("op {}: {e}", o.name))?;
        }
        self.attention_prefill
            .us
            .check()
            .map_err(|e| format!("attention_prefill: {e}"))?;
        self.attention_decode
            .us
            .check()
            .map_err(|e| format!("attention_decode: {e}"))?;
        for name in GEMMS {
            self.gemm_table(name)?;
        }
        for name in OPS {
            self.op_table(name)?;
        }
        Ok(())
    }

    pub fn gemm_table(&self, name: &str) -> Result<&GemmTable, String> {
        self.gemm
            .iter()
            .find(|g| g.name == name)
            .ok_or_else(|| format!("no gemm table `{name}`"))
    }

    pub fn op_table(&self, name: &str) -> Result<&OpTable, String> {
        self.ops
            .iter()
            .find(|o| o.name == name)
            .ok_or_else(|| format!("no op table `{name}`"))
    }

    /// Differences between what the profile was measured for and `model`, one sentence each.
    pub fn mismatches(&self, model: &ModelSpec) -> Vec<String> {
        let m = &self.fingerprint.model;
        let mut out = Vec::new();
        let mut differ = |what: &str, a: String, b: String| {
            if a != b {
                out.push(format!("{what}: profile measured {a}, scenario asks for {b}"));
            }
        };
        differ("model", m.name.clone(), model.name.clone());
        differ("hidden size", m.hidden.to_string(), model.hidden.to_string());
        differ(
            "intermediate size",
            m.intermediate.to_string(),
            model.intermediate.to_string(),
        );
        differ("layers", m.layers.to_string(), model.layers.to_string());
        differ(
            "heads",
            format!("{}/{}", m.heads, m.kv_heads),
            format!("{}/{}", model.heads, model.kv_heads),
        );
        differ("head dim", m.head_dim.to_string(), model.head_dim.to_string());
        differ("vocabulary", m.vocab.to_string(), model.vocab.to_string());
        out
    }
}

/// The weight shapes every profile has, in the order of a layer (lm_head last).
pub const GEMMS: [&str; 5] = ["qkv", "o", "gate_up", "down", "lm_head"];
/// The row-indexed ops every profile has.
pub const OPS: [&str; 5] = ["add_rmsnorm", "silu_mul", "kv_append_rope", "embedding", "argmax"];

#[cfg(test)]
mod tests {
    use super::*;

    fn table(ours: &[f64], cublas: &[f64], spread: f64) -> GemmTable {
        let x = vec![1.0, 16.0, 32.0];
        GemmTable {
            name: "o".into(),
            n: 1,
            k: 1,
            ours_us: Curve::new(x.clone(), ours.to_vec()),
            cublas_us: Curve::new(x, cublas.to_vec()),
            ours_spread: vec![0.0; 3],
            cublas_spread: vec![spread; 3],
            ours_plans: Vec::new(),
            with_silu_mul: false,
            cublas_padded: false,
        }
    }

    /// The kernel is the rule of the grid point at or above the rows; its time the line between the points around.
    #[test]
    fn a_gemm_takes_the_rule_above_and_the_line_between() {
        // Ours faster at 1 and 16 rows, cuBLAS at 32.
        let t = table(&[4.0, 6.0, 10.0], &[5.0, 7.0, 8.0], 0.0);
        assert!(t.ours_faster(16.0) && !t.ours_faster(17.0));
        assert_eq!(t.best_us(8.5), 5.0);
        // 24 rows run cuBLAS (the 32-row rule), read halfway between its 16- and 32-row times.
        assert_eq!(t.best_us(24.0), 7.5);
        // Beyond the grid the last rule holds and cuBLAS's time is extended.
        assert!(!t.ours_faster(64.0) && t.best_us(64.0) > 8.0);
        // Within cuBLAS's spread ours is kept: 10 ≤ 8 × 1.3.
        assert!(table(&[4.0, 6.0, 10.0], &[5.0, 7.0, 8.0], 0.3).ours_faster(24.0));
    }

    /// Decode graphs give cuBLAS up up to the largest bucket where what it saves over our kernel (every layer's
    /// projections and lm_head) stays under what programmatic launch saves a graph of our kernels alone.
    #[test]
    fn decode_graphs_run_our_gemm_where_cublas_saves_less_than_programmatic_launch() {
        let load = |name: &str| {
            let path = format!("{}/calibration/h100-80gb-hbm3/{name}.json", env!("CARGO_MANIFEST_DIR"));
            Profile::load(Path::new(&path)).expect("committed profile")
        };
        // The committed H100 profiles (2026-12-07 09:39 UTC): calibrate recorded what it finds.
        let (p05, p15) = (load("qwen2.5-0.5b"), load("qwen2.5-1.5b"));
        assert_eq!((p05.graph_ours_rows_of(), p15.graph_ours_rows_of()), (24, 16));
        assert_eq!((p05.graph_ours_rows, p15.graph_ours_rows), (24, 16));
        // No programmatic launch before sm_90.
        let mut ampere = p15.clone();
        ampere.fingerprint.compute_capability = "8.6".into();
        assert_eq!(ampere.graph_ours_rows_of(), 0);
        // Where cuBLAS wins big from one row on, no graph gives it up.
        let mut fast_cublas = p15;
        for g in &mut fast_cublas.gemm {
            g.cublas_us.y.iter_mut().for_each(|y| *y /= 2.0);
            g.cublas_spread.iter_mut().for_each(|s| *s = 0.0);
        }
        assert_eq!(fast_cublas.graph_ours_rows_of(), 0);
    }

    /// Where the engine pads cuBLAS's rows, cuBLAS costs what was measured at the padded rows, never a line between
    /// two of its points; the kernel is still chosen at our grid's points, a subset of cuBLAS's.
    #[test]
    fn a_padded_cublas_costs_its_padded_rows() {
        let grid: Vec<f64> = cublas_grid(64).into_iter().map(f64::from).collect();
        // cuBLAS 9 µs everywhere but at 48 rows, where it picks a kernel twice as fast.
        let cublas: Vec<f64> = grid.iter().map(|&x| if x == 48.0 { 4.5 } else { 9.0 }).collect();
        let t = GemmTable {
            ours_us: Curve::new(vec![1.0, 16.0, 64.0], vec![4.0, 6.0, 20.0]),
            cublas_us: Curve::new(grid.clone(), cublas),
            ours_spread: vec![0.0; 3],
            cublas_spread: vec![0.0; grid.len()],
            cublas_padded: true,
            ..table(&[0.0; 3], &[0.0; 3], 0.0)
        };
        let p = |t: &GemmTable| {
            let mut p =
                crate::sim::calibrated::tests::synthetic_profile(&crate::model::by_name("qwen2.5-0.5b").unwrap());
            for g in p.gemm.iter_mut().filter(|g| g.name == t.name) {
                *g = t.clone();
            }
            p
        };
        assert_eq!(p(&t).check(), Ok(()));
        // 17 to 64 rows run cuBLAS (the 64-row rule: 20 > 9): 33 to 48 rows at 48's 4.5 µs, 49 at 64's 9.
        assert!(!t.ours_faster(17.0));
        assert_eq!((t.best_us(33.0), t.best_us(48.0), t.best_us(49.0)), (4.5, 4.5, 9.0));
        assert_eq!(t.cublas_at(40.0), 4.5);
        // Read on a line, 40 rows would be 6.75 µs: what a table not timed for padding gives.
        let unpadded = GemmTable {
            cublas_padded: false,
            ..t.clone()
        };
        assert_eq!(unpadded.best_us(40.0), 6.75);
        // A padded table must hold every row count the engine pads to.
        let mut gap = t.clone();
        gap.cublas_us = Curve::new(vec![1.0, 16.0, 64.0], vec![9.0; 3]);
        gap.cublas_spread = vec![0.0; 3];
        assert!(p(&gap).check().unwrap_err().contains("not timed at every row count"));
    }

    #[test]
    fn a_clock_summary_is_the_median_the_lowest_and_the_share_held_down() {
        let s = ClockSummary::of([(1980, false), (1710, true), (1980, false), (1650, true), (1980, false)]).unwrap();
        assert_eq!((s.median_mhz, s.min_mhz, s.samples), (1980.0, 1650.0, 5));
        assert!((s.slowed_share - 0.4).abs() < 1e-12);
        assert!(ClockSummary::of([]).is_none());
        // It survives the profile's JSON, and profiles without it still load.
        let run: CalibrationRun =
            serde_json::from_str(r#"{"seconds": 1.0, "warmup": 1, "repeats": 1, "passes": 1, "timing": "cuda-graph"}"#)
                .unwrap();
        assert_eq!(run.clock_tables, None);
        let run = CalibrationRun {
            clock_engine_steps: Some(s),
            ..run
        };
        let back: CalibrationRun = serde_json::from_str(&serde_json::to_string(&run).unwrap()).unwrap();
        assert_eq!(back, run);
    }
}
