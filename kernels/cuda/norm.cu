// LayerNorm (with the residual add fused into the forward) and RMSNorm over rows of a contiguous
// [rows, d] array. Forward: one block per row, statistics by block reductions (LayerNorm: the mean, then
// the variance about it, in float). Backward: one kernel per norm produces dx by block reductions and,
// in the same pass, per-block partial sums of the parameter gradients in a [blocks, d] workspace, each
// element owned by one thread (no atomics); a second kernel sums the partials in block order. The grid
// size depends only on the shape, so gradients are the same bits run to run.
#include <algorithm>

#include "kernels/cuda/allocator.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/nn.h"
#include "kernels/cuda/nvtx.h"
#include "kernels/cuda/runtime.h"

namespace vlp::cuda {

namespace {

constexpr int kBlock = 256;
constexpr int64_t kMaxBackwardBlocks = 512;

template <class T>
__global__ void layer_norm_forward_kernel(const T* x, const T* residual, const T* gamma, const T* beta, T* y, T* h_out,
                                          float* mean_out, float* rstd_out, int64_t rows, int64_t d, float eps) {
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* xr = x + r * d;
    const T* rr = residual ? residual + r * d : nullptr;
    T* hr = h_out ? h_out + r * d : nullptr;
    // h is rounded to T before the statistics, so they describe exactly the h that backward will see.
    auto h_at = [&](int64_t j) {
      float v = to_float(xr[j]) + (rr ? to_float(rr[j]) : 0.f);
      return to_float(from_float<T>(v));
    };
    float s = 0.f;
    for (int64_t j = threadIdx.x; j < d; j += blockDim.x) s += h_at(j);
    const float mean = block_sum(s) / float(d);
    float q = 0.f;
    for (int64_t j = threadIdx.x; j < d; j += blockDim.x) {
      float c = h_at(j) - mean;
      q += c * c;
    }
    const float rstd = rsqrtf(block_sum(q) / float(d) + eps);
    for (int64_t j = threadIdx.x; j < d; j += blockDim.x) {
      float h = h_at(j);
      if (hr) hr[j] = from_float<T>(h);
      float v = (h - mean) * rstd;
      if (gamma) v *= to_float(gamma[j]);
      if (beta) v += to_float(beta[j]);
      y[r * d + j] = from_float<T>(v);
    }
    if (threadIdx.x == 0) {
      mean_out[r] = mean;
      rstd_out[r] = rstd;
    }
  }
}

// Block b handles rows b, b + gridDim.x, ...; partial[b * d + j] accumulates column j over those rows.
template <class T>
__global__ void layer_norm_backward_kernel(const T* x, const float* mean, const float* rstd, const T* gamma,
                                           const T* dy, T* dx, float* partial_dgamma, float* partial_dbeta,
                                           int64_t rows, int64_t d) {
  float* pg = partial_dgamma ? partial_dgamma + blockIdx.x * d : nullptr;
  float* pb = partial_dbeta ? partial_dbeta + blockIdx.x * d : nullptr;
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) {
    if (pg) pg[j] = 0.f;
    if (pb) pb[j] = 0.f;
  }
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* xr = x ? x + r * d : nullptr;  // null when only dbeta is wanted
    const T* gr = dy + r * d;
    const float mu = x ? mean[r] : 0.f, rs = x ? rstd[r] : 0.f;
    float sg = 0.f, sgx = 0.f;
    for (int64_t j = threadIdx.x; j < d; j += blockDim.x) {
      const float dyv = to_float(gr[j]);
      const float xhat = xr ? (to_float(xr[j]) - mu) * rs : 0.f;
      const float g = dyv * (gamma ? to_float(gamma[j]) : 1.f);
      sg += g;
      sgx += g * xhat;
      if (pg) pg[j] += dyv * xhat;
      if (pb) pb[j] += dyv;
    }
    if (dx) {
      const float mg = block_sum(sg) / float(d), mgx = block_sum(sgx) / float(d);
      for (int64_t j = threadIdx.x; j < d; j += blockDim.x) {
        const float xhat = (to_float(xr[j]) - mu) * rs;
        const float g = to_float(gr[j]) * (gamma ? to_float(gamma[j]) : 1.f);
        dx[r * d + j] = from_float<T>(rs * (g - mg - xhat * mgx));
      }
    }
  }
}

template <class T>
__global__ void rms_norm_forward_kernel(const T* x, const T* w, T* y, float* rstd_out, int64_t rows, int64_t d,
                                        float eps) {
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* xr = x + r * d;
    float q = 0.f;
    for (int64_t j = threadIdx.x; j < d; j += blockDim.x) {
      float v = to_float(xr[j]);
      q += v * v;
    }
    const float rstd = rsqrtf(block_sum(q) / float(d) + eps);
    for (int64_t j = threadIdx.x; j < d; j += blockDim.x)
      y[r * d + j] = from_float<T>(to_float(xr[j]) * rstd * (w ? to_float(w[j]) : 1.f));
    if (threadIdx.x == 0) rstd_out[r] = rstd;
  }
}

