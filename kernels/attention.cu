// Attention over the paged KV cache (layout in kv.cu), GQA, fp16 storage, f32 arithmetic.
//
// decode:  one new query token per sequence attends to its whole context. The context is split into partitions of
//          at most DEC_PART tokens (the host picks the size), one block per (kv head, sequence, partition), so long
//          contexts fill the GPU even at small batch; attn_decode_reduce_* merges the partitions when there is more
//          than one.
// prefill: a chunk of new tokens per sequence (already appended to the cache) attends causally to the sequence's
//          existing context and to itself; flash-style online softmax over tiles of PF_BK cached tokens.
//
// Scores are kept in the log2 domain (q pre-scaled by scale * log2(e)) so exponentials are exp2f.
#include "common.cuh"

#define LOG2E 1.4426950408889634f
#define DEC_THREADS 128
#define DEC_WARPS (DEC_THREADS / 32)
#define DEC_PART 256
#define MAX_GROUP 8

struct Paged {
    const half_t* k_cache;
    const half_t* v_cache;
    const int* block_tables;  // [num_seqs, max_blocks_per_seq]
    int kv_heads;
    int block_size;
    int max_blocks_per_seq;
    int num_blocks;
};

// Offset of (token t of the sequence whose block table is `bt`, kv head `kvh`) in the cache, or -1 for a block id
// outside the cache (never read: such tokens get no weight).
template <int D>
__device__ __forceinline__ long long kv_offset(const Paged& pc, const int* bt, int t, int kvh) {
    const int blk = bt[t / pc.block_size];
    if (blk < 0 || blk >= pc.num_blocks) return -1;
    const long long slot = (long long)blk * pc.block_size + t % pc.block_size;
    return (slot * pc.kv_heads + kvh) * D;
}

