//! One run of a scenario, end to end: resolve the model, the GPU and the cost model, size the KV cache, draw the
//! workload, check that every request can ever be served, then serve it under the policy and collect metrics.

use super::analytic::{
    AnalyticCost, DEFAULT_BANDWIDTH_EFFICIENCY, DEFAULT_COMPUTE_EFFICIENCY, DEFAULT_STEP_OVERHEAD_US,
};
use super::calibrated::CalibratedCost;
use super::hardware::GpuSpec;
use super::serving::{LoopError, StepObserver, serve};
use super::{CostModel, LinearCost, ScaledCost, SimExecutor, VirtualClock};
use crate::calib::Profile;
use crate::metrics::{Cell, MemoryModel, Recorder, RunReport, Slo};
use crate::model::{self, DEFAULT_RUNTIME_OVERHEAD_BYTES, DEFAULT_SM_COUNT, EngineSizing, ModelSpec};
use crate::sched::{
    ContinuousScheduler, GroupedScheduler, Scheduler, SchedulerLimits, StaticScheduler, final_kv_tokens,
};
use crate::units::{GIB, MIB, Nanos};
use crate::workload::{self, CostKind, PolicyKind, Request, RunSpec, Scenario, Workload};

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The run cannot be set up or served as specified; the message says why and names the run.
    #[error("{0}")]
    Invalid(String),
    #[error("{run}: {source}")]
    Loop { run: String, source: LoopError },
}

/// What to keep of a run beyond its summary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordOptions {
    pub steps: bool,
    /// Keep every token's time when the run emits at most this many tokens.
    pub token_trace_limit: u64,
}

impl RecordOptions {
    pub fn from_scenario(s: &Scenario) -> RecordOptions {
        RecordOptions {
            steps: s.output.steps,
            token_trace_limit: s.output.token_trace_limit,
        }
    }

    /// Summary only: for benchmarks of the simulator itself.
    pub const SUMMARY_ONLY: RecordOptions = RecordOptions {
        steps: false,
        token_trace_limit: 0,
    };
}

/// A run ready to serve: everything resolved and checked.
pub struct PreparedRun {
    pub model: ModelSpec,
    pub gpu: GpuSpec,
    pub cost: Box<dyn CostModel>,
    pub limits: SchedulerLimits,
    /// What an engine serving the run is sized for (`validate` builds its engine with exactly this).
    pub sizing: EngineSizing,
    /// How the workspace in `memory` was predicted.
    pub workspace: WorkspaceModel,
    pub memory: MemoryModel,
    pub workload: Workload,
    pub slo: Slo,
    pub policy: PolicyKind,
}

/// A run's predicted workspace: what the engine allocates for the run's sizing (computed), what it holds beyond
/// that (measured by `calibrate`, or a default), both in whole allocator chunks beside the weights
/// ([`model::mapped_workspace`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorkspaceModel {
    /// [`crate::model::EngineWorkspace::bytes`] for the run's [`EngineSizing`].
    pub computed_bytes: u64,
    /// The profile's `runtime_overhead_bytes`, or [`DEFAULT_RUNTIME_OVERHEAD_BYTES`] without one.
    pub runtime_overhead_bytes: u64,
    /// Whether `runtime_overhead_bytes` was measured (a profile that has it) or is the default.
    pub overhead_measured: bool,
    /// The model's weights, allocated before the workspace (the chunks they leave part empty take workspace first).
    pub weight_bytes: u64,
    /// `memory.workspace_mib` of the scenario, which replaces the prediction.
    pub override_bytes: Option<u64>,
}

impl WorkspaceModel {
    /// The workspace the run is simulated with.
    pub fn bytes(&self) -> u64 {
        self.override_bytes.unwrap_or_else(|| {
            model::mapped_workspace(self.weight_bytes, self.computed_bytes + self.runtime_overhead_bytes)
        })
    }
}

/// What a calibration profile says about the engine's memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProfileMemory {
    /// The GPU's SMs (decode attention's partitioning depends on them).
    pub sm_count: u32,
    /// What the engine held beyond its computed workspace, measured; `None` in profiles from before it was.
    pub runtime_overhead_bytes: Option<u64>,
}

