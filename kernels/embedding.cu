// Token embedding gather.
#include "common.cuh"

#define EMB_ROWS 8  // tokens per block (one warp each); the host launches ceil(tokens / EMB_ROWS) blocks of 256

// out[t] = table[ids[t]]. An id outside [0, vocab) yields a NaN row rather than a read out of bounds, so a bad id is
// loud downstream. Rows of a multiple of 8 values are copied as 16-byte vectors, four per lane in flight at once.
extern "C" __global__ void embedding_f16(const int* __restrict__ ids, const half_t* __restrict__ table,
                                         half_t* __restrict__ out, int vocab, int hidden, int tokens) {
    pdl_begin();
    const int lane = threadIdx.x & 31;
    const size_t t = (size_t)blockIdx.x * EMB_ROWS + (threadIdx.x >> 5);
    if (t >= (size_t)tokens) return;
    const int id = ids[t];
    half_t* dst = out + t * hidden;
    if (id < 0 || id >= vocab) {
        for (int i = lane; i < hidden; i += 32) dst[i] = (half_t)0x7e00;
        return;
    }
    const half_t* src = table + (size_t)id * hidden;
    if ((hidden & 7) == 0) {  // rows are 16-byte aligned
        const uint4* s4 = reinterpret_cast<const uint4*>(src);
        uint4* d4 = reinterpret_cast<uint4*>(dst);
        const int nv = hidden / 8;
        for (int c = lane; c < nv; c += 128) {
            uint4 v[4];
#pragma unroll
            for (int j = 0; j < 4; ++j)
                if (c + 32 * j < nv) v[j] = s4[c + 32 * j];
#pragma unroll
            for (int j = 0; j < 4; ++j)
                if (c + 32 * j < nv) d4[c + 32 * j] = v[j];
        }
    } else {
        for (int i = lane; i < hidden; i += 32) dst[i] = src[i];
    }
}
