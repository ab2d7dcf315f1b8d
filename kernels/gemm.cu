// Tensor-core GEMM: y[M, N] = x[M, K] . W[N, K]^T (+ bias[N]); fp16 in, f32 accumulate, fp16 out.
//
// Both operands are K-contiguous (activations row-major, weights as stored by PyTorch's Linear), which is exactly
// mma.sync's row.col form. Tiles of BM x BN x 32 stream through STAGES shared-memory buffers with cp.async;
// fragments come from ldmatrix; each warp owns a WM x WN piece of the tile. K must be a multiple of 8 (16-byte
// rows for cp.async); M and N are arbitrary (out-of-range rows are zero-filled and never stored).
//
// Split-K (for small M, where M x N tiles alone cannot fill the GPU): blockIdx.z takes k tiles
// [z * k_tiles_per_split, (z + 1) * k_tiles_per_split) and writes f32 partial sums to partial[z][M][N];
// gemm_splitk_reduce_f16 adds them up with the bias. Without split-K, partial is null and blocks write y. (Adding
// the slices up in the last block of each tile instead, to save the second launch, measured slower on an H100 for
// any M above 1: that block's reduction is one latency-bound loop.)
#include "common.cuh"

// Tiles live in dynamic shared memory (more than the 48 KB static limit at 4 stages); the host sets each kernel's
// limit to STAGES * (BM + BN) * (BK + 8) * 2 bytes (src/gpu/gemm.rs). Rows are padded by 8 halves so ldmatrix's
// 8 rows fall on distinct banks (80- and 144-byte strides).
extern __shared__ __align__(16) half_t gemm_smem[];

