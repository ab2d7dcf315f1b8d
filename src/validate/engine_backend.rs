//! The GPU engine as a validation [`Backend`]: for each run, an [`Engine`] with seeded random weights sized as the
//! simulator sizes the run (its [`crate::model::EngineSizing`]: the largest step per policy, sequences, longest
//! context, block size; KV capacity in slots), driven by a [`GpuExecutor`] on a [`WallClock`]. Its workspace is then
//! what the simulator computed for the run, and what it measures is the same quantity `calibrate` measures for the
//! profile's runtime overhead ([`Engine::close`]).

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::calib::Profile;
use crate::calib::engine_steps::gemm_policy;
use crate::engine::{Engine, EngineConfig, GemmPolicy, GpuExecutor, WallClock};
use crate::gpu::Gpu;
use crate::gpu::clocks::ClockSampler;
use crate::metrics::Recorder;
use crate::model::StepShape;
use crate::sched::{StepOutcome, StepPlan, final_kv_tokens};
use crate::sim::run::{PreparedRun, new_scheduler, profile_relative_path};
use crate::sim::serving::{Clock, ExecError, Executor, VirtualClock, serve};
use crate::units::Nanos;
use crate::workload::{RunSpec, Workload};

use super::driver::{Backend, MeasuredMemory, MeasuredParts, MeasuredRun, warmup_workload};

/// Seed of the engine's random weights (their values do not change its speed).
const WEIGHT_SEED: u64 = 0x5eed;

/// Runs each validated run on one GPU, an engine at a time.
pub struct EngineBackend {
    /// The device, between runs (an engine owns it while its run lasts).
    gpu: Option<Gpu>,
    /// GEMM policies by profile path: the engine runs the GEMM its profile (so the cost model) finds faster.
    policies: HashMap<PathBuf, GemmPolicy>,
    /// Engines [`EngineBackend::prime`] builds and closes before the first run's.
    prime_engines: u32,
    /// Whether they were.
    primed: bool,
    /// Engines built so far, priming ones included.
    built: u32,
    /// Whether engines' memory is measured (not where the pool keeps what engines free: `without_memory`).
    measure_memory: bool,
    /// Reads the SM clock from before the first engine on (started once: its start-up would otherwise land in a
    /// measured run's first steps); `None` where NVML is not available.
    clocks: Option<ClockSampler>,
}

/// How often the SM clock is read during a measured run, and how far from a step's middle a reading may be to
/// count as the step's clock (the clock changes over tens of milliseconds).
const CLOCK_EVERY: Duration = Duration::from_millis(10);
const CLOCK_TOLERANCE: Duration = Duration::from_millis(25);

/// Decode steps the priming engine runs.
const PRIMING_STEPS: u32 = 4;

impl EngineBackend {
    pub fn new(gpu: Gpu, prime_engines: u32) -> Self {
        Self {
            gpu: Some(gpu),
            policies: HashMap::new(),
            prime_engines,
            primed: false,
            built: 0,
            measure_memory: true,
            clocks: None,
        }
    }

    /// The same backend, its runs' memory not measured: where the allocator's pool keeps what engines free
    /// (`validate --keep-freed-memory`), an engine's use does not show in the driver's free memory.
    pub fn without_memory(self) -> Self {
        Self {
            measure_memory: false,
            ..self
        }
    }

