//! Our tensor-core GEMM (kernels/gemm.cu): `y = x . W^T (+ bias)`, fp16 in/out, f32 accumulation.
//!
//! Tiled kernels of several shapes, skinny ones for decode-sized products, and optional split-K; [`gemm_plan`]
//! picks what fills the GPU, [`Gpu::gemm_with`] lets calibration time any plan.

use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};

use super::kernels::KernelId;
use super::{Gpu, GpuError};

/// Block tile of the GEMM kernel (rows of x × rows of W per block). Serialized as its [`GemmTile::label`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GemmTile {
    /// 128 × 128, 8 warps: prefill-sized products.
    #[serde(rename = "128x128")]
    T128x128,
    /// 64 × 64, 4 warps.
    #[serde(rename = "64x64")]
    T64x64,
    /// 64 × 64, 8 warps (more warps per SM when the grid is small).
    #[serde(rename = "64x64w8")]
    T64x64W8,
    /// 16 × 64, 4 warps: decode-sized products (m ≤ 16).
    #[serde(rename = "16x64")]
    T16x64,
    /// 16 × 64, 4 warps, 8 pipeline stages.
    #[serde(rename = "16x64s8")]
    T16x64S8,
    /// 16 × 128, 8 warps.
    #[serde(rename = "16x128")]
    T16x128,
    /// 16 × 32, 2 warps: many small blocks.
    #[serde(rename = "16x32")]
    T16x32,
    /// 32 × 64, 4 warps of 32 × 16.
    #[serde(rename = "32x64")]
    T32x64,
    /// Skinny (weights as the 16-row mma operand, tokens as the 8-column one, no shared-memory staging): up to 8
    /// tokens × 16 weight rows, 4 warps splitting k.
    S8,
    /// Skinny, up to 16 tokens × 16 weight rows.
    S16,
    /// Skinny, up to 32 tokens × 32 weight rows.
    S32,
    /// Skinny, up to 32 tokens × 16 weight rows, four 32-k units in flight per warp.
    S32N,
    /// Skinny, up to 32 tokens × 32 weight rows, four 32-k units in flight per warp.
    S32D,
    /// Skinny, up to 64 tokens × 32 weight rows.
    S64,
    /// Skinny, up to 64 tokens × 16 weight rows, 8 warps splitting k.
    S64W,
    /// Staged skinny: up to 64 tokens, staged in shared memory 128 k at a time and shared by 8 warps of 16 weight
    /// rows each (128 a block), the weights streamed into registers.
    S64S,
    /// Staged skinny with 4 warps: 64 weight rows a block.
    S64S4,
    /// Staged skinny, up to 32 tokens, 8 warps of 16 weight rows.
    S32S,
}

impl GemmTile {
    pub const ALL: [GemmTile; 18] = [
        GemmTile::T128x128,
        GemmTile::T64x64,
        GemmTile::T64x64W8,
        GemmTile::T16x64,
        GemmTile::T16x64S8,
        GemmTile::T16x128,
        GemmTile::T16x32,
        GemmTile::T32x64,
        GemmTile::S8,
        GemmTile::S16,
        GemmTile::S32,
        GemmTile::S32N,
        GemmTile::S32D,
        GemmTile::S64,
        GemmTile::S64W,
        GemmTile::S64S,
        GemmTile::S64S4,
        GemmTile::S32S,
    ];

    /// Whether this is one of the skinny kernels (`gemm_s*`).
    pub fn is_skinny(self) -> bool {
        matches!(
            self,
            Self::S8
                | Self::S16
                | Self::S32
                | Self::S32N
                | Self::S32D
                | Self::S64
                | Self::S64W
                | Self::S64S
                | Self::S64S4
                | Self::S32S
        )
    }

    /// Rows of x one block covers.
    pub fn rows(self) -> usize {
        self.config().bm
    }