template <int D>
__device__ __forceinline__ void attn_decode_impl(const half_t* __restrict__ q, Paged pc,
                                                 const int* __restrict__ context_lens, half_t* __restrict__ out,
                                                 float* __restrict__ part_out, float* __restrict__ part_ml,
                                                 int q_heads, int num_parts, int part_size, float scale) {
    constexpr int LPT = D / 8;     // lanes per token: each loads 8 dims (16 bytes) of a key
    constexpr int TPW = 32 / LPT;  // tokens a warp scores at once
    constexpr int VPL = D / 32;    // dims of V each lane accumulates
    __shared__ float logits[MAX_GROUP][DEC_PART];
    __shared__ float red[DEC_WARPS][MAX_GROUP][D];
    __shared__ float stats[2][MAX_GROUP];

    const int kvh = blockIdx.x, s = blockIdx.y, part = blockIdx.z;
    const int group = q_heads / pc.kv_heads;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int ctx = max(0, min(context_lens[s], pc.max_blocks_per_seq * pc.block_size));
    const int start = part * part_size;  // part_size <= DEC_PART, checked by the host
    const int n = min(start + part_size, ctx) - start;  // tokens in this partition; may be <= 0
    const int* bt = pc.block_tables + (size_t)s * pc.max_blocks_per_seq;

    // Phase 1: scores of this kv head's `group` query heads against the partition's keys.
    const int sub = lane % LPT, tok = lane / LPT;
    float qr[MAX_GROUP][8];
#pragma unroll
    for (int g = 0; g < MAX_GROUP; ++g) {
        if (g < group) {
            const uint4 v = *reinterpret_cast<const uint4*>(q + ((size_t)s * q_heads + kvh * group + g) * D + sub * 8);
            const float f = scale * LOG2E;
            qr[g][0] = lo_f(v.x) * f; qr[g][1] = hi_f(v.x) * f; qr[g][2] = lo_f(v.y) * f; qr[g][3] = hi_f(v.y) * f;
            qr[g][4] = lo_f(v.z) * f; qr[g][5] = hi_f(v.z) * f; qr[g][6] = lo_f(v.w) * f; qr[g][7] = hi_f(v.w) * f;
        } else {
#pragma unroll
            for (int j = 0; j < 8; ++j) qr[g][j] = 0.0f;
        }
    }
    // Each warp issues the loads of U1 steps before using any of them: several loads in flight per warp is what
    // keeps HBM busy (one at a time leaves the kernel latency-bound).
    constexpr int U1 = 4;
    constexpr int STEP = DEC_WARPS * TPW;
    for (int base = warp * TPW; base < n; base += STEP * U1) {
        uint4 kx[U1];
        bool ok[U1];
#pragma unroll
        for (int u = 0; u < U1; ++u) {
            const int tl = base + u * STEP + tok;
            ok[u] = false;
            kx[u] = make_uint4(0, 0, 0, 0);
            if (tl < n) {
                const long long off = kv_offset<D>(pc, bt, start + tl, kvh);
                if (off >= 0) {
                    kx[u] = *reinterpret_cast<const uint4*>(pc.k_cache + off + sub * 8);
                    ok[u] = true;
                }
            }
        }
#pragma unroll
        for (int u = 0; u < U1; ++u) {
            const int tl = base + u * STEP + tok;
            const float k[8] = {lo_f(kx[u].x), hi_f(kx[u].x), lo_f(kx[u].y), hi_f(kx[u].y),
                                lo_f(kx[u].z), hi_f(kx[u].z), lo_f(kx[u].w), hi_f(kx[u].w)};
#pragma unroll
            for (int g = 0; g < MAX_GROUP; ++g) {
                if (g < group) {  // uniform across the block: the shuffles below stay convergent
                    float dot = 0.0f;
#pragma unroll
                    for (int j = 0; j < 8; ++j) dot += qr[g][j] * k[j];
#pragma unroll
                    for (int o = LPT / 2; o > 0; o >>= 1) dot += __shfl_xor_sync(FULL_MASK, dot, o);
                    if (tl < n && sub == 0) logits[g][tl] = ok[u] ? dot : NEG_BIG;
                }
            }
        }
    }
    __syncthreads();

    // Phase 2: softmax statistics per query head; logits become unnormalised probabilities.
    for (int g = warp; g < group; g += DEC_WARPS) {
        float m = NEG_BIG;
        for (int i = lane; i < n; i += 32) m = fmaxf(m, logits[g][i]);
        m = warp_max(m);
        float l = 0.0f;
        for (int i = lane; i < n; i += 32) {
            const float e = exp2f(logits[g][i] - m);
            logits[g][i] = e;
            l += e;
        }
        l = warp_sum(l);
        if (lane == 0) {
            stats[0][g] = m;
            stats[1][g] = l;
        }
    }
    __syncthreads();

    // Phase 3: P.V; warps take tokens round-robin, each lane VPL consecutive dims of a value row.
    float acc[MAX_GROUP][VPL];
#pragma unroll
    for (int g = 0; g < MAX_GROUP; ++g) {
#pragma unroll
        for (int j = 0; j < VPL; ++j) acc[g][j] = 0.0f;
    }
    constexpr int U3 = 8;  // value rows in flight per warp
    for (int base = warp; base < n; base += DEC_WARPS * U3) {
        float v[U3][VPL];
        bool ok[U3];
#pragma unroll
        for (int u = 0; u < U3; ++u) {
            const int tl = base + u * DEC_WARPS;
            ok[u] = false;
#pragma unroll
            for (int j = 0; j < VPL; ++j) v[u][j] = 0.0f;
            if (tl < n) {
                const long long off = kv_offset<D>(pc, bt, start + tl, kvh);
                if (off >= 0) {
                    ok[u] = true;
                    if constexpr (VPL == 4) {
                        const uint2 r = *reinterpret_cast<const uint2*>(pc.v_cache + off + lane * VPL);
                        v[u][0] = lo_f(r.x); v[u][1] = hi_f(r.x); v[u][2] = lo_f(r.y); v[u][3] = hi_f(r.y);
                    } else {
                        const u32 r = *reinterpret_cast<const u32*>(pc.v_cache + off + lane * VPL);
                        v[u][0] = lo_f(r); v[u][1] = hi_f(r);
                    }
                }
            }
        }
#pragma unroll
        for (int u = 0; u < U3; ++u) {
            if (!ok[u]) continue;
            const int tl = base + u * DEC_WARPS;
#pragma unroll
            for (int g = 0; g < MAX_GROUP; ++g) {
                if (g < group) {
                    const float p = logits[g][tl];
#pragma unroll
                    for (int j = 0; j < VPL; ++j) acc[g][j] += p * v[u][j];
                }
            }
        }
    }
#pragma unroll
    for (int g = 0; g < MAX_GROUP; ++g) {
        if (g < group) {
#pragma unroll
            for (int j = 0; j < VPL; ++j) red[warp][g][lane * VPL + j] = acc[g][j];
        }
    }
    __syncthreads();
    for (int e = threadIdx.x; e < group * D; e += DEC_THREADS) {
        const int g = e / D, d = e % D;
        float v = 0.0f;
#pragma unroll
        for (int w = 0; w < DEC_WARPS; ++w) v += red[w][g][d];
        const float l = stats[1][g];
        const float o = l > 0.0f ? v / l : 0.0f;
        const size_t head = (size_t)s * q_heads + kvh * group + g;
        if (num_parts == 1) {
            out[head * D + d] = f2h(o);
        } else {
            const size_t idx = head * num_parts + part;
            part_out[idx * D + d] = o;
            if (d == 0) {
                part_ml[2 * idx] = stats[0][g];
                part_ml[2 * idx + 1] = l;
            }
        }
    }
}

