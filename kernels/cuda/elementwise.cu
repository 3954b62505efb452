// Elementwise unary maps (forward and derivative) and broadcasting binary ops. Each kernel takes the op
// as an argument and switches on it (uniform across the grid): one instantiation per storage type.
// Contiguous operands are read and written 16 bytes at a time (4 floats or 8 bf16) when aligned.
#include <stdexcept>
#include <string>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/elementwise.h"
#include "kernels/cuda/runtime.h"

namespace vlp::cuda {

using cpu::Binary;
using cpu::Unary;

namespace {

constexpr float kInvSqrt2 = 0.70710678118654752f;
constexpr float kInvSqrt2Pi = 0.39894228040143268f;
constexpr float kSqrt2OverPi = 0.79788456080286536f;

__device__ __forceinline__ float sigmoidf(float v) { return 1.f / (1.f + expf(-v)); }

__device__ __forceinline__ float unary_f(Unary op, float v, float a, float b) {
  switch (op) {
    case Unary::Neg: return -v;
    case Unary::Exp: return expf(v);
    case Unary::Log: return logf(v);
    case Unary::Sqrt: return sqrtf(v);
    case Unary::Rsqrt: return 1.f / sqrtf(v);
    case Unary::Abs: return fabsf(v);
    case Unary::Tanh: return tanhf(v);
    case Unary::Sigmoid: return sigmoidf(v);
    case Unary::Relu: return v > 0.f ? v : 0.f;
    case Unary::Gelu: return 0.5f * v * (1.f + erff(v * kInvSqrt2));
    case Unary::GeluTanh: return 0.5f * v * (1.f + tanhf(kSqrt2OverPi * (v + 0.044715f * v * v * v)));
    case Unary::QuickGelu: return v * sigmoidf(1.702f * v);
    case Unary::Silu: return v * sigmoidf(v);
    case Unary::Pow: return powf(v, a);
    case Unary::Clamp: {  // std::min(std::max(v, a), b) as the CPU: a NaN stays NaN (fmaxf would drop it)
      const float lo = v < a ? a : v;
      return b < lo ? b : lo;
    }
    case Unary::AddScalar: return v + a;
    case Unary::MulScalar: return v * a;
    case Unary::RSubScalar: return a - v;
  }
  return v;
}

// f'(.) evaluated from s, which is x or y according to cpu::unary_saves_output.
__device__ __forceinline__ float unary_df(Unary op, float s, float a, float b) {
  switch (op) {
    case Unary::Neg: return -1.f;
    case Unary::Exp: return s;
    case Unary::Log: return 1.f / s;
    case Unary::Sqrt: return 0.5f / s;
    case Unary::Rsqrt: return -0.5f * s * s * s;
    case Unary::Abs: return s > 0.f ? 1.f : (s < 0.f ? -1.f : 0.f);
    case Unary::Tanh: return 1.f - s * s;
    case Unary::Sigmoid: return s * (1.f - s);
    case Unary::Relu: return s > 0.f ? 1.f : 0.f;
    case Unary::Gelu: return 0.5f * (1.f + erff(s * kInvSqrt2)) + s * kInvSqrt2Pi * expf(-0.5f * s * s);
    case Unary::GeluTanh: {
      float t = tanhf(kSqrt2OverPi * (s + 0.044715f * s * s * s));
      return 0.5f * (1.f + t) + 0.5f * s * (1.f - t * t) * kSqrt2OverPi * (1.f + 3.f * 0.044715f * s * s);
    }
    case Unary::QuickGelu: {
      float g = sigmoidf(1.702f * s);
      return g + 1.702f * s * g * (1.f - g);
    }
    case Unary::Silu: {
      float g = sigmoidf(s);
      return g * (1.f + s * (1.f - g));
    }
    case Unary::Pow: return a * powf(s, a - 1.f);
    case Unary::Clamp: return s >= a && s <= b ? 1.f : 0.f;
    case Unary::AddScalar: return 1.f;
    case Unary::MulScalar: return a;
    case Unary::RSubScalar: return -1.f;
  }
  return 0.f;
}

__device__ __forceinline__ float binary_f(Binary op, float x, float y, float alpha) {
  switch (op) {
    case Binary::Add: return x + y;
    case Binary::Sub: return x - y;
    case Binary::Mul: return x * y;
    case Binary::Div: return x / y;
    case Binary::Axpy: return x + alpha * y;
  }
  return x;
}

// Thread t handles elements [t*V, t*V + V): one vector access when aligned and complete, else scalars.
template <class T>
__global__ void unary_forward_kernel(Unary op, const T* x, T* y, int64_t n, float a, float b, bool vec) {
  constexpr int V = Vec16<T>::kVec;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t * V < n; t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i0 = t * V;
    if (vec && i0 + V <= n) {
      Vec16<T> in = reinterpret_cast<const Vec16<T>*>(x)[t], out;
#pragma unroll
      for (int j = 0; j < V; ++j) out.v[j] = from_float<T>(unary_f(op, to_float(in.v[j]), a, b));
      reinterpret_cast<Vec16<T>*>(y)[t] = out;
    } else {
      for (int64_t i = i0; i < i0 + V && i < n; ++i) y[i] = from_float<T>(unary_f(op, to_float(x[i]), a, b));
    }
  }
}

template <class T>
__global__ void unary_backward_kernel(Unary op, const T* s, const T* dy, T* dx, int64_t n, float a, float b, bool vec) {
  constexpr int V = Vec16<T>::kVec;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t * V < n; t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i0 = t * V;
    if (vec && i0 + V <= n) {
      Vec16<T> sv = reinterpret_cast<const Vec16<T>*>(s)[t], g = reinterpret_cast<const Vec16<T>*>(dy)[t], out;
#pragma unroll
      for (int j = 0; j < V; ++j) out.v[j] = from_float<T>(to_float(g.v[j]) * unary_df(op, to_float(sv.v[j]), a, b));
      reinterpret_cast<Vec16<T>*>(dx)[t] = out;
    } else {
      for (int64_t i = i0; i < i0 + V && i < n; ++i)
        dx[i] = from_float<T>(to_float(dy[i]) * unary_df(op, to_float(s[i]), a, b));
    }
  }
}

