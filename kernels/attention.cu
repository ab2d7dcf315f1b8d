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
// K/V chunk buffers per warp in the tensor-core decode kernel, by head size (the host's gpu::compile::decode_stages
// must agree: it sizes the kernel's shared memory; it passes -DDEC_STAGES_D64=N / -DDEC_STAGES_D128=N when told other
// counts).
#ifndef DEC_STAGES_D64
#define DEC_STAGES_D64 2
#endif
#ifndef DEC_STAGES_D128
#define DEC_STAGES_D128 2
#endif
#define DEC_PART_TC 1024  // the most context tokens one tensor-core decode block covers
// Warps of a tensor-core decode block, by head size (the host's gpu::compile::decode_warps must agree: it launches
// the kernel and sizes its shared memory; it passes -DDEC_TC_WARPS_D64=N / -DDEC_TC_WARPS_D128=N when told other
// counts).
#ifndef DEC_TC_WARPS_D64
#define DEC_TC_WARPS_D64 8
#endif
#ifndef DEC_TC_WARPS_D128
#define DEC_TC_WARPS_D128 4
#endif

extern __shared__ __align__(16) unsigned char dec_smem[];

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
        pdl_begin();                                                                                              \
        Paged pc{k_cache, v_cache, block_tables, kv_heads, block_size, max_blocks_per_seq, num_blocks};          \
        attn_decode_impl<D>(q, pc, context_lens, out, part_out, part_ml, q_heads, num_parts, part_size, scale);   \
    }                                                                                                              \
    extern "C" __global__ void attn_decode_reduce_d##D##_f16(const float* part_out, const float* part_ml,         \
                                                             half_t* out, int q_heads, int num_parts) {           \
        pdl_begin();                                                                                              \
        attn_decode_reduce_impl<D>(part_out, part_ml, out, q_heads, num_parts);                                   \
    }                                                                                                              \
    extern "C" __global__ void __launch_bounds__(PF_THREADS) attn_prefill_d##D##_f16(                             \
        const half_t* q, const half_t* k_cache, const half_t* v_cache, const int* block_tables,                   \
        const int* cu_seqlens_q, const int* context_lens, half_t* out, int total_tokens, int q_heads,             \
        int kv_heads, int block_size, int max_blocks_per_seq, int num_blocks, float scale) {                      \
        pdl_begin();                                                                                              \
        Paged pc{k_cache, v_cache, block_tables, kv_heads, block_size, max_blocks_per_seq, num_blocks};          \
        attn_prefill_impl<D>(q, pc, cu_seqlens_q, context_lens, out, total_tokens, q_heads, scale);               \
    }

DECODE_KERNELS(64)
DECODE_KERNELS(128)

// ---------------------------------------------------------------------------------------------------------------
// Tensor-core (mma.sync) attention, flash-attention-2 style. The rows of an m16 tile are (token, head) pairs of one
// kv head's query group, so K and V are read once per group, not once per query head.
//   row r of a sequence's chunk -> token r / group, query head kvh * group + r % group.
// A warp owns 16 rows: Q fragments stay in registers, scores S = Q K^T for 16 cached tokens at a time come from two
// m16n8k16 products per 16 dims, the online softmax runs on the accumulators, and P (rounded to fp16) feeds
// O += P V directly as the A operand. K and V tiles are staged in shared memory (rows padded by 8 halves) so
// ldmatrix (.trans for V) can build the B fragments.
// decode:  one block per (kv head, sequence, partition); the warps split the partition's tokens 16 at a time and
//          merge their (m, l, O) at the end. Up to 16 query heads per kv head.
// prefill: one block per (PF_TC_ROWS rows, kv head, sequence); the warps share tiles of PF_TC_BK cached tokens.

#define PF_TC_BK 64  // cached tokens per prefill tile
// Warps of a tensor-core prefill block, 16 query rows each (the host's prefill_tc_warps must agree; it passes
// -DPF_TC_WARPS=N when told another count).
#ifndef PF_TC_WARPS
#define PF_TC_WARPS 4
#endif
#define PF_TC_ROWS (16 * PF_TC_WARPS)

