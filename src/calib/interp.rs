//! Piecewise-linear interpolation over measured grids. Between grid points a kernel's time is close to linear in
//! its size once the grid is dense where tile and wave effects live (small token counts), so straight lines between
//! neighbours are both simple and accurate; beyond the grid the trend of its upper half is extended (throughput-bound
//! regime: the slope from the grid point at half the last one to the last, not the last segment's, whose slope on a
//! fine grid is mostly measurement noise and, extended far, multiplies it), below it the first point holds
//! (launch-bound regime).

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use serde::{Deserialize, Serialize};

use crate::model::{DECODE_PARTITION_MIN, DECODE_UNSPLIT_MAX};

/// y(x) measured at increasing x.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Curve {
    pub x: Vec<f64>,
    pub y: Vec<f64>,
}

impl Curve {
    /// Panics unless `x` is non-empty, strictly increasing and as long as `y`.
    pub fn new(x: Vec<f64>, y: Vec<f64>) -> Curve {
        let c = Curve { x, y };
        c.check().expect("valid curve");
        c
    }

    pub fn check(&self) -> Result<(), String> {
        if self.x.is_empty() || self.x.len() != self.y.len() {
            return Err(format!("{} x values and {} y values", self.x.len(), self.y.len()));
        }
        if self
            .x
            .windows(2)
            .any(|w| w[0].partial_cmp(&w[1]) != Some(std::cmp::Ordering::Less))
        {
            return Err("x values must increase strictly".into());
        }
        if self.y.iter().any(|y| !y.is_finite()) {
            return Err("y values must be finite".into());
        }
        Ok(())
    }

    pub fn at(&self, x: f64) -> f64 {
        lerp(&self.x, &self.y, x)
    }
}

/// Piecewise-linear y(v) through (xs, ys), xs strictly increasing and non-empty: the first value below the grid,
/// the upper half's trend extended (never below its end, [`extension_base`]) above it. Allocation-free: cost models
/// call it per step.
pub fn lerp(xs: &[f64], ys: &[f64], v: f64) -> f64 {
    let n = xs.len();
    if n == 1 || v <= xs[0] {
        return ys[0];
    }
    if v > xs[n - 1] {
        let m = extension_base(xs);
        return extend((xs[m], ys[m]), (xs[n - 1], ys[n - 1]), v);
    }
    let i = xs.partition_point(|&x| x < v).clamp(1, n - 1);
    let (x0, x1, y0, y1) = (xs[i - 1], xs[i], ys[i - 1], ys[i]);
    y0 + (y1 - y0) * (v - x0) / (x1 - x0)
}

/// The grid point a value beyond the grid is extrapolated from, with the last one: the largest at or below half the
/// last (the first, if none is), never the last itself. `xs` has at least two points.
fn extension_base(xs: &[f64]) -> usize {
    let n = xs.len();
    let half = xs[n - 1] / 2.0;
    xs.partition_point(|&x| x <= half).saturating_sub(1).min(n - 2)
}

/// The line through `a` and `b` (b the grid's last point) at `v` beyond `b`, never below b's value.
fn extend(a: (f64, f64), b: (f64, f64), v: f64) -> f64 {
    (b.1 + (b.1 - a.1) * (v - b.0) / (b.0 - a.0)).max(b.1)
}

/// z(x, y) measured on the grid x × y, row-major (`z[i * y.len() + j]` at `x[i]`, `y[j]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Surface {
    pub x: Vec<f64>,
    pub y: Vec<f64>,
    pub z: Vec<f64>,
}

impl Surface {
    pub fn check(&self) -> Result<(), String> {
        if self.z.len() != self.x.len() * self.y.len() {
            return Err(format!(
                "{} values for a {}×{} grid",
                self.z.len(),
                self.x.len(),
                self.y.len()
            ));
        }
        Curve {
            x: self.x.clone(),
            y: vec![0.0; self.x.len()],
        }
        .check()?;
        Curve {
            x: self.y.clone(),
            y: vec![0.0; self.y.len()],
        }
        .check()?;
        if self.z.iter().any(|z| !z.is_finite()) {
            return Err("values must be finite".into());
        }
        Ok(())
    }

