//! The engine's workspace — its GPU memory beside the weights and the KV cache — computed from what the engine is
//! sized for, without a GPU. The engine allocates its buffers from [`ActivationBuffers`] and reports
//! [`EngineWorkspace`] as what it computed; the simulator predicts a run's workspace with the same function, so the
//! two cannot drift apart.
//!
//! Computed here (exact):
//! - the activation and input buffers, allocated once, up front, for the largest step ([`ActivationBuffers`]);
//! - decode attention's split-context workspace ([`DecodeAttentionWorkspace`]), allocated by the first decode step
//!   — at start-up, when the engine captures its decode graphs.
//!
//! The allocator's rounding is computed too ([`mapped_workspace`]): the engine allocates through CUDA's
//! stream-ordered allocator, which packs allocations one after another into chunks of
//! [`ALLOCATION_GRANULE_BYTES`] that it maps as they are needed, so the weights and the workspace occupy whole
//! chunks.
//!
//! Not computable, measured instead (`calibrate` stores it in the profile as the engine steps'
//! `runtime_overhead_bytes`): whatever else the engine holds at its peak beyond the computed buffers (CUDA graph
//! memory, small allocations of the driver).
//!
//! Not workspace at all, on either side: what the process keeps on the GPU across engines — the CUDA context, kernel
//! code loaded on first use, cuBLAS's handle and workspace, the GEMM's split-K scratch (it belongs to the GPU
//! handle and only grows). An engine's workspace is measured as what it held at its peak beyond weights and KV
//! cache, against the memory in use once it is gone, so these never count, whether or not the engine was the first
//! to pay for them.

use super::{FP16_BYTES, ModelSpec};
use serde::Serialize;

/// Bytes of an i32 (token ids, positions, block tables).
const I32_BYTES: u64 = 4;
/// Bytes of an f32 (decode attention's partial results).
const F32_BYTES: u64 = 4;

/// The largest context partition decode attention gives one thread block (the tensor-core kernel's
/// `DECODE_PARTITION_TC`, which the engine runs).
pub const DECODE_PARTITION_MAX: u64 = 1024;
/// Decode attention halves its partition down to this while the launch has fewer blocks than the GPU has SMs.
pub const DECODE_PARTITION_MIN: u64 = 256;
/// Contexts up to this many tokens are never split (one partition, no merge): on an H100 a merge cost more than the
/// SMs a single partition leaves idle (`bench-kernels` sweeps it).
pub const DECODE_UNSPLIT_MAX: u64 = 512;

/// Batch sizes decode graphs are captured for; a step's decodes are padded up to the next one (`engine::step`).
pub const GRAPH_BUCKETS: [usize; 13] = [1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 192, 256];

/// The most rows the engine pads a cuBLAS GEMM to ([`cublas_rows`]); beyond, cuBLAS runs on the rows asked.
pub const CUBLAS_PADDED_MAX: u64 = 8192;

/// The rows the engine runs a cuBLAS GEMM on where a calibration profile timed cuBLAS at these row counts
/// ([`cublas_grid`]; `GemmTable::cublas_padded`): `rows` rounded up to 1, 2, 4 or 8, to a multiple of 16 up to
/// 1,024 and of 64 up to [`CUBLAS_PADDED_MAX`] (at most 15 rows more up to 1,024, 63 beyond: 6.2% of 1,025),
/// unchanged beyond. cuBLAS picks its kernel by the shape, and between two row counts it was timed at it may pick
/// one far faster or slower than the line through both (on an H100 the line read qwen2.5-1.5b's gate/up at 333
/// rows 42.5% above what it took): run only at row counts it was timed at, it costs what was measured
/// (`reports/padded-cublas-h100/`: up to 1,024 rows within 0.4–0.8% at the median). The extra rows read
/// whatever the buffers hold and their output is never read; the buffers are sized for them
/// ([`ActivationBuffers`]).
pub fn cublas_rows(rows: u64) -> u64 {
    match rows {
        0..=2 => rows.max(1),
        3..=4 => 4,
        5..=8 => 8,
        9..=1024 => rows.div_ceil(16) * 16,
        1025..=CUBLAS_PADDED_MAX => rows.div_ceil(64) * 64,
        _ => rows,
    }
}

