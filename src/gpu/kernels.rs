//! The typed kernel registry: every kernel batchlab launches, by [`KernelId`], loaded once per [`super::Gpu`].

use std::sync::Arc;

use cudarc::driver::sys::CUfunction_attribute;
use cudarc::driver::{CudaContext, CudaFunction};

use super::GpuError;
use super::compile::{self, CompileTarget, KERNEL_FILES};

macro_rules! kernel_ids {
    ($($id:ident => ($file:literal, $name:literal),)*) => {
        /// A kernel of `kernels/`: its `.cu` file and its `extern "C"` name (`<op>_<dtype>`).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum KernelId { $($id,)* }

        impl KernelId {
            pub const ALL: &'static [KernelId] = &[$(KernelId::$id,)*];

            pub fn file(self) -> &'static str {
                match self { $(KernelId::$id => $file,)* }
            }

            pub fn name(self) -> &'static str {
                match self { $(KernelId::$id => $name,)* }
            }
        }
    };
}

kernel_ids! {
    RmsNormF16 => ("norm.cu", "rmsnorm_f16"),
    AddRmsNormF16 => ("norm.cu", "add_rmsnorm_f16"),
    SiluMulF16 => ("activation.cu", "silu_mul_f16"),
    EmbeddingF16 => ("embedding.cu", "embedding_f16"),
    ArgmaxF16 => ("sampling.cu", "argmax_f16"),
    KvAppendRopeF16 => ("kv.cu", "kv_append_rope_f16"),
    AttnDecodeD64F16 => ("attention.cu", "attn_decode_d64_f16"),
    AttnDecodeReduceD64F16 => ("attention.cu", "attn_decode_reduce_d64_f16"),
    AttnPrefillD64F16 => ("attention.cu", "attn_prefill_d64_f16"),
    AttnDecodeD128F16 => ("attention.cu", "attn_decode_d128_f16"),
    AttnDecodeReduceD128F16 => ("attention.cu", "attn_decode_reduce_d128_f16"),
    AttnPrefillD128F16 => ("attention.cu", "attn_prefill_d128_f16"),
    AttnDecodeTcD64F16 => ("attention.cu", "attn_decode_tc_d64_f16"),
    AttnPrefillTcD64F16 => ("attention.cu", "attn_prefill_tc_d64_f16"),
    AttnDecodeTcD128F16 => ("attention.cu", "attn_decode_tc_d128_f16"),
    AttnPrefillTcD128F16 => ("attention.cu", "attn_prefill_tc_d128_f16"),
    Gemm128x128F16 => ("gemm.cu", "gemm_128x128_f16"),
    Gemm64x64F16 => ("gemm.cu", "gemm_64x64_f16"),
    Gemm64x64W8F16 => ("gemm.cu", "gemm_64x64w8_f16"),
    Gemm16x64F16 => ("gemm.cu", "gemm_16x64_f16"),
    Gemm16x64S8F16 => ("gemm.cu", "gemm_16x64s8_f16"),
    Gemm16x128F16 => ("gemm.cu", "gemm_16x128_f16"),
    Gemm16x32F16 => ("gemm.cu", "gemm_16x32_f16"),
    Gemm32x64F16 => ("gemm.cu", "gemm_32x64_f16"),
    GemmS8F16 => ("gemm.cu", "gemm_s8_f16"),
    GemmS16F16 => ("gemm.cu", "gemm_s16_f16"),
    GemmS32F16 => ("gemm.cu", "gemm_s32_f16"),
    GemmS32nF16 => ("gemm.cu", "gemm_s32n_f16"),
    GemmS32dF16 => ("gemm.cu", "gemm_s32d_f16"),
    GemmS64F16 => ("gemm.cu", "gemm_s64_f16"),
    GemmS64wF16 => ("gemm.cu", "gemm_s64w_f16"),
    GemmS64sF16 => ("gemm.cu", "gemm_s64s_f16"),
    GemmS64s4F16 => ("gemm.cu", "gemm_s64s4_f16"),
    GemmS32sF16 => ("gemm.cu", "gemm_s32s_f16"),
    GemmSplitkReduceF16 => ("gemm.cu", "gemm_splitk_reduce_f16"),
    InitUniformF16 => ("init.cu", "init_uniform_f16"),
    AddBiasF16 => ("bias.cu", "add_bias_f16"),
}

/// Every kernel, compiled for one device and loaded into its context.
pub struct Kernels {
    funcs: Vec<CudaFunction>,
}

impl Kernels {
    /// Compiles (or loads from the on-disk cache) each kernel file for `target` and loads every kernel.
    pub(crate) fn load(ctx: &Arc<CudaContext>, target: CompileTarget) -> Result<Self, GpuError> {
        let cache = compile::cache_dir();
        let mut funcs: Vec<Option<CudaFunction>> = vec![None; KernelId::ALL.len()];
        for file in KERNEL_FILES {
            let ids: Vec<_> = KernelId::ALL
                .iter()
                .copied()
                .filter(|k| k.file() == file.name)
                .collect();
            if ids.is_empty() {
                continue;
            }
            let (image, log) = compile::compile(file, target, &[], cache.as_deref())?;
            if !log.is_empty() {
                tracing::debug!(file = file.name, %log, "NVRTC log");
            }
            let module = ctx.load_module(image.into_cudarc())?;
            for id in ids {
                funcs[id as usize] = Some(module.load_function(id.name())?);
            }
        }
        let funcs: Vec<CudaFunction> = funcs
            .into_iter()
            .zip(KernelId::ALL)
            .map(|(f, id)| {
                f.ok_or_else(|| GpuError::Nvrtc(format!("kernel {} names a file not in KERNEL_FILES", id.name())))
            })
            .collect::<Result<_, _>>()?;
        // The GEMM and tensor-core attention kernels keep their pipeline stages in dynamic shared memory, beyond
        // the default 48 KB limit.
        let decode = [
            (KernelId::AttnDecodeTcD64F16, super::ops::decode_tc_smem_bytes(64)),
            (KernelId::AttnDecodeTcD128F16, super::ops::decode_tc_smem_bytes(128)),
            (KernelId::AttnPrefillTcD64F16, super::ops::prefill_tc_smem_bytes(64)),
            (KernelId::AttnPrefillTcD128F16, super::ops::prefill_tc_smem_bytes(128)),
        ];
        for (id, bytes) in super::gemm::gemm_smem_limits().chain(decode) {
            funcs[id as usize].set_attribute(
                CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                bytes as i32,
            )?;
        }
        Ok(Self { funcs })
    }

    pub fn get(&self, id: KernelId) -> &CudaFunction {
        &self.funcs[id as usize]
    }

    /// Whether `func` is one of these kernels (each waits for its predecessor in the kernel: `pdl_wait`).
    pub fn is_ours(&self, func: cudarc::driver::sys::CUfunction) -> bool {
        !func.is_null() && self.funcs.iter().any(|f| f.cu_function() == func)
    }
}
