//! The measurement driver behind `batchlab calibrate`: times each op of the model's forward pass on the GPU over
//! the grid of shapes its serving steps produce, and assembles a [`Profile`].
//!
//! Each point is `warmup` untimed launches then `repeats` launches, each bracketed by its own CUDA events,
//! summarised by the median and the relative spread (p90 − p10) / median. Weights are rotated among enough copies
//! that the set is larger than twice the L2 cache, so no timing is flattered by weights already sitting in L2.

use super::interp::{Curve, Surface};
use super::profile::{
    CalibrationRun, Fingerprint, GemmTable, MixedDecode, OpTable, PROFILE_FORMAT, Profile, SurfaceTable, TunedPlan,
    tuned_plan,
};
use crate::gpu::{
    DecodeShape, DecodeWorkspace, F16Buffer, GemmPlan, Gpu, GpuError, I32Buffer, KvAppendShape, KvCacheMut, PagedKv,
    PagedKvLayout, PrefillShape, TUNED_MAX_ROWS, Timing, gemm_candidates, kernel_driver_version, kernel_source_hash,
};
use crate::metrics::percentile_sorted;
use crate::model::{ModelSpec, cublas_grid, cublas_rows};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::time::Instant;

/// The shapes to measure.
#[derive(Clone, Debug, PartialEq)]
pub struct Grid {
    /// Token counts (rows) for GEMMs and elementwise ops: dense where tile and wave effects live.
    pub tokens: Vec<u32>,
    /// Rows for lm_head and argmax over the vocabulary (sequences sampled in a step).
    pub sampled_rows: Vec<u32>,
    /// The row counts cuBLAS is timed at, for the step's tokens and for the sampled rows: where our kernel is
    /// ([`Grid::standard`], [`Grid::offset`]), or where the engine runs cuBLAS padded ([`Grid::with_padded_cublas`]).
    pub cublas_tokens: Vec<u32>,
    pub cublas_sampled_rows: Vec<u32>,
    pub prefill_chunks: Vec<u32>,
    pub prefill_offsets: Vec<u32>,
    pub decode_batches: Vec<u32>,
    pub decode_contexts: Vec<u32>,
    /// Batches of mixed context lengths.
    pub mixed: Vec<Vec<u32>>,
}

impl Grid {
    /// The profile's grid. Row counts sit on GEMM tile edges (1–8, then multiples of 16 to 256, of 64 to 1024, of
    /// 128 to 8192), where a GEMM's time steps up; attention is measured densely enough for straight lines between
    /// neighbours. Decode batches bracket the edges where a launch's blocks (kv heads × sequences) pass a multiple
    /// of the SMs on a 132-SM card with two kv heads (batches 66, 132, 198), where the time steps up instead of
    /// growing along a line (64/72, 128/136, 192/200); the contexts 576 and 640 keep a split context (beyond 512
    /// tokens, a reduction launched after the partitions) from being read on a line from the unsplit 512.
    pub fn standard() -> Grid {
        let tokens = tile_edges(8192);
        Grid {
            sampled_rows: tokens.iter().copied().filter(|&t| t <= 1024).collect(),
            cublas_tokens: tokens.clone(),
            cublas_sampled_rows: tokens.iter().copied().filter(|&t| t <= 1024).collect(),
            tokens,
            prefill_chunks: vec![
                1, 16, 32, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096,
            ],
            prefill_offsets: vec![0, 128, 256, 512, 768, 1024, 1536, 2048, 3072, 4096, 6144, 8192],
            decode_batches: vec![
                1, 2, 4, 8, 16, 24, 32, 48, 56, 64, 72, 96, 112, 128, 136, 144, 176, 192, 200, 224, 256,
            ],
            decode_contexts: vec![
                16, 64, 128, 256, 384, 512, 576, 640, 768, 1024, 1280, 1536, 1792, 2048, 2560, 3072, 3584, 4096, 6144,
                8192,
            ],
            mixed: mixed_batches(&[4, 16, 64, 192], 11),
        }
    }

    /// A second grid with no point in common with [`Grid::standard`] (off the tile edges too): interpolation
    /// tested out of sample.
    pub fn offset() -> Grid {
        let tokens = vec![5, 11, 23, 45, 90, 170, 333, 700, 1300, 2600, 5000, 7000];
        let sampled_rows = vec![3, 12, 45, 90, 333, 700];
        Grid {
            cublas_tokens: tokens.clone(),
            cublas_sampled_rows: sampled_rows.clone(),
            tokens,
            sampled_rows,
            prefill_chunks: vec![48, 200, 700, 3000],
            prefill_offsets: vec![64, 900, 3500, 7000],
            decode_batches: vec![3, 12, 40, 80, 160],
            decode_contexts: vec![100, 700, 1300, 2600, 5000],
            mixed: mixed_batches(&[8, 32, 128], 12),
        }
    }

    /// The grid with cuBLAS timed where the engine runs it padded ([`cublas_rows`]; `calibrate`'s default, not with
    /// `--unpadded-cublas`): a profile's grid (`every`) at every row count the engine pads to, up to its largest, so
    /// that its tables are [`GemmTable::cublas_padded`] and the engine never runs cuBLAS where it was not timed;
    /// another (the offset grid) at the row counts its own pad to, what the engine runs there.
    pub fn with_padded_cublas(mut self, every: bool) -> Grid {
        let padded = |rows: &[u32]| -> Vec<u32> {
            let most = rows.iter().copied().max().unwrap_or(1);
            if every {
                return cublas_grid(most);
            }
            let mut v: Vec<u32> = rows.iter().map(|&r| cublas_rows(u64::from(r)) as u32).collect();
            v.dedup();
            v
        };
        self.cublas_tokens = padded(&self.tokens);
        self.cublas_sampled_rows = padded(&self.sampled_rows);
        self
    }

    /// [`Grid::with_padded_cublas`] where `pad`, else the grid as it is.
    pub fn with_padded_cublas_if(self, pad: bool, every: bool) -> Grid {
        if pad { self.with_padded_cublas(every) } else { self }
    }

    /// How many points the grid measures (for progress).
    pub fn points(&self) -> usize {
        let gemms = 4 * (self.tokens.len() + self.cublas_tokens.len())
            + self.sampled_rows.len()
            + self.cublas_sampled_rows.len();
        let ops = 4 * self.tokens.len() + self.sampled_rows.len();
        gemms
            + ops
            + self.prefill_chunks.len() * self.prefill_offsets.len()
            + self.decode_batches.len() * self.decode_contexts.len()
            + self.mixed.len()
    }