template <class T>
__global__ void binary_contiguous_kernel(Binary op, T* out, const T* x, const T* y, int64_t n, float alpha, bool vec) {
  constexpr int V = Vec16<T>::kVec;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t * V < n; t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i0 = t * V;
    if (vec && i0 + V <= n) {
      Vec16<T> xv = reinterpret_cast<const Vec16<T>*>(x)[t], yv = reinterpret_cast<const Vec16<T>*>(y)[t], o;
#pragma unroll
      for (int j = 0; j < V; ++j) o.v[j] = from_float<T>(binary_f(op, to_float(xv.v[j]), to_float(yv.v[j]), alpha));
      reinterpret_cast<Vec16<T>*>(out)[t] = o;
    } else {
      for (int64_t i = i0; i < i0 + V && i < n; ++i)
        out[i] = from_float<T>(binary_f(op, to_float(x[i]), to_float(y[i]), alpha));
    }
  }
}

constexpr int kMaxDims = 8;
struct Layout3 {
  int ndim;
  int64_t size[kMaxDims];
  int64_t stride[3][kMaxDims];
};

template <class T>
__global__ void binary_strided_kernel(Binary op, Layout3 L, T* out, const T* x, const T* y, int64_t n, float alpha) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t rest = i, o0 = 0, o1 = 0, o2 = 0;
    for (int d = L.ndim - 1; d >= 0; --d) {
      int64_t idx = rest % L.size[d];
      rest /= L.size[d];
      o0 += idx * L.stride[0][d];
      o1 += idx * L.stride[1][d];
      o2 += idx * L.stride[2][d];
    }
    out[o0] = from_float<T>(binary_f(op, to_float(x[o1]), to_float(y[o2]), alpha));
  }
}

Layout3 make_layout3(const std::vector<int64_t>& shape, const int64_t* s0, const int64_t* s1, const int64_t* s2,
                     int64_t* numel) {
  Layout3 L{};
  int n = 0;
  *numel = 1;
  const int64_t* in[3] = {s0, s1, s2};
  for (size_t d = 0; d < shape.size(); ++d) {
    *numel *= shape[d];
    if (shape[d] == 1) continue;
    bool merge = n > 0;
    for (int k = 0; k < 3 && merge; ++k) merge = L.stride[k][n - 1] == in[k][d] * shape[d];
    if (merge) {
      L.size[n - 1] *= shape[d];
      for (int k = 0; k < 3; ++k) L.stride[k][n - 1] = in[k][d];
      continue;
    }
    if (n == kMaxDims)
      throw std::runtime_error("cuda binary: more than 8 non-mergeable dims in shape of rank " +
                               std::to_string(shape.size()));
    L.size[n] = shape[d];
    for (int k = 0; k < 3; ++k) L.stride[k][n] = in[k][d];
    ++n;
  }
  L.ndim = n;
  return L;
}

// where: four operands (out, cond, a, b), dims of size 1 dropped, no merging (masks are small-rank).
struct Layout4 {
  int ndim;
  int64_t size[kMaxDims];
  int64_t stride[4][kMaxDims];
};

template <class T>
__global__ void where_kernel(Layout4 L, T* out, const bool* cond, const T* a, const T* b, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t rest = i, o[4] = {0, 0, 0, 0};
    for (int d = L.ndim - 1; d >= 0; --d) {
      const int64_t idx = rest % L.size[d];
      rest /= L.size[d];
#pragma unroll
      for (int k = 0; k < 4; ++k) o[k] += idx * L.stride[k][d];
    }
    out[o[0]] = cond[o[1]] ? a[o[2]] : b[o[3]];
  }
}

