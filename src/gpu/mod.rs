//! The GPU layer: the only module with `unsafe` and cudarc.
//!
//! | file | owns |
//! |---|---|
//! | `mod.rs` | [`GpuError`], [`probe`] (never panics without a driver), [`Gpu`] (context + stream + kernels), memory |
//! | [`compile`] | NVRTC → cubin for the device's own architecture, on-disk cache, kernel source hash |
//! | [`kernels`] | the typed kernel registry ([`KernelId`]) |
//! | [`ops`] | safe typed wrappers, one per kernel: check shapes, then launch |
//! | [`clocks`] | the SM clock while work runs, sampled through NVML on a thread of its own |
//! | `blas.rs` | cuBLAS GEMM (the vendor baseline), handle created on first use |
//! | `gemm.rs` | our tensor-core GEMM: tiles, split-K, the plan heuristic |
//! | `engine_ops.rs` | what only the engine launches: weights generated on the device, cuBLAS's bias epilogue, prefix copies |
//! | [`timing`] | CUDA-event timing with warm-up and medians |
//! | [`reference`](mod@reference) | float32 CPU references of every kernel (pure Rust, used by the GPU tests) |
//!
//! cudarc is built with `dynamic-loading`: the crate builds and runs where no CUDA exists, but cudarc panics on the
//! first call into a library it cannot load. Everything here therefore checks for the library first
//! ([`require_driver`], [`compile::require_nvrtc`]) and turns its absence into a [`GpuError`].
//!
//! fp16 buffers are `CudaSlice<u16>` holding `half::f16` bit patterns (cudarc's own f16 support needs a feature we
//! do not build with); [`Gpu::upload_f16`] / [`Gpu::download_f16`] convert at the boundary.
//!
//! ## Kernels (`kernels/*.cu`, one file per op family, fp16 storage, f32 arithmetic, no toolkit headers)
//!
//! | op | wrapper | notes |
//! |---|---|---|
//! | RMSNorm, residual add + RMSNorm | [`Gpu::rmsnorm`], [`Gpu::add_rmsnorm`] | one block per row |
//! | SiLU·mul | [`Gpu::silu_mul`] | input: the gate/up output `[t, 2 * inter]`, each value's gate and up side by side |
//! | embedding gather | [`Gpu::embedding`] | bad ids give NaN rows |
//! | greedy argmax | [`Gpu::argmax`] | ties go to the smaller index, like `torch.argmax` |
//! | KV append + RoPE | [`Gpu::kv_append_rope`] | Qwen2 rotate-half RoPE on q and k of fused QKV rows |
//! | decode attention | [`Gpu::attention_decode`] | paged, GQA, split along the context + merge kernel |
//! | prefill attention | [`Gpu::attention_prefill`] | paged, GQA, causal, a chunk after an existing context |
//! | GEMM `y = x Wᵀ + b` | [`Gpu::gemm`], [`Gpu::gemm_cublas`] | ours: mma.sync, 4 tiles, split-K |
//! | gate/up GEMM + SiLU·mul | [`Gpu::gemm_silu_mul_with`] | ours, SiLU·mul in the epilogue (interleaved rows) |
//!
//! Attention has two implementations ([`AttentionKernel`]): tensor-core (mma.sync, flash-attention-2 style, the
//! query heads of a GQA group packed into the 16 rows of an mma tile; the default) and SIMT (CUDA-core FMAs, kept
//! as a cross-check).
//!
//! Paged KV layout, per layer: K and V each `[num_blocks, block_size, kv_heads, head_dim]` fp16; a sequence's token
//! `t` is in slot `block_table[t / block_size] * block_size + t % block_size`; block tables are
//! `[num_seqs, max_blocks_per_seq]` i32 (see [`PagedKvLayout`], [`PagedKv`]).
//!
//! Tests: `tests/gpu_kernels.rs` checks every kernel against [`reference`](mod@reference) on a GPU with
//! `cargo test --release --test gpu_kernels -- --ignored --test-threads=1` (CI lists them as ignored).