    fn max_tokens(&self) -> usize {
        self.tokens.iter().copied().max().unwrap_or(1) as usize
    }

    fn max_rows(&self) -> usize {
        self.sampled_rows.iter().copied().max().unwrap_or(1) as usize
    }
}

/// 1, 2, 4, 8, then multiples of 16 to 256, of 64 to 1024 and of 128 up to `max`.
fn tile_edges(max: u32) -> Vec<u32> {
    let mut v = vec![1, 2, 4, 8];
    v.extend((16..=256).step_by(16));
    v.extend((320..=1024).step_by(64));
    v.extend((1152..=max).step_by(128));
    v
}

/// For each batch size and spread, three batches of lognormal context lengths (means 256, 1024 and 3072; log-space
/// sigma 1, then 0.5) clamped to [1, 8192]: heterogeneous batches as continuous batching produces them, and the
/// milder spread of a static batch's prompts (longest about twice the mean).
fn mixed_batches(batches: &[u32], seed: u64) -> Vec<Vec<u32>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = Vec::new();
    for sigma in [1.0f64, 0.5] {
        for &b in batches {
            for mean in [256.0f64, 1024.0, 3072.0] {
                let mu = mean.ln() - sigma * sigma / 2.0;
                let contexts = (0..b)
                    .map(|_| {
                        // Box–Muller: two uniforms → one standard normal.
                        let (u1, u2): (f64, f64) = (rng.random::<f64>().max(1e-12), rng.random());
                        let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
                        (mu + sigma * z).exp().round().clamp(1.0, 8192.0) as u32
                    })
                    .collect();
                out.push(contexts);
            }
        }
    }
    out
}

#[derive(Clone, Debug)]
pub struct CalibrateConfig {
    pub model: ModelSpec,
    pub warmup: usize,
    pub repeats: usize,
    /// Whole passes over the grid; each point keeps the median over passes.
    pub passes: usize,
    pub block_size: u32,
    pub grid: Grid,
    /// Leave the GPU idle after each heavy point as long as it kept it busy ([`Bench::cool_down`]).
    pub cool_down: bool,
    /// At most this many rows for [`Profile::graph_ours_rows`] (`None`: as the tables decide).
    pub graph_ours_rows_max: Option<u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum CalibError {
    #[error(transparent)]
    Gpu(#[from] GpuError),
    #[error("{0}")]
    Unsupported(String),
}

/// The GPU time (warm-up and timed launches) from which a point counts as heavy for [`Bench::cool_down`]: a
/// large GEMM's (qwen2.5-1.5b's gate/up at 5,056 rows, about 0.5 ms a launch, times ten launches), not the 2 ms of
/// a short op's.
pub const COOL_DOWN_MIN_MS: f64 = 4.0;

/// Time a timed repeat aims to span (µs).
pub const GROUP_US: f64 = 200.0;
/// Fewest launches in a timed graph where that stays short: more than any input rotation cycles through.
pub const ROTATION: usize = 16;

/// Median (µs) and relative spread of one timing.
fn summarize(t: &Timing) -> (f64, f64) {
    let mut s = t.samples_ms.clone();
    s.sort_by(f64::total_cmp);
    let median = percentile_sorted(&s, 50.0);
    let spread = if median > 0.0 {
        (percentile_sorted(&s, 90.0) - percentile_sorted(&s, 10.0)) / median
    } else {
        0.0
    };
    (median * 1e3, spread)
}

/// Times points and makes random inputs.
pub struct Bench<'a> {
    pub gpu: &'a Gpu,
    pub warmup: usize,
    pub repeats: usize,
    rng: ChaCha8Rng,
    on_point: &'a mut dyn FnMut(&str),
    /// Time through CUDA graph replays (cleared when a capture fails).
    graphs: bool,
    /// After each heavy point, leave the GPU idle as long as it kept it busy ([`Bench::cool_down`]).
    cool_down: bool,
}

impl<'a> Bench<'a> {
    pub fn new(gpu: &'a Gpu, warmup: usize, repeats: usize, on_point: &'a mut dyn FnMut(&str)) -> Bench<'a> {
        Bench {
            gpu,
            warmup,
            repeats,
            rng: ChaCha8Rng::seed_from_u64(0x0ba7c41ab),
            on_point,
            graphs: true,
            cool_down: false,
        }
    }

    /// From now on, after each point that kept the GPU busy for [`COOL_DOWN_MIN_MS`] or more (its warm-up and
    /// timed launches), leave it idle as long (`calibrate`'s default, not with `--no-cool-down`): so that a long run
    /// of heavy points (large GEMMs) does not hold the card at its power limit and its clock down for the points
    /// after them, which the points measured later, in lighter company, do not see. Light points, most of the grid
    /// and most of its wall time (host work between short launches), are not slowed.
    pub fn cool_down(&mut self, on: bool) {
        self.cool_down = on;
    }

    /// Median µs per launch and spread of `op`, which gets a running index (to rotate inputs). The launches are
    /// captured once into a CUDA graph and the graph is replayed, each timed replay holding enough launches to fill
    /// about [`GROUP_US`] (and at least [`ROTATION`] where that stays short, so a rotation of inputs is cycled
    /// through): microsecond kernels are timed as GPU work, not at the rate this host can launch them, and not
    /// drowned in event jitter. Where a capture fails, the launches are timed back to back instead (and said so).
    pub fn time(
        &mut self,
        what: &str,
        mut op: impl FnMut(usize) -> Result<(), GpuError>,
    ) -> Result<(f64, f64), GpuError> {
        // Also allocates whatever the op creates on first use (scratch, workspaces): never inside a capture.
        let probe = self.gpu.time(1, 3, &mut op)?;
        let single_us = (probe.median_ms * 1e3).max(0.1);
        let inner = ((GROUP_US / single_us).ceil() as usize).clamp(1, 256);
        let launches = if single_us * ROTATION as f64 <= 4.0 * GROUP_US {
            inner.max(ROTATION)
        } else {
            inner
        };
        let timed = if self.graphs {
            match self.gpu.time_graph(launches, self.warmup, self.repeats, &mut op) {
                Ok(t) => Some(t),
                Err(e) => {
                    tracing::warn!("timing `{what}` as a CUDA graph failed ({e}); timing launches back to back");
                    self.graphs = false;
                    None
                }
            }
        } else {
            None
        };
        let t = match timed {
            Some(t) => t,
            None => self.gpu.time(self.warmup, self.repeats, |i| {
                for j in 0..launches {
                    op(i * launches + j)?;
                }
                Ok(())
            })?,
        };
        let busy_ms = t.samples_ms.iter().sum::<f64>() + self.warmup as f64 * t.median_ms;
        if self.cool_down && busy_ms >= COOL_DOWN_MIN_MS {
            std::thread::sleep(std::time::Duration::from_secs_f64(busy_ms / 1e3));
        }
        (self.on_point)(what);
        let (us, spread) = summarize(&t);
        Ok((us / launches as f64, spread))
    }

