//! Safe typed wrappers, one per kernel: each checks every buffer against the shapes it is given, then launches.
//!
//! A wrapper's checks make every index the kernel computes from its *shape* arguments land inside the buffers.
//! Indices the kernels read from device memory (token ids, block tables, slots, sequence offsets) cannot be checked
//! from the host without a copy; the kernels bound-check those themselves (see each `.cu`), so a bad index gives a
//! wrong or NaN result, never an access outside a buffer.
//!
//! fp16 buffers are `CudaSlice<u16>` (see the module docs of [`super`]). Buffers may be longer than needed.

use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};

use super::kernels::KernelId;
use super::{Gpu, GpuError};
use crate::model::decode_partition_within;

/// The most context tokens one decode block of the SIMT kernel covers (`DEC_PART` in kernels/attention.cu).
pub const DECODE_PARTITION: usize = 256;
/// The most context tokens one decode block of the tensor-core kernel covers (`DEC_PART_TC`).
pub const DECODE_PARTITION_TC: usize = 1024;

impl AttentionKernel {
    /// The largest decode partition (context tokens per block) this implementation takes.
    pub fn max_decode_partition(self) -> usize {
        match self {
            AttentionKernel::TensorCore => DECODE_PARTITION_TC,
            AttentionKernel::Simt => DECODE_PARTITION,
        }
    }
}
/// Query heads per kv head the attention kernels support: 16 on the tensor-core kernels (one m16 tile), 8 on the
/// SIMT ones (`MAX_GROUP`).
pub const MAX_GQA_GROUP: usize = 16;
const MAX_GQA_GROUP_SIMT: usize = 8;

/// Which attention implementation runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum AttentionKernel {
    /// mma.sync, flash-attention-2 style, GQA groups packed into the m16 rows (the default).
    #[default]
    TensorCore,
    /// CUDA-core FMAs: the first, simpler kernels, kept as a cross-check.
    Simt,
}
/// Dynamic shared memory of the tensor-core decode kernel for head size `d`: per warp
/// ([`super::compile::decode_warps`]) and stage ([`super::compile::decode_stages`]) a 16-token K and V chunk of rows
/// padded to `d + 8` halves (reused by the warps' merge), plus the block's 16 query rows.
pub(crate) fn decode_tc_smem_bytes(d: usize) -> u32 {
    let (row, warps) = (d + 8, super::compile::decode_warps(d));
    let kv = super::compile::decode_stages() * warps * (2 * 16 * row) * 2;
    let merge = warps * 16 * (d + 2) * 4;
    (kv.max(merge) + 16 * row * 2) as u32
}

/// Dynamic shared memory of the tensor-core prefill kernel for heads of `d` values: its Q rows
/// (`PF_TC_ROWS`) and two stages of K and V tiles of `PF_TC_BK` tokens, rows padded by 8 halves.
pub(crate) fn prefill_tc_smem_bytes(d: usize) -> u32 {
    let row = d + 8;
    ((prefill_tc_rows() + 4 * PREFILL_KEY_TILE) * row * 2) as u32
}

/// Context tokens a tensor-core decode attention block for heads of `head_dim` values takes per round: 16 a warp
/// ([`super::compile::decode_warps`]). Below one partition a block's time steps at multiples of it.
pub fn decode_round_tokens(head_dim: usize) -> usize {
    16 * super::compile::decode_warps(head_dim)
}

/// Cached tokens per tile of the tensor-core prefill kernel (`PF_TC_BK`): a block walks its keys in whole tiles.
pub const PREFILL_KEY_TILE: usize = 64;

/// Query rows ((token, head of group) pairs) per tensor-core prefill block (`PF_TC_ROWS`).
pub fn prefill_tc_rows() -> usize {
    16 * super::compile::prefill_tc_warps()
}

/// Shared memory an SM offers its blocks on a card of compute capability `cc` ("9.0"), by the CUDA programming
/// guide's table: 228 KiB on 9.0 and 10.x, 164 KiB on 8.0 and 8.7, 100 KiB on the others from 8.6 on (8.9, 12.x).
fn shared_memory_per_sm(cc: &str) -> usize {
    let kib = match cc {
        "9.0" | "10.0" | "10.1" | "10.3" => 228,
        "8.0" | "8.7" => 164,
        _ => 100,
    };
    kib * 1024
}

/// Tensor-core prefill attention blocks for heads of `head_dim` values one SM holds at once on a card of compute
/// capability `cc`, as its shared memory allows (each block also takes 1 KiB the runtime reserves) and the 2,048
/// threads an SM holds at most: two on an H100 for heads of 128 values, four for heads of 64. Registers are not
/// counted.
pub fn prefill_resident_blocks(cc: &str, head_dim: usize) -> usize {
    let per_block = prefill_tc_smem_bytes(head_dim) as usize + 1024;
    let by_threads = 2048 / (32 * super::compile::prefill_tc_warps());
    (shared_memory_per_sm(cc) / per_block).clamp(1, by_threads)
}

