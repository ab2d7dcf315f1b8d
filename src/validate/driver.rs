//! The validation driver: for each run, warm the backend up, execute the run through the serving loop with the
//! backend's executor and clock, simulate the same run, and compare.
//!
//! Both executions build their scheduler the same way (`new_scheduler` with the prepared run's policy and limits)
//! and serve the same workload through the same `serve()`; only the executor and the clock differ.

use super::compare::{self, MetricComparison, PlanAgreement, StepComparison, ValidationSummary};
use crate::metrics::{Cell, Recorder, RunMetrics, RunReport};
use crate::sched::{Scheduler, StepPlan};
use crate::sim::CostModel;
use crate::sim::run::{
    PreparedRun, RecordOptions, describe_run, labels, new_scheduler, scaled_summaries, serve_prepared_observed,
    warmup_of,
};
use crate::sim::serving::{Clock, Executor, LoopError, StepObserver, VirtualClock, serve};
use crate::units::{MIB, Nanos};
use crate::workload::{RunSpec, Workload};

/// What executes runs for real: the GPU engine, or a stand-in in tests.
pub trait Backend {
    /// Sets up the real execution of one run: an engine sized for `run` (its model, KV capacity and limits). The
    /// returned execution is warmed up, then serves the run, then is dropped before the next run starts.
    fn start<'a>(&'a mut self, spec: &'a RunSpec, run: &'a PreparedRun) -> Result<Box<dyn MeasuredRun + 'a>, String>;
}

/// One run's real execution: an executor whose step times are measured, with its clock and memory readings.
pub trait MeasuredRun: Executor {
    /// The clock of the measured run. Called once, after the warm-up: a wall clock should start at zero then, so
    /// the workload's arrivals happen in real time from the start of the measured run.
    fn clock(&mut self) -> Box<dyn Clock>;

    /// Where each measured step's time went, in step order, for the steps since [`MeasuredRun::clock`] was
    /// called; empty when the backend does not time them.
    fn step_parts(&mut self) -> Vec<MeasuredParts> {
        Vec::new()
    }

    /// Which engine of the process the execution runs on, counting from 1 the engines the backend built before it
    /// (priming ones too); `None` where the backend builds none. On H100s the third engine a process built ran its
    /// steps fastest (`reports/poisson-h100-sweep/`), so the report shows it beside each run's pace.
    fn engine_ordinal(&self) -> Option<u32> {
        None
    }

    /// Ends the execution (its engine is released) and returns the memory the run used, measured; `None` when the
    /// backend cannot measure it, in which case the measured summary keeps the simulator's memory model and the
    /// report says so.
    fn finish(self: Box<Self>) -> Option<MeasuredMemory>;
}

/// Where a measured step's time went, as the backend timed it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MeasuredParts {
    /// The host's time to prepare and issue the step.
    pub issue: Nanos,
    /// The GPU's time from the step's first input copy to its last kernel, when the backend times it.
    pub gpu: Option<Nanos>,
    /// The GPU's SM clock (MHz) while the step ran, where the backend could read it.
    pub sm_mhz: Option<u32>,
    /// Whether power or thermal management was holding that clock down.
    pub slowed: Option<bool>,
}

/// Memory an execution measured. Peak memory = weights + KV at its peak + workspace, as DESIGN.md defines it.
/// The engine measures its workspace against the memory in use once it is gone (`engine::WorkspaceMeasurement`),
/// as `calibrate` measures the runtime overhead the simulator adds to the workspace it computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MeasuredMemory {
    pub weight_bytes: u64,
    /// The KV cache memory in use at its peak.
    pub kv_bytes: u64,
    /// Activations, scratch, library workspaces: what the engine holds besides weights and KV at its peak.
    pub workspace_bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ValidateError {
    #[error("{run}: the backend could not start it: {message}")]
    Backend { run: String, message: String },
    #[error("{run}: warm-up failed: {source}")]
    Warmup { run: String, source: LoopError },
    #[error("{run}: measured execution failed: {source}")]
    Measured { run: String, source: LoopError },
    #[error("{run}: simulation failed: {source}")]
    Simulated { run: String, source: LoopError },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ValidateOptions {
    /// Steps (about) of the discarded warm-up workload before each measured run; 0 for none.
    pub warmup_steps: u32,
    /// What to keep of each run (steps are always kept: the comparison needs them).
    pub record: RecordOptions,
    /// Times each run is measured (each on a fresh execution, after its own warm-up); the measurement whose steps
    /// ran at the median pace against their predicted times is the one compared ([`median_measurement`]). At least 1.
    pub repeats: u32,
}

/// Records the plan of every step.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PlanLog {
    pub plans: Vec<StepPlan>,
}