    /// How the points were timed: `"cuda-graph"` while every capture worked, else `"launches"`.
    pub fn timing_method(&self) -> &'static str {
        if self.graphs { "cuda-graph" } else { "launches" }
    }

    /// Uniform values in [-1, 1) as fp16 (never all zeros: values do not change speed, but zeros hide bugs).
    pub fn random_f16(&mut self, len: usize) -> Result<F16Buffer, GpuError> {
        let host: Vec<f32> = (0..len).map(|_| self.rng.random::<f32>() * 2.0 - 1.0).collect();
        self.gpu.upload_f32_as_f16(&host)
    }

    pub fn ints(&self, host: &[i32]) -> Result<I32Buffer, GpuError> {
        self.gpu.upload(host)
    }

    /// How many copies of a `bytes`-sized weight make a set of at least twice the L2 cache (at most 16).
    pub fn rotation(&self, bytes: usize) -> usize {
        let l2 = self.gpu.info().l2_cache_bytes.max(1 << 20) as usize;
        (2 * l2).div_ceil(bytes.max(1)).clamp(1, 16)
    }
}

/// Measured device-to-device copy bandwidth over `bytes` (GB/s, bytes read + written per second).
pub fn copy_bandwidth_gbps(b: &mut Bench<'_>, bytes: usize) -> Result<f64, GpuError> {
    let gpu = b.gpu;
    let src = b.random_f16(bytes / 2)?;
    let mut dst = gpu.zeros::<u16>(bytes / 2)?;
    // Timed as plain launches: a copy inside a CUDA graph becomes a memcpy node, which the driver runs on another
    // path (measured 20% slower on an H100) than the device-to-device copy the ceiling stands for. At ~1 ms a
    // copy, launch overhead does not matter.
    let t = gpu.time(b.warmup, b.repeats, |_| gpu.copy_within_device(&src, &mut dst))?;
    (b.on_point)("copy bandwidth");
    let (us, _) = summarize(&t);
    Ok(2.0 * bytes as f64 / (us * 1e-6) / 1e9)
}

/// Measured cuBLAS fp16 GEMM throughput on an n×n×n product (TFLOP/s).
pub fn cublas_tflops(b: &mut Bench<'_>, n: usize) -> Result<f64, GpuError> {
    let gpu = b.gpu;
    let x = b.random_f16(n * n)?;
    let w = b.random_f16(n * n)?;
    let mut y = gpu.zeros::<u16>(n * n)?;
    let (us, _) = b.time("cuBLAS GEMM ceiling", |_| gpu.gemm_cublas(&x, &w, &mut y, (n, n, n)))?;
    Ok(2.0 * (n as f64).powi(3) / (us * 1e-6) / 1e12)
}

/// The weight shapes of one layer plus lm_head: (name, output features n, input features k).
pub fn gemm_shapes(m: &ModelSpec) -> [(&'static str, usize, usize); 5] {
    let (h, q, kv, i) = (
        m.hidden as usize,
        m.q_dim() as usize,
        m.kv_dim() as usize,
        m.intermediate as usize,
    );
    [
        ("qkv", q + 2 * kv, h),
        ("o", h, q),
        ("gate_up", 2 * i, h),
        ("down", h, i),
        ("lm_head", m.vocab as usize, h),
    ]
}

/// The weight shape whose table is measured through SiLU·mul, as the engine runs it ([`GemmTable::with_silu_mul`]).
pub(super) const FUSED_SILU_MUL: &str = "gate_up";

fn curve(x: &[u32], points: Vec<(f64, f64)>) -> (Curve, Vec<f64>) {
    let (y, spread): (Vec<f64>, Vec<f64>) = points.into_iter().unzip();
    (
        Curve {
            x: x.iter().map(|&v| f64::from(v)).collect(),
            y,
        },
        spread,
    )
}

/// The row counts a GEMM is measured at, (ours, cuBLAS): sampled rows for lm_head, the step's tokens for the others.
fn gemm_rows<'a>(grid: &'a Grid, name: &str) -> (&'a [u32], &'a [u32]) {
    if name == "lm_head" {
        (&grid.sampled_rows, &grid.cublas_sampled_rows)
    } else {
        (&grid.tokens, &grid.cublas_tokens)
    }
}

/// One GEMM's operands for up to `max_m` rows: weights rotated among enough copies to keep them out of L2, the
/// activations and the output. Calibration and `bench-kernels` time GEMMs on them.
pub(super) struct GemmOperands {
    weights: Vec<F16Buffer>,
    x: F16Buffer,
    y: F16Buffer,
    /// With SiLU·mul (the gate/up projection as the engine runs it): its `[m, n / 2]` output. Our kernel then
    /// writes it from its epilogue; cuBLAS's product goes to `y` and the SiLU·mul kernel from there.
    act: Option<F16Buffer>,
}

impl GemmOperands {
    pub(super) fn new(b: &mut Bench<'_>, n: usize, k: usize, max_m: usize, silu_mul: bool) -> Result<Self, GpuError> {
        let copies = b.rotation(n * k * 2);
        Ok(GemmOperands {
            weights: (0..copies)
                .map(|_| b.random_f16(n * k))
                .collect::<Result<Vec<_>, _>>()?,
            x: b.random_f16(max_m * k)?,
            y: b.gpu.zeros::<u16>(max_m * n)?,
            act: if silu_mul {
                Some(b.gpu.zeros::<u16>(max_m * n / 2)?)
            } else {
                None
            },
        })
    }

    /// Median µs and spread of our kernel launched as `plan` on `dims` (through SiLU·mul where the operands are
    /// for it).
    pub(super) fn time_ours(
        &mut self,
        b: &mut Bench<'_>,
        dims: (usize, usize, usize),
        plan: GemmPlan,
    ) -> Result<(f64, f64), GpuError> {
        let (gpu, copies) = (b.gpu, self.weights.len());
        let (x, weights) = (&self.x, &self.weights);
        match &mut self.act {
            Some(act) => b.time("gemm silu_mul", |i| {
                gpu.gemm_silu_mul_with(x, &weights[i % copies], act, dims, plan)
            }),
            None => {
                let y = &mut self.y;
                b.time("gemm", |i| gpu.gemm_with(x, &weights[i % copies], None, y, dims, plan))
            }
        }
    }

