// Bias epilogue for GEMMs that have none of their own (cuBLAS's plain GemmEx): y[r, j] += bias[j].
#include "common.cuh"

// y is [rows, n] fp16, bias [n]; the sum is rounded to fp16 once. Grid-stride over rows * n elements.
extern "C" __global__ void add_bias_f16(half_t* __restrict__ y, const half_t* __restrict__ bias, int rows, int n) {
    pdl_begin();
    const size_t total = (size_t)rows * n;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x)
        y[i] = f2h(h2f(y[i]) + h2f(bias[i % n]));
}
