//! The host side of an engine step, with no GPU: each request's state (its KV blocks, the tokens it has cached and
//! sampled) and the flat inputs a [`StepPlan`] becomes (token ids, positions, KV slots, block tables, the rows that
//! sample).
//!
//! Row order in a step: every decode first (row `s` is decode `s`), then the prefill chunks in plan order. Decode
//! attention then reads rows `0..decodes` of q from the start of the buffer, and prefill attention finds its chunks
//! through `cu_seqlens_q`, which simply starts at the number of decodes.
//!
//! Padding (a static batch pads prompts to the longest) sits at the end of its chunk: those rows are computed, never
//! written to the KV cache (slot -1) and never sampled. A request's cache therefore holds its real tokens only, and
//! its later decodes attend to those: the static scheduler plans each decode with its own real context, which the
//! engine checks (`context == cached + 1`).

use std::collections::HashMap;

use crate::gpu::mix64;
use crate::sched::{BlockId, KvBlockManager, ReqId, StepPlan};

/// The prompt token at `position` of request `id`: a seeded hash, uniform over the vocabulary. Prompts are synthetic
/// (only their lengths come from the workload); the same (seed, id, position) always gives the same token, so a
/// preempted request recomputes exactly the prompt it had.
pub fn prompt_token(seed: u64, id: ReqId, position: u32, vocab: u32) -> u32 {
    let key = (u64::from(id) << 32) | u64::from(position);
    (mix64(seed ^ mix64(key)) % u64::from(vocab.max(1))) as u32
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StepError {
    #[error("request {id} is in the plan but was never registered with the engine")]
    Unknown { id: ReqId },
    #[error("request {id}: {detail}")]
    Inconsistent { id: ReqId, detail: String },
    #[error(
        "the KV cache is exhausted: the step needs {needed} more blocks of {block_size} tokens, {free} are free \
         (the scheduler was given more KV capacity than the engine has)"
    )]
    OutOfBlocks { needed: u64, free: u32, block_size: u32 },
    #[error("request {id} is registered twice")]
    Duplicate { id: ReqId },
}

/// What the engine keeps per request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeqState {
    pub prompt_len: u32,
    /// The prompt's tokens when given ([`Sequences::register_prompt`]); synthetic ([`prompt_token`]) otherwise.
    pub prompt: Option<Vec<u32>>,
    /// Tokens in the KV cache (positions `0..cached`); padding is never cached.
    pub cached: u32,
    pub blocks: Vec<BlockId>,
    /// Every token sampled for this request, in order (also those of a finished sequence kept in a static batch,
    /// which are computed and discarded): token `prompt_len + i` of the sequence is `sampled[i]`.
    pub sampled: Vec<u32>,
    /// The scheduler said the request has its last token; it is dropped when its KV is released.
    pub finished: bool,
}

/// The flat inputs of one step (see the module docs for the row order).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StepInputs {
    /// Per row: the input token id, its position in its sequence, its KV slot (-1: padding, not written).
    pub tokens: Vec<i32>,
    pub positions: Vec<i32>,
    pub slots: Vec<i32>,
    /// Per decode: tokens attention covers (the new one included).
    pub decode_context: Vec<i32>,
    /// `[decodes, decode_blocks_per_seq]`, -1 past a sequence's blocks.
    pub decode_tables: Vec<i32>,
    pub decode_blocks_per_seq: usize,
    pub max_decode_context: usize,
    /// `[chunks + 1]`: chunk `s` is rows `prefill_cu[s]..prefill_cu[s + 1]`; starts at the number of decodes.
    pub prefill_cu: Vec<i32>,
    /// Per chunk: its offset plus its length, padding included (the kernel places the chunk's rows at the end of
    /// this context; padding positions have no cached token, so nothing attends to them).
    pub prefill_context: Vec<i32>,
    /// `[chunks, prefill_blocks_per_seq]`, -1 past a sequence's blocks.
    pub prefill_tables: Vec<i32>,
    pub prefill_blocks_per_seq: usize,
    pub max_chunk: usize,
    /// Rows that go through lm_head and argmax, and whose request each row's token belongs to.
    pub sample_rows: Vec<i32>,
    pub sample_ids: Vec<ReqId>,
}

impl StepInputs {
    pub fn rows(&self) -> usize {
        self.tokens.len()
    }

