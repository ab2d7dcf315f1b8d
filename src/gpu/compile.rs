//! NVRTC: `kernels/*.cu` → a cubin for the device's own architecture, cached on disk by source hash + arch.
//!
//! cudarc's safe wrapper only returns PTX, which the driver would then have to JIT; we drive NVRTC's C API directly
//! so that we get SASS for the exact `sm_XY` (no JIT at start-up, no PTX-version gate against an older driver), and
//! so that our shared header can be handed to NVRTC as an in-memory header (NVRTC has no include path by default).

use std::ffi::{CStr, CString, c_char};
use std::path::{Path, PathBuf};

use cudarc::nvrtc::{result as nvrtc_result, sys as nvrtc_sys};
use sha2::{Digest, Sha256};

use super::GpuError;

/// One `.cu` file of `kernels/`, embedded in the binary.
#[derive(Debug, Clone, Copy)]
pub struct KernelFile {
    /// File name, e.g. `norm.cu`.
    pub name: &'static str,
    pub source: &'static str,
}

/// Headers the kernels include by name, embedded in the binary and handed to NVRTC in memory.
pub const HEADERS: &[(&str, &str)] = &[("common.cuh", include_str!("../../kernels/common.cuh"))];

/// Every kernel family, one `.cu` per op family.
pub const KERNEL_FILES: &[KernelFile] = &[
    KernelFile {
        name: "activation.cu",
        source: include_str!("../../kernels/activation.cu"),
    },
    KernelFile {
        name: "attention.cu",
        source: include_str!("../../kernels/attention.cu"),
    },
    KernelFile {
        name: "bias.cu",
        source: include_str!("../../kernels/bias.cu"),
    },
    KernelFile {
        name: "embedding.cu",
        source: include_str!("../../kernels/embedding.cu"),
    },
    KernelFile {
        name: "gemm.cu",
        source: include_str!("../../kernels/gemm.cu"),
    },
    KernelFile {
        name: "init.cu",
        source: include_str!("../../kernels/init.cu"),
    },
    KernelFile {
        name: "kv.cu",
        source: include_str!("../../kernels/kv.cu"),
    },
    KernelFile {
        name: "norm.cu",
        source: include_str!("../../kernels/norm.cu"),
    },
    KernelFile {
        name: "sampling.cu",
        source: include_str!("../../kernels/sampling.cu"),
    },
];

/// Kernel files only the engine launches and calibration never times: the weight initialiser (start-up only) and the
/// bias epilogue of cuBLAS GEMMs. They are left out of [`kernel_source_hash`], so adding or changing them does not
/// make a profile of the timed kernels stale.
pub const UNTIMED_FILES: &[&str] = &["bias.cu", "init.cu"];

/// K/V chunk buffers per warp of the tensor-core decode attention kernel (its pipeline depth), for every head size:
/// 2. `BATCHLAB_DECODE_STAGES=N` (2 to 4) sets another, for `bench-kernels` to compare depths; the count then goes
/// into the kernels' compile options and [`kernel_source_hash`], so what is measured with it is never taken for the
/// default kernels. (On an H200, 3 and 4 stages were no faster than 2 at any of seven batch × context points from
/// 1 × 4,096 to 256 × 1,024, for heads of 64 and of 128 values: a warp's copies are not what a block waits on.)
pub fn decode_stages() -> usize {
    decode_stages_override().unwrap_or(2)
}

fn decode_stages_override() -> Option<usize> {
    static STAGES: std::sync::OnceLock<Option<usize>> = std::sync::OnceLock::new();
    *STAGES.get_or_init(|| count_from_env("BATCHLAB_DECODE_STAGES", &[2, 3, 4], "a count from 2 to 4"))
}