pub mod affinity;
mod blas;
pub mod clocks;
pub mod compile;
mod engine_ops;
mod gemm;
pub mod kernels;
pub mod ops;
pub mod reference;
pub mod timing;

use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaSlice, CudaStream, DevicePtr, DeviceRepr, DriverError, ValidAsZeroBits};
use cudarc::driver::{result as drv, sys as drv_sys};
use half::f16;
use half::slice::HalfFloatSliceExt;

pub use compile::{CompileTarget, kernel_source_hash};
pub use engine_ops::{Staging, init_uniform_value, mix64};
pub use gemm::{GemmPlan, GemmTile, TUNED_MAX_ROWS, gemm_candidates, gemm_plan};
pub use kernels::{KernelId, Kernels};
pub use ops::{
    AttentionKernel, DecodePlan, DecodeShape, DecodeWorkspace, KvAppendShape, KvCacheMut, PagedKv, PagedKvLayout,
    PrefillShape,
};
pub use timing::{Graph, Stopwatch, Succession, Timing};

/// fp16 data on the device, as raw bits (see the module docs).
pub type F16Buffer = CudaSlice<u16>;
/// i32 data on the device (token ids, positions, block tables, slot mappings).
pub type I32Buffer = CudaSlice<i32>;

/// The NVIDIA kernel driver's version (e.g. "580.159.04") where the platform says it (Linux: /proc), else None.
pub fn kernel_driver_version() -> Option<String> {
    let text = std::fs::read_to_string("/proc/driver/nvidia/version").ok()?;
    // "NVRM version: NVIDIA UNIX x86_64 Kernel Module  580.159.04  Tue …"
    let line = text.lines().next()?;
    line.split_whitespace()
        .find(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit()) && w.contains('.'))
        .map(str::to_string)
}

/// The bit pattern of an fp16 quiet NaN, used to poison outputs in tests.
pub const F16_NAN_BITS: u16 = 0x7e00;

/// Errors of the GPU layer. The messages are meant for the user of `batchlab calibrate`/`validate`: one sentence,
/// saying what is missing.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    #[error(
        "no CUDA driver found (libcuda.so.1 could not be loaded): batchlab calibrate/validate need an NVIDIA GPU \
         with its driver installed"
    )]
    NoDriver,
    #[error("the CUDA driver supports CUDA {found}, but batchlab is built against CUDA {needed}: update the driver")]
    DriverTooOld { found: String, needed: String },
    #[error("the CUDA driver reports no GPU")]
    NoDevice,
    #[error("GPU {ordinal} does not exist: the CUDA driver sees {count} GPU(s)")]
    NoSuchDevice { ordinal: usize, count: usize },
    #[error(
        "NVRTC (libnvrtc.so.13, CUDA's run-time compiler) could not be loaded: install the CUDA 13 runtime \
         compiler or add its lib directory to LD_LIBRARY_PATH"
    )]
    NoNvrtc,
    #[error("cuBLAS (libcublas.so.13) could not be loaded: install cuBLAS or add its lib directory to LD_LIBRARY_PATH")]
    NoCublas,
    #[error("GPU compute capability {major}.{minor} is not supported: batchlab's kernels need sm_80 or newer")]
    UnsupportedArch { major: u32, minor: u32 },
    #[error("NVRTC failed: {0}")]
    Nvrtc(String),
    #[error("NVRTC could not compile kernels/{file} for {arch}:\n{log}")]
    Compile {
        file: &'static str,
        arch: String,
        log: String,
    },
    #[error("CUDA driver error: {0}")]
    Driver(#[from] DriverError),
    #[error("cuBLAS error: {0}")]
    Cublas(String),
    #[error("{op}: {detail}")]
    Shape { op: &'static str, detail: String },
    #[error("the CUDA library panicked: {0}")]
    Panicked(String),
}

impl GpuError {
    pub(crate) fn shape(op: &'static str, detail: impl Into<String>) -> Self {
        Self::Shape {
            op,
            detail: detail.into(),
        }
    }
}

/// The CUDA version batchlab's bindings target (cudarc feature `cuda-13000`).
const NEEDED_CUDA: i32 = 13000;

/// What a device is, as a calibration profile's fingerprint records it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DeviceInfo {
    pub ordinal: usize,
    pub name: String,
    /// (major, minor), e.g. (9, 0) for an H100.
    pub compute_capability: (u32, u32),
    pub sm_count: u32,
    pub total_memory_bytes: u64,
    pub l2_cache_bytes: u64,
    /// The most shared memory one block may opt in to.
    pub max_shared_memory_per_block: u64,
    /// The newest CUDA version the driver supports, e.g. "13.0".
    pub driver_cuda_version: String,
    /// NVRTC's version (the toolkit our kernels are compiled with), if NVRTC loads.
    pub nvrtc_version: Option<String>,
    /// The card's UUID as `nvidia-smi -L` prints it ("GPU-" and 32 hex digits), if the driver gives it: one
    /// physical card, where the name is its model.
    pub uuid: Option<String>,
    /// Its PCI address ("0000:19:00.0"), if the driver gives it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pci_bus_id: Option<String>,
}