impl ProfileMemory {
    pub fn of(profile: &Profile) -> ProfileMemory {
        ProfileMemory {
            sm_count: profile.fingerprint.sm_count,
            runtime_overhead_bytes: profile.engine.as_ref().and_then(|e| e.runtime_overhead_bytes),
        }
    }
}

/// Decode steps (about) of a warm-up: `validate`'s default, and `calibrate`'s before each serving burst.
pub const WARMUP_STEPS: u32 = 8;

/// The warm-up of a workload served `max_batch_size` sequences at a time: its first requests (as many as one batch
/// holds), with outputs cut to `steps` tokens, so prefills of the workload's own prompt lengths and about `steps`
/// decode steps run, and every warm-up request finishes (an engine frees whatever it holds for them before the
/// measured run). All but the last arrive at once; the last arrives just after (1 ns, in the warm-up's virtual
/// time), while the others are in their first step, so a scheduler that adds prefills to decode steps runs a mixed
/// step too. Each kind of step the workload will take is then taken once before anything is measured: an engine's
/// first mixed step was seen to stall for milliseconds. `validate` warms each run's engine up with it, `calibrate`
/// each serving burst's.
pub fn warmup_of(workload: &Workload, max_batch_size: u32, steps: u32) -> Workload {
    let n = (max_batch_size as usize).max(1).min(workload.requests.len());
    let requests = workload.requests[..n]
        .iter()
        .enumerate()
        .map(|(i, r)| Request {
            arrival: if i > 0 && i + 1 == n { Nanos(1) } else { Nanos::ZERO },
            output_len: r.output_len.min(steps.max(1)),
            ..*r
        })
        .collect();
    Workload {
        requests,
        closed_loop: None,
    }
}

/// What an engine serving a run is sized for, per policy: the largest step the scheduler can plan and the longest
/// context a sequence reaches.
/// - continuous: the token budget (`max_batch_tokens`, what vLLM sizes activations by); contexts up to the longest
///   prompt + output;
/// - static: a full batch of the longest prompt (a batch's prompts are padded to its longest); a batch decodes until
///   its longest output, finished sequences too, so a context can reach the longest prompt + the longest output;
/// - grouped: a full batch of the longest prompt prefilled together; contexts up to the longest prompt + output.
///
/// At most `max_batch_size` sequences a step.
pub fn engine_sizing(
    policy: PolicyKind,
    max_batch_size: u32,
    max_batch_tokens: u32,
    block_size: u32,
    workload: &Workload,
) -> EngineSizing {
    let requests = &workload.requests;
    let max_prompt = requests.iter().map(|r| u64::from(r.prompt_len)).max().unwrap_or(0);
    let max_output = requests.iter().map(|r| u64::from(r.output_len)).max().unwrap_or(0);
    let max_context = match policy {
        PolicyKind::Static => max_prompt + max_output,
        PolicyKind::Continuous | PolicyKind::Grouped => requests
            .iter()
            .map(|r| u64::from(r.prompt_len) + u64::from(r.output_len))
            .max()
            .unwrap_or(0),
    };
    let max_step_tokens = match policy {
        PolicyKind::Continuous => u64::from(max_batch_tokens),
        PolicyKind::Static | PolicyKind::Grouped => u64::from(max_batch_size) * max_prompt,
    };
    EngineSizing {
        max_step_tokens: max_step_tokens.max(1),
        max_seqs: u64::from(max_batch_size).max(1),
        max_context: max_context.max(1),
        block_size,
        // As `validate` and `calibrate` run the engine.
        decode_graphs: true,
    }
}

/// "run r007 (workload.prompt_len=512, scheduler.policy=static)" — how errors name a run of a sweep.
pub fn describe_run(spec: &RunSpec) -> String {
    if spec.axes.is_empty() {
        return format!("run {}", spec.name);
    }
    let axes: Vec<String> = spec.axes.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("run {} ({})", spec.name, axes.join(", "))
}

pub fn resolve_model(scenario: &Scenario, base_dir: &std::path::Path) -> Result<ModelSpec, String> {
    match (&scenario.model.name, &scenario.model.config) {
        (None, Some(config)) => model::from_hf_config(&base_dir.join(config)).map_err(|e| e.to_string()),
        (Some(name), None) => model::by_name(name).map_err(|e| e.to_string()),
        _ => Err("set exactly one of model.name (a built-in model) or model.config (a config.json)".to_string()),
    }
}

