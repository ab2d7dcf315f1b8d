//! `continuous`: iteration-level scheduling (Orca, vLLM). Every step carries every running sequence — one decode
//! token each, or the next chunk of its prompt — plus newly admitted prefills, in one forward pass. Admission
//! follows arrival order while `max_batch_size` (sequences), `max_batch_tokens` and free KV blocks allow. A sequence
//! leaves after the step that produced its last token and frees its KV at once.
//!
//! Options: `chunked_prefill` splits prompts to fit the token budget (Sarathi); `mix_prefill_decode = false` runs
//! prefill-only and decode-only steps, prefill first; with `preemption`, KV blocks are taken on demand and, when
//! they run out, the newest running request is evicted and re-queued at the head to be recomputed (its prompt and
//! the tokens it already emitted are prefilled again); without it, a request reserves its whole final KV at
//! admission and nothing is ever evicted.

use super::{
    BlockId, Decision, DecodeSeq, KvBlockManager, NewRequest, PrefillChunk, ReqId, Scheduler, SchedulerLimits,
    StepOutcome, StepPlan, final_kv_tokens,
};
use crate::units::Nanos;
use std::collections::VecDeque;

#[derive(Clone, Debug)]
struct Seq {
    id: ReqId,
    prompt_len: u32,
    output_len: u32,
    /// Tokens emitted so far; kept across preemptions (users already saw them).
    generated: u32,
    /// Tokens whose K/V are in the cache.
    computed: u32,
    /// Tokens to compute before the next sample: the prompt plus what was emitted before this admission.
    prefill_target: u32,
    blocks: Vec<BlockId>,
    peak_slots: u64,
}

impl Seq {
    fn is_decoding(&self) -> bool {
        self.computed >= self.prefill_target
    }
}

/// One planned piece of work: running index, tokens.
#[derive(Clone, Copy, Debug)]
struct Work {
    index: u32,
    tokens: u32,
}

pub struct ContinuousScheduler {
    limits: SchedulerLimits,
    kv: KvBlockManager,
    waiting: VecDeque<Seq>,
    /// In admission order: the last is the newest, the first to be preempted.
    running: Vec<Seq>,
    plan: StepPlan,
    work: Vec<Work>,
    budget: u32,
    released_while_planning: Vec<(ReqId, u64)>,
    outcome: StepOutcome,
}

impl ContinuousScheduler {
    pub fn new(limits: SchedulerLimits) -> ContinuousScheduler {
        let blocks = limits.kv_capacity_slots / u64::from(limits.block_size);
        let kv = KvBlockManager::new(limits.block_size, u32::try_from(blocks).unwrap_or(u32::MAX));
        ContinuousScheduler {
            limits,
            kv,
            waiting: VecDeque::new(),
            running: Vec::new(),
            plan: StepPlan::default(),
            work: Vec::new(),
            budget: 0,
            released_while_planning: Vec::new(),
            outcome: StepOutcome::default(),
        }
    }

    /// Plans the running sequences that `wanted(is_decoding)` selects, in admission order. Returns false when a
    /// preemption happened.
    fn plan_running(&mut self, wanted: impl Fn(bool) -> bool) -> bool {
        let mut preempted = false;
        let mut i = 0;
        while i < self.running.len() {
            let s = &self.running[i];
            let decoding = s.is_decoding();
            if !wanted(decoding) {
                i += 1;
                continue;
            }
            let n = if decoding {
                1
            } else if self.limits.chunked_prefill {
                (s.prefill_target - s.computed).min(self.budget)
            } else {
                s.prefill_target - s.computed
            };
            if n == 0 || n > self.budget {
                i += 1;
                continue;
            }
            let tokens = u64::from(s.computed + n);
            while !self.kv.grow(&mut self.running[i].blocks, tokens) {
                assert!(
                    self.limits.preemption,
                    "KV blocks were reserved at admission; growth cannot fail"
                );
                preempted = true;
                let victim = self.running.len() - 1;
                self.preempt_last();
                if victim == i {
                    break;
                }
            }
            if i == self.running.len() {
                break; // the sequence itself was evicted
            }
            let s = &mut self.running[i];
            s.peak_slots = s
                .peak_slots
                .max(s.blocks.len() as u64 * u64::from(self.limits.block_size));
            if decoding {
                self.plan.decodes.push(DecodeSeq {
                    id: s.id,
                    context: s.computed + 1,
                    emits: true,
                });
            } else {
                let samples = s.computed + n == s.prefill_target;
                self.plan.prefills.push(PrefillChunk {
                    id: s.id,
                    offset: s.computed,
                    len: n,
                    padding: 0,
                    samples,
                });
            }
            self.work.push(Work {
                index: i as u32,
                tokens: n,
            });
            self.budget -= n;
            i += 1;
        }
        !preempted
    }