    /// Median µs and spread of cuBLAS on `dims` (then the SiLU·mul kernel, timed with it, where the operands are
    /// for it).
    pub(super) fn time_cublas(
        &mut self,
        b: &mut Bench<'_>,
        dims: (usize, usize, usize),
    ) -> Result<(f64, f64), GpuError> {
        let (gpu, copies) = (b.gpu, self.weights.len());
        let (x, weights, y) = (&self.x, &self.weights, &mut self.y);
        match &mut self.act {
            Some(act) => b.time("gemm cublas silu_mul", |i| {
                gpu.gemm_cublas(x, &weights[i % copies], y, dims)?;
                gpu.silu_mul(y, act, dims.0, dims.1 / 2)
            }),
            None => b.time("gemm cublas", |i| gpu.gemm_cublas(x, &weights[i % copies], y, dims)),
        }
    }

    /// Every candidate plan of our kernel on `dims` ([`gemm_candidates`]) with its median µs, in candidate order.
    pub(super) fn time_candidates(
        &mut self,
        b: &mut Bench<'_>,
        dims: (usize, usize, usize),
    ) -> Result<Vec<(GemmPlan, f64)>, GpuError> {
        let sms = b.gpu.info().sm_count as usize;
        (gemm_candidates(sms, dims.0, dims.1, dims.2).into_iter())
            .map(|plan| Ok((plan, self.time_ours(b, dims, plan)?.0)))
            .collect()
    }

    /// The fastest of [`Self::time_candidates`]: the first of equally fast plans, as the candidates come (`None`
    /// without candidates).
    pub(super) fn fastest_plan(
        &mut self,
        b: &mut Bench<'_>,
        dims: (usize, usize, usize),
    ) -> Result<Option<GemmPlan>, GpuError> {
        let timed = self.time_candidates(b, dims)?;
        Ok(timed
            .into_iter()
            .reduce(|best, c| if c.1 < best.1 { c } else { best })
            .map(|(plan, _)| plan))
    }
}

/// Timings the plan search of `tune_gemms` makes on `grid` (for a progress bar).
pub fn tuning_points(m: &ModelSpec, grid: &Grid, sms: usize) -> usize {
    (gemm_shapes(m).iter())
        .flat_map(|&(name, n, k)| gemm_rows(grid, name).0.iter().map(move |&t| (t as usize, n, k)))
        .map(|(t, n, k)| gemm_candidates(sms, t, n, k).len())
        .sum()
}

/// Our GEMM's launch plan at each of `grid`'s row counts up to [`TUNED_MAX_ROWS`], per weight shape of the model
/// (in [`gemm_shapes`] order): every candidate ([`gemm_candidates`]) timed once, the fastest kept. Beyond those rows
/// the default plan stands.
fn tune_gemms(b: &mut Bench<'_>, m: &ModelSpec, grid: &Grid) -> Result<Vec<Vec<TunedPlan>>, GpuError> {
    let mut out = Vec::new();
    for (name, n, k) in gemm_shapes(m) {
        let rows: Vec<u32> = (gemm_rows(grid, name).0.iter().copied())
            .filter(|&t| t as usize <= TUNED_MAX_ROWS)
            .collect();
        let mut tuned = Vec::new();
        if let Some(&max_m) = rows.iter().max() {
            let mut ops = GemmOperands::new(b, n, k, max_m as usize, name == FUSED_SILU_MUL)?;
            for &t in &rows {
                if let Some(plan) = ops.fastest_plan(b, (t as usize, n, k))? {
                    tuned.push(TunedPlan { rows: t, plan });
                }
            }
        }
        out.push(tuned);
    }
    Ok(out)
}

/// Both GEMM tables of every weight shape, each at its own row counts; ours launched with `tuned`'s plans (per
/// shape, as [`tune_gemms`] gives them) where they cover the rows, as the engine launches it.
fn measure_gemms(
    b: &mut Bench<'_>,
    m: &ModelSpec,
    grid: &Grid,
    tuned: &[Vec<TunedPlan>],
) -> Result<Vec<GemmTable>, GpuError> {
    let gpu = b.gpu;
    let mut out = Vec::new();
    for ((name, n, k), plans) in gemm_shapes(m).into_iter().zip(tuned) {
        let (rows, cublas_at) = gemm_rows(grid, name);
        let max_m = rows.iter().chain(cublas_at).copied().max().unwrap_or(1) as usize;
        let with_silu_mul = name == FUSED_SILU_MUL;
        let mut ops = GemmOperands::new(b, n, k, max_m, with_silu_mul)?;
        // Row by row over both lists, ours then cuBLAS at a row both time, so that the two kernels at one row
        // count see the card in the same state (clock, temperature).
        let mut every: Vec<u32> = rows.iter().chain(cublas_at).copied().collect();
        every.sort_unstable();
        every.dedup();
        let (mut ours, mut cublas) = (Vec::new(), Vec::new());
        for t in every {
            let dims = (t as usize, n, k);
            if rows.contains(&t) {
                let plan = tuned_plan(plans, dims.0).unwrap_or_else(|| gpu.gemm_plan(t as usize, n, k));
                ours.push(ops.time_ours(b, dims, plan)?);
            }
            if cublas_at.contains(&t) {
                cublas.push(ops.time_cublas(b, dims)?);
            }
        }
        let (ours_us, ours_spread) = curve(rows, ours);
        let (cublas_us, cublas_spread) = curve(cublas_at, cublas);
        let last = cublas_at.last().copied().unwrap_or(1);
        out.push(GemmTable {
            name: name.into(),
            n: n as u32,
            k: k as u32,
            ours_us,
            cublas_us,
            ours_spread,
            cublas_spread,
            ours_plans: plans.clone(),
            with_silu_mul,
            cublas_padded: cublas_at == cublas_grid(last).as_slice(),
        });
    }
    Ok(out)
}