    /// A short name for reports (`16x64s8`).
    pub fn label(self) -> &'static str {
        match self {
            Self::T128x128 => "128x128",
            Self::T64x64 => "64x64",
            Self::T64x64W8 => "64x64w8",
            Self::T16x64 => "16x64",
            Self::T16x64S8 => "16x64s8",
            Self::T16x128 => "16x128",
            Self::T16x32 => "16x32",
            Self::T32x64 => "32x64",
            Self::S8 => "s8",
            Self::S16 => "s16",
            Self::S32 => "s32",
            Self::S32N => "s32n",
            Self::S32D => "s32d",
            Self::S64 => "s64",
            Self::S64W => "s64w",
            Self::S64S => "s64s",
            Self::S64S4 => "s64s4",
            Self::S32S => "s32s",
        }
    }

    /// The kernel's compile-time shape, as instantiated in kernels/gemm.cu.
    fn config(self) -> TileConfig {
        match self {
            Self::T128x128 => TileConfig::tiled(128, 128, 32, 4, 256, KernelId::Gemm128x128F16),
            Self::T64x64 => TileConfig::tiled(64, 64, 64, 4, 128, KernelId::Gemm64x64F16),
            Self::T64x64W8 => TileConfig::tiled(64, 64, 64, 4, 256, KernelId::Gemm64x64W8F16),
            Self::T16x64 => TileConfig::tiled(16, 64, 64, 4, 128, KernelId::Gemm16x64F16),
            Self::T16x64S8 => TileConfig::tiled(16, 64, 64, 8, 128, KernelId::Gemm16x64S8F16),
            Self::T16x128 => TileConfig::tiled(16, 128, 64, 4, 256, KernelId::Gemm16x128F16),
            Self::T16x32 => TileConfig::tiled(16, 32, 64, 4, 64, KernelId::Gemm16x32F16),
            Self::T32x64 => TileConfig::tiled(32, 64, 64, 4, 128, KernelId::Gemm32x64F16),
            Self::S8 => TileConfig::skinny(8, 16, 4, KernelId::GemmS8F16),
            Self::S16 => TileConfig::skinny(16, 16, 4, KernelId::GemmS16F16),
            Self::S32 => TileConfig::skinny(32, 32, 4, KernelId::GemmS32F16),
            Self::S32N => TileConfig::skinny(32, 16, 4, KernelId::GemmS32nF16),
            Self::S32D => TileConfig::skinny(32, 32, 4, KernelId::GemmS32dF16),
            Self::S64 => TileConfig::skinny(64, 32, 4, KernelId::GemmS64F16),
            Self::S64W => TileConfig::skinny(64, 16, 8, KernelId::GemmS64wF16),
            Self::S64S => TileConfig::staged(64, 8, KernelId::GemmS64sF16),
            Self::S64S4 => TileConfig::staged(64, 4, KernelId::GemmS64s4F16),
            Self::S32S => TileConfig::staged(32, 8, KernelId::GemmS32sF16),
        }
    }
}

struct TileConfig {
    bm: usize,
    bn: usize,
    bk: usize,
    stages: usize,
    threads: u32,
    id: KernelId,
    /// The staged kernels (`gemm_s*s*`): only the token rows pass through shared memory.
    staged: bool,
}

impl TileConfig {
    /// A tiled kernel (`gemm_<bm>x<bn>*`): `bm` × `bn` tiles of `bk` k in `stages` shared-memory buffers, `threads`
    /// as instantiated.
    const fn tiled(bm: usize, bn: usize, bk: usize, stages: usize, threads: u32, id: KernelId) -> Self {
        TileConfig {
            bm,
            bn,
            bk,
            stages,
            threads,
            id,
            staged: false,
        }
    }

    /// A skinny kernel (`gemm_s*` in kernels/gemm.cu): `bm` tokens × `bn` weight rows, `warps` warps taking
    /// interleaved 32-k units (a k tile is one unit per warp), nothing staged in dynamic shared memory.
    const fn skinny(bm: usize, bn: usize, warps: usize, id: KernelId) -> Self {
        TileConfig {
            bm,
            bn,
            bk: warps * 32,
            stages: 0,
            threads: (warps * 32) as u32,
            id,
            staged: false,
        }
    }

    /// A staged skinny kernel (`gemm_s*s*`): `bm` tokens × 16 weight rows per warp, the tokens staged in shared
    /// memory a 128-k chunk at a time (a k tile is one chunk) in three buffers.
    const fn staged(bm: usize, warps: usize, id: KernelId) -> Self {
        TileConfig {
            bm,
            bn: 16 * warps,
            bk: 128,
            stages: 3,
            threads: (warps * 32) as u32,
            id,
            staged: true,
        }
    }