    /// Along y within each of the two x rows around `x`, then along x, with the same edge rules as [`lerp`].
    pub fn at(&self, x: f64, y: f64) -> f64 {
        let ny = self.y.len();
        let row = |i: usize| lerp(&self.y, &self.z[i * ny..(i + 1) * ny], y);
        let n = self.x.len();
        if n == 1 || x <= self.x[0] {
            return row(0);
        }
        if x > self.x[n - 1] {
            let m = extension_base(&self.x);
            return extend((self.x[m], row(m)), (self.x[n - 1], row(n - 1)), x);
        }
        let i = self.x.partition_point(|&v| v < x).clamp(1, n - 1);
        lerp(&[self.x[i - 1], self.x[i]], &[row(i - 1), row(i)], x)
    }
}

/// A surface interpolated as floor + (excess time per unit of work) × work: where time itself curves with size
/// (prefill attention grows with the square of the chunk), the excess per unit of work is nearly flat, and straight
/// lines between grid points fit it far better. `floor` is the smallest measured value (the launch floor).
#[derive(Clone, Debug)]
pub struct WorkSurface<W> {
    floor: f64,
    per_work: Surface,
    work: W,
}

/// The work of a grid point (x, y) a [`WorkSurface`] divides its time by.
pub trait Work {
    fn of(&self, x: f64, y: f64) -> f64;
}

impl Work for fn(f64, f64) -> f64 {
    fn of(&self, x: f64, y: f64) -> f64 {
        self(x, y)
    }
}

impl Work for PrefillLaunch {
    fn of(&self, chunk: f64, offset: f64) -> f64 {
        self.work(chunk, offset)
    }
}

impl<W: Work> WorkSurface<W> {
    pub fn new(measured: &Surface, work: W) -> WorkSurface<W> {
        let floor = measured.z.iter().copied().fold(f64::INFINITY, f64::min);
        let ny = measured.y.len();
        let z = measured
            .z
            .iter()
            .enumerate()
            .map(|(i, &t)| (t - floor) / work.of(measured.x[i / ny], measured.y[i % ny]).max(1.0))
            .collect();
        WorkSurface {
            floor,
            per_work: Surface {
                x: measured.x.clone(),
                y: measured.y.clone(),
                z,
            },
            work,
        }
    }

    pub fn at(&self, x: f64, y: f64) -> f64 {
        self.floor + self.per_work.at(x, y).max(0.0) * self.work.of(x, y).max(1.0)
    }

    pub fn floor(&self) -> f64 {
        self.floor
    }
}

/// How much more an SM does with a second block of a prefill launch resident beside the first: each further
/// block adds this share of one block's own rate (two blocks run at 1.7 times one, each at 0.85 of its rate
/// alone). One constant for every card and model, chosen in sample: predicting each interior chunk row of a
/// profile's prefill grid from its two neighbours, the H100 profiles of both models (kernels 2d0bba9b2426) and the
/// H200's (5a0ce37cecb6) were read best between 0.6 and 0.8 (mean errors 3.1-3.8%; at 0.7 3.4-4.0%), against
/// 8.2-10.0% with work counted in attention pairs.
pub const PREFILL_SHARING: f64 = 0.7;

/// A prefill attention launch of one chunk as the tensor-core kernel spreads it: blocks of `rows` (token, head of
/// group) query rows, `group` query heads a kv head, a row of blocks per kv head; each block walks the keys up to
/// its last token in whole [`PREFILL_KEY_TILE`]s; `resident` blocks fit an SM at once, `sms` SMs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PrefillLaunch {
    pub sms: u32,
    pub kv_heads: u32,
    pub group: u32,
    pub rows: u32,
    pub resident: u32,
}

