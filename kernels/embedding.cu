// Token embedding gather.
#include "common.cuh"

// out[t] = table[ids[t]]; one block per token. An id outside [0, vocab) yields a NaN row rather than a read out of
// bounds, so a bad id is loud downstream.
extern "C" __global__ void embedding_f16(const int* __restrict__ ids, const half_t* __restrict__ table,
                                         half_t* __restrict__ out, int vocab, int hidden) {
    pdl_begin();
    const size_t t = blockIdx.x;
    const int id = ids[t];
    half_t* dst = out + t * hidden;
    if (id < 0 || id >= vocab) {
        for (int i = threadIdx.x; i < hidden; i += blockDim.x) dst[i] = (half_t)0x7e00;
        return;
    }
    const half_t* src = table + (size_t)id * hidden;
    if ((hidden & 7) == 0) {  // rows are 16-byte aligned: copy 8 values per load
        const uint4* s4 = reinterpret_cast<const uint4*>(src);
        uint4* d4 = reinterpret_cast<uint4*>(dst);
        for (int i = threadIdx.x; i < hidden / 8; i += blockDim.x) d4[i] = s4[i];
    } else {
        for (int i = threadIdx.x; i < hidden; i += blockDim.x) dst[i] = src[i];
    }
}
