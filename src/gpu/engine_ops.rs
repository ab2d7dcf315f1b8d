//! What the engine needs beyond the timed kernels: seeded random weights generated on the device
//! (kernels/init.cu), the bias epilogue of cuBLAS GEMMs (kernels/bias.cu), and copies of a buffer's prefix (the
//! engine's input buffers are sized for its largest step and filled to each step's length), staged in page-locked
//! memory.

use cudarc::driver::sys::CUevent_flags;
use cudarc::driver::{CudaEvent, CudaSlice, DevicePtrMut, DeviceRepr, LaunchConfig, PinnedHostSlice, PushKernelArg};

use super::kernels::KernelId;
use super::{Gpu, GpuError};

/// Page-locked host memory that [`Gpu::write_prefix_staged`] stages copies in, used as a ring.
pub struct Staging {
    host: PinnedHostSlice<i32>,
    /// Elements written since the ring last started over.
    used: usize,
    /// Recorded after each copy queued from `host`.
    copied: CudaEvent,
}

impl Drop for Staging {
    fn drop(&mut self) {
        // The memory is freed next: no queued copy may still read it. (An error here is the context's, and it
        // surfaces on the next call that uses it.)
        let _ = self.copied.synchronize();
    }
}

/// splitmix64's finaliser, the mix of kernels/init.cu.
pub fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Element `i` of [`Gpu::init_uniform_f16`]'s output, before rounding to fp16: the CPU mirror of kernels/init.cu
/// (same hash, same f32 operations in the same order).
pub fn init_uniform_value(seed: u64, i: u64, center: f32, half_width: f32) -> f32 {
    let h = mix64(seed ^ mix64(i));
    let u = (h >> 40) as u32 as f32 * (1.0 / 16_777_216.0);
    center + (2.0 * u - 1.0) * half_width
}