template <int D>
struct WarpState {
    u32 qa[D / 16][4];  // Q fragments, k-step by k-step
    float o[D / 8][4];  // O accumulators: n-tile of 8 dims; [0..1] row lane/4, [2..3] row lane/4 + 8
    float m[2], l[2];   // running max (log2 domain) and partial sum of this thread's two rows
};

template <int D>
__device__ __forceinline__ void warp_state_init(WarpState<D>& st, const half_t* q_smem) {
    const int lane = threadIdx.x & 31;
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk)
        ldmatrix_x4(smem_addr(q_smem + (lane % 16) * (D + 8) + kk * 16 + (lane / 16) * 8), st.qa[kk][0], st.qa[kk][1],
                    st.qa[kk][2], st.qa[kk][3]);
#pragma unroll
    for (int n = 0; n < D / 8; ++n) st.o[n][0] = st.o[n][1] = st.o[n][2] = st.o[n][3] = 0.0f;
    st.m[0] = st.m[1] = NEG_BIG;
    st.l[0] = st.l[1] = 0.0f;
}

// One warp attends its 16 rows to N cached tokens (N a multiple of 16) whose K and V rows sit at ks / vs (row
// stride D + 8), with one online-softmax update for all N. `visible(h, j)` says whether this thread's row
// (lane/4 + 8h) may see token j of the N (j = 8 * tile + col).
template <int D, int N, typename Visible>
__device__ __forceinline__ void warp_attend(WarpState<D>& st, const half_t* ks, const half_t* vs, float scale_log2,
                                            Visible visible) {
    static_assert(N % 16 == 0, "tokens come 16 at a time");
    const int lane = threadIdx.x & 31, t = lane % 4;
    float s[N / 8][4];
#pragma unroll
    for (int nt = 0; nt < N / 8; ++nt) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
#pragma unroll
        for (int np = 0; np < N / 16; ++np) {
            u32 b00, b01, b10, b11;
            const int row = np * 16 + (lane % 8) + (lane / 16) * 8, col = kk * 16 + ((lane / 8) % 2) * 8;
            ldmatrix_x4(smem_addr(ks + row * (D + 8) + col), b00, b01, b10, b11);
            mma_16816(s[2 * np], st.qa[kk], b00, b01);
            mma_16816(s[2 * np + 1], st.qa[kk], b10, b11);
        }
    }
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        float mx = NEG_BIG;
#pragma unroll
        for (int nt = 0; nt < N / 8; ++nt) {
#pragma unroll
            for (int e = 0; e < 2; ++e) {
                const int j = nt * 8 + 2 * t + e;
                const float v = visible(h, j) ? s[nt][2 * h + e] * scale_log2 : NEG_BIG;
                s[nt][2 * h + e] = v;
                mx = fmaxf(mx, v);
            }
        }
        mx = fmaxf(mx, __shfl_xor_sync(FULL_MASK, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(FULL_MASK, mx, 2));
        const float m_new = fmaxf(st.m[h], mx);
        const float corr = exp2f(st.m[h] - m_new);
        float sum = 0.0f;
#pragma unroll
        for (int nt = 0; nt < N / 8; ++nt) {
#pragma unroll
            for (int e = 0; e < 2; ++e) {
                const float v = s[nt][2 * h + e];
                const float p = v > 0.5f * NEG_BIG ? exp2f(v - m_new) : 0.0f;
                s[nt][2 * h + e] = p;
                sum += p;
            }
        }
        st.l[h] = st.l[h] * corr + sum;
        st.m[h] = m_new;
#pragma unroll
        for (int n = 0; n < D / 8; ++n) {
            st.o[n][2 * h] *= corr;
            st.o[n][2 * h + 1] *= corr;
        }
    }
    // The score accumulators' layout is the A operand's: rows lane/4 (+8), tokens 2t, 2t+1 (+8) of each 16.