/// The count `var` sets, if it is set to one of `allowed`; otherwise (with a warning when it is set) none.
fn count_from_env(var: &str, allowed: &[usize], expected: &str) -> Option<usize> {
    let v = std::env::var(var).ok()?;
    match v.trim().parse::<usize>() {
        Ok(n) if allowed.contains(&n) => Some(n),
        _ => {
            tracing::warn!("{var}={v:?} is not {expected}: ignored");
            None
        }
    }
}

/// Warps of a tensor-core decode attention block for heads of `head_dim` values: 8 up to 64 values, 4 beyond (on an
/// H100, qwen2.5-0.5b's heads of 64 ran 1.4-1.6x faster on 8 warps at batch 1 x 4,096 and 8 x 8,192 and 0-5% faster
/// at batch 32 to 256; heads of 128 hold twice the shared memory a warp, and 8 of them were not measured). `BATCHLAB_DECODE_WARPS=N` (4 or 8) sets another for both, for
/// `bench-kernels` to compare; like [`decode_stages`], the count then goes into the kernels' compile options and
/// [`kernel_source_hash`].
pub fn decode_warps(head_dim: usize) -> usize {
    decode_warps_override().unwrap_or(if head_dim <= 64 { 8 } else { 4 })
}

fn decode_warps_override() -> Option<usize> {
    static WARPS: std::sync::OnceLock<Option<usize>> = std::sync::OnceLock::new();
    *WARPS.get_or_init(|| count_from_env("BATCHLAB_DECODE_WARPS", &[4, 8], "4 or 8"))
}

/// Warps (16 query rows each) of a tensor-core prefill attention block: 4. `BATCHLAB_PREFILL_WARPS=N` (4 or 8)
/// sets another, for `bench-kernels` to compare; like [`decode_stages`], the count then goes into the kernels' compile
/// options and [`kernel_source_hash`].
pub fn prefill_tc_warps() -> usize {
    prefill_warps_override().unwrap_or(4)
}

fn prefill_warps_override() -> Option<usize> {
    static WARPS: std::sync::OnceLock<Option<usize>> = std::sync::OnceLock::new();
    *WARPS.get_or_init(|| count_from_env("BATCHLAB_PREFILL_WARPS", &[4, 8], "4 or 8"))
}

/// The `-D` options every kernel file is compiled with: none, unless [`decode_stages`], [`decode_warps`] or
/// [`prefill_tc_warps`] is overridden.
pub fn kernel_defines() -> Vec<String> {
    let mut d = Vec::new();
    if let Some(n) = decode_stages_override() {
        d.push(format!("-DDEC_STAGES_D64={n}"));
        d.push(format!("-DDEC_STAGES_D128={n}"));
    }
    if let Some(n) = prefill_warps_override() {
        d.push(format!("-DPF_TC_WARPS={n}"));
    }
    if let Some(n) = decode_warps_override() {
        d.push(format!("-DDEC_TC_WARPS_D64={n}"));
        d.push(format!("-DDEC_TC_WARPS_D128={n}"));
    }
    d
}

