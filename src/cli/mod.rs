//! Command-line interface: clap parsing → validated configuration → library calls → output and exit code.
//! The only module besides `report` that prints.

mod commands;
mod gpu_commands;
pub mod validate_command;

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// What continuous batching buys over static batching in LLM inference — latency, throughput, GPU memory and
/// KV-cache growth — for a given model, GPU and workload, from first principles.
///
/// Start with `batchlab simulate scenarios/quickstart.toml`: it serves 16 requests under the static, continuous
/// and grouped policies on a simulated H100 and prints what each one costs. `batchlab explain` shows what a
/// scenario would run without running it.
#[derive(Debug, Parser)]
#[command(name = "batchlab", version, propagate_version = true, max_term_width = 110)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Simulate every run of a scenario and write metrics (summary.csv/.parquet/.json, per-run requests and
    /// steps tables) to the output folder; print a summary table.
    Simulate(SimulateArgs),
    /// Show the runs a scenario resolves to (sweep expanded, overrides applied) and what each would use,
    /// without running them.
    Explain(ScenarioArgs),
    /// Draw the report of a results folder written by `simulate`: charts (PNG and SVG), report.html,
    /// report.md, metrics.prom (Prometheus) and a Chrome/Perfetto trace per run. `simulate` does this itself
    /// unless given --no-report.
    Report(ReportArgs),
    /// List the built-in models with their size and KV-cache cost per token.
    Models,
    /// List the GPU presets of the analytic cost model (datasheet figures).
    Gpus,
    /// Measure the simulator's own speed: simulate a scenario (by default one million Poisson requests on
    /// qwen2.5-7b, continuous batching with chunked prefill, analytic H100) on one thread and report simulated
    /// requests per second of wall time and peak memory.
    Bench(BenchArgs),
    /// Measure this GPU: time our CUDA kernels and cuBLAS for every op of a model over the shapes its serving steps
    /// produce, then whole steps on the engine (and the memory each engine holds beyond its computed workspace), and
    /// write a calibration profile for the `calibrated` cost model (needs an NVIDIA GPU).
    Calibrate(CalibrateArgs),
    /// Time each kernel at shapes that reach the hardware's limits and report achieved bandwidth or FLOP/s as a
    /// fraction of the ceilings measured on the same card (needs an NVIDIA GPU).
    BenchKernels(BenchKernelsArgs),
    /// Time whole engine steps (decode at several batch sizes and contexts, prefills) and report each against the
    /// physical floor: (weight + KV bytes) at the measured copy bandwidth for decode, FLOPs at the measured GEMM
    /// throughput for prefill (needs an NVIDIA GPU). Example: batchlab bench-engine --model qwen2.5-0.5b
    BenchEngine(BenchEngineArgs),
    /// Run a scenario on the real GPU engine and in the simulator, and report how far every simulated metric and
    /// every simulated step is from what was measured (needs an NVIDIA GPU).
    ///
    /// For every run of the scenario: a short warm-up on the GPU (discarded), then the run itself, served by the
    /// same scheduler as the simulator with the wall clock (requests arrive in real time), then the same run
    /// simulated with the scenario's cost model. The output folder holds the measured runs where `simulate` puts
    /// its runs (so the report's charts describe the real execution), the simulated ones under simulated/, and
    /// the comparison: runs/<run>/comparison.csv (every summary metric measured, simulated and the relative error
    /// |simulated − measured| / measured), runs/<run>/step_errors.parquet (each measured step's shape, measured
    /// time and the cost model's prediction for that very plan), validation.md and validation.json (per metric
    /// the median and p95 error over all runs against the targets median ≤ 3% and p95 ≤ 8%; per-step error for
    /// decode-only, prefill-only and mixed steps; whether the scheduler planned the same steps in both; whether
    /// the policies' throughput ordering is reproduced wherever it was measured more than 5% apart).
    ///
    /// Each run's engine is sized for the run as the simulator sizes its workspace; its peak memory is its weights,
    /// its KV cache at the most it held, and its workspace: the most memory used while it lived, less the memory in
    /// use once it is gone, its weights and its KV cache (the first run's engine is built and warmed up once before,
    /// unmeasured, so that no run pays what the process pays once).
    ///
    /// A calibrated scenario's profile must have been measured on this GPU with this build's kernels: validate
    /// refuses any other (run `batchlab calibrate` first). Example: batchlab validate scenarios/seed-matrix.toml
    Validate(ValidateArgs),
    /// Put batchlab's measured output throughput beside Hugging Face transformers' on the same burst workloads
    /// and check the speed target (no GPU needed: it reads what was measured).
    ///
    /// Reads a `batchlab validate` folder (its measured runs: summary.json, and device.json for the card) and the
    /// CSV(s) that scripts/hf_baseline.py wrote on the same card (transformers' `model.generate` on static padded
    /// batches and its continuous batching, `generate_batch`), joins them on (model, prompt length, max batch,
    /// requests) and writes a markdown report: every configuration's output tok/s per batchlab policy and per
    /// transformers mode with the ratios, the headline check at max batch 8 with 16 requests (batchlab at least
    /// 50× both), the card each source names (with a warning when they differ), and what is in one source only.
    /// Example: batchlab baseline-report --validated out/seed-matrix-validate --baseline out/hf.csv --out
    /// out/baseline.md
    BaselineReport(BaselineReportArgs),
    /// Compare two calibration profiles of one model: per table, how many of the points both measured agree within
    /// their measured spread (points of one grid only are counted apart), and how far apart the others are.
    /// Example: batchlab compare-profiles
    /// calibration/h200/repeat/qwen2.5-0.5b.first.json calibration/h200/repeat/qwen2.5-0.5b.json
    CompareProfiles(CompareProfilesArgs),
    /// Compare the headline metrics of two summaries of the same runs, run by run: a `validate` folder (measured)
    /// and a `simulate` folder (simulated) of the same scenario, for example after refitting a profile or changing
    /// the cost model (`simulate` reproduces `validate`'s simulated side), without a GPU. Prints per metric the
    /// median, p95 and largest relative error and the verdict against the targets. Parts of one sweep validated
    /// separately (open-loop runs take their arrivals' time in real time) are compared together with --with,
    /// against one simulation of the whole sweep. Example: batchlab compare-summaries
    /// reports/seed-matrix-h200-validated out/sm-h200 (simulated with the H200 profiles); batchlab compare-summaries
    /// reports/poisson-h100-validated reports/poisson-h100 --with reports/poisson-h100-validated-4-8
    CompareSummaries(CompareSummariesArgs),
    /// Report how well a profile predicts the points of an offset grid (the <model>.offset.json that
    /// `calibrate --check` writes), per op: median, p95 and largest relative error, and the points it predicts
    /// worst, as the cost model reads the profile. No GPU needed. Example: batchlab check-profile
    /// calibration/h100-80gb-hbm3/qwen2.5-0.5b.json calibration/h100-80gb-hbm3/qwen2.5-0.5b.offset.json
    CheckProfile(CheckProfileArgs),
    /// Fit a profile's engine step model again to the engine steps it measured (stored in the profile), as this
    /// batchlab's `calibrate` fits them, and rewrite the file; prints the model before and after. Steps stored with
    /// their plan (profiles calibrated by this version on) are first priced again by this batchlab's cost model, so
    /// a change to the cost model can be fitted without a GPU. No GPU needed.
    RefitProfile(RefitArgs),
}

