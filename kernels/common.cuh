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
// SwiGLU: silu(gate) * up.
__device__ __forceinline__ float silu_mul_f(float gate, float up) { return gate / (1.0f + expf(-gate)) * up; }

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

// A load that bypasses L1: reads what other blocks wrote (and fenced) from L2.
__device__ __forceinline__ float ld_cg(const float* p) {
    float v;
    asm volatile("ld.global.cg.f32 %0, [%1];\n" : "=f"(v) : "l"(p));
    return v;
}

// Shared-memory address of a generic pointer, for cp.async and ldmatrix.
__device__ __forceinline__ u32 smem_addr(const void* p) {
    u32 r;
    asm("{ .reg .u64 a; cvta.to.shared.u64 a, %1; cvt.u32.u64 %0, a; }" : "=r"(r) : "l"(p));
    return r;
}

// cp.async / ldmatrix / mma.sync wrappers (sm_80+).
__device__ __forceinline__ void cp_async16(u32 saddr, const void* gptr, bool valid) {
    const int n = valid ? 16 : 0;  // 0 bytes read: the 16 bytes are zero-filled
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(saddr), "l"(gptr), "r"(n));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

__device__ __forceinline__ void ldmatrix_x4(u32 addr, u32& r0, u32& r1, u32& r2, u32& r3) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
                 : "r"(addr));
}

__device__ __forceinline__ void ldmatrix_x4_trans(u32 addr, u32& r0, u32& r1, u32& r2, u32& r3) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
                 : "r"(addr));
}

// d (16x8, f32) += a (16x16 fp16, row) . b (16x8 fp16, col): the tensor-core step every matrix kernel here uses.
__device__ __forceinline__ void mma_16816(float* c, const u32* a, u32 b0, u32 b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Zeroes an MT x NT grid of mma accumulators (16x8 f32 each, four per thread).
template <int MT, int NT>
__device__ __forceinline__ void zero_acc(float (&acc)[MT][NT][4]) {
#pragma unroll
    for (int i = 0; i < MT; ++i)
#pragma unroll
        for (int j = 0; j < NT; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.0f;
}

// Programmatic dependent launch (sm_90+). In a decode graph whose kernel-to-kernel edges are programmatic
// (src/gpu/timing.rs), a kernel may be launched while the one before it still runs: `pdl_trigger` lets the next
// kernel launch now, and `pdl_wait` returns once every earlier kernel has finished and its writes are visible.
// Before `pdl_wait` a kernel may only read what no kernel of the step writes (weights, the step's uploaded inputs)
// and must write nothing. Launched the ordinary way (or before sm_90), both are no-ops.
__device__ __forceinline__ void pdl_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
// Both, at the top of a kernel that has nothing to start on before its inputs exist.
__device__ __forceinline__ void pdl_begin() {
    pdl_trigger();
    pdl_wait();
}

// Asks for the 128-byte line at `p` to be brought into L2 (a hint: nothing waits for it).
__device__ __forceinline__ void prefetch_l2(const void* p) { asm volatile("prefetch.global.L2 [%0];" ::"l"(p)); }