/// SHA-256 (hex) over every kernel source and header (but [`UNTIMED_FILES`]), and the [`kernel_defines`] when there
/// are any: the "kernel source hash" a calibration profile records, so a profile measured with other kernels is
/// recognised as stale.
pub fn kernel_source_hash() -> String {
    let mut h = Sha256::new();
    for (name, src) in HEADERS {
        h.update(name.as_bytes());
        h.update([0]);
        h.update(src.as_bytes());
        h.update([0]);
    }
    for f in KERNEL_FILES.iter().filter(|f| !UNTIMED_FILES.contains(&f.name)) {
        h.update(f.name.as_bytes());
        h.update([0]);
        h.update(f.source.as_bytes());
        h.update([0]);
    }
    for d in kernel_defines() {
        h.update(d.as_bytes());
        h.update([0]);
    }
    hex(&h.finalize())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What NVRTC is asked to produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompileTarget {
    /// SASS for exactly this architecture (`sm_XY`, XY = major * 10 + minor).
    Cubin(u32),
    /// PTX for a virtual architecture (`compute_XY`) the driver JIT-compiles: only when this NVRTC is older than the
    /// GPU and cannot emit its SASS.
    Ptx(u32),
}

impl CompileTarget {
    /// The `--gpu-architecture` value.
    pub fn arch_flag(&self) -> String {
        match self {
            Self::Cubin(a) => format!("sm_{a}"),
            Self::Ptx(a) => format!("compute_{a}"),
        }
    }
}

/// A compiled module image, ready for `CudaContext::load_module`.
#[derive(Debug, Clone)]
pub enum CompiledImage {
    Cubin(Vec<u8>),
    Ptx(String),
}

impl CompiledImage {
    pub(crate) fn into_cudarc(self) -> cudarc::nvrtc::Ptx {
        match self {
            Self::Cubin(bytes) => cudarc::nvrtc::Ptx::from_binary(bytes),
            Self::Ptx(src) => cudarc::nvrtc::Ptx::from_src(src),
        }
    }
}

/// Fails with a clear error unless NVRTC's shared library can be loaded (cudarc panics on first use otherwise).
pub fn require_nvrtc() -> Result<(), GpuError> {
    // SAFETY: only dlopen()s the candidate library names and closes them again; loading NVRTC runs no code of ours.
    if unsafe { nvrtc_sys::is_culib_present() } {
        Ok(())
    } else {
        Err(GpuError::NoNvrtc)
    }
}

/// NVRTC's version, e.g. (13, 0).
pub fn nvrtc_version() -> Result<(i32, i32), GpuError> {
    require_nvrtc()?;
    let (mut major, mut minor) = (0, 0);
    // SAFETY: both pointers are valid for writes of one c_int; the library was checked to load above.
    unsafe { nvrtc_sys::nvrtcVersion(&mut major, &mut minor) }
        .result()
        .map_err(|e| GpuError::Nvrtc(format!("nvrtcVersion: {e:?}")))?;
    Ok((major, minor))
}

/// The real architectures this NVRTC can emit SASS for (e.g. 75, 80, 86, 89, 90, 100, 120).
pub fn supported_archs() -> Result<Vec<u32>, GpuError> {
    require_nvrtc()?;
    let mut n = 0;
    // SAFETY: `n` is valid for one c_int write.
    unsafe { nvrtc_sys::nvrtcGetNumSupportedArchs(&mut n) }
        .result()
        .map_err(|e| GpuError::Nvrtc(format!("nvrtcGetNumSupportedArchs: {e:?}")))?;
    let mut archs = vec![0; n.max(0) as usize];
    // SAFETY: `archs` holds exactly the `n` c_ints NVRTC just said it will write.
    unsafe { nvrtc_sys::nvrtcGetSupportedArchs(archs.as_mut_ptr()) }
        .result()
        .map_err(|e| GpuError::Nvrtc(format!("nvrtcGetSupportedArchs: {e:?}")))?;
    Ok(archs.into_iter().map(|a| a as u32).collect())
}

/// The target for a device of compute capability `major.minor`: its own SASS where NVRTC knows the architecture,
/// else PTX for the newest architecture NVRTC knows that the device can run.
pub fn target_for(major: u32, minor: u32) -> Result<CompileTarget, GpuError> {
    let arch = major * 10 + minor;
    if arch < 80 {
        return Err(GpuError::UnsupportedArch { major, minor });
    }
    let archs = supported_archs()?;
    if archs.contains(&arch) {
        return Ok(CompileTarget::Cubin(arch));
    }
    // A newer GPU than this NVRTC: PTX of an older architecture of the same major runs through the driver's JIT.
    match archs.iter().copied().filter(|&a| a <= arch && a >= 80).max() {
        Some(a) => Ok(CompileTarget::Ptx(a)),
        None => Err(GpuError::UnsupportedArch { major, minor }),
    }
}

/// Directory holding the CUDA toolkit's headers (`cuda_fp16.h`), if one is installed: `$CUDA_HOME/include`,
/// `$CUDA_PATH/include`, then `/usr/local/cuda/include`. Our kernels need none (see kernels/common.cuh), but a path
/// found is passed to NVRTC so a kernel that does include a toolkit header compiles.
pub fn toolkit_include_dir() -> Option<PathBuf> {
    let candidates = ["CUDA_HOME", "CUDA_PATH"]
        .iter()
        .filter_map(|v| std::env::var_os(v).map(|p| PathBuf::from(p).join("include")))
        .chain(std::iter::once(PathBuf::from("/usr/local/cuda/include")));
    candidates.into_iter().find(|d| d.join("cuda_fp16.h").is_file())
}

/// Where compiled modules are cached: `$BATCHLAB_KERNEL_CACHE` (`off` disables), else
/// `$XDG_CACHE_HOME/batchlab/kernels`, else `~/.cache/batchlab/kernels`.
pub fn cache_dir() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("BATCHLAB_KERNEL_CACHE") {
        return if p == "off" { None } else { Some(PathBuf::from(p)) };
    }
    if let Some(p) = std::env::var_os("XDG_CACHE_HOME").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p).join("batchlab").join("kernels"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache").join("batchlab").join("kernels"))
}