#[derive(Debug, Args)]
pub struct BaselineReportArgs {
    /// A folder written by `batchlab validate` (its --out).
    #[arg(long)]
    pub validated: PathBuf,
    /// A CSV written by scripts/hf_baseline.py; repeat it for several (one per model, say).
    #[arg(long, required = true)]
    pub baseline: Vec<PathBuf>,
    /// Write the report to this markdown file (and print only the headline) [default: print the whole report].
    #[arg(long, short)]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RefitArgs {
    /// The profile to refit in place.
    pub profile: PathBuf,
}

#[derive(Debug, Args)]
pub struct GpuModelArgs {
    /// A built-in model (`batchlab models`).
    #[arg(long, default_value = "qwen2.5-0.5b", conflicts_with = "model_config")]
    pub model: String,
    /// A Hugging Face config.json instead of a built-in model.
    #[arg(long)]
    pub model_config: Option<PathBuf>,
    /// The GPU to use (CUDA ordinal).
    #[arg(long, default_value_t = 0)]
    pub gpu: usize,
    /// Untimed launches before each measured point.
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
    /// Timed repeats per point and pass (each repeat spans about 200 µs of back-to-back launches).
    #[arg(long, default_value_t = 7)]
    pub repeats: usize,
    #[command(flatten)]
    pub pin: PinArgs,
}