    fn preempt_last(&mut self) {
        let mut s = self.running.pop().expect("a running sequence to preempt");
        self.kv.release(&mut s.blocks);
        self.released_while_planning.push((s.id, s.peak_slots));
        self.plan.preempted.push(s.id);
        s.computed = 0;
        s.prefill_target = s.prompt_len + s.generated;
        self.waiting.push_front(s);
    }

    /// Admits waiting requests in order while slots, token budget and KV blocks allow.
    fn admit(&mut self) {
        while self.budget > 0 && self.running.len() < self.limits.max_batch_size as usize {
            let Some(w) = self.waiting.front() else { break };
            let target = w.prompt_len + w.generated;
            let n = if self.limits.chunked_prefill {
                target.min(self.budget)
            } else if target <= self.budget {
                target
            } else {
                break;
            };
            let reserve = if self.limits.preemption {
                u64::from(n)
            } else {
                final_kv_tokens(w.prompt_len, w.output_len)
            };
            if self.kv.blocks_for(reserve) > u64::from(self.kv.free_blocks()) {
                break;
            }
            let mut s = self.waiting.pop_front().expect("front exists");
            s.prefill_target = target;
            s.computed = 0;
            let grown = self.kv.grow(&mut s.blocks, reserve);
            debug_assert!(grown, "checked free blocks above");
            s.peak_slots = s
                .peak_slots
                .max(s.blocks.len() as u64 * u64::from(self.limits.block_size));
            self.plan.prefills.push(PrefillChunk {
                id: s.id,
                offset: 0,
                len: n,
                padding: 0,
                samples: n == target,
            });
            self.work.push(Work {
                index: self.running.len() as u32,
                tokens: n,
            });
            self.running.push(s);
            self.budget -= n;
        }
    }

    /// Checks the KV block manager's partition and that every running sequence has blocks for what it computed.
    pub fn check_invariants(&self) -> Result<(), String> {
        self.kv
            .check_partition(self.running.iter().map(|s| s.blocks.as_slice()))?;
        for s in &self.running {
            if (s.blocks.len() as u64) < self.kv.blocks_for(u64::from(s.computed)) {
                return Err(format!(
                    "request {} computed {} tokens in {} blocks",
                    s.id,
                    s.computed,
                    s.blocks.len()
                ));
            }
        }
        if let Some(s) = self.waiting.iter().find(|s| !s.blocks.is_empty()) {
            return Err(format!("waiting request {} holds KV blocks", s.id));
        }
        Ok(())
    }
}

impl Scheduler for ContinuousScheduler {
    fn add(&mut self, r: NewRequest) {
        self.waiting.push_back(Seq {
            id: r.id,
            prompt_len: r.prompt_len,
            output_len: r.output_len,
            generated: 0,
            computed: 0,
            prefill_target: r.prompt_len,
            blocks: Vec::new(),
            peak_slots: 0,
        });
    }

    fn schedule(&mut self, _now: Nanos) -> Decision {
        self.plan.clear();
        self.work.clear();
        self.budget = self.limits.max_batch_tokens;
        if self.limits.mix_prefill_decode {
            if self.plan_running(|_| true) {
                self.admit();
            }
        } else {
            // Prefill first: chunks of prompts under way and new admissions; decode only when there are none.
            if self.plan_running(|decoding| !decoding) {
                self.admit();
            }
            if self.plan.is_empty() {
                self.plan_running(|decoding| decoding);
            }
        }
        if self.plan.is_empty() {
            Decision::Idle
        } else {
            Decision::Step
        }
    }

    fn plan(&self) -> &StepPlan {
        &self.plan
    }

    fn complete(&mut self) -> &StepOutcome {
        self.outcome.clear();
        self.outcome.kv_released.append(&mut self.released_while_planning);
        for w in &self.work {
            let s = &mut self.running[w.index as usize];
            let was_decoding = s.is_decoding();
            s.computed += w.tokens;
            if was_decoding || s.computed == s.prefill_target {
                s.generated += 1;
            }
        }
        let (kv, outcome) = (&mut self.kv, &mut self.outcome);
        self.running.retain_mut(|s| {
            if s.generated < s.output_len {
                return true;
            }
            kv.release(&mut s.blocks);
            outcome.finished.push(s.id);
            outcome.kv_released.push((s.id, s.peak_slots));
            false
        });
        self.plan.clear();
        self.work.clear();
        &self.outcome
    }

    fn waiting(&self) -> usize {
        self.waiting.len()
    }

    fn running(&self) -> usize {
        self.running.len()
    }

    fn kv_slots(&self) -> u64 {
        u64::from(self.kv.used_blocks()) * u64::from(self.limits.block_size)
    }

    fn kv_capacity(&self) -> u64 {
        u64::from(self.kv.total_blocks()) * u64::from(self.limits.block_size)
    }
}
