// Fused dropout + LoRA down-projection (see lora.h): one block per input row; each thread walks its
// columns j = tid, tid + blockDim, ..., drops x[i, j] by the Philox stream and accumulates it times
// a[r, j] into rank partial sums in registers; warps then reduce their partials and thread r adds the
// warps' results in warp order (deterministic).
#include <stdexcept>
#include <string>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/lora.h"
#include "kernels/cuda/nvtx.h"
#include "kernels/cuda/runtime.h"
#include "kernels/philox.h"

namespace vlp::cuda {

namespace {

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;

template <class T, int R>
__global__ void lora_down_kernel(const T* x, int64_t ldx, const T* a, T* h, int64_t m, int64_t k, int64_t rank,
                                 float threshold, float scale, bool dropout, uint64_t seed, uint64_t offset) {
  __shared__ float partial[kWarps][R];
  const int64_t i = blockIdx.x;
  float acc[R];
#pragma unroll
  for (int r = 0; r < R; ++r) acc[r] = 0.f;
  for (int64_t j = threadIdx.x; j < k; j += blockDim.x) {
    float v = to_float(x[i * ldx + j]);
    if (dropout) {
      const uint64_t e = uint64_t(i * k + j);
      Philox4 rnd = philox_block(seed, offset, e / 4);
      v = philox_uniform(rnd.x[e % 4]) < threshold ? 0.f : v * scale;
    }
#pragma unroll
    for (int r = 0; r < R; ++r)
      if (r < rank) acc[r] += v * to_float(a[r * k + j]);
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int r = 0; r < R; ++r) {
    const float s = warp_sum(acc[r]);
    if (lane == 0) partial[warp][r] = s;
  }
  __syncthreads();
  if (threadIdx.x < rank) {
    float s = 0.f;
    for (int w = 0; w < kWarps; ++w) s += partial[w][threadIdx.x];
    h[i * rank + threadIdx.x] = from_float<T>(s);
  }
}

template <class T>
void launch(const void* x, int64_t ldx, const void* a, void* h, int64_t m, int64_t k, int64_t rank, double p,
            uint64_t seed, uint64_t offset, cudaStream_t stream) {
  const float threshold = float(p), scale = float(1.0 / (1.0 - p));
  const bool dropout = p > 0.0;
  auto args = [&](auto kernel) {
    kernel<<<unsigned(m), kThreads, 0, stream>>>(static_cast<const T*>(x), ldx, static_cast<const T*>(a),
                                                 static_cast<T*>(h), m, k, rank, threshold, scale, dropout, seed,
                                                 offset);
  };
  // Register arrays need a compile-time size: 16 covers the usual ranks, 64 the rest.
  if (rank <= 16) args(lora_down_kernel<T, 16>);
  else args(lora_down_kernel<T, 64>);
}

}  // namespace

void lora_down_dropout(EwDType dt, const void* x, int64_t ldx, const void* a, void* h, int64_t m, int64_t k,
                       int64_t rank, double p, uint64_t seed, uint64_t offset, cudaStream_t stream) {
  NvtxRange nvtx("vlp::cuda::lora_down_dropout");
  if (rank < 1 || rank > kLoraMaxRank)
    throw std::runtime_error("lora_down_dropout: rank must be in [1, " + std::to_string(kLoraMaxRank) + "], got " +
                             std::to_string(rank));
  if (p < 0.0 || p >= 1.0) throw std::runtime_error("lora_down_dropout: dropout probability must be in [0, 1)");
  if (m == 0) return;
  if (dt == EwDType::F32) launch<float>(x, ldx, a, h, m, k, rank, p, seed, offset, stream);
  else launch<__nv_bfloat16>(x, ldx, a, h, m, k, rank, p, seed, offset, stream);
  check_launch("lora_down_dropout");
}

}  // namespace vlp::cuda