/// Where the thread that issues the GPU's work runs (every GPU command).
#[derive(Debug, Args)]
pub struct PinArgs {
    /// Pin the thread that issues the GPU's work to one CPU core: `auto` (of the cores near the GPU, the one that
    /// issues kernel launches fastest, measured at start-up) or a core number; `none` leaves it to the OS. An eager
    /// step's time is the host's time to issue its launches, which depends on the core; on a machine with several
    /// NUMA nodes, pin to one near the GPU. Calibrate and validate alike (`validate` warns when a profile's engine
    /// steps were measured pinned and the run is not, or the other way round).
    #[arg(long, default_value = "none", value_name = "CPU")]
    pub cpu: crate::gpu::affinity::IssueCpu,
}

#[derive(Debug, Args)]
pub struct CalibrateArgs {
    #[command(flatten)]
    pub target: GpuModelArgs,
    /// Output folder [default: calibration/<gpu>/]; the profile is written as <model>.json.
    #[arg(long, short)]
    pub out: Option<PathBuf>,
    /// Also measure a second grid offset from the profile's and report how well the profile predicts it
    /// (<model>.offset.json and <model>.check.md beside the profile).
    #[arg(long)]
    pub check: bool,
    /// Whole passes over the grid; each point keeps its median over the passes.
    #[arg(long, default_value_t = 5)]
    pub passes: usize,
    /// Tokens per KV block the attention tables are measured with.
    #[arg(long, default_value_t = 16)]
    pub block_size: u32,
    /// Time cuBLAS at the grid's row counts only and have the engine run it on a step's own rows with this
    /// profile, as profiles were calibrated before 2026-12-07 10:20 UTC. By default cuBLAS is timed at every row
    /// count the engine pads it to (1, 2, 4, 8, multiples of 16 to 1024 and of 64 to 8192) and run padded so: no
    /// cuBLAS time is ever read between two measured row counts, where cuBLAS's kernel switches had put the QKV
    /// projection 13.6-23.4% off at the p95 out of sample on an H100 (`reports/padded-cublas-h100/`).
    #[arg(long = "unpadded-cublas", action = clap::ArgAction::SetFalse)]
    pub pad_cublas: bool,
    /// Time every point back to back. By default, after each point that kept the GPU busy for 4 ms or more (large
    /// GEMMs), calibrate leaves it idle as long, so that a run of heavy points does not hold the card at its power
    /// limit (and its clock down) for the points after them: with padded cuBLAS alone the large GEMMs' tables came
    /// out up to 24% slower than the same shapes timed again; with both, every projection's GEMM within 4.5% at the
    /// p95 out of sample on an H100 (`calibration/README.md`), at 13-34% more time.
    #[arg(long = "no-cool-down", action = clap::ArgAction::SetFalse)]
    pub cool_down: bool,
    /// Cap the profile's `graph_ours_rows` at N: decode graphs of up to that many rows run our GEMM for every
    /// projection (their kernels then launch programmatically), larger ones the faster kernel of each (cuBLAS where
    /// the tables say so, launched serially), wherever the tables would have put the line. On an H100 qwen2.5-1.5b's
    /// 16-row graph of our kernels ran 5-10% faster than its profile in some engines and slower in others
    /// (`reports/pad-cool-h100/`); 8 keeps its 16-row graph on the faster kernels. 0: no graph on ours alone.
    #[arg(long, value_name = "N")]
    pub graph_ours_rows_max: Option<u32>,
    /// The default since 2026-12-07 (accepted, as the scripts of before pass it).
    #[arg(long = "pad-cublas", hide = true, conflicts_with = "pad_cublas")]
    pub pad_cublas_default: bool,
    /// The default since 2026-12-07 (accepted, as the scripts of before pass it).
    #[arg(long = "cool-down", hide = true, conflicts_with = "cool_down")]
    pub cool_down_default: bool,
}