template <class Fn>
void by_dtype(EwDType dt, Fn&& fn) {
  if (dt == EwDType::F32) fn(float{});
  else fn(__nv_bfloat16{});
}

constexpr int kBlock = 256;

}  // namespace

void unary_forward(EwDType dt, Unary op, const void* x, void* y, int64_t n, double a, double b, cudaStream_t stream) {
  if (n == 0) return;
  by_dtype(dt, [&](auto t) {
    using T = decltype(t);
    const bool vec = aligned16(x) && aligned16(y);
    const int64_t threads = (n + Vec16<T>::kVec - 1) / Vec16<T>::kVec;
    unary_forward_kernel<T><<<grid_for(threads, kBlock), kBlock, 0, stream>>>(
        op, static_cast<const T*>(x), static_cast<T*>(y), n, float(a), float(b), vec);
  });
  check_launch("unary_forward");
}

void unary_backward(EwDType dt, Unary op, const void* x, const void* y, const void* dy, void* dx, int64_t n, double a,
                    double b, cudaStream_t stream) {
  if (n == 0) return;
  const bool constant = op == Unary::Neg || op == Unary::AddScalar || op == Unary::MulScalar || op == Unary::RSubScalar;
  const void* s = constant ? dy : (cpu::unary_saves_output(op) ? y : x);
  if (!s) throw std::runtime_error("cuda unary_backward: the saved input or output is null");
  by_dtype(dt, [&](auto t) {
    using T = decltype(t);
    const bool vec = aligned16(s) && aligned16(dy) && aligned16(dx);
    const int64_t threads = (n + Vec16<T>::kVec - 1) / Vec16<T>::kVec;
    unary_backward_kernel<T><<<grid_for(threads, kBlock), kBlock, 0, stream>>>(
        op, static_cast<const T*>(s), static_cast<const T*>(dy), static_cast<T*>(dx), n, float(a), float(b), vec);
  });
  check_launch("unary_backward");
}

void binary(EwDType dt, Binary op, const std::vector<int64_t>& shape, void* out, const int64_t* out_strides,
            const void* a, const int64_t* a_strides, const void* b, const int64_t* b_strides, double alpha,
            cudaStream_t stream) {
  int64_t n = 0;
  Layout3 L = make_layout3(shape, out_strides, a_strides, b_strides, &n);
  if (n == 0) return;
  const bool dense = L.ndim == 0 || (L.ndim == 1 && L.stride[0][0] == 1 && L.stride[1][0] == 1 && L.stride[2][0] == 1);
  by_dtype(dt, [&](auto t) {
    using T = decltype(t);
    if (dense) {
      const bool vec = aligned16(out) && aligned16(a) && aligned16(b);
      const int64_t threads = (n + Vec16<T>::kVec - 1) / Vec16<T>::kVec;
      binary_contiguous_kernel<T><<<grid_for(threads, kBlock), kBlock, 0, stream>>>(
          op, static_cast<T*>(out), static_cast<const T*>(a), static_cast<const T*>(b), n, float(alpha), vec);
    } else {
      binary_strided_kernel<T><<<grid_for(n, kBlock), kBlock, 0, stream>>>(
          op, L, static_cast<T*>(out), static_cast<const T*>(a), static_cast<const T*>(b), n, float(alpha));
    }
  });
  check_launch("binary");
}

void where(EwDType dt, const std::vector<int64_t>& shape, void* out, const int64_t* out_strides, const bool* cond,
           const int64_t* cond_strides, const void* a, const int64_t* a_strides, const void* b,
           const int64_t* b_strides, cudaStream_t stream) {
  Layout4 L{};
  int64_t n = 1;
  const int64_t* in[4] = {out_strides, cond_strides, a_strides, b_strides};
  for (size_t d = 0; d < shape.size(); ++d) {
    n *= shape[d];
    if (shape[d] == 1) continue;
    if (L.ndim == kMaxDims)
      throw std::runtime_error("cuda where: more than 8 dims of size > 1 in shape of rank " +
                               std::to_string(shape.size()));
    L.size[L.ndim] = shape[d];
    for (int k = 0; k < 4; ++k) L.stride[k][L.ndim] = in[k][d];
    ++L.ndim;
  }
  if (n == 0) return;
  by_dtype(dt, [&](auto t) {
    using T = decltype(t);
    where_kernel<T><<<grid_for(n, kBlock), kBlock, 0, stream>>>(L, static_cast<T*>(out), cond,
                                                                static_cast<const T*>(a), static_cast<const T*>(b), n);
  });
  check_launch("where");
}

}  // namespace vlp::cuda