// dx = rstd (g - x rstd^2 mean(g x)), g = dy w;  dw = sum_rows(dy x rstd).
template <class T>
__global__ void rms_norm_backward_kernel(const T* x, const float* rstd, const T* w, const T* dy, T* dx,
                                         float* partial_dw, int64_t rows, int64_t d) {
  float* pw = partial_dw ? partial_dw + blockIdx.x * d : nullptr;
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x)
    if (pw) pw[j] = 0.f;
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* xr = x + r * d;
    const T* gr = dy + r * d;
    const float rs = rstd[r];
    float sgx = 0.f;
    for (int64_t j = threadIdx.x; j < d; j += blockDim.x) {
      const float xv = to_float(xr[j]), dyv = to_float(gr[j]);
      sgx += dyv * (w ? to_float(w[j]) : 1.f) * xv;
      if (pw) pw[j] += dyv * xv * rs;
    }
    if (dx) {
      const float mgx = block_sum(sgx) / float(d);
      for (int64_t j = threadIdx.x; j < d; j += blockDim.x) {
        const float xv = to_float(xr[j]);
        const float g = to_float(gr[j]) * (w ? to_float(w[j]) : 1.f);
        dx[r * d + j] = from_float<T>(rs * (g - xv * rs * rs * mgx));
      }
    }
  }
}

// out[j] = sum_b partial[b * d + j], in b order.
template <class T>
__global__ void sum_partials_kernel(const float* partial, int64_t blocks, int64_t d, T* out) {
  int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (j >= d) return;
  float s = 0.f;
  for (int64_t b = 0; b < blocks; ++b) s += partial[b * d + j];
  out[j] = from_float<T>(s);
}

template <class Fn>
void by_dtype(EwDType dt, Fn&& fn) {
  if (dt == EwDType::F32) fn(float{});
  else fn(__nv_bfloat16{});
}

unsigned row_grid(int64_t rows) { return unsigned(rows < 65535 * 4 ? (rows < 1 ? 1 : rows) : 65535 * 4); }

}  // namespace

void layer_norm_forward(EwDType dt, const void* x, const void* residual, const void* gamma, const void* beta, void* y,
                        void* h_out, float* mean, float* rstd, int64_t rows, int64_t d, double eps,
                        cudaStream_t stream) {
  NvtxRange nvtx("vlp::cuda::layer_norm_forward");
  if (rows == 0 || d == 0) return;
  by_dtype(dt, [&](auto t) {
    using T = decltype(t);
    layer_norm_forward_kernel<T><<<row_grid(rows), kBlock, 0, stream>>>(
        static_cast<const T*>(x), static_cast<const T*>(residual), static_cast<const T*>(gamma),
        static_cast<const T*>(beta), static_cast<T*>(y), static_cast<T*>(h_out), mean, rstd, rows, d, float(eps));
  });
  check_launch("layer_norm_forward");
}

void layer_norm_backward(EwDType dt, const void* x, const float* mean, const float* rstd, const void* gamma,
                         const void* dy, void* dx, void* dgamma, void* dbeta, int64_t rows, int64_t d,
                         cudaStream_t stream) {
  NvtxRange nvtx("vlp::cuda::layer_norm_backward");
  if (d == 0) return;
  const int64_t blocks = std::max<int64_t>(1, std::min(rows, kMaxBackwardBlocks));
  const int device = current_device();
  DeviceBuffer partial(size_t(2 * blocks * d) * sizeof(float), device, stream);
  float* pg = dgamma ? static_cast<float*>(partial.ptr) : nullptr;
  float* pb = dbeta ? static_cast<float*>(partial.ptr) + blocks * d : nullptr;
  by_dtype(dt, [&](auto t) {
    using T = decltype(t);
    layer_norm_backward_kernel<T><<<unsigned(blocks), kBlock, 0, stream>>>(
        static_cast<const T*>(x), mean, rstd, static_cast<const T*>(gamma), static_cast<const T*>(dy),
        static_cast<T*>(dx), pg, pb, rows, d);
    check_launch("layer_norm_backward");
    if (pg) sum_partials_kernel<T><<<grid_for(d, 128), 128, 0, stream>>>(pg, blocks, d, static_cast<T*>(dgamma));
    if (pb) sum_partials_kernel<T><<<grid_for(d, 128), 128, 0, stream>>>(pb, blocks, d, static_cast<T*>(dbeta));
  });
  check_launch("layer_norm_backward partial sums");
}

void rms_norm_forward(EwDType dt, const void* x, const void* weight, void* y, float* rstd, int64_t rows, int64_t d,
                      double eps, cudaStream_t stream) {
  NvtxRange nvtx("vlp::cuda::rms_norm_forward");
  if (rows == 0 || d == 0) return;
  by_dtype(dt, [&](auto t) {
    using T = decltype(t);
    rms_norm_forward_kernel<T><<<row_grid(rows), kBlock, 0, stream>>>(
        static_cast<const T*>(x), static_cast<const T*>(weight), static_cast<T*>(y), rstd, rows, d, float(eps));
  });
  check_launch("rms_norm_forward");
}

void rms_norm_backward(EwDType dt, const void* x, const float* rstd, const void* weight, const void* dy, void* dx,
                       void* dweight, int64_t rows, int64_t d, cudaStream_t stream) {
  NvtxRange nvtx("vlp::cuda::rms_norm_backward");
  if (d == 0) return;
  const int64_t blocks = std::max<int64_t>(1, std::min(rows, kMaxBackwardBlocks));
  DeviceBuffer partial(size_t(blocks * d) * sizeof(float), current_device(), stream);
  float* pw = dweight ? static_cast<float*>(partial.ptr) : nullptr;
  by_dtype(dt, [&](auto t) {
    using T = decltype(t);
    rms_norm_backward_kernel<T><<<unsigned(blocks), kBlock, 0, stream>>>(
        static_cast<const T*>(x), rstd, static_cast<const T*>(weight), static_cast<const T*>(dy),
        static_cast<T*>(dx), pw, rows, d);
    check_launch("rms_norm_backward");
    if (pw) sum_partials_kernel<T><<<grid_for(d, 128), 128, 0, stream>>>(pw, blocks, d, static_cast<T*>(dweight));
  });
  check_launch("rms_norm_backward partial sums");
}

}  // namespace vlp::cuda