    /// Before the first run, once for each of `prime_engines`: the first run's engine, built, warmed up on its own
    /// first requests and closed, so that what a process pays once — the allocator's first chunks, cuBLAS's handle
    /// and workspace, kernel code loaded at its first launch, the split-K scratch — is paid before any measured
    /// engine, which then meets the GPU as every later run's engine does (and as `calibrate`'s engines do, after the
    /// kernel timings). Without it the first run measures some of those costs as its own workspace, or, where they
    /// fall into its KV cache's allocation, not even that.
    fn prime(&mut self, gpu: Gpu, run: &PreparedRun, gemm: GemmPolicy, seed: u64) -> Result<Gpu, String> {
        let config = engine_config(run, gemm, seed);
        let engine = Engine::random(gpu, run.model.clone(), WEIGHT_SEED, config).map_err(|e| e.to_string())?;
        self.built += 1;
        let warmup = warmup_workload(run, PRIMING_STEPS);
        let mut executor = GpuExecutor::new(engine, &warmup);
        let mut scheduler = new_scheduler(run.policy, run.limits);
        let mut recorder = Recorder::new(warmup.requests.len(), false, false);
        let served = serve(
            scheduler.as_mut(),
            &mut executor,
            &mut VirtualClock::default(),
            &warmup,
            &mut recorder,
            &mut (),
        );
        let (gpu, closed) = executor.into_engine().close();
        served.map_err(|e| format!("priming the GPU: {e}"))?;
        let m = closed.map_err(|e| e.to_string())?;
        tracing::info!(
            kept_by_process_mib = m.kept_by_process() as f64 / f64::from(1 << 20),
            "GPU primed: what the process keeps across engines is paid"
        );
        Ok(gpu)
    }

    fn policy(&mut self, spec: &RunSpec, run: &PreparedRun) -> Result<GemmPolicy, String> {
        let Some(rel) = profile_relative_path(&spec.scenario, &run.model) else {
            return Ok(GemmPolicy::default());
        };
        let path = spec.base_dir.join(rel);
        if let Some(p) = self.policies.get(&path) {
            return Ok(p.clone());
        }
        let profile = Profile::load(&path).map_err(|e| e.to_string())?;
        let policy = gemm_policy(&profile)?;
        self.policies.insert(path, policy.clone());
        Ok(policy)
    }
}

impl Backend for EngineBackend {
    fn start<'a>(&'a mut self, spec: &'a RunSpec, run: &'a PreparedRun) -> Result<Box<dyn MeasuredRun + 'a>, String> {
        let gemm = self.policy(spec, run)?;
        let mut gpu = self
            .gpu
            .take()
            .ok_or("the GPU was lost by an earlier run that failed")?;
        if !self.primed {
            self.clocks = gpu.sample_clock(CLOCK_EVERY);
            for _ in 0..self.prime_engines {
                gpu = self.prime(gpu, run, gemm.clone(), spec.scenario.seed)?;
            }
            self.primed = true;
        }
        let limits = &run.limits;
        let config = engine_config(run, gemm, spec.scenario.seed);
        let engine = Engine::random(gpu, run.model.clone(), WEIGHT_SEED, config).map_err(|e| e.to_string())?;
        self.built += 1;
        tracing::info!(
            engine = self.built,
            run = %spec.name,
            "engine built for a measured run (counting the process's engines from 1)"
        );
        if engine.memory().workspace() != run.workspace.computed_bytes {
            tracing::warn!(
                engine = engine.memory().workspace(),
                simulator = run.workspace.computed_bytes,
                "the engine computed another workspace than the simulator for the same sizing (another SM count?)"
            );
        }
        let held = engine.kv_capacity_slots();
        if held < limits.kv_capacity_slots {
            // Fewer slots than the simulator's scheduler may use: fine as long as the run can never need them all
            // (every request's whole KV at once, in blocks); otherwise refuse before anything runs.
            let demand = kv_demand_bound(&run.workload, limits.block_size);
            if demand > held {
                let gpu = engine.into_gpu();
                let _ = gpu.synchronize();
                self.gpu = Some(gpu);
                return Err(format!(
                    "the GPU holds {held} KV slots, fewer than the {} the simulator assumes, and this run may need \
                     up to {demand}: set memory.kv_capacity_tokens to at most {held}",
                    limits.kv_capacity_slots
                ));
            }
        }
        Ok(Box::new(EngineRun {
            executor: Some(GpuExecutor::new(engine, &run.workload)),
            home: &mut self.gpu,
            peak_blocks: 0,
            parts: Vec::new(),
            windows: Vec::new(),
            clocks: self.clocks.as_ref(),
            ordinal: self.built,
            measure_memory: self.measure_memory,
        }))
    }
}