impl Gpu {
    /// Fills `out` with `center ± half_width`, uniform, from a counter-based hash of (`seed`, index): the same seed
    /// gives the same values whatever the launch shape ([`init_uniform_value`] is the CPU mirror).
    pub fn init_uniform_f16(
        &self,
        out: &mut CudaSlice<u16>,
        seed: u64,
        center: f32,
        half_width: f32,
    ) -> Result<(), GpuError> {
        let n = out.len();
        if n == 0 {
            return Ok(());
        }
        let blocks = n.div_ceil(256).min(self.info().sm_count as usize * 32).max(1);
        let cfg = LaunchConfig {
            grid_dim: (blocks as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let n64 = n as u64;
        let f = self.kernels().get(KernelId::InitUniformF16);
        let mut b = self.stream().launch_builder(f);
        b.arg(&mut *out).arg(&n64).arg(&seed).arg(&center).arg(&half_width);
        // SAFETY: init_uniform_f16 writes elements [0, n) of out (grid-stride, bounded by n = out.len()) and reads
        // nothing else.
        unsafe { b.launch(cfg) }?;
        Ok(())
    }

    /// `y[r, j] += bias[j]` for `rows` rows of `n` (fp16, one rounding).
    pub fn add_bias(
        &self,
        y: &mut CudaSlice<u16>,
        bias: &CudaSlice<u16>,
        rows: usize,
        n: usize,
    ) -> Result<(), GpuError> {
        const OP: &str = "add_bias";
        if y.len() < rows * n {
            return Err(GpuError::shape(
                OP,
                format!("y has {} elements, needs {}", y.len(), rows * n),
            ));
        }
        if bias.len() < n {
            return Err(GpuError::shape(
                OP,
                format!("bias has {} elements, needs {n}", bias.len()),
            ));
        }
        let to_i32 = |v: usize| i32::try_from(v).map_err(|_| GpuError::shape(OP, format!("{v} exceeds i32")));
        let (r, ni) = (to_i32(rows)?, to_i32(n)?);
        if rows == 0 || n == 0 {
            return Ok(());
        }
        let blocks = (rows * n).div_ceil(256).min(self.info().sm_count as usize * 16);
        let cfg = LaunchConfig {
            grid_dim: (blocks as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let f = self.kernels().get(KernelId::AddBiasF16);
        let mut b = self.stream().launch_builder(f);
        b.arg(&mut *y).arg(bias).arg(&r).arg(&ni);
        // SAFETY: add_bias_f16 reads and writes rows*n elements of y and reads n of bias (grid-stride, bounded by
        // rows*n); both lengths checked above.
        unsafe { b.launch(cfg) }?;
        Ok(())
    }

    /// Page-locked host memory for `len` i32 values to stage copies in (see [`Gpu::write_prefix_staged`]).
    pub fn staging(&self, len: usize) -> Result<Staging, GpuError> {
        let ctx = self.context();
        // SAFETY: the memory starts unset; `write_prefix_staged` writes each region before it queues its copy, and
        // nothing reads it on the host.
        let host = unsafe { ctx.alloc_pinned::<i32>(len.max(1)) }?;
        Ok(Staging {
            host,
            used: 0,
            copied: ctx.new_event(Some(CUevent_flags::CU_EVENT_DISABLE_TIMING))?,
        })
    }

    /// Copies `host` into the first `host.len()` elements of `dev` (which may be longer) through `staging`: `host` is
    /// written into page-locked memory and its copy queued on the stream, and this returns without waiting for it.
    /// (A copy from pageable memory makes the host wait while the driver moves it through a buffer of its own: on an
    /// H100 an engine step's few small copies took from 20 µs to over 200 µs that way, varying from run to run.) A
    /// region of `staging` is written again only once every copy queued from it before is done.
    pub fn write_prefix_staged(
        &self,
        staging: &mut Staging,
        host: &[i32],
        dev: &mut CudaSlice<i32>,
    ) -> Result<(), GpuError> {
        let n = host.len();
        if n > dev.len() || n > staging.host.len() {
            return Err(GpuError::shape(
                "write_prefix_staged",
                format!(
                    "host has {n} elements, device {}, staging {}",
                    dev.len(),
                    staging.host.len()
                ),
            ));
        }
        if n == 0 {
            return Ok(());
        }
        if staging.used + n > staging.host.len() {
            // Back to the start: the copies queued from there must have been made.
            staging.copied.synchronize()?;
            staging.used = 0;
        }
        let start = staging.used;
        let region = &mut staging.host.as_mut_slice()?[start..start + n];
        region.copy_from_slice(host);
        let stream = self.stream();
        let mut view = dev.slice_mut(0..n);
        let (dst, _record) = view.device_ptr_mut(stream);
        // SAFETY: `dst` is the device address of `n` i32 values of `dev` (checked above); `region` is `n` i32 values
        // of page-locked memory owned by `staging`, which is not written again, nor freed (see `Staging`'s drop),
        // before the `copied` event recorded next has passed; the copy is ordered on this GPU's one stream.
        unsafe { cudarc::driver::result::memcpy_htod_async(dst, region, stream.cu_stream()) }?;
        staging.copied.record(stream)?;
        staging.used += n;
        Ok(())
    }

    /// The first `len` elements of `dev`, on the host (waits for the copy).
    pub fn download_prefix<T: DeviceRepr + Default + Clone>(
        &self,
        dev: &CudaSlice<T>,
        len: usize,
    ) -> Result<Vec<T>, GpuError> {
        if len > dev.len() {
            return Err(GpuError::shape(
                "download_prefix",
                format!("asked for {len} elements of {}", dev.len()),
            ));
        }
        let mut out = vec![T::default(); len];
        if len > 0 {
            self.stream().memcpy_dtoh(&dev.slice(0..len), out.as_mut_slice())?;
            self.stream().synchronize()?;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_values_are_seeded_bounded_and_spread() {
        let v: Vec<f32> = (0..10_000).map(|i| init_uniform_value(7, i, 1.0, 0.1)).collect();
        assert!(v.iter().all(|x| (0.9..=1.1).contains(x)), "out of range");
        let mean = v.iter().sum::<f32>() / v.len() as f32;
        assert!((mean - 1.0).abs() < 0.005, "mean {mean}");
        let (lo, hi) = v.iter().fold((f32::MAX, f32::MIN), |(a, b), &x| (a.min(x), b.max(x)));
        assert!(lo < 0.902 && hi > 1.098, "{lo}..{hi}");
        assert_eq!(v[123], init_uniform_value(7, 123, 1.0, 0.1));
        assert_ne!(v[123], init_uniform_value(8, 123, 1.0, 0.1));
    }
}