/// Every row count [`cublas_rows`] pads to, up to `max` (at most [`CUBLAS_PADDED_MAX`]): where calibration times
/// cuBLAS.
pub fn cublas_grid(max: u32) -> Vec<u32> {
    let max = u64::from(max).min(CUBLAS_PADDED_MAX);
    let mut v = Vec::new();
    let mut r = 1;
    while r <= max {
        v.push(r as u32);
        r = cublas_rows(r + 1);
    }
    v
}

/// The context step at which the engine looks for the most partitions a graph bucket can need.
const GRAPH_CONTEXT_STEP: u64 = 128;

/// What a run's workspace adds beyond the computed buffers when no calibration profile measured it
/// (`runtime_overhead_bytes`): an estimate, not a measurement (what batchlab assumed for library workspaces before
/// the engine's memory was measured).
pub const DEFAULT_RUNTIME_OVERHEAD_BYTES: u64 = 64 << 20;

/// The chunk CUDA's stream-ordered allocator (`cuMemAllocAsync` on the device's default pool, which the engine's
/// allocations go through) maps device memory in: it packs allocations one after another into such chunks and maps
/// another when one is full. Seen on an H100 with driver 580.159.04 (CUDA 13.0): used memory moves in steps of
/// 32 MiB, and allocating n bytes in sequence maps n rounded up to 32 MiB (942.3 MiB of weights map 960 MiB; 48 KV
/// buffers of 1.5 GB, 68,672 MiB for 68,664.6 MiB).
pub const ALLOCATION_GRANULE_BYTES: u64 = 32 << 20;

/// SMs assumed for decode attention's partitioning when no profile says what the GPU has (an H100 SXM's). Only the
/// workspace of small decode batches depends on it, by at most a few hundred KiB.
pub const DEFAULT_SM_COUNT: u32 = 132;

/// What an engine is sized for: its buffers hold any step within these without reallocating.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct EngineSizing {
    /// Rows of the largest step (prefill tokens, padding included, plus one per decode).
    pub max_step_tokens: u64,
    /// Sequences one step may hold (decodes, prefill chunks, rows that sample).
    pub max_seqs: u64,
    /// Longest context a sequence reaches, in tokens: sizes the block tables and decode attention's workspace.
    pub max_context: u64,
    /// Tokens per KV block.
    pub block_size: u32,
    /// Decode-only steps replayed as CUDA graphs, one per bucket of [`GRAPH_BUCKETS`] up to min(sequences, rows).
    pub decode_graphs: bool,
}

impl EngineSizing {
    /// Blocks in one row of a block table: enough for `max_context` tokens.
    pub fn table_width(&self) -> u64 {
        self.max_context.max(1).div_ceil(u64::from(self.block_size.max(1)))
    }
}

/// One device buffer: `elements` of `elem_bytes` each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct BufferSize {
    pub elements: u64,
    pub elem_bytes: u64,
}

impl BufferSize {
    fn f16(elements: u64) -> Self {
        Self {
            elements,
            elem_bytes: FP16_BYTES,
        }
    }

    fn i32(elements: u64) -> Self {
        Self {
            elements,
            elem_bytes: I32_BYTES,
        }
    }

    fn f32(elements: u64) -> Self {
        Self {
            elements,
            elem_bytes: F32_BYTES,
        }
    }

    pub fn bytes(&self) -> u64 {
        self.elements * self.elem_bytes
    }
}

