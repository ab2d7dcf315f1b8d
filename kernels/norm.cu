// RMSNorm, plain and with the residual add fused in (Qwen2: residual + sublayer output, then RMSNorm).
//
// One warp per row, NORM_ROWS rows per block: the sum of squares needs only a warp reduction (no block barrier),
// and a block moves several rows, so small rows do not leave the SMs waiting on block launches. Rows whose length
// is a multiple of 8 are read as 16-byte vectors, and kept in registers between the two passes up to
// NORM_VEC_MAX * 256 values (qwen2.5-0.5b's and 1.5b's 896 and 1536; longer rows are read again, from L2); other
// rows as fp16 pairs, read again. (Holding up to 4,096 values took 162 registers a thread: one block per SM.)
#include "common.cuh"

#define NORM_ROWS 8      // rows per block (one warp each); the host launches ceil(tokens / NORM_ROWS) blocks of 256
#define NORM_VEC_MAX 8  // 16-byte vectors per lane held in registers: rows of up to 2048 values

__device__ __forceinline__ float sumsq2(u32 v) {
    const float a = lo_f(v), b = hi_f(v);
    return a * a + b * b;
}
__device__ __forceinline__ float sumsq8(uint4 v) { return sumsq2(v.x) + sumsq2(v.y) + sumsq2(v.z) + sumsq2(v.w); }
__device__ __forceinline__ u32 scale2(u32 v, u32 g, float inv) {
    return pack2(lo_f(v) * inv * lo_f(g), hi_f(v) * inv * hi_f(g));
}
__device__ __forceinline__ uint4 scale8(uint4 v, uint4 g, float inv) {
    return make_uint4(scale2(v.x, g.x, inv), scale2(v.y, g.y, inv), scale2(v.z, g.z, inv), scale2(v.w, g.w, inv));
}
// fp16 sum of two fp16 pairs, rounded once (as Hugging Face's fp16 residual add).
__device__ __forceinline__ u32 add2(u32 a, u32 b) { return pack2(lo_f(a) + lo_f(b), hi_f(a) + hi_f(b)); }
__device__ __forceinline__ uint4 add8(uint4 a, uint4 b) {
    return make_uint4(add2(a.x, b.x), add2(a.y, b.y), add2(a.z, b.z), add2(a.w, b.w));
}
__device__ __forceinline__ bool norm_in_registers(int hidden) {
    return (hidden & 7) == 0 && hidden <= NORM_VEC_MAX * 256;
}

// out[r] = x[r] / rms(x[r]) * w; `hidden` is even.
extern "C" __global__ void rmsnorm_f16(const half_t* __restrict__ x, const half_t* __restrict__ w,
                                       half_t* __restrict__ out, int hidden, float eps, int tokens) {
    pdl_begin();
    const int lane = threadIdx.x & 31;
    const size_t row = (size_t)blockIdx.x * NORM_ROWS + (threadIdx.x >> 5);
    if (row >= (size_t)tokens) return;  // no block barrier follows
    if (norm_in_registers(hidden)) {
        const uint4* x4 = reinterpret_cast<const uint4*>(x + row * hidden);
        const uint4* w4 = reinterpret_cast<const uint4*>(w);
        uint4* o4 = reinterpret_cast<uint4*>(out + row * hidden);
        const int nv = hidden / 8;
        uint4 v[NORM_VEC_MAX];
        float ss = 0.0f;
#pragma unroll
        for (int i = 0; i < NORM_VEC_MAX; ++i)
            if (lane + 32 * i < nv) v[i] = x4[lane + 32 * i];
#pragma unroll
        for (int i = 0; i < NORM_VEC_MAX; ++i)
            if (lane + 32 * i < nv) ss += sumsq8(v[i]);
        const float inv = rsqrtf(warp_sum(ss) / (float)hidden + eps);
#pragma unroll
        for (int i = 0; i < NORM_VEC_MAX; ++i)
            if (lane + 32 * i < nv) o4[lane + 32 * i] = scale8(v[i], w4[lane + 32 * i], inv);
    } else if ((hidden & 7) == 0) {
        const uint4* x4 = reinterpret_cast<const uint4*>(x + row * hidden);
        const uint4* w4 = reinterpret_cast<const uint4*>(w);
        uint4* o4 = reinterpret_cast<uint4*>(out + row * hidden);
        const int nv = hidden / 8;
        float ss = 0.0f;
        for (int i = lane; i < nv; i += 32) ss += sumsq8(x4[i]);
        const float inv = rsqrtf(warp_sum(ss) / (float)hidden + eps);
        for (int i = lane; i < nv; i += 32) o4[i] = scale8(x4[i], w4[i], inv);
    } else {
        const u32* xr = reinterpret_cast<const u32*>(x + row * hidden);
        const u32* w2 = reinterpret_cast<const u32*>(w);
        u32* o2 = reinterpret_cast<u32*>(out + row * hidden);
        const int pairs = hidden / 2;
        float ss = 0.0f;
        for (int i = lane; i < pairs; i += 32) ss += sumsq2(xr[i]);
        const float inv = rsqrtf(warp_sum(ss) / (float)hidden + eps);
        for (int i = lane; i < pairs; i += 32) o2[i] = scale2(xr[i], w2[i], inv);
    }
}