fn version_string(v: i32) -> String {
    format!("{}.{}", v / 1000, (v % 1000) / 10)
}

/// Fails with [`GpuError::NoDriver`] unless libcuda can be loaded. Call before anything touches cudarc's driver API.
pub fn require_driver() -> Result<(), GpuError> {
    // SAFETY: only dlopen()s candidate names of libcuda and closes them again.
    if unsafe { drv_sys::is_culib_present() } {
        Ok(())
    } else {
        Err(GpuError::NoDriver)
    }
}

/// Runs `f`, turning a panic inside cudarc (a symbol missing from an unexpected driver) into an error. The checks
/// before every entry point make this a last resort; the default panic hook still prints the panic's message.
fn no_panic<T>(f: impl FnOnce() -> Result<T, GpuError>) -> Result<T, GpuError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|p| {
        let msg = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "unknown panic".to_string());
        Err(GpuError::Panicked(msg))
    })
}

fn driver_version() -> Result<i32, GpuError> {
    let mut v = 0;
    // SAFETY: `v` is valid for one c_int write; the driver library is loaded (checked by the callers).
    unsafe { drv_sys::cuDriverGetVersion(&mut v) }.result()?;
    Ok(v)
}

/// Loads and initialises the driver and checks its version; returns the number of devices.
fn init_driver() -> Result<usize, GpuError> {
    require_driver()?;
    no_panic(|| {
        drv::init()?;
        let v = driver_version()?;
        if v < NEEDED_CUDA {
            return Err(GpuError::DriverTooOld {
                found: version_string(v),
                needed: version_string(NEEDED_CUDA),
            });
        }
        Ok(drv::device::get_count()? as usize)
    })
}

fn device_info(ordinal: usize) -> Result<DeviceInfo, GpuError> {
    no_panic(|| {
        let dev = drv::device::get(ordinal as i32)?;
        // SAFETY: `dev` is a valid device handle from cuDeviceGet; attributes are read-only queries.
        let attr = |a| unsafe { drv::device::get_attribute(dev, a) };
        use drv_sys::CUdevice_attribute as A;
        let major = attr(A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)? as u32;
        let minor = attr(A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)? as u32;
        let sm_count = attr(A::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)? as u32;
        let l2 = attr(A::CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE)? as u64;
        let smem = attr(A::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)? as u64;
        // SAFETY: as above.
        let total = unsafe { drv::device::total_mem(dev) }? as u64;
        let nvrtc_version = compile::nvrtc_version().ok().map(|(a, b)| format!("{a}.{b}"));
        let uuid = drv::device::get_uuid(dev)
            .ok()
            .map(|u| clocks::uuid_string(u.bytes.map(|b| b as u8)));
        let pci = |a| attr(a).ok().and_then(|v| u32::try_from(v).ok());
        let pci_bus_id = match (
            pci(A::CU_DEVICE_ATTRIBUTE_PCI_DOMAIN_ID),
            pci(A::CU_DEVICE_ATTRIBUTE_PCI_BUS_ID),
            pci(A::CU_DEVICE_ATTRIBUTE_PCI_DEVICE_ID),
        ) {
            (Some(domain), Some(bus), Some(device)) => Some(format!("{domain:04x}:{bus:02x}:{device:02x}.0")),
            _ => None,
        };
        Ok(DeviceInfo {
            ordinal,
            name: drv::device::get_name(dev)?,
            compute_capability: (major, minor),
            sm_count,
            total_memory_bytes: total,
            l2_cache_bytes: l2,
            max_shared_memory_per_block: smem,
            driver_cuda_version: version_string(driver_version()?),
            nvrtc_version,
            uuid,
            pci_bus_id,
        })
    })
}