    pub fn decodes(&self) -> usize {
        self.decode_context.len()
    }

    pub fn chunks(&self) -> usize {
        self.prefill_context.len()
    }

    /// Rows of prefill chunks (padding included).
    pub fn prefill_rows(&self) -> usize {
        self.rows() - self.decodes()
    }
}

/// Every request the engine knows, and the KV block pool they share.
#[derive(Clone, Debug)]
pub struct Sequences {
    pool: KvBlockManager,
    seqs: HashMap<ReqId, SeqState>,
    vocab: u32,
    prompt_seed: u64,
}

impl Sequences {
    pub fn new(block_size: u32, num_blocks: u32, vocab: u32, prompt_seed: u64) -> Self {
        Self {
            pool: KvBlockManager::new(block_size, num_blocks),
            seqs: HashMap::new(),
            vocab,
            prompt_seed,
        }
    }

    pub fn block_size(&self) -> u32 {
        self.pool.block_size()
    }

    pub fn total_blocks(&self) -> u32 {
        self.pool.total_blocks()
    }

    pub fn free_blocks(&self) -> u32 {
        self.pool.free_blocks()
    }

    pub fn get(&self, id: ReqId) -> Option<&SeqState> {
        self.seqs.get(&id)
    }

    pub fn len(&self) -> usize {
        self.seqs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seqs.is_empty()
    }

    /// Makes request `id` known, with a prompt of `prompt_len` synthetic tokens.
    pub fn register(&mut self, id: ReqId, prompt_len: u32) -> Result<(), StepError> {
        self.insert(id, prompt_len, None)
    }

    /// Makes request `id` known with the given prompt tokens (a reference's prompt, in tests).
    pub fn register_prompt(&mut self, id: ReqId, prompt: Vec<u32>) -> Result<(), StepError> {
        if let Some(&t) = prompt.iter().find(|&&t| t >= self.vocab) {
            return Err(StepError::Inconsistent {
                id,
                detail: format!("prompt token {t} is not below the vocabulary size {}", self.vocab),
            });
        }
        let len = u32::try_from(prompt.len()).expect("a prompt shorter than 2^32 tokens");
        self.insert(id, len, Some(prompt))
    }

    fn insert(&mut self, id: ReqId, prompt_len: u32, prompt: Option<Vec<u32>>) -> Result<(), StepError> {
        if self.seqs.contains_key(&id) {
            return Err(StepError::Duplicate { id });
        }
        self.seqs.insert(
            id,
            SeqState {
                prompt_len,
                prompt,
                cached: 0,
                blocks: Vec::new(),
                sampled: Vec::new(),
                finished: false,
            },
        );
        Ok(())
    }

    pub fn is_registered(&self, id: ReqId) -> bool {
        self.seqs.contains_key(&id)
    }

    /// Frees `id`'s KV blocks (preemption: it will be recomputed from its prompt and sampled tokens, which are
    /// kept). A no-op for an unknown request or one without blocks.
    pub fn release_kv(&mut self, id: ReqId) {
        if let Some(s) = self.seqs.get_mut(&id) {
            self.pool.release(&mut s.blocks);
            s.cached = 0;
        }
    }

    /// Forgets `id` entirely, its KV blocks returned.
    pub fn remove(&mut self, id: ReqId) -> Option<SeqState> {
        let mut s = self.seqs.remove(&id)?;
        self.pool.release(&mut s.blocks);
        Some(s)
    }

    /// The scheduler says `id` has produced its last token: drop it once its KV is released (a static batch keeps
    /// decoding it until the whole batch ends).
    pub fn mark_finished(&mut self, id: ReqId) {
        if let Some(s) = self.seqs.get_mut(&id) {
            s.finished = true;
        }
    }

    /// The scheduler released `id`'s KV after a step: a finished request is dropped. A preempted one is left alone:
    /// its blocks were freed when the plan naming it in `preempted` was prepared, and the scheduler may already
    /// have re-admitted it in that very plan (its new blocks must stay).
    pub fn on_kv_released(&mut self, id: ReqId) {
        if self.seqs.get(&id).is_some_and(|s| s.finished) {
            self.remove(id);
        }
    }