/// Query rows per prefill block (`PF_ROWS`).
const PREFILL_ROWS: usize = 32;

fn need<T>(op: &'static str, what: &str, buf: &CudaSlice<T>, len: usize) -> Result<(), GpuError> {
    if buf.len() < len {
        return Err(GpuError::shape(
            op,
            format!("{what} has {} elements, needs {len}", buf.len()),
        ));
    }
    Ok(())
}

fn i32_of(op: &'static str, what: &str, v: usize) -> Result<i32, GpuError> {
    i32::try_from(v).map_err(|_| GpuError::shape(op, format!("{what} = {v} does not fit in i32")))
}

fn grid_u32(op: &'static str, v: usize) -> Result<u32, GpuError> {
    u32::try_from(v).map_err(|_| GpuError::shape(op, format!("grid dimension {v} is too large")))
}

/// Layout of one layer's paged K (or V) cache: `[num_blocks, block_size, kv_heads, head_dim]` fp16.
/// Token `t` of a sequence lives in slot `block_table[t / block_size] * block_size + t % block_size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PagedKvLayout {
    pub num_blocks: usize,
    pub block_size: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

impl PagedKvLayout {
    pub fn num_slots(&self) -> usize {
        self.num_blocks * self.block_size
    }

    /// Elements of one of the K / V buffers.
    pub fn elements(&self) -> usize {
        self.num_slots() * self.kv_heads * self.head_dim
    }

    fn check(&self, op: &'static str) -> Result<(), GpuError> {
        if self.block_size == 0 || self.num_blocks == 0 || self.kv_heads == 0 {
            return Err(GpuError::shape(op, format!("empty cache layout {self:?}")));
        }
        i32_of(op, "num_blocks", self.num_blocks)?;
        i32_of(op, "block_size", self.block_size)?;
        i32_of(op, "cache slots", self.num_slots())?;
        Ok(())
    }
}

/// A layer's paged cache, read-only, with the block tables of a batch (`[num_seqs, max_blocks_per_seq]` i32).
#[derive(Debug, Clone, Copy)]
pub struct PagedKv<'a> {
    pub layout: PagedKvLayout,
    pub k: &'a CudaSlice<u16>,
    pub v: &'a CudaSlice<u16>,
    pub block_tables: &'a CudaSlice<i32>,
    pub max_blocks_per_seq: usize,
}

impl PagedKv<'_> {
    fn check(&self, op: &'static str, num_seqs: usize, q_heads: usize, max_group: usize) -> Result<(), GpuError> {
        let l = &self.layout;
        l.check(op)?;
        need(op, "k cache", self.k, l.elements())?;
        need(op, "v cache", self.v, l.elements())?;
        need(
            op,
            "block_tables",
            self.block_tables,
            num_seqs * self.max_blocks_per_seq,
        )?;
        i32_of(op, "max_blocks_per_seq", self.max_blocks_per_seq)?;
        i32_of(op, "max context", self.max_blocks_per_seq * l.block_size)?;
        if !matches!(l.head_dim, 64 | 128) {
            return Err(GpuError::shape(op, format!("head_dim {} is not 64 or 128", l.head_dim)));
        }
        if q_heads == 0 || !q_heads.is_multiple_of(l.kv_heads) || q_heads / l.kv_heads > max_group {
            return Err(GpuError::shape(
                op,
                format!(
                    "{q_heads} query heads over {} kv heads: need a whole group of at most {max_group}",
                    l.kv_heads
                ),
            ));
        }
        Ok(())
    }
}

/// A layer's paged cache, to be written.
#[derive(Debug)]
pub struct KvCacheMut<'a> {
    pub layout: PagedKvLayout,
    pub k: &'a mut CudaSlice<u16>,
    pub v: &'a mut CudaSlice<u16>,
}

/// Shape of a KV append: `tokens` rows of fused QKV output.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KvAppendShape {
    pub tokens: usize,
    pub q_heads: usize,
    /// RoPE base (Qwen2's `rope_theta`).
    pub rope_theta: f32,
}

/// Shape of a decode attention call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeShape {
    pub num_seqs: usize,
    pub q_heads: usize,
    /// The longest context in the batch (bounds how many partitions are launched).
    pub max_context_len: usize,
    /// Context tokens per partition (1..= the kernel's [`AttentionKernel::max_decode_partition`]); `None` picks one
    /// that fills the GPU.
    pub partition_size: Option<usize>,
}

/// Shape of a prefill attention call over `num_seqs` chunks totalling `total_tokens` query rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrefillShape {
    pub num_seqs: usize,
    pub total_tokens: usize,
    pub q_heads: usize,
    /// The longest chunk (bounds the grid).
    pub max_chunk_len: usize,
}

/// A decode launch's split read on the device: `split` = {partitions, tokens each} for the launch at hand (at most
/// `max_parts` partitions of at most [`AttentionKernel::max_decode_partition`] tokens), written before a captured
/// graph replays.
#[derive(Clone, Copy)]
pub struct DecodePlan<'a> {
    pub split: &'a CudaSlice<i32>,
    pub max_parts: usize,
}

