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
extern "C" __global__ void kv_append_rope_f16(const half_t* __restrict__ qkv, const int* __restrict__ positions,
                                              const int* __restrict__ slot_mapping, half_t* __restrict__ q_out,
                                              half_t* __restrict__ k_cache, half_t* __restrict__ v_cache,
                                              int q_heads, int kv_heads, int head_dim, long long num_slots,
                                              float theta) {
    const size_t t = blockIdx.x;
    const int half_dim = head_dim / 2;
    const size_t row_len = (size_t)(q_heads + 2 * kv_heads) * head_dim;
    const half_t* row = qkv + t * row_len;
    const float pos = (float)positions[t];
    const long long slot = slot_mapping[t];
    const bool write_kv = slot >= 0 && slot < num_slots;
    const size_t kv_row = (size_t)kv_heads * head_dim;

    const int rot_pairs = (q_heads + kv_heads) * half_dim;
    for (int p = threadIdx.x; p < rot_pairs; p += blockDim.x) {
        const int h = p / half_dim, i = p % half_dim;
        // Same f32 formula as Hugging Face: inv_freq = 1 / theta^(2i/d), angle = pos * inv_freq.
        const float inv_freq = 1.0f / powf(theta, (float)(2 * i) / (float)head_dim);
        float s, c;
        sincosf(pos * inv_freq, &s, &c);
        const half_t* src = row + (size_t)h * head_dim;
        const float x1 = h2f(src[i]), x2 = h2f(src[i + half_dim]);
        const half_t o1 = f2h(x1 * c - x2 * s), o2 = f2h(x2 * c + x1 * s);
        if (h < q_heads) {
            half_t* dst = q_out + (t * q_heads + h) * head_dim;
            dst[i] = o1;
            dst[i + half_dim] = o2;
        } else if (write_kv) {
            half_t* dst = k_cache + (size_t)slot * kv_row + (size_t)(h - q_heads) * head_dim;
            dst[i] = o1;
            dst[i + half_dim] = o2;
        }
    }
    if (write_kv) {
        const half_t* vsrc = row + (size_t)(q_heads + kv_heads) * head_dim;
        half_t* vdst = v_cache + (size_t)slot * kv_row;
        for (int e = threadIdx.x; e < (int)kv_row; e += blockDim.x) vdst[e] = vsrc[e];
    }
}