#[derive(Debug, Args)]
pub struct BenchKernelsArgs {
    #[command(flatten)]
    pub target: GpuModelArgs,
    /// Decode attention points as BATCHxCONTEXT, comma-separated, each timed with its default split and with every
    /// partition size [default: 1x4096,8x8192,32x4096,64x2048,256x1024]. E.g. contexts of 11 and 12 partitions:
    /// `--decode 3x1300,3x1408,3x1536`.
    #[arg(long, value_delimiter = ',', value_parser = parse_pair)]
    pub decode: Vec<(u32, u32)>,
    /// Also time decode attention over the 42 batches of mixed context lengths calibration measures (24 of the
    /// profile's grid, 4 to 192 sequences, and 18 of the offset grid), each with its default split and every
    /// partition size.
    #[arg(long)]
    pub mixed: bool,
    /// Also write the markdown report to this file.
    #[arg(long, short)]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct BenchEngineArgs {
    #[command(flatten)]
    pub target: GpuModelArgs,
    /// Decode points as BATCHxCONTEXT, comma-separated [default: 1x128,1x1024,4x1024,8x1024,64x1024,64x4096,
    /// 256x1024,256x4096,8x512].
    #[arg(long, value_delimiter = ',', value_parser = parse_pair)]
    pub decode: Vec<(u32, u32)>,
    /// Prefill points as SEQUENCESxTOKENS, comma-separated [default: 8x512,1x4096,2x4096].
    #[arg(long, value_delimiter = ',', value_parser = parse_pair)]
    pub prefill: Vec<(u32, u32)>,
    /// Also time each prefill point with N decode steps of another sequence (replayed CUDA graphs) before each of
    /// its steps, as serving issues a new prompt between decode steps, beside the same point timed back to back:
    /// whether the host issues an eager step slower after graph replays. Small prefills show it (a step takes at
    /// least its host issue): --prefill 1x64,4x64 --prefill-after-decodes 8.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=64))]
    pub prefill_after_decodes: Option<u32>,
    /// Which GEMM runs every GEMM of the engine: `ours` or `cublas`, comma-separated for both variants (left out:
    /// `ours,cublas`).
    #[arg(long, value_delimiter = ',', value_parser = parse_gemm)]
    pub gemm: Vec<crate::engine::GemmBackend>,
    /// How the kernels of a decode graph follow each other: `pdl` (programmatic dependent launch: each kernel
    /// launches while the one before it finishes) or `serial`, comma-separated for both variants (left out:
    /// `pdl,serial`).
    #[arg(long, value_delimiter = ',', value_parser = parse_launch)]
    pub launch: Vec<crate::gpu::Succession>,
    /// Launch our GEMM with the plans this calibration profile tuned for each weight shape and row count (as
    /// `validate` does), instead of the default plan. The profile must be of the same model.
    #[arg(long, value_name = "PROFILE")]
    pub plans: Option<PathBuf>,
    /// Size each engine's activation buffers for steps of up to N tokens, as `validate` sizes a run's engine for
    /// what its policy can plan: continuous batching for its token budget (`max_batch_tokens`), static batching for
    /// a full batch of its longest prompt (never fewer than the largest prefill point's) [default: 8192].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub step_tokens: Option<u32>,
    /// The longest context each engine's decode graphs cover (their attention grids are sized for it), as
    /// `validate` sizes them for the longest context a run reaches (never shorter than the longest point's) [default:
    /// the longest point's].
    #[arg(long, value_name = "TOKENS", value_parser = clap::value_parser!(u32).range(1..))]
    pub context: Option<u32>,
    /// Build this many engines one after another for each variant and time every point on each: whether fresh
    /// engines of one build run the same step at the same speed.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=16))]
    pub engines: u32,
    /// After every decode point was timed, have each engine drop its decode graphs, capture and instantiate them
    /// anew, and time every decode point again (on sequences prefilled anew), N times: whether a decode step's pace
    /// belongs to the engine or to the set of graphs it replays. Rows say which set ("graphs 2").
    #[arg(long, value_name = "N", default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=16))]
    pub recapture: u32,
    /// Give each engine a KV cache of N token slots, as `validate` gives a run's engine what 95% of the free memory
    /// holds (never fewer than the points need) [default: what the points need].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub kv_tokens: Option<u64>,
    /// Keep the memory each engine frees in the allocator's pool for the next engine, instead of CUDA's default
    /// (releasing it at the next synchronisation, so that each engine maps what the driver hands out then): whether
    /// what an engine's buffers are mapped to sets its pace. Measured on an H100 (`reports/pace-keep-h100/`): it
    /// does not; the third engine of a process stood apart either way (on another H100 no engine did,
    /// `reports/padded-cublas-h100/`). With --engines; the memory an engine reports using is then not what it
    /// newly mapped.
    #[arg(long)]
    pub keep_freed_memory: bool,
    /// Read the SM clock through NVML every MS milliseconds while the steps are timed, as `calibrate` and
    /// `validate` do (every 10 ms), and report its median, its lowest and how often power or thermal management
    /// held it down: whether the clock moved the timings. Timing once with it and once without shows whether the
    /// sampling itself costs the steps anything.
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub clock_every: Option<u64>,
    /// Also write the markdown report to this file.
    #[arg(long, short)]
    pub out: Option<PathBuf>,
}

