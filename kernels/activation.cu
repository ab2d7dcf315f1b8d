// SwiGLU activation: out = silu(gate) * up.
#include "common.cuh"

// gate_up is [tokens, 2 * inter] (gate columns first, then up, as one fused gate/up GEMM writes them);
// out is [tokens, inter]; `inter` is even. Grid-stride over fp16 pairs of the output.
extern "C" __global__ void silu_mul_f16(const half_t* __restrict__ gate_up, half_t* __restrict__ out, int tokens,
                                        int inter) {
    pdl_begin();
    const int pairs_per_row = inter / 2;
    const size_t total = (size_t)tokens * pairs_per_row;
    const u32* in2 = reinterpret_cast<const u32*>(gate_up);
    u32* o2 = reinterpret_cast<u32*>(out);
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        const size_t t = i / pairs_per_row, p = i % pairs_per_row;
        u32 g = in2[t * 2 * pairs_per_row + p];
        u32 u = in2[t * 2 * pairs_per_row + pairs_per_row + p];
        float g0 = lo_f(g), g1 = hi_f(g);
        float s0 = g0 / (1.0f + expf(-g0)), s1 = g1 / (1.0f + expf(-g1));
        o2[i] = pack2(s0 * lo_f(u), s1 * hi_f(u));
    }
}