template <int BM, int BN, int BK, int WM, int WN, int STAGES>
__device__ __forceinline__ void gemm_impl(const half_t* __restrict__ x, const half_t* __restrict__ w,
                                          const half_t* __restrict__ bias, half_t* __restrict__ y,
                                          float* __restrict__ partial, int M, int N, int K, int k_tiles_per_split,
                                          int glu) {
    constexpr int WARPS_N = BN / WN;
    constexpr int THREADS = (BM / WM) * WARPS_N * 32;
    constexpr int MT = WM / 16, NT = WN / 8;
    static_assert(NT % 2 == 0, "B fragments are loaded two n-tiles at a time");
    constexpr int SK = BK + 8;
    half_t(*as)[BM][SK] = reinterpret_cast<half_t(*)[BM][SK]>(gemm_smem);
    half_t(*bs)[BN][SK] = reinterpret_cast<half_t(*)[BN][SK]>(gemm_smem + STAGES * BM * SK);

    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int wm = warp / WARPS_N, wn = warp % WARPS_N;
    const int bm = blockIdx.y * BM, bn = blockIdx.x * BN;
    const int kt_begin = blockIdx.z * k_tiles_per_split;
    const int ktiles = min((K + BK - 1) / BK - kt_begin, k_tiles_per_split);  // this block's share

    auto load_x = [&](int stage, int kt) {
        const int k0 = (kt_begin + kt) * BK;
        for (int c = tid; c < BM * (BK / 8); c += THREADS) {
            const int r = c / (BK / 8), kc = (c % (BK / 8)) * 8;
            const bool ok = bm + r < M && k0 + kc < K;
            const half_t* g = ok ? x + (size_t)(bm + r) * K + k0 + kc : x;
            cp_async16(smem_addr(&as[stage][r][kc]), g, ok);
        }
    };
    auto load_w = [&](int stage, int kt) {
        const int k0 = (kt_begin + kt) * BK;
        for (int c = tid; c < BN * (BK / 8); c += THREADS) {
            const int r = c / (BK / 8), kc = (c % (BK / 8)) * 8;
            const bool ok = bn + r < N && k0 + kc < K;
            const half_t* g = ok ? w + (size_t)(bn + r) * K + k0 + kc : w;
            cp_async16(smem_addr(&bs[stage][r][kc]), g, ok);
        }
    };

    float acc[MT][NT][4];
    zero_acc(acc);

    // The weights are no kernel's output: while the kernel before this one may still run, start loading this
    // block's first weight tiles and ask L2 for the rest of its slice (128-byte lines: BK halves of a row). The next
    // kernel is let launch only once the main loop is done (below), as in the skinny and staged kernels.
#pragma unroll
    for (int st = 0; st < STAGES - 1; ++st)
        if (st < ktiles) load_w(st, st);
    for (int c = tid; c < (ktiles - (STAGES - 1)) * BN; c += THREADS) {
        const int kt = STAGES - 1 + c / BN, r = c % BN;
        if (bn + r < N) prefetch_l2(w + (size_t)(bn + r) * K + (size_t)(kt_begin + kt) * BK);
    }
    pdl_wait();
    // Commit group st holds tile st's activations (and group 0 the first weight tiles as well), so waiting for
    // group kt below still means tile kt has fully landed.
#pragma unroll
    for (int st = 0; st < STAGES - 1; ++st) {
        if (st < ktiles) load_x(st, st);
        cp_async_commit();
    }
    for (int kt = 0; kt < ktiles; ++kt) {
        cp_async_wait<STAGES - 2>();
        __syncthreads();  // tile kt has landed for everyone, and tile kt-1's buffer is free to overwrite
        const int next = kt + STAGES - 1;
        if (next < ktiles) {
            load_x(next % STAGES, next);
            load_w(next % STAGES, next);
        }
        cp_async_commit();  // an empty group keeps the wait count uniform at the tail
        const int st = kt % STAGES;
#pragma unroll
        for (int kk = 0; kk < BK; kk += 16) {
            u32 a[MT][4];
#pragma unroll
            for (int i = 0; i < MT; ++i) {
                const int row = wm * WM + i * 16 + (lane % 16);
                const int col = kk + (lane / 16) * 8;
                ldmatrix_x4(smem_addr(&as[st][row][col]), a[i][0], a[i][1], a[i][2], a[i][3]);
            }
            u32 b[NT][2];
#pragma unroll
            for (int j = 0; j < NT; j += 2) {
                const int row = wn * WN + j * 8 + (lane % 8) + (lane / 16) * 8;
                const int col = kk + ((lane / 8) % 2) * 8;
                ldmatrix_x4(smem_addr(&bs[st][row][col]), b[j][0], b[j][1], b[j + 1][0], b[j + 1][1]);
            }
#pragma unroll
            for (int i = 0; i < MT; ++i)
#pragma unroll
                for (int j = 0; j < NT; ++j) mma_16816(acc[i][j], a[i], b[j][0], b[j][1]);
        }
    }
    cp_async_wait<0>();
    pdl_trigger();

    if (partial != nullptr) {
        float* part = partial + (size_t)blockIdx.z * M * N;
#pragma unroll
        for (int i = 0; i < MT; ++i) {
#pragma unroll
            for (int j = 0; j < NT; ++j) {
                const int col = bn + wn * WN + j * 8 + 2 * (lane % 4);
#pragma unroll
                for (int hlf = 0; hlf < 2; ++hlf) {
                    const int row = bm + wm * WM + i * 16 + lane / 4 + hlf * 8;
                    if (row >= M) continue;
                    if (col < N) part[(size_t)row * N + col] = acc[i][j][2 * hlf];
                    if (col + 1 < N) part[(size_t)row * N + col + 1] = acc[i][j][2 * hlf + 1];
                }
            }
        }
        return;
    }
    if (glu) {
        // Columns col and col + 1 (col even) are one value's gate and up: y is [M, N / 2], N even (host-checked).
#pragma unroll
        for (int i = 0; i < MT; ++i) {
#pragma unroll
            for (int j = 0; j < NT; ++j) {
                const int col = bn + wn * WN + j * 8 + 2 * (lane % 4);
                if (col >= N) continue;
                const float b0 = bias != nullptr ? h2f(bias[col]) : 0.0f;
                const float b1 = bias != nullptr ? h2f(bias[col + 1]) : 0.0f;
#pragma unroll
                for (int hlf = 0; hlf < 2; ++hlf) {
                    const int row = bm + wm * WM + i * 16 + lane / 4 + hlf * 8;
                    if (row < M)
                        y[(size_t)row * (N / 2) + col / 2] = f2h(silu_mul_f(acc[i][j][2 * hlf] + b0, acc[i][j][2 * hlf + 1] + b1));
                }
            }
        }
        return;
    }
    const bool pairs_ok = (N & 1) == 0;  // (row * N + even col) is then 4-byte aligned
#pragma unroll
    for (int i = 0; i < MT; ++i) {
#pragma unroll
        for (int j = 0; j < NT; ++j) {
            const int col = bn + wn * WN + j * 8 + 2 * (lane % 4);
            const float b0 = bias != nullptr && col < N ? h2f(bias[col]) : 0.0f;
            const float b1 = bias != nullptr && col + 1 < N ? h2f(bias[col + 1]) : 0.0f;
#pragma unroll
            for (int hlf = 0; hlf < 2; ++hlf) {
                const int row = bm + wm * WM + i * 16 + lane / 4 + hlf * 8;
                if (row >= M) continue;
                const float v0 = acc[i][j][2 * hlf] + b0, v1 = acc[i][j][2 * hlf + 1] + b1;
                half_t* yp = y + (size_t)row * N + col;
                if (pairs_ok && col + 1 < N) {
                    *reinterpret_cast<u32*>(yp) = pack2(v0, v1);
                } else {
                    if (col < N) yp[0] = f2h(v0);
                    if (col + 1 < N) yp[1] = f2h(v1);
                }
            }
        }
    }
}