/// The run's cost model, and for a calibrated one what its profile says about the engine's memory.
pub fn build_cost_model(
    s: &Scenario,
    base_dir: &std::path::Path,
    model: &ModelSpec,
    gpu: &GpuSpec,
) -> Result<(Box<dyn CostModel>, Option<ProfileMemory>), String> {
    let c = &s.cost;
    let (cost, memory) = build_unscaled(s, base_dir, model, gpu)?;
    Ok(match c.time_scale {
        Some(factor) if factor != 1.0 => (Box::new(ScaledCost { inner: cost, factor }), memory),
        _ => (cost, memory),
    })
}

/// The scenario's cost model before `cost.time_scale`.
fn build_unscaled(
    s: &Scenario,
    base_dir: &std::path::Path,
    model: &ModelSpec,
    gpu: &GpuSpec,
) -> Result<(Box<dyn CostModel>, Option<ProfileMemory>), String> {
    let c = &s.cost;
    Ok(match c.kind {
        CostKind::Linear => (
            Box::new(LinearCost::from_units(
                c.base_ms.unwrap_or(0.0),
                c.per_token_us.unwrap_or(0.0),
                c.per_seq_ms.unwrap_or(0.0),
                c.per_kv_token_ns.unwrap_or(0.0),
            )),
            None,
        ),
        CostKind::Analytic => (
            Box::new(AnalyticCost::new(
                model,
                gpu,
                c.bandwidth_efficiency.unwrap_or(DEFAULT_BANDWIDTH_EFFICIENCY),
                c.compute_efficiency.unwrap_or(DEFAULT_COMPUTE_EFFICIENCY),
                c.step_overhead_us.unwrap_or(DEFAULT_STEP_OVERHEAD_US),
            )),
            None,
        ),
        CostKind::Calibrated => {
            let rel = profile_relative_path(s, model).ok_or("cost.profile is required for kind = \"calibrated\"")?;
            let path = base_dir.join(&rel);
            let profile = Profile::load(&path).map_err(|e| e.to_string())?;
            // A sweep prepares the same profile for many runs: say what is wrong with it once.
            let first_time = warned_profiles()
                .lock()
                .map(|mut seen| seen.insert(path.clone()))
                .unwrap_or(true);
            for m in profile.mismatches(model).into_iter().filter(|_| first_time) {
                tracing::warn!("profile {} does not match the scenario's model: {m}", path.display());
            }
            if first_time && profile.fingerprint.kernel_source_hash != crate::gpu::kernel_source_hash() {
                tracing::warn!(
                    "profile {} was measured with other kernels than this batchlab's (kernel source hash {}); \
                     calibrate again for predictions of these kernels",
                    path.display(),
                    profile.fingerprint.kernel_source_hash
                );
            }
            (
                Box::new(
                    CalibratedCost::new(&profile, model, &rel.display().to_string())?
                        .with_batch_limit(s.scheduler.max_batch_size),
                ),
                Some(ProfileMemory::of(&profile)),
            )
        }
    })
}

/// Profiles already warned about in this process.
fn warned_profiles() -> &'static std::sync::Mutex<std::collections::HashSet<std::path::PathBuf>> {
    static SEEN: std::sync::OnceLock<std::sync::Mutex<std::collections::HashSet<std::path::PathBuf>>> =
        std::sync::OnceLock::new();
    SEEN.get_or_init(Default::default)
}

/// The calibration profile a calibrated scenario names, relative to its folder; `None` when it names none.
pub fn profile_relative_path(s: &Scenario, model: &ModelSpec) -> Option<std::path::PathBuf> {
    let rel = s.cost.profile.as_ref()?;
    // `{model}` in the path stands for the model's name, so one scenario can sweep models.
    Some(std::path::PathBuf::from(
        rel.to_string_lossy().replace("{model}", &model.name),
    ))
}