impl<S: ?Sized> StepObserver<S> for PlanLog {
    fn after_plan(&mut self, _scheduler: &S, plan: &StepPlan) {
        self.plans.push(plan.clone());
    }
}

/// One run, measured and simulated, compared.
#[derive(Clone, Debug)]
pub struct RunValidation {
    pub name: String,
    /// The run's labels, as `simulate` writes them.
    pub labels: Vec<(String, Cell)>,
    pub measured: RunReport,
    pub simulated: RunReport,
    pub metrics: Vec<MetricComparison>,
    pub steps: Vec<StepComparison>,
    pub plans: PlanAgreement,
    pub memory_measured: bool,
    /// With `--repeats N` (N > 1): the output throughput of each measurement, in the order taken.
    pub repeat_throughputs: Vec<f64>,
    /// With `--repeats N` (N > 1): each measurement's pace, in the order taken (the compared one is the median).
    pub repeat_paces: Vec<f64>,
    /// Which engine of the process ran the compared measurement ([`MeasuredRun::engine_ordinal`]).
    pub engine: Option<u32>,
    /// With `--repeats N` (N > 1): which engine of the process ran each measurement, in the order taken (empty
    /// where the backend builds none).
    pub repeat_engines: Vec<u32>,
}

impl RunValidation {
    pub fn policy(&self) -> Option<String> {
        self.labels
            .iter()
            .find(|(name, _)| name == "policy")
            .and_then(|(_, v)| match v {
                Cell::Str(s) => Some(s.clone()),
                _ => None,
            })
    }
}

/// Every run, and the aggregate over them.
#[derive(Clone, Debug)]
pub struct Validation {
    pub runs: Vec<RunValidation>,
    pub summary: ValidationSummary,
}

/// The warm-up workload of a run: see [`crate::sim::run::warmup_of`].
pub fn warmup_workload(run: &PreparedRun, steps: u32) -> Workload {
    warmup_of(&run.workload, run.limits.max_batch_size, steps)
}

/// Records a run with steps kept, as both executions must.
fn recorder(run: &PreparedRun, options: RecordOptions) -> Recorder {
    let output_tokens: u64 = run.workload.requests.iter().map(|r| u64::from(r.output_len)).sum();
    Recorder::new(
        run.workload.requests.len(),
        true,
        output_tokens <= options.token_trace_limit,
    )
}

/// The measured summary's memory columns from what the backend measured.
fn apply_measured_memory(metrics: &mut RunMetrics, m: MeasuredMemory) {
    let s = &mut metrics.summary;
    s.weights_mib = m.weight_bytes as f64 / MIB;
    s.peak_kv_mib = m.kv_bytes as f64 / MIB;
    s.workspace_mib = m.workspace_bytes as f64 / MIB;
    s.peak_memory_mib = s.weights_mib + s.peak_kv_mib + s.workspace_mib;
}

/// One measured execution of a run.
struct Measurement {
    metrics: RunMetrics,
    plans: PlanLog,
    parts: Vec<MeasuredParts>,
    memory_measured: bool,
    /// [`MeasuredRun::engine_ordinal`].
    engine: Option<u32>,
}

