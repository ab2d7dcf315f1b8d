// SwiGLU activation: out = silu(gate) * up.
#include "common.cuh"

__device__ __forceinline__ float silu(float g) { return g / (1.0f + expf(-g)); }
__device__ __forceinline__ u32 silu_mul_v(u32 g, u32 u) {
    return pack2(silu(lo_f(g)) * lo_f(u), silu(hi_f(g)) * hi_f(u));
}
__device__ __forceinline__ uint4 silu_mul_v(uint4 g, uint4 u) {
    return make_uint4(silu_mul_v(g.x, u.x), silu_mul_v(g.y, u.y), silu_mul_v(g.z, u.z), silu_mul_v(g.w, u.w));
}

// Grid-stride over the output in vectors V (uint4: 8 values, u32: 2) of `per_row` a row.
template <typename V>
__device__ __forceinline__ void silu_mul_rows(const half_t* __restrict__ gate_up, half_t* __restrict__ out, int tokens,
                                              unsigned per_row) {
    const unsigned stride = gridDim.x * blockDim.x;
    const unsigned total = (unsigned)tokens * per_row;
    const V* in = reinterpret_cast<const V*>(gate_up);
    V* o = reinterpret_cast<V*>(out);
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
        const unsigned t = i / per_row, p = i - t * per_row;
        o[i] = silu_mul_v(in[(size_t)t * 2 * per_row + p], in[(size_t)t * 2 * per_row + per_row + p]);
    }
}

// gate_up is [tokens, 2 * inter] (gate columns first, then up, as one fused gate/up GEMM writes them);
// out is [tokens, inter]; `inter` is even and tokens * inter / 2 < 2^32 (checked by the host). Grid-stride over
// 16-byte vectors of the output where `inter` is a multiple of 8 (every Qwen2 size), else over fp16 pairs; indices
// are 32-bit (a 64-bit division per element made the loop compute-bound).
extern "C" __global__ void silu_mul_f16(const half_t* __restrict__ gate_up, half_t* __restrict__ out, int tokens,
                                        int inter) {
    pdl_begin();
    if ((inter & 7) == 0) {
        silu_mul_rows<uint4>(gate_up, out, tokens, (unsigned)inter / 8);
    } else {
        silu_mul_rows<u32>(gate_up, out, tokens, (unsigned)inter / 2);
    }
}
