//! [`GpuExecutor`]: the serving loop's executor backed by the engine. The loop, the scheduler and the recorder are
//! the simulator's own; only time (measured, not predicted) and the tokens (real) differ.

use std::time::Instant;

use crate::model::StepShape;
use crate::sched::{StepOutcome, StepPlan};
use crate::sim::serving::{ExecError, Executor};
use crate::units::Nanos;
use crate::workload::Workload;

use super::forward::{Engine, EngineError};

/// Runs each planned step on the GPU and returns its measured wall time: from the plan handed over to the sampled
/// token ids on the host (host-side preparation, input uploads, every kernel, the final copy). Requests are
/// registered with the engine the first time a plan names them, with their prompt length from the workload (the
/// serving loop's request ids are workload indices).
pub struct GpuExecutor {
    engine: Engine,
    prompt_lens: Vec<u32>,
    steps: u64,
    busy: Nanos,
}

impl GpuExecutor {
    pub fn new(engine: Engine, workload: &Workload) -> Self {
        Self {
            engine,
            prompt_lens: workload.requests.iter().map(|r| r.prompt_len).collect(),
            steps: 0,
            busy: Nanos::ZERO,
        }
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn engine_mut(&mut self) -> &mut Engine {
        &mut self.engine
    }

    pub fn into_engine(self) -> Engine {
        self.engine
    }

    /// Steps executed so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Σ of the measured step times.
    pub fn busy(&self) -> Nanos {
        self.busy
    }

    fn register_new(&mut self, plan: &StepPlan) -> Result<(), EngineError> {
        let ids = plan
            .prefills
            .iter()
            .map(|c| c.id)
            .chain(plan.decodes.iter().map(|d| d.id));
        for id in ids {
            if self.engine.sequences().is_registered(id) {
                continue;
            }
            let prompt_len = *self.prompt_lens.get(id as usize).ok_or_else(|| {
                EngineError::Config(format!(
                    "request {id} is not in the workload ({} requests)",
                    self.prompt_lens.len()
                ))
            })?;
            self.engine.register(id, prompt_len)?;
        }
        Ok(())
    }
}

impl Executor for GpuExecutor {
    fn execute(&mut self, plan: &StepPlan, _shape: &StepShape) -> Result<Nanos, ExecError> {
        let step = self.steps;
        let fail = move |e: EngineError| ExecError::Failed(format!("GPU step {step}: {e}"));
        self.register_new(plan).map_err(fail)?;
        let start = Instant::now();
        self.engine.step(plan).map_err(fail)?;
        let took = Nanos(u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX));
        self.engine.record_memory().map_err(fail)?;
        self.steps += 1;
        self.busy += took;
        Ok(took)
    }

    fn after_step(&mut self, outcome: &StepOutcome) {
        let seqs = self.engine.sequences_mut();
        for &id in &outcome.finished {
            seqs.mark_finished(id);
        }
        for &(id, _) in &outcome.kv_released {
            seqs.on_kv_released(id);
        }
    }
}