/// Scratch space for decode's per-partition results; grows on demand and is reused across calls.
#[derive(Debug, Default)]
pub struct DecodeWorkspace {
    part_out: Option<CudaSlice<f32>>,
    part_ml: Option<CudaSlice<f32>>,
    /// Per (sequence, kv head): partitions finished so far (the tensor-core kernel's last one merges); zero
    /// between launches.
    counters: Option<CudaSlice<i32>>,
    /// Bumped whenever a buffer is reallocated: a graph captured before then would use freed memory.
    generation: u64,
}

impl DecodeWorkspace {
    pub fn new() -> Self {
        Self::default()
    }

    /// Changes whenever a buffer moves.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Where its buffers start on the device (partial outputs, their max and sum, the counters; 0 where one is
    /// not allocated yet), for the logs.
    pub fn addresses(&self, gpu: &Gpu) -> [u64; 3] {
        [
            self.part_out.as_ref().map_or(0, |b| gpu.address(b)),
            self.part_ml.as_ref().map_or(0, |b| gpu.address(b)),
            self.counters.as_ref().map_or(0, |b| gpu.address(b)),
        ]
    }

    /// Whether every merge counter is zero, as it must be between launches (none allocated yet: true). Waits for
    /// the stream.
    pub fn counters_at_rest(&self, gpu: &Gpu) -> Result<bool, GpuError> {
        match &self.counters {
            Some(c) => Ok(gpu.download(c)?.iter().all(|&n| n == 0)),
            None => Ok(true),
        }
    }

    fn ensure(&mut self, gpu: &Gpu, out_len: usize, ml_len: usize, counters: usize) -> Result<(), GpuError> {
        if self.counters.as_ref().is_none_or(|b| b.len() < counters) {
            self.counters = Some(gpu.zeros(counters.next_power_of_two())?);
            self.generation += 1;
        }
        if self.part_out.as_ref().is_none_or(|b| b.len() < out_len) {
            self.part_out = Some(gpu.zeros(out_len.next_power_of_two())?);
            self.generation += 1;
        }
        if self.part_ml.as_ref().is_none_or(|b| b.len() < ml_len) {
            self.part_ml = Some(gpu.zeros(ml_len.next_power_of_two())?);
            self.generation += 1;
        }
        Ok(())
    }
}

impl Gpu {
    /// `out[t] = x[t] / rms(x[t]) * weight` for `tokens` rows of `hidden` (even) values.
    pub fn rmsnorm(
        &self,
        x: &CudaSlice<u16>,
        weight: &CudaSlice<u16>,
        out: &mut CudaSlice<u16>,
        tokens: usize,
        hidden: usize,
        eps: f32,
    ) -> Result<(), GpuError> {
        const OP: &str = "rmsnorm";
        check_norm(OP, tokens, hidden, &[("x", x), ("out", out)], weight)?;
        if tokens == 0 {
            return Ok(());
        }
        let f = self.kernels().get(KernelId::RmsNormF16);
        let h = hidden as i32;
        let rows = i32_of(OP, "tokens", tokens)?;
        let mut b = self.stream().launch_builder(f);
        b.arg(x).arg(weight).arg(out).arg(&h).arg(&eps).arg(&rows);
        // SAFETY: rmsnorm_f16(x, w, out, hidden, eps, tokens) reads tokens*hidden of x and hidden of w and writes
        // tokens*hidden of out, one warp per row (rows past `tokens` do nothing); all three lengths were checked
        // above.
        unsafe { b.launch(norm_cfg(tokens)?) }?;
        Ok(())
    }

    /// `residual[t] += x[t]` (fp16), then `out[t] = rmsnorm(residual[t]) * weight`: Qwen2's residual connection and
    /// the next norm in one pass.
    pub fn add_rmsnorm(
        &self,
        x: &CudaSlice<u16>,
        residual: &mut CudaSlice<u16>,
        weight: &CudaSlice<u16>,
        out: &mut CudaSlice<u16>,
        tokens: usize,
        hidden: usize,
    ) -> Result<(), GpuError> {
        self.add_rmsnorm_eps(x, residual, weight, out, (tokens, hidden), 1e-6)
    }

    /// [`Gpu::add_rmsnorm`] with an explicit epsilon; `dims` = (tokens, hidden).
    pub fn add_rmsnorm_eps(
        &self,
        x: &CudaSlice<u16>,
        residual: &mut CudaSlice<u16>,
        weight: &CudaSlice<u16>,
        out: &mut CudaSlice<u16>,
        dims: (usize, usize),
        eps: f32,
    ) -> Result<(), GpuError> {
        const OP: &str = "add_rmsnorm";
        let (tokens, hidden) = dims;
        check_norm(
            OP,
            tokens,
            hidden,
            &[("x", x), ("residual", residual), ("out", out)],
            weight,
        )?;
        if tokens == 0 {
            return Ok(());
        }
        let f = self.kernels().get(KernelId::AddRmsNormF16);
        let h = hidden as i32;
        let rows = i32_of(OP, "tokens", tokens)?;
        let mut b = self.stream().launch_builder(f);
        b.arg(x).arg(residual).arg(weight).arg(out).arg(&h).arg(&eps).arg(&rows);
        // SAFETY: add_rmsnorm_f16 reads x and reads/writes residual (tokens*hidden each), reads hidden of w, writes
        // tokens*hidden of out, one warp per row (rows past `tokens` do nothing); lengths checked above. residual
        // and out are distinct buffers (&mut borrows).
        unsafe { b.launch(norm_cfg(tokens)?) }?;
        Ok(())
    }