fn measure_ops(b: &mut Bench<'_>, m: &ModelSpec, grid: &Grid, block_size: usize) -> Result<Vec<OpTable>, GpuError> {
    let gpu = b.gpu;
    let (h, i, v) = (m.hidden as usize, m.intermediate as usize, m.vocab as usize);
    let (qh, kvh, d) = (m.heads as usize, m.kv_heads as usize, m.head_dim as usize);
    let t_max = grid.max_tokens();
    let mut out = Vec::new();
    let mut table = |name: &str, x: &[u32], points: Vec<(f64, f64)>| {
        let (us, spread) = curve(x, points);
        out.push(OpTable {
            name: name.into(),
            us,
            spread,
        });
    };

    let x = b.random_f16(t_max * h)?;
    let mut residual = b.random_f16(t_max * h)?;
    let weight = b.random_f16(h)?;
    let mut y = gpu.zeros::<u16>(t_max * h)?;
    let mut points = Vec::new();
    for &t in &grid.tokens {
        points.push(b.time("add_rmsnorm", |_| {
            gpu.add_rmsnorm(&x, &mut residual, &weight, &mut y, t as usize, h)
        })?);
    }
    table("add_rmsnorm", &grid.tokens, points);

    let gate_up = b.random_f16(t_max * 2 * i)?;
    let mut act = gpu.zeros::<u16>(t_max * i)?;
    let mut points = Vec::new();
    for &t in &grid.tokens {
        points.push(b.time("silu_mul", |_| gpu.silu_mul(&gate_up, &mut act, t as usize, i))?);
    }
    table("silu_mul", &grid.tokens, points);

    let layout = PagedKvLayout {
        num_blocks: t_max.div_ceil(block_size),
        block_size,
        kv_heads: kvh,
        head_dim: d,
    };
    let mut k_cache = gpu.zeros::<u16>(layout.elements())?;
    let mut v_cache = gpu.zeros::<u16>(layout.elements())?;
    let qkv = b.random_f16(t_max * (qh + 2 * kvh) * d)?;
    let positions = b.ints(&(0..t_max as i32).collect::<Vec<_>>())?;
    let slots = b.ints(&(0..t_max as i32).collect::<Vec<_>>())?;
    let mut q_out = gpu.zeros::<u16>(t_max * qh * d)?;
    let mut points = Vec::new();
    for &t in &grid.tokens {
        let shape = KvAppendShape {
            tokens: t as usize,
            q_heads: qh,
            rope_theta: m.rope_theta as f32,
        };
        points.push(b.time("kv_append_rope", |_| {
            let cache = KvCacheMut {
                layout,
                k: &mut k_cache,
                v: &mut v_cache,
            };
            gpu.kv_append_rope(&shape, &qkv, &positions, &slots, &mut q_out, cache)
        })?);
    }
    table("kv_append_rope", &grid.tokens, points);
    drop((k_cache, v_cache, qkv, q_out));

    let ids: Vec<i32> = (0..t_max).map(|j| ((j * 7919) % v) as i32).collect();
    let ids = b.ints(&ids)?;
    let embeddings = b.random_f16(v * h)?;
    let mut points = Vec::new();
    for &t in &grid.tokens {
        points.push(b.time("embedding", |_| {
            gpu.embedding(&ids, &embeddings, &mut y, t as usize, (v, h))
        })?);
    }
    table("embedding", &grid.tokens, points);
    drop(embeddings);

    let r_max = grid.max_rows();
    let logits = b.random_f16(r_max * v)?;
    let mut tokens = gpu.zeros::<i32>(r_max)?;
    let mut points = Vec::new();
    for &r in &grid.sampled_rows {
        points.push(b.time("argmax", |_| gpu.argmax(&logits, &mut tokens, r as usize, v))?);
    }
    table("argmax", &grid.sampled_rows, points);
    Ok(out)
}

/// Block tables giving each of `contexts` its own blocks, the `set`-th of several disjoint sets: (tables, blocks per
/// sequence, blocks of one set).
fn block_tables(contexts: &[u32], block_size: usize, set: usize) -> (Vec<i32>, usize, usize) {
    let per_seq = contexts
        .iter()
        .map(|&c| (c as usize).div_ceil(block_size))
        .max()
        .unwrap_or(1)
        .max(1);
    let set_blocks = contexts.len() * per_seq;
    let base = set * set_blocks;
    let tables = (0..set_blocks).map(|j| (base + j) as i32).collect();
    (tables, per_seq, set_blocks)
}

/// How many disjoint copies of a `set_bytes` KV working set make at least twice the L2 cache (at most 64): attention
/// is timed rotating among them, as an engine reads a layer's KV after every other layer's has passed through L2.
fn kv_sets(set_bytes: usize, l2: usize) -> usize {
    (2 * l2).div_ceil(set_bytes.max(1)).clamp(1, 64)
}

struct AttentionBench {
    k: F16Buffer,
    v: F16Buffer,
    q: F16Buffer,
    out: F16Buffer,
    ws: DecodeWorkspace,
    layout: PagedKvLayout,
    qh: usize,
    l2: usize,
}

impl AttentionBench {
    fn block_bytes(layout: &PagedKvLayout) -> usize {
        // K and V, fp16.
        layout.block_size * layout.kv_heads * layout.head_dim * 2 * 2
    }

    fn new(b: &mut Bench<'_>, m: &ModelSpec, grid: &Grid, block_size: usize) -> Result<AttentionBench, GpuError> {
        let (qh, kvh, d) = (m.heads as usize, m.kv_heads as usize, m.head_dim as usize);
        let l2 = b.gpu.info().l2_cache_bytes.max(1 << 20) as usize;
        let block_bytes = block_size * kvh * d * 2 * 2;
        let max_ctx = grid.decode_contexts.iter().copied().max().unwrap_or(1);
        let mut sets: Vec<Vec<u32>> = grid
            .decode_batches
            .iter()
            .map(|&bt| vec![max_ctx; bt as usize])
            .collect();
        sets.extend(grid.mixed.iter().cloned());
        let max_prefill = grid.prefill_chunks.iter().max().copied().unwrap_or(1)
            + grid.prefill_offsets.iter().max().copied().unwrap_or(0);
        sets.push(vec![max_prefill]);
        // The most blocks any point needs with its rotation (small sets rotate up to 2×L2 worth).
        let blocks = sets
            .iter()
            .map(|contexts| {
                let (_, _, set_blocks) = block_tables(contexts, block_size, 0);
                set_blocks * kv_sets(set_blocks * block_bytes, l2)
            })
            .chain(std::iter::once((2 * l2).div_ceil(block_bytes) + 1))
            .max()
            .unwrap_or(1);
        let layout = PagedKvLayout {
            num_blocks: blocks,
            block_size,
            kv_heads: kvh,
            head_dim: d,
        };
        let rows = (grid.decode_batches.iter().chain(grid.prefill_chunks.iter()).copied())
            .chain(grid.mixed.iter().map(|c| c.len() as u32))
            .max()
            .unwrap_or(1) as usize;
        Ok(AttentionBench {
            // The cache's values do not change the kernels' speed; zeros keep the start-up short.
            k: b.gpu.zeros::<u16>(layout.elements())?,
            v: b.gpu.zeros::<u16>(layout.elements())?,
            q: b.random_f16(rows * qh * d)?,
            out: b.gpu.zeros::<u16>(rows * qh * d)?,
            ws: DecodeWorkspace::new(),
            layout,
            qh,
            l2,
        })
    }