#define GEMM_KERNEL(NAME, THREADS, BM, BN, BK, WM, WN, STAGES)                                                       \
    extern "C" __global__ void __launch_bounds__(THREADS)                                                          \
        NAME(const half_t* x, const half_t* w, const half_t* bias, half_t* y, float* partial, int M, int N, int K,  \
             int k_tiles_per_split, int glu) {                                                                     \
        gemm_impl<BM, BN, BK, WM, WN, STAGES>(x, w, bias, y, partial, M, N, K, k_tiles_per_split, glu);               \
    }

// Large tiles for prefill-sized M; 8 warps of 64 x 32, k tiles of 32, 4 stages (80 KB).
GEMM_KERNEL(gemm_128x128_f16, 256, 128, 128, 32, 64, 32, 4)
// Medium tiles, when large ones would leave SMs idle; 4 warps of 32 x 32, k tiles of 64, 4 stages (72 KB).
GEMM_KERNEL(gemm_64x64_f16, 128, 64, 64, 64, 32, 32, 4)
// The same tile with 8 warps of 32 x 16: twice the warps per SM where the grid is too small to fill the GPU.
GEMM_KERNEL(gemm_64x64w8_f16, 256, 64, 64, 64, 32, 16, 4)
// Decode-sized M (<= 16): one m16 row of tiles, 4 warps of 16 x 16, k tiles of 64, 4 stages (45 KB).
GEMM_KERNEL(gemm_16x64_f16, 128, 16, 64, 64, 16, 16, 4)
// The same with 8 stages (90 KB): more weight bytes in flight per block.
GEMM_KERNEL(gemm_16x64s8_f16, 128, 16, 64, 64, 16, 16, 8)
// Twice as wide, 8 warps of 16 x 16 (81 KB).
GEMM_KERNEL(gemm_16x128_f16, 256, 16, 128, 64, 16, 16, 4)
// Half as wide, 2 warps (27 KB): many small blocks, for an even spread over the SMs.
GEMM_KERNEL(gemm_16x32_f16, 64, 16, 32, 64, 16, 16, 4)
// M up to 32: 4 warps of 32 x 16 (54 KB).
GEMM_KERNEL(gemm_32x64_f16, 128, 32, 64, 64, 32, 16, 4)