    /// The token at `position` of `id`'s sequence: its synthetic prompt, then what was sampled for it.
    fn token_at(&self, id: ReqId, s: &SeqState, position: u32) -> Result<u32, StepError> {
        if position < s.prompt_len {
            return Ok(match &s.prompt {
                Some(p) => p[position as usize],
                None => prompt_token(self.prompt_seed, id, position, self.vocab),
            });
        }
        s.sampled
            .get((position - s.prompt_len) as usize)
            .copied()
            .ok_or_else(|| StepError::Inconsistent {
                id,
                detail: format!(
                    "position {position} needs sampled token {} but only {} were sampled",
                    position - s.prompt_len,
                    s.sampled.len()
                ),
            })
    }

    fn state(&self, id: ReqId) -> Result<&SeqState, StepError> {
        self.seqs.get(&id).ok_or(StepError::Unknown { id })
    }

    /// Checks `plan` against each request's state, frees the KV of the requests it preempted, takes the blocks the
    /// step writes and returns its flat inputs. All checks come before any block is taken, so an inconsistent plan
    /// leaves the state as it was (but for the preemptions).
    pub fn prepare(&mut self, plan: &StepPlan) -> Result<StepInputs, StepError> {
        for &id in &plan.preempted {
            self.release_kv(id);
        }
        // A chunk at offset 0 of a sequence with cached tokens is a recompute whose preemption this plan does not
        // name (one planned while a step came out empty): start it afresh.
        for c in &plan.prefills {
            if c.offset == 0 && self.seqs.get(&c.id).is_some_and(|s| s.cached > 0) {
                self.release_kv(c.id);
            }
        }
        let bs = self.block_size();
        let blocks_for = |tokens: u32| u64::from(tokens).div_ceil(u64::from(bs));

        // Pass 1: check, and count the blocks to take.
        let mut needed = 0u64;
        let mut seen = std::collections::HashSet::new();
        let ids = plan
            .decodes
            .iter()
            .map(|d| d.id)
            .chain(plan.prefills.iter().map(|c| c.id));
        for id in ids {
            if !seen.insert(id) {
                return Err(StepError::Inconsistent {
                    id,
                    detail: "appears twice in one step".into(),
                });
            }
        }
        for d in &plan.decodes {
            let s = self.state(d.id)?;
            if d.context != s.cached + 1 {
                return Err(StepError::Inconsistent {
                    id: d.id,
                    detail: format!(
                        "decode context {} but the engine has {} cached tokens (+1 new)",
                        d.context, s.cached
                    ),
                });
            }
            if s.cached < s.prompt_len {
                return Err(StepError::Inconsistent {
                    id: d.id,
                    detail: format!("decode before its prompt is cached ({} of {})", s.cached, s.prompt_len),
                });
            }
            self.token_at(d.id, s, s.cached)?;
            needed += blocks_for(s.cached + 1).saturating_sub(s.blocks.len() as u64);
        }
        for c in &plan.prefills {
            let s = self.state(c.id)?;
            let bad = |detail: String| StepError::Inconsistent { id: c.id, detail };
            if c.padding >= c.len {
                return Err(bad(format!("chunk of {} tokens is {} padding", c.len, c.padding)));
            }
            if c.offset != s.cached {
                return Err(bad(format!(
                    "prefill chunk at offset {} but the engine has {} cached tokens",
                    c.offset, s.cached
                )));
            }
            if c.padding > 0 && c.offset > 0 {
                return Err(bad("a padded chunk must start the sequence".into()));
            }
            let real = c.len - c.padding;
            let end = c.offset + real;
            if end > s.prompt_len + s.sampled.len() as u32 {
                return Err(bad(format!(
                    "prefill up to position {end} but the sequence has {} prompt and {} sampled tokens",
                    s.prompt_len,
                    s.sampled.len()
                )));
            }
            // A sampling chunk ends where the sequence's known tokens end: its token is the next one.
            if c.samples && end != s.prompt_len + s.sampled.len() as u32 {
                return Err(bad(format!(
                    "samples after position {end}, but the sequence has {} prompt and {} sampled tokens",
                    s.prompt_len,
                    s.sampled.len()
                )));
            }
            needed += blocks_for(end).saturating_sub(s.blocks.len() as u64);
        }
        if needed > u64::from(self.pool.free_blocks()) {
            return Err(StepError::OutOfBlocks {
                needed,
                free: self.pool.free_blocks(),
                block_size: bs,
            });
        }

        // Pass 2: take blocks, build the rows.
        let mut x = StepInputs::default();
        let slot = |blocks: &[BlockId], pos: u32| -> i32 { (blocks[(pos / bs) as usize] * bs + pos % bs) as i32 };
        for d in &plan.decodes {
            let s = self.seqs.get_mut(&d.id).expect("checked");
            let grown = self.pool.grow(&mut s.blocks, u64::from(s.cached) + 1);
            debug_assert!(grown, "blocks counted above");
            let pos = s.cached;
            s.cached += 1;
            let s = &self.seqs[&d.id];
            x.tokens.push(self.token_at(d.id, s, pos)? as i32);
            x.positions.push(pos as i32);
            x.slots.push(slot(&s.blocks, pos));
            x.decode_context.push(s.cached as i32);
            x.sample_rows.push((x.tokens.len() - 1) as i32);
            x.sample_ids.push(d.id);
        }
        x.prefill_cu.push(x.tokens.len() as i32);
        let mut chunk_samples = Vec::new();
        for c in &plan.prefills {
            let s = self.seqs.get_mut(&c.id).expect("checked");
            let real = c.len - c.padding;
            let grown = self.pool.grow(&mut s.blocks, u64::from(c.offset + real));
            debug_assert!(grown, "blocks counted above");
            s.cached = c.offset + real;
            let s = &self.seqs[&c.id];
            for i in 0..c.len {
                let pos = c.offset + i;
                if i < real {
                    x.tokens.push(self.token_at(c.id, s, pos)? as i32);
                    x.slots.push(slot(&s.blocks, pos));
                } else {
                    x.tokens.push(0);
                    x.slots.push(-1);
                }
                x.positions.push(pos as i32);
            }
            let start = *x.prefill_cu.last().expect("pushed above");
            x.prefill_cu.push(x.tokens.len() as i32);
            x.prefill_context.push((c.offset + c.len) as i32);
            x.max_chunk = x.max_chunk.max(c.len as usize);
            if c.samples {
                chunk_samples.push((start + real as i32 - 1, c.id));
            }
        }
        // Sampled rows: decodes first (already pushed), then the chunks that sample, in plan order.
        for (row, id) in chunk_samples {
            x.sample_rows.push(row);
            x.sample_ids.push(id);
        }
        let table = |ids: &mut dyn Iterator<Item = ReqId>, width: usize, out: &mut Vec<i32>| {
            for id in ids {
                let blocks = &self.seqs[&id].blocks;
                out.extend(blocks.iter().map(|&b| b as i32).take(width));
                out.extend(std::iter::repeat_n(-1, width.saturating_sub(blocks.len())));
            }
        };
        x.max_decode_context = x.decode_context.iter().copied().max().unwrap_or(0) as usize;
        x.decode_blocks_per_seq = (x.max_decode_context.div_ceil(bs as usize)).max(1);
        let mut decode_tables = Vec::new();
        table(
            &mut plan.decodes.iter().map(|d| d.id),
            x.decode_blocks_per_seq,
            &mut decode_tables,
        );
        x.decode_tables = decode_tables;
        let max_prefill_ctx = x.prefill_context.iter().copied().max().unwrap_or(0) as usize;
        x.prefill_blocks_per_seq = max_prefill_ctx.div_ceil(bs as usize).max(1);
        let mut prefill_tables = Vec::new();
        table(
            &mut plan.prefills.iter().map(|c| c.id),
            x.prefill_blocks_per_seq,
            &mut prefill_tables,
        );
        x.prefill_tables = prefill_tables;
        Ok(x)
    }