fn parse_gemm(s: &str) -> Result<crate::engine::GemmBackend, String> {
    match s {
        "ours" => Ok(crate::engine::GemmBackend::Ours),
        "cublas" => Ok(crate::engine::GemmBackend::Cublas),
        _ => Err(format!("`{s}` is not a GEMM: ours or cublas")),
    }
}

fn parse_launch(s: &str) -> Result<crate::gpu::Succession, String> {
    match s {
        "pdl" => Ok(crate::gpu::Succession::Programmatic),
        "serial" => Ok(crate::gpu::Succession::Serial),
        _ => Err(format!("`{s}` is not a launch order: pdl or serial")),
    }
}

/// "8x1024" → (8, 1024), both positive.
fn parse_pair(s: &str) -> Result<(u32, u32), String> {
    let bad = || format!("`{s}` is not AxB with two positive whole numbers (like 8x1024)");
    let (a, b) = s.split_once(['x', 'X', '×']).ok_or_else(bad)?;
    let (a, b) = (
        a.trim().parse::<u32>().map_err(|_| bad())?,
        b.trim().parse::<u32>().map_err(|_| bad())?,
    );
    if a == 0 || b == 0 {
        return Err(bad());
    }
    Ok((a, b))
}

#[derive(Debug, Args)]
pub struct CompareProfilesArgs {
    /// A calibration profile (<model>.json).
    pub first: PathBuf,
    /// Another profile of the same model.
    pub second: PathBuf,
}

