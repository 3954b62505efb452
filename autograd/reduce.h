// Differentiable reductions over a set of dims (negative dims allowed; an empty list means all dims).
#pragma once
#include "runtime/tensor.h"

namespace vlp {

Tensor sum(const Tensor& x, const Shape& dims = {}, bool keepdim = false);
Tensor mean(const Tensor& x, const Shape& dims = {}, bool keepdim = false);
// Variance with Bessel's correction (divide by n - correction; correction 1 = unbiased, 0 = population).
Tensor var(const Tensor& x, const Shape& dims = {}, int64_t correction = 1, bool keepdim = false);
// Maximum along one dim; the gradient goes to the first maximal element.
Tensor max(const Tensor& x, int64_t dim, bool keepdim = false);
// Index of the first maximum along dim (I64, not differentiable).
Tensor argmax(const Tensor& x, int64_t dim, bool keepdim = false);

}  // namespace vlp
