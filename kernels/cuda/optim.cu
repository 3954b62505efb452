// Multi-tensor AdamW and the global sum of squares for gradient clipping. The host cuts every tensor into
// chunks of kChunk elements and uploads one (tensor, start) descriptor per chunk; block c handles chunk c,
// so one launch covers all parameters whatever their number and sizes. The sum of squares writes one
// float partial per chunk and a single block adds the partials in chunk order (in double): deterministic.
#include <cmath>
#include <stdexcept>
#include <vector>

#include "kernels/cuda/allocator.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/misc.h"
#include "kernels/cuda/nvtx.h"
#include "kernels/cuda/runtime.h"

namespace vlp::cuda {

namespace {

constexpr int64_t kChunk = 16384;
constexpr int kBlock = 256;

struct Chunk {
  int64_t tensor, start;
};

struct AdamWArgs {
  float decay, one_minus_beta1, beta2, one_minus_beta2, bc2_sqrt, eps, neg_step_size;
};

// The CPU adamw_step formula in float; BF16 parameters update their fp32 master copy.
template <class T>
__global__ void adamw_kernel(const AdamWTensor* tensors, const Chunk* chunks, AdamWArgs a) {
  const Chunk c = chunks[blockIdx.x];
  const AdamWTensor t = tensors[c.tensor];
  const int64_t end = c.start + kChunk < t.n ? c.start + kChunk : t.n;
  T* param = static_cast<T*>(t.param);
  const T* grad = static_cast<const T*>(t.grad);
  for (int64_t i = c.start + threadIdx.x; i < end; i += blockDim.x) {
    const float g = to_float(grad[i]);
    const float p0 = t.master ? t.master[i] : to_float(param[i]);
    const float p = p0 * a.decay;
    const float m = t.exp_avg[i] + a.one_minus_beta1 * (g - t.exp_avg[i]);
    float v = t.exp_avg_sq[i] * a.beta2;
    v = v + a.one_minus_beta2 * g * g;
    const float denom = sqrtf(v) / a.bc2_sqrt + a.eps;
    const float updated = p + a.neg_step_size * m / denom;
    if (t.master) t.master[i] = updated;
    param[i] = from_float<T>(updated);
    t.exp_avg[i] = m;
    t.exp_avg_sq[i] = v;
  }
}

struct SumChunk {
  const void* x;
  int64_t start, end;
};

template <class T>
__global__ void sum_squares_chunks_kernel(const SumChunk* chunks, float* partial) {
  const SumChunk c = chunks[blockIdx.x];
  const T* x = static_cast<const T*>(c.x);
  float s = 0.f;
  for (int64_t i = c.start + threadIdx.x; i < c.end; i += blockDim.x) {
    float v = to_float(x[i]);
    s += v * v;
  }
  s = block_sum(s);
  if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

// One block: thread t adds partials t, t + blockDim, ... in order, then a fixed tree combines the threads.
__global__ void sum_partials_double_kernel(const float* partial, int64_t n, double* out) {
  __shared__ double acc[kBlock];
  double s = 0.0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) s += double(partial[i]);
  acc[threadIdx.x] = s;
  __syncthreads();
  for (int w = blockDim.x / 2; w > 0; w >>= 1) {
    if (int(threadIdx.x) < w) acc[threadIdx.x] += acc[threadIdx.x + w];
    __syncthreads();
  }
  if (threadIdx.x == 0) *out = acc[0];
}

}  // namespace

void adamw_multi_tensor(EwDType dt, const std::vector<AdamWTensor>& tensors, const cpu::AdamWScalars& s,
                        cudaStream_t stream) {
  NvtxRange nvtx("vlp::cuda::adamw_multi_tensor");
  std::vector<Chunk> chunks;
  for (size_t t = 0; t < tensors.size(); ++t) {
    if (dt == EwDType::BF16 && !tensors[t].master && tensors[t].n > 0)
      throw std::runtime_error("adamw_multi_tensor: BF16 parameters need fp32 master weights");
    for (int64_t start = 0; start < tensors[t].n; start += kChunk) chunks.push_back({int64_t(t), start});
  }
  if (chunks.empty()) return;
  const size_t tensor_bytes = tensors.size() * sizeof(AdamWTensor), chunk_bytes = chunks.size() * sizeof(Chunk);
  DeviceBuffer buf(tensor_bytes + chunk_bytes, current_device(), stream);
  char* base = static_cast<char*>(buf.ptr);
  // Pageable sources: cudaMemcpyAsync has copied them to staging memory when it returns.
  check(cudaMemcpyAsync(base, tensors.data(), tensor_bytes, cudaMemcpyHostToDevice, stream), "adamw descriptors");
  check(cudaMemcpyAsync(base + tensor_bytes, chunks.data(), chunk_bytes, cudaMemcpyHostToDevice, stream),
        "adamw chunks");
  AdamWArgs a;
  a.decay = float(1.0 - s.lr * s.weight_decay);
  a.one_minus_beta1 = float(1.0 - s.beta1);
  a.beta2 = float(s.beta2);
  a.one_minus_beta2 = float(1.0 - s.beta2);
  a.bc2_sqrt = float(std::sqrt(s.bias_correction2));
  a.eps = float(s.eps);
  a.neg_step_size = float(-(s.lr / s.bias_correction1));
  const auto* d_tensors = reinterpret_cast<const AdamWTensor*>(base);
  const auto* d_chunks = reinterpret_cast<const Chunk*>(base + tensor_bytes);
  if (dt == EwDType::F32)
    adamw_kernel<float><<<unsigned(chunks.size()), kBlock, 0, stream>>>(d_tensors, d_chunks, a);
  else
    adamw_kernel<__nv_bfloat16><<<unsigned(chunks.size()), kBlock, 0, stream>>>(d_tensors, d_chunks, a);
  check_launch("adamw_multi_tensor");
}

double sum_of_squares_multi(EwDType dt, const std::vector<const void*>& tensors, const std::vector<int64_t>& sizes,
                            cudaStream_t stream) {
  NvtxRange nvtx("vlp::cuda::sum_of_squares_multi");
  if (tensors.size() != sizes.size()) throw std::runtime_error("sum_of_squares_multi: tensors and sizes differ");
  std::vector<SumChunk> chunks;
  for (size_t t = 0; t < tensors.size(); ++t)
    for (int64_t start = 0; start < sizes[t]; start += kChunk)
      chunks.push_back({tensors[t], start, start + kChunk < sizes[t] ? start + kChunk : sizes[t]});
  if (chunks.empty()) return 0.0;
  const size_t chunk_bytes = chunks.size() * sizeof(SumChunk);
  const size_t partial_offset = (chunk_bytes + 15) / 16 * 16;
  DeviceBuffer buf(partial_offset + chunks.size() * sizeof(float) + sizeof(double) + 16, current_device(), stream);
  char* base = static_cast<char*>(buf.ptr);
  float* partial = reinterpret_cast<float*>(base + partial_offset);
  double* total = reinterpret_cast<double*>(base + partial_offset + (chunks.size() * sizeof(float) + 7) / 8 * 8);
  check(cudaMemcpyAsync(base, chunks.data(), chunk_bytes, cudaMemcpyHostToDevice, stream), "sum_of_squares chunks");
  const auto* d_chunks = reinterpret_cast<const SumChunk*>(base);
  if (dt == EwDType::F32)
    sum_squares_chunks_kernel<float><<<unsigned(chunks.size()), kBlock, 0, stream>>>(d_chunks, partial);
  else
    sum_squares_chunks_kernel<__nv_bfloat16><<<unsigned(chunks.size()), kBlock, 0, stream>>>(d_chunks, partial);
  check_launch("sum_of_squares_multi");
  sum_partials_double_kernel<<<1, kBlock, 0, stream>>>(partial, int64_t(chunks.size()), total);
  check_launch("sum_of_squares_multi total");
  double result = 0.0;
  check(cudaMemcpyAsync(&result, total, sizeof(double), cudaMemcpyDeviceToHost, stream), "sum_of_squares result");
  check(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
  return result;
}

}  // namespace vlp::cuda
