// RMSNorm, plain and with the residual add fused in (Qwen2: residual + sublayer output, then RMSNorm).
#include "common.cuh"

// out[r] = x[r] / rms(x[r]) * w. One block per row; `hidden` is even (rows are read as fp16 pairs).
extern "C" __global__ void rmsnorm_f16(const half_t* __restrict__ x, const half_t* __restrict__ w,
                                       half_t* __restrict__ out, int hidden, float eps) {
    pdl_begin();
    __shared__ float scratch[32];
    const size_t row = blockIdx.x;
    const u32* xr = reinterpret_cast<const u32*>(x + row * hidden);
    const u32* w2 = reinterpret_cast<const u32*>(w);
    u32* o2 = reinterpret_cast<u32*>(out + row * hidden);
    const int pairs = hidden / 2;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < pairs; i += blockDim.x) {
        u32 v = xr[i];
        float a = lo_f(v), b = hi_f(v);
        ss += a * a + b * b;
    }
    ss = block_sum(ss, scratch);
    const float inv = rsqrtf(ss / (float)hidden + eps);
    for (int i = threadIdx.x; i < pairs; i += blockDim.x) {
        u32 v = xr[i], g = w2[i];
        o2[i] = pack2(lo_f(v) * inv * lo_f(g), hi_f(v) * inv * hi_f(g));
    }
}

// residual[r] = x[r] + residual[r] (stored as fp16, as Hugging Face's fp16 forward does);
// out[r] = rmsnorm(residual[r]) * w, computed from the stored fp16 sum.
extern "C" __global__ void add_rmsnorm_f16(const half_t* __restrict__ x, half_t* __restrict__ residual,
                                           const half_t* __restrict__ w, half_t* __restrict__ out, int hidden,
                                           float eps) {
    pdl_begin();
    __shared__ float scratch[32];
    const size_t row = blockIdx.x;
    const u32* xr = reinterpret_cast<const u32*>(x + row * hidden);
    u32* rr = reinterpret_cast<u32*>(residual + row * hidden);
    const u32* w2 = reinterpret_cast<const u32*>(w);
    u32* o2 = reinterpret_cast<u32*>(out + row * hidden);
    const int pairs = hidden / 2;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < pairs; i += blockDim.x) {
        u32 a = xr[i], b = rr[i];
        u32 s = pack2(lo_f(a) + lo_f(b), hi_f(a) + hi_f(b));
        rr[i] = s;
        float s0 = lo_f(s), s1 = hi_f(s);
        ss += s0 * s0 + s1 * s1;
    }
    ss = block_sum(ss, scratch);
    const float inv = rsqrtf(ss / (float)hidden + eps);
    // Each thread re-reads only the pairs it wrote itself, so no barrier is needed between the passes.
    for (int i = threadIdx.x; i < pairs; i += blockDim.x) {
        u32 s = rr[i], g = w2[i];
        o2[i] = pack2(lo_f(s) * inv * lo_f(g), hi_f(s) * inv * hi_f(g));
    }
}
