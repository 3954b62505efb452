// Fused softmax-cross-entropy over [N, C] logits, one block per row: max and log-sum-exp by block
// reductions, the loss from the target logit and (for label smoothing) the row mean; no probability
// tensor is written. The backward recomputes exp(logit - lse) per element; the fused variant does the
// forward and writes the gradient over the logits in the same launch.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/nn.h"
#include "kernels/cuda/nvtx.h"
#include "kernels/cuda/runtime.h"

namespace vlp::cuda {

namespace {

constexpr int kBlock = 256;

struct RowLoss {
  float lse, raw;
  bool ignored, valid;
};

// Block-wide: lse of the row and the unweighted loss. Every thread gets the result.
template <class T>
__device__ RowLoss row_loss(const T* row, int64_t c, int64_t t, int64_t ignore_index, float eps) {
  RowLoss r{0.f, 0.f, t == ignore_index, t >= 0 && t < c};
  float m = -INFINITY, sum_x = 0.f;
  for (int64_t j = threadIdx.x; j < c; j += blockDim.x) {
    float v = to_float(row[j]);
    m = fmaxf(m, v);
    sum_x += v;
  }
  m = block_max(m);
  sum_x = block_sum(sum_x);
  float s = 0.f;
  for (int64_t j = threadIdx.x; j < c; j += blockDim.x) s += expf(to_float(row[j]) - m);
  // Read before the barrier in block_sum: the fused kernel overwrites the row right after this returns.
  const float xt = r.valid && !r.ignored ? to_float(row[t]) : 0.f;
  s = block_sum(s);
  if (r.ignored) return r;
  r.lse = m + logf(s);
  if (!r.valid) {
    r.raw = NAN;
    return r;
  }
  r.raw = (1.f - eps) * (r.lse - xt) + eps * (r.lse - sum_x / float(c));
  return r;
}

template <class T>
__global__ void ce_forward_kernel(const T* logits, const int64_t* target, const T* weight, int64_t n, int64_t c,
                                  int64_t ignore_index, float eps, float* loss, float* lse, float* raw_loss) {
  for (int64_t i = blockIdx.x; i < n; i += gridDim.x) {
    RowLoss r = row_loss(logits + i * c, c, target[i], ignore_index, eps);
    if (threadIdx.x == 0) {
      float w = weight && !r.ignored ? to_float(weight[i]) : 1.f;
      loss[i] = r.ignored ? 0.f : r.raw * w;
      lse[i] = r.lse;
      if (raw_loss) raw_loss[i] = r.ignored ? 0.f : r.raw;
    }
  }
}

// Each element is read and written by the same thread, so dlogits may alias logits.
template <class T>
__device__ void write_dlogits(const T* row, T* drow, int64_t c, int64_t t, float lse, float g, float eps,
                              bool zero) {
  const float smooth = eps / float(c);
  for (int64_t j = threadIdx.x; j < c; j += blockDim.x) {
    float v = zero ? 0.f : g * (expf(to_float(row[j]) - lse) - (j == t ? 1.f - eps : 0.f) - smooth);
    drow[j] = from_float<T>(v);
  }
}

template <class T>
__global__ void ce_backward_kernel(const T* logits, const int64_t* target, const T* weight, const float* lse,
                                   const float* dloss, int64_t dloss_stride, float scale, int64_t n, int64_t c,
                                   int64_t ignore_index, float eps, T* dlogits) {
  for (int64_t i = blockIdx.x; i < n; i += gridDim.x) {
    const int64_t t = target[i];
    const bool ignored = t == ignore_index;
    const float g = ignored ? 0.f : dloss[i * dloss_stride] * scale * (weight ? to_float(weight[i]) : 1.f);
    write_dlogits(logits + i * c, dlogits + i * c, c, t, ignored ? 0.f : lse[i], g, eps, ignored);
  }
}

template <class T>
__global__ void ce_fused_kernel(T* logits, const int64_t* target, const T* weight, int64_t n, int64_t c,
                                int64_t ignore_index, float eps, float scale, float* loss, float* lse) {
  for (int64_t i = blockIdx.x; i < n; i += gridDim.x) {
    T* row = logits + i * c;
    RowLoss r = row_loss(row, c, target[i], ignore_index, eps);
    const float w = weight && !r.ignored ? to_float(weight[i]) : 1.f;
    if (threadIdx.x == 0) {
      loss[i] = r.ignored ? 0.f : r.raw * w;
      lse[i] = r.lse;
    }
    write_dlogits(row, row, c, target[i], r.lse, scale * w, eps, r.ignored);
  }
}

template <class Fn>
void by_dtype(EwDType dt, Fn&& fn) {
  if (dt == EwDType::F32) fn(float{});
  else fn(__nv_bfloat16{});
}

unsigned row_grid(int64_t rows) { return unsigned(rows < 65535 * 4 ? (rows < 1 ? 1 : rows) : 65535 * 4); }

}  // namespace

void cross_entropy_forward(EwDType dt, const void* logits, const int64_t* target, const void* sample_weight,
                           int64_t n, int64_t c, int64_t ignore_index, double eps, float* loss, float* lse,
                           float* raw_loss, cudaStream_t stream) {
  NvtxRange nvtx("vlp::cuda::cross_entropy_forward");
  if (n == 0) return;
  by_dtype(dt, [&](auto t) {
    using T = decltype(t);
    ce_forward_kernel<T><<<row_grid(n), kBlock, 0, stream>>>(static_cast<const T*>(logits), target,
                                                             static_cast<const T*>(sample_weight), n, c, ignore_index,
                                                             float(eps), loss, lse, raw_loss);
  });
  check_launch("cross_entropy_forward");
}

void cross_entropy_backward(EwDType dt, const void* logits, const int64_t* target, const void* sample_weight,
                            const float* lse, const float* dloss, int64_t dloss_stride, double scale, int64_t n,
                            int64_t c, int64_t ignore_index, double eps, void* dlogits, cudaStream_t stream) {
  NvtxRange nvtx("vlp::cuda::cross_entropy_backward");
  if (n == 0) return;
  by_dtype(dt, [&](auto t) {
    using T = decltype(t);
    ce_backward_kernel<T><<<row_grid(n), kBlock, 0, stream>>>(
        static_cast<const T*>(logits), target, static_cast<const T*>(sample_weight), lse, dloss, dloss_stride,
        float(scale), n, c, ignore_index, float(eps), static_cast<T*>(dlogits));
  });
  check_launch("cross_entropy_backward");
}

void cross_entropy_fused(EwDType dt, void* logits, const int64_t* target, const void* sample_weight, int64_t n,
                         int64_t c, int64_t ignore_index, double eps, double scale, float* loss, float* lse,
                         cudaStream_t stream) {
  NvtxRange nvtx("vlp::cuda::cross_entropy_fused");
  if (n == 0) return;
  by_dtype(dt, [&](auto t) {
    using T = decltype(t);
    ce_fused_kernel<T><<<row_grid(n), kBlock, 0, stream>>>(static_cast<T*>(logits), target,
                                                           static_cast<const T*>(sample_weight), n, c, ignore_index,
                                                           float(eps), float(scale), loss, lse);
  });
  check_launch("cross_entropy_fused");
}

}  // namespace vlp::cuda
