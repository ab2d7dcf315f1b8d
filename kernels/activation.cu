// SwiGLU activation: out = silu(gate) * up.
#include "common.cuh"

__device__ __forceinline__ float silu(float g) { return g / (1.0f + expf(-g)); }
__device__ __forceinline__ u32 silu_mul2(u32 g, u32 u) {
    return pack2(silu(lo_f(g)) * lo_f(u), silu(hi_f(g)) * hi_f(u));
}

// gate_up is [tokens, 2 * inter] (gate columns first, then up, as one fused gate/up GEMM writes them);
// out is [tokens, inter]; `inter` is even and tokens * inter / 2 < 2^32 (checked by the host). Grid-stride over
// 16-byte vectors of the output where `inter` is a multiple of 8 (every Qwen2 size), else over fp16 pairs; indices
// are 32-bit (a 64-bit division per element made the loop compute-bound).
extern "C" __global__ void silu_mul_f16(const half_t* __restrict__ gate_up, half_t* __restrict__ out, int tokens,
                                        int inter) {
    pdl_begin();
    const unsigned stride = gridDim.x * blockDim.x;
    if ((inter & 7) == 0) {
        const unsigned per_row = (unsigned)inter / 8;
        const unsigned total = (unsigned)tokens * per_row;
        const uint4* in4 = reinterpret_cast<const uint4*>(gate_up);
        uint4* o4 = reinterpret_cast<uint4*>(out);
        for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
            const unsigned t = i / per_row, p = i - t * per_row;
            const uint4 g = in4[(size_t)t * 2 * per_row + p];
            const uint4 u = in4[(size_t)t * 2 * per_row + per_row + p];
            o4[i] = make_uint4(silu_mul2(g.x, u.x), silu_mul2(g.y, u.y), silu_mul2(g.z, u.z), silu_mul2(g.w, u.w));
        }
    } else {
        const unsigned per_row = (unsigned)inter / 2;
        const unsigned total = (unsigned)tokens * per_row;
        const u32* in2 = reinterpret_cast<const u32*>(gate_up);
        u32* o2 = reinterpret_cast<u32*>(out);
        for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
            const unsigned t = i / per_row, p = i - t * per_row;
            o2[i] = silu_mul2(in2[(size_t)t * 2 * per_row + p], in2[(size_t)t * 2 * per_row + per_row + p]);
        }
    }
}