// A 16-byte load of weights, kept out of L1 (each is read once). Not volatile: the weights are no kernel's output,
// so the compiler may schedule these loads anywhere.
__device__ __forceinline__ uint4 ld_stream16(const half_t* p) {
    uint4 v;
    asm("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];\n"
        : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
        : "l"(p));
    return v;
}

// A read-only 16-byte load through L1 (the token rows, read by every block of their k range). Volatile: it reads
// the previous kernel's output, so it must stay after pdl_wait.
__device__ __forceinline__ uint4 ld_nc16(const half_t* p) {
    uint4 v;
    asm volatile("ld.global.nc.v4.u32 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "l"(p)
                 : "memory");
    return v;
}

// Skinny GEMM for decode-sized M: the weights are mma's A operand (16 weight rows per m16 tile) and the tokens its
// B operand (8 per n8 tile), so a step of one to eight tokens spends no tensor-core rows on padding, and both are
// read straight from global memory into registers with 16-byte loads (no shared-memory staging: the weights are
// read once, the few tokens' rows stay in L1/L2). Thread (g = lane / 4, t = lane % 4) loads, per unit of 32 k,
// the 8 halves at k0 + 8t of weight rows g and g + 8 and of token g; the first four are mma step 0's k slots
// {2t, 2t + 1, 2t + 8, 2t + 9} and the last four step 1's (a permutation of k applied to both operands alike, so
// the dot products are unchanged). A block's KW warps take interleaved units of the same rows (their loads of a
// row are contiguous) and add their sums up in shared memory; blockIdx.x picks 16 * MT weight rows, blockIdx.y
// 8 * NT tokens, blockIdx.z a split-K slice of k_tiles_per_split tiles of KW * 32 k (with `partial`, as above).
template <int NT, int MT, int KW, int U>
__device__ __forceinline__ void gemm_skinny_impl(const half_t* __restrict__ x, const half_t* __restrict__ w,
                                                 const half_t* __restrict__ bias, half_t* __restrict__ y,
                                                 float* __restrict__ partial, int M, int N, int K,
                                                 int k_tiles_per_split, int glu) {
    constexpr int ROWS = 16 * MT, TOKS = 8 * NT;
    __shared__ float red[KW][TOKS][ROWS + 1];
    const int lane = threadIdx.x & 31, kw = threadIdx.x >> 5;
    const int g = lane >> 2, t = lane & 3;
    const int r0 = blockIdx.x * ROWS, m0 = blockIdx.y * TOKS;
    const int ktiles = (K + KW * 32 - 1) / (KW * 32);
    const int tile_begin = blockIdx.z * k_tiles_per_split;
    const int tile_end = min(ktiles, tile_begin + k_tiles_per_split);
    auto kpos = [&](int tile) { return (tile * KW + kw) * 32 + 8 * t; };

    float acc[MT][NT][4];
    zero_acc(acc);

    // The weights are no kernel's output: ask L2 for this thread's first weight chunks while the kernel before may
    // still run. (The next kernel is let launch only once this one's loads are done, below: with hundreds of small
    // blocks, launching it at the start let a cascade of waiting kernels in behind this one.)
#pragma unroll
    for (int u = 0; u < U; ++u) {
        const int k = kpos(tile_begin + u);
        if (tile_begin + u < tile_end && k < K) {
#pragma unroll
            for (int i = 0; i < MT; ++i)
#pragma unroll
                for (int h = 0; h < 2; ++h) {
                    const int r = r0 + i * 16 + g + 8 * h;
                    if (r < N) prefetch_l2(w + (size_t)r * K + k);
                }
        }
    }
    pdl_wait();

    const uint4 zero = make_uint4(0, 0, 0, 0);
    for (int t0 = tile_begin; t0 < tile_end; t0 += U) {
        int k[U];
        bool ok[U];
#pragma unroll
        for (int u = 0; u < U; ++u) {
            k[u] = kpos(t0 + u);
            ok[u] = t0 + u < tile_end && k[u] < K;
        }
        // Every weight load of the U units first, then the token loads: all in flight before the first mma.
        uint4 wr[U][MT][2];
#pragma unroll
        for (int u = 0; u < U; ++u)
#pragma unroll
            for (int i = 0; i < MT; ++i)
#pragma unroll
                for (int h = 0; h < 2; ++h) {
                    const int r = r0 + i * 16 + g + 8 * h;
                    wr[u][i][h] = ok[u] && r < N ? ld_stream16(w + (size_t)r * K + k[u]) : zero;
                }
        uint4 xv[U][NT];
#pragma unroll
        for (int u = 0; u < U; ++u)
#pragma unroll
            for (int j = 0; j < NT; ++j) {
                const int m = m0 + j * 8 + g;
                xv[u][j] = ok[u] && m < M ? ld_nc16(x + (size_t)m * K + k[u]) : zero;
            }
#pragma unroll
        for (int u = 0; u < U; ++u) {
#pragma unroll
            for (int i = 0; i < MT; ++i) {
                const u32 a0[4] = {wr[u][i][0].x, wr[u][i][1].x, wr[u][i][0].y, wr[u][i][1].y};
                const u32 a1[4] = {wr[u][i][0].z, wr[u][i][1].z, wr[u][i][0].w, wr[u][i][1].w};
#pragma unroll
                for (int j = 0; j < NT; ++j) {
                    mma_16816(acc[i][j], a0, xv[u][j].x, xv[u][j].y);
                    mma_16816(acc[i][j], a1, xv[u][j].z, xv[u][j].w);
                }
            }
        }
    }

    pdl_trigger();
    // acc[i][j]: rows i*16 + g (+8), tokens j*8 + 2t (+1).
#pragma unroll
    for (int i = 0; i < MT; ++i)
#pragma unroll
        for (int j = 0; j < NT; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) red[kw][j * 8 + 2 * t + (e & 1)][i * 16 + g + 8 * (e >> 1)] = acc[i][j][e];
    __syncthreads();
    if (glu && partial == nullptr) {
        // Weight rows r and r + 1 (r even: r0 is) are one value's gate and up: y is [M, N / 2], N even.
        for (int e = threadIdx.x; e < (ROWS / 2) * TOKS; e += KW * 32) {
            const int rr = 2 * (e % (ROWS / 2)), tt = e / (ROWS / 2);
            const int r = r0 + rr, m = m0 + tt;
            if (r >= N || m >= M) continue;
            float gate = 0.0f, up = 0.0f;
#pragma unroll
            for (int q = 0; q < KW; ++q) {
                gate += red[q][tt][rr];
                up += red[q][tt][rr + 1];
            }
            if (bias != nullptr) {
                gate += h2f(bias[r]);
                up += h2f(bias[r + 1]);
            }
            y[(size_t)m * (N / 2) + r / 2] = f2h(silu_mul_f(gate, up));
        }
        return;
    }
    for (int e = threadIdx.x; e < ROWS * TOKS; e += KW * 32) {
        const int rr = e % ROWS, tt = e / ROWS;
        const int r = r0 + rr, m = m0 + tt;
        if (r >= N || m >= M) continue;
        float v = 0.0f;
#pragma unroll
        for (int q = 0; q < KW; ++q) v += red[q][tt][rr];
        if (partial != nullptr) {
            partial[(size_t)blockIdx.z * M * N + (size_t)m * N + r] = v;
        } else {
            if (bias != nullptr) v += h2f(bias[r]);
            y[(size_t)m * N + r] = f2h(v);
        }
    }
}