#pragma unroll
    for (int ks16 = 0; ks16 < N / 16; ++ks16) {
        u32 pa[4];
        pa[0] = pack2(s[2 * ks16][0], s[2 * ks16][1]);
        pa[1] = pack2(s[2 * ks16][2], s[2 * ks16][3]);
        pa[2] = pack2(s[2 * ks16 + 1][0], s[2 * ks16 + 1][1]);
        pa[3] = pack2(s[2 * ks16 + 1][2], s[2 * ks16 + 1][3]);
#pragma unroll
        for (int dp = 0; dp < D / 16; ++dp) {
            u32 b00, b01, b10, b11;
            const int mi = lane / 8;
            const int row = ks16 * 16 + (lane % 8) + (mi % 2) * 8, col = dp * 16 + (mi / 2) * 8;
            ldmatrix_x4_trans(smem_addr(vs + row * (D + 8) + col), b00, b01, b10, b11);
            mma_16816(st.o[2 * dp], pa, b00, b01);
            mma_16816(st.o[2 * dp + 1], pa, b10, b11);
        }
    }
}

// Completes each row's sum across the 4 threads that share it.
template <int D>
__device__ __forceinline__ void warp_finish(WarpState<D>& st) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        st.l[h] += __shfl_xor_sync(FULL_MASK, st.l[h], 1);
        st.l[h] += __shfl_xor_sync(FULL_MASK, st.l[h], 2);
    }
}

