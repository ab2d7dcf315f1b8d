// Shared helpers for batchlab's kernels.
//
// The kernels include no CUDA toolkit header: NVRTC has no default include path, and a user's machine may have a
// driver without a toolkit. fp16 values are therefore carried as their 16-bit patterns (`half_t`) and converted with
// single PTX instructions; all arithmetic is f32.
#pragma once

typedef unsigned short half_t;
typedef unsigned int u32;

// A finite stand-in for -infinity: exp(NEG_BIG - m) underflows to 0 without the NaN that -inf - -inf would give.
#define NEG_BIG (-1.0e30f)
#define FULL_MASK 0xffffffffu

__device__ __forceinline__ float h2f(half_t h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}

__device__ __forceinline__ half_t f2h(float f) {
    half_t h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}

__device__ __forceinline__ float lo_f(u32 v) { return h2f((half_t)(v & 0xffffu)); }
__device__ __forceinline__ float hi_f(u32 v) { return h2f((half_t)(v >> 16)); }
__device__ __forceinline__ u32 pack2(float a, float b) { return (u32)f2h(a) | ((u32)f2h(b) << 16); }

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(FULL_MASK, v, o));
    return v;
}

// Sum over the whole block (blockDim.x a multiple of 32, at most 1024); every thread gets the result.
// `scratch` holds at least 32 floats.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads();  // scratch may still be read by a previous call
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < nwarps ? scratch[lane] : 0.0f;
    return warp_sum(v);
}

// Shared-memory address of a generic pointer, for cp.async and ldmatrix.
__device__ __forceinline__ u32 smem_addr(const void* p) {
    u32 r;
    asm("{ .reg .u64 a; cvta.to.shared.u64 a, %1; cvt.u32.u64 %0, a; }" : "=r"(r) : "l"(p));
    return r;
}