impl PrefillLaunch {
    /// The launch a profile's prefill table was measured with: its card's SMs, its model's heads.
    pub fn of(f: &crate::calib::profile::Fingerprint) -> PrefillLaunch {
        let m = &f.model;
        let head_dim = m.head_dim as usize;
        PrefillLaunch {
            sms: f.sm_count.max(1),
            kv_heads: m.kv_heads.max(1),
            group: (m.heads / m.kv_heads.max(1)).max(1),
            rows: crate::gpu::ops::prefill_tc_rows() as u32,
            resident: crate::gpu::ops::prefill_resident_blocks(&f.compute_capability, head_dim) as u32,
        }
    }

    /// The keys the block of query tile `tile` walks, for a chunk of `chunk` tokens after `offset`.
    fn keys(&self, tile: u64, chunk: u64, offset: u64) -> f64 {
        let (rows, group) = (u64::from(self.rows), u64::from(self.group));
        let last = ((rows * tile + rows - 1) / group + 1).min(chunk);
        let tile_keys = PREFILL_KEY_TILE as u64;
        ((offset + last).div_ceil(tile_keys) * tile_keys) as f64
    }

    /// The launch's time in units of one block's time per key, alone on an SM: the SM that finishes last. While
    /// the launch fits the GPU at once, block b sits on SM b mod SMs beside the others there, which share it (n
    /// blocks run at 1 + [`PREFILL_SHARING`]·(n − 1) blocks' rate together); beyond that each block starts, in
    /// launch order, where a resident slot frees first. Where every block has an SM to itself the longest
    /// block (the chunk's last rows, offset + chunk keys) sets the time, not the pairs all of them score: chunks
    /// whose blocks just fill the SMs cost far less per pair than chunks with a few blocks more.
    pub fn work(&self, chunk: f64, offset: f64) -> f64 {
        let (chunk, offset) = (chunk.max(1.0).ceil() as u64, offset.max(0.0).ceil() as u64);
        let tiles = (chunk * u64::from(self.group)).div_ceil(u64::from(self.rows));
        let blocks = tiles * u64::from(self.kv_heads);
        let (sms, resident) = (u64::from(self.sms), u64::from(self.resident.clamp(1, MAX_RESIDENT)));
        let keys = |b: u64| self.keys(b % tiles, chunk, offset);
        if blocks <= sms * resident {
            let mut longest = 0.0f64;
            let mut on_sm = [0.0f64; MAX_RESIDENT as usize];
            for sm in 0..sms.min(blocks) {
                let n = (blocks - sm).div_ceil(sms) as usize;
                for (i, k) in on_sm[..n].iter_mut().enumerate() {
                    *k = keys(sm + i as u64 * sms);
                }
                longest = longest.max(shared_time(&mut on_sm[..n]));
            }
            longest
        } else {
            // Every slot taken as busy throughout: each runs at its share of a full SM's rate.
            let rate = (1.0 + PREFILL_SHARING * (resident - 1) as f64) / resident as f64;
            let mut slots: BinaryHeap<Reverse<u64>> = (0..sms * resident).map(|_| Reverse(0)).collect();
            let mut end = 0.0f64;
            for b in 0..blocks {
                let Reverse(free) = slots.pop().unwrap_or(Reverse(0));
                let done = f64::from_bits(free) + keys(b) / rate;
                end = end.max(done);
                // Non-negative floats order as their bits do.
                slots.push(Reverse(done.to_bits()));
            }
            end
        }
    }
}

/// The most blocks of a prefill launch an SM is taken to hold at once (its threads allow 16 of 128).
const MAX_RESIDENT: u32 = 16;

/// Time for the blocks of `keys` sharing one SM from the start (n of them run at 1 + [`PREFILL_SHARING`]·(n − 1)
/// blocks' rate together, split evenly), until the last is done. Sorts `keys`.
fn shared_time(keys: &mut [f64]) -> f64 {
    keys.sort_by(f64::total_cmp);
    let n = keys.len();
    let (mut t, mut done) = (0.0, 0.0);
    for (i, &k) in keys.iter().enumerate() {
        let active = (n - i) as f64;
        let each = (1.0 + PREFILL_SHARING * (active - 1.0)) / active;
        t += (k - done) / each;
        done = k;
    }
    t
}