#[derive(Debug, Args)]
pub struct CompareSummariesArgs {
    /// A folder written by `batchlab validate` (its --out): the measured side.
    pub measured: PathBuf,
    /// A folder written by `batchlab simulate` of the same scenario: the simulated side (it may hold more of the
    /// scenario's sweep than was measured).
    pub simulated: PathBuf,
    /// Another `validate` folder of the same scenario (another part of its sweep, validated in another call, as
    /// `--set 'sweep.workload.rate=[4,8]'`): its runs are compared too. Each measured run is matched with the
    /// simulated run of the same settings. Repeat for more.
    #[arg(long = "with", value_name = "DIR")]
    pub with: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CheckProfileArgs {
    /// The calibration profile (<model>.json).
    pub profile: PathBuf,
    /// The offset grid measured with it (<model>.offset.json, from `calibrate --check`).
    pub offset: PathBuf,
}

#[derive(Debug, Args)]
pub struct ScenarioArgs {
    /// The scenario file (TOML). See README.md, "Scenario format", for every key.
    pub scenario: PathBuf,
    /// Override any key of the scenario: a dotted path and a TOML value (a plain string when the value is not
    /// TOML). Repeatable. Examples: --set model.name=qwen2.5-1.5b  --set workload.output_len=[16,32]
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    /// Override the scenario's seed.
    #[arg(long)]
    pub seed: Option<u64>,
}

#[derive(Debug, Args)]
pub struct SimulateArgs {
    #[command(flatten)]
    pub scenario: ScenarioArgs,
    /// Output folder [default: out/<scenario name>].
    #[arg(long, short)]
    pub out: Option<PathBuf>,
    /// Run a sweep's runs one after another instead of in parallel (results are identical either way).
    #[arg(long)]
    pub serial: bool,
    /// Do not print the summary table.
    #[arg(long, short)]
    pub quiet: bool,
    /// Do not draw the report (charts, report.html, report.md, metrics.prom, traces) after simulating.
    #[arg(long)]
    pub no_report: bool,
    /// Also simulate every run with each step's time 2% and 1% shorter and 1% and 2% longer, and write
    /// sensitivity.csv: each headline metric as simulated and its least and most over the five. Where the schedule
    /// amplifies small timing differences (static batching near saturation: a step that ends a little earlier lets
    /// an arrival into another batch) a metric moves far more than its steps; such runs are printed.
    #[arg(long)]
    pub sensitivity: bool,
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    #[command(flatten)]
    pub scenario: ScenarioArgs,
    /// Output folder [default: out/<scenario name>-validate].
    #[arg(long, short)]
    pub out: Option<PathBuf>,
    /// The GPU to run on (CUDA ordinal, as nvidia-smi numbers them).
    #[arg(long, default_value_t = 0)]
    pub gpu: usize,
    #[command(flatten)]
    pub pin: PinArgs,
    /// Before each run, serve a discarded warm-up of about this many steps (one batch of the run's own prompts, the
    /// last arriving just after the others so that continuous batching takes a mixed step too) so kernel
    /// compilation, cuBLAS heuristics, clocks and an engine's first step of each kind are paid before anything is
    /// measured; 0 for none.
    #[arg(long, default_value_t = crate::sim::run::WARMUP_STEPS, value_name = "N")]
    pub warmup_steps: u32,
    /// Measure each run this many times, each on a freshly built engine after its own warm-up, and compare the
    /// measurement whose steps ran at the median pace (their measured time in all over their predicted time:
    /// under bursts mostly the one of median output throughput; under open-loop arrivals, whose throughput the
    /// arrival rate sets, the median engine all the same; every measurement's throughput and pace are reported
    /// beside it). Short runs (a burst of a few requests takes 0.1 s) move by a few percent from one measurement to
    /// the next; the median of three sets that noise apart from the model's error. The runs are measured in N passes
    /// over all of them, so that a stretch of seconds in which the host runs slow falls on one measurement of a run,
    /// not on all. Every repeat takes the run's time on the GPU again.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=9), value_name = "N")]
    pub repeats: u32,
    /// Before the first measured run, build this many engines like its own, warm each up on the run's first
    /// requests and close it, so that what a process pays once (the allocator's first chunks, cuBLAS's handle, kernel
    /// code loaded at its first launch) is not measured. 0: none (the first run then measures some of those one-off
    /// costs as its own workspace). More do not steady the engines' pace: on H100s, in every process measured, the
    /// third engine built (priming ones counted) ran its steps fastest and most others 2-5% slower
    /// (`reports/poisson-h100-sweep/`), which `--repeats 3` sets apart.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(0..=4), value_name = "N")]
    pub prime_engines: u32,
    /// An experiment on engine pace: keep the memory each engine frees in the allocator's pool for the next one
    /// (as `bench-engine --keep-freed-memory`), so that every engine after the first reuses what the one before it
    /// was mapped to (which did not even the engines' paces in `bench-engine`: `reports/pace-keep-h100/`). Memory
    /// is then not measured (an engine's use no longer shows in the driver's free memory: the report says so), and
    /// a KV cache sized from the free memory would shrink from one engine to the next: give the scenario a capacity
    /// (`--set memory.kv_capacity_tokens=N`) that two engines' caches fit in.
    #[arg(long)]
    pub keep_freed_memory: bool,
    /// Do not print the verdicts and the headline-metric table.
    #[arg(long, short)]
    pub quiet: bool,
    /// Do not draw the report (charts, report.html, report.md, metrics.prom, traces) after validating.
    #[arg(long)]
    pub no_report: bool,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The results folder (the `--out` of `simulate` or `validate`).
    pub results: PathBuf,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Scenario to benchmark [default: the built-in one-million-request scenario, scenarios/bench-1m.toml].
    pub scenario: Option<PathBuf>,
    /// Override the number of requests.
    #[arg(long)]
    pub requests: Option<u64>,
    /// Override any key of the scenario (as for `simulate`).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
}

pub fn main() -> ExitCode {
    quiet_when_the_reader_stops();
    let cli = Cli::parse();
    init_tracing();
    match commands::run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// A reader that stops early (`batchlab check-profile … | head`) closes the pipe under `print!`, which then panics:
/// no fault of batchlab's, so it ends quietly there, with the status a shell tool killed by SIGPIPE has (141).
fn quiet_when_the_reader_stops() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = (payload.downcast_ref::<String>().map(String::as_str))
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(141);
        }
        default(info);
    }));
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("BATCHLAB_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .without_time()
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::{Cli, Command, parse_pair};
    use clap::Parser;

    /// The command `line` (words split at spaces) parses to, or the kind of error clap gives.
    fn parsed(line: &str) -> Result<Command, clap::error::ErrorKind> {
        Cli::try_parse_from(line.split(' '))
            .map(|c| c.command)
            .map_err(|e| e.kind())
    }

    #[test]
    fn bench_kernels_takes_decode_points_or_none() {
        let args = |line: &str| match Cli::try_parse_from(line.split(' ')).unwrap().command {
            Command::BenchKernels(a) => a.decode,
            _ => panic!("not bench-kernels"),
        };
        assert_eq!(
            args("batchlab bench-kernels --decode 3x1300,12x2600"),
            [(3, 1300), (12, 2600)]
        );
        assert!(args("batchlab bench-kernels").is_empty());
        assert!(Cli::try_parse_from(["batchlab", "bench-kernels", "--decode", "3x0"]).is_err());
    }

    #[test]
    fn bench_engine_keeps_freed_memory_only_when_asked() {
        let keep = |line: &str| {
            parsed(line).map(|c| match c {
                Command::BenchEngine(a) => a.keep_freed_memory,
                _ => panic!("not bench-engine"),
            })
        };
        assert_eq!(keep("batchlab bench-engine --engines 8"), Ok(false));
        assert_eq!(keep("batchlab bench-engine --engines 8 --keep-freed-memory"), Ok(true));
        let keep = |line: &str| {
            parsed(line).map(|c| match c {
                Command::Validate(a) => a.keep_freed_memory,
                _ => panic!("not validate"),
            })
        };
        assert_eq!(keep("batchlab validate s.toml"), Ok(false));
        assert_eq!(keep("batchlab validate s.toml --keep-freed-memory"), Ok(true));
    }

    #[test]
    fn calibrate_pads_cublas_and_cools_down_unless_told_not_to() {
        let calibrate = |line: &str| {
            parsed(line).map(|c| match c {
                Command::Calibrate(a) => a,
                _ => panic!("not calibrate"),
            })
        };
        let flags = |line: &str| calibrate(line).map(|a| (a.pad_cublas, a.cool_down));
        assert_eq!(flags("batchlab calibrate --model qwen2.5-0.5b"), Ok((true, true)));
        assert_eq!(flags("batchlab calibrate --pad-cublas --cool-down"), Ok((true, true)));
        assert_eq!(flags("batchlab calibrate --unpadded-cublas"), Ok((false, true)));
        assert_eq!(flags("batchlab calibrate --no-cool-down"), Ok((true, false)));
        assert!(flags("batchlab calibrate --pad-cublas --unpadded-cublas").is_err());
        assert!(flags("batchlab calibrate --cool-down --no-cool-down").is_err());
        let cap = |line: &str| calibrate(line).map(|a| a.graph_ours_rows_max);
        assert_eq!(cap("batchlab calibrate"), Ok(None));
        assert_eq!(cap("batchlab calibrate --graph-ours-rows-max 8"), Ok(Some(8)));
        assert!(cap("batchlab calibrate --graph-ours-rows-max x").is_err());
    }

    #[test]
    fn bench_engine_recaptures_its_graphs_0_to_16_times() {
        let recapture = |line: &str| {
            parsed(line).map(|c| match c {
                Command::BenchEngine(a) => a.recapture,
                _ => panic!("not bench-engine"),
            })
        };
        assert_eq!(recapture("batchlab bench-engine"), Ok(0));
        assert_eq!(recapture("batchlab bench-engine --engines 4 --recapture 2"), Ok(2));
        assert!(recapture("batchlab bench-engine --recapture 17").is_err());
    }

    #[test]
    fn bench_engine_reads_the_clock_only_when_asked_every_1_to_1000_ms() {
        let every = |line: &str| {
            parsed(line).map(|c| match c {
                Command::BenchEngine(a) => a.clock_every,
                _ => panic!("not bench-engine"),
            })
        };
        assert_eq!(every("batchlab bench-engine"), Ok(None));
        assert_eq!(every("batchlab bench-engine --clock-every 10"), Ok(Some(10)));
        for bad in ["0", "1001", "x"] {
            assert!(
                every(&format!("batchlab bench-engine --clock-every {bad}")).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn validate_primes_one_engine_unless_told_zero_to_four() {
        let primes = |line: &str| {
            parsed(line).map(|c| match c {
                Command::Validate(a) => a.prime_engines,
                _ => panic!("not validate"),
            })
        };
        assert_eq!(primes("batchlab validate s.toml"), Ok(1));
        assert_eq!(primes("batchlab validate s.toml --prime-engines 0"), Ok(0));
        assert_eq!(primes("batchlab validate s.toml --prime-engines 3"), Ok(3));
        for bad in ["5", "-1", "x"] {
            assert!(
                primes(&format!("batchlab validate s.toml --prime-engines {bad}")).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn points_parse_as_a_x_b() {
        assert_eq!(parse_pair("8x1024"), Ok((8, 1024)));
        assert_eq!(parse_pair(" 1X128"), Ok((1, 128)));
        assert_eq!(parse_pair("64×4096"), Ok((64, 4096)));
        for bad in ["8", "8x", "x8", "0x16", "8x0", "-1x4", "axb", "8x1024x2"] {
            assert!(parse_pair(bad).is_err(), "{bad}");
        }
    }
}
