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
// Work is flattened over (token, item), grid-stride, so consecutive threads touch consecutive bytes: an item is four
// neighbouring rotation pairs of one head (two 8-byte loads, two 8-byte stores) or 8 halves of the V row (16
// bytes). head_dim must be a multiple of 8 (checked by the host) and at most 512; tokens * items < 2^32 (checked
// by the host: indices are 32-bit, a 64-bit division per item made this kernel compute-bound).
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
    const int per_head = half_dim / 4;
    const int rot_items = (q_heads + kv_heads) * per_head;
    const int kv_row = kv_heads * head_dim;
    const unsigned items = rot_items + kv_row / 8;
    const size_t row_len = (size_t)(q_heads + 2 * kv_heads) * head_dim;
    const unsigned total = (unsigned)tokens * items;
    for (unsigned idx = blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += gridDim.x * blockDim.x) {
        const unsigned t = idx / items;
        const int r = (int)(idx - t * items);
        const half_t* row = qkv + (size_t)t * row_len;
        const long long slot = slot_mapping[t];
        const bool write_kv = slot >= 0 && slot < num_slots;
        if (r < rot_items) {
            const int h = r / per_head, i = 4 * (r % per_head);
            if (h >= q_heads && !write_kv) continue;
            const float pos = (float)positions[t];
            const half_t* src = row + (size_t)h * head_dim;
            const uint2 a = *reinterpret_cast<const uint2*>(src + i);
            const uint2 b = *reinterpret_cast<const uint2*>(src + i + half_dim);
            const float x1[4] = {lo_f(a.x), hi_f(a.x), lo_f(a.y), hi_f(a.y)};
            const float x2[4] = {lo_f(b.x), hi_f(b.x), lo_f(b.y), hi_f(b.y)};
            float y1[4], y2[4];
#pragma unroll
            for (int j = 0; j < 4; ++j) {
                float sn, cs;
                rope_sincos(pos * inv_freq[i + j], &sn, &cs);
                y1[j] = x1[j] * cs - x2[j] * sn;
                y2[j] = x2[j] * cs + x1[j] * sn;
            }
            half_t* dst = h < q_heads ? q_out + ((size_t)t * q_heads + h) * head_dim
                                      : k_cache + (size_t)slot * kv_row + (size_t)(h - q_heads) * head_dim;
            *reinterpret_cast<uint2*>(dst + i) = make_uint2(pack2(y1[0], y1[1]), pack2(y1[2], y1[3]));
            *reinterpret_cast<uint2*>(dst + i + half_dim) = make_uint2(pack2(y2[0], y2[1]), pack2(y2[2], y2[3]));
        } else if (write_kv) {
            const int e = (r - rot_items) * 8;
            const uint4 v = *reinterpret_cast<const uint4*>(row + (size_t)(q_heads + kv_heads) * head_dim + e);
            *reinterpret_cast<uint4*>(v_cache + (size_t)slot * kv_row + e) = v;
        }
    }
}
