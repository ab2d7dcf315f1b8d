//! `static`: what `model.generate` on a padded batch does. Up to `max_batch_size` waiting requests in arrival
//! order; one prefill over the whole batch, prompts padded to the longest; decode steps until the batch's longest
//! target is reached. Finished sequences stay in the batch, costing compute and growing their KV cache, and the
//! next batch starts only when this one ends.
//!
//! The padding is computed in the prefill, never cached (the engine's paged cache holds each sequence's own tokens,
//! as [`crate::engine`] does): a sequence's cache is its prompt plus every token fed since, and its decodes attend
//! to exactly that.

use super::{
    Decision, DecodeSeq, NewRequest, PrefillChunk, ReqId, Scheduler, SchedulerLimits, StepOutcome, StepPlan,
    final_kv_tokens,
};
use crate::units::Nanos;
use std::collections::VecDeque;

#[derive(Clone, Copy, Debug)]
struct Member {
    id: ReqId,
    prompt_len: u32,
    output_len: u32,
    generated: u32,
}

pub struct StaticScheduler {
    limits: SchedulerLimits,
    waiting: VecDeque<NewRequest>,
    batch: Vec<Member>,
    /// Longest prompt of the batch: every sequence's padded prompt.
    padded_prompt: u32,
    longest_output: u32,
    /// Decode steps the batch has run.
    decode_steps: u32,
    plan: StepPlan,
    outcome: StepOutcome,
}

impl StaticScheduler {
    pub fn new(limits: SchedulerLimits) -> StaticScheduler {
        StaticScheduler {
            limits,
            waiting: VecDeque::new(),
            batch: Vec::new(),
            padded_prompt: 0,
            longest_output: 0,
            decode_steps: 0,
            plan: StepPlan::default(),
            outcome: StepOutcome::default(),
        }
    }

    /// Takes requests from the head of the queue while the batch's final caches (every member's prompt grown to the
    /// longest target) fit the KV capacity.
    fn launch(&mut self) {
        let (mut prompt, mut output, mut prompts) = (0u32, 0u32, 0u64);
        let mut n = 0usize;
        for r in self.waiting.iter().take(self.limits.max_batch_size as usize) {
            let (p, o, sum) = (
                prompt.max(r.prompt_len),
                output.max(r.output_len),
                prompts + u64::from(r.prompt_len),
            );
            // Σ final_kv_tokens(prompt_i, o) = Σ prompt_i + (o − 1) per member, this one included.
            let need = sum + (n as u64 + 1) * (final_kv_tokens(0, o));
            if need > self.limits.kv_capacity_slots && n > 0 {
                break;
            }
            (prompt, output, prompts, n) = (p, o, sum, n + 1);
        }
        self.padded_prompt = prompt;
        self.longest_output = output;
        self.decode_steps = 0;
        self.plan.clear();
        for r in self.waiting.drain(..n) {
            self.batch.push(Member {
                id: r.id,
                prompt_len: r.prompt_len,
                output_len: r.output_len,
                generated: 0,
            });
            self.plan.prefills.push(PrefillChunk {
                id: r.id,
                offset: 0,
                len: prompt,
                padding: prompt - r.prompt_len,
                samples: true,
            });
        }
    }

    fn plan_decode(&mut self) {
        self.plan.clear();
        // The token fed at decode step j sits at position prompt + j - 1 of its sequence (the padding is not
        // cached); attention covers it and every token before it.
        for m in &self.batch {
            self.plan.decodes.push(DecodeSeq {
                id: m.id,
                context: m.prompt_len + self.decode_steps + 1,
                emits: m.generated < m.output_len,
            });
        }
    }
}

impl Scheduler for StaticScheduler {
    fn add(&mut self, request: NewRequest) {
        self.waiting.push_back(request);
    }

    fn schedule(&mut self, now: Nanos) -> Decision {
        if !self.batch.is_empty() {
            self.plan_decode();
            return Decision::Step;
        }
        let Some(oldest) = self.waiting.front() else {
            return Decision::Idle;
        };
        let full = self.waiting.len() >= self.limits.max_batch_size as usize;
        let deadline = oldest.arrival + self.limits.max_wait;
        if !full && now < deadline {
            return Decision::WaitUntil(deadline);
        }
        self.launch();
        Decision::Step
    }

    fn plan(&self) -> &StepPlan {
        &self.plan
    }

    fn complete(&mut self) -> &StepOutcome {
        self.outcome.clear();
        if !self.plan.decodes.is_empty() {
            self.decode_steps += 1;
        }
        for m in &mut self.batch {
            if m.generated < m.output_len {
                m.generated += 1;
                if m.generated == m.output_len {
                    self.outcome.finished.push(m.id);
                }
            }
        }
        if self.batch.iter().all(|m| m.generated == m.output_len) {
            let steps = u64::from(self.decode_steps);
            for m in self.batch.drain(..) {
                let held = u64::from(m.prompt_len) + steps;
                debug_assert_eq!(held, final_kv_tokens(m.prompt_len, self.longest_output));
                self.outcome.kv_released.push((m.id, held));
            }
        }
        self.plan.clear();
        &self.outcome
    }

    fn waiting(&self) -> usize {
        self.waiting.len()
    }

    fn running(&self) -> usize {
        self.batch.len()
    }

    fn kv_slots(&self) -> u64 {
        // Each cache holds its prompt plus every token fed so far, an in-flight decode step's included.
        let in_flight = u64::from(!self.plan.decodes.is_empty());
        let fed = (u64::from(self.decode_steps) + in_flight) * self.batch.len() as u64;
        self.batch.iter().map(|m| u64::from(m.prompt_len)).sum::<u64>() + fed
    }

    fn kv_capacity(&self) -> u64 {
        self.limits.kv_capacity_slots
    }
}
