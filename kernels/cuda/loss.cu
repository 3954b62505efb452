// Fused softmax-cross-entropy over [N, C] logits, one block per row: max and log-sum-exp by block
// reductions, the loss from the target logit and (for label smoothing) the row mean; no probability
// tensor is written. The backward recomputes exp(logit - lse) per element and writes the sample weight's
// gradient (g times the saved unweighted row loss) in the same launch; the fused variant does the forward
// and writes the gradient over the logits in the same launch. Binary cross-entropy with logits is
// elementwise (the caller sums the per-element losses).
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
  r.raw = (1.f - eps) * (r.lse - xt);
  // Only with smoothing, as the CPU: a -inf logit makes sum_x -inf, and 0 * inf would be NaN.
  if (eps != 0.f) r.raw += eps * (r.lse - sum_x / float(c));
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

// One block per row: thread 0 writes the sample weight's gradient g raw, the block the row of dlogits.
template <class T>
__global__ void ce_backward_kernel(const T* logits, const int64_t* target, const T* weight, const float* lse,
                                   const float* raw_loss, const float* dloss, int64_t dloss_stride, float scale,
                                   int64_t n, int64_t c, int64_t ignore_index, float eps, T* dlogits, T* dweight) {
  for (int64_t i = blockIdx.x; i < n; i += gridDim.x) {
    const int64_t t = target[i];
    const bool ignored = t == ignore_index;
    const float g = ignored ? 0.f : dloss[i * dloss_stride] * scale;
    if (dweight && threadIdx.x == 0) dweight[i] = from_float<T>(ignored ? 0.f : g * raw_loss[i]);
    if (!dlogits) continue;
    const float gw = g * (weight && !ignored ? to_float(weight[i]) : 1.f);
    write_dlogits(logits + i * c, dlogits + i * c, c, t, ignored ? 0.f : lse[i], gw, eps, ignored);
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
                            const float* lse, const float* raw_loss, const float* dloss, int64_t dloss_stride,
                            double scale, int64_t n, int64_t c, int64_t ignore_index, double eps, void* dlogits,
                            void* dweight, cudaStream_t stream) {
  NvtxRange nvtx("vlp::cuda::cross_entropy_backward");
  if (n == 0 || (!dlogits && !dweight)) return;
  by_dtype(dt, [&](auto t) {
    using T = decltype(t);
    // Only the weight gradient: one warp per row is plenty.
    ce_backward_kernel<T><<<row_grid(n), dlogits ? kBlock : 32, 0, stream>>>(
        static_cast<const T*>(logits), target, static_cast<const T*>(sample_weight), lse, raw_loss, dloss,
        dloss_stride, float(scale), n, c, ignore_index, float(eps), static_cast<T*>(dlogits),
        static_cast<T*>(dweight));
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

namespace {

template <class T, class U>
__global__ void bce_forward_kernel(const T* x, const T* t, U* loss, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const float v = to_float(x[i]);
    loss[i] = from_float<U>(fmaxf(v, 0.f) - v * to_float(t[i]) + log1pf(expf(-fabsf(v))));
  }
}

template <class T>
__global__ void bce_backward_kernel(const T* x, const T* t, const T* dloss, int64_t dloss_stride, float scale,
                                    int64_t n, T* dx, T* dtarget) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const float g = to_float(dloss[i * dloss_stride]) * scale, v = to_float(x[i]);
    if (dx) dx[i] = from_float<T>(g * (1.f / (1.f + expf(-v)) - to_float(t[i])));
    if (dtarget) dtarget[i] = from_float<T>(-g * v);
  }
}

}  // namespace

void bce_with_logits_forward(EwDType dt, const void* x, const void* t, void* loss, bool loss_f32, int64_t n,
                             cudaStream_t stream) {
  NvtxRange nvtx("vlp::cuda::bce_with_logits_forward");
  if (n == 0) return;
  by_dtype(dt, [&](auto tag) {
    using T = decltype(tag);
    const T* xp = static_cast<const T*>(x);
    const T* tp = static_cast<const T*>(t);
    if (loss_f32)
      bce_forward_kernel<T, float><<<grid_for(n, kBlock), kBlock, 0, stream>>>(xp, tp, static_cast<float*>(loss), n);
    else
      bce_forward_kernel<T, T><<<grid_for(n, kBlock), kBlock, 0, stream>>>(xp, tp, static_cast<T*>(loss), n);
  });
  check_launch("bce_with_logits_forward");
}

void bce_with_logits_backward(EwDType dt, const void* x, const void* t, const void* dloss, int64_t dloss_stride,
                              double scale, int64_t n, void* dx, void* dtarget, cudaStream_t stream) {
  NvtxRange nvtx("vlp::cuda::bce_with_logits_backward");
  if (n == 0 || (!dx && !dtarget)) return;
  by_dtype(dt, [&](auto tag) {
    using T = decltype(tag);
    bce_backward_kernel<T><<<grid_for(n, kBlock), kBlock, 0, stream>>>(
        static_cast<const T*>(x), static_cast<const T*>(t), static_cast<const T*>(dloss), dloss_stride, float(scale),
        n, static_cast<T*>(dx), static_cast<T*>(dtarget));
  });
  check_launch("bce_with_logits_backward");
}

}  // namespace vlp::cuda