#define GEMM_SKINNY_KERNEL(NAME, NT, MT, KW, U)                                                                     \
    extern "C" __global__ void __launch_bounds__(KW * 32)                                                          \
        NAME(const half_t* x, const half_t* w, const half_t* bias, half_t* y, float* partial, int M, int N, int K,  \
             int k_tiles_per_split, int glu) {                                                                     \
        gemm_skinny_impl<NT, MT, KW, U>(x, w, bias, y, partial, M, N, K, k_tiles_per_split, glu);                  \
    }

// Up to 8 tokens: 16 weight rows per block, 4 warps, 4 units of 32 k in flight per warp.
GEMM_SKINNY_KERNEL(gemm_s8_f16, 1, 1, 4, 4)
// Up to 16 tokens.
GEMM_SKINNY_KERNEL(gemm_s16_f16, 2, 1, 4, 4)
// Up to 32 tokens: 32 weight rows per block (each token row loaded serves two m16 tiles).
GEMM_SKINNY_KERNEL(gemm_s32_f16, 4, 2, 4, 2)
// Up to 32 tokens, 16 weight rows per block, 4 units in flight: twice the blocks, half the round trips per warp.
GEMM_SKINNY_KERNEL(gemm_s32n_f16, 4, 1, 4, 4)
// Up to 32 tokens, 32 weight rows per block, 4 units in flight (more registers, half the round trips).
GEMM_SKINNY_KERNEL(gemm_s32d_f16, 4, 2, 4, 4)
// Up to 64 tokens.
GEMM_SKINNY_KERNEL(gemm_s64_f16, 8, 2, 4, 2)
// Up to 64 tokens, 16 weight rows per block, 8 warps splitting k (half the k loop per warp).
GEMM_SKINNY_KERNEL(gemm_s64w_f16, 8, 1, 8, 2)

