//! Scheduling policies: which requests run in the next engine step, and what each contributes to it.
//!
//! One implementation serves both the simulator and the GPU engine. A scheduler sees no clock: the serving loop
//! tells it the current time as a plain value when it matters (a static batch's launch deadline), and tells it when
//! the step it planned has finished.

mod continuous;
mod grouped;
mod kv;
mod static_batch;

pub use continuous::ContinuousScheduler;
pub use grouped::GroupedScheduler;
pub use kv::{BlockId, KvBlockManager};
pub use static_batch::StaticScheduler;

use crate::model::StepShape;
use crate::units::Nanos;

pub type ReqId = u32;

/// A request as the scheduler sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NewRequest {
    pub id: ReqId,
    pub arrival: Nanos,
    pub prompt_len: u32,
    pub output_len: u32,
}

/// Prompt tokens of one sequence computed in a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrefillChunk {
    pub id: ReqId,
    /// Tokens of this sequence already in the KV cache.
    pub offset: u32,
    /// Tokens computed in this step, padding included.
    pub len: u32,
    /// Of `len`, tokens that are padding (a static batch pads prompts to the longest).
    pub padding: u32,
    /// The chunk ends the prompt: the step samples this sequence's next token.
    pub samples: bool,
}

impl PrefillChunk {
    /// A sequence's whole prompt of `len` tokens in one chunk, sampling its first token.
    pub fn whole(id: ReqId, len: u32) -> PrefillChunk {
        PrefillChunk {
            id,
            offset: 0,
            len,
            padding: 0,
            samples: true,
        }
    }
}

/// One token of one sequence decoded in a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeSeq {
    pub id: ReqId,
    /// Tokens attention covers, the one being decoded included.
    pub context: u32,
    /// False for a finished sequence kept in a static batch: computed, and discarded.
    pub emits: bool,
}

impl DecodeSeq {
    /// A decode whose token is kept.
    pub fn emitting(id: ReqId, context: u32) -> DecodeSeq {
        DecodeSeq {
            id,
            context,
            emits: true,
        }
    }
}

/// What one engine step computes. Produced by a scheduler, consumed by an executor.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StepPlan {
    pub prefills: Vec<PrefillChunk>,
    pub decodes: Vec<DecodeSeq>,
    /// Requests evicted (KV freed, re-queued for recompute) while this step was planned.
    pub preempted: Vec<ReqId>,
}

impl StepPlan {
    /// A step of these chunks and decodes, preempting nothing.
    pub fn new(prefills: Vec<PrefillChunk>, decodes: Vec<DecodeSeq>) -> StepPlan {
        StepPlan {
            prefills,
            decodes,
            preempted: Vec::new(),
        }
    }

    pub fn clear(&mut self) {
        self.prefills.clear();
        self.decodes.clear();
        self.preempted.clear();
    }

    pub fn is_empty(&self) -> bool {
        self.prefills.is_empty() && self.decodes.is_empty()
    }

    pub fn shape(&self) -> StepShape {
        let mut s = StepShape::default();
        for c in &self.prefills {
            s.add_prefill(u64::from(c.offset), u64::from(c.len), u64::from(c.padding), c.samples);
        }
        for d in &self.decodes {
            s.add_decode(u64::from(d.context), !d.emits);
        }
        s
    }

    /// Requests that get a token when this step finishes, in plan order.
    pub fn emitting(&self) -> impl Iterator<Item = ReqId> + '_ {
        let prefills = self.prefills.iter().filter(|c| c.samples).map(|c| c.id);
        prefills.chain(self.decodes.iter().filter(|d| d.emits).map(|d| d.id))
    }
}

/// What the scheduler wants next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Run the step in [`Scheduler::plan`].
    Step,
    /// Nothing to run before this time unless a request arrives (a static batch waiting to fill).
    WaitUntil(Nanos),
    /// Nothing to run until a request arrives.
    Idle,
}

/// Effects of a finished step, for the recorder.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StepOutcome {
    /// Requests whose final token came out of this step.
    pub finished: Vec<ReqId>,
    /// (request, the most KV slots it held) for each request whose KV was freed by this step or by a preemption
    /// while planning it.
    pub kv_released: Vec<(ReqId, u64)>,
}

impl StepOutcome {
    pub fn clear(&mut self) {
        self.finished.clear();
        self.kv_released.clear();
    }
}

/// A batching policy. The loop calls `add` for each arrival, then `schedule`; on `Decision::Step` it runs `plan()`
/// and calls `complete` once the step's tokens exist.
pub trait Scheduler {
    fn add(&mut self, request: NewRequest);
    fn schedule(&mut self, now: Nanos) -> Decision;
    /// The step planned by the last `schedule` that returned `Decision::Step`; empty once it is completed.
    fn plan(&self) -> &StepPlan;
    fn complete(&mut self) -> &StepOutcome;
    /// Requests that arrived and hold no batch slot.
    fn waiting(&self) -> usize;
    /// Requests that hold a batch slot.
    fn running(&self) -> usize;
    /// KV cache slots (token positions) held while the planned step runs, what it writes included.
    fn kv_slots(&self) -> u64;
    /// KV slots the cache can hold.
    fn kv_capacity(&self) -> u64;
}

/// The limits a policy works within.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SchedulerLimits {
    pub max_batch_size: u32,
    pub max_batch_tokens: u32,
    pub chunked_prefill: bool,
    pub mix_prefill_decode: bool,
    pub preemption: bool,
    pub max_wait: Nanos,
    pub block_size: u32,
    pub kv_capacity_slots: u64,
}

/// Slots a request's cache finally holds in a contiguous (unpaged) cache: its prompt and every output token but
/// the last, which is sampled and never fed back.
pub fn final_kv_tokens(prompt_len: u32, output_len: u32) -> u64 {
    u64::from(prompt_len) + u64::from(output_len) - 1
}