// Merges the per-partition results: out = sum_p w_p o_p / sum_p w_p with w_p = l_p 2^(m_p - M).
// Grid (q_heads, num_seqs), blockDim.x == D.
template <int D>
__device__ __forceinline__ void attn_decode_reduce_impl(const float* __restrict__ part_out,
                                                        const float* __restrict__ part_ml, half_t* __restrict__ out,
                                                        int q_heads, int num_parts) {
    const int h = blockIdx.x, s = blockIdx.y, d = threadIdx.x;
    const size_t head = (size_t)s * q_heads + h;
    const float* ml = part_ml + head * num_parts * 2;
    float m = NEG_BIG;
    for (int p = 0; p < num_parts; ++p) m = fmaxf(m, ml[2 * p]);
    float wsum = 0.0f, acc = 0.0f;
    for (int p = 0; p < num_parts; ++p) {
        const float w = ml[2 * p + 1] * exp2f(ml[2 * p] - m);
        wsum += w;
        acc += w * part_out[(head * num_parts + p) * D + d];
    }
    out[head * D + d] = f2h(wsum > 0.0f ? acc / wsum : 0.0f);
}

#define PF_ROWS 32  // query rows per block, 4 threads each
#define PF_BK 32    // cached tokens per tile
#define PF_THREADS (PF_ROWS * 4)

// Grid (ceil(max_chunk / PF_ROWS), q_heads, num_seqs). Sequence s's new tokens are rows
// [cu_seqlens_q[s], cu_seqlens_q[s+1]) of q/out; its context (cached, including the chunk) has context_lens[s]
// tokens, so new token i sits at position context_lens[s] - chunk + i and sees cached tokens 0..=that position.
template <int D>
__device__ __forceinline__ void attn_prefill_impl(const half_t* __restrict__ q, Paged pc,
                                                  const int* __restrict__ cu_seqlens_q,
                                                  const int* __restrict__ context_lens, half_t* __restrict__ out,
                                                  int total_tokens, int q_heads, float scale) {
    constexpr int NP = D / 8;  // dim pairs per thread: dims 8k + 2*sub + {0, 1}
    __shared__ __align__(16) half_t ks[PF_BK][D + 8];  // +8: rows start on different banks
    __shared__ __align__(16) half_t vs[PF_BK][D + 8];

    const int s = blockIdx.z, h = blockIdx.y;
    const int kvh = h / (q_heads / pc.kv_heads);
    const int q_start = min(cu_seqlens_q[s], total_tokens);
    const int chunk = max(0, min(cu_seqlens_q[s + 1], total_tokens) - q_start);
    const int ctx = max(0, min(context_lens[s], pc.max_blocks_per_seq * pc.block_size));
    const int prefix = max(0, ctx - chunk);
    const int row0 = blockIdx.x * PF_ROWS;
    if (row0 >= chunk) return;  // uniform across the block
    const int* bt = pc.block_tables + (size_t)s * pc.max_blocks_per_seq;

    const int r = threadIdx.x / 4, sub = threadIdx.x % 4;
    const int i = row0 + r;
    const bool active = i < chunk;
    const int pos = prefix + i;
    float qv[2 * NP], acc[2 * NP];
    {
        const half_t* qp = q + ((size_t)(q_start + (active ? i : 0)) * q_heads + h) * D;
#pragma unroll
        for (int k = 0; k < NP; ++k) {
            const u32 v = *reinterpret_cast<const u32*>(qp + 8 * k + 2 * sub);
            qv[2 * k] = lo_f(v) * scale * LOG2E;
            qv[2 * k + 1] = hi_f(v) * scale * LOG2E;
            acc[2 * k] = 0.0f;
            acc[2 * k + 1] = 0.0f;
        }
    }
    float m = NEG_BIG, l = 0.0f;
    const int kv_end = min(prefix + min(row0 + PF_ROWS, chunk), ctx);  // one past the last position any row sees
    for (int tile = 0; tile < kv_end; tile += PF_BK) {
        __syncthreads();  // the previous tile is no longer read
        for (int c = threadIdx.x; c < PF_BK * (D / 8); c += PF_THREADS) {
            const int tk = c / (D / 8), ch = c % (D / 8);
            const int t = tile + tk;
            uint4 kx = make_uint4(0, 0, 0, 0), vx = make_uint4(0, 0, 0, 0);
            if (t < kv_end) {
                const long long off = kv_offset<D>(pc, bt, t, kvh);
                if (off >= 0) {
                    kx = *reinterpret_cast<const uint4*>(pc.k_cache + off + ch * 8);
                    vx = *reinterpret_cast<const uint4*>(pc.v_cache + off + ch * 8);
                }
            }
            *reinterpret_cast<uint4*>(&ks[tk][ch * 8]) = kx;
            *reinterpret_cast<uint4*>(&vs[tk][ch * 8]) = vx;
        }
        __syncthreads();
        float sc[PF_BK];
        float tmax = NEG_BIG;
#pragma unroll
        for (int j = 0; j < PF_BK; ++j) {
            float part = 0.0f;
#pragma unroll
            for (int k = 0; k < NP; ++k) {
                const u32 kk = *reinterpret_cast<const u32*>(&ks[j][8 * k + 2 * sub]);
                part += qv[2 * k] * lo_f(kk) + qv[2 * k + 1] * hi_f(kk);
            }
            part += __shfl_xor_sync(FULL_MASK, part, 1);
            part += __shfl_xor_sync(FULL_MASK, part, 2);
            const int t = tile + j;
            const bool ok = active && t <= pos && t < kv_end;
            sc[j] = ok ? part : NEG_BIG;
            tmax = fmaxf(tmax, sc[j]);
        }
        const float m_new = fmaxf(m, tmax);
        const float corr = exp2f(m - m_new);
        l *= corr;
#pragma unroll
        for (int k = 0; k < 2 * NP; ++k) acc[k] *= corr;
#pragma unroll
        for (int j = 0; j < PF_BK; ++j) {
            const float p = sc[j] > 0.5f * NEG_BIG ? exp2f(sc[j] - m_new) : 0.0f;
            l += p;
#pragma unroll
            for (int k = 0; k < NP; ++k) {
                const u32 vv = *reinterpret_cast<const u32*>(&vs[j][8 * k + 2 * sub]);
                acc[2 * k] += p * lo_f(vv);
                acc[2 * k + 1] += p * hi_f(vv);
            }
        }
        m = m_new;
    }
    if (active) {
        half_t* op = out + ((size_t)(q_start + i) * q_heads + h) * D;
        const float inv = l > 0.0f ? 1.0f / l : 0.0f;
#pragma unroll
        for (int k = 0; k < NP; ++k)
            *reinterpret_cast<u32*>(op + 8 * k + 2 * sub) = pack2(acc[2 * k] * inv, acc[2 * k + 1] * inv);
    }
}

