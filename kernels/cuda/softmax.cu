// Reductions and softmax/log_softmax along the middle dim of [outer, n, inner]. With inner == 1 a block
// owns a row (block reductions over the row, coalesced); with inner > 1 a thread owns one (outer, inner)
// column and walks n (adjacent threads read adjacent addresses). Float accumulation, fixed order.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/nn.h"
#include "kernels/cuda/nvtx.h"
#include "kernels/cuda/runtime.h"

namespace vlp::cuda {

namespace {

constexpr int kRowBlock = 256;

template <class T>
__global__ void sum_rows_kernel(const T* x, T* y, int64_t rows, int64_t n) {
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* row = x + r * n;
    float s = 0.f;
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) s += to_float(row[j]);
    s = block_sum(s);
    if (threadIdx.x == 0) y[r] = from_float<T>(s);
  }
}

template <class T>
__global__ void sum_cols_kernel(const T* x, T* y, int64_t outer, int64_t n, int64_t inner) {
  for (int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; c < outer * inner;
       c += int64_t(gridDim.x) * blockDim.x) {
    const int64_t o = c / inner, i = c % inner;
    const T* p = x + o * n * inner + i;
    float s = 0.f;
    for (int64_t j = 0; j < n; ++j) s += to_float(p[j * inner]);
    y[c] = from_float<T>(s);
  }
}

template <class T>
__global__ void softmax_rows_kernel(const T* x, T* y, int64_t rows, int64_t n, bool log) {
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* xr = x + r * n;
    T* yr = y + r * n;
    float m = -INFINITY;
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) m = fmaxf(m, to_float(xr[j]));
    m = block_max(m);
    float s = 0.f;
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) s += expf(to_float(xr[j]) - m);
    s = block_sum(s);
    const float log_s = logf(s), inv_s = 1.f / s;
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
      float v = to_float(xr[j]) - m;
      yr[j] = from_float<T>(log ? v - log_s : expf(v) * inv_s);
    }
  }
}

template <class T>
__global__ void softmax_cols_kernel(const T* x, T* y, int64_t outer, int64_t n, int64_t inner, bool log) {
  for (int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; c < outer * inner;
       c += int64_t(gridDim.x) * blockDim.x) {
    const int64_t o = c / inner, i = c % inner, base = o * n * inner + i;
    float m = -INFINITY;
    for (int64_t j = 0; j < n; ++j) m = fmaxf(m, to_float(x[base + j * inner]));
    float s = 0.f;
    for (int64_t j = 0; j < n; ++j) s += expf(to_float(x[base + j * inner]) - m);
    const float log_s = logf(s), inv_s = 1.f / s;
    for (int64_t j = 0; j < n; ++j) {
      float v = to_float(x[base + j * inner]) - m;
      y[base + j * inner] = from_float<T>(log ? v - log_s : expf(v) * inv_s);
    }
  }
}

// softmax: dx = y (dy - sum(dy y));  log_softmax: dx = dy - exp(y) sum(dy).
template <class T>
__global__ void softmax_backward_rows_kernel(const T* y, const T* dy, T* dx, int64_t rows, int64_t n, bool log) {
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* yr = y + r * n;
    const T* gr = dy + r * n;
    T* dr = dx + r * n;
    float s = 0.f;
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x)
      s += log ? to_float(gr[j]) : to_float(gr[j]) * to_float(yr[j]);
    s = block_sum(s);
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
      float yv = to_float(yr[j]), g = to_float(gr[j]);
      dr[j] = from_float<T>(log ? g - expf(yv) * s : yv * (g - s));
    }
  }
}

template <class T>
__global__ void softmax_backward_cols_kernel(const T* y, const T* dy, T* dx, int64_t outer, int64_t n, int64_t inner,
                                             bool log) {
  for (int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; c < outer * inner;
       c += int64_t(gridDim.x) * blockDim.x) {
    const int64_t o = c / inner, i = c % inner, base = o * n * inner + i;
    float s = 0.f;
    for (int64_t j = 0; j < n; ++j) {
      const int64_t k = base + j * inner;
      s += log ? to_float(dy[k]) : to_float(dy[k]) * to_float(y[k]);
    }
    for (int64_t j = 0; j < n; ++j) {
      const int64_t k = base + j * inner;
      float yv = to_float(y[k]), g = to_float(dy[k]);
      dx[k] = from_float<T>(log ? g - expf(yv) * s : yv * (g - s));
    }
  }
}

template <class Fn>
void by_dtype(EwDType dt, Fn&& fn) {
  if (dt == EwDType::F32) fn(float{});
  else fn(__nv_bfloat16{});
}

unsigned row_grid(int64_t rows) { return unsigned(rows < 65535 * 4 ? (rows < 1 ? 1 : rows) : 65535 * 4); }

}  // namespace

void sum_dim(EwDType dt, const void* x, void* y, int64_t outer, int64_t n, int64_t inner, cudaStream_t stream) {
  if (outer * inner == 0) return;
  by_dtype(dt, [&](auto t) {
    using T = decltype(t);
    if (inner == 1)
      sum_rows_kernel<T><<<row_grid(outer), kRowBlock, 0, stream>>>(static_cast<const T*>(x), static_cast<T*>(y), outer, n);
    else
      sum_cols_kernel<T><<<grid_for(outer * inner, 128), 128, 0, stream>>>(static_cast<const T*>(x),
                                                                           static_cast<T*>(y), outer, n, inner);
  });
  check_launch("sum_dim");
}

void softmax_forward(EwDType dt, const void* x, void* y, int64_t outer, int64_t n, int64_t inner, bool log,
                     cudaStream_t stream) {
  NvtxRange nvtx("vlp::cuda::softmax_forward");
  if (outer * inner * n == 0) return;
  by_dtype(dt, [&](auto t) {
    using T = decltype(t);
    if (inner == 1)
      softmax_rows_kernel<T><<<row_grid(outer), kRowBlock, 0, stream>>>(static_cast<const T*>(x), static_cast<T*>(y),
                                                                         outer, n, log);
    else
      softmax_cols_kernel<T><<<grid_for(outer * inner, 128), 128, 0, stream>>>(
          static_cast<const T*>(x), static_cast<T*>(y), outer, n, inner, log);
  });
  check_launch("softmax_forward");
}

void softmax_backward(EwDType dt, const void* y, const void* dy, void* dx, int64_t outer, int64_t n, int64_t inner,
                      bool log, cudaStream_t stream) {
  NvtxRange nvtx("vlp::cuda::softmax_backward");
  if (outer * inner * n == 0) return;
  by_dtype(dt, [&](auto t) {
    using T = decltype(t);
    if (inner == 1)
      softmax_backward_rows_kernel<T><<<row_grid(outer), kRowBlock, 0, stream>>>(
          static_cast<const T*>(y), static_cast<const T*>(dy), static_cast<T*>(dx), outer, n, log);
    else
      softmax_backward_cols_kernel<T><<<grid_for(outer * inner, 128), 128, 0, stream>>>(
          static_cast<const T*>(y), static_cast<const T*>(dy), static_cast<T*>(dx), outer, n, inner, log);
  });
  check_launch("softmax_backward");
}

}  // namespace vlp::cuda
