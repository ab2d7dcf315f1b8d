//! `grouped`: a naive continuous scheduler that keeps a separate contiguous cache per request and can only batch
//! requests whose caches have equal length.
//!
//! Slots = `max_batch_size`. `admit()` takes min(free slots, waiting) requests from the head of the queue and
//! prefills them together in one step (prompts padded to the longest; each gets its first token and keeps a cache
//! of its own prompt's length). While requests are active: group them by cache length; for each group in ascending
//! length order (groups fixed at the start of the iteration, members that already left skipped) run one decode step
//! for that group alone, retire finished requests, then `admit()`. When lengths diverge the groups shrink towards
//! one request each, and throughput falls towards batch-1 decoding: the loss this policy exists to show.

use super::{
    Decision, DecodeSeq, NewRequest, PrefillChunk, ReqId, Scheduler, SchedulerLimits, StepOutcome, StepPlan,
    final_kv_tokens,
};
use crate::units::Nanos;
use std::collections::VecDeque;

#[derive(Clone, Copy, Debug)]
struct Active {
    id: ReqId,
    prompt_len: u32,
    output_len: u32,
    generated: u32,
}

impl Active {
    /// Tokens in this request's cache: the prompt and every output token fed back so far.
    fn cache_len(&self) -> u32 {
        self.prompt_len + self.generated.saturating_sub(1)
    }
}

pub struct GroupedScheduler {
    limits: SchedulerLimits,
    waiting: VecDeque<NewRequest>,
    active: Vec<Active>,
    /// Slots reserved by active requests' final caches (admission never over-commits the KV capacity).
    reserved: u64,
    groups: Vec<Vec<ReqId>>,
    next_group: usize,
    admit_due: bool,
    plan: StepPlan,
    outcome: StepOutcome,
}

impl GroupedScheduler {
    pub fn new(limits: SchedulerLimits) -> GroupedScheduler {
        GroupedScheduler {
            limits,
            waiting: VecDeque::new(),
            active: Vec::new(),
            reserved: 0,
            groups: Vec::new(),
            next_group: 0,
            admit_due: false,
            plan: StepPlan::default(),
            outcome: StepOutcome::default(),
        }
    }

    /// Plans the prefill of min(free slots, waiting) requests; false when there is nothing to admit.
    fn admit(&mut self) -> bool {
        let free = (self.limits.max_batch_size as usize).saturating_sub(self.active.len());
        let mut n = 0;
        let mut reserve = 0;
        for r in self.waiting.iter().take(free) {
            let need = final_kv_tokens(r.prompt_len, r.output_len);
            if self.reserved + reserve + need > self.limits.kv_capacity_slots {
                break;
            }
            reserve += need;
            n += 1;
        }
        if n == 0 {
            return false;
        }
        self.reserved += reserve;
        self.plan.clear();
        let padded = self.waiting.iter().take(n).map(|r| r.prompt_len).max().unwrap_or(0);
        for r in self.waiting.drain(..n) {
            self.active.push(Active {
                id: r.id,
                prompt_len: r.prompt_len,
                output_len: r.output_len,
                generated: 0,
            });
            self.plan.prefills.push(PrefillChunk {
                id: r.id,
                offset: 0,
                len: padded,
                padding: padded - r.prompt_len,
                samples: true,
            });
        }
        true
    }

    fn start_iteration(&mut self) {
        let mut by_len: Vec<(u32, ReqId)> = self.active.iter().map(|a| (a.cache_len(), a.id)).collect();
        by_len.sort_unstable();
        self.groups.clear();
        let mut last_len = None;
        for (len, id) in by_len {
            if last_len != Some(len) {
                self.groups.push(Vec::new());
                last_len = Some(len);
            }
            self.groups.last_mut().expect("pushed above").push(id);
        }
        self.next_group = 0;
    }
}

impl Scheduler for GroupedScheduler {
    fn add(&mut self, request: NewRequest) {
        self.waiting.push_back(request);
    }

    fn schedule(&mut self, _now: Nanos) -> Decision {
        loop {
            if self.admit_due {
                self.admit_due = false;
                if self.admit() {
                    return Decision::Step;
                }
            }
            while self.next_group < self.groups.len() {
                let group = &self.groups[self.next_group];
                self.next_group += 1;
                self.plan.clear();
                for a in self.active.iter().filter(|a| group.contains(&a.id)) {
                    self.plan.decodes.push(DecodeSeq {
                        id: a.id,
                        context: a.cache_len() + 1,
                        emits: true,
                    });
                }
                if !self.plan.decodes.is_empty() {
                    return Decision::Step;
                }
            }
            if self.active.is_empty() {
                if self.waiting.is_empty() {
                    return Decision::Idle;
                }
                self.admit_due = true;
                continue;
            }
            self.start_iteration();
        }
    }

    fn plan(&self) -> &StepPlan {
        &self.plan
    }

    fn complete(&mut self) -> &StepOutcome {
        self.outcome.clear();
        let was_decode = !self.plan.decodes.is_empty();
        for id in self.plan.emitting() {
            let a = self
                .active
                .iter_mut()
                .find(|a| a.id == id)
                .expect("planned request is active");
            a.generated += 1;
        }
        let (outcome, reserved) = (&mut self.outcome, &mut self.reserved);
        self.active.retain(|a| {
            if a.generated < a.output_len {
                return true;
            }
            let held = final_kv_tokens(a.prompt_len, a.output_len);
            *reserved -= held;
            outcome.finished.push(a.id);
            outcome.kv_released.push((a.id, held));
            false
        });
        // admit() follows every group's decode step, not the prefill it starts.
        self.admit_due = was_decode;
        self.plan.clear();
        &self.outcome
    }

    fn waiting(&self) -> usize {
        self.waiting.len()
    }

    fn running(&self) -> usize {
        self.active.len()
    }

    fn kv_slots(&self) -> u64 {
        // Caches as they stand once the planned step (if one is in flight) has written its tokens: a request being
        // prefilled counts its prompt (cache_len = prompt while nothing is generated), each decoded one the token
        // it feeds.
        let current: u64 = self.active.iter().map(|a| u64::from(a.cache_len())).sum();
        current + self.plan.decodes.len() as u64
    }

    fn kv_capacity(&self) -> u64 {
        self.limits.kv_capacity_slots
    }
}