/// Query rows one prefill attention block takes (the tensor-core kernel's tile).
pub const PREFILL_QUERY_TILE: f64 = 64.0;

/// Cached tokens one prefill attention block walks at a time ([`crate::gpu::ops::PREFILL_KEY_TILE`]).
pub const PREFILL_KEY_TILE: f64 = crate::gpu::ops::PREFILL_KEY_TILE as f64;

/// Prefill attention's time over chunk × offset. A chunk of at most one query tile is one block per kv head, whose
/// time grows with the keys it walks (offset + chunk), a line in both: read straight from the measured surface
/// (out of sample on an H100 and an H200, chunk 48 × offset 64 within 4%, against 22% per unit of work). Longer
/// chunks spread over blocks and SMs: a [`WorkSurface`] over the launch's work as [`PrefillLaunch::work`] counts
/// it (out of sample on an H100, qwen2.5-1.5b's chunks of 700 within 5.5% where counting attention pairs read them
/// 10-14% slow: their 132 blocks fill the 132 SMs one each, the grid's 768 puts two on some).
#[derive(Clone, Debug)]
pub struct PrefillSurface {
    measured: Surface,
    work: WorkSurface<PrefillLaunch>,
}

impl PrefillSurface {
    /// The surface of a prefill table measured with `launch`'s geometry ([`PrefillLaunch::of`] its profile).
    pub fn new(measured: &Surface, launch: PrefillLaunch) -> PrefillSurface {
        PrefillSurface {
            measured: measured.clone(),
            work: WorkSurface::new(measured, launch),
        }
    }

    /// A block walks its keys in whole tiles of [`PREFILL_KEY_TILE`], and the blocks that walk the most (the
    /// chunk's last rows, which see offset + chunk keys) set the launch's time whenever the grid fits the GPU at
    /// once, so the offset is first raised to where offset + chunk fills its last tile (out of sample on an H100,
    /// p95 5.1% against 8.3% without; chunk 200 × offset 64 within 2%, from 12%).
    pub fn at(&self, chunk: f64, offset: f64) -> f64 {
        let keys = ((offset + chunk) / PREFILL_KEY_TILE).ceil() * PREFILL_KEY_TILE;
        let offset = (keys - chunk).max(offset);
        if chunk <= PREFILL_QUERY_TILE {
            self.measured.at(chunk, offset)
        } else {
            self.work.at(chunk, offset)
        }
    }

    /// The launch floor: the smallest measured time.
    pub fn floor(&self) -> f64 {
        self.work.floor()
    }
}

/// Decode attention's time for `batch` sequences over `context` tokens, from its batch × context table, where the
/// kernel splits the context into partitions of `partition` tokens ([`crate::model::decode_partition`] for this
/// batch and context) and a block's warps take `round` tokens a round between them
/// ([`crate::gpu::ops::decode_round_tokens`]: 16 a warp). The kernel's time is a step function of the context, not a
/// line: a block takes whole rounds, and one token past a partition's edge costs a whole partition more. Up to
/// [`DECODE_UNSPLIT_MAX`] tokens (one partition) and wherever the partitions are larger than the smallest,
/// [`DECODE_PARTITION_MIN`] (their edges fall on none of the grid's 256-token steps between two measured points),
/// the context is rounded up to whole rounds; in partitions of the smallest size, to the next multiple of it (the
/// measured grid sits on those edges) before the table is read: in partitions of 256, 513 tokens cost what 768
/// cost, not what 514 would on a line from 512; in partitions of 1,024 and rounds of 64, 2,600 tokens cost what the
/// line from 2,560 to 3,072 says at 2,624, not what 2,816 costs (out of sample on an H100, p95 11% against 14% with
/// the 256-token rounding everywhere).
pub fn decode_attention_at(table: &Surface, batch: f64, context: f64, partition: u64, round: f64) -> f64 {
    let edge = if context > DECODE_UNSPLIT_MAX as f64 && partition <= DECODE_PARTITION_MIN {
        DECODE_PARTITION_MIN as f64
    } else {
        round
    };
    table.at(batch, (context / edge).ceil().max(1.0) * edge)
}

