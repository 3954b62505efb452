// Elementwise kernels: unary maps with their derivatives, and strided binary ops for broadcasting.
#pragma once
#include <cstdint>
#include <vector>

namespace vlp::cpu {

enum class Unary {
  Neg, Exp, Log, Sqrt, Rsqrt, Abs, Tanh, Sigmoid, Relu, Gelu, GeluTanh, QuickGelu, Silu,
  Pow,        // x^a
  Clamp,      // min(max(x, a), b)
  AddScalar,  // x + a
  MulScalar,  // x * a
  RSubScalar  // a - x
};

// y[i] = f(x[i]) over contiguous arrays; a and b are the op's scalar parameters.
template <class T> void unary_forward(Unary op, const T* x, T* y, int64_t n, double a, double b);
// dx[i] = dy[i] * f'(x[i]). Each op reads x or y (its own output), whichever gives the derivative more
// cheaply (see unary_saves_output); the other pointer may be null.
template <class T> void unary_backward(Unary op, const T* x, const T* y, const T* dy, T* dx, int64_t n, double a,
                                       double b);
// True when the op's derivative is computed from its output y rather than its input x.
bool unary_saves_output(Unary op);

enum class Binary { Add, Sub, Mul, Div, Axpy /* a + alpha*b */ };

// out = a (op) b over one shape with per-operand strides (stride 0 broadcasts). out may alias a.
template <class T>
void binary(Binary op, const std::vector<int64_t>& shape, T* out, const int64_t* out_strides, const T* a,
            const int64_t* a_strides, const T* b, const int64_t* b_strides, double alpha = 1.0);

}  // namespace vlp::cpu