/// The engine's activation and input buffers, reused by every step, for `rows` rows (padding included), `seqs`
/// sequences and block tables `table_width` blocks wide (each at least 1). The engine allocates exactly these
/// (`engine::forward`'s `Buffers::new` takes every field), so [`ActivationBuffers::bytes`] is what it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ActivationBuffers {
    pub rows: u64,
    pub seqs: u64,
    pub table_width: u64,
    /// Per row, fp16: the residual stream, the normed input of each sublayer, q/k/v, the rotated q, attention's
    /// output, the O and down projections' output, gate/up, SiLU·up.
    pub residual: BufferSize,
    pub normed: BufferSize,
    pub qkv: BufferSize,
    pub q: BufferSize,
    pub attn: BufferSize,
    pub proj: BufferSize,
    pub gate_up: BufferSize,
    pub act: BufferSize,
    /// Per sequence that samples, fp16: its final hidden row and its logits.
    pub final_rows: BufferSize,
    pub logits: BufferSize,
    /// i32 inputs: per row (token, position, KV slot), per sequence (contexts, block tables, chunk offsets, the
    /// rows that sample, the sampled tokens).
    pub tokens: BufferSize,
    pub positions: BufferSize,
    pub slots: BufferSize,
    pub decode_context: BufferSize,
    pub decode_tables: BufferSize,
    pub prefill_cu: BufferSize,
    pub prefill_context: BufferSize,
    pub prefill_tables: BufferSize,
    pub sample_rows: BufferSize,
    pub sampled: BufferSize,
    /// The split a graphed decode step's attention reads (partitions, tokens each), written before each replay.
    pub decode_split: BufferSize,
}

impl ActivationBuffers {
    pub fn new(spec: &ModelSpec, rows: u64, seqs: u64, table_width: u64) -> Self {
        let (rows, seqs, width) = (rows.max(1), seqs.max(1), table_width.max(1));
        // What a GEMM reads or writes holds the rows a padded cuBLAS GEMM runs on ([`cublas_rows`]).
        let (g, gs) = (cublas_rows(rows), cublas_rows(seqs));
        let (h, i, v) = (
            u64::from(spec.hidden),
            u64::from(spec.intermediate),
            u64::from(spec.vocab),
        );
        let (q, qkv) = (spec.q_dim(), spec.q_dim() + 2 * spec.kv_dim());
        Self {
            rows,
            seqs,
            table_width: width,
            residual: BufferSize::f16(rows * h),
            normed: BufferSize::f16(g * h),
            qkv: BufferSize::f16(g * qkv),
            q: BufferSize::f16(rows * q),
            attn: BufferSize::f16(g * q),
            proj: BufferSize::f16(g * h),
            gate_up: BufferSize::f16(g * 2 * i),
            act: BufferSize::f16(g * i),
            final_rows: BufferSize::f16(gs * h),
            logits: BufferSize::f16(gs * v),
            tokens: BufferSize::i32(rows),
            positions: BufferSize::i32(rows),
            slots: BufferSize::i32(rows),
            decode_context: BufferSize::i32(seqs),
            decode_tables: BufferSize::i32(seqs * width),
            prefill_cu: BufferSize::i32(seqs + 1),
            prefill_context: BufferSize::i32(seqs),
            prefill_tables: BufferSize::i32(seqs * width),
            sample_rows: BufferSize::i32(seqs),
            sampled: BufferSize::i32(seqs),
            decode_split: BufferSize::i32(2),
        }
    }

