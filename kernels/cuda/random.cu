// Random fills and dropout from the Philox4x32-10 stream of kernels/philox.h, shared with the CPU: thread
// b computes Philox block b and handles values 4b .. 4b+3, so a (seed, offset) pair gives the CPU's bits.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/misc.h"
#include "kernels/cuda/runtime.h"
#include "kernels/philox.h"

namespace vlp::cuda {

namespace {

template <class T>
__global__ void uniform_kernel(T* out, int64_t n, uint64_t seed, uint64_t offset, double lo, double hi) {
  const int64_t blocks = (n + 3) / 4;
  for (int64_t b = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; b < blocks; b += int64_t(gridDim.x) * blockDim.x) {
    Philox4 r = philox_block(seed, offset, uint64_t(b));
    // Rounded multiply and add, no fused multiply-add (nvcc contracts by default): the CPU's two roundings.
    for (int j = 0; j < 4 && 4 * b + j < n; ++j)
      out[4 * b + j] = from_float<T>(float(__dadd_rn(lo, __dmul_rn(hi - lo, double(philox_uniform(r.x[j]))))));
  }
}

// Matches kernels/cpu/random.cpp: threshold = float(p), scale = float(1 / (1 - p)), y = x * scale.
template <class T>
__global__ void dropout_kernel(const T* x, T* y, uint8_t* mask, int64_t n, float threshold, float scale, uint64_t seed,
                               uint64_t offset) {
  const int64_t blocks = (n + 3) / 4;
  for (int64_t b = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; b < blocks; b += int64_t(gridDim.x) * blockDim.x) {
    Philox4 r = philox_block(seed, offset, uint64_t(b));
    for (int j = 0; j < 4 && 4 * b + j < n; ++j) {
      const int64_t i = 4 * b + j;
      const bool drop = philox_uniform(r.x[j]) < threshold;
      y[i] = drop ? from_float<T>(0.f) : from_float<T>(to_float(x[i]) * scale);
      if (mask) mask[i] = drop ? 0 : 1;
    }
  }
}

}  // namespace

void random_uniform(EwDType dt, void* out, int64_t n, uint64_t seed, uint64_t offset, double lo, double hi,
                    cudaStream_t stream) {
  if (n == 0) return;
  const int64_t blocks = (n + 3) / 4;
  if (dt == EwDType::F32)
    uniform_kernel<float><<<grid_for(blocks, 256), 256, 0, stream>>>(static_cast<float*>(out), n, seed, offset, lo, hi);
  else
    uniform_kernel<__nv_bfloat16><<<grid_for(blocks, 256), 256, 0, stream>>>(static_cast<__nv_bfloat16*>(out), n, seed,
                                                                            offset, lo, hi);
  check_launch("random_uniform");
}

void dropout(EwDType dt, const void* x, void* y, uint8_t* mask, int64_t n, double p, uint64_t seed, uint64_t offset,
             cudaStream_t stream) {
  if (n == 0) return;
  const int64_t blocks = (n + 3) / 4;
  const float threshold = float(p), scale = float(1.0 / (1.0 - p));
  if (dt == EwDType::F32)
    dropout_kernel<float><<<grid_for(blocks, 256), 256, 0, stream>>>(static_cast<const float*>(x),
                                                                     static_cast<float*>(y), mask, n, threshold, scale,
                                                                     seed, offset);
  else
    dropout_kernel<__nv_bfloat16><<<grid_for(blocks, 256), 256, 0, stream>>>(
        static_cast<const __nv_bfloat16*>(x), static_cast<__nv_bfloat16*>(y), mask, n, threshold, scale, seed, offset);
  check_launch("dropout");
}

}  // namespace vlp::cuda