    /// Records the tokens the step sampled (`ids[i]` for `inputs.sample_ids[i]`).
    pub fn commit_samples(&mut self, sample_ids: &[ReqId], tokens: &[u32]) {
        for (id, &t) in sample_ids.iter().zip(tokens) {
            if let Some(s) = self.seqs.get_mut(id) {
                s.sampled.push(t);
            }
        }
    }

    /// Replaces the last token sampled for `id` (teacher forcing: a test feeds the next decode a reference's token
    /// rather than the engine's own). False when `id` is unknown or has sampled nothing.
    pub fn set_last_sampled(&mut self, id: ReqId, token: u32) -> bool {
        match self.seqs.get_mut(&id).and_then(|s| s.sampled.last_mut()) {
            Some(t) if token < self.vocab => {
                *t = token;
                true
            }
            _ => false,
        }
    }

    /// Every block either free or owned by exactly one request (for tests).
    pub fn check_blocks(&self) -> Result<(), String> {
        self.pool
            .check_partition(self.seqs.values().map(|s| s.blocks.as_slice()))
    }
}

/// Batch sizes decode graphs are captured for; a step's decodes are padded up to the next one. Defined with the
/// workspace they size (`model::workspace`), which the simulator computes too.
pub use crate::model::GRAPH_BUCKETS;