    /// Every buffer by name, in allocation order.
    pub fn list(&self) -> [(&'static str, BufferSize); 21] {
        // Destructured without `..`: a buffer added to the struct must be added here too.
        let Self {
            rows: _,
            seqs: _,
            table_width: _,
            residual,
            normed,
            qkv,
            q,
            attn,
            proj,
            gate_up,
            act,
            final_rows,
            logits,
            tokens,
            positions,
            slots,
            decode_context,
            decode_tables,
            prefill_cu,
            prefill_context,
            prefill_tables,
            sample_rows,
            sampled,
            decode_split,
        } = *self;
        [
            ("residual", residual),
            ("normed", normed),
            ("qkv", qkv),
            ("q", q),
            ("attn", attn),
            ("proj", proj),
            ("gate_up", gate_up),
            ("act", act),
            ("final_rows", final_rows),
            ("logits", logits),
            ("tokens", tokens),
            ("positions", positions),
            ("slots", slots),
            ("decode_context", decode_context),
            ("decode_tables", decode_tables),
            ("prefill_cu", prefill_cu),
            ("prefill_context", prefill_context),
            ("prefill_tables", prefill_tables),
            ("sample_rows", sample_rows),
            ("sampled", sampled),
            ("decode_split", decode_split),
        ]
    }

    pub fn bytes(&self) -> u64 {
        self.list().iter().map(|(_, b)| b.bytes()).sum()
    }
}

/// The context partition decode attention picks for `num_seqs` sequences of up to `max_context` tokens on a GPU of
/// `sm_count` SMs: [`decode_partition_within`] the tensor-core kernel's largest, [`DECODE_PARTITION_MAX`], which
/// the engine runs (`gpu::Gpu::decode_partition` applies the same rule to either kernel).
pub fn decode_partition(sm_count: u32, kv_heads: u64, num_seqs: u64, max_context: u64) -> u64 {
    decode_partition_within(DECODE_PARTITION_MAX, sm_count, kv_heads, num_seqs, max_context)
}

/// The partition for a kernel whose blocks take at most `largest` context tokens: the largest, halved while the
/// launch (kv heads × sequences × partitions) has fewer blocks than SMs, down to [`DECODE_PARTITION_MIN`] — or,
/// for contexts of at most [`DECODE_UNSPLIT_MAX`] tokens, down to that (one partition).
pub fn decode_partition_within(largest: u64, sm_count: u32, kv_heads: u64, num_seqs: u64, max_context: u64) -> u64 {
    let blocks = |p: u64| kv_heads * num_seqs * max_context.div_ceil(p).max(1);
    let floor = if max_context <= DECODE_UNSPLIT_MAX {
        DECODE_UNSPLIT_MAX
    } else {
        DECODE_PARTITION_MIN
    };
    let mut p = largest;
    while p > floor && blocks(p) < u64::from(sm_count) {
        p /= 2;
    }
    p
}

/// The partitions a decode launch of `num_seqs` sequences over `max_context` tokens uses by itself.
fn partitions(sm_count: u32, kv_heads: u64, num_seqs: u64, max_context: u64) -> u64 {
    let p = decode_partition(sm_count, kv_heads, num_seqs, max_context);
    max_context.div_ceil(p).max(1)
}

/// The most partitions a decode of `num_seqs` sequences can use at any context up to `longest`, looked at every
/// [`GRAPH_CONTEXT_STEP`] tokens (partitions are multiples of it, so a count is largest at such a step).
fn most_partitions(sm_count: u32, kv_heads: u64, num_seqs: u64, longest: u64) -> u64 {
    (1..=longest.div_ceil(GRAPH_CONTEXT_STEP))
        .map(|k| partitions(sm_count, kv_heads, num_seqs, (k * GRAPH_CONTEXT_STEP).min(longest)))
        .max()
        .unwrap_or(1)
}

/// The partitions the decode graph of `bucket` rows is captured for: the most any step it replays can need, over
/// the fewest rows it holds (one more than the bucket below: fewer rows split the context into more partitions) and
/// every context up to `longest`. The engine captures its decode graphs with it (`Engine::bucket_parts`).
pub fn graph_partitions(sm_count: u32, kv_heads: u64, bucket: usize, longest: u64) -> u64 {
    let fewest = GRAPH_BUCKETS.iter().copied().filter(|&b| b < bucket).max().unwrap_or(0) + 1;
    most_partitions(sm_count, kv_heads, fewest as u64, longest)
}

/// Decode attention's workspace: per (sequence, query head, partition) a head's partial output and its (max, sum),
/// f32, and one i32 counter per (sequence, kv head); each buffer a power of two elements (it grows by doubling to
/// the largest launch). The largest launches: each decode graph, captured at start-up for its bucket's rows and
/// [`graph_partitions`]; and decodes launched without a graph (in mixed steps, beyond the largest bucket, or all
/// of them without graphs), at most `seqs` of them at their own partitions. A graph's bucket needs at least as much
/// as any step of no more rows launched alone, so only the rows beyond the largest bucket add launches of their own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct DecodeAttentionWorkspace {
    /// The most (sequence, partition) pairs of one launch.
    pub sequence_partitions: u64,
    pub partial_out: BufferSize,
    pub partial_max_sum: BufferSize,
    pub counters: BufferSize,
}