// Staged skinny GEMM for 17 to 64 tokens. The skinny kernels above re-read every token row for each 16 or 32
// weight rows, so at 64 tokens the tokens' traffic outweighs the weights'. Here a block of WARPS warps takes
// 16 * WARPS weight rows and TOKS (32 or 64) token rows of its k range: the tokens are staged in shared memory a chunk of
// 128 k at a time (cp.async, STAGES buffers) and read from there by every warp, while each warp streams its own 16
// weight rows straight into registers, as the skinny kernels do, with the same permutation of k (thread (g, t) holds
// the 8 halves at 32u + 8t of a unit u, for weight rows g and g + 8 and for token g of each group of 8). The next
// chunk's weights are in flight while this chunk's products are taken. Token row r's 16-byte chunk c sits at
// c ^ 4(r & 1) so that the two token rows a quarter-warp reads fall on distinct banks. blockIdx.x picks the weight
// rows, blockIdx.y TOKS tokens, blockIdx.z a split-K slice of k_tiles_per_split chunks (with `partial`, as above). The
// sums leave through the freed buffers, so that each token's outputs are stored as one contiguous run.
template <int TOKS, int WARPS, int STAGES>
__device__ __forceinline__ void gemm_staged_impl(const half_t* __restrict__ x, const half_t* __restrict__ w,
                                                 const half_t* __restrict__ bias, half_t* __restrict__ y,
                                                 float* __restrict__ partial, int M, int N, int K,
                                                 int k_tiles_per_split, int glu) {
    constexpr int KC = 128, CH = KC / 8, ROWS = 16 * WARPS, THREADS = WARPS * 32;
    constexpr int RED = ROWS + 4;  // a reduction row's stride: the lanes' (2t, g) fall on distinct banks
    static_assert(STAGES >= 2, "one chunk lands while another is used");
    static_assert(TOKS * RED * 4 <= STAGES * TOKS * KC * 2, "the sums fit in the token buffers");
    half_t* xs = gemm_smem;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int g = lane >> 2, t = lane & 3;
    const int rb = blockIdx.x * ROWS, r0 = rb + warp * 16, m0 = blockIdx.y * TOKS;
    const int chunks = (K + KC - 1) / KC;
    const int c_begin = blockIdx.z * k_tiles_per_split;
    const int c_end = min(chunks, c_begin + k_tiles_per_split);
    const int n_chunks = c_end - c_begin;
    // Token groups of 8 that hold a token of this block (the others' products are skipped, warp-uniformly).
    const int groups = min(TOKS / 8, (M - m0 + 7) / 8);

    const uint4 zero = make_uint4(0, 0, 0, 0);
    auto load_w = [&](uint4 (&wr)[4][2], int c) {
#pragma unroll
        for (int u = 0; u < 4; ++u)
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                const int r = r0 + g + 8 * h, k = c * KC + u * 32 + 8 * t;
                wr[u][h] = c < c_end && r < N && k < K ? ld_stream16(w + (size_t)r * K + k) : zero;
            }
    };
    auto load_x = [&](int stage, int c) {
        const int k0 = c * KC;
        for (int i = tid; i < TOKS * CH; i += THREADS) {
            const int r = i / CH, ch = i % CH;
            const bool ok = m0 + r < M && k0 + ch * 8 < K;
            const half_t* src = ok ? x + (size_t)(m0 + r) * K + k0 + ch * 8 : x;
            cp_async16(smem_addr(xs + ((size_t)stage * TOKS + r) * KC + (ch ^ ((r & 1) << 2)) * 8), src, ok);
        }
    };

    float acc[TOKS / 8][4];
