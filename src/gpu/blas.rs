//! cuBLAS through cudarc: the vendor GEMM that calibration compares our own tensor-core kernel against.

use std::ffi::c_void;

use cudarc::cublas::{CudaBlas, sys as blas_sys};
use cudarc::driver::{CudaSlice, DevicePtr, DevicePtrMut};

use super::{Gpu, GpuError};

/// Bytes of the workspace each cuBLAS handle is given (what NVIDIA recommends for Hopper).
pub const CUBLAS_WORKSPACE_BYTES: usize = 32 << 20;

/// A cuBLAS handle and the workspace it was given. The handle is declared (so dropped) first: it must not outlive
/// its workspace.
pub(crate) struct BlasHandle {
    handle: CudaBlas,
    _workspace: CudaSlice<u8>,
}

impl Gpu {
    /// The cuBLAS handle, created on first use (bound to this GPU's stream), with a workspace of its own.
    fn blas(&self) -> Result<&CudaBlas, GpuError> {
        if let Some(b) = self.blas.get() {
            return Ok(&b.handle);
        }
        // SAFETY: only dlopen()s candidate names of libcublas and closes them again.
        if !unsafe { blas_sys::is_culib_present() } {
            return Err(GpuError::NoCublas);
        }
        let handle = CudaBlas::new(self.stream().clone()).map_err(|e| GpuError::Cublas(format!("{e:?}")))?;
        // A workspace of its own: otherwise cuBLAS takes one from the stream-ordered allocator, which inside a graph
        // capture adds an allocation and a free node per GEMM that needs it (25 of each in a decode graph of
        // qwen2.5-0.5b on an H100): memory held by the graphs, beside the engine's own allocations.
        let mut workspace = self.zeros::<u8>(CUBLAS_WORKSPACE_BYTES)?;
        let (ptr, sync) = workspace.device_ptr_mut(self.stream());
        // SAFETY: `ptr` is a live device allocation of CUBLAS_WORKSPACE_BYTES bytes, kept beside the handle (BlasHandle
        // drops the handle first); all cuBLAS work runs on this GPU's one stream, so no two calls use it at once.
        let status =
            unsafe { blas_sys::cublasSetWorkspace_v2(*handle.handle(), ptr as *mut c_void, CUBLAS_WORKSPACE_BYTES) };
        drop(sync);
        if status != blas_sys::cublasStatus_t::CUBLAS_STATUS_SUCCESS {
            return Err(GpuError::Cublas(format!("cublasSetWorkspace: {status:?}")));
        }
        // Another thread may have won the race; either handle is equivalent.
        let _ = self.blas.set(BlasHandle {
            handle,
            _workspace: workspace,
        });
        Ok(&self.blas.get().expect("just set").handle)
    }

    /// Creates the cuBLAS handle and its workspace now if they do not exist yet (they are made once per GPU handle
    /// and kept), so that their memory is in use before whatever is measured next.
    pub fn prepare_cublas(&self) -> Result<(), GpuError> {
        self.blas().map(|_| ())
    }

    /// [`Gpu::gemm_cublas`] of `dims`, unless this context already ran that shape; whether it ran. cuBLAS loads the
    /// kernel its heuristic picks for a shape when the shape first runs (CUDA loads modules lazily), and that takes
    /// milliseconds of host time: an engine warms the shapes its steps will run before it serves, so that no step
    /// pays for it (steps seen on an H100 took 5–16 ms to issue instead of 2 ms, each paying for a few loads).
    pub fn warm_cublas(
        &self,
        x: &CudaSlice<u16>,
        w: &CudaSlice<u16>,
        y: &mut CudaSlice<u16>,
        dims: (usize, usize, usize),
    ) -> Result<bool, GpuError> {
        let mut warmed = self.cublas_warmed.lock().unwrap_or_else(|e| e.into_inner());
        if warmed.contains(&dims) {
            return Ok(false);
        }
        self.gemm_cublas(x, w, y, dims)?;
        warmed.insert(dims);
        Ok(true)
    }

    /// `y[m, n] = x[m, k] . w[n, k]^T` through cuBLAS (fp16 in and out, f32 accumulation, default algorithm).
    pub fn gemm_cublas(
        &self,
        x: &CudaSlice<u16>,
        w: &CudaSlice<u16>,
        y: &mut CudaSlice<u16>,
        (m, n, k): (usize, usize, usize),
    ) -> Result<(), GpuError> {
        const OP: &str = "gemm_cublas";
        for (what, len, needed) in [("x", x.len(), m * k), ("w", w.len(), n * k), ("y", y.len(), m * n)] {
            if len < needed {
                return Err(GpuError::shape(
                    OP,
                    format!("{what} has {len} elements, needs {needed}"),
                ));
            }
        }
        let dim = |v: usize| i32::try_from(v).map_err(|_| GpuError::shape(OP, format!("dimension {v} exceeds i32")));
        let (mi, ni, ki) = (dim(m)?, dim(n)?, dim(k)?);
        if m == 0 || n == 0 || k == 0 {
            return Err(GpuError::shape(OP, "empty product"));
        }
        let blas = self.blas()?;
        let stream = self.stream();
        let (alpha, beta) = (1.0f32, 0.0f32);
        let (xp, _x_sync) = x.device_ptr(stream);
        let (wp, _w_sync) = w.device_ptr(stream);
        let (yp, _y_sync) = y.device_ptr_mut(stream);
        // Column-major view: y^T (n x m, ld n) = W (k x n col-major, transposed) . x^T (k x m col-major).
        // SAFETY: the three pointers are live device buffers of at least n*k (w), m*k (x) and m*n (y) fp16 values
        // (checked above), matching the dimensions and leading dimensions passed; alpha/beta are f32 host scalars as
        // CUBLAS_COMPUTE_32F requires; the handle's stream is this GPU's stream, which orders the call after the
        // writes of x and w.
        unsafe {
            blas_sys::cublasGemmEx(
                *blas.handle(),
                blas_sys::cublasOperation_t::CUBLAS_OP_T,
                blas_sys::cublasOperation_t::CUBLAS_OP_N,
                ni,
                mi,
                ki,
                (&alpha as *const f32).cast::<c_void>(),
                wp as *const c_void,
                blas_sys::cudaDataType::CUDA_R_16F,
                ki,
                xp as *const c_void,
                blas_sys::cudaDataType::CUDA_R_16F,
                ki,
                (&beta as *const f32).cast::<c_void>(),
                yp as *mut c_void,
                blas_sys::cudaDataType::CUDA_R_16F,
                ni,
                blas_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                blas_sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }
        .result()
        .map_err(|e| GpuError::Cublas(format!("cublasGemmEx {m}x{n}x{k}: {e:?}")))?;
        Ok(())
    }
}