    /// Uploads the rotation's block tables for `contexts`: (tables per set, blocks per sequence).
    fn rotation(&self, b: &Bench<'_>, contexts: &[u32]) -> Result<(Vec<I32Buffer>, usize), GpuError> {
        let (_, per_seq, set_blocks) = block_tables(contexts, self.layout.block_size, 0);
        let sets = kv_sets(set_blocks * Self::block_bytes(&self.layout), self.l2)
            .min(self.layout.num_blocks / set_blocks.max(1))
            .max(1);
        let tables = (0..sets)
            .map(|set| b.ints(&block_tables(contexts, self.layout.block_size, set).0))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((tables, per_seq))
    }

    fn decode(&mut self, b: &mut Bench<'_>, contexts: &[u32]) -> Result<(f64, f64), GpuError> {
        let gpu = b.gpu;
        let (tables, per_seq) = self.rotation(b, contexts)?;
        let lens = b.ints(&contexts.iter().map(|&c| c as i32).collect::<Vec<_>>())?;
        let shape = DecodeShape {
            num_seqs: contexts.len(),
            q_heads: self.qh,
            max_context_len: contexts.iter().copied().max().unwrap_or(1) as usize,
            partition_size: None,
        };
        let (layout, k, v) = (self.layout, &self.k, &self.v);
        let (q, out, ws) = (&self.q, &mut self.out, &mut self.ws);
        b.time("attention decode", |i| {
            let block_tables = &tables[i % tables.len()];
            let kv = PagedKv {
                layout,
                k,
                v,
                block_tables,
                max_blocks_per_seq: per_seq,
            };
            gpu.attention_decode(&shape, q, &kv, &lens, out, ws)
        })
    }

    fn prefill(&mut self, b: &mut Bench<'_>, chunk: u32, offset: u32) -> Result<(f64, f64), GpuError> {
        let gpu = b.gpu;
        let context = chunk + offset;
        let (tables, per_seq) = self.rotation(b, &[context])?;
        let lens = b.ints(&[context as i32])?;
        let cu = b.ints(&[0, chunk as i32])?;
        let shape = PrefillShape {
            num_seqs: 1,
            total_tokens: chunk as usize,
            q_heads: self.qh,
            max_chunk_len: chunk as usize,
        };
        let (layout, k, v) = (self.layout, &self.k, &self.v);
        let (q, out) = (&self.q, &mut self.out);
        b.time("attention prefill", |i| {
            let block_tables = &tables[i % tables.len()];
            let kv = PagedKv {
                layout,
                k,
                v,
                block_tables,
                max_blocks_per_seq: per_seq,
            };
            gpu.attention_prefill(&shape, q, &kv, &cu, &lens, out)
        })
    }
}

fn surface_table(x: &[u32], y: &[u32], points: Vec<(f64, f64)>) -> SurfaceTable {
    let (z, spread): (Vec<f64>, Vec<f64>) = points.into_iter().unzip();
    let f = |v: &[u32]| v.iter().map(|&a| f64::from(a)).collect();
    SurfaceTable {
        us: Surface { x: f(x), y: f(y), z },
        spread,
    }
}

/// ISO 8601 UTC of now (civil-from-days, so no date crate is needed for one timestamp).
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The measured tables of one pass over the grid.
#[derive(Clone, Debug, PartialEq)]
pub struct Tables {
    pub gemm: Vec<GemmTable>,
    pub ops: Vec<OpTable>,
    pub attention_prefill: SurfaceTable,
    pub attention_decode: SurfaceTable,
    pub decode_mixed: Vec<MixedDecode>,
}

fn measure_pass(
    b: &mut Bench<'_>,
    m: &ModelSpec,
    grid: &Grid,
    block_size: usize,
    att: &mut AttentionBench,
    tuned: &[Vec<TunedPlan>],
) -> Result<Tables, GpuError> {
    let gemm = measure_gemms(b, m, grid, tuned)?;
    let ops = measure_ops(b, m, grid, block_size)?;
    let mut prefill = Vec::new();
    for &c in &grid.prefill_chunks {
        for &o in &grid.prefill_offsets {
            prefill.push(att.prefill(b, c, o)?);
        }
    }
    let mut decode = Vec::new();
    for &batch in &grid.decode_batches {
        for &ctx in &grid.decode_contexts {
            decode.push(att.decode(b, &vec![ctx; batch as usize])?);
        }
    }
    let mut decode_mixed = Vec::new();
    for contexts in &grid.mixed {
        let (us, _) = att.decode(b, contexts)?;
        decode_mixed.push(MixedDecode {
            contexts: contexts.clone(),
            us,
        });
    }
    Ok(Tables {
        gemm,
        ops,
        attention_prefill: surface_table(&grid.prefill_chunks, &grid.prefill_offsets, prefill),
        attention_decode: surface_table(&grid.decode_batches, &grid.decode_contexts, decode),
        decode_mixed,
    })
}

/// Median of each point over the passes, with the spread (max − min) / median across them (the within-pass spread
/// when there is one pass).
pub fn merge_passes(mut passes: Vec<Tables>) -> Tables {
    if passes.len() == 1 {
        return passes.pop().expect("one pass");
    }
    let merge = |values: Vec<f64>| -> (f64, f64) {
        let mut v = values;
        v.sort_by(f64::total_cmp);
        let median = percentile_sorted(&v, 50.0);
        let spread = if median > 0.0 {
            (v[v.len() - 1] - v[0]) / median
        } else {
            0.0
        };
        (median, spread)
    };
    let column = |get: &dyn Fn(&Tables) -> &Vec<f64>| -> (Vec<f64>, Vec<f64>) {
        let n = get(&passes[0]).len();
        (0..n)
            .map(|i| merge(passes.iter().map(|p| get(p)[i]).collect()))
            .unzip()
    };
    let mut out = passes[0].clone();
    for (g, table) in out.gemm.iter_mut().enumerate() {
        (table.ours_us.y, table.ours_spread) = column(&|p: &Tables| &p.gemm[g].ours_us.y);
        (table.cublas_us.y, table.cublas_spread) = column(&|p: &Tables| &p.gemm[g].cublas_us.y);
    }
    for (o, table) in out.ops.iter_mut().enumerate() {
        (table.us.y, table.spread) = column(&|p: &Tables| &p.ops[o].us.y);
    }
    (out.attention_prefill.us.z, out.attention_prefill.spread) = column(&|p: &Tables| &p.attention_prefill.us.z);
    (out.attention_decode.us.z, out.attention_decode.spread) = column(&|p: &Tables| &p.attention_decode.us.z);
    for (i, mixed) in out.decode_mixed.iter_mut().enumerate() {
        mixed.us = merge(passes.iter().map(|p| p.decode_mixed[i].us).collect()).0;
    }
    out
}