    /// Dynamic shared memory: STAGES x (BM + BN) rows of BK + 8 halves (none for the skinny kernels); for the staged
    /// ones STAGES x BM token rows of BK halves, which later hold the block's f32 sums (BM rows of BN + 4).
    fn smem_bytes(&self) -> u32 {
        if self.staged {
            return (self.stages * self.bm * self.bk * 2).max(self.bm * (self.bn + 4) * 4) as u32;
        }
        (self.stages * (self.bm + self.bn) * (self.bk + 8) * 2) as u32
    }
}

/// The dynamic shared memory each GEMM kernel needs, for raising its limit when the module is loaded.
pub(crate) fn gemm_smem_limits() -> impl Iterator<Item = (KernelId, u32)> {
    GemmTile::ALL
        .into_iter()
        .map(|t| {
            let c = t.config();
            (c.id, c.smem_bytes())
        })
        .filter(|&(_, bytes)| bytes > 0)
}

/// How one GEMM is launched: the tile, and into how many slices K is split (1 = no split).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GemmPlan {
    pub tile: GemmTile,
    pub split_k: usize,
}

/// Fewest k tiles a split-K slice of the tiled kernels gets: below this the partial sums' traffic outweighs the
/// gain.
const MIN_TILES_PER_SPLIT: usize = 2;
const MAX_SPLIT_K: usize = 16;

/// The plan for `y[m, n] = x[m, k] . w[n, k]^T` on a GPU of `sms` SMs. Products of up to 16 rows take the skinny
/// kernel that covers them (8 or 16 tokens): they are bound by reading the weights, which the skinny kernels stream
/// straight into registers with no tensor-core row spent on padding tokens; then split-K (slices of two k tiles, the
/// last one may hold one) while the grid is under three of its small blocks per SM. Up to 64 rows take the narrowest tiled kernel
/// that covers them (32 × 64, 64 × 64 with 8 warps; the skinny ones re-read every token row for each 16 weight rows
/// and fall behind there); larger products 128 × 128 where that still gives every SM a block, else 64 × 64. The
/// tiled ones split K while the grid is under two blocks per SM, each slice keeping at least two k tiles. (From
/// sweeps of every tile × split on an H100: `bench-kernels` prints one against this choice.) The plan of a GEMM
/// without a profile's: up to [`TUNED_MAX_ROWS`] rows `calibrate` times [`gemm_candidates`] per weight shape and
/// the engine launches the fastest, which is often another (a skinny kernel at 17–64 rows).
pub fn gemm_plan(sms: usize, m: usize, n: usize, k: usize) -> GemmPlan {
    let blocks = |t: GemmTile| {
        let c = t.config();
        m.div_ceil(c.bm) * n.div_ceil(c.bn)
    };
    // (tile, blocks per SM to reach)
    let (tile, per_sm) = if m <= 8 {
        (GemmTile::S8, 3)
    } else if m <= 16 {
        (GemmTile::S16, 3)
    } else if m <= 32 {
        (GemmTile::T32x64, 2)
    } else if m <= 64 {
        (GemmTile::T64x64W8, 2)
    } else if blocks(GemmTile::T128x128) >= sms {
        (GemmTile::T128x128, 2)
    } else {
        (GemmTile::T64x64, 2)
    };
    let base = blocks(tile).max(1);
    let ktiles = k.div_ceil(tile.config().bk);
    // Slices of two k tiles at least; the skinny kernels' last slice may hold one (7 tiles of 128: 4 slices).
    let most = if tile.is_skinny() {
        ktiles.div_ceil(MIN_TILES_PER_SPLIT)
    } else {
        ktiles / MIN_TILES_PER_SPLIT
    };
    let mut split_k = 1;
    if base < per_sm * sms {
        split_k = (per_sm * sms).div_ceil(base).min(most).clamp(1, MAX_SPLIT_K);
    }
    GemmPlan { tile, split_k }
}

/// Split-K slice counts the plan candidates try.
const CANDIDATE_SPLITS: [usize; 8] = [1, 2, 3, 4, 6, 8, 12, 16];

/// Largest row count whose plan is chosen by timing candidates (`calibrate` does, per weight shape; beyond, tiles
/// are large and [`gemm_plan`]'s choice stands).
pub const TUNED_MAX_ROWS: usize = 64;

