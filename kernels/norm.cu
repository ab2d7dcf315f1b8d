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

__device__ __forceinline__ float sumsq(u32 v) {
    const float a = lo_f(v), b = hi_f(v);
    return a * a + b * b;
}
__device__ __forceinline__ float sumsq(uint4 v) { return sumsq(v.x) + sumsq(v.y) + sumsq(v.z) + sumsq(v.w); }
__device__ __forceinline__ u32 scaled(u32 v, u32 g, float inv) {
    return pack2(lo_f(v) * inv * lo_f(g), hi_f(v) * inv * hi_f(g));
}
__device__ __forceinline__ uint4 scaled(uint4 v, uint4 g, float inv) {
    return make_uint4(scaled(v.x, g.x, inv), scaled(v.y, g.y, inv), scaled(v.z, g.z, inv), scaled(v.w, g.w, inv));
}
// fp16 sum of two fp16 pairs, rounded once (as Hugging Face's fp16 residual add).
__device__ __forceinline__ u32 add_h(u32 a, u32 b) { return pack2(lo_f(a) + lo_f(b), hi_f(a) + hi_f(b)); }
__device__ __forceinline__ uint4 add_h(uint4 a, uint4 b) {
    return make_uint4(add_h(a.x, b.x), add_h(a.y, b.y), add_h(a.z, b.z), add_h(a.w, b.w));
}
__device__ __forceinline__ bool norm_in_registers(int hidden) {
    return (hidden & 7) == 0 && hidden <= NORM_VEC_MAX * 256;
}

// One row by one warp, in vectors V (uint4: 8 values, u32: 2), reading the row twice (the second time from L2).
template <typename V>
__device__ __forceinline__ void rmsnorm_row(const half_t* __restrict__ x, const half_t* __restrict__ w,
                                            half_t* __restrict__ out, int hidden, float eps) {
    const int lane = threadIdx.x & 31;
    const V* xv = reinterpret_cast<const V*>(x);
    const V* wv = reinterpret_cast<const V*>(w);
    V* ov = reinterpret_cast<V*>(out);
    const int nv = hidden / (int)(sizeof(V) / 2);
    float ss = 0.0f;
    for (int i = lane; i < nv; i += 32) ss += sumsq(xv[i]);
    const float inv = rsqrtf(warp_sum(ss) / (float)hidden + eps);
    for (int i = lane; i < nv; i += 32) ov[i] = scaled(xv[i], wv[i], inv);
}

template <typename V>
__device__ __forceinline__ void add_rmsnorm_row(const half_t* __restrict__ x, half_t* __restrict__ residual,
                                                const half_t* __restrict__ w, half_t* __restrict__ out, int hidden,
                                                float eps) {
    const int lane = threadIdx.x & 31;
    const V* xv = reinterpret_cast<const V*>(x);
    V* rv = reinterpret_cast<V*>(residual);
    const V* wv = reinterpret_cast<const V*>(w);
    V* ov = reinterpret_cast<V*>(out);
    const int nv = hidden / (int)(sizeof(V) / 2);
    float ss = 0.0f;
    for (int i = lane; i < nv; i += 32) {
        const V v = add_h(xv[i], rv[i]);
        rv[i] = v;
        ss += sumsq(v);
    }
    const float inv = rsqrtf(warp_sum(ss) / (float)hidden + eps);
    // Each lane re-reads only the vectors it wrote itself.
    for (int i = lane; i < nv; i += 32) ov[i] = scaled(rv[i], wv[i], inv);
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
            if (lane + 32 * i < nv) ss += sumsq(v[i]);
        const float inv = rsqrtf(warp_sum(ss) / (float)hidden + eps);
#pragma unroll
        for (int i = 0; i < NORM_VEC_MAX; ++i)
            if (lane + 32 * i < nv) o4[lane + 32 * i] = scaled(v[i], w4[lane + 32 * i], inv);
    } else if ((hidden & 7) == 0) {
        rmsnorm_row<uint4>(x + row * hidden, w, out + row * hidden, hidden, eps);
    } else {
        rmsnorm_row<u32>(x + row * hidden, w, out + row * hidden, hidden, eps);
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
            if (lane + 32 * i < nv) v[i] = add_h(x4[lane + 32 * i], r4[lane + 32 * i]);
        float ss = 0.0f;
#pragma unroll
        for (int i = 0; i < NORM_VEC_MAX; ++i)
            if (lane + 32 * i < nv) {
                r4[lane + 32 * i] = v[i];
                ss += sumsq(v[i]);
            }
        const float inv = rsqrtf(warp_sum(ss) / (float)hidden + eps);
#pragma unroll
        for (int i = 0; i < NORM_VEC_MAX; ++i)
            if (lane + 32 * i < nv) o4[lane + 32 * i] = scaled(v[i], w4[lane + 32 * i], inv);
    } else if ((hidden & 7) == 0) {
        add_rmsnorm_row<uint4>(x + row * hidden, residual + row * hidden, w, out + row * hidden, hidden, eps);
    } else {
        add_rmsnorm_row<u32>(x + row * hidden, residual + row * hidden, w, out + row * hidden, hidden, eps);
    }
}
