// Differentiable elementwise ops. Binary ops broadcast (numpy rules); both operands must share dtype and
// device. The in-place ops at the end are for optimizers and gradient handling: they record nothing
// and refuse tensors that require grad while grad mode is on.
#pragma once
#include "runtime/tensor.h"

namespace vlp {

Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);
Tensor add(const Tensor& a, double s);
Tensor mul(const Tensor& a, double s);
Tensor rsub(double s, const Tensor& a);  // s - a
Tensor neg(const Tensor& x);
Tensor pow(const Tensor& x, double exponent);
Tensor exp(const Tensor& x);
Tensor log(const Tensor& x);
Tensor sqrt(const Tensor& x);
Tensor rsqrt(const Tensor& x);
Tensor abs(const Tensor& x);  // gradient sign(x), 0 at 0
Tensor clamp(const Tensor& x, double lo, double hi);  // gradient passes where lo <= x <= hi
Tensor tanh(const Tensor& x);
Tensor sigmoid(const Tensor& x);
Tensor relu(const Tensor& x);
Tensor gelu(const Tensor& x);       // exact: x * Phi(x), erf form (BERT, ViT, BART "gelu")
Tensor gelu_tanh(const Tensor& x);  // tanh approximation ("gelu_new", GPT-2, T5 v1.1)
Tensor quick_gelu(const Tensor& x); // x * sigmoid(1.702 x) (CLIP)
Tensor silu(const Tensor& x);

inline Tensor operator+(const Tensor& a, const Tensor& b) { return add(a, b); }
inline Tensor operator-(const Tensor& a, const Tensor& b) { return sub(a, b); }
inline Tensor operator*(const Tensor& a, const Tensor& b) { return mul(a, b); }
inline Tensor operator/(const Tensor& a, const Tensor& b) { return div(a, b); }
inline Tensor operator+(const Tensor& a, double s) { return add(a, s); }
inline Tensor operator-(const Tensor& a, double s) { return add(a, -s); }
inline Tensor operator*(const Tensor& a, double s) { return mul(a, s); }
inline Tensor operator*(double s, const Tensor& a) { return mul(a, s); }
inline Tensor operator/(const Tensor& a, double s) { return mul(a, 1.0 / s); }
inline Tensor operator-(const Tensor& a) { return neg(a); }

// ---- in-place, not recorded ----
void add_(const Tensor& dst, const Tensor& src, double alpha = 1.0);  // dst += alpha * src (src broadcasts)
void mul_(const Tensor& dst, double s);                                // dst *= s

}  // namespace vlp