/// Resolves and checks a run without serving it.
pub fn prepare(spec: &RunSpec) -> Result<PreparedRun, SimError> {
    let run = describe_run(spec);
    let invalid = |msg: String| SimError::Invalid(format!("{run}: {msg}"));
    let s = &spec.scenario;
    let model = resolve_model(s, &spec.base_dir).map_err(invalid)?;
    let gpu = GpuSpec::resolve(&s.hardware).map_err(|e| invalid(e.to_string()))?;
    let (cost, profile_memory) = build_cost_model(s, &spec.base_dir, &model, &gpu).map_err(invalid)?;
    let workload = workload::generate(s, &spec.base_dir).map_err(|e| invalid(e.to_string()))?;
    if workload.requests.is_empty() {
        return Err(invalid("the workload has no requests".into()));
    }
    let sched = &s.scheduler;
    let sizing = engine_sizing(
        sched.policy,
        sched.max_batch_size,
        sched.max_batch_tokens,
        s.memory.block_size,
        &workload,
    );
    let weight_bytes = model.weight_bytes();
    let workspace = workspace_model(&model, &sizing, profile_memory, s.memory.workspace_mib);
    let workspace_bytes = workspace.bytes();
    let kv_bytes = model.kv_bytes_per_token();
    let block = u64::from(s.memory.block_size);
    let kv_capacity_slots = match s.memory.kv_capacity_tokens {
        Some(tokens) => tokens,
        None => {
            let usable = gpu.memory_gib * GIB * s.memory.gpu_memory_utilization;
            let left = usable - weight_bytes as f64 - workspace_bytes as f64;
            if left < kv_bytes as f64 * block as f64 {
                return Err(invalid(format!(
                    "{}'s weights ({:.2} GiB) and workspace ({:.2} GiB) leave no room for a KV cache in {:.0}% of \
                     {}'s {} GiB",
                    model.name,
                    weight_bytes as f64 / GIB,
                    workspace_bytes as f64 / GIB,
                    s.memory.gpu_memory_utilization * 100.0,
                    gpu.name,
                    gpu.memory_gib
                )));
            }
            (left / kv_bytes as f64) as u64
        }
    };
    // A paged cache holds whole blocks.
    let kv_capacity_slots = match sched.policy {
        PolicyKind::Continuous => kv_capacity_slots / block * block,
        PolicyKind::Static | PolicyKind::Grouped => kv_capacity_slots,
    };
    let limits = SchedulerLimits {
        max_batch_size: sched.max_batch_size,
        max_batch_tokens: sched.max_batch_tokens,
        chunked_prefill: sched.chunked_prefill,
        mix_prefill_decode: sched.mix_prefill_decode,
        preemption: sched.preemption,
        max_wait: Nanos::from_ms(sched.max_wait_ms),
        block_size: s.memory.block_size,
        kv_capacity_slots,
    };
    check_every_request_fits(&workload, &model, &limits, sched.policy).map_err(invalid)?;
    let slo = Slo {
        ttft: s.slo.ttft_ms.map(Nanos::from_ms),
        tpot: s.slo.tpot_ms.map(Nanos::from_ms),
        e2e: s.slo.e2e_ms.map(Nanos::from_ms),
    };
    let memory = MemoryModel {
        weight_bytes,
        workspace_bytes,
        kv_bytes_per_slot: kv_bytes,
        kv_capacity_slots,
    };
    Ok(PreparedRun {
        model,
        gpu,
        cost,
        limits,
        sizing,
        workspace,
        memory,
        workload,
        slo,
        policy: sched.policy,
    })
}

/// A run's workspace: computed for `sizing` on the profile's GPU (or [`DEFAULT_SM_COUNT`] SMs), plus the profile's
/// measured runtime overhead (or [`DEFAULT_RUNTIME_OVERHEAD_BYTES`]), in whole allocator chunks beside the weights;
/// `override_mib` replaces it.
pub fn workspace_model(
    model: &ModelSpec,
    sizing: &EngineSizing,
    profile: Option<ProfileMemory>,
    override_mib: Option<f64>,
) -> WorkspaceModel {
    let sm_count = profile.map_or(DEFAULT_SM_COUNT, |p| p.sm_count);
    let measured = profile.and_then(|p| p.runtime_overhead_bytes);
    WorkspaceModel {
        computed_bytes: model.engine_workspace(sizing, sm_count).bytes(),
        runtime_overhead_bytes: measured.unwrap_or(DEFAULT_RUNTIME_OVERHEAD_BYTES),
        overhead_measured: measured.is_some(),
        weight_bytes: model.weight_bytes(),
        override_bytes: override_mib.map(|mib| (mib * MIB) as u64),
    }
}