/// Options passed to NVRTC for `target`.
fn options(target: CompileTarget, extra: &[String]) -> Vec<String> {
    let mut o = vec![
        format!("--gpu-architecture={}", target.arch_flag()),
        "-std=c++17".to_string(),
    ];
    o.extend(kernel_defines());
    if let Some(dir) = toolkit_include_dir() {
        o.push(format!("--include-path={}", dir.display()));
    }
    o.extend(extra.iter().cloned());
    o
}

/// Compiles one kernel file, through the on-disk cache when `cache` is given. Returns the image and NVRTC's log
/// (warnings, or ptxas's resource report when `extra` asks for it).
pub fn compile(
    file: &KernelFile,
    target: CompileTarget,
    extra: &[String],
    cache: Option<&Path>,
) -> Result<(CompiledImage, String), GpuError> {
    let opts = options(target, extra);
    let (major, minor) = nvrtc_version()?;
    let key = {
        let mut h = Sha256::new();
        h.update(format!("nvrtc {major}.{minor}\0").as_bytes());
        for o in &opts {
            h.update(o.as_bytes());
            h.update([0]);
        }
        for (name, src) in HEADERS {
            h.update(name.as_bytes());
            h.update(src.as_bytes());
        }
        h.update(file.source.as_bytes());
        hex(&h.finalize())[..20].to_string()
    };
    let stem = file.name.trim_end_matches(".cu");
    let ext = match target {
        CompileTarget::Cubin(_) => "cubin",
        CompileTarget::Ptx(_) => "ptx",
    };
    let cached = cache.map(|d| d.join(format!("{stem}-{}-{key}.{ext}", target.arch_flag())));
    if let Some(path) = &cached
        && let Ok(bytes) = std::fs::read(path)
        && !bytes.is_empty()
    {
        tracing::debug!(path = %path.display(), "kernel cache hit");
        let image = match target {
            CompileTarget::Cubin(_) => CompiledImage::Cubin(bytes),
            CompileTarget::Ptx(_) => match String::from_utf8(bytes) {
                Ok(s) => CompiledImage::Ptx(s),
                Err(_) => return compile_and_store(file, target, &opts, cached.as_deref()),
            },
        };
        return Ok((image, String::new()));
    }
    compile_and_store(file, target, &opts, cached.as_deref())
}