/// Lists the GPUs the driver sees. Without a driver (or with one too old, or with no GPU) this returns an error
/// whose message says so; it never panics.
pub fn probe() -> Result<Vec<DeviceInfo>, GpuError> {
    let count = init_driver()?;
    if count == 0 {
        return Err(GpuError::NoDevice);
    }
    (0..count).map(device_info).collect()
}

/// A context on one GPU, its stream, and the compiled kernels. All work is issued on the one stream, in order.
pub struct Gpu {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    info: DeviceInfo,
    target: CompileTarget,
    kernels: Kernels,
    blas: std::sync::OnceLock<blas::BlasHandle>,
    /// Split-K partial sums; grows on demand. Reuse is safe because all work is ordered on the one stream.
    scratch: std::sync::Mutex<Option<CudaSlice<f32>>>,
    /// Bumped whenever `scratch` is reallocated (see [`Gpu::scratch_generation`]).
    scratch_generation: std::sync::atomic::AtomicU64,
    /// The (m, n, k) cuBLAS GEMMs this context has run once (see [`Gpu::warm_cublas`]).
    cublas_warmed: std::sync::Mutex<std::collections::HashSet<(usize, usize, usize)>>,
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gpu")
            .field("info", &self.info)
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl Gpu {
    /// Opens GPU `ordinal`: checks driver and NVRTC, creates the context and stream, compiles (or loads from the
    /// cache) every kernel for the device's own architecture.
    pub fn new(ordinal: usize) -> Result<Self, GpuError> {
        let count = init_driver()?;
        if count == 0 {
            return Err(GpuError::NoDevice);
        }
        if ordinal >= count {
            return Err(GpuError::NoSuchDevice { ordinal, count });
        }
        compile::require_nvrtc()?;
        let info = device_info(ordinal)?;
        let (major, minor) = info.compute_capability;
        let target = compile::target_for(major, minor)?;
        no_panic(|| {
            let ctx = CudaContext::new(ordinal)?;
            // SAFETY: batchlab issues all work on the single stream created below, so cudarc's per-buffer event
            // tracking (meant for buffers shared between streams) has nothing to order and only adds overhead.
            unsafe { ctx.disable_event_tracking() };
            let stream = ctx.new_stream()?;
            let kernels = Kernels::load(&ctx, target)?;
            tracing::info!(gpu = %info.name, arch = %target.arch_flag(), "GPU ready");
            Ok(Self {
                ctx,
                stream,
                info,
                target,
                kernels,
                blas: std::sync::OnceLock::new(),
                scratch: std::sync::Mutex::new(None),
                scratch_generation: std::sync::atomic::AtomicU64::new(0),
                cublas_warmed: std::sync::Mutex::new(std::collections::HashSet::new()),
            })
        })
    }

    pub fn info(&self) -> &DeviceInfo {
        &self.info
    }

    /// Makes the device's default memory pool (the one cudarc's stream-ordered allocations come from) keep the
    /// memory freed to it, with no release threshold, instead of handing it back to the driver at the next
    /// synchronisation (CUDA's default): buffers allocated after others were freed then reuse what those were mapped
    /// to. For `bench-engine --keep-freed-memory` and `validate --keep-freed-memory`, which ask whether that sets an
    /// engine's pace (on an H100 it did not: `reports/pace-keep-h100/`); the free memory the driver reports no longer
    /// falls when an engine reuses the pool's memory.
    pub fn keep_freed_memory(&self) -> Result<(), GpuError> {
        no_panic(|| {
            let dev = drv::device::get(self.info.ordinal as i32)?;
            let mut pool: drv_sys::CUmemoryPool = std::ptr::null_mut();
            // SAFETY: `pool` is valid for one handle write and `dev` is a device handle from cuDeviceGet.
            unsafe { drv_sys::cuDeviceGetDefaultMemPool(&mut pool, dev) }.result()?;
            let mut threshold: u64 = u64::MAX;
            // SAFETY: the release threshold is a cuuint64_t, which `threshold` is valid to read as; `pool` is the
            // device's default pool, returned by the driver just above and never destroyed.
            unsafe {
                drv_sys::cuMemPoolSetAttribute(
                    pool,
                    drv_sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
                    (&mut threshold as *mut u64).cast(),
                )
            }
            .result()?;
            tracing::info!("the default memory pool keeps what is freed to it");
            Ok(())
        })
    }

    /// Pins the calling thread, the one that will issue this GPU's work, as `choice` says (see [`affinity`]). The
    /// host's time per launch on a core is measured as the median of five rounds of 200 launches of a one-block
    /// kernel (after one round that warms the core up), back to back as an eager step issues them.
    pub fn pin_issuing_thread(&self, choice: affinity::IssueCpu) -> Result<Option<affinity::Pinned>, String> {
        const LAUNCHES: usize = 200;
        const ROUNDS: usize = 5;
        let text = |e: GpuError| e.to_string();
        // Allocated at the first measurement: only `auto` measures.
        let mut buffers = None;
        let mut launch_us = || -> Result<f64, String> {
            if buffers.is_none() {
                buffers = Some((
                    self.zeros::<u16>(16).map_err(text)?,
                    self.zeros::<u16>(8).map_err(text)?,
                ));
            }
            let (gate_up, out) = buffers.as_mut().expect("allocated above");
            let mut rounds = Vec::with_capacity(ROUNDS);
            for round in 0..=ROUNDS {
                self.synchronize().map_err(text)?;
                let started = std::time::Instant::now();
                for _ in 0..LAUNCHES {
                    self.silu_mul(gate_up, out, 1, 8).map_err(text)?;
                }
                if round > 0 {
                    rounds.push(started.elapsed().as_secs_f64() * 1e6 / LAUNCHES as f64);
                }
            }
            self.synchronize().map_err(text)?;
            rounds.sort_by(f64::total_cmp);
            Ok(rounds[ROUNDS / 2])
        };
        affinity::pin_issuing_thread(choice, self.info.pci_bus_id.as_deref(), &mut launch_us)
    }

    /// Starts sampling this GPU's SM clock every `every` on a thread of its own (see [`clocks`]); an error says
    /// why it cannot (no NVML, say).
    pub fn clock_sampler(&self, every: std::time::Duration) -> Result<clocks::ClockSampler, String> {
        let uuid = no_panic(|| Ok(self.ctx.uuid()?)).map_err(|e| format!("the GPU's UUID: {e}"))?;
        clocks::ClockSampler::start(uuid.bytes.map(|b| b as u8), every)
    }

    /// [`Gpu::clock_sampler`], or `None` with a warning that the SM clock will not be on record.
    pub fn sample_clock(&self, every: std::time::Duration) -> Option<clocks::ClockSampler> {
        self.clock_sampler(every)
            .map_err(|e| tracing::warn!("the SM clock will not be on record: {e}"))
            .ok()
    }

    /// What the kernels were compiled for.
    pub fn target(&self) -> CompileTarget {
        self.target
    }

    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    pub fn kernels(&self) -> &Kernels {
        &self.kernels
    }

    /// Changes whenever the GEMM split-K scratch moves: a graph captured before then would use freed memory.
    pub fn scratch_generation(&self) -> u64 {
        self.scratch_generation.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Where the GEMM split-K scratch starts on the device (0: none allocated yet), for the logs.
    pub fn scratch_address(&self) -> u64 {
        let scratch = self.scratch.lock().unwrap_or_else(|p| p.into_inner());
        scratch.as_ref().map_or(0, |s| self.address(s))
    }

    /// Waits for all work issued so far, surfacing any asynchronous kernel error.
    pub fn synchronize(&self) -> Result<(), GpuError> {
        self.stream.synchronize()?;
        Ok(())
    }

    /// Free and total device memory, in bytes.
    pub fn memory(&self) -> Result<(usize, usize), GpuError> {
        Ok(self.ctx.mem_get_info()?)
    }

    pub fn upload<T: DeviceRepr>(&self, host: &[T]) -> Result<CudaSlice<T>, GpuError> {
        Ok(self.stream.clone_htod(host)?)
    }

    pub fn download<T: DeviceRepr + Default + Clone>(&self, dev: &CudaSlice<T>) -> Result<Vec<T>, GpuError> {
        Ok(self.stream.clone_dtoh(dev)?)
    }

    /// Overwrites a device buffer with host data of the same length.
    pub fn write<T: DeviceRepr>(&self, host: &[T], dev: &mut CudaSlice<T>) -> Result<(), GpuError> {
        if host.len() != dev.len() {
            return Err(GpuError::shape(
                "write",
                format!("host has {} elements, device {}", host.len(), dev.len()),
            ));
        }
        self.stream.memcpy_htod(host, dev)?;
        Ok(())
    }

    /// Copies `src` into the front of `dst` on the device (the copy-bandwidth ceiling is timed with this).
    pub fn copy_within_device(&self, src: &CudaSlice<u16>, dst: &mut CudaSlice<u16>) -> Result<(), GpuError> {
        if dst.len() < src.len() {
            return Err(GpuError::shape(
                "copy",
                format!("dst has {} elements, src {}", dst.len(), src.len()),
            ));
        }
        self.stream.memcpy_dtod(src, dst)?;
        Ok(())
    }

    /// Where `buf` starts in the device's address space: for logs that tell one engine's allocations from another's.
    pub fn address<T>(&self, buf: &CudaSlice<T>) -> u64 {
        let (ptr, _synced) = buf.device_ptr(&self.stream);
        ptr
    }

    pub fn zeros<T: DeviceRepr + ValidAsZeroBits>(&self, len: usize) -> Result<CudaSlice<T>, GpuError> {
        Ok(self.stream.alloc_zeros(len)?)
    }

    pub fn upload_f16(&self, host: &[f16]) -> Result<CudaSlice<u16>, GpuError> {
        self.upload(host.reinterpret_cast())
    }

    pub fn upload_f32_as_f16(&self, host: &[f32]) -> Result<CudaSlice<u16>, GpuError> {
        let h: Vec<f16> = host.iter().map(|&x| f16::from_f32(x)).collect();
        self.upload_f16(&h)
    }

    pub fn download_f16(&self, dev: &CudaSlice<u16>) -> Result<Vec<f16>, GpuError> {
        let bits = self.download(dev)?;
        Ok(bits.into_iter().map(f16::from_bits).collect())
    }

    pub fn download_f16_as_f32(&self, dev: &CudaSlice<u16>) -> Result<Vec<f32>, GpuError> {
        Ok(self.download_f16(dev)?.into_iter().map(f32::from).collect())
    }

    /// An fp16 buffer filled with NaN: outputs start poisoned, so an element a kernel fails to write is visible.
    pub fn nan_f16(&self, len: usize) -> Result<CudaSlice<u16>, GpuError> {
        self.upload(&vec![F16_NAN_BITS; len])
    }
}