template <int D>
__device__ __forceinline__ void attn_decode_tc_impl(const half_t* __restrict__ q, Paged pc,
                                                    const int* __restrict__ context_lens, half_t* __restrict__ out,
                                                    float* __restrict__ part_out, float* __restrict__ part_ml,
                                                    int* __restrict__ counters, const int* __restrict__ part_plan,
                                                    int q_heads, int num_parts, int part_size, float scale) {
    constexpr int STAGES = D <= 64 ? DEC_STAGES_D64 : DEC_STAGES_D128;
    constexpr int WARPS = D <= 64 ? DEC_TC_WARPS_D64 : DEC_TC_WARPS_D128;
    constexpr int THREADS = WARPS * 32;
    static_assert(STAGES >= 2, "the decode pipeline needs two buffers at least");
    constexpr int RS = D + 8;                       // smem row stride (halves)
    constexpr int KV_WARP = 2 * 16 * RS;            // one warp's K + V chunk (halves)
    constexpr int KV_BYTES = STAGES * WARPS * KV_WARP * 2;
    constexpr int MERGE_BYTES = WARPS * 16 * (D + 2) * 4;
    constexpr int REGION = KV_BYTES > MERGE_BYTES ? KV_BYTES : MERGE_BYTES;
    // Dynamic: REGION + 16 * RS * 2 bytes (dec_tc_smem_bytes in src/gpu/ops.rs), over 48 KB for D = 128.
    unsigned char* smem = dec_smem;
    half_t* kv_s = reinterpret_cast<half_t*>(smem);
    half_t* q_s = reinterpret_cast<half_t*>(smem + REGION);

    // Until pdl_wait below the block reads only the step's uploaded inputs (split, context lengths, block tables),
    // which no kernel writes, so under programmatic launch this part overlaps the kernel before. The loads are
    // issued so that their latencies overlap: the context length and the partition's block ids together, then
    // (after the wait) Q together with the first chunks of K and V: two global-memory round trips before the first
    // chunk lands instead of four one after another. (On an H100, qwen2.5-0.5b's decode attention took its bytes at
    // the copy bandwidth plus about 10 us whatever their number: 32.4 us at 64 x 2,048, 54.9 us at 256 x 1,024.)
    //
    // A decode graph is launched with a grid for the most partitions its steps can need; each step's own split
    // (the one a launch for that step alone would use) is read from part_plan = {num_parts, part_size}, written by
    // the host before the graph runs. Blocks past it have nothing to do.
    if (part_plan != nullptr) {
        num_parts = part_plan[0];
        part_size = part_plan[1];
    }
    if ((int)blockIdx.z >= num_parts) return;

    const int kvh = blockIdx.x, s = blockIdx.y, part = blockIdx.z;
    const int group = q_heads / pc.kv_heads;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int start = part * part_size;
    const int first = start / pc.block_size;
    const int* bt = pc.block_tables + (size_t)s * pc.max_blocks_per_seq;

    // The cache slots of the partition's tokens (-1: none), looked up once: the copy loop below then issues its
    // loads without waiting on a block-table read first. Each cache block's id is read from global memory once, not
    // once per token (at 1,024 tokens a partition, eight rounds of block-table reads a thread), into the K/V staging
    // area, which is free until the copies start. Every id the partition could span is read, before its length is
    // known (ids past the context are read and not used; the table's row has max_blocks_per_seq of them).
    __shared__ int slot_s[DEC_PART_TC];
    const int ctx_in = context_lens[s];
    int* blk_s = reinterpret_cast<int*>(smem);  // at most DEC_PART_TC ids: far inside REGION
    const int span = min((start + part_size - 1) / pc.block_size + 1, pc.max_blocks_per_seq) - first;
    for (int j = threadIdx.x; j < span; j += THREADS) blk_s[j] = bt[first + j];
    const int ctx = max(0, min(ctx_in, pc.max_blocks_per_seq * pc.block_size));
    const int n = min(start + part_size, ctx) - start;
    __syncthreads();
    for (int i = threadIdx.x; i < n; i += THREADS) {
        const int t = start + i, blk = blk_s[t / pc.block_size - first];
        slot_s[i] = blk < 0 || blk >= pc.num_blocks ? -1 : blk * pc.block_size + t % pc.block_size;
    }
    // Q and the newest token's K and V are written by the kernels before this one.
    pdl_wait();
    // Q rows 0..group-1 are the group's heads; rows up to 16 are zero-filled. Its own commit group, the oldest.
    for (int c = threadIdx.x; c < 16 * (D / 8); c += THREADS) {
        const int r = c / (D / 8), ch = c % (D / 8);
        const bool ok = r < group;
        cp_async16(smem_addr(q_s + r * RS + ch * 8), ok ? q + ((size_t)s * q_heads + kvh * group + r) * D + ch * 8 : q,
                   ok);
    }
    cp_async_commit();
    __syncthreads();  // every slot is written, every block id read: the staging area is the copies' now
    const float scale_log2 = scale * LOG2E;

    // Each warp streams its chunks of 16 tokens through STAGES buffers: the next STAGES - 1 chunks' K and V are in
    // flight while the current one is scored, so a warp keeps several loads outstanding under its own arithmetic
    // (with one chunk ahead, a block was bound by the memory's latency, not its bandwidth, until many blocks shared
    // each SM). Chunk j of the warp sits in buffer j % STAGES.
    half_t* warp_kv = kv_s + warp * STAGES * KV_WARP;
    // Starts the copy of chunk c0 into buffer `buf`. Warp-uniform: every lane calls it with the same c0.
    auto issue = [&](int c0, int buf) {
        half_t* ks = warp_kv + buf * KV_WARP;
        half_t* vs = ks + 16 * RS;
#pragma unroll
        for (int i = 0; i < (16 * (D / 8)) / 32; ++i) {
            const int p = lane + 32 * i;
            const int r = p / (D / 8), ch = p % (D / 8);
            const int slot = c0 + r < n ? slot_s[c0 + r] : -1;
            const long long off = slot < 0 ? -1 : ((long long)slot * pc.kv_heads + kvh) * D;
            const bool ok = off >= 0;
            cp_async16(smem_addr(ks + r * RS + ch * 8), ok ? pc.k_cache + off + ch * 8 : pc.k_cache, ok);
            cp_async16(smem_addr(vs + r * RS + ch * 8), ok ? pc.v_cache + off + ch * 8 : pc.v_cache, ok);
        }
    };
    constexpr int STRIDE = WARPS * 16;
    // One commit group per chunk, empty past the end, so "all but the newest STAGES - 1 groups have landed" always
    // means "the chunk about to be scored has landed".
#pragma unroll
    for (int k = 0; k < STAGES - 1; ++k) {
        if (warp * 16 + k * STRIDE < n) issue(warp * 16 + k * STRIDE, k);
        cp_async_commit();
    }
    // Q's group, older than the STAGES - 1 chunks' just issued, has landed; the barrier shows every thread's part.
    cp_async_wait<STAGES - 1>();
    __syncthreads();
    WarpState<D> st;
    warp_state_init<D>(st, q_s);
    int buf = 0;
    for (int c0 = warp * 16; c0 < n; c0 += STRIDE) {
        const int ahead = c0 + (STAGES - 1) * STRIDE;
        // The buffer of the chunk scored last iteration (the __syncwarp after it let every lane finish reading).
        if (ahead < n) issue(ahead, (buf + STAGES - 1) % STAGES);
        cp_async_commit();
        cp_async_wait<STAGES - 1>();
        __syncwarp();
        const half_t* ks = warp_kv + buf * KV_WARP;
        const half_t* vs = ks + 16 * RS;
        const int valid = min(16, n - c0);
        // bit j: token c0 + j exists in the cache
        const unsigned okmask = __ballot_sync(FULL_MASK, lane < valid && slot_s[c0 + lane] >= 0);
        warp_attend<D, 16>(st, ks, vs, scale_log2, [&](int, int j) { return j < valid && ((okmask >> j) & 1u); });
        __syncwarp();  // a later copy overwrites this buffer
        buf = (buf + 1) % STAGES;
    }
    cp_async_wait<0>();
    warp_finish<D>(st);

    // Merge the warps: each writes its rows' (m, l, O) to shared memory (over the K/V staging area).
    __syncthreads();
    float* mo = reinterpret_cast<float*>(smem);  // [warp][row][D + 2]: O, then m, l
    {
        const int r0 = lane / 4, t = lane % 4;
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            float* row = mo + (warp * 16 + r0 + 8 * h) * (D + 2);
#pragma unroll
            for (int nd = 0; nd < D / 8; ++nd) {
                row[nd * 8 + 2 * t] = st.o[nd][2 * h];
                row[nd * 8 + 2 * t + 1] = st.o[nd][2 * h + 1];
            }
            if (t == 0) {
                row[D] = st.m[h];
                row[D + 1] = st.l[h];
            }
        }
    }
    __syncthreads();
    for (int e = threadIdx.x; e < group * D; e += THREADS) {
        const int g = e / D, d = e % D;
        float m = NEG_BIG;
#pragma unroll
        for (int w = 0; w < WARPS; ++w) m = fmaxf(m, mo[(w * 16 + g) * (D + 2) + D]);
        float l = 0.0f, o = 0.0f;
#pragma unroll
        for (int w = 0; w < WARPS; ++w) {
            const float* row = mo + (w * 16 + g) * (D + 2);
            const float f = exp2f(row[D] - m);
            l += row[D + 1] * f;
            o += row[d] * f;
        }
        o = l > 0.0f ? o / l : 0.0f;
        const size_t head = (size_t)s * q_heads + kvh * group + g;
        if (num_parts == 1) {
            out[head * D + d] = f2h(o);
        } else {
            const size_t idx = head * num_parts + part;
            part_out[idx * D + d] = o;
            if (d == 0) {
                part_ml[2 * idx] = m;
                part_ml[2 * idx + 1] = l;
            }
        }
    }
    if (num_parts == 1) return;
    // The last partition of this (sequence, kv head) to finish merges them all — no second launch. counters[] is
    // zero before the launch and left zero after it (the merging block resets its entry).
    __threadfence();
    __syncthreads();
    __shared__ int merges;
    int* counter = counters + (size_t)s * pc.kv_heads + kvh;
    if (threadIdx.x == 0) merges = atomicAdd(counter, 1) == num_parts - 1;
    __syncthreads();
    if (!merges) return;
    __threadfence();
    // Each head's weights, normalised, go to shared memory (over the K/V staging area); then each thread sums its
    // elements over the partitions, eight partitions' loads of every element in flight at once. Up to 32 partitions
    // a warp per head reads every (m, l) at once (a lane each); beyond, two passes, the weights as many partitions at
    // a time as fit. (A loop per element over the partitions, one load after another, doubled the step from one
    // partition to two on an H100 and made odd counts 10-20% slower than the next even one.)
    float* wt = reinterpret_cast<float*>(smem);
    constexpr int WT_CAP = REGION / 4;
    constexpr int ACC = (16 * D + THREADS - 1) / THREADS;
    const size_t head0 = (size_t)s * q_heads + kvh * group;
    float acc[ACC];