impl DecodeAttentionWorkspace {
    /// For at most `seqs` decodes a step, contexts of at most `longest` tokens (the block tables' width), graphs
    /// captured per bucket up to `seqs` or none.
    pub fn new(spec: &ModelSpec, seqs: u64, longest: u64, graphs: bool, sm_count: u32) -> Self {
        let (s, kv, qh) = (seqs.max(1), u64::from(spec.kv_heads), u64::from(spec.heads));
        let longest = longest.max(1);
        let buckets: Vec<usize> = if graphs {
            GRAPH_BUCKETS.iter().copied().filter(|&b| b as u64 <= s).collect()
        } else {
            Vec::new()
        };
        let graphed = buckets
            .iter()
            .map(|&b| b as u64 * graph_partitions(sm_count, kv, b, longest));
        let alone_from = buckets.last().map_or(1, |&b| b as u64 + 1);
        let alone = (alone_from..=s).map(|n| n * most_partitions(sm_count, kv, n, longest));
        let pairs = graphed.chain(alone).max().unwrap_or(1);
        Self {
            sequence_partitions: pairs,
            partial_out: BufferSize::f32((pairs * qh * u64::from(spec.head_dim)).next_power_of_two()),
            partial_max_sum: BufferSize::f32((pairs * qh * 2).next_power_of_two()),
            counters: BufferSize::i32((s * kv).next_power_of_two()),
        }
    }

    pub fn bytes(&self) -> u64 {
        self.partial_out.bytes() + self.partial_max_sum.bytes() + self.counters.bytes()
    }
}

/// The workspace the engine allocates for a sizing: its buffers and decode attention's workspace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct EngineWorkspace {
    pub buffers: ActivationBuffers,
    pub decode_attention: DecodeAttentionWorkspace,
}

impl EngineWorkspace {
    pub fn bytes(&self) -> u64 {
        self.buffers.bytes() + self.decode_attention.bytes()
    }
}

/// The memory a workspace of `workspace_bytes` maps beside `weight_bytes` of weights allocated before it, in whole
/// allocator chunks ([`ALLOCATION_GRANULE_BYTES`]): (weights + workspace) rounded up to chunks, less the weights. What
/// the engine holds beyond its weights and KV cache is this, when it starts on chunks of its own (its weights are its
/// first allocation); the rounding is up to a chunk either way.
pub fn mapped_workspace(weight_bytes: u64, workspace_bytes: u64) -> u64 {
    (weight_bytes + workspace_bytes).div_ceil(ALLOCATION_GRANULE_BYTES) * ALLOCATION_GRANULE_BYTES - weight_bytes
}