/// A request that can never be served is an error before anything runs, not a stall halfway through.
fn check_every_request_fits(
    workload: &Workload,
    model: &ModelSpec,
    limits: &SchedulerLimits,
    policy: PolicyKind,
) -> Result<(), String> {
    let block = u64::from(limits.block_size);
    for r in &workload.requests {
        let total = u64::from(r.prompt_len) + u64::from(r.output_len);
        if total > u64::from(model.max_context) {
            return Err(format!(
                "request {} has prompt {} + output {} = {total} tokens, beyond {}'s context of {} tokens",
                r.id, r.prompt_len, r.output_len, model.name, model.max_context
            ));
        }
        let mut need = final_kv_tokens(r.prompt_len, r.output_len);
        if policy == PolicyKind::Continuous {
            need = need.div_ceil(block) * block;
        }
        if need > limits.kv_capacity_slots {
            return Err(format!(
                "request {} needs {need} KV cache tokens (prompt {} + output {} - 1) but the cache holds {} \
                 tokens; lower the lengths, or raise memory.kv_capacity_tokens / hardware.memory_gib",
                r.id, r.prompt_len, r.output_len, limits.kv_capacity_slots
            ));
        }
        if policy == PolicyKind::Continuous && !limits.chunked_prefill {
            // Recomputing a preempted request prefills its prompt and every token it emitted but the last.
            let prefill = if limits.preemption {
                final_kv_tokens(r.prompt_len, r.output_len)
            } else {
                u64::from(r.prompt_len)
            };
            if prefill > u64::from(limits.max_batch_tokens) {
                return Err(format!(
                    "request {} may need a {prefill}-token prefill but scheduler.max_batch_tokens = {} and \
                     chunked_prefill = false; raise the budget or enable chunked prefill",
                    r.id, limits.max_batch_tokens
                ));
            }
        }
    }
    Ok(())
}

/// The scheduler of a policy.
pub fn new_scheduler(policy: PolicyKind, limits: SchedulerLimits) -> Box<dyn Scheduler + Send> {
    match policy {
        PolicyKind::Static => Box::new(StaticScheduler::new(limits)),
        PolicyKind::Continuous => Box::new(ContinuousScheduler::new(limits)),
        PolicyKind::Grouped => Box::new(GroupedScheduler::new(limits)),
    }
}

/// Serves a prepared run under its policy.
pub fn serve_prepared(p: &PreparedRun, options: RecordOptions) -> Result<crate::metrics::RunMetrics, LoopError> {
    serve_prepared_observed(p, options, &mut ())
}

/// [`serve_prepared`] with an observer of every step (validation records the plans).
pub fn serve_prepared_observed(
    p: &PreparedRun,
    options: RecordOptions,
    observer: &mut dyn StepObserver<dyn Scheduler + Send>,
) -> Result<crate::metrics::RunMetrics, LoopError> {
    serve_prepared_with(p, p.cost.as_ref(), options, observer)
}

/// The factors a run is also simulated with, every step's predicted time scaled by one of them (`validate` always,
/// `simulate --sensitivity`): a percent or two either way, about the median error of a step's prediction. The
/// spread of a metric over them (its band) says how much the schedule amplifies the cost model's own error — near
/// saturation a step that ends a little earlier or later lets an arrival into another batch — and so how closely
/// any model of step times could predict it.
pub const SENSITIVITY_SCALES: [f64; 4] = [0.98, 0.99, 1.01, 1.02];

/// The run's summary simulated with every step's time scaled by each of [`SENSITIVITY_SCALES`], in that order.
pub fn scaled_summaries(p: &PreparedRun, options: RecordOptions) -> Result<Vec<crate::metrics::Summary>, LoopError> {
    let quiet = RecordOptions {
        steps: false,
        ..options
    };
    SENSITIVITY_SCALES
        .iter()
        .map(|&factor| {
            let cost = ScaledCost {
                inner: p.cost.as_ref(),
                factor,
            };
            serve_prepared_with(p, &cost, quiet, &mut ()).map(|m| m.summary)
        })
        .collect()
}