/// The engine of a validated run: sized exactly as the simulator sized the run's workspace ([`PreparedRun::sizing`]),
/// its KV cache holding the simulator's capacity (or what 95% of the free memory holds, if less).
pub fn engine_config(run: &PreparedRun, gemm: GemmPolicy, prompt_seed: u64) -> EngineConfig {
    EngineConfig::serving(&run.sizing, run.limits.kv_capacity_slots, gemm, prompt_seed)
}

/// KV slots a run can never exceed: every request's whole cache at once, in whole blocks.
pub fn kv_demand_bound(workload: &Workload, block_size: u32) -> u64 {
    let block = u64::from(block_size);
    workload
        .requests
        .iter()
        .map(|r| final_kv_tokens(r.prompt_len, r.output_len).div_ceil(block) * block)
        .sum()
}

/// One run on the engine. Dropping it hands the GPU back to the backend.
struct EngineRun<'a> {
    executor: Option<GpuExecutor>,
    home: &'a mut Option<Gpu>,
    /// The most KV blocks the engine's own allocator had handed out at the end of a step (since the clock started).
    peak_blocks: u32,
    /// Each step's issue and GPU time as the engine timed them (since the clock started).
    parts: Vec<MeasuredParts>,
    /// When each of those steps began and ended.
    windows: Vec<(Instant, Instant)>,
    /// The backend's clock sampler, reading the SM clock throughout.
    clocks: Option<&'a ClockSampler>,
    /// Which engine of the process this run's is, from 1.
    ordinal: u32,
    /// Whether [`MeasuredRun::finish`] gives the memory the engine measured.
    measure_memory: bool,
}

impl EngineRun<'_> {
    fn executor(&mut self) -> &mut GpuExecutor {
        self.executor.as_mut().expect("present until dropped")
    }
}

impl Executor for EngineRun<'_> {
    fn execute(&mut self, plan: &StepPlan, shape: &StepShape) -> Result<Nanos, ExecError> {
        let started = Instant::now();
        let ex = self.executor();
        let took = ex.execute(plan, shape)?;
        let timing = ex.engine().last_timing();
        let seqs = ex.engine().sequences();
        let in_use = seqs.total_blocks() - seqs.free_blocks();
        self.peak_blocks = self.peak_blocks.max(in_use);
        self.parts.push(MeasuredParts {
            issue: Nanos(timing.issue_ns),
            gpu: timing.gpu_ns.map(Nanos),
            sm_mhz: None,
            slowed: None,
        });
        self.windows.push((started, Instant::now()));
        Ok(took)
    }

    fn after_step(&mut self, outcome: &StepOutcome) {
        self.executor().after_step(outcome);
    }
}

impl MeasuredRun for EngineRun<'_> {
    fn clock(&mut self) -> Box<dyn Clock> {
        // What the warm-up used and how its steps went are not the measured run's.
        self.peak_blocks = 0;
        self.parts.clear();
        self.windows.clear();
        Box::new(WallClock::new())
    }

    fn engine_ordinal(&self) -> Option<u32> {
        Some(self.ordinal)
    }

    fn step_parts(&mut self) -> Vec<MeasuredParts> {
        let mut parts = std::mem::take(&mut self.parts);
        if let Some(trace) = self.clocks.map(ClockSampler::trace) {
            for (p, &(from, to)) in parts.iter_mut().zip(&self.windows) {
                if let Some(s) = trace.at(from, to, CLOCK_TOLERANCE) {
                    p.sm_mhz = Some(s.sm_mhz);
                    p.slowed = Some(s.slowed());
                }
            }
        }
        parts
    }

    fn finish(mut self: Box<Self>) -> Option<MeasuredMemory> {
        let engine = self.executor.take()?.into_engine();
        let spec = engine.spec().clone();
        let layout = engine.kv_layout();
        // K and V, fp16, every layer.
        let block_bytes =
            2 * 2 * u64::from(spec.layers) * (layout.block_size * layout.kv_heads * layout.head_dim) as u64;
        let (gpu, measured) = engine.close();
        *self.home = Some(gpu);
        if !self.measure_memory {
            return None;
        }
        let m = match measured {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!("the engine's memory could not be measured: {e}");
                return None;
            }
        };
        m.log();
        Some(MeasuredMemory {
            weight_bytes: m.memory.weights,
            kv_bytes: u64::from(self.peak_blocks) * block_bytes,
            workspace_bytes: m.measured,
        })
    }
}