/// Attention pairs of a causal prefill chunk of `chunk` tokens after `offset` cached ones.
pub fn prefill_pairs(chunk: f64, offset: f64) -> f64 {
    chunk * offset + chunk * (chunk + 1.0) / 2.0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// qwen2.5-1.5b's prefill launch on an H100: 132 SMs, 2 kv heads of 6 query heads, 64 rows a block, two
    /// blocks an SM.
    fn h100_1_5b() -> PrefillLaunch {
        PrefillLaunch {
            sms: 132,
            kv_heads: 2,
            group: 6,
            rows: 64,
            resident: 2,
        }
    }

    /// As many blocks an SM holds as its shared memory allows: on an H100 two for heads of 128 values (87 KB
    /// each), four for heads of 64; one on a card of 100 KB.
    #[test]
    fn resident_prefill_blocks_follow_shared_memory() {
        use crate::gpu::ops::prefill_resident_blocks;
        assert_eq!(prefill_resident_blocks("9.0", 128), 2);
        assert_eq!(prefill_resident_blocks("9.0", 64), 4);
        assert_eq!(prefill_resident_blocks("8.9", 128), 1);
        assert_eq!(prefill_resident_blocks("8.0", 64), 3);
    }

    /// Mean error of reading each interior chunk row of a prefill table (beyond one query tile) per unit of
    /// `work` from the rows either side of it, as [`PREFILL_SHARING`] was chosen.
    fn leave_row_out_error(t: &Surface, work: impl Fn(f64, f64) -> f64) -> f64 {
        let floor = t.z.iter().copied().fold(f64::INFINITY, f64::min);
        let ny = t.y.len();
        let per_work = |i: usize, j: usize| (t.z[i * ny + j] - floor) / work(t.x[i], t.y[j]);
        let mut errors = Vec::new();
        for i in 1..t.x.len() - 1 {
            if t.x[i - 1] <= PREFILL_QUERY_TILE {
                continue;
            }
            for j in 0..ny {
                let w = lerp(
                    &[t.x[i - 1], t.x[i + 1]],
                    &[per_work(i - 1, j), per_work(i + 1, j)],
                    t.x[i],
                );
                let predicted = floor + w * work(t.x[i], t.y[j]);
                errors.push((predicted - t.z[i * ny + j]).abs() / t.z[i * ny + j]);
            }
        }
        errors.iter().sum::<f64>() / errors.len() as f64
    }

    /// On the committed H100 profiles' own prefill grids, the launch's work reads a chunk row from its neighbours
    /// within 5% on average, pairs only within 8-10%.
    #[test]
    fn the_launch_work_reads_the_committed_prefill_grids_better_than_pairs() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("calibration/h100-80gb-hbm3");
        for model in ["qwen2.5-0.5b", "qwen2.5-1.5b"] {
            let p = crate::calib::profile::Profile::load(&dir.join(format!("{model}.json"))).unwrap();
            let launch = PrefillLaunch::of(&p.fingerprint);
            let t = &p.attention_prefill.us;
            let by_launch = leave_row_out_error(t, |c, o| launch.work(c, o));
            let by_pairs = leave_row_out_error(t, prefill_pairs);
            assert!(by_launch < 0.05, "{model}: {by_launch}");
            assert!(by_launch < 0.6 * by_pairs, "{model}: {by_launch} against {by_pairs}");
        }
    }

    /// Where every block has an SM to itself the launch takes its longest block's keys: the chunk's last rows,
    /// offset + chunk rounded up to whole key tiles.
    #[test]
    fn a_launch_within_one_block_an_sm_takes_its_longest_block() {
        let l = h100_1_5b();
        // 700 tokens × 6 heads = 4,200 rows: 66 blocks a kv head, 132 in all, one an SM.
        assert_eq!(l.work(700.0, 3500.0), 4224.0);
        // 704 tokens: 66 blocks again (4,224 rows), the last walks 3,500 + 704 keys, in 66 tiles of 64.
        assert_eq!(l.work(704.0, 3500.0), 4224.0);
        // 768 tokens: 144 blocks, the last 12 beside the first 12 on the first 12 SMs.
        assert!(l.work(768.0, 3500.0) > 4288.0);
    }

    /// Two blocks on one SM run at 1 + s times one's rate together: the shorter done after 2·k₁ / (1 + s), the
    /// longer alone for the rest. Beyond what SMs hold at once, blocks wait for a slot.
    #[test]
    fn blocks_sharing_an_sm_and_waiting_for_one_are_timed() {
        let one = PrefillLaunch {
            sms: 1,
            kv_heads: 2,
            group: 1,
            rows: 64,
            resident: 2,
        };
        // A chunk of 64 tokens: one block per kv head, both walking 64 + 64 keys, together at 1.7 blocks' rate.
        let s = PREFILL_SHARING;
        assert!((one.work(64.0, 64.0) - 2.0 * 128.0 / (1.0 + s)).abs() < 1e-9);
        // 128 tokens: 4 blocks (128 and 192 keys per kv head), two slots of rate (1 + s) / 2 each: the blocks
        // take 128, 192 (the first kv head) then 128, 192 (the second), each in the first slot to free.
        let rate = (1.0 + s) / 2.0;
        let slots = [128.0 / rate + 128.0 / rate, 192.0 / rate + 192.0 / rate];
        assert!((one.work(128.0, 64.0) - slots[0].max(slots[1])).abs() < 1e-9);
        // More SMs: one block each, the longest alone.
        let many = PrefillLaunch { sms: 8, ..one };
        assert_eq!(many.work(128.0, 64.0), 192.0);
    }

    #[test]
    fn curve_interpolates_and_extends() {
        let c = Curve::new(vec![1.0, 2.0, 4.0], vec![10.0, 12.0, 20.0]);
        assert_eq!(c.at(0.5), 10.0);
        assert_eq!(c.at(1.0), 10.0);
        assert_eq!(c.at(1.5), 11.0);
        assert_eq!(c.at(3.0), 16.0);
        assert_eq!(c.at(4.0), 20.0);
        assert_eq!(c.at(8.0), 36.0);
        let falling = Curve::new(vec![1.0, 2.0], vec![5.0, 4.0]);
        assert_eq!(falling.at(10.0), 4.0);
        assert_eq!(Curve::new(vec![3.0], vec![7.0]).at(100.0), 7.0);
    }

    /// Far beyond a fine grid, the last segment's slope is noise: the upper half's trend is extended instead.
    #[test]
    fn beyond_the_grid_the_upper_half_trend_is_extended() {
        // 0.1 per unit up to 8064, then a last segment 30 units steep by noise.
        let x = vec![1024.0, 2048.0, 4096.0, 8064.0, 8192.0];
        let y = vec![102.4, 204.8, 409.6, 806.4, 836.4];
        let c = Curve::new(x.clone(), y.clone());
        // From (4096, 409.6) to (8192, 836.4): 0.1042 per unit, not the last segment's 0.234.
        let slope = (836.4 - 409.6) / 4096.0;
        assert!((c.at(16384.0) - (836.4 + slope * 8192.0)).abs() < 1e-9);
        assert!(c.at(16384.0) < 836.4 + 0.15 * 8192.0);
        // The same along a surface's first axis.
        let s = Surface {
            x,
            y: vec![0.0, 1.0],
            z: y.iter().flat_map(|&v| [v, 2.0 * v]).collect(),
        };
        assert!((s.at(16384.0, 1.0) - 2.0 * (836.4 + slope * 8192.0)).abs() < 1e-9);
        // Two points: the one segment; a falling trend holds its end.
        assert_eq!(Curve::new(vec![1.0, 3.0], vec![2.0, 4.0]).at(5.0), 6.0);
        assert_eq!(Curve::new(vec![1.0, 2.0, 4.0], vec![5.0, 9.0, 4.0]).at(10.0), 4.0);
    }

    /// Up to one query tile the measured surface is read on straight lines; beyond it, per unit of work.
    #[test]
    fn prefill_reads_one_query_tile_straight_and_longer_chunks_by_work() {
        // t = 3 + 0.01 · (offset + chunk) up to a tile, 3 + 0.002 · pairs beyond.
        let (x, y) = (vec![1.0, 32.0, 64.0, 512.0], vec![0.0, 512.0, 4096.0]);
        let t = |c: f64, o: f64| {
            if c <= PREFILL_QUERY_TILE {
                3.0 + 0.01 * (o + c)
            } else {
                3.0 + 0.002 * prefill_pairs(c, o)
            }
        };
        let z = x.iter().flat_map(|&c| y.iter().map(move |&o| t(c, o))).collect();
        let p = PrefillSurface::new(&Surface { x, y, z }, h100_1_5b());
        // A line in chunk and offset: exact between grid points (where offset + chunk is whole key tiles).
        assert!((p.at(48.0, 80.0) - t(48.0, 80.0)).abs() < 1e-9);
        assert!((p.at(16.0, 2032.0) - t(16.0, 2032.0)).abs() < 1e-9);
        // Per unit of work beyond the tile, exact at the grid's points.
        assert!((p.at(512.0, 4096.0) - t(512.0, 4096.0)).abs() < 1e-9);
        // Per unit of work the tile's own points would be read far off: 48 × 80 from the 32 and 64 rows.
        let work = WorkSurface::new(&p.measured, prefill_pairs as fn(f64, f64) -> f64);
        assert!((work.at(48.0, 80.0) - t(48.0, 80.0)).abs() > 0.1);
        assert_eq!(p.floor(), 3.01);
    }

    /// A block walks the cached tokens in whole tiles of 64: a chunk whose keys end inside a tile costs what the
    /// whole tile costs, whether one query tile or longer.
    #[test]
    fn prefill_reads_the_keys_in_whole_tiles() {
        let (x, y) = (vec![1.0, 64.0, 512.0], vec![0.0, 512.0, 4096.0]);
        let z = x
            .iter()
            .flat_map(|&c| y.iter().map(move |&o| 3.0 + 0.01 * c + 0.02 * o))
            .collect();
        let p = PrefillSurface::new(&Surface { x, y, z }, h100_1_5b());
        // 48 + 100 = 148 keys: three tiles, as 48 + 144 = 192.
        assert_eq!(p.at(48.0, 100.0), p.at(48.0, 144.0));
        assert!(p.at(48.0, 100.0) > p.at(48.0, 80.0));
        // 200 + 64 = 264 keys: five tiles, as 200 + 120; 200 + 56 = 256 is four whole ones, read as it stands.
        assert_eq!(p.at(200.0, 64.0), p.at(200.0, 120.0));
        assert!(p.at(200.0, 56.0) < p.at(200.0, 64.0));
        assert_eq!(p.at(200.0, 56.0), p.work.at(200.0, 56.0));
    }

    #[test]
    fn work_surface_is_exact_for_floor_plus_linear_work() {
        // t = 3 + 0.002 · pairs is curved in the chunk but flat per pair.
        let (x, y) = (vec![1.0, 64.0, 512.0], vec![0.0, 512.0, 4096.0]);
        let z = x
            .iter()
            .flat_map(|&c| y.iter().map(move |&o| 3.0 + 0.002 * prefill_pairs(c, o)))
            .collect();
        let s = Surface { x, y, z };
        let w = WorkSurface::new(&s, prefill_pairs as fn(f64, f64) -> f64);
        for (c, o) in [(200.0, 100.0), (48.0, 3000.0), (700.0, 0.0)] {
            let exact = 3.0 + 0.002 * prefill_pairs(c, o);
            assert!(
                (w.at(c, o) - exact).abs() / exact < 0.05,
                "{c} {o}: {} vs {exact}",
                w.at(c, o)
            );
            // Plain bilinear interpolation is further off where the chunk's square dominates.
        }
        assert!(
            (w.at(300.0, 0.0) - (3.0 + 0.002 * prefill_pairs(300.0, 0.0))).abs()
                < (s.at(300.0, 0.0) - (3.0 + 0.002 * prefill_pairs(300.0, 0.0))).abs()
        );
    }

    #[test]
    fn invalid_curves_are_rejected() {
        assert!(
            Curve {
                x: vec![1.0, 1.0],
                y: vec![1.0, 2.0]
            }
            .check()
            .is_err()
        );
        assert!(Curve { x: vec![], y: vec![] }.check().is_err());
        assert!(
            Curve {
                x: vec![1.0],
                y: vec![f64::NAN]
            }
            .check()
            .is_err()
        );
    }

    #[test]
    fn surface_is_bilinear_inside_the_grid() {
        // z = x + 10·y is reproduced exactly.
        let (x, y) = (vec![1.0, 2.0, 4.0], vec![0.0, 1.0]);
        let z: Vec<f64> = x.iter().flat_map(|&a| y.iter().map(move |&b| a + 10.0 * b)).collect();
        let s = Surface { x, y, z };
        s.check().unwrap();
        assert_eq!(s.at(3.0, 0.5), 8.0);
        assert_eq!(s.at(1.0, 1.0), 11.0);
        assert_eq!(s.at(8.0, 0.0), 8.0);
        assert_eq!(s.at(0.0, 0.0), 1.0);
    }

    #[test]
    fn decode_attention_is_read_at_the_next_round_or_smallest_partition_edge() {
        // One partition up to 512 tokens (whole 64-token rounds); beyond, partitions of 256 and a merge.
        let s = Surface {
            x: vec![1.0],
            y: vec![64.0, 128.0, 512.0, 768.0, 1024.0],
            z: vec![4.0, 5.0, 9.0, 12.0, 13.0],
        };
        s.check().unwrap();
        let at = |context: f64, partition: u64| decode_attention_at(&s, 1.0, context, partition, 64.0);
        // In partitions of 256, 513 tokens need a third: as 768 cost, where a line from 512 to 768 would say 9.01.
        assert_eq!(at(513.0, 256), 12.0);
        assert_eq!(at(768.0, 256), 12.0);
        assert_eq!(at(800.0, 256), 13.0);
        // In partitions of 1,024 no partition starts at 769: only the 64-token rounds step.
        assert_eq!(at(800.0, 1024), 12.0 + 64.0 / 256.0);
        assert_eq!(at(513.0, 1024), 9.0 + 3.0 * 64.0 / 256.0);
        // Within one partition a block takes whole 64-token rounds.
        assert_eq!(at(65.0, 512), 5.0);
        assert_eq!(at(40.0, 512), 4.0);
        assert_eq!(at(129.0, 512), 5.0 + 4.0 * 64.0 / 384.0);
        // Grid points are read as they are.
        assert_eq!(at(128.0, 512), 5.0);
        assert_eq!(at(512.0, 512), 9.0);
        assert_eq!(at(1024.0, 256), 13.0);
        // Rounds of 128 (8 warps): 65 tokens cost what 128 cost, 129 what 256 would on the line from 128 to 512.
        assert_eq!(decode_attention_at(&s, 1.0, 65.0, 512, 128.0), 5.0);
        assert_eq!(
            decode_attention_at(&s, 1.0, 129.0, 512, 128.0),
            5.0 + 4.0 * 128.0 / 384.0
        );
    }
}
