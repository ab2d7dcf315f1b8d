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
        // Four loads per thread in flight before any is compared (one at a time left the row latency-bound).
        const uint4* x4 = reinterpret_cast<const uint4*>(x);
        const int nv = vocab / 8, step = blockDim.x;
        for (int c0 = threadIdx.x; c0 < nv; c0 += 4 * step) {
            uint4 v[4];
#pragma unroll
            for (int j = 0; j < 4; ++j)
                if (c0 + j * step < nv) v[j] = x4[c0 + j * step];
#pragma unroll
            for (int j = 0; j < 4; ++j) {
                if (c0 + j * step >= nv) break;
                const int base = (c0 + j * step) * 8;
                better(bv, bi, lo_f(v[j].x), base + 0); better(bv, bi, hi_f(v[j].x), base + 1);
                better(bv, bi, lo_f(v[j].y), base + 2); better(bv, bi, hi_f(v[j].y), base + 3);
                better(bv, bi, lo_f(v[j].z), base + 4); better(bv, bi, hi_f(v[j].z), base + 5);
                better(bv, bi, lo_f(v[j].w), base + 6); better(bv, bi, hi_f(v[j].w), base + 7);
            }
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