/// Keeps the GPU busy for about two seconds so clocks have ramped up before the first point is timed.
fn warm_up(gpu: &Gpu) -> Result<(), GpuError> {
    let n = 4096;
    let x = gpu.zeros::<u16>(n * n)?;
    let w = gpu.zeros::<u16>(n * n)?;
    let mut y = gpu.zeros::<u16>(n * n)?;
    let started = Instant::now();
    while started.elapsed().as_secs_f64() < 2.0 {
        for _ in 0..20 {
            gpu.gemm_cublas(&x, &w, &mut y, (n, n, n))?;
        }
        gpu.synchronize()?;
    }
    Ok(())
}

/// Measures a whole profile. `on_point` is called after every timed point (for a progress bar).
pub fn calibrate(gpu: &Gpu, cfg: &CalibrateConfig, on_point: &mut dyn FnMut(&str)) -> Result<Profile, CalibError> {
    let mut profiles = calibrate_grids(gpu, cfg, &[&cfg.grid], on_point)?;
    Ok(profiles.remove(0))
}

/// Measures one profile per grid (`cfg.grid` is ignored), their passes interleaved — pass 1 of every grid, then
/// pass 2, … — so the profiles are measured under the same conditions (clocks, temperature) and compare as
/// interpolation alone, not as two moments of the card. Our GEMM's launch plans are tuned first on the first grid
/// and used throughout. `seconds` in each is the whole run's.
pub fn calibrate_grids(
    gpu: &Gpu,
    cfg: &CalibrateConfig,
    grids: &[&Grid],
    on_point: &mut dyn FnMut(&str),
) -> Result<Vec<Profile>, CalibError> {
    let m = &cfg.model;
    if !matches!(m.head_dim, 64 | 128) {
        return Err(CalibError::Unsupported(format!(
            "{}: head_dim {} — the attention kernels support 64 and 128",
            m.name, m.head_dim
        )));
    }
    let started = Instant::now();
    let mut b = Bench::new(gpu, cfg.warmup, cfg.repeats, on_point);
    b.cool_down(cfg.cool_down);
    warm_up(gpu)?;
    let copy_gbps = copy_bandwidth_gbps(&mut b, 1 << 30)?;
    let gemm_tflops = cublas_tflops(&mut b, 8192)?;
    let block_size = cfg.block_size as usize;
    let mut atts = grids
        .iter()
        .map(|grid| AttentionBench::new(&mut b, m, grid, block_size))
        .collect::<Result<Vec<_>, _>>()?;
    // Our GEMM's plans, tuned once on the first grid (the profile's: its points are where the engine's rules
    // change), then used by every pass of every grid as the engine will use them.
    let tuned = match grids.first() {
        Some(grid) => tune_gemms(&mut b, m, grid)?,
        None => Vec::new(),
    };
    // Whole passes over the grid, so each point's samples span the run and slow drifts (clocks, temperature) show
    // in its spread instead of biasing whichever shapes happened to be measured first.
    let mut passes: Vec<Vec<Tables>> = grids.iter().map(|_| Vec::with_capacity(cfg.passes)).collect();
    for _ in 0..cfg.passes.max(1) {
        for ((grid, att), out) in grids.iter().zip(&mut atts).zip(&mut passes) {
            out.push(measure_pass(&mut b, m, grid, block_size, att, &tuned)?);
        }
    }
    let info = gpu.info();
    let (major, minor) = info.compute_capability;
    let seconds = started.elapsed().as_secs_f64();
    let timing = b.timing_method();
    Ok(passes
        .into_iter()
        .map(|p| {
            let Tables {
                gemm,
                ops,
                attention_prefill,
                attention_decode,
                decode_mixed,
            } = merge_passes(p);
            let mut profile = Profile {
                format: PROFILE_FORMAT,
                fingerprint: Fingerprint {
                    gpu_name: info.name.clone(),
                    gpu_uuid: info.uuid.clone(),
                    compute_capability: format!("{major}.{minor}"),
                    sm_count: info.sm_count,
                    memory_bytes: info.total_memory_bytes,
                    driver_version: kernel_driver_version().unwrap_or_else(|| "unknown".into()),
                    cuda_version: info.driver_cuda_version.clone(),
                    copy_bandwidth_gbps: copy_gbps,
                    gemm_tflops,
                    kernel_source_hash: kernel_source_hash(),
                    model: m.clone(),
                    block_size: cfg.block_size,
                    batchlab_version: env!("CARGO_PKG_VERSION").to_string(),
                    engine_revision: crate::engine::ENGINE_REVISION,
                    date: utc_now(),
                },
                gemm,
                ops,
                attention_prefill,
                attention_decode,
                decode_mixed,
                step_overhead_us: 0.0,
                engine: None,
                graph_ours_rows: 0,
                run: CalibrationRun {
                    seconds,
                    warmup: cfg.warmup as u32,
                    repeats: cfg.repeats as u32,
                    passes: cfg.passes.max(1) as u32,
                    timing: timing.into(),
                    clock_tables: None,
                    clock_engine_steps: None,
                    issue_cpu: None,
                },
            };
            // Decided from the tables (within the cap asked for), before the engine steps are measured with it.
            profile.graph_ours_rows = capped(profile.graph_ours_rows_of(), cfg.graph_ours_rows_max);
            profile
        })
        .collect())
}