/// [`serve_prepared_observed`] with another cost model than the run's (`validate` simulates each run again with
/// every step a little slower and faster).
pub fn serve_prepared_with(
    p: &PreparedRun,
    cost: &dyn CostModel,
    options: RecordOptions,
    observer: &mut dyn StepObserver<dyn Scheduler + Send>,
) -> Result<crate::metrics::RunMetrics, LoopError> {
    let output_tokens: u64 = p.workload.requests.iter().map(|r| u64::from(r.output_len)).sum();
    let mut recorder = Recorder::new(
        p.workload.requests.len(),
        options.steps,
        output_tokens <= options.token_trace_limit,
    );
    let mut executor = SimExecutor { cost };
    let mut scheduler = new_scheduler(p.policy, p.limits);
    serve(
        scheduler.as_mut(),
        &mut executor,
        &mut VirtualClock::default(),
        &p.workload,
        &mut recorder,
        observer,
    )?;
    Ok(recorder.finish(p.memory, p.slo))
}

/// Simulates one run and labels its results for the output tables.
pub fn simulate(spec: &RunSpec, options: RecordOptions) -> Result<RunReport, SimError> {
    let prepared = prepare(spec)?;
    let metrics = serve_prepared(&prepared, options).map_err(|source| SimError::Loop {
        run: describe_run(spec),
        source,
    })?;
    Ok(RunReport {
        name: spec.name.clone(),
        labels: labels(spec, &prepared),
        metrics,
    })
}

/// The columns that identify a run: seed, each sweep axis, then what it ran.
pub fn labels(spec: &RunSpec, p: &PreparedRun) -> Vec<(String, Cell)> {
    let s = &spec.scenario;
    let mut out = vec![
        ("scenario".to_string(), Cell::Str(s.name.clone())),
        ("seed".to_string(), Cell::Int(s.seed as i64)),
    ];
    for (key, value) in &spec.axes {
        out.push((key.clone(), toml_cell(value)));
    }
    out.extend([
        ("model".to_string(), Cell::Str(p.model.name.clone())),
        ("policy".to_string(), Cell::Str(p.policy.as_str().to_string())),
        (
            "max_batch_size".to_string(),
            Cell::Int(i64::from(p.limits.max_batch_size)),
        ),
        (
            "cost".to_string(),
            Cell::Str(format!("{:?}", s.cost.kind).to_lowercase()),
        ),
        ("gpu".to_string(), Cell::Str(p.gpu.name.to_string())),
    ]);
    out
}

