//! The serving loop: arrivals → scheduler → executor → recorder, driven by a clock. The same loop runs the
//! simulator (virtual clock, cost model) and, later, the GPU engine (wall clock, real steps).

use super::event::EventQueue;
use crate::metrics::{Recorder, StepRecord};
use crate::model::StepShape;
use crate::sched::{Decision, NewRequest, Scheduler, StepOutcome, StepPlan};
use crate::units::Nanos;
use crate::workload::Workload;

/// Runs planned steps. Returns how long the step took (predicted or measured).
pub trait Executor {
    fn execute(&mut self, plan: &StepPlan, shape: &StepShape) -> Result<Nanos, ExecError>;

    /// What the scheduler concluded once the step's tokens existed: which requests finished and whose KV it freed
    /// (the GPU engine frees its own KV blocks then). Called after each `execute`.
    fn after_step(&mut self, _outcome: &StepOutcome) {}
}

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("{0}")]
    Failed(String),
}

/// Where time comes from.
pub trait Clock {
    fn now(&self) -> Nanos;
    /// Idle until `t` (nothing to run before then).
    fn wait_until(&mut self, t: Nanos);
    /// A step that started at `start` and took `duration` has finished; returns the time its tokens exist.
    fn step_finished(&mut self, start: Nanos, duration: Nanos) -> Nanos;
}

/// Simulated time: jumps to the next event, and past each step by its predicted duration.
#[derive(Clone, Copy, Debug, Default)]
pub struct VirtualClock {
    now: Nanos,
}

impl Clock for VirtualClock {
    fn now(&self) -> Nanos {
        self.now
    }

    fn wait_until(&mut self, t: Nanos) {
        self.now = self.now.max(t);
    }

    fn step_finished(&mut self, start: Nanos, duration: Nanos) -> Nanos {
        self.now = start + duration;
        self.now
    }
}

/// Executes steps by asking a cost model how long they take.
pub struct SimExecutor<'a> {
    pub cost: &'a dyn super::CostModel,
}

impl Executor for SimExecutor<'_> {
    fn execute(&mut self, plan: &StepPlan, shape: &StepShape) -> Result<Nanos, ExecError> {
        Ok(self.cost.plan_time(plan, shape))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoopError {
    #[error(transparent)]
    Exec(#[from] ExecError),
    #[error("the scheduler stalled at {at} with {waiting} requests waiting and {running} running")]
    Stalled { at: Nanos, waiting: usize, running: usize },
}

enum Event {
    /// Index into the workload's requests (open loop) or the next request a closed-loop client sends.
    Arrival,
    /// A scheduler deadline.
    Wake,
}

/// Observes each step as it happens (used by tests to check scheduler invariants).
pub trait StepObserver<S: ?Sized> {
    fn after_plan(&mut self, _scheduler: &S, _plan: &StepPlan) {}
    fn after_complete(&mut self, _scheduler: &S) {}
}

impl<S: ?Sized> StepObserver<S> for () {}

/// Serves every request of `workload` and records what happened.
pub fn serve<S, E, C>(
    scheduler: &mut S,
    executor: &mut E,
    clock: &mut C,
    workload: &Workload,
    recorder: &mut Recorder,
    observer: &mut dyn StepObserver<S>,
) -> Result<(), LoopError>
where
    S: Scheduler + ?Sized,
    E: Executor + ?Sized,
    C: Clock + ?Sized,
{
    let requests = &workload.requests;
    let mut events: EventQueue<Event> = EventQueue::default();
    // Closed loop: arrivals scheduled so far (each client has at most one request outstanding).
    let mut issued = 0usize;
    match workload.closed_loop {
        Some(cl) => {
            issued = (cl.clients as usize).min(requests.len());
            for _ in 0..issued {
                events.push(clock.now(), Event::Arrival);
            }
        }
        None => {
            if let Some(first) = requests.first() {
                events.push(first.arrival, Event::Arrival);
            }
        }
    }
    let mut sent = 0usize; // requests delivered to the scheduler so far; also the next request id
    let mut pending_wake: Option<Nanos> = None;
    let mut step_index = 0u64;
    // When the last step ended, unless the loop has waited since: a step's recorded time runs from there, so it
    // holds the host's work between two steps (the last step's bookkeeping, this one's planning) as well as the
    // step itself. On the virtual clock that work takes no time and the record is the executor's duration.
    let mut last_end: Option<Nanos> = None;
    loop {
        let now = clock.now();
        while let Some((t, event)) = events.pop_due(now) {
            match event {
                Event::Wake => pending_wake = None,
                Event::Arrival => {
                    let r = &requests[sent];
                    let id = sent as u32;
                    recorder.on_arrival(id, t, r.prompt_len, r.output_len);
                    scheduler.add(NewRequest {
                        id,
                        arrival: t,
                        prompt_len: r.prompt_len,
                        output_len: r.output_len,
                    });
                    sent += 1;
                    if workload.closed_loop.is_none()
                        && let Some(next) = requests.get(sent)
                    {
                        events.push(next.arrival, Event::Arrival);
                    }
                }
            }
        }
        match scheduler.schedule(now) {
            Decision::Step => {
                let plan = scheduler.plan();
                observer.after_plan(scheduler, plan);
                let shape = plan.shape();
                let duration = executor.execute(plan, &shape)?;
                let (kv_slots, queue_depth, running) = (
                    scheduler.kv_slots(),
                    scheduler.waiting() as u32,
                    scheduler.running() as u32,
                );
                let preempted = plan.preempted.len() as u32;
                let mut emitted = 0u32;
                let end = clock.step_finished(now, duration);
                let start = last_end.unwrap_or(now);
                last_end = Some(end);
                for id in plan.emitting() {
                    recorder.on_token(id, end);
                    emitted += 1;
                }
                for &id in &plan.preempted {
                    recorder.on_preempt(id);
                }
                let outcome = scheduler.complete();
                executor.after_step(outcome);
                for &(id, slots) in &outcome.kv_released {
                    recorder.on_kv_peak(id, slots);
                }
                if let Some(cl) = workload.closed_loop {
                    for _ in &outcome.finished {
                        if issued < requests.len() {
                            events.push(end + cl.think, Event::Arrival);
                            issued += 1;
                        }
                    }
                }
                observer.after_complete(scheduler);
                recorder.on_step(StepRecord {
                    index: step_index,
                    start,
                    duration: end - start,
                    prefill_seqs: shape.prefill_seqs as u32,
                    decode_seqs: shape.decode_seqs as u32,
                    prefill_tokens: shape.prefill_tokens as u32,
                    decode_tokens: shape.decode_tokens as u32,
                    padding_tokens: shape.padding_tokens as u32,
                    emitted_tokens: emitted,
                    kv_slots,
                    queue_depth,
                    running,
                    preempted,
                });
                step_index += 1;
            }
            decision => {
                if let Decision::WaitUntil(t) = decision
                    && pending_wake != Some(t)
                {
                    events.push(t, Event::Wake);
                    pending_wake = Some(t);
                }
                last_end = None;
                match events.peek_time() {
                    Some(t) => clock.wait_until(t),
                    None if sent == requests.len() && scheduler.waiting() == 0 && scheduler.running() == 0 => {
                        return Ok(());
                    }
                    None => {
                        return Err(LoopError::Stalled {
                            at: now,
                            waiting: scheduler.waiting(),
                            running: scheduler.running(),
                        });
                    }
                }
            }
        }
    }
}