/// A run that ends without [`MeasuredRun::finish`] (an error) still hands the GPU back.
impl Drop for EngineRun<'_> {
    fn drop(&mut self) {
        if let Some(ex) = self.executor.take() {
            let gpu = ex.into_engine().into_gpu();
            // The engine's buffers are freed in stream order: wait, so the next run sees the memory free.
            let _ = gpu.synchronize();
            *self.home = Some(gpu);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Sequences;
    use crate::engine::forward::{fits, sizing};
    use crate::metrics::Recorder;
    use crate::model::{ActivationBuffers, DEFAULT_SM_COUNT};
    use crate::sim::run::{new_scheduler, prepare};
    use crate::sim::serving::{VirtualClock, serve};
    use crate::workload::{Request, load_runs_str};
    use std::path::Path;

    /// The engine's host side with no GPU: each plan prepared into the step's inputs as the engine prepares it,
    /// and checked to fit the buffers an engine of the validated run's configuration allocates (the engine would
    /// reallocate them otherwise, and hold another workspace than the simulator predicted).
    struct HostEngine {
        seqs: Sequences,
        buffers: ActivationBuffers,
        prompt_lens: Vec<u32>,
        steps: u32,
    }

    impl Executor for HostEngine {
        fn execute(&mut self, plan: &StepPlan, _shape: &StepShape) -> Result<Nanos, ExecError> {
            for id in plan
                .prefills
                .iter()
                .map(|c| c.id)
                .chain(plan.decodes.iter().map(|d| d.id))
            {
                if !self.seqs.is_registered(id) {
                    self.seqs.register(id, self.prompt_lens[id as usize]).unwrap();
                }
            }
            self.steps += 1;
            if plan.is_empty() {
                for &id in &plan.preempted {
                    self.seqs.release_kv(id);
                }
                return Ok(Nanos(1000));
            }
            let x = self.seqs.prepare(plan).map_err(|e| ExecError::Failed(e.to_string()))?;
            let b = &self.buffers;
            let (rows, seqs, width) = (b.rows as usize, b.seqs as usize, b.table_width as usize);
            if !fits(rows, seqs, width, &x) {
                return Err(ExecError::Failed(format!(
                    "step {}: {} rows, {} decodes, {} chunks, tables {}/{} blocks wide do not fit {rows} rows, \
                     {seqs} sequences, {width} blocks",
                    self.steps,
                    x.rows(),
                    x.decodes(),
                    x.chunks(),
                    x.decode_blocks_per_seq,
                    x.prefill_blocks_per_seq
                )));
            }
            self.seqs.commit_samples(&x.sample_ids, &vec![1; x.sample_ids.len()]);
            Ok(Nanos(1_000_000))
        }

        fn after_step(&mut self, outcome: &StepOutcome) {
            for &id in &outcome.finished {
                self.seqs.mark_finished(id);
            }
            for &(id, _) in &outcome.kv_released {
                self.seqs.on_kv_released(id);
            }
        }
    }

    /// Prompts of five lengths (static batches pad them to their longest), outputs of three, every policy variant.
    const MIXED: &str = r#"
name = "sizing"
seed = 3
[model]
name = "qwen2.5-0.5b"
[hardware]
gpu = "h100-sxm"
[cost]
kind = "analytic"
[scheduler]
max_batch_size = 4
max_batch_tokens = 600
[workload]
arrival = "burst"
requests = 14
prompt_len = [64, 200, 512, 96, 33]
output_len = [16, 48, 5]
[sweep]
scheduler = [
    { policy = "static" },
    { policy = "continuous" },
    { policy = "continuous", chunked_prefill = false },
    { policy = "continuous", mix_prefill_decode = false, preemption = false },
]
"#;

    /// Serves every run of `text` on a [`HostEngine`] sized as `validate` sizes the run's engine; returns each run's
    /// preemptions.
    fn serve_on_validated_sizing(text: &str) -> Vec<u64> {
        let specs = load_runs_str(text, Path::new("s.toml"), &[], None).unwrap();
        let mut preemptions = Vec::new();
        for spec in &specs {
            let run = prepare(spec).unwrap();
            let config = engine_config(&run, GemmPolicy::default(), spec.scenario.seed);
            let sized = sizing(&config, &run.model);
            assert_eq!(sized, run.sizing, "{}", spec.name);
            // The engine computes the workspace the simulator predicted from (same sizing, same SMs).
            let workspace = run.model.engine_workspace(&sized, DEFAULT_SM_COUNT);
            assert_eq!(workspace.bytes(), run.workspace.computed_bytes, "{}", spec.name);
            let blocks = (run.limits.kv_capacity_slots / u64::from(sized.block_size)) as u32;
            let mut engine = HostEngine {
                seqs: Sequences::new(sized.block_size, blocks, run.model.vocab, 0),
                buffers: workspace.buffers,
                prompt_lens: run.workload.requests.iter().map(|r| r.prompt_len).collect(),
                steps: 0,
            };
            let mut scheduler = new_scheduler(run.policy, run.limits);
            let mut recorder = Recorder::new(run.workload.requests.len(), true, false);
            serve(
                scheduler.as_mut(),
                &mut engine,
                &mut VirtualClock::default(),
                &run.workload,
                &mut recorder,
                &mut (),
            )
            .unwrap_or_else(|e| panic!("{} ({:?}): {e}", spec.name, run.policy));
            let m = recorder.finish(run.memory, run.slo);
            assert_eq!(m.summary.completed, run.workload.requests.len() as u64, "{}", spec.name);
            assert!(engine.seqs.is_empty(), "{}: every request left the engine", spec.name);
            preemptions.push(m.summary.preemptions);
        }
        preemptions
    }

    #[test]
    fn every_step_of_every_policy_fits_the_engine_validate_builds() {
        assert_eq!(serve_on_validated_sizing(MIXED).len(), 4);
        // Grouped with one prompt length: with several, the engine refuses its decodes (grouped pads a prefill's
        // prompts to the longest but keeps each cache at its own prompt's length, and the engine's step check
        // expects the padding in the decode's context as in a static batch) — a limit of the engine's checks, not
        // of its sizing.
        let grouped = MIXED.replace("prompt_len = [64, 200, 512, 96, 33]", "prompt_len = 200");
        let grouped = format!(
            "{}[sweep]\nscheduler = [{{ policy = \"grouped\" }}]\n",
            &grouped[..grouped.find("[sweep]").unwrap()]
        );
        assert_eq!(serve_on_validated_sizing(&grouped).len(), 1);
        // Recomputed prefills after preemptions, with and without chunking.
        let tight = MIXED.replace("[scheduler]", "[memory]\nkv_capacity_tokens = 700\n[scheduler]");
        let tight = &tight[..tight.find("[sweep]").unwrap()];
        for chunked in [true, false] {
            let text =
                format!("{tight}[sweep]\nscheduler = [{{ policy = \"continuous\", chunked_prefill = {chunked} }}]\n");
            let preemptions = serve_on_validated_sizing(&text);
            assert!(preemptions[0] > 0, "chunked {chunked}: {preemptions:?}");
        }
    }

    #[test]
    fn the_kv_bound_is_every_request_whole_in_whole_blocks() {
        let request = |prompt_len, output_len| Request {
            id: 0,
            arrival: Nanos::ZERO,
            prompt_len,
            output_len,
        };
        let w = Workload {
            // 64 + 16 - 1 = 79 slots → 80 in blocks of 16; 16 + 1 - 1 = 16 → 16; 1 + 2 - 1 = 2 → 16.
            requests: vec![request(64, 16), request(16, 1), request(1, 2)],
            closed_loop: None,
        };
        assert_eq!(kv_demand_bound(&w, 16), 80 + 16 + 16);
        assert_eq!(kv_demand_bound(&w, 1), 79 + 16 + 2);
    }
}