/// `rows` within `cap`, where there is one.
fn capped(rows: u32, cap: Option<u32>) -> u32 {
    cap.map_or(rows, |c| rows.min(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn graph_ours_rows_stay_within_the_cap() {
        assert_eq!(capped(16, None), 16);
        assert_eq!(capped(16, Some(8)), 8);
        assert_eq!(capped(4, Some(8)), 4);
        assert_eq!(capped(16, Some(0)), 0);
    }

    #[test]
    fn offset_grid_shares_no_point_with_the_standard_one() {
        let (s, o) = (Grid::standard(), Grid::offset());
        for (a, b) in [
            (&s.tokens, &o.tokens),
            (&s.sampled_rows, &o.sampled_rows),
            (&s.prefill_chunks, &o.prefill_chunks),
            (&s.prefill_offsets, &o.prefill_offsets),
            (&s.decode_batches, &o.decode_batches),
            (&s.decode_contexts, &o.decode_contexts),
        ] {
            assert!(a.iter().all(|x| !b.contains(x)), "{a:?} / {b:?}");
            assert!(a.windows(2).all(|w| w[0] < w[1]) && b.windows(2).all(|w| w[0] < w[1]));
        }
        assert!(o.mixed.iter().all(|c| c.iter().all(|&x| (1..=8192).contains(&x))));
        assert_eq!(s.mixed.len(), 24);
        // The second half (sigma 0.5) is the milder: its longest context is nearer its mean.
        let imbalance = |c: &Vec<u32>| {
            let max = f64::from(*c.iter().max().unwrap());
            max * c.len() as f64 / c.iter().map(|&x| f64::from(x)).sum::<f64>()
        };
        let (wide, mild) = s.mixed.split_at(12);
        let mean = |v: &[Vec<u32>]| v.iter().map(imbalance).sum::<f64>() / v.len() as f64;
        assert!(
            mean(mild) < mean(wide) && mean(mild) > 1.0,
            "{} vs {}",
            mean(mild),
            mean(wide)
        );
        assert_eq!(s.tokens.len(), 4 + 16 + 12 + 56);
        assert_eq!(*s.tokens.last().unwrap(), 8192);
        // Every offset row count falls strictly between two tile edges.
        assert!(o.tokens.iter().all(|t| t % 16 != 0));
    }

    /// cuBLAS is timed where our kernel is, or (padded) wherever the engine may run it: a profile at every row
    /// count it pads to (our kernel's rows among them, where the engine's rules change), the offset grid where its
    /// own row counts pad to.
    #[test]
    fn cublas_is_timed_on_the_rows_the_engine_runs_it_on() {
        let (s, o) = (Grid::standard(), Grid::offset());
        assert_eq!((&s.cublas_tokens, &s.cublas_sampled_rows), (&s.tokens, &s.sampled_rows));
        assert_eq!((&o.cublas_tokens, &o.cublas_sampled_rows), (&o.tokens, &o.sampled_rows));
        let rest = 4 * 88 + 32 + 16 * 12 + s.decode_batches.len() * s.decode_contexts.len() + 24;
        assert_eq!(s.points(), 4 * 2 * 88 + 2 * 32 + rest);
        let (s, o) = (s.with_padded_cublas(true), o.with_padded_cublas(false));
        assert_eq!(
            (s.cublas_tokens.clone(), s.cublas_sampled_rows.clone()),
            (cublas_grid(8192), cublas_grid(1024))
        );
        assert!(s.tokens.iter().all(|t| s.cublas_tokens.contains(t)));
        assert!(s.sampled_rows.iter().all(|t| s.cublas_sampled_rows.contains(t)));
        assert_eq!(
            o.cublas_tokens,
            [8, 16, 32, 48, 96, 176, 336, 704, 1344, 2624, 5056, 7040]
        );
        assert_eq!(o.cublas_sampled_rows, [4, 16, 48, 96, 336, 704]);
        for (rows, padded) in [(&o.tokens, &o.cublas_tokens), (&o.sampled_rows, &o.cublas_sampled_rows)] {
            assert!(
                rows.iter()
                    .all(|&r| padded.contains(&(cublas_rows(u64::from(r)) as u32)))
            );
        }
        // Ours at 88 row counts, cuBLAS at 180, for each of four weight shapes; lm_head at 32 and 68.
        assert_eq!(s.points(), 4 * (88 + 180) + 32 + 68 + rest);
    }

    #[test]
    fn block_tables_give_each_sequence_its_own_blocks() {
        let (t, per_seq, set_blocks) = block_tables(&[17, 5, 32], 16, 0);
        assert_eq!((per_seq, set_blocks), (2, 6));
        assert_eq!(t, [0, 1, 2, 3, 4, 5]);
        // The second set of the rotation uses the next six blocks.
        assert_eq!(block_tables(&[17, 5, 32], 16, 1).0, [6, 7, 8, 9, 10, 11]);
        // A 1 MiB working set rotates 100 times over a 50 MiB L2, capped at 64; a 1 GiB one not at all.
        assert_eq!(kv_sets(1 << 20, 50 << 20), 64);
        assert_eq!(kv_sets(1 << 30, 50 << 20), 1);
        assert_eq!(kv_sets(40 << 20, 50 << 20), 3);
    }

    #[test]
    fn passes_merge_to_medians_with_their_spread() {
        let model = crate::model::by_name("qwen2.5-0.5b").unwrap();
        let p = crate::sim::calibrated::tests::synthetic_profile(&model);
        let tables = |scale: f64| {
            let mut t = Tables {
                gemm: p.gemm.clone(),
                ops: p.ops.clone(),
                attention_prefill: p.attention_prefill.clone(),
                attention_decode: p.attention_decode.clone(),
                decode_mixed: vec![MixedDecode {
                    contexts: vec![1, 2],
                    us: 10.0 * scale,
                }],
            };
            t.gemm[0].ours_us.y.iter_mut().for_each(|y| *y *= scale);
            t.attention_decode.us.z.iter_mut().for_each(|z| *z *= scale);
            t
        };
        let merged = merge_passes(vec![tables(1.0), tables(1.1), tables(0.9)]);
        assert_eq!(merged.gemm[0].ours_us.y, p.gemm[0].ours_us.y);
        assert!(merged.gemm[0].ours_spread.iter().all(|s| (s - 0.2).abs() < 1e-9));
        assert!(merged.gemm[1].ours_spread.iter().all(|&s| s == 0.0));
        assert_eq!(merged.attention_decode.us.z, p.attention_decode.us.z);
        assert!((merged.decode_mixed[0].us - 10.0).abs() < 1e-12);
    }

    #[test]
    fn utc_now_is_iso_8601() {
        let s = utc_now();
        assert_eq!(s.len(), 20, "{s}");
        assert!(
            s.starts_with("20") && s.ends_with('Z') && s.as_bytes()[10] == b'T',
            "{s}"
        );
    }
}