#pragma unroll
    for (int j = 0; j < TOKS / 8; ++j) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.0f;
    uint4 wa[4][2], wb[4][2];
    // The weights are no kernel's output: the first chunk's may load while the kernel before still runs.
    load_w(wa, c_begin);
    pdl_wait();
#pragma unroll
    for (int s = 0; s < STAGES - 1; ++s) {
        if (s < n_chunks) load_x(s, c_begin + s);
        cp_async_commit();
    }
    for (int i = 0; i < n_chunks; ++i) {
        const int c = c_begin + i;
        load_w(wb, c + 1);  // zeros past the slice's end
        cp_async_wait<STAGES - 2>();
        __syncthreads();  // chunk i has landed for everyone, and chunk i-1's buffer is free to overwrite
        if (i + STAGES - 1 < n_chunks) load_x((i + STAGES - 1) % STAGES, c + STAGES - 1);
        cp_async_commit();  // an empty group keeps the wait count uniform at the tail
        const half_t* xc = xs + (size_t)(i % STAGES) * TOKS * KC;
#pragma unroll
        for (int u = 0; u < 4; ++u) {
            const u32 a0[4] = {wa[u][0].x, wa[u][1].x, wa[u][0].y, wa[u][1].y};
            const u32 a1[4] = {wa[u][0].z, wa[u][1].z, wa[u][0].w, wa[u][1].w};
#pragma unroll
            for (int j = 0; j < TOKS / 8; ++j) {
                if (j >= groups) break;
                const int row = j * 8 + g;
                const uint4 xv =
                    *reinterpret_cast<const uint4*>(xc + row * KC + ((u * 4 + t) ^ ((row & 1) << 2)) * 8);
                mma_16816(acc[j], a0, xv.x, xv.y);
                mma_16816(acc[j], a1, xv.z, xv.w);
            }
        }
#pragma unroll
        for (int u = 0; u < 4; ++u)
#pragma unroll
            for (int h = 0; h < 2; ++h) wa[u][h] = wb[u][h];
    }
    cp_async_wait<0>();
    pdl_trigger();
    __syncthreads();  // every warp is done with the token buffers

    // acc[j]: weight rows g (+8) of this warp's 16, tokens j*8 + 2t (+1).
    float* red = reinterpret_cast<float*>(gemm_smem);