    /// `out[t, i] = silu(gate_up[t, 2i]) * gate_up[t, 2i + 1]`; gate_up is `[tokens, 2 * inter]` with each value's
    /// gate and up side by side (the engine's gate/up weights are interleaved row by row), inter even.
    pub fn silu_mul(
        &self,
        gate_up: &CudaSlice<u16>,
        out: &mut CudaSlice<u16>,
        tokens: usize,
        inter: usize,
    ) -> Result<(), GpuError> {
        const OP: &str = "silu_mul";
        if !inter.is_multiple_of(2) {
            return Err(GpuError::shape(OP, format!("inter = {inter} must be even")));
        }
        need(OP, "gate_up", gate_up, tokens * 2 * inter)?;
        need(OP, "out", out, tokens * inter)?;
        let (t, i) = (i32_of(OP, "tokens", tokens)?, i32_of(OP, "inter", inter)?);
        let pairs = tokens * inter / 2;
        if pairs == 0 {
            return Ok(());
        }
        if u32::try_from(pairs).is_err() {
            return Err(GpuError::shape(
                OP,
                format!("{tokens} × {inter} values: the kernel indexes at most 2^32 pairs"),
            ));
        }
        // One thread per 16-byte vector of the output (or pair, where the output's length is not a multiple of 8),
        // grid-stride beyond 16 blocks per SM.
        let items = if (tokens * inter).is_multiple_of(8) {
            pairs / 4
        } else {
            pairs
        };
        let blocks = items.div_ceil(256).min(self.info().sm_count as usize * 16);
        let cfg = LaunchConfig {
            grid_dim: (grid_u32(OP, blocks)?, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let f = self.kernels().get(KernelId::SiluMulF16);
        let mut b = self.stream().launch_builder(f);
        b.arg(gate_up).arg(out).arg(&t).arg(&i);
        // SAFETY: silu_mul_f16 reads tokens*2*inter of gate_up and writes tokens*inter of out (grid-stride, bounded
        // by tokens*inter/8 vectors or tokens*inter/2 pairs, as the kernel picks by the same test); lengths checked
        // above.
        unsafe { b.launch(cfg) }?;
        Ok(())
    }

    /// `out[t] = table[ids[t]]`; table is `[vocab, hidden]`. An id outside the vocabulary yields a NaN row.
    pub fn embedding(
        &self,
        ids: &CudaSlice<i32>,
        table: &CudaSlice<u16>,
        out: &mut CudaSlice<u16>,
        tokens: usize,
        (vocab, hidden): (usize, usize),
    ) -> Result<(), GpuError> {
        const OP: &str = "embedding";
        need(OP, "ids", ids, tokens)?;
        need(OP, "table", table, vocab * hidden)?;
        need(OP, "out", out, tokens * hidden)?;
        let (v, h) = (i32_of(OP, "vocab", vocab)?, i32_of(OP, "hidden", hidden)?);
        if tokens == 0 || hidden == 0 {
            return Ok(());
        }
        let t = i32_of(OP, "tokens", tokens)?;
        let cfg = LaunchConfig {
            grid_dim: (grid_u32(OP, tokens.div_ceil(ROWS_PER_BLOCK))?, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let f = self.kernels().get(KernelId::EmbeddingF16);
        let mut b = self.stream().launch_builder(f);
        b.arg(ids).arg(table).arg(out).arg(&v).arg(&h).arg(&t);
        // SAFETY: embedding_f16 reads tokens ids, rows of table only for ids in [0, vocab) (checked in the kernel),
        // and writes tokens*hidden of out, one warp per token (tokens past `tokens` do nothing); lengths checked
        // above.
        unsafe { b.launch(cfg) }?;
        Ok(())
    }

    /// `out[r] = argmax(logits[r])` over `vocab` values (ties: the smaller index; a row of NaNs gives -1).
    pub fn argmax(
        &self,
        logits: &CudaSlice<u16>,
        out: &mut CudaSlice<i32>,
        rows: usize,
        vocab: usize,
    ) -> Result<(), GpuError> {
        const OP: &str = "argmax";
        need(OP, "logits", logits, rows * vocab)?;
        need(OP, "out", out, rows)?;
        let v = i32_of(OP, "vocab", vocab)?;
        if rows == 0 {
            return Ok(());
        }
        let cfg = LaunchConfig {
            grid_dim: (grid_u32(OP, rows)?, 1, 1),
            block_dim: (512, 1, 1),
            shared_mem_bytes: 0,
        };
        let f = self.kernels().get(KernelId::ArgmaxF16);
        let mut b = self.stream().launch_builder(f);
        b.arg(logits).arg(out).arg(&v);
        // SAFETY: argmax_f16 reads rows*vocab of logits and writes rows of out; lengths checked above.
        unsafe { b.launch(cfg) }?;
        Ok(())
    }

    /// RoPE on q and k of fused QKV rows (`[tokens, (q_heads + 2 kv_heads) * head_dim]`), rotated q into
    /// `q_out` (`[tokens, q_heads, head_dim]`), rotated k and plain v into the cache at `slot_mapping[t]`
    /// (negative: not written). `positions[t]` is token t's position in its sequence.
    pub fn kv_append_rope(
        &self,
        shape: &KvAppendShape,
        qkv: &CudaSlice<u16>,
        positions: &CudaSlice<i32>,
        slot_mapping: &CudaSlice<i32>,
        q_out: &mut CudaSlice<u16>,
        cache: KvCacheMut<'_>,
    ) -> Result<(), GpuError> {
        const OP: &str = "kv_append_rope";
        let l = cache.layout;
        l.check(OP)?;
        let d = l.head_dim;
        if d == 0 || !d.is_multiple_of(8) || d > 512 {
            return Err(GpuError::shape(
                OP,
                format!("head_dim {d} must be a multiple of 8, at most 512"),
            ));
        }
        let t = shape.tokens;
        need(OP, "qkv", qkv, t * (shape.q_heads + 2 * l.kv_heads) * d)?;
        need(OP, "positions", positions, t)?;
        need(OP, "slot_mapping", slot_mapping, t)?;
        need(OP, "q_out", q_out, t * shape.q_heads * d)?;
        need(OP, "k cache", cache.k, l.elements())?;
        need(OP, "v cache", cache.v, l.elements())?;
        let qh = i32_of(OP, "q_heads", shape.q_heads)?;
        let kvh = i32_of(OP, "kv_heads", l.kv_heads)?;
        let hd = i32_of(OP, "head_dim", d)?;
        let slots = l.num_slots() as i64;
        if t == 0 {
            return Ok(());
        }
        let tokens = i32_of(OP, "tokens", t)?;
        // One item per thread: four rotation pairs, or 8 halves of V (see kernels/kv.cu); grid-stride beyond 16
        // blocks per SM.
        let items = t * ((shape.q_heads + 2 * l.kv_heads) * d / 8);
        if u32::try_from(items).is_err() {
            return Err(GpuError::shape(
                OP,
                format!("{t} tokens: the kernel indexes at most 2^32 items"),
            ));
        }
        let blocks = items.div_ceil(256).min(self.info().sm_count as usize * 16).max(1);
        let cfg = LaunchConfig {
            grid_dim: (grid_u32(OP, blocks)?, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let f = self.kernels().get(KernelId::KvAppendRopeF16);
        let mut b = self.stream().launch_builder(f);
        b.arg(qkv)
            .arg(positions)
            .arg(slot_mapping)
            .arg(q_out)
            .arg(cache.k)
            .arg(cache.v);
        b.arg(&qh)
            .arg(&kvh)
            .arg(&hd)
            .arg(&slots)
            .arg(&shape.rope_theta)
            .arg(&tokens);
        // SAFETY: kv_append_rope_f16 reads tokens rows of qkv, positions and slot_mapping, writes tokens*q_heads*d
        // of q_out, and writes the cache only at slots in [0, num_slots) (checked in the kernel); lengths checked
        // above; q_out, k and v are distinct (&mut borrows).
        unsafe { b.launch(cfg) }?;
        Ok(())
    }

    /// The partition size [`Gpu::attention_decode`] picks when the shape names none: the kernel's largest
    /// (longest loops, fewest partial results), halved while the grid has fewer blocks than the GPU has SMs, down to
    /// 256 tokens; contexts of at most 512 tokens are not split at all (a merge cost more on an H100 than the SMs
    /// one partition leaves idle; `bench-kernels` sweeps every size). The rule is
    /// `model::workspace::decode_partition_within`, which the simulator's workspace sizing reads too.
    pub fn decode_partition(&self, kernel: AttentionKernel, shape: &DecodeShape, kv_heads: usize) -> usize {
        decode_partition_within(
            kernel.max_decode_partition() as u64,
            self.info().sm_count,
            kv_heads as u64,
            shape.num_seqs as u64,
            shape.max_context_len as u64,
        ) as usize
    }

    /// Decode attention: query `[num_seqs, q_heads, head_dim]` (one token per sequence) against each sequence's
    /// `context_lens[s]` cached tokens; out has q's shape. Long contexts are split into partitions of at most
    /// [`AttentionKernel::max_decode_partition`] tokens and merged by a second kernel.
    pub fn attention_decode(
        &self,
        shape: &DecodeShape,
        q: &CudaSlice<u16>,
        kv: &PagedKv<'_>,
        context_lens: &CudaSlice<i32>,
        out: &mut CudaSlice<u16>,
        ws: &mut DecodeWorkspace,
    ) -> Result<(), GpuError> {
        self.attention_decode_with(AttentionKernel::default(), shape, q, kv, context_lens, out, ws)
    }

    /// The split a decode launch of `shape` uses by itself (the tensor-core kernel): (partitions, tokens each).
    pub fn decode_split(&self, shape: &DecodeShape, kv_heads: usize) -> (usize, usize) {
        let p = self.decode_partition(AttentionKernel::TensorCore, shape, kv_heads);
        (shape.max_context_len.div_ceil(p).max(1), p)
    }

    /// [`Gpu::attention_decode`] with a chosen implementation.
    #[allow(clippy::too_many_arguments)] // the decode call's own arguments plus the implementation choice
    pub fn attention_decode_with(
        &self,
        kernel: AttentionKernel,
        shape: &DecodeShape,
        q: &CudaSlice<u16>,
        kv: &PagedKv<'_>,
        context_lens: &CudaSlice<i32>,
        out: &mut CudaSlice<u16>,
        ws: &mut DecodeWorkspace,
    ) -> Result<(), GpuError> {
        self.decode_launch(kernel, shape, None, q, kv, context_lens, out, ws)
    }

    /// Decode attention as a graph captures it: the grid covers `plan.max_parts` partitions and the kernel takes
    /// each replay's own split from `plan.split` (tensor-core kernel only). `shape.max_context_len` bounds the
    /// contexts of every replay.
    #[allow(clippy::too_many_arguments)] // the decode call's own arguments plus the plan
    pub fn attention_decode_planned(
        &self,
        shape: &DecodeShape,
        plan: DecodePlan<'_>,
        q: &CudaSlice<u16>,
        kv: &PagedKv<'_>,
        context_lens: &CudaSlice<i32>,
        out: &mut CudaSlice<u16>,
        ws: &mut DecodeWorkspace,
    ) -> Result<(), GpuError> {
        let kernel = AttentionKernel::TensorCore;
        need("attention_decode", "plan", plan.split, 2)?;
        let fewest = shape.max_context_len.div_ceil(kernel.max_decode_partition()).max(1);
        if plan.max_parts < fewest {
            return Err(GpuError::shape(
                "attention_decode",
                format!(
                    "{} partitions cannot cover {} tokens",
                    plan.max_parts, shape.max_context_len
                ),
            ));
        }
        self.decode_launch(kernel, shape, Some(plan), q, kv, context_lens, out, ws)
    }

    #[allow(clippy::too_many_arguments)] // the decode call's own arguments plus kernel and plan
    fn decode_launch(
        &self,
        kernel: AttentionKernel,
        shape: &DecodeShape,
        plan: Option<DecodePlan<'_>>,
        q: &CudaSlice<u16>,
        kv: &PagedKv<'_>,
        context_lens: &CudaSlice<i32>,
        out: &mut CudaSlice<u16>,
        ws: &mut DecodeWorkspace,
    ) -> Result<(), GpuError> {
        const OP: &str = "attention_decode";
        let (s, qh) = (shape.num_seqs, shape.q_heads);
        let max_group = if kernel == AttentionKernel::Simt {
            MAX_GQA_GROUP_SIMT
        } else {
            MAX_GQA_GROUP
        };
        kv.check(OP, s, qh, max_group)?;
        let d = kv.layout.head_dim;
        need(OP, "q", q, s * qh * d)?;
        need(OP, "out", out, s * qh * d)?;
        need(OP, "context_lens", context_lens, s)?;
        if shape.max_context_len > kv.max_blocks_per_seq * kv.layout.block_size {
            return Err(GpuError::shape(
                OP,
                format!(
                    "max_context_len {} exceeds the block table's capacity",
                    shape.max_context_len
                ),
            ));
        }
        if s == 0 {
            return Ok(());
        }
        let part_size = match shape.partition_size {
            Some(p) if (1..=kernel.max_decode_partition()).contains(&p) => p,
            Some(p) => {
                return Err(GpuError::shape(
                    OP,
                    format!("partition size {p} is not in 1..={}", kernel.max_decode_partition()),
                ));
            }
            None => self.decode_partition(kernel, shape, kv.layout.kv_heads),
        };
        let parts = match &plan {
            Some(p) => p.max_parts,
            None => shape.max_context_len.div_ceil(part_size).max(1),
        };
        ws.ensure(self, s * qh * parts * d, s * qh * parts * 2, s * kv.layout.kv_heads)?;
        let (Some(part_out), Some(part_ml), Some(counters)) =
            (ws.part_out.as_mut(), ws.part_ml.as_mut(), ws.counters.as_mut())
        else {
            unreachable!("ensure() allocated them")
        };
        let (decode, reduce) = match (kernel, d) {
            (AttentionKernel::Simt, 64) => (KernelId::AttnDecodeD64F16, KernelId::AttnDecodeReduceD64F16),
            (AttentionKernel::Simt, _) => (KernelId::AttnDecodeD128F16, KernelId::AttnDecodeReduceD128F16),
            (AttentionKernel::TensorCore, 64) => (KernelId::AttnDecodeTcD64F16, KernelId::AttnDecodeReduceD64F16),
            (AttentionKernel::TensorCore, _) => (KernelId::AttnDecodeTcD128F16, KernelId::AttnDecodeReduceD128F16),
        };
        let qh_i = qh as i32;
        let kvh = kv.layout.kv_heads as i32;
        let bs = kv.layout.block_size as i32;
        let mbps = kv.max_blocks_per_seq as i32;
        let nb = kv.layout.num_blocks as i32;
        let np = i32_of(OP, "partitions", parts)?;
        let ps = part_size as i32;
        let scale = 1.0 / (d as f32).sqrt();
        let cfg = LaunchConfig {
            grid_dim: (kv.layout.kv_heads as u32, grid_u32(OP, s)?, grid_u32(OP, parts)?),
            block_dim: match kernel {
                AttentionKernel::TensorCore => (32 * super::compile::decode_warps(d) as u32, 1, 1),
                AttentionKernel::Simt => (128, 1, 1),
            },
            shared_mem_bytes: match kernel {
                AttentionKernel::TensorCore => decode_tc_smem_bytes(d),
                AttentionKernel::Simt => 0,
            },
        };
        let f = self.kernels().get(decode);
        let mut b = self.stream().launch_builder(f);
        b.arg(q)
            .arg(kv.k)
            .arg(kv.v)
            .arg(kv.block_tables)
            .arg(context_lens)
            .arg(&mut *out);
        b.arg(&mut *part_out).arg(&mut *part_ml);
        let no_plan: u64 = 0;
        if kernel == AttentionKernel::TensorCore {
            b.arg(&mut *counters);
            match &plan {
                Some(p) => b.arg(p.split),
                None => b.arg(&no_plan),
            };
        }
        b.arg(&qh_i)
            .arg(&kvh)
            .arg(&bs)
            .arg(&mbps)
            .arg(&nb)
            .arg(&np)
            .arg(&ps)
            .arg(&scale);
        // SAFETY: both decode kernels take the same arguments, the tensor-core one with `counters` (one per sequence
        // and kv head: s*kv_heads, allocated by ensure(), read-modify-written atomically and left at 0) and the
        // plan (null, or 2 ints checked above: blocks past its partition count return at once, and the caller
        // keeps its partition size within the kernel's and its count within the grid) besides. They read s*qh*d
        // of q, cache rows only through block-table entries in
        // [0, num_blocks) and tokens below min(context_len, max_blocks*block_size) (checked in the kernel), s rows
        // of block tables and context_lens; it writes s*qh*d of out (one partition) or s*qh*parts*(d+2) floats of
        // the workspace, sized by ensure() above. Lengths checked above.
        unsafe { b.launch(cfg) }?;
        // The tensor-core kernel merges its partitions itself; the SIMT one needs the second kernel.
        if parts > 1 && kernel == AttentionKernel::Simt {
            let cfg = LaunchConfig {
                grid_dim: (qh as u32, grid_u32(OP, s)?, 1),
                block_dim: (d as u32, 1, 1),
                shared_mem_bytes: 0,
            };
            let f = self.kernels().get(reduce);
            let mut b = self.stream().launch_builder(f);
            b.arg(&*part_out).arg(&*part_ml).arg(out).arg(&qh_i).arg(&np);
            // SAFETY: the reduce kernel reads the s*qh*parts partition results written above and writes s*qh*d of
            // out; sizes as above.
            unsafe { b.launch(cfg) }?;
        }
        Ok(())
    }

    /// Prefill attention: rows `[cu_seqlens_q[s], cu_seqlens_q[s+1])` of q (`[total_tokens, q_heads, head_dim]`)
    /// are sequence s's new tokens, already appended to the cache, which holds `context_lens[s]` tokens of it in
    /// all; new token i (position `context_lens[s] - chunk + i`) attends causally. Out has q's shape.
    pub fn attention_prefill(
        &self,
        shape: &PrefillShape,
        q: &CudaSlice<u16>,
        kv: &PagedKv<'_>,
        cu_seqlens_q: &CudaSlice<i32>,
        context_lens: &CudaSlice<i32>,
        out: &mut CudaSlice<u16>,
    ) -> Result<(), GpuError> {
        self.attention_prefill_with(
            AttentionKernel::default(),
            shape,
            q,
            kv,
            cu_seqlens_q,
            context_lens,
            out,
        )
    }

    /// [`Gpu::attention_prefill`] with a chosen implementation.
    #[allow(clippy::too_many_arguments)] // the prefill call's own arguments plus the implementation choice
    pub fn attention_prefill_with(
        &self,
        kernel: AttentionKernel,
        shape: &PrefillShape,
        q: &CudaSlice<u16>,
        kv: &PagedKv<'_>,
        cu_seqlens_q: &CudaSlice<i32>,
        context_lens: &CudaSlice<i32>,
        out: &mut CudaSlice<u16>,
    ) -> Result<(), GpuError> {
        const OP: &str = "attention_prefill";
        let (s, t, qh) = (shape.num_seqs, shape.total_tokens, shape.q_heads);
        let max_group = if kernel == AttentionKernel::Simt {
            MAX_GQA_GROUP_SIMT
        } else {
            MAX_GQA_GROUP
        };
        kv.check(OP, s, qh, max_group)?;
        let d = kv.layout.head_dim;
        need(OP, "q", q, t * qh * d)?;
        need(OP, "out", out, t * qh * d)?;
        need(OP, "cu_seqlens_q", cu_seqlens_q, s + 1)?;
        need(OP, "context_lens", context_lens, s)?;
        let ti = i32_of(OP, "total_tokens", t)?;
        if s == 0 || t == 0 || shape.max_chunk_len == 0 {
            return Ok(());
        }
        let (id, grid_x) = match (kernel, d) {
            (AttentionKernel::Simt, 64) => (KernelId::AttnPrefillD64F16, shape.max_chunk_len.div_ceil(PREFILL_ROWS)),
            (AttentionKernel::Simt, _) => (KernelId::AttnPrefillD128F16, shape.max_chunk_len.div_ceil(PREFILL_ROWS)),
            // Rows are (token, head-of-group) pairs, prefill_tc_rows() per block.
            (AttentionKernel::TensorCore, 64) => (
                KernelId::AttnPrefillTcD64F16,
                (shape.max_chunk_len * (qh / kv.layout.kv_heads)).div_ceil(prefill_tc_rows()),
            ),
            (AttentionKernel::TensorCore, _) => (
                KernelId::AttnPrefillTcD128F16,
                (shape.max_chunk_len * (qh / kv.layout.kv_heads)).div_ceil(prefill_tc_rows()),
            ),
        };
        let grid_yz = match kernel {
            AttentionKernel::Simt => (qh as u32, grid_u32(OP, s)?),
            AttentionKernel::TensorCore => (kv.layout.kv_heads as u32, grid_u32(OP, s)?),
        };
        let qh_i = qh as i32;
        let kvh = kv.layout.kv_heads as i32;
        let bs = kv.layout.block_size as i32;
        let mbps = kv.max_blocks_per_seq as i32;
        let nb = kv.layout.num_blocks as i32;
        let scale = 1.0 / (d as f32).sqrt();
        let cfg = LaunchConfig {
            grid_dim: (grid_u32(OP, grid_x)?, grid_yz.0, grid_yz.1),
            block_dim: match kernel {
                AttentionKernel::Simt => (128, 1, 1),
                AttentionKernel::TensorCore => (32 * super::compile::prefill_tc_warps() as u32, 1, 1),
            },
            shared_mem_bytes: match kernel {
                AttentionKernel::Simt => 0,
                AttentionKernel::TensorCore => prefill_tc_smem_bytes(d),
            },
        };
        let f = self.kernels().get(id);
        let mut b = self.stream().launch_builder(f);
        b.arg(q)
            .arg(kv.k)
            .arg(kv.v)
            .arg(kv.block_tables)
            .arg(cu_seqlens_q)
            .arg(context_lens)
            .arg(out);
        b.arg(&ti).arg(&qh_i).arg(&kvh).arg(&bs).arg(&mbps).arg(&nb).arg(&scale);
        // SAFETY: both prefill kernels take the same arguments. They clamp the sequence offsets to [0, total_tokens],
        // so they read and write only rows < total_tokens of q and out (t*qh*d each, checked); they read the cache
        // only through block-table entries in [0, num_blocks) and s+1 / s entries of cu_seqlens_q / context_lens
        // (checked above). The tensor-core one runs with the block size it was compiled for (prefill_tc_warps()
        // warps: the same count reaches it as PF_TC_WARPS) and the dynamic shared memory it lays out, whose limit
        // Kernels::load raised to that size.
        unsafe { b.launch(cfg) }?;
        Ok(())
    }
}

fn check_norm(
    op: &'static str,
    tokens: usize,
    hidden: usize,
    rows: &[(&str, &CudaSlice<u16>)],
    weight: &CudaSlice<u16>,
) -> Result<(), GpuError> {
    if hidden == 0 || !hidden.is_multiple_of(2) {
        return Err(GpuError::shape(
            op,
            format!("hidden = {hidden} must be even and positive"),
        ));
    }
    i32_of(op, "hidden", hidden)?;
    for (what, buf) in rows {
        need(op, what, buf, tokens * hidden)?;
    }
    need(op, "weight", weight, hidden)
}

/// Rows per block of the norm and embedding kernels: one warp each, 256 threads (`NORM_ROWS`, `EMB_ROWS`).
const ROWS_PER_BLOCK: usize = 8;

fn norm_cfg(tokens: usize) -> Result<LaunchConfig, GpuError> {
    Ok(LaunchConfig {
        grid_dim: (grid_u32("norm", tokens.div_ceil(ROWS_PER_BLOCK))?, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    })
}