#pragma unroll
    for (int i = 0; i < ACC; ++i) acc[i] = 0.0f;
    // Adds partitions [p0, p0 + pn) in, their weights at wt[g * pn + p - p0].
    // One of a thread's elements at a time, over all the partitions, eight loads in flight: every element at once
    // (the loops the other way round) held the whole kernel at 206 registers a thread for heads of 64 values (two
    // blocks an SM) and 255 with spills for heads of 128; this way, 104 and 154.
    auto accumulate = [&](int p0, int pn) {
#pragma unroll
        for (int i = 0; i < ACC; ++i) {
            const int e = threadIdx.x + i * THREADS;
            if (e < group * D) {
                const int g = e / D, d = e % D;
                for (int p = 0; p < pn; p += 8) {
                    const float* po = part_out + ((head0 + g) * num_parts + p0 + p) * D + d;
                    const float* w = wt + g * pn + p;
#pragma unroll
                    for (int j = 0; j < 8; ++j)
                        if (p + j < pn) acc[i] += w[j] * ld_cg(po + (size_t)j * D);
                }
            }
        }
    };
    if (num_parts <= 32) {
        for (int g = warp; g < group; g += WARPS) {
            const float* ml = part_ml + (head0 + g) * num_parts * 2;
            const bool has = lane < num_parts;
            const float m = has ? ld_cg(ml + 2 * lane) : NEG_BIG;
            const float l = has ? ld_cg(ml + 2 * lane + 1) : 0.0f;
            const float top = warp_max(m);
            const float w = l * exp2f(m - top);
            const float total = warp_sum(w);
            if (has) wt[g * num_parts + lane] = total > 0.0f ? w / total : 0.0f;
        }
        __syncthreads();
        accumulate(0, num_parts);
    } else {
        __shared__ float head_m[16], head_w[16];
        for (int g = warp; g < group; g += WARPS) {
            const float* ml = part_ml + (head0 + g) * num_parts * 2;
            float m = NEG_BIG;
            for (int p = lane; p < num_parts; p += 32) m = fmaxf(m, ld_cg(ml + 2 * p));
            m = warp_max(m);
            float w = 0.0f;
            for (int p = lane; p < num_parts; p += 32) w += ld_cg(ml + 2 * p + 1) * exp2f(ld_cg(ml + 2 * p) - m);
            w = warp_sum(w);
            if (lane == 0) {
                head_m[g] = m;
                head_w[g] = w;
            }
        }
        const int chunk_parts = max(1, WT_CAP / max(group, 1));
        for (int p0 = 0; p0 < num_parts; p0 += chunk_parts) {
            const int pn = min(chunk_parts, num_parts - p0);
            __syncthreads();  // head_m/head_w written; the previous chunk's weights no longer read
            for (int i = threadIdx.x; i < group * pn; i += THREADS) {
                const int g = i / pn, p = p0 + i % pn;
                const float* ml = part_ml + ((head0 + g) * num_parts + p) * 2;
                const float tw = head_w[g];
                wt[i] = tw > 0.0f ? ld_cg(ml + 1) * exp2f(ld_cg(ml) - head_m[g]) / tw : 0.0f;
            }
            __syncthreads();
            accumulate(p0, pn);
        }
    }