// residual[r] = x[r] + residual[r] (stored as fp16, as Hugging Face's fp16 forward does);
// out[r] = rmsnorm(residual[r]) * w, computed from the stored fp16 sum.
extern "C" __global__ void add_rmsnorm_f16(const half_t* __restrict__ x, half_t* __restrict__ residual,
                                           const half_t* __restrict__ w, half_t* __restrict__ out, int hidden,
                                           float eps, int tokens) {
    pdl_begin();
    const int lane = threadIdx.x & 31;
    const size_t row = (size_t)blockIdx.x * NORM_ROWS + (threadIdx.x >> 5);
    if (row >= (size_t)tokens) return;  // no block barrier follows
    if (norm_in_registers(hidden)) {
        const uint4* x4 = reinterpret_cast<const uint4*>(x + row * hidden);
        uint4* r4 = reinterpret_cast<uint4*>(residual + row * hidden);
        const uint4* w4 = reinterpret_cast<const uint4*>(w);
        uint4* o4 = reinterpret_cast<uint4*>(out + row * hidden);
        const int nv = hidden / 8;
        uint4 v[NORM_VEC_MAX];
#pragma unroll
        for (int i = 0; i < NORM_VEC_MAX; ++i)
            if (lane + 32 * i < nv) v[i] = add8(x4[lane + 32 * i], r4[lane + 32 * i]);
        float ss = 0.0f;
#pragma unroll
        for (int i = 0; i < NORM_VEC_MAX; ++i)
            if (lane + 32 * i < nv) {
                r4[lane + 32 * i] = v[i];
                ss += sumsq8(v[i]);
            }
        const float inv = rsqrtf(warp_sum(ss) / (float)hidden + eps);
#pragma unroll
        for (int i = 0; i < NORM_VEC_MAX; ++i)
            if (lane + 32 * i < nv) o4[lane + 32 * i] = scale8(v[i], w4[lane + 32 * i], inv);
    } else if ((hidden & 7) == 0) {
        const uint4* x4 = reinterpret_cast<const uint4*>(x + row * hidden);
        uint4* r4 = reinterpret_cast<uint4*>(residual + row * hidden);
        const uint4* w4 = reinterpret_cast<const uint4*>(w);
        uint4* o4 = reinterpret_cast<uint4*>(out + row * hidden);
        const int nv = hidden / 8;
        float ss = 0.0f;
        for (int i = lane; i < nv; i += 32) {
            const uint4 v = add8(x4[i], r4[i]);
            r4[i] = v;
            ss += sumsq8(v);
        }
        const float inv = rsqrtf(warp_sum(ss) / (float)hidden + eps);
        // Each lane re-reads only the vectors it wrote itself.
        for (int i = lane; i < nv; i += 32) o4[i] = scale8(r4[i], w4[i], inv);
    } else {
        const u32* xr = reinterpret_cast<const u32*>(x + row * hidden);
        u32* rr = reinterpret_cast<u32*>(residual + row * hidden);
        const u32* w2 = reinterpret_cast<const u32*>(w);
        u32* o2 = reinterpret_cast<u32*>(out + row * hidden);
        const int pairs = hidden / 2;
        float ss = 0.0f;
        for (int i = lane; i < pairs; i += 32) {
            const u32 s = add2(xr[i], rr[i]);
            rr[i] = s;
            ss += sumsq2(s);
        }
        const float inv = rsqrtf(warp_sum(ss) / (float)hidden + eps);
        // Each lane re-reads only the pairs it wrote itself.
        for (int i = lane; i < pairs; i += 32) o2[i] = scale2(rr[i], w2[i], inv);
    }
}
