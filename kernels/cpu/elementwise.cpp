// Elementwise kernels. Each unary op is a pair of scalar functions (value, derivative); the loops are
// written once and the switch happens outside them, so every loop body is a straight-line function the
// compiler can vectorise.
#include "kernels/cpu/elementwise.h"

#include <algorithm>
#include <cmath>

#include "kernels/cpu/strided.h"

namespace vlp::cpu {

namespace {

constexpr double kSqrt2OverPi = 0.7978845608028654;
constexpr double kInvSqrt2 = 0.7071067811865476;
constexpr double kInvSqrt2Pi = 0.3989422804014327;

template <class T> T sigmoid(T x) { return T(1) / (T(1) + std::exp(-x)); }

template <class T, class F>
void map(const T* x, T* y, int64_t n, F f) {
#pragma omp parallel for simd schedule(static) if (n > 32768)
  for (int64_t i = 0; i < n; ++i) y[i] = f(x[i]);
}

template <class T, class F>
void map2(const T* u, const T* dy, T* dx, int64_t n, F f) {
#pragma omp parallel for simd schedule(static) if (n > 32768)
  for (int64_t i = 0; i < n; ++i) dx[i] = dy[i] * f(u[i]);
}

}  // namespace

bool unary_saves_output(Unary op) {
  switch (op) {
    case Unary::Exp: case Unary::Sqrt: case Unary::Rsqrt: case Unary::Tanh: case Unary::Sigmoid: case Unary::Relu:
      return true;
    default:
      return false;
  }
}

template <class T>
void unary_forward(Unary op, const T* x, T* y, int64_t n, double a_, double b_) {
  const T a = T(a_), b = T(b_);
  switch (op) {
    case Unary::Neg: map(x, y, n, [](T v) { return -v; }); break;
    case Unary::Exp: map(x, y, n, [](T v) { return std::exp(v); }); break;
    case Unary::Log: map(x, y, n, [](T v) { return std::log(v); }); break;
    case Unary::Sqrt: map(x, y, n, [](T v) { return std::sqrt(v); }); break;
    case Unary::Rsqrt: map(x, y, n, [](T v) { return T(1) / std::sqrt(v); }); break;
    case Unary::Abs: map(x, y, n, [](T v) { return std::abs(v); }); break;
    case Unary::Tanh: map(x, y, n, [](T v) { return std::tanh(v); }); break;
    case Unary::Sigmoid: map(x, y, n, [](T v) { return sigmoid(v); }); break;
    case Unary::Relu: map(x, y, n, [](T v) { return v > T(0) ? v : T(0); }); break;
    case Unary::Gelu: map(x, y, n, [](T v) { return T(0.5) * v * (T(1) + std::erf(v * T(kInvSqrt2))); }); break;
    case Unary::GeluTanh:
      map(x, y, n, [](T v) {
        return T(0.5) * v * (T(1) + std::tanh(T(kSqrt2OverPi) * (v + T(0.044715) * v * v * v)));
      });
      break;
    case Unary::QuickGelu: map(x, y, n, [](T v) { return v * sigmoid(T(1.702) * v); }); break;
    case Unary::Silu: map(x, y, n, [](T v) { return v * sigmoid(v); }); break;
    case Unary::Pow: map(x, y, n, [a](T v) { return std::pow(v, a); }); break;
    case Unary::Clamp: map(x, y, n, [a, b](T v) { return std::min(std::max(v, a), b); }); break;
    case Unary::AddScalar: map(x, y, n, [a](T v) { return v + a; }); break;
    case Unary::MulScalar: map(x, y, n, [a](T v) { return v * a; }); break;
    case Unary::RSubScalar: map(x, y, n, [a](T v) { return a - v; }); break;
  }
}

template <class T>
void unary_backward(Unary op, const T* x, const T* y, const T* dy, T* dx, int64_t n, double a_, double b_) {
  const T a = T(a_), b = T(b_);
  switch (op) {
    case Unary::Neg: map2(dy, dy, dx, n, [](T) { return T(-1); }); break;
    case Unary::Exp: map2(y, dy, dx, n, [](T e) { return e; }); break;
    case Unary::Log: map2(x, dy, dx, n, [](T v) { return T(1) / v; }); break;
    case Unary::Sqrt: map2(y, dy, dx, n, [](T s) { return T(0.5) / s; }); break;
    case Unary::Rsqrt: map2(y, dy, dx, n, [](T r) { return T(-0.5) * r * r * r; }); break;
    case Unary::Abs: map2(x, dy, dx, n, [](T v) { return v > T(0) ? T(1) : (v < T(0) ? T(-1) : T(0)); }); break;
    case Unary::Tanh: map2(y, dy, dx, n, [](T t) { return T(1) - t * t; }); break;
    case Unary::Sigmoid: map2(y, dy, dx, n, [](T s) { return s * (T(1) - s); }); break;
    case Unary::Relu: map2(y, dy, dx, n, [](T r) { return r > T(0) ? T(1) : T(0); }); break;
    case Unary::Gelu:
      map2(x, dy, dx, n, [](T v) {
        return T(0.5) * (T(1) + std::erf(v * T(kInvSqrt2))) + v * T(kInvSqrt2Pi) * std::exp(T(-0.5) * v * v);
      });
      break;
    case Unary::GeluTanh:
      map2(x, dy, dx, n, [](T v) {
        T t = std::tanh(T(kSqrt2OverPi) * (v + T(0.044715) * v * v * v));
        return T(0.5) * (T(1) + t) + T(0.5) * v * (T(1) - t * t) * T(kSqrt2OverPi) * (T(1) + T(3 * 0.044715) * v * v);
      });
      break;
    case Unary::QuickGelu:
      map2(x, dy, dx, n, [](T v) {
        T s = sigmoid(T(1.702) * v);
        return s + T(1.702) * v * s * (T(1) - s);
      });
      break;
    case Unary::Silu:
      map2(x, dy, dx, n, [](T v) {
        T s = sigmoid(v);
        return s * (T(1) + v * (T(1) - s));
      });
      break;
    case Unary::Pow: map2(x, dy, dx, n, [a](T v) { return a * std::pow(v, a - T(1)); }); break;
    case Unary::Clamp: map2(x, dy, dx, n, [a, b](T v) { return v >= a && v <= b ? T(1) : T(0); }); break;
    case Unary::AddScalar: map2(dy, dy, dx, n, [](T) { return T(1); }); break;
    case Unary::MulScalar: map2(dy, dy, dx, n, [a](T) { return a; }); break;
    case Unary::RSubScalar: map2(dy, dy, dx, n, [](T) { return T(-1); }); break;
  }
}

template <class T>
void binary(Binary op, const std::vector<int64_t>& shape, T* out, const int64_t* out_strides, const T* a,
            const int64_t* a_strides, const T* b, const int64_t* b_strides, double alpha_) {
  StridedLoop<3> loop(shape, {out_strides, a_strides, b_strides});
  const T alpha = T(alpha_);
  auto run = [&](auto f) {
    loop.run([&](std::array<int64_t, 3> off, std::array<int64_t, 3> st, int64_t n) {
      T* o = out + off[0];
      const T* x = a + off[1];
      const T* y = b + off[2];
      if (st[0] == 1 && st[1] == 1 && st[2] == 1) {
#pragma omp simd
        for (int64_t i = 0; i < n; ++i) o[i] = f(x[i], y[i]);
      } else if (st[0] == 1 && st[1] == 1 && st[2] == 0) {
        const T yv = *y;
#pragma omp simd
        for (int64_t i = 0; i < n; ++i) o[i] = f(x[i], yv);
      } else {
        for (int64_t i = 0; i < n; ++i) o[i * st[0]] = f(x[i * st[1]], y[i * st[2]]);
      }
    });
  };
  switch (op) {
    case Binary::Add: run([](T x, T y) { return x + y; }); break;
    case Binary::Sub: run([](T x, T y) { return x - y; }); break;
    case Binary::Mul: run([](T x, T y) { return x * y; }); break;
    case Binary::Div: run([](T x, T y) { return x / y; }); break;
    case Binary::Axpy: run([alpha](T x, T y) { return x + alpha * y; }); break;
  }
}

#define VLP_INSTANTIATE(T)                                                                                      \
  template void unary_forward<T>(Unary, const T*, T*, int64_t, double, double);                                 \
  template void unary_backward<T>(Unary, const T*, const T*, const T*, T*, int64_t, double, double);            \
  template void binary<T>(Binary, const std::vector<int64_t>&, T*, const int64_t*, const T*, const int64_t*,    \
                          const T*, const int64_t*, double);
VLP_INSTANTIATE(float)
VLP_INSTANTIATE(double)
#undef VLP_INSTANTIATE

}  // namespace vlp::cpu