/// The launch plans worth timing for `y[m, n] = x[m, k] . w[n, k]^T` on a GPU of `sms` SMs (empty beyond
/// [`TUNED_MAX_ROWS`] rows): every tile of at most 64 rows that wastes no more than half its rows on padding (any
/// 8-row one does) and covers `m` in at most eight row blocks, each with every split of `CANDIDATE_SPLITS` that
/// leaves no slice empty; [`gemm_plan`]'s own choice always among them.
pub fn gemm_candidates(sms: usize, m: usize, n: usize, k: usize) -> Vec<GemmPlan> {
    if m == 0 || m > TUNED_MAX_ROWS {
        return Vec::new();
    }
    let mut out = vec![gemm_plan(sms, m, n, k)];
    for tile in GemmTile::ALL {
        let c = tile.config();
        if c.bm > TUNED_MAX_ROWS || c.bm > (2 * m).max(8) || m.div_ceil(c.bm) > 8 {
            continue;
        }
        let ktiles = k.div_ceil(c.bk);
        for split_k in CANDIDATE_SPLITS {
            let plan = GemmPlan { tile, split_k };
            if split_k <= ktiles && ktiles.div_ceil(ktiles.div_ceil(split_k)) == split_k && !out.contains(&plan) {
                out.push(plan);
            }
        }
    }
    out
}

/// What our GEMM does with its sums before storing them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Epilogue {
    /// `y = x · wᵀ (+ bias)`.
    Plain,
    /// SwiGLU of each (gate, up) pair of adjacent outputs ([`Gpu::gemm_silu_mul_with`]).
    SiluMul,
}

impl Gpu {
    /// The plan [`Gpu::gemm`] uses: [`gemm_plan`] for this GPU's SM count.
    pub fn gemm_plan(&self, m: usize, n: usize, k: usize) -> GemmPlan {
        gemm_plan(self.info().sm_count as usize, m, n, k)
    }

    /// `y[m, n] = x[m, k] . w[n, k]^T (+ bias[n])` on the tensor cores (our own mma.sync kernel); k a multiple of 8.
    pub fn gemm(
        &self,
        x: &CudaSlice<u16>,
        w: &CudaSlice<u16>,
        bias: Option<&CudaSlice<u16>>,
        y: &mut CudaSlice<u16>,
        dims: (usize, usize, usize),
    ) -> Result<(), GpuError> {
        let plan = self.gemm_plan(dims.0, dims.1, dims.2);
        self.gemm_with(x, w, bias, y, dims, plan)
    }

    /// [`Gpu::gemm`] with an explicit plan.
    pub fn gemm_with(
        &self,
        x: &CudaSlice<u16>,
        w: &CudaSlice<u16>,
        bias: Option<&CudaSlice<u16>>,
        y: &mut CudaSlice<u16>,
        dims: (usize, usize, usize),
        plan: GemmPlan,
    ) -> Result<(), GpuError> {
        self.gemm_epilogue(x, w, bias, y, dims, plan, Epilogue::Plain)
    }

    /// The gate/up projection through SwiGLU in one product: `w`'s rows are interleaved, row `2c` a value's gate and
    /// row `2c + 1` its up, and `y[m, c] = silu(g) · u` of that pair of outputs (`y` is `[m, n / 2]`, `n` even), so
    /// the `[m, n]` product itself is never stored (the split-K reduction applies it where the plan splits k).
    pub fn gemm_silu_mul_with(
        &self,
        x: &CudaSlice<u16>,
        w: &CudaSlice<u16>,
        y: &mut CudaSlice<u16>,
        dims: (usize, usize, usize),
        plan: GemmPlan,
    ) -> Result<(), GpuError> {
        self.gemm_epilogue(x, w, None, y, dims, plan, Epilogue::SiluMul)
    }

