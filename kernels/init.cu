// Seeded random weights generated on the device, so a multi-GB model starts in milliseconds instead of drawing and
// uploading every value from the host. Runs once at start-up, never inside a step.
#include "common.cuh"

typedef unsigned long long u64;

// splitmix64's finaliser: a bijective mix of a 64-bit counter (also in src/gpu/engine_ops.rs, `mix64`).
__device__ __forceinline__ u64 mix64(u64 z) {
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

// out[i] = center + (2u - 1) * half_width with u = the top 24 bits of mix64(seed ^ mix64(i)) / 2^24, in [0, 1):
// a counter-based generator, so every element is independent of the launch shape. Grid-stride over n elements.
extern "C" __global__ void init_uniform_f16(half_t* __restrict__ out, u64 n, u64 seed, float center,
                                            float half_width) {
    pdl_begin();
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (u64)gridDim.x * blockDim.x) {
        const u64 h = mix64(seed ^ mix64(i));
        const float u = (float)(unsigned)(h >> 40) * (1.0f / 16777216.0f);
        out[i] = f2h(__fadd_rn(center, __fmul_rn(__fsub_rn(__fmul_rn(2.0f, u), 1.0f), half_width)));
    }
}