#pragma unroll
    for (int i = 0; i < ACC; ++i) {
        const int e = threadIdx.x + i * THREADS;
        if (e < group * D) out[(head0 + e / D) * D + e % D] = f2h(acc[i]);
    }
    if (threadIdx.x == 0) *counter = 0;
}

// Grid (ceil(max_chunk * group / PF_TC_ROWS), kv_heads, num_seqs), PF_TC_WARPS * 32 threads, dynamic shared memory
// prefill_tc_smem_bytes(D) (src/gpu/ops.rs): Q rows, then two stages of K and V tiles.
// The block's cached tokens stream through two stages of PF_TC_BK tokens: the copy of tile i + 1 is in flight while
// tile i is scored. Each tile's cache offsets are written to shared memory by the threads that own its tokens, from
// block-table entries they loaded a tile earlier, so no block waits on a block-table read. A warp skips the tiles
// past its last row's position and drops the causal mask on tiles its first row sees whole.
template <int D>
__device__ __forceinline__ void attn_prefill_tc_impl(const half_t* __restrict__ q, Paged pc,
                                                     const int* __restrict__ cu_seqlens_q,
                                                     const int* __restrict__ context_lens, half_t* __restrict__ out,
                                                     int total_tokens, int q_heads, float scale) {
    constexpr int RS = D + 8;
    constexpr int BK = PF_TC_BK;
    constexpr int THREADS = PF_TC_WARPS * 32;
    constexpr int TILE = BK * RS;  // halves of one K or V tile
    static_assert(BK <= THREADS, "each tile token needs an owning thread");
    half_t* q_s = reinterpret_cast<half_t*>(dec_smem);
    half_t* kv_s = q_s + PF_TC_ROWS * RS;  // stage j: K at kv_s + 2j * TILE, V right after
    __shared__ long long offs[2][BK];

    const int s = blockIdx.z, kvh = blockIdx.y;
    const int group = q_heads / pc.kv_heads;
    const int q_start = min(cu_seqlens_q[s], total_tokens);
    const int chunk = max(0, min(cu_seqlens_q[s + 1], total_tokens) - q_start);
    const int ctx = max(0, min(context_lens[s], pc.max_blocks_per_seq * pc.block_size));
    const int prefix = max(0, ctx - chunk);
    const int rows = chunk * group;
    // The last rows see the most tokens: their blocks go first, so the long ones do not start last.
    const int row0 = (gridDim.x - 1 - blockIdx.x) * PF_TC_ROWS;
    if (row0 >= rows) return;  // uniform across the block
    const int* bt = pc.block_tables + (size_t)s * pc.max_blocks_per_seq;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int last_row = min(row0 + PF_TC_ROWS - 1, rows - 1);
    const int kv_end = min(prefix + last_row / group + 1, ctx);
    const int tiles = (kv_end + BK - 1) / BK;

    // Thread tid < BK owns token tid of every tile: it loads the token's block-table entry one tile ahead of
    // writing the token's offset.
    auto block_of = [&](int tile) {
        const int t = tile * BK + tid;
        return tid < BK && t < kv_end ? bt[t / pc.block_size] : -1;
    };
    auto write_offs = [&](int tile, int blk, int st) {
        if (tid < BK) {
            const int t = tile * BK + tid;
            offs[st][tid] = t < kv_end && blk >= 0 && blk < pc.num_blocks
                                ? (((long long)blk * pc.block_size + t % pc.block_size) * pc.kv_heads + kvh) * D
                                : -1;
        }
    };
    auto issue = [&](int st) {
        half_t* ks = kv_s + 2 * st * TILE;
        half_t* vs = ks + TILE;
#pragma unroll
        for (int c = tid; c < BK * (D / 8); c += THREADS) {
            const int r = c / (D / 8), ch = c % (D / 8);
            const long long off = offs[st][r];
            const bool ok = off >= 0;
            cp_async16(smem_addr(ks + r * RS + ch * 8), ok ? pc.k_cache + off + ch * 8 : pc.k_cache, ok);
            cp_async16(smem_addr(vs + r * RS + ch * 8), ok ? pc.v_cache + off + ch * 8 : pc.v_cache, ok);
        }
    };

    int blk_next = block_of(0);
    for (int c = tid; c < PF_TC_ROWS * (D / 8); c += THREADS) {
        const int r = c / (D / 8), ch = c % (D / 8);
        const int gr = row0 + r;
        const bool ok = gr < rows;
        const half_t* src =
            ok ? q + ((size_t)(q_start + gr / group) * q_heads + kvh * group + gr % group) * D + ch * 8 : q;
        cp_async16(smem_addr(q_s + r * RS + ch * 8), src, ok);
    }
    // Tiles 0 and 1 in flight (one commit group each, the first with Q), tile 2's block-table entries loading.
    write_offs(0, blk_next, 0);
    blk_next = block_of(1);
    __syncthreads();
    issue(0);
    cp_async_commit();
    write_offs(1, blk_next, 1);
    blk_next = block_of(2);
    __syncthreads();
    if (tiles > 1) issue(1);
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();

    // This warp's rows: the positions its first and last rows see up to (-1: no rows), and each thread's two rows'.
    const int wr0 = row0 + warp * 16;
    const int wr1 = min(wr0 + 15, rows - 1);
    const int first_pos = wr0 < rows ? min(prefix + wr0 / group, ctx - 1) : -1;
    const int last_pos = wr0 < rows ? min(prefix + wr1 / group, ctx - 1) : -1;
    int pos[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        const int gr = wr0 + lane / 4 + 8 * h;
        pos[h] = gr < rows ? min(prefix + gr / group, ctx - 1) : -1;
    }
    WarpState<D> st;
    warp_state_init<D>(st, q_s + warp * 16 * RS);
    const float scale_log2 = scale * LOG2E;

    for (int i = 0; i < tiles; ++i) {
        const int cur = i & 1;
        const int t0 = i * BK;
        if (t0 <= last_pos) {  // warp-uniform
            const half_t* ks = kv_s + 2 * cur * TILE;
            const half_t* vs = ks + TILE;
            const long long* o = offs[cur];
            // Whole: every token of the tile exists and even the warp's first row sees it.
            bool cached = true;
#pragma unroll
            for (int j = lane; j < BK; j += 32) cached = cached && o[j] >= 0;
            const bool whole = __all_sync(FULL_MASK, cached) && t0 + BK - 1 <= first_pos;
            if (whole) {
                warp_attend<D, BK>(st, ks, vs, scale_log2, [](int, int) { return true; });
            } else {
                warp_attend<D, BK>(st, ks, vs, scale_log2,
                                   [&](int h, int j) { return t0 + j <= pos[h] && o[j] >= 0; });
            }
        }
        if (i + 1 >= tiles) break;  // uniform
        __syncthreads();  // tile i's buffers and offsets are no longer read
        if (i + 2 < tiles) {
            write_offs(i + 2, blk_next, cur);
            blk_next = block_of(i + 3);
        }
        __syncthreads();
        if (i + 2 < tiles) issue(cur);
        cp_async_commit();
        cp_async_wait<1>();  // tile i + 1 has landed (this thread's copies) ...
        __syncthreads();     // ... and every thread's
    }
    cp_async_wait<0>();
    warp_finish<D>(st);
    const int t4 = lane % 4;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        const int gr = wr0 + lane / 4 + 8 * h;
        if (gr >= rows) continue;
        const int tok = gr / group, g = gr % group;
        half_t* op = out + ((size_t)(q_start + tok) * q_heads + kvh * group + g) * D;
        const float inv = st.l[h] > 0.0f ? 1.0f / st.l[h] : 0.0f;
#pragma unroll
        for (int nd = 0; nd < D / 8; ++nd)
            *reinterpret_cast<u32*>(op + nd * 8 + 2 * t4) = pack2(st.o[nd][2 * h] * inv, st.o[nd][2 * h + 1] * inv);
    }
}

