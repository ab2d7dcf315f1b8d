//! A stand-in for the GPU engine in CPU tests: each step "measures" the run's own cost model times a fixed factor
//! per step kind, on a virtual clock, so every error a validation computes is known in advance.

use super::driver::{Backend, MeasuredMemory, MeasuredParts, MeasuredRun};
use crate::metrics::StepKind;
use crate::model::StepShape;
use crate::sched::StepPlan;
use crate::sim::CostModel;
use crate::sim::run::PreparedRun;
use crate::sim::serving::{Clock, ExecError, Executor, VirtualClock};
use crate::units::Nanos;
use crate::workload::RunSpec;
use std::cell::Cell;
use std::rc::Rc;

/// Measured = predicted × factor, per step kind.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Factors {
    pub decode: f64,
    pub prefill: f64,
    pub mixed: f64,
}

impl Factors {
    pub fn uniform(f: f64) -> Factors {
        Factors {
            decode: f,
            prefill: f,
            mixed: f,
        }
    }

    pub fn of(&self, kind: StepKind) -> f64 {
        match kind {
            StepKind::Decode => self.decode,
            StepKind::Prefill => self.prefill,
            StepKind::Mixed => self.mixed,
        }
    }
}

pub fn kind_of(shape: &StepShape) -> StepKind {
    match (shape.prefill_seqs > 0, shape.decode_seqs > 0) {
        (true, true) => StepKind::Mixed,
        (true, false) => StepKind::Prefill,
        _ => StepKind::Decode,
    }
}

pub struct PerturbedBackend {
    pub factors: Factors,
    /// Per policy name: a factor on top of `factors` (to make one policy's measurement slower).
    pub policy_factor: Vec<(&'static str, f64)>,
    /// Measured memory = the model's × this; `None`: the backend does not measure memory.
    pub memory_factor: Option<f64>,
    /// Steps executed, warm-up included, over every run.
    pub executed: Rc<Cell<u64>>,
    /// Fail the run with this index (for error paths).
    pub fail_start: Option<usize>,
    /// (issue, GPU): report each step's parts as the cost model's times these factors; `None`: report none.
    pub parts: Option<(f64, f64)>,
    /// A factor on top of the others for each execution started, in turn (cycling); empty: none.
    pub start_factors: Vec<f64>,
    /// (execution, step, extra): the step with this index (from 0, warm-up included) of the execution started with
    /// this index (from 0, over every run) takes `extra` longer, as a host interruption makes a step.
    pub stall: Option<(usize, u64, Nanos)>,
    /// Executions started, over every run.
    pub started: usize,
    /// The run (its index) of each execution started, in order.
    pub started_runs: Vec<usize>,
}

impl PerturbedBackend {
    pub fn new(factors: Factors) -> PerturbedBackend {
        PerturbedBackend {
            factors,
            policy_factor: Vec::new(),
            memory_factor: None,
            executed: Rc::new(Cell::new(0)),
            fail_start: None,
            parts: None,
            start_factors: Vec::new(),
            stall: None,
            started: 0,
            started_runs: Vec::new(),
        }
    }
}

struct PerturbedRun<'a> {
    cost: &'a dyn CostModel,
    factors: Factors,
    extra: f64,
    memory: Option<MeasuredMemory>,
    executed: Rc<Cell<u64>>,
    parts: Option<(f64, f64)>,
    timed: Vec<MeasuredParts>,
    /// (step, extra): this execution's stalled step, if any.
    stall: Option<(u64, Nanos)>,
    /// Steps this execution ran.
    steps: u64,
    /// The execution's place among those the backend started, from 1 (as an engine's among a process's engines).
    engine: u32,
}

impl Executor for PerturbedRun<'_> {
    fn execute(&mut self, plan: &StepPlan, shape: &StepShape) -> Result<Nanos, ExecError> {
        self.executed.set(self.executed.get() + 1);
        let step = self.steps;
        self.steps += 1;
        let stalled = (self.stall)
            .filter(|&(at, _)| at == step)
            .map_or(Nanos::ZERO, |(_, extra)| extra);
        let predicted = self.cost.plan_time(plan, shape).0 as f64;
        let factor = self.factors.of(kind_of(shape)) * self.extra;
        if let (Some((issue, gpu)), Some(p)) = (self.parts, self.cost.plan_parts(plan, shape)) {
            self.timed.push(MeasuredParts {
                issue: Nanos::from_us(p.issue_us * issue),
                gpu: Some(Nanos::from_us(p.gpu_us * gpu)),
                // Every other step at a lowered clock.
                sm_mhz: Some(if self.timed.len().is_multiple_of(2) { 1980 } else { 1710 }),
                slowed: Some(!self.timed.len().is_multiple_of(2)),
            });
        }
        Ok(Nanos((predicted * factor).round() as u64 + stalled.0))
    }
}

impl MeasuredRun for PerturbedRun<'_> {
    fn clock(&mut self) -> Box<dyn Clock> {
        self.timed.clear();
        Box::new(VirtualClock::default())
    }

    fn step_parts(&mut self) -> Vec<MeasuredParts> {
        std::mem::take(&mut self.timed)
    }

    fn engine_ordinal(&self) -> Option<u32> {
        Some(self.engine)
    }

    fn finish(self: Box<Self>) -> Option<MeasuredMemory> {
        self.memory
    }
}

impl Backend for PerturbedBackend {
    fn start<'a>(&'a mut self, spec: &'a RunSpec, run: &'a PreparedRun) -> Result<Box<dyn MeasuredRun + 'a>, String> {
        if self.fail_start == Some(spec.index) {
            return Err("no engine for this one".to_owned());
        }
        let extra = self
            .policy_factor
            .iter()
            .find(|(p, _)| *p == run.policy.as_str())
            .map_or(1.0, |(_, f)| *f);
        let extra = match self.start_factors.len() {
            0 => extra,
            n => extra * self.start_factors[self.started % n],
        };
        let stall = (self.stall)
            .filter(|&(execution, _, _)| execution == self.started)
            .map(|(_, step, extra)| (step, extra));
        self.started += 1;
        self.started_runs.push(spec.index);
        let memory = self.memory_factor.map(|f| {
            let scale = |b: u64| (b as f64 * f).round() as u64;
            // The peak KV the scheduler will reach is not known before the run; the fake reports weights and
            // workspace scaled and no KV, which the tests account for.
            MeasuredMemory {
                weight_bytes: scale(run.memory.weight_bytes),
                kv_bytes: 0,
                workspace_bytes: scale(run.memory.workspace_bytes),
            }
        });
        Ok(Box::new(PerturbedRun {
            cost: run.cost.as_ref(),
            factors: self.factors,
            extra,
            memory,
            executed: self.executed.clone(),
            parts: self.parts,
            timed: Vec::new(),
            stall,
            steps: 0,
            engine: self.started as u32,
        }))
    }
}