fn compile_and_store(
    file: &KernelFile,
    target: CompileTarget,
    opts: &[String],
    cache_path: Option<&Path>,
) -> Result<(CompiledImage, String), GpuError> {
    let started = std::time::Instant::now();
    let (image, log) = nvrtc_compile(file, target, opts)?;
    tracing::debug!(file = file.name, arch = %target.arch_flag(), ms = started.elapsed().as_millis() as u64, "NVRTC compiled");
    if let Some(path) = cache_path {
        let bytes: &[u8] = match &image {
            CompiledImage::Cubin(b) => b,
            CompiledImage::Ptx(s) => s.as_bytes(),
        };
        // The cache is an optimisation: failing to write it is worth a warning, not an error. Write-then-rename so
        // a concurrent reader never sees half a file.
        let write = || -> std::io::Result<()> {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let tmp = path.with_extension(format!("tmp{}", std::process::id()));
            std::fs::write(&tmp, bytes)?;
            std::fs::rename(&tmp, path)
        };
        if let Err(e) = write() {
            tracing::warn!(path = %path.display(), error = %e, "could not write the kernel cache");
        }
    }
    Ok((image, log))
}

/// Owns an nvrtcProgram and destroys it on every exit path.
struct Program(nvrtc_sys::nvrtcProgram);

impl Drop for Program {
    fn drop(&mut self) {
        // SAFETY: self.0 came from a successful nvrtcCreateProgram and is destroyed only here, once.
        let _ = unsafe { nvrtc_result::destroy_program(self.0) };
    }
}

fn nvrtc_compile(
    file: &KernelFile,
    target: CompileTarget,
    opts: &[String],
) -> Result<(CompiledImage, String), GpuError> {
    require_nvrtc()?;
    let cstr = |s: &str| CString::new(s).map_err(|_| GpuError::Nvrtc(format!("{}: NUL byte in source", file.name)));
    let src = cstr(file.source)?;
    let name = cstr(file.name)?;
    let header_srcs = HEADERS.iter().map(|(_, s)| cstr(s)).collect::<Result<Vec<_>, _>>()?;
    let header_names = HEADERS.iter().map(|(n, _)| cstr(n)).collect::<Result<Vec<_>, _>>()?;
    let header_src_ptrs: Vec<*const c_char> = header_srcs.iter().map(|s| s.as_ptr()).collect();
    let header_name_ptrs: Vec<*const c_char> = header_names.iter().map(|s| s.as_ptr()).collect();

    let mut raw = std::ptr::null_mut();
    // SAFETY: every pointer is to a NUL-terminated CString that outlives the program (they live until the end of
    // this function and `Program` is dropped before them); the two header arrays have HEADERS.len() entries each.
    unsafe {
        nvrtc_sys::nvrtcCreateProgram(
            &mut raw,
            src.as_ptr(),
            name.as_ptr(),
            HEADERS.len() as i32,
            header_src_ptrs.as_ptr(),
            header_name_ptrs.as_ptr(),
        )
    }
    .result()
    .map_err(|e| GpuError::Nvrtc(format!("nvrtcCreateProgram({}): {e:?}", file.name)))?;
    let prog = Program(raw);

    // SAFETY: prog.0 is a live program created above.
    let compiled = unsafe { nvrtc_result::compile_program(prog.0, opts) };
    // SAFETY: prog.0 is a live program; the log exists after a compile attempt, successful or not.
    let log = unsafe { nvrtc_result::get_program_log(prog.0) }
        .map(|raw| {
            // SAFETY: NVRTC NUL-terminates the log it wrote into `raw`.
            unsafe { CStr::from_ptr(raw.as_ptr()) }
                .to_string_lossy()
                .trim()
                .to_string()
        })
        .unwrap_or_default();
    if let Err(e) = compiled {
        let hint = if log.contains("cannot open source file") && toolkit_include_dir().is_none() {
            "\n(no CUDA toolkit headers found: looked in $CUDA_HOME/include, $CUDA_PATH/include, /usr/local/cuda/include)"
        } else {
            ""
        };
        return Err(GpuError::Compile {
            file: file.name,
            arch: target.arch_flag(),
            log: format!("{e:?}\n{log}{hint}"),
        });
    }
    let image = match target {
        CompileTarget::Cubin(_) => {
            let mut size = 0usize;
            // SAFETY: prog.0 compiled successfully for a real architecture, so a cubin exists; `size` is writable.
            unsafe { nvrtc_sys::nvrtcGetCUBINSize(prog.0, &mut size) }
                .result()
                .map_err(|e| GpuError::Nvrtc(format!("nvrtcGetCUBINSize({}): {e:?}", file.name)))?;
            let mut bytes = vec![0u8; size];
            // SAFETY: `bytes` has exactly the `size` bytes NVRTC reported for this cubin.
            unsafe { nvrtc_sys::nvrtcGetCUBIN(prog.0, bytes.as_mut_ptr().cast()) }
                .result()
                .map_err(|e| GpuError::Nvrtc(format!("nvrtcGetCUBIN({}): {e:?}", file.name)))?;
            CompiledImage::Cubin(bytes)
        }
        CompileTarget::Ptx(_) => {
            // SAFETY: prog.0 compiled successfully.
            let raw = unsafe { nvrtc_result::get_ptx(prog.0) }
                .map_err(|e| GpuError::Nvrtc(format!("nvrtcGetPTX({}): {e:?}", file.name)))?;
            // SAFETY: NVRTC NUL-terminates the PTX it wrote into `raw`.
            CompiledImage::Ptx(unsafe { CStr::from_ptr(raw.as_ptr()) }.to_string_lossy().into_owned())
        }
    };
    Ok((image, log))
}