fn toml_cell(v: &toml::Value) -> Cell {
    match v {
        toml::Value::Integer(i) => Cell::Int(*i),
        toml::Value::Float(f) => Cell::Float(*f),
        toml::Value::Boolean(b) => Cell::Bool(*b),
        toml::Value::String(s) => Cell::Str(s.clone()),
        other => Cell::Str(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calib::profile::EngineSteps;
    use crate::sim::calibrated::tests::synthetic_profile;
    use crate::workload::load_runs_str;
    use std::path::Path;

    const SCENARIO: &str = r#"
name = "memory"
[model]
name = "qwen2.5-0.5b"
[hardware]
gpu = "h100-sxm"
[cost]
kind = "analytic"
[scheduler]
policy = "continuous"
max_batch_size = 8
max_batch_tokens = 2048
[workload]
arrival = "burst"
requests = 6
prompt_len = [64, 300, 100]
output_len = [16, 16, 32]
"#;

    fn prepared(text: &str, dir: &Path, sets: &[&str]) -> PreparedRun {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        let specs = load_runs_str(text, &dir.join("s.toml"), &sets, None).unwrap();
        prepare(&specs[0]).unwrap()
    }

    #[test]
    fn the_engine_is_sized_for_the_largest_step_each_policy_plans() {
        let dir = Path::new(".");
        // Continuous: the token budget. Static: a full batch padded to the longest prompt. Grouped: a full batch of
        // the longest prompt. Contexts up to the longest prompt + output (300 + 16), or for static, whose batches
        // decode until their longest output, the longest prompt + the longest output (300 + 32).
        let cases = [
            ("continuous", 2048, 316),
            ("static", 8 * 300, 332),
            ("grouped", 8 * 300, 316),
        ];
        for (policy, tokens, context) in cases {
            let p = prepared(SCENARIO, dir, &[&format!("scheduler.policy={policy}")]);
            let want = EngineSizing {
                max_step_tokens: tokens,
                max_seqs: 8,
                max_context: context,
                block_size: 16,
                decode_graphs: true,
            };
            assert_eq!(p.sizing, want, "{policy}");
        }
    }

    #[test]
    fn without_a_profile_the_workspace_is_computed_plus_the_default_overhead() {
        let p = prepared(SCENARIO, Path::new("."), &[]);
        let computed = p.model.engine_workspace(&p.sizing, DEFAULT_SM_COUNT).bytes();
        let weights = p.model.weight_bytes();
        assert_eq!(
            p.workspace,
            WorkspaceModel {
                computed_bytes: computed,
                runtime_overhead_bytes: DEFAULT_RUNTIME_OVERHEAD_BYTES,
                overhead_measured: false,
                weight_bytes: weights,
                override_bytes: None,
            }
        );
        // In whole allocator chunks beside the weights.
        let workspace = p.memory.workspace_bytes;
        assert_eq!(
            workspace,
            model::mapped_workspace(weights, computed + DEFAULT_RUNTIME_OVERHEAD_BYTES)
        );
        assert_eq!((weights + workspace) % model::ALLOCATION_GRANULE_BYTES, 0);
        assert!(workspace >= computed + DEFAULT_RUNTIME_OVERHEAD_BYTES);
        assert!(workspace < computed + DEFAULT_RUNTIME_OVERHEAD_BYTES + model::ALLOCATION_GRANULE_BYTES);
        // `memory.workspace_mib` replaces the prediction.
        let p = prepared(SCENARIO, Path::new("."), &["memory.workspace_mib=512"]);
        assert_eq!(p.memory.workspace_bytes, 512 << 20);
    }

    #[test]
    fn a_profile_gives_its_sm_count_and_its_measured_overhead() {
        let model = model::by_name("qwen2.5-0.5b").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let calibrated = format!(
            "{}\n",
            SCENARIO.replace("kind = \"analytic\"", "kind = \"calibrated\"\nprofile = \"p.json\"")
        );
        // A profile from before the overhead was measured: the default, with the profile's SMs (few, so that decode
        // attention's partitioning of a 3000-token context differs from the default's).
        let mut profile = synthetic_profile(&model);
        profile.fingerprint.sm_count = 16;
        std::fs::write(dir.path().join("p.json"), profile.to_json()).unwrap();
        let long = ["workload.prompt_len=[64, 3000, 100]"];
        let old = prepared(&calibrated, dir.path(), &long);
        assert_eq!(
            old.workspace.computed_bytes,
            model.engine_workspace(&old.sizing, 16).bytes()
        );
        assert_ne!(
            old.workspace.computed_bytes,
            model.engine_workspace(&old.sizing, DEFAULT_SM_COUNT).bytes()
        );
        assert_eq!(
            (old.workspace.runtime_overhead_bytes, old.workspace.overhead_measured),
            (DEFAULT_RUNTIME_OVERHEAD_BYTES, false)
        );

        // With the overhead measured, the simulator adds it instead, and the run's summary says so.
        profile.engine = Some(EngineSteps {
            kinds: Vec::new(),
            samples: Vec::new(),
            graph_buckets: Vec::new(),
            runtime_overhead_bytes: Some(40 << 20),
            memory_samples: Vec::new(),
        });
        std::fs::write(dir.path().join("p.json"), profile.to_json()).unwrap();
        let new = prepared(&calibrated, dir.path(), &long);
        assert_eq!(new.workspace.computed_bytes, old.workspace.computed_bytes);
        assert_eq!(
            (new.workspace.runtime_overhead_bytes, new.workspace.overhead_measured),
            (40 << 20, true)
        );
        assert_eq!(
            new.memory.workspace_bytes,
            model::mapped_workspace(model.weight_bytes(), new.workspace.computed_bytes + (40 << 20))
        );
        let metrics = serve_prepared(&new, RecordOptions::SUMMARY_ONLY).unwrap();
        assert_eq!(metrics.summary.workspace_mib, new.memory.workspace_bytes as f64 / MIB);
    }
}