#pragma unroll
    for (int j = 0; j < TOKS / 8; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) red[(j * 8 + 2 * t + (e & 1)) * RED + warp * 16 + g + 8 * (e >> 1)] = acc[j][e];
    __syncthreads();
    if (glu && partial == nullptr) {
        // Weight rows r and r + 1 (r even: rb is) are one value's gate and up: y is [M, N / 2], N even.
        for (int i = tid; i < TOKS * (ROWS / 2); i += THREADS) {
            const int tt = i / (ROWS / 2), rr = 2 * (i % (ROWS / 2));
            const int r = rb + rr, m = m0 + tt;
            if (r >= N || m >= M) continue;
            float gate = red[tt * RED + rr], up = red[tt * RED + rr + 1];
            if (bias != nullptr) {
                gate += h2f(bias[r]);
                up += h2f(bias[r + 1]);
            }
            y[(size_t)m * (N / 2) + r / 2] = f2h(silu_mul_f(gate, up));
        }
        return;
    }
    for (int i = tid; i < TOKS * ROWS; i += THREADS) {
        const int tt = i / ROWS, rr = i % ROWS;
        const int r = rb + rr, m = m0 + tt;
        if (r >= N || m >= M) continue;
        float v = red[tt * RED + rr];
        if (partial != nullptr) {
            partial[(size_t)blockIdx.z * M * N + (size_t)m * N + r] = v;
        } else {
            if (bias != nullptr) v += h2f(bias[r]);
            y[(size_t)m * N + r] = f2h(v);
        }
    }
}

#define GEMM_STAGED_KERNEL(NAME, TOKS, WARPS, STAGES)                                                                     \
    extern "C" __global__ void __launch_bounds__(WARPS * 32)                                                       \
        NAME(const half_t* x, const half_t* w, const half_t* bias, half_t* y, float* partial, int M, int N, int K,  \
             int k_tiles_per_split, int glu) {                                                                     \
        gemm_staged_impl<TOKS, WARPS, STAGES>(x, w, bias, y, partial, M, N, K, k_tiles_per_split, glu);             \
    }

// Up to 64 tokens staged, 8 warps of 16 weight rows (128 a block), 3 chunks of 128 k in flight (48 KB).
GEMM_STAGED_KERNEL(gemm_s64s_f16, 64, 8, 3)
// The same with 4 warps (64 weight rows a block): twice the blocks, the tokens' traffic as large as the weights'.
GEMM_STAGED_KERNEL(gemm_s64s4_f16, 64, 4, 3)
// Up to 32 tokens staged, 8 warps of 16 weight rows, 3 chunks in flight (24 KB).
GEMM_STAGED_KERNEL(gemm_s32s_f16, 32, 8, 3)

// y[m, n] = sum over splits of partial[s][m][n] (+ bias[n]); grid-stride. With glu, columns 2c and 2c + 1 are
// one value's gate and up: y[m, c] = silu(gate) * up, y is [M, N / 2] (N even), and y's index is half the pair's.
extern "C" __global__ void gemm_splitk_reduce_f16(const float* __restrict__ partial, const half_t* __restrict__ bias,
                                                  half_t* __restrict__ y, int M, int N, int splits, int glu) {
    pdl_begin();
    const size_t total = (size_t)M * N;
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    if (glu) {
        for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total / 2; i += stride) {
            const size_t e = 2 * i;
            float gate = bias != nullptr ? h2f(bias[e % N]) : 0.0f;
            float up = bias != nullptr ? h2f(bias[(e + 1) % N]) : 0.0f;
            for (int s = 0; s < splits; ++s) {
                gate += partial[(size_t)s * total + e];
                up += partial[(size_t)s * total + e + 1];
            }
            y[i] = f2h(silu_mul_f(gate, up));
        }
        return;
    }
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
        float v = bias != nullptr ? h2f(bias[i % N]) : 0.0f;
        for (int s = 0; s < splits; ++s) v += partial[(size_t)s * total + i];
        y[i] = f2h(v);
    }
}