    #[allow(clippy::too_many_arguments)]
    fn gemm_epilogue(
        &self,
        x: &CudaSlice<u16>,
        w: &CudaSlice<u16>,
        bias: Option<&CudaSlice<u16>>,
        y: &mut CudaSlice<u16>,
        (m, n, k): (usize, usize, usize),
        plan: GemmPlan,
        epilogue: Epilogue,
    ) -> Result<(), GpuError> {
        let silu_mul = epilogue == Epilogue::SiluMul;
        let op = if silu_mul { "gemm_silu_mul" } else { "gemm" };
        let shape_err = |d: String| GpuError::shape(op, d);
        if k == 0 || !k.is_multiple_of(8) {
            return Err(shape_err(format!("k = {k} must be a positive multiple of 8")));
        }
        if silu_mul && !n.is_multiple_of(2) {
            return Err(shape_err(format!("n = {n} must be even: rows alternate gate and up")));
        }
        let y_len = if silu_mul { m * n / 2 } else { m * n };
        for (what, len, needed) in [("x", x.len(), m * k), ("w", w.len(), n * k), ("y", y.len(), y_len)] {
            if len < needed {
                return Err(shape_err(format!("{what} has {len} elements, needs {needed}")));
            }
        }
        if let Some(b) = bias
            && b.len() < n
        {
            return Err(shape_err(format!("bias has {} elements, needs {n}", b.len())));
        }
        let to_i32 = |v: usize| i32::try_from(v).map_err(|_| shape_err(format!("dimension {v} exceeds i32")));
        let (mi, ni, ki) = (to_i32(m)?, to_i32(n)?, to_i32(k)?);
        if m == 0 || n == 0 {
            return Ok(());
        }
        let tc = plan.tile.config();
        let ktiles = k.div_ceil(tc.bk);
        let split = plan.split_k.clamp(1, ktiles);
        let per_split = ktiles.div_ceil(split);
        let split = ktiles.div_ceil(per_split); // no empty slices
        let (gx, gy) = (n.div_ceil(tc.bn), m.div_ceil(tc.bm));
        if gx > u32::MAX as usize || gy > 65_535 {
            return Err(shape_err(format!("{m} x {n} is too large for one launch")));
        }
        let cfg = LaunchConfig {
            grid_dim: (gx as u32, gy as u32, split as u32),
            block_dim: (tc.threads, 1, 1),
            shared_mem_bytes: tc.smem_bytes(),
        };
        let null: u64 = 0;
        let kps = per_split as i32;
        let glu = i32::from(silu_mul);
        let f = self.kernels().get(tc.id);
        if split == 1 {
            let mut b = self.stream().launch_builder(f);
            b.arg(x).arg(w);
            match bias {
                Some(bias) => b.arg(bias),
                None => b.arg(&null),
            };
            b.arg(y).arg(&null).arg(&mi).arg(&ni).arg(&ki).arg(&kps).arg(&glu);
            // SAFETY: the gemm kernels read m*k of x, n*k of w, n of bias (or none: a null pointer) and write m*n of
            // y, or m*n/2 with glu (n even, checked); every load and store is guarded by row < m / col < n / k-chunk
            // < k; lengths checked above. With a null `partial` they write y directly.
            unsafe { b.launch(cfg) }?;
            return Ok(());
        }
        let mut scratch = self.scratch.lock().unwrap_or_else(|p| p.into_inner());
        let need = split * m * n;
        if scratch.as_ref().is_none_or(|s| s.len() < need) {
            // Grown geometrically, and counted: a captured graph holds the old buffer's address.
            *scratch = Some(self.zeros::<f32>(need.next_power_of_two())?);
            self.scratch_generation
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let partial = scratch.as_mut().expect("allocated above");
        {
            let mut b = self.stream().launch_builder(f);
            b.arg(x)
                .arg(w)
                .arg(&null)
                .arg(&null)
                .arg(&mut *partial)
                .arg(&mi)
                .arg(&ni)
                .arg(&ki)
                .arg(&kps)
                .arg(&glu);
            // SAFETY: as above for x and w; with a non-null `partial` the kernel writes only
            // partial[z][row][col] for z < split, row < m, col < n: split*m*n floats, the scratch's size at least.
            // The scratch is reused only by work later on this same stream, so no other launch touches it meanwhile.
            unsafe { b.launch(cfg) }?;
        }
        let total = m * n;
        let blocks = total.div_ceil(256).min(self.info().sm_count as usize * 8);
        let cfg = LaunchConfig {
            grid_dim: (blocks as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let sp = split as i32;
        let f = self.kernels().get(KernelId::GemmSplitkReduceF16);
        let mut b = self.stream().launch_builder(f);
        b.arg(&*partial);
        match bias {
            Some(bias) => b.arg(bias),
            None => b.arg(&null),
        };
        b.arg(y).arg(&mi).arg(&ni).arg(&sp).arg(&glu);
        // SAFETY: the reduce kernel reads split*m*n floats of the scratch (written above), n of bias or none, and
        // writes m*n of y, or m*n/2 with glu (checked above), grid-stride bounded by that count.
        unsafe { b.launch(cfg) }?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_sized_products_take_the_skinny_kernel_covering_their_rows() {
        let sms = 132;
        for (m, tile) in [
            (1, GemmTile::S8),
            (8, GemmTile::S8),
            (9, GemmTile::S16),
            (16, GemmTile::S16),
            (17, GemmTile::T32x64),
            (33, GemmTile::T64x64W8),
            (64, GemmTile::T64x64W8),
        ] {
            let plan = gemm_plan(sms, m, 9728, 896);
            assert_eq!(plan.tile, tile, "m = {m}");
            assert!(plan.tile.rows() >= m);
        }
        let larger = gemm_plan(sms, 65, 9728, 896).tile;
        assert!(matches!(larger, GemmTile::T128x128 | GemmTile::T64x64), "{larger:?}");
    }

    #[test]
    fn tiles_serialize_as_their_labels() {
        for tile in GemmTile::ALL {
            let json = serde_json::to_string(&tile).unwrap();
            assert_eq!(json, format!("\"{}\"", tile.label()));
            assert_eq!(serde_json::from_str::<GemmTile>(&json).unwrap(), tile);
        }
        let plan: GemmPlan = serde_json::from_str(r#"{"tile": "s32d", "split_k": 3}"#).unwrap();
        assert_eq!(
            plan,
            GemmPlan {
                tile: GemmTile::S32D,
                split_k: 3
            }
        );
    }

    #[test]
    fn candidates_cover_the_rows_with_the_default_first_and_no_empty_slice() {
        let sms = 132;
        for (m, n, k) in [
            (1, 1152, 896),
            (8, 896, 4864),
            (16, 17920, 1536),
            (33, 896, 896),
            (64, 151_936, 896),
        ] {
            let c = gemm_candidates(sms, m, n, k);
            assert_eq!(c[0], gemm_plan(sms, m, n, k), "{m}x{n}x{k}");
            assert!(
                c.len() >= if m >= 16 { 20 } else { 4 },
                "{m}x{n}x{k}: {} candidates",
                c.len()
            );
            for (i, p) in c.iter().enumerate() {
                let cfg = p.tile.config();
                let ktiles = k.div_ceil(cfg.bk);
                assert!(!c[..i].contains(p), "{p:?} twice");
                if i > 0 {
                    assert!(m.div_ceil(cfg.bm) <= 8 && cfg.bm <= (2 * m).max(8), "{m}: {p:?}");
                    assert_eq!(ktiles.div_ceil(ktiles.div_ceil(p.split_k)), p.split_k, "{p:?}");
                }
            }
        }
        // One token: only the 8-row tile; beyond the tuned range: none.
        assert!(
            gemm_candidates(sms, 1, 896, 896)[1..]
                .iter()
                .all(|p| p.tile == GemmTile::S8)
        );
        assert!(gemm_candidates(sms, TUNED_MAX_ROWS + 1, 896, 896).is_empty());
    }

    #[test]
    fn split_k_fills_a_small_grid() {
        let sms = 132;
        // 896 x 4864 at one token: 56 skinny blocks of 16 weight rows, 38 k tiles of 128.
        assert_eq!(gemm_plan(sms, 1, 896, 4864).split_k, (3 * sms).div_ceil(56));
        // 896 x 896: 7 k tiles, at most 4 slices (2, 2, 2, 1).
        assert_eq!(gemm_plan(sms, 1, 896, 896).split_k, 4);
        // A wide product fills the GPU without splitting.
        assert_eq!(gemm_plan(sms, 1, 151_936, 896).split_k, 1);
        // The tiled kernels keep two k tiles of 64 a slice: 896 / 64 = 14 tiles, 7 slices at most.
        assert_eq!(gemm_plan(sms, 32, 896, 896).split_k, 7);
        for (m, n, k) in [(1, 128, 64), (64, 64, 8), (300, 256, 4096), (4096, 4096, 4096)] {
            let plan = gemm_plan(sms, m, n, k);
            assert!((1..=MAX_SPLIT_K).contains(&plan.split_k), "{m}x{n}x{k}: {plan:?}");
            assert!(
                plan.split_k <= k.div_ceil(plan.tile.config().bk),
                "{m}x{n}x{k}: {plan:?}"
            );
        }
    }
}