/// Starts an execution of the run, warms it up, serves the run on its clock and finishes it.
fn measure(
    spec: &RunSpec,
    prepared: &PreparedRun,
    backend: &mut dyn Backend,
    options: &ValidateOptions,
    run: &str,
) -> Result<Measurement, ValidateError> {
    let mut execution = backend
        .start(spec, prepared)
        .map_err(|message| ValidateError::Backend {
            run: run.to_owned(),
            message,
        })?;

    if options.warmup_steps > 0 {
        let warmup = warmup_workload(prepared, options.warmup_steps);
        let mut scheduler = new_scheduler(prepared.policy, prepared.limits);
        let mut discarded = Recorder::new(warmup.requests.len(), false, false);
        serve(
            scheduler.as_mut(),
            execution.as_mut(),
            &mut VirtualClock::default(),
            &warmup,
            &mut discarded,
            &mut (),
        )
        .map_err(|source| ValidateError::Warmup {
            run: run.to_owned(),
            source,
        })?;
    }

    let mut scheduler = new_scheduler(prepared.policy, prepared.limits);
    let mut recorder = recorder(prepared, options.record);
    let mut plans = PlanLog::default();
    // Last: the requests arrive from the clock's start, so nothing set up before serving (a continuous scheduler
    // lists every KV block of the engine's cache as free: hundreds of thousands on an 80 GB card) delays them.
    let mut clock = execution.clock();
    serve(
        scheduler.as_mut(),
        execution.as_mut(),
        clock.as_mut(),
        &prepared.workload,
        &mut recorder,
        &mut plans as &mut dyn StepObserver<dyn Scheduler + Send>,
    )
    .map_err(|source| ValidateError::Measured {
        run: run.to_owned(),
        source,
    })?;
    let parts = execution.step_parts();
    let engine = execution.engine_ordinal();
    let memory = execution.finish();
    let mut metrics = recorder.finish(prepared.memory, prepared.slo);
    if let Some(m) = memory {
        apply_measured_memory(&mut metrics, m);
    }
    Ok(Measurement {
        metrics,
        plans,
        parts,
        memory_measured: memory.is_some(),
        engine,
    })
}

/// A measurement's pace from its steps compared with their predictions: their measured time in all over their
/// predicted time in all; above 1, its engine ran slower than predicted. A stalled step counts against the
/// measurement it fell on: with the median over the steps of measured / predicted instead, which one stall does not
/// move, the stalled one of three measurements at paces within a fraction of a percent was twice the one compared
/// (a burst of four requests on an H100, its throughput 6–10% below the other two; `reports/graph-ours-h100/`).
/// NaN without steps.
fn pace(steps: &[StepComparison]) -> f64 {
    let (measured, predicted) = (steps.iter()).fold((0u128, 0u128), |(m, p), s| {
        (m + u128::from(s.measured.0), p + u128::from(s.predicted.0))
    });
    if predicted == 0 {
        f64::NAN
    } else {
        measured as f64 / predicted as f64
    }
}

/// The measurement a run is compared with, its steps against the cost model's prediction for the plan each ran,
/// and every measurement's output throughput and pace in the order taken.
struct Chosen {
    measurement: Measurement,
    steps: Vec<StepComparison>,
    throughputs: Vec<f64>,
    paces: Vec<f64>,
    engines: Vec<u32>,
}

/// Of several measurements of one run, the one whose engine ran at the median pace ([`pace`]; of an even count the
/// slower middle one). Under bursts the plans are the same from one measurement to the next and this is the one of
/// median throughput but where the host's work between steps moved it; under open-loop arrivals throughput
/// follows the arrival rate and moves with the engine's speed only through the last steps (a few milliseconds of
/// host jitter there reorder it), while the pace weighs every step. Each measurement's steps are compared with
/// their predictions once, here.
fn median_measurement(mut all: Vec<Measurement>, cost: &dyn CostModel) -> Chosen {
    let throughputs: Vec<f64> = all.iter().map(|m| m.metrics.summary.output_tok_per_s).collect();
    let mut steps: Vec<Vec<StepComparison>> = (all.iter())
        .map(|m| compare::compare_steps(&m.metrics.steps, &m.plans.plans, &m.parts, cost))
        .collect();
    let paces: Vec<f64> = steps.iter().map(|s| pace(s)).collect();
    let engines = all.iter().filter_map(|m| m.engine).collect();
    let chosen = median_pace(&paces);
    Chosen {
        measurement: all.swap_remove(chosen),
        steps: steps.swap_remove(chosen),
        throughputs,
        paces,
        engines,
    }
}