/// The bucket a decode-only step of `decodes` rows runs in (`None`: more than the largest, or than `limit`).
pub fn graph_bucket(decodes: usize, limit: usize) -> Option<usize> {
    GRAPH_BUCKETS
        .iter()
        .copied()
        .find(|&b| b >= decodes)
        .filter(|&b| b <= limit)
}

/// The decode-only step `x` laid out for the graph of `bucket` rows with block tables `width` wide, whose decode
/// attention covers up to `width * block_size` tokens: every argument a kernel gets from the host is then the
/// bucket's own, whatever the step. Rows past the real decodes are padding — token 0 at position 0, no KV slot,
/// a context of one token over no block (attention gives zero) — and sample too, so the sampled rows are always
/// `bucket`; only the first `x.sample_ids.len()` are read back.
pub fn padded_for_graph(x: &StepInputs, bucket: usize, width: usize, block_size: usize) -> StepInputs {
    let n = x.decodes();
    assert!(
        x.chunks() == 0 && n <= bucket && x.decode_blocks_per_seq <= width && x.sample_rows.len() <= bucket,
        "a decode-only step that fits the bucket"
    );
    let mut p = x.clone();
    p.tokens.resize(bucket, 0);
    p.positions.resize(bucket, 0);
    p.slots.resize(bucket, -1);
    p.decode_context.resize(bucket, 1);
    p.decode_tables = vec![-1; bucket * width];
    for s in 0..n {
        let row = &x.decode_tables[s * x.decode_blocks_per_seq..][..x.decode_blocks_per_seq];
        p.decode_tables[s * width..][..row.len()].copy_from_slice(row);
    }
    p.decode_blocks_per_seq = width;
    p.max_decode_context = width * block_size;
    p.sample_rows.extend((n..bucket).map(|r| r as i32));
    p.sample_rows.resize(bucket, 0);
    p
}

