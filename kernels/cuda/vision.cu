// Adaptive max-pooling over a channels-last [B, H, W, C] grid (see vision.h). Forward: one thread per
// output element scans its window, consecutive threads on consecutive channels (coalesced reads).
// Backward: one thread per input element gathers from the cells whose windows contain it, so overlapping
// windows that share a maximum add up in a fixed order without atomics; dx needs no separate zeroing.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/nvtx.h"
#include "kernels/cuda/runtime.h"
#include "kernels/cuda/vision.h"

namespace vlp::cuda {

namespace {

// Window [start, end) of output cell i of n over an input of size len (PyTorch's adaptive rule), as
// cpu::adaptive_start / adaptive_end.
__device__ __forceinline__ int64_t window_start(int64_t i, int64_t len, int64_t n) { return (i * len) / n; }
__device__ __forceinline__ int64_t window_end(int64_t i, int64_t len, int64_t n) { return ((i + 1) * len + n - 1) / n; }

template <class T>
__global__ void adaptive_max_pool_kernel(const T* x, T* y, int64_t* argmax, int64_t B, int64_t H, int64_t W, int64_t C,
                                         int64_t oh, int64_t ow) {
  const int64_t total = B * oh * ow * C;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t c = e % C, j = (e / C) % ow, i = (e / (C * ow)) % oh, b = e / (C * ow * oh);
    const int64_t r0 = window_start(i, H, oh), r1 = window_end(i, H, oh);
    const int64_t c0 = window_start(j, W, ow), c1 = window_end(j, W, ow);
    const T* xb = x + b * H * W * C + c;
    float best = to_float(xb[(r0 * W + c0) * C]);
    int64_t at = r0 * W + c0;
    // Strictly greater keeps the first maximum; once a NaN is found it stays.
    for (int64_t r = r0; r < r1 && !isnan(best); ++r)
      for (int64_t s = c0; s < c1; ++s) {
        const float v = to_float(xb[(r * W + s) * C]);
        if (v > best || isnan(v)) {
          best = v, at = r * W + s;
          if (isnan(v)) break;
        }
      }
    y[e] = xb[at * C];  // the element itself: no rounding through float
    argmax[e] = at;
  }
}

template <class T>
__global__ void adaptive_max_pool_backward_kernel(const T* dy, const int64_t* argmax, T* dx, int64_t B, int64_t H,
                                                  int64_t W, int64_t C, int64_t oh, int64_t ow) {
  const int64_t total = B * H * W * C;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t c = e % C, s = (e / C) % W, r = (e / (C * W)) % H, b = e / (C * W * H);
    const int64_t pos = r * W + s;
    // Cells i whose window [start(i), end(i)) contains r: start(i) <= r  <=>  i <= ((r + 1) oh - 1) / H, and
    // end(i) > r  <=>  i >= r oh / H; the same for columns. The window test below keeps this exact.
    const int64_t i0 = (r * oh) / H, i1 = min(oh - 1, ((r + 1) * oh - 1) / H);
    const int64_t j0 = (s * ow) / W, j1 = min(ow - 1, ((s + 1) * ow - 1) / W);
    float sum = 0.f;
    for (int64_t i = i0; i <= i1; ++i) {
      if (r < window_start(i, H, oh) || r >= window_end(i, H, oh)) continue;
      for (int64_t j = j0; j <= j1; ++j) {
        if (s < window_start(j, W, ow) || s >= window_end(j, W, ow)) continue;
        const int64_t cell = ((b * oh + i) * ow + j) * C + c;
        if (argmax[cell] == pos) sum += to_float(dy[cell]);
      }
    }
    dx[e] = from_float<T>(sum);
  }
}

template <class Fn>
void by_dtype(EwDType dt, Fn&& fn) {
  if (dt == EwDType::F32) fn(float{});
  else fn(__nv_bfloat16{});
}

}  // namespace

void adaptive_max_pool_grid(EwDType dt, const void* x, void* y, int64_t* argmax, int64_t B, int64_t H, int64_t W,
                            int64_t C, int64_t oh, int64_t ow, cudaStream_t stream) {
  NvtxRange nvtx("vlp::cuda::adaptive_max_pool_grid");
  const int64_t total = B * oh * ow * C;
  if (total == 0 || H == 0 || W == 0) return;
  by_dtype(dt, [&](auto t) {
    using T = decltype(t);
    adaptive_max_pool_kernel<T><<<grid_for(total, 256), 256, 0, stream>>>(static_cast<const T*>(x), static_cast<T*>(y),
                                                                          argmax, B, H, W, C, oh, ow);
  });
  check_launch("adaptive_max_pool_grid");
}

void adaptive_max_pool_grid_backward(EwDType dt, const void* dy, const int64_t* argmax, void* dx, int64_t B,
                                     int64_t H, int64_t W, int64_t C, int64_t oh, int64_t ow, cudaStream_t stream) {
  NvtxRange nvtx("vlp::cuda::adaptive_max_pool_grid_backward");
  const int64_t total = B * H * W * C;
  if (total == 0) return;
  by_dtype(dt, [&](auto t) {
    using T = decltype(t);
    adaptive_max_pool_backward_kernel<T><<<grid_for(total, 256), 256, 0, stream>>>(
        static_cast<const T*>(dy), argmax, static_cast<T*>(dx), B, H, W, C, oh, ow);
  });
  check_launch("adaptive_max_pool_grid_backward");
}

}  // namespace vlp::cuda