/// Which of measurements that ran at `paces` (in the order taken; not empty) is the one compared: the median one,
/// of an even count the slower middle one (as the lower middle throughput was).
pub fn median_pace(paces: &[f64]) -> usize {
    let mut order: Vec<usize> = (0..paces.len()).collect();
    order.sort_by(|&a, &b| paces[b].total_cmp(&paces[a]));
    order[(paces.len() - 1) / 2]
}

/// Simulates a run (described as `run` in errors) and compares it with the median-pace one of its measurements
/// (`all`, in the order taken).
fn compare_run(
    spec: &RunSpec,
    prepared: &PreparedRun,
    run: &str,
    all: Vec<Measurement>,
    options: &ValidateOptions,
) -> Result<RunValidation, ValidateError> {
    let Chosen {
        measurement:
            Measurement {
                metrics: measured,
                plans: measured_plans,
                parts: _,
                memory_measured,
                engine,
            },
        steps,
        throughputs,
        paces,
        engines,
    } = median_measurement(all, prepared.cost.as_ref());
    // Kept for --repeats only.
    let (repeat_throughputs, repeat_paces, repeat_engines) = if options.repeats > 1 {
        (throughputs, paces, engines)
    } else {
        Default::default()
    };

    let mut simulated_plans = PlanLog::default();
    let record = RecordOptions {
        steps: true,
        ..options.record
    };
    let simulated =
        serve_prepared_observed(prepared, record, &mut simulated_plans).map_err(|source| ValidateError::Simulated {
            run: run.to_owned(),
            source,
        })?;

    // The same run with every step a little slower and faster (`SENSITIVITY_SCALES`).
    let scaled = scaled_summaries(prepared, options.record).map_err(|source| ValidateError::Simulated {
        run: run.to_owned(),
        source,
    })?;

    let plans = compare::compare_plans(&measured_plans.plans, &simulated_plans.plans, &measured, &simulated);
    let mut metrics = compare::compare_metrics(&measured.summary, &simulated.summary);
    compare::set_bands(&mut metrics, &simulated.summary, &scaled);
    let labels = labels(spec, prepared);
    let report = |metrics: RunMetrics| RunReport {
        name: spec.name.clone(),
        labels: labels.clone(),
        metrics,
    };
    Ok(RunValidation {
        name: spec.name.clone(),
        labels: labels.clone(),
        measured: report(measured),
        simulated: report(simulated),
        metrics,
        steps,
        plans,
        memory_measured,
        repeat_throughputs,
        repeat_paces,
        engine,
        repeat_engines,
    })
}

/// Validates every run in order (one at a time: they share the GPU) and aggregates. With `options.repeats` N > 1
/// the runs are measured in N passes over all of them, not N times in a row each: the host slows down for stretches
/// of seconds (an H100's host issued every step about 5% slower through two consecutive measurements of one run
/// and none of the next run's), and passes spread one run's measurements over the whole validation so that one such
/// stretch falls on one of them, which the median then sets aside. Each run is simulated and compared once its last
/// measurement is taken. `progress` sees the run's description after each measurement (runs × repeats calls).
pub fn validate_runs(
    specs: &[RunSpec],
    prepared: &[PreparedRun],
    backend: &mut dyn Backend,
    options: &ValidateOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<Validation, ValidateError> {
    assert_eq!(specs.len(), prepared.len(), "one prepared run per spec");
    let passes = options.repeats.max(1);
    let names: Vec<String> = specs.iter().map(describe_run).collect();
    let mut taken: Vec<Vec<Measurement>> = specs.iter().map(|_| Vec::new()).collect();
    for _ in 1..passes {
        for (((spec, p), run), measurements) in specs.iter().zip(prepared).zip(&names).zip(&mut taken) {
            measurements.push(measure(spec, p, backend, options, run)?);
            progress(run);
        }
    }
    let mut runs = Vec::with_capacity(specs.len());
    for (((spec, p), run), mut measurements) in specs.iter().zip(prepared).zip(&names).zip(taken) {
        measurements.push(measure(spec, p, backend, options, run)?);
        runs.push(compare_run(spec, p, run, measurements, options)?);
        progress(run);
    }
    let summary = compare::aggregate(&runs);
    Ok(Validation { runs, summary })
}