#define DECODE_KERNELS(D)                                                                                          \
    extern "C" __global__ void __launch_bounds__(DEC_THREADS) attn_decode_d##D##_f16(                             \
        const half_t* q, const half_t* k_cache, const half_t* v_cache, const int* block_tables,                   \
        const int* context_lens, half_t* out, float* part_out, float* part_ml, int q_heads, int kv_heads,         \
        int block_size, int max_blocks_per_seq, int num_blocks, int num_parts, int part_size, float scale) {      \
        Paged pc{k_cache, v_cache, block_tables, kv_heads, block_size, max_blocks_per_seq, num_blocks};          \
        attn_decode_impl<D>(q, pc, context_lens, out, part_out, part_ml, q_heads, num_parts, part_size, scale);   \
    }                                                                                                              \
    extern "C" __global__ void attn_decode_reduce_d##D##_f16(const float* part_out, const float* part_ml,         \
                                                             half_t* out, int q_heads, int num_parts) {           \
        attn_decode_reduce_impl<D>(part_out, part_ml, out, q_heads, num_parts);                                   \
    }                                                                                                              \
    extern "C" __global__ void __launch_bounds__(PF_THREADS) attn_prefill_d##D##_f16(                             \
        const half_t* q, const half_t* k_cache, const half_t* v_cache, const int* block_tables,                   \
        const int* cu_seqlens_q, const int* context_lens, half_t* out, int total_tokens, int q_heads,             \
        int kv_heads, int block_size, int max_blocks_per_seq, int num_blocks, float scale) {                      \
        Paged pc{k_cache, v_cache, block_tables, kv_heads, block_size, max_blocks_per_seq, num_blocks};          \
        attn_prefill_impl<D>(q, pc, cu_seqlens_q, context_lens, out, total_tokens, q_heads, scale);               \
    }

DECODE_KERNELS(64)
DECODE_KERNELS(128)