/// A decode-only step of `bucket` padding rows: what a graph is captured from before any request needs it.
pub fn padding_step(bucket: usize, width: usize, block_size: usize) -> StepInputs {
    padded_for_graph(
        &StepInputs {
            prefill_cu: vec![0],
            ..StepInputs::default()
        },
        bucket,
        width,
        block_size,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sched::{DecodeSeq, PrefillChunk};

    const SEED: u64 = 5;
    const VOCAB: u32 = 1000;

    fn chunk(id: ReqId, offset: u32, len: u32, padding: u32, samples: bool) -> PrefillChunk {
        PrefillChunk {
            id,
            offset,
            len,
            padding,
            samples,
        }
    }

    fn decode(id: ReqId, context: u32) -> DecodeSeq {
        DecodeSeq::emitting(id, context)
    }

    fn plan(prefills: Vec<PrefillChunk>, decodes: Vec<DecodeSeq>) -> StepPlan {
        StepPlan::new(prefills, decodes)
    }

    fn prompt(id: ReqId, range: std::ops::Range<u32>) -> Vec<i32> {
        range.map(|p| prompt_token(SEED, id, p, VOCAB) as i32).collect()
    }

    #[test]
    fn prompt_tokens_are_deterministic_in_range_and_vary() {
        let a: Vec<u32> = (0..500).map(|p| prompt_token(1, 3, p, 151_936)).collect();
        assert_eq!(a, (0..500).map(|p| prompt_token(1, 3, p, 151_936)).collect::<Vec<_>>());
        assert!(a.iter().all(|&t| t < 151_936));
        let distinct: std::collections::HashSet<_> = a.iter().collect();
        assert!(distinct.len() > 490, "{} distinct of 500", distinct.len());
        assert_ne!(prompt_token(1, 3, 7, 1000), prompt_token(1, 4, 7, 1000));
        assert_ne!(
            (0..8).map(|p| prompt_token(1, 3, p, 1000)).collect::<Vec<_>>(),
            (0..8).map(|p| prompt_token(2, 3, p, 1000)).collect::<Vec<_>>()
        );
        assert!((0..100).all(|p| prompt_token(9, 1, p, 7) < 7));
    }

    #[test]
    fn mixed_steps_gather_decodes_first_then_chunks() {
        let mut s = Sequences::new(4, 16, VOCAB, SEED);
        s.register(0, 5).unwrap();
        s.register(1, 7).unwrap();
        // Step 1: A's whole prompt (samples), B's first chunk of 4 (does not sample).
        let x = s
            .prepare(&plan(vec![chunk(0, 0, 5, 0, true), chunk(1, 0, 4, 0, false)], vec![]))
            .unwrap();
        let mut want_tokens = prompt(0, 0..5);
        want_tokens.extend(prompt(1, 0..4));
        assert_eq!(x.tokens, want_tokens);
        assert_eq!(x.positions, vec![0, 1, 2, 3, 4, 0, 1, 2, 3]);
        // Blocks are handed out 0, 1, 2, …: A gets 0 and 1, B gets 2.
        assert_eq!(x.slots, vec![0, 1, 2, 3, 4, 8, 9, 10, 11]);
        assert_eq!(x.prefill_cu, vec![0, 5, 9]);
        assert_eq!(x.prefill_context, vec![5, 4]);
        assert_eq!((x.prefill_blocks_per_seq, x.max_chunk), (2, 5));
        assert_eq!(x.prefill_tables, vec![0, 1, 2, -1]);
        assert_eq!((x.sample_rows.clone(), x.sample_ids.clone()), (vec![4], vec![0]));
        assert_eq!(x.decodes(), 0);
        s.commit_samples(&x.sample_ids, &[77]);

        // Step 2: A decodes its sampled token; B's last chunk (offset 4, 3 tokens) samples.
        let x = s
            .prepare(&plan(vec![chunk(1, 4, 3, 0, true)], vec![decode(0, 6)]))
            .unwrap();
        let mut want_tokens = vec![77];
        want_tokens.extend(prompt(1, 4..7));
        assert_eq!(x.tokens, want_tokens);
        assert_eq!(x.positions, vec![5, 4, 5, 6]);
        assert_eq!(
            x.slots,
            vec![5, 12, 13, 14],
            "A's position 5 is block 1 offset 1; B grows into block 3"
        );
        assert_eq!(x.decode_context, vec![6]);
        assert_eq!((x.decode_blocks_per_seq, x.max_decode_context), (2, 6));
        assert_eq!(x.decode_tables, vec![0, 1]);
        assert_eq!(x.prefill_cu, vec![1, 4]);
        assert_eq!(x.prefill_context, vec![7]);
        assert_eq!(x.prefill_tables, vec![2, 3]);
        assert_eq!(x.sample_rows, vec![0, 3]);
        assert_eq!(x.sample_ids, vec![0, 1]);
        assert_eq!(x.prefill_rows(), 3);
        s.commit_samples(&x.sample_ids, &[78, 900]);
        assert_eq!(s.get(0).unwrap().sampled, vec![77, 78]);
        assert_eq!(s.get(1).unwrap().cached, 7);
        s.check_blocks().unwrap();
    }

    #[test]
    fn static_padding_is_computed_not_cached_and_not_sampled() {
        let mut s = Sequences::new(4, 16, VOCAB, SEED);
        s.register(0, 4).unwrap();
        s.register(1, 6).unwrap();
        let x = s
            .prepare(&plan(vec![chunk(0, 0, 6, 2, true), chunk(1, 0, 6, 0, true)], vec![]))
            .unwrap();
        assert_eq!(x.rows(), 12);
        assert_eq!(&x.tokens[..4], prompt(0, 0..4).as_slice());
        assert_eq!(&x.slots[..6], &[0, 1, 2, 3, -1, -1]);
        assert_eq!(&x.positions[..6], &[0, 1, 2, 3, 4, 5]);
        assert_eq!(x.prefill_context, vec![6, 6]);
        assert_eq!(
            x.prefill_tables,
            vec![0, -1, 1, 2],
            "A holds one block: its padding is not cached"
        );
        assert_eq!(x.sample_rows, vec![3, 11]);
        s.commit_samples(&x.sample_ids, &[10, 11]);
        assert_eq!(s.get(0).unwrap().cached, 4);

        // The static batch decodes each over its own real tokens (5 and 7), the padding never among them.
        let x = s.prepare(&plan(vec![], vec![decode(0, 5), decode(1, 7)])).unwrap();
        assert_eq!(x.tokens, vec![10, 11]);
        assert_eq!(x.positions, vec![4, 6]);
        assert_eq!(x.decode_context, vec![5, 7]);
        assert_eq!(
            x.slots,
            vec![4 * 3, 4 * 2 + 2],
            "A grows into a new block (3), B into its second"
        );
        assert_eq!(x.decode_tables, vec![0, 3, 1, 2]);
        // A context that disagrees with the engine's state is an error, not a silent guess.
        s.commit_samples(&x.sample_ids, &[1, 2]);
        let err = s.prepare(&plan(vec![], vec![decode(0, 8)])).unwrap_err();
        assert!(err.to_string().contains("decode context 8"), "{err}");
    }

    #[test]
    fn preempted_request_is_recomputed_from_its_prompt_and_samples() {
        let mut s = Sequences::new(2, 8, VOCAB, SEED);
        s.register(0, 3).unwrap();
        let x = s.prepare(&plan(vec![chunk(0, 0, 3, 0, true)], vec![])).unwrap();
        s.commit_samples(&x.sample_ids, &[40]);
        let x = s.prepare(&plan(vec![], vec![decode(0, 4)])).unwrap();
        s.commit_samples(&x.sample_ids, &[41]);
        assert_eq!(s.free_blocks(), 6);

        let mut p = plan(vec![chunk(0, 0, 5, 0, true)], vec![]);
        p.preempted.push(0);
        let x = s.prepare(&p).unwrap();
        let mut want = prompt(0, 0..3);
        want.extend([40, 41]);
        assert_eq!(x.tokens, want);
        assert_eq!(x.positions, vec![0, 1, 2, 3, 4]);
        assert_eq!(s.get(0).unwrap().blocks.len(), 3);
        s.commit_samples(&x.sample_ids, &[42]);
        let x = s.prepare(&plan(vec![], vec![decode(0, 6)])).unwrap();
        assert_eq!(x.tokens, vec![42]);
        s.check_blocks().unwrap();
    }

    #[test]
    fn finished_requests_leave_when_their_kv_is_released() {
        let mut s = Sequences::new(4, 8, VOCAB, SEED);
        for id in 0..2 {
            s.register(id, 4).unwrap();
        }
        let x = s
            .prepare(&plan(vec![chunk(0, 0, 4, 0, true), chunk(1, 0, 4, 0, true)], vec![]))
            .unwrap();
        s.commit_samples(&x.sample_ids, &[1, 2]);
        // A static batch: 0 finished but stays; its KV goes only with the batch.
        s.mark_finished(0);
        assert!(s.is_registered(0));
        let mut p = plan(vec![], vec![decode(0, 5), decode(1, 5)]);
        p.decodes[0].emits = false;
        s.prepare(&p).unwrap();
        s.on_kv_released(0);
        assert!(!s.is_registered(0), "finished and released: gone");
        assert_eq!(s.free_blocks(), 6);

        // Preempted while the step was planned and re-admitted in the same plan: the release the scheduler reports
        // after the step must not take the blocks the recompute just got.
        let mut p = plan(vec![chunk(1, 0, 5, 0, true)], vec![]);
        p.preempted.push(1);
        s.prepare(&p).unwrap();
        s.on_kv_released(1);
        let one = s.get(1).unwrap();
        assert_eq!((one.cached, one.blocks.len()), (5, 2));
        s.check_blocks().unwrap();

        // A recompute whose preemption the plan does not name starts afresh too.
        s.commit_samples(&[1], &[3]);
        let x = s.prepare(&plan(vec![chunk(1, 0, 6, 0, true)], vec![])).unwrap();
        assert_eq!(x.positions, (0..6).collect::<Vec<_>>());
        assert_eq!(s.get(1).unwrap().blocks.len(), 2);
        assert_eq!(s.free_blocks(), 6);
        s.check_blocks().unwrap();
    }

    #[test]
    fn given_prompts_and_teacher_forcing() {
        let mut s = Sequences::new(4, 8, VOCAB, SEED);
        s.register_prompt(3, vec![5, 6, 7]).unwrap();
        assert!(s.register_prompt(4, vec![VOCAB]).is_err());
        let x = s.prepare(&plan(vec![chunk(3, 0, 3, 0, true)], vec![])).unwrap();
        assert_eq!(x.tokens, vec![5, 6, 7]);
        s.commit_samples(&x.sample_ids, &[9]);
        assert!(s.set_last_sampled(3, 11));
        assert!(!s.set_last_sampled(3, VOCAB));
        assert!(!s.set_last_sampled(8, 1));
        let x = s.prepare(&plan(vec![], vec![decode(3, 4)])).unwrap();
        assert_eq!(x.tokens, vec![11]);
    }

    #[test]
    fn bad_plans_are_refused_before_taking_blocks() {
        let mut s = Sequences::new(4, 2, VOCAB, SEED);
        s.register(0, 6).unwrap();
        assert_eq!(s.register(0, 6).unwrap_err(), StepError::Duplicate { id: 0 });
        let err = s.prepare(&plan(vec![chunk(9, 0, 1, 0, true)], vec![])).unwrap_err();
        assert_eq!(err, StepError::Unknown { id: 9 });
        let err = s.prepare(&plan(vec![chunk(0, 2, 4, 0, true)], vec![])).unwrap_err();
        assert!(err.to_string().contains("offset 2"), "{err}");
        let err = s.prepare(&plan(vec![chunk(0, 0, 8, 0, true)], vec![])).unwrap_err();
        assert!(err.to_string().contains("prefill up to position 8"), "{err}");
        let err = s.prepare(&plan(vec![], vec![decode(0, 1)])).unwrap_err();
        assert!(err.to_string().contains("decode before its prompt"), "{err}");
        let err = s.prepare(&plan(vec![chunk(0, 0, 5, 0, true)], vec![])).unwrap_err();
        assert!(err.to_string().contains("samples after position 5"), "{err}");
        s.register(1, 4).unwrap();
        let err = s
            .prepare(&plan(vec![chunk(0, 0, 6, 0, true), chunk(1, 0, 4, 0, true)], vec![]))
            .unwrap_err();
        assert_eq!(
            err,
            StepError::OutOfBlocks {
                needed: 3,
                free: 2,
                block_size: 4
            }
        );
        assert_eq!(s.free_blocks(), 2, "nothing taken");
        let err = s
            .prepare(&plan(vec![chunk(1, 0, 4, 0, true), chunk(1, 0, 4, 0, true)], vec![]))
            .unwrap_err();
        assert!(err.to_string().contains("twice"), "{err}");
    }

    #[test]
    fn graph_padding_keeps_the_real_rows_and_pads_the_rest_inert() {
        let x = StepInputs {
            tokens: vec![5, 6],
            positions: vec![9, 3],
            slots: vec![40, 7],
            decode_context: vec![10, 4],
            decode_tables: vec![2, -1, 0, -1],
            decode_blocks_per_seq: 2,
            max_decode_context: 10,
            prefill_cu: vec![2],
            sample_rows: vec![0, 1],
            sample_ids: vec![11, 12],
            ..StepInputs::default()
        };
        assert_eq!(graph_bucket(2, 256), Some(2));
        assert_eq!(graph_bucket(3, 256), Some(4));
        assert_eq!(graph_bucket(200, 256), Some(256));
        assert_eq!(graph_bucket(200, 128), None);
        assert_eq!(graph_bucket(300, 1000), None);
        let p = padded_for_graph(&x, 4, 3, 16);
        assert_eq!(p.tokens, vec![5, 6, 0, 0]);
        assert_eq!(p.positions, vec![9, 3, 0, 0]);
        assert_eq!(p.slots, vec![40, 7, -1, -1]);
        assert_eq!(p.decode_context, vec![10, 4, 1, 1]);
        assert_eq!(p.decode_tables, vec![2, -1, -1, 0, -1, -1, -1, -1, -1, -1, -1, -1]);
        assert_eq!((p.decode_blocks_per_seq, p.max_decode_context), (3, 48));
        assert_eq!(p.sample_rows, vec![0, 1, 2, 3]);
        assert_eq!(p.sample_ids, vec![11, 12]);
        let q = padding_step(8, 3, 16);
        assert_eq!((q.rows(), q.decodes(), q.chunks(), q.sample_rows.len()), (8, 8, 0, 8));
        assert!(q.slots.iter().all(|&s| s == -1) && q.decode_tables.iter().all(|&b| b == -1));
    }
}
