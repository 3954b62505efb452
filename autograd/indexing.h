// Differentiable joining, splitting and indexing.
#pragma once
#include <vector>

#include "runtime/tensor.h"

namespace vlp {

Tensor concat(const std::vector<Tensor>& xs, int64_t dim);
std::vector<Tensor> split(const Tensor& x, const Shape& sizes, int64_t dim);  // sizes sum to x.size(dim)
Tensor stack(const std::vector<Tensor>& xs, int64_t dim);
// Rows of x along dim picked by a 1-D I64/I32 index (repeats allowed; backward sums them).
Tensor index_select(const Tensor& x, int64_t dim, const Tensor& index);
// out[i][j][k] = x[i][index[i][j][k]][k] for dim 1 (torch.gather semantics); index has x's rank.
Tensor gather(const Tensor& x, int64_t dim, const Tensor& index);
// A copy of x with src added at the positions index names along dim (torch.scatter_add semantics).
Tensor scatter_add(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& src);
// x where mask is false, value where true; mask (Bool/U8/I32/I64) broadcasts to x.
Tensor masked_fill(const Tensor& x, const Tensor& mask, double value);
// a where cond is true, else b; all three broadcast together.
Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b);

}  // namespace vlp