#define TC_KERNELS(D)                                                                                              \
    extern "C" __global__ void __launch_bounds__(DEC_TC_WARPS_D##D * 32) attn_decode_tc_d##D##_f16(             \
        const half_t* q, const half_t* k_cache, const half_t* v_cache, const int* block_tables,                   \
        const int* context_lens, half_t* out, float* part_out, float* part_ml, int* counters,                      \
        const int* part_plan, int q_heads, int kv_heads, int block_size, int max_blocks_per_seq, int num_blocks,  \
        int num_parts, int part_size, float scale) {                                                               \
        pdl_trigger(); /* attn_decode_tc_impl waits once it has read the step's uploaded inputs */                 \
        Paged pc{k_cache, v_cache, block_tables, kv_heads, block_size, max_blocks_per_seq, num_blocks};          \
        attn_decode_tc_impl<D>(q, pc, context_lens, out, part_out, part_ml, counters, part_plan, q_heads, num_parts, \
                               part_size, scale);                                                                  \
    }                                                                                                              \
    extern "C" __global__ void __launch_bounds__(PF_TC_WARPS * 32) attn_prefill_tc_d##D##_f16(                    \
        const half_t* q, const half_t* k_cache, const half_t* v_cache, const int* block_tables,                   \
        const int* cu_seqlens_q, const int* context_lens, half_t* out, int total_tokens, int q_heads,             \
        int kv_heads, int block_size, int max_blocks_per_seq, int num_blocks, float scale) {                      \
        pdl_begin();                                                                                              \
        Paged pc{k_cache, v_cache, block_tables, kv_heads, block_size, max_blocks_per_seq, num_blocks};          \
        attn_prefill_tc_impl<D>(q, pc, cu_seqlens_q, context_lens, out, total_tokens, q_heads, scale);            \
    }

TC_KERNELS(64)
TC_KERNELS(128)