/// Compiles every kernel file for `target` without a GPU or a driver (NVRTC alone), bypassing the cache; returns
/// each file's NVRTC log. With `resource_report`, the log carries ptxas's registers / shared memory / spills.
pub fn compile_all(target: CompileTarget, resource_report: bool) -> Result<Vec<(&'static str, String)>, GpuError> {
    let extra = if resource_report {
        vec!["--ptxas-options=-v".to_string()]
    } else {
        Vec::new()
    };
    let opts = options(target, &extra);
    KERNEL_FILES
        .iter()
        .map(|f| nvrtc_compile(f, target, &opts).map(|(_, log)| (f.name, log)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The host lays out and launches the tensor-core attention kernels from its own copies of their tile and block
    /// sizes: they must be the kernels'.
    #[test]
    fn the_host_knows_the_attention_kernels_tiles_and_warps() {
        let src = KERNEL_FILES.iter().find(|f| f.name == "attention.cu").unwrap().source;
        let define = |name: &str| -> usize {
            let line = src
                .lines()
                .find(|l| l.starts_with(&format!("#define {name} ")))
                .unwrap_or_else(|| panic!("attention.cu defines no {name}"));
            line.split_whitespace().nth(2).unwrap().parse().unwrap()
        };
        assert_eq!(define("PF_TC_BK"), super::super::ops::PREFILL_KEY_TILE);
        if prefill_warps_override().is_none() {
            assert_eq!(define("PF_TC_WARPS"), prefill_tc_warps());
        }
        if decode_warps_override().is_none() {
            assert_eq!(define("DEC_TC_WARPS_D64"), decode_warps(64));
            assert_eq!(define("DEC_TC_WARPS_D128"), decode_warps(128));
        }
    }

    /// A decode graph's kernel-to-kernel edges are made programmatic, so every kernel must wait for its
    /// predecessor inside (`pdl_begin` or `pdl_wait`): one forgotten would read its inputs before they exist.
    #[test]
    fn every_kernel_waits_for_its_predecessor() {
        for f in KERNEL_FILES {
            let kernels = f.source.matches("__global__").count();
            let waits = f.source.matches("pdl_begin();").count() + f.source.matches("pdl_wait();").count();
            assert!(kernels > 0, "{} has no kernel", f.name);
            assert_eq!(waits, kernels, "{}: {kernels} kernels but {waits} waits", f.name);
        }
    }
}
