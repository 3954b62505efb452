// Differentiable matrix products (CPU: OpenBLAS sgemm/dgemm; transposed views are passed to BLAS as
// transposes, not copied).
#pragma once
#include "runtime/tensor.h"

namespace vlp {

// a [..., n, k] @ b [..., k, m] -> [..., n, m]; batch dims broadcast. Both operands at least 2-D.
Tensor matmul(const Tensor& a, const Tensor& b);
// a [batch, n, k] @ b [batch, k, m], no broadcasting.
Tensor bmm(const Tensor& a, const Tensor& b);
// x [..., in] W[out, in]^T + bias[out]. The bias may be undefined. With a frozen W (no grad), the
// backward keeps no copy of x: x is saved only when W requires grad.
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor());
// Kronecker product of two 2-D tensors: [p, q] (x) [r, s] -> [p*r, q*s].
Tensor kron(const Tensor& a, const Tensor& b);

}  // namespace vlp
