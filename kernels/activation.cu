// SwiGLU activation: out = silu(gate) * up.
#include "common.cuh"

// One (gate, up) pair of fp16 values -> silu(gate) * up.
__device__ __forceinline__ float silu_mul_pair(u32 p) { return silu_mul_f(lo_f(p), hi_f(p)); }

// gate_up is [tokens, inter] pairs (gate, up): each output value's gate and up side by side, as the gate/up
// weights are interleaved row by row (src/engine/device.rs; our GEMM's fused epilogue pairs them the same way).
// out is [tokens, inter]; inter is even and tokens * inter / 2 < 2^32 (checked by the host). Both are one flat run,
// so output value i comes from input pair i whatever its row: where tokens * inter is a multiple of 8 each thread
// takes two 16-byte vectors of 4 pairs and writes one vector of 8 outputs, else two pairs and writes two. The
// grid-stride index is 32-bit.
extern "C" __global__ void silu_mul_f16(const half_t* __restrict__ gate_up, half_t* __restrict__ out, int tokens,
                                        int inter) {
    pdl_begin();
    const unsigned stride = gridDim.x * blockDim.x;
    const unsigned long long values = (unsigned long long)tokens * (unsigned)inter;
    if ((values & 7) == 0) {
        const unsigned total = (unsigned)(values / 8);
        const uint4* in = reinterpret_cast<const uint4*>(gate_up);
        uint4* o = reinterpret_cast<uint4*>(out);
        for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
            const uint4 a = in[2 * (size_t)i], b = in[2 * (size_t)i + 1];
            o[i] = make_uint4(pack2(silu_mul_pair(a.x), silu_mul_pair(a.y)), pack2(silu_mul_pair(a.z), silu_mul_pair(a.w)),
                              pack2(silu_mul_pair(b.x), silu_mul_pair(b.y)), pack2(silu_mul_pair(b.z), silu_mul_pair(b.w)));
        }
    } else {
        const unsigned total = (unsigned)(values / 2);
        const uint2* in = reinterpret_cast<const uint2*>(gate_up);
        u32* o = reinterpret_cast<u32*>(out);
        for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
            const uint2 a = in[i];
            o[i] = pack2(silu_mul_pair(a.x), silu_mul_pair(a.y));
        }
    }
}
