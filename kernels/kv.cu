// KV append into the paged cache, with Qwen2's rotary position embedding fused in.
//
// Paged KV layout (one pair of buffers per layer):
//   k_cache, v_cache: [num_blocks, block_size, kv_heads, head_dim] fp16
//   slot = block * block_size + offset_in_block; token t of a sequence lives at
//   slot = block_table[t / block_size] * block_size + t % block_size.
#include "common.cuh"

// qkv is [tokens, (q_heads + 2 * kv_heads) * head_dim]: the fused QKV projection's output (bias already added),
// q heads first, then k heads, then v heads. For each token:
//   q_out[t]          = rope(q, positions[t])
//   k_cache[slot[t]]  = rope(k, positions[t])
//   v_cache[slot[t]]  = v
// A negative slot (a padding token) or one past the cache (`num_slots`) is not written. RoPE is the rotate-half
// (GPT-NeoX) form Qwen2 uses: pairs (i, i + head_dim/2) rotate by pos * theta^(-2i/head_dim), computed in f32.
//
// Work is flattened over (token, item), grid-stride, so consecutive threads touch consecutive bytes: an item is two
// neighbouring rotation pairs of one head (two 4-byte loads, two 4-byte stores) or 8 halves of the V row (16
// bytes). head_dim must be a multiple of 8 (checked by the host) and at most 512.
// sin and cos of an angle of any size: reduced to [-pi, pi] with a two-part 2*pi (Cody-Waite), then the hardware's
// approximations (absolute error below 1e-6 there) — far inside fp16's resolution, and much cheaper than the
// full-range library sincosf, which made this kernel compute-bound.
__device__ __forceinline__ void rope_sincos(float a, float* s, float* c) {
    float k;
    asm("cvt.rni.f32.f32 %0, %1;" : "=f"(k) : "f"(a * 0.159154943091895336f));
    float r = fmaf(-k, 6.28318548202514648f, a);  // float(2 pi) ...
    r = fmaf(-k, -1.74845553e-7f, r);              // ... and what it lacks of 2 pi
    asm("sin.approx.f32 %0, %1;" : "=f"(*s) : "f"(r));
    asm("cos.approx.f32 %0, %1;" : "=f"(*c) : "f"(r));
}

extern "C" __global__ void kv_append_rope_f16(const half_t* __restrict__ qkv, const int* __restrict__ positions,
                                              const int* __restrict__ slot_mapping, half_t* __restrict__ q_out,
                                              half_t* __restrict__ k_cache, half_t* __restrict__ v_cache,
                                              int q_heads, int kv_heads, int head_dim, long long num_slots,
                                              float theta, int tokens) {
    pdl_trigger();
    __shared__ float inv_freq[256];
    const int half_dim = head_dim / 2;
    // Same f32 formula as Hugging Face: inv_freq = 1 / theta^(2i/d); angle = pos * inv_freq. (Computed while the
    // kernel before this one may still run: it reads nothing.)
    for (int i = threadIdx.x; i < half_dim; i += blockDim.x)
        inv_freq[i] = 1.0f / powf(theta, (float)(2 * i) / (float)head_dim);
    pdl_wait();
    __syncthreads();
    const int per_head = half_dim / 2;
    const int rot_items = (q_heads + kv_heads) * per_head;
    const int kv_row = kv_heads * head_dim;
    const int items = rot_items + kv_row / 8;
    const size_t row_len = (size_t)(q_heads + 2 * kv_heads) * head_dim;
    const size_t total = (size_t)tokens * items;
    for (size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += (size_t)gridDim.x * blockDim.x) {
        const size_t t = idx / items;
        const int r = (int)(idx % items);
        const half_t* row = qkv + t * row_len;
        const long long slot = slot_mapping[t];
        const bool write_kv = slot >= 0 && slot < num_slots;
        if (r < rot_items) {
            const int h = r / per_head, i = 2 * (r % per_head);
            if (h >= q_heads && !write_kv) continue;
            const float pos = (float)positions[t];
            const half_t* src = row + (size_t)h * head_dim;
            const u32 a = *reinterpret_cast<const u32*>(src + i);
            const u32 b = *reinterpret_cast<const u32*>(src + i + half_dim);
            float s0, c0, s1, c1;
            rope_sincos(pos * inv_freq[i], &s0, &c0);
            rope_sincos(pos * inv_freq[i + 1], &s1, &c1);
            const float x1a = lo_f(a), x1b = hi_f(a), x2a = lo_f(b), x2b = hi_f(b);
            half_t* dst = h < q_heads ? q_out + (t * q_heads + h) * head_dim
                                      : k_cache + (size_t)slot * kv_row + (size_t)(h - q_heads) * head_dim;
            *reinterpret_cast<u32*>(dst + i) = pack2(x1a * c0 - x2a * s0, x1b * c1 - x2b * s1);
            *reinterpret_cast<u32*>(dst + i + half_dim) = pack2(x2a * c0 + x1a * s0, x2b * c1 + x1b * s1);
        } else if (write_kv) {
            const int e = (r - rot_items) * 8;
            const uint4 v = *reinterpret_cast<const uint4*>(row + (size_t)(q_heads + kv_heads) * head_dim + e);
            *reinterpret_cast<uint4*>(v_cache + (size_t)slot * kv_row + e) = v;
        }
    }
}
