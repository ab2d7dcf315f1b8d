//! One run of a scenario, end to end: resolve the model, the GPU and the cost model, size the KV cache, draw the
//! workload, check that every request can ever be served, then serve it under the policy and collect metrics.

use super::analytic::{
    AnalyticCost, DEFAULT_BANDWIDTH_EFFICIENCY, DEFAULT_COMPUTE_EFFICIENCY, DEFAULT_STEP_OVERHEAD_US,
};
use super::calibrated::CalibratedCost;
use super::hardware::GpuSpec;
use super::serving::{LoopError, StepObserver, serve};
use super::{CostModel, LinearCost, SimExecutor, VirtualClock};
use crate::calib::Profile;
use crate::metrics::{Cell, MemoryModel, Recorder, RunReport, Slo};
use crate::model::{self, ModelSpec};
use crate::sched::{
    ContinuousScheduler, GroupedScheduler, Scheduler, SchedulerLimits, StaticScheduler, final_kv_tokens,
};
use crate::units::{GIB, MIB, Nanos};
use crate::workload::{self, CostKind, PolicyKind, RunSpec, Scenario, Workload};

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
    pub memory: MemoryModel,
    pub workload: Workload,
    pub slo: Slo,
    pub policy: PolicyKind,
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

pub fn build_cost_model(
    s: &Scenario,
    base_dir: &std::path::Path,
    model: &ModelSpec,
    gpu: &GpuSpec,
) -> Result<Box<dyn CostModel>, String> {
    let c = &s.cost;
    Ok(match c.kind {
        CostKind::Linear => Box::new(LinearCost::from_units(
            c.base_ms.unwrap_or(0.0),
            c.per_token_us.unwrap_or(0.0),
            c.per_seq_ms.unwrap_or(0.0),
            c.per_kv_token_ns.unwrap_or(0.0),
        )),
        CostKind::Analytic => Box::new(AnalyticCost::new(
            model,
            gpu,
            c.bandwidth_efficiency.unwrap_or(DEFAULT_BANDWIDTH_EFFICIENCY),
            c.compute_efficiency.unwrap_or(DEFAULT_COMPUTE_EFFICIENCY),
            c.step_overhead_us.unwrap_or(DEFAULT_STEP_OVERHEAD_US),
        )),
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
            Box::new(
                CalibratedCost::new(&profile, model, &rel.display().to_string())?
                    .with_batch_limit(s.scheduler.max_batch_size),
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
    let cost = build_cost_model(s, &spec.base_dir, &model, &gpu).map_err(invalid)?;
    let workload = workload::generate(s, &spec.base_dir).map_err(|e| invalid(e.to_string()))?;
    if workload.requests.is_empty() {
        return Err(invalid("the workload has no requests".into()));
    }
    let sched = &s.scheduler;
    let max_prompt = workload.requests.iter().map(|r| r.prompt_len).max().unwrap_or(0);
    // The largest step an engine must hold activations for: a padded prefill of a full batch, or the token budget.
    let max_step_tokens = match sched.policy {
        PolicyKind::Continuous => u64::from(sched.max_batch_tokens),
        PolicyKind::Static | PolicyKind::Grouped => u64::from(sched.max_batch_size) * u64::from(max_prompt),
    };
    let weight_bytes = model.weight_bytes();
    let workspace_bytes = match s.memory.workspace_mib {
        Some(mib) => (mib * MIB) as u64,
        None => model.workspace_bytes(max_step_tokens, u64::from(sched.max_batch_size)),
    };
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
        memory,
        workload,
        slo,
        policy: sched.policy,
    })
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
    let output_tokens: u64 = p.workload.requests.iter().map(|r| u64::from(r.output_len)).sum();
    let mut recorder = Recorder::new(
        p.workload.requests.len(),
        options.steps,
        output_tokens <= options.token_trace_limit,
    );
    let mut executor = SimExecutor { cost: p.cost.as_ref() };
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
