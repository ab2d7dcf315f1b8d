// Greedy sampling: argmax over the vocabulary.
#include "common.cuh"

// Larger value wins; among equal values the smaller index wins (what torch.argmax returns), so the result is
// deterministic. NaNs never win.
__device__ __forceinline__ void better(float& bv, int& bi, float v, int i) {
    if (v > bv || (v == bv && i < bi)) { bv = v; bi = i; }
}

// out[r] = argmax(logits[r]); one block per row (blockDim.x a multiple of 32). A row of only NaNs gives -1.
extern "C" __global__ void argmax_f16(const half_t* __restrict__ logits, int* __restrict__ out, int vocab) {
    pdl_begin();
    __shared__ float sv[32];
    __shared__ int si[32];
    const size_t row = blockIdx.x;
    const half_t* x = logits + row * vocab;
    float bv = NEG_BIG * 1e8f;  // -inf: every finite logit beats it
    int bi = 0x7fffffff;
    if ((vocab & 7) == 0) {  // 16-byte aligned rows: 8 logits per load
        const uint4* x4 = reinterpret_cast<const uint4*>(x);
        for (int c = threadIdx.x; c < vocab / 8; c += blockDim.x) {
            uint4 v = x4[c];
            const int base = c * 8;
            better(bv, bi, lo_f(v.x), base + 0); better(bv, bi, hi_f(v.x), base + 1);
            better(bv, bi, lo_f(v.y), base + 2); better(bv, bi, hi_f(v.y), base + 3);
            better(bv, bi, lo_f(v.z), base + 4); better(bv, bi, hi_f(v.z), base + 5);
            better(bv, bi, lo_f(v.w), base + 6); better(bv, bi, hi_f(v.w), base + 7);
        }
    } else {
        for (int i = threadIdx.x; i < vocab; i += blockDim.x) better(bv, bi, h2f(x[i]), i);
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        float ov = __shfl_xor_sync(FULL_MASK, bv, o);
        int oi = __shfl_xor_sync(FULL_MASK, bi, o);
        better(bv, bi, ov, oi);
    }
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    if (lane == 0) { sv[warp] = bv; si[warp] = bi; }
    __syncthreads();
    if (warp == 0) {
        bv = lane < nwarps ? sv[lane] : NEG_BIG * 1e8f;
        bi = lane < nwarps ? si[lane] : 0x7fffffff;
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) {
            float ov = __shfl_xor_sync(FULL_MASK, bv, o);
            int oi = __shfl_xor_sync(FULL_MASK, bi, o);
            better(bv, bi, ov, oi);
        }
        if (lane == 0) out[row] = bi == 0x7fffffff ? -1 : bi;
    }
}