impl ModelSpec {
    /// The workspace an engine sized by `sizing` allocates on a GPU of `sm_count` SMs (see the module docs for what
    /// is and is not in it). Decode steps hold at most one row per sequence, so decode attention is sized for
    /// min(sequences, rows) sequences, over the block tables' full width.
    pub fn engine_workspace(&self, sizing: &EngineSizing, sm_count: u32) -> EngineWorkspace {
        let width = sizing.table_width();
        let buffers = ActivationBuffers::new(self, sizing.max_step_tokens, sizing.max_seqs, width);
        let decodes = buffers.seqs.min(buffers.rows);
        let longest = width * u64::from(sizing.block_size.max(1));
        EngineWorkspace {
            buffers,
            decode_attention: DecodeAttentionWorkspace::new(self, decodes, longest, sizing.decode_graphs, sm_count),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::by_name;

    #[test]
    fn cublas_runs_on_at_most_15_rows_more_to_1024_and_63_beyond_on_its_grid() {
        let pairs = [
            (0, 1),
            (1, 1),
            (2, 2),
            (3, 4),
            (5, 8),
            (9, 16),
            (333, 336),
            (1024, 1024),
            (1025, 1088),
        ];
        for (rows, padded) in pairs {
            assert_eq!(cublas_rows(rows), padded, "{rows}");
        }
        assert_eq!((cublas_rows(8192), cublas_rows(8193)), (8192, 8193));
        let grid = cublas_grid(8192);
        assert_eq!(grid.len(), 4 + 64 + 112);
        assert_eq!(
            (grid[..5].to_vec(), *grid.last().unwrap()),
            (vec![1, 2, 4, 8, 16], 8192)
        );
        for rows in 1..=8192u64 {
            let p = cublas_rows(rows);
            assert!(p >= rows && grid.contains(&(p as u32)), "{rows}");
            assert!(p - rows <= if rows <= 1024 { 15 } else { 63 }, "{rows} → {p}");
            assert_eq!(cublas_rows(p), p, "a grid point pads to itself");
        }
        assert_eq!(cublas_grid(1024).last(), Some(&1024));
        assert_eq!(cublas_grid(20000).last(), Some(&8192));
    }

    #[test]
    fn buffers_hold_the_rows_a_padded_cublas_gemm_runs_on() {
        let spec = by_name("qwen2.5-0.5b").unwrap();
        let (b, on_grid) = (
            ActivationBuffers::new(&spec, 1000, 24, 8),
            ActivationBuffers::new(&spec, 1008, 32, 8),
        );
        // 1,000 rows pad to 1,008 and 24 sequences to 32, for what a GEMM touches; the rest is as asked.
        for (name, size) in b.list() {
            let want = on_grid.list().iter().find(|(n, _)| *n == name).unwrap().1;
            match name {
                "normed" | "qkv" | "attn" | "proj" | "gate_up" | "act" | "final_rows" | "logits" => {
                    assert_eq!(size, want, "{name}")
                }
                _ => assert!(size.bytes() < want.bytes() || name == "decode_split", "{name}"),
            }
        }
    }

    #[test]
    fn buffers_by_hand() {
        let spec = by_name("qwen2.5-0.5b").unwrap();
        let b = ActivationBuffers::new(&spec, 8192, 256, 2048);
        // 8192 rows of (3·896 + 1152 + 2·896 + 3·4864) fp16, 256 sampled rows of (896 + 151936) fp16, and i32
        // inputs: 3 per row, (2·2048 + 5) per sequence, one more, and the decode graphs' split (2).
        let want = 2 * (20224 * 8192 + 152_832 * 256) + 4 * (3 * 8192 + 256 * 4101 + 1 + 2);
        assert_eq!(b.bytes(), want);
        assert_eq!(b.list().iter().map(|(_, s)| s.bytes()).sum::<u64>(), want);
        let names: Vec<_> = b.list().iter().map(|(n, _)| *n).collect();
        let mut unique = names.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "{names:?}");
        // Nothing is empty, even for an empty configuration.
        let empty = ActivationBuffers::new(&spec, 0, 0, 0);
        assert_eq!((empty.rows, empty.seqs, empty.table_width), (1, 1, 1));
        assert!(empty.list().iter().all(|(_, s)| s.elements > 0));
    }

    #[test]
    fn the_most_partitions_are_at_a_multiple_of_the_context_step() {
        // Partitions are multiples of 128 tokens, so over every context up to `longest` the most partitions are
        // reached at a multiple of 128 (or `longest`): the step the engine looks at is enough.
        for kv in [1, 2, 4, 8] {
            for seqs in [1, 2, 3, 5, 9, 17, 33, 100, 193] {
                for longest in [1, 100, 1000, 1025, 4096, 5000, 9000] {
                    let every = (1..=longest).map(|c| partitions(132, kv, seqs, c)).max().unwrap();
                    assert_eq!(most_partitions(132, kv, seqs, longest), every, "{kv} {seqs} {longest}");
                }
            }
        }
    }

    #[test]
    fn weights_and_workspace_map_whole_chunks() {
        let mib = 1u64 << 20;
        // 942.3 MiB of weights map 960; a 2.8 MiB workspace fits the rest of their last chunk, a 22 MiB one does not.
        let weights = 988_065_536;
        assert_eq!(weights + mapped_workspace(weights, 0), 960 * mib);
        assert_eq!(mapped_workspace(weights, 3 * mib), 960 * mib - weights);
        assert_eq!(mapped_workspace(weights, 22 * mib), 992 * mib - weights);
        assert_eq!(mapped_workspace(32 * mib, 32 * mib), 32 * mib);
        assert_eq!(mapped_workspace(32 * mib, 32 * mib + 1), 64 * mib);
    }

    #[test]
    fn decode_partition_halves_for_small_batches_only() {
        // 2 kv heads on 132 SMs: one sequence at 1024 tokens is 2 blocks at 1024, 8 at 256 — the floor.
        assert_eq!(decode_partition(132, 2, 1, 1024), 256);
        // Up to 512 tokens, one partition however few the blocks.
        assert_eq!(decode_partition(132, 2, 1, 512), 512);
        assert_eq!(decode_partition(132, 2, 3, 300), 512);
        // 64 sequences at 4096 tokens: 2·64·4 = 512 blocks at 1024, plenty.
        assert_eq!(decode_partition(132, 2, 64, 4096), 1024);
        // 12 sequences at 2600: 2·12·3 = 72 blocks at 1024 → 512: 144 ≥ 132.
        assert_eq!(decode_partition(132, 2, 12, 2600), 512);
        // 8 sequences at 4096: 64 blocks at 1024 → 512: 128 → 256: 256 ≥ 132.
        assert_eq!(decode_partition(132, 2, 8, 4096), 256);
    }

    #[test]
    fn decode_workspace_by_hand() {
        let spec = by_name("qwen2.5-0.5b").unwrap();
        // Graphs up to 256 rows over 32768 tokens: the 256-row graph holds at least 193 rows, which take 32
        // partitions of 1024 (2·193·32 blocks fill 132 SMs); 256 × 32 pairs is the most of any bucket.
        assert_eq!(graph_partitions(132, 2, 256, 32768), 32);
        // One row: partitions of 256 (2 blocks each never fill 132 SMs), 128 of them at 32768 tokens.
        assert_eq!(graph_partitions(132, 2, 1, 32768), 128);
        let w = DecodeAttentionWorkspace::new(&spec, 256, 32768, true, 132);
        assert_eq!(w.sequence_partitions, 256 * 32);
        assert_eq!(w.partial_out.bytes(), (256u64 * 32 * 14 * 64).next_power_of_two() * 4);
        assert_eq!(
            w.partial_max_sum.bytes(),
            (256u64 * 32 * 14 * 2).next_power_of_two() * 4
        );
        assert_eq!(w.counters.bytes(), 512 * 4);
        // The 8-row graph holds 5 to 8 rows and is captured for 5 rows' most partitions: at 4096 tokens, 16 of 256
        // (2·5·8 = 80 blocks at 512 leave some of 132 SMs without one). Its 8 × 16 pairs are the most of the buckets
        // 1 to 8 (the 4-row graph: 3 rows, 16 partitions, 64 pairs).
        assert_eq!(graph_partitions(132, 2, 8, 4096), 16);
        assert_eq!(
            DecodeAttentionWorkspace::new(&spec, 8, 4096, true, 132).sequence_partitions,
            8 * 16
        );
        // Five sequences: the largest bucket is 4 (64 pairs); five launched alone take 5 × 16.
        assert_eq!(
            DecodeAttentionWorkspace::new(&spec, 5, 4096, true, 132).sequence_partitions,
            80
        );
        // Without graphs, every batch size is launched alone: one sequence takes 16 partitions of 256.
        let alone = DecodeAttentionWorkspace::new(&spec, 1, 4096, false, 132);
        assert_eq!(alone.sequence_partitions, 16);
    }

    #[test]
    fn the_engine_workspace_is_its_buffers_and_decode_attention() {
        let spec = by_name("qwen2.5-1.5b").unwrap();
        let sizing = EngineSizing {
            max_step_tokens: 4096,
            max_seqs: 8,
            max_context: 545,
            block_size: 16,
            decode_graphs: true,
        };
        assert_eq!(sizing.table_width(), 35);
        let w = spec.engine_workspace(&sizing, 132);
        assert_eq!(w.buffers, ActivationBuffers::new(&spec, 4096, 8, 35));
        // Decode attention over the tables' full width: 35 blocks of 16 = 560 tokens.
        assert_eq!(
            w.decode_attention,
            DecodeAttentionWorkspace::new(&spec, 8, 560, true, 132)
        );
        assert_eq!(w.bytes(), w.buffers.bytes() + w.decode_attention.bytes());
        // A step holds at most one decode per row.
        let narrow = EngineSizing {
            max_step_tokens: 2,
            ..sizing
        };
        assert_eq!(
            spec.engine_workspace(&narrow, 132).decode_attention,
            DecodeAttentionWorkspace::new(&spec, 2, 560, true, 132)
        );
    }
}
