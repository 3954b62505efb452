// Differentiable reductions over kernels/cpu/reduce. A reduction over several dims reduces each run of
// adjacent dims in turn, each run being the middle dim of an [outer, n, inner] view.
#include "autograd/reduce.h"

#include <algorithm>

#include "autograd/dispatch.h"
#include "autograd/elementwise.h"
#include "autograd/graph.h"
#include "autograd/kernel_calls.h"
#include "autograd/views.h"
#include "kernels/cpu/reduce.h"

namespace vlp {

namespace {

// Sorted, unique, non-negative dims; an empty list means every dim.
Shape normalize_dims(const Tensor& x, const Shape& dims) {
  Shape out;
  if (dims.empty()) {
    for (int64_t d = 0; d < x.dim(); ++d) out.push_back(d);
    return out;
  }
  for (int64_t d : dims) out.push_back(x.wrap_dim(d));
  std::sort(out.begin(), out.end());
  VLP_CHECK(std::adjacent_find(out.begin(), out.end()) == out.end(), "reduction dims repeat: ", shape_str(dims));
  return out;
}

Shape kept_shape(const Shape& shape, const Shape& dims) {  // reduced dims set to 1
  Shape out = shape;
  for (int64_t d : dims) out[size_t(d)] = 1;
  return out;
}

Shape dropped_shape(const Shape& shape, const Shape& dims) {  // reduced dims removed
  Shape out;
  for (size_t d = 0; d < shape.size(); ++d)
    if (!std::binary_search(dims.begin(), dims.end(), int64_t(d))) out.push_back(shape[d]);
  return out;
}

// [outer, n, inner] sizes for reducing dims [first, last] of shape.
void split_sizes(const Shape& shape, int64_t first, int64_t last, int64_t* outer, int64_t* n, int64_t* inner) {
  *outer = *n = *inner = 1;
  for (int64_t d = 0; d < int64_t(shape.size()); ++d)
    (d < first ? *outer : d <= last ? *n : *inner) *= shape[size_t(d)];
}

// Sum of a contiguous compute-dtype tensor over sorted dims, in the keepdim shape.
Tensor sum_kernel(Tensor x, const Shape& dims) {
  if (dims.empty()) {  // a 0-dim tensor: the sum is a copy
    Tensor y = empty(x.shape(), x.dtype(), x.device());
    copy_(y, x);
    return y;
  }
  Shape shape = x.shape();
  for (int64_t i = int64_t(dims.size()) - 1; i >= 0;) {
    int64_t last = dims[size_t(i)], first = last;
    while (i > 0 && dims[size_t(i - 1)] == first - 1) first = dims[size_t(--i)];
    --i;
    int64_t outer, n, inner;
    split_sizes(shape, first, last, &outer, &n, &inner);
    for (int64_t d = first; d <= last; ++d) shape[size_t(d)] = 1;
    Tensor y = empty(shape, x.dtype(), x.device());
    call_sum_dim("sum", x, y, outer, n, inner);
    x = y;
  }
  return x;
}

}  // namespace

Tensor sum(const Tensor& x, const Shape& dims_in, bool keepdim) {
  check_operands("sum", {x}, true, /*cuda_ok=*/true);
  VLP_CHECK(is_floating(x.dtype()), "sum: needs a floating tensor, got ", x.dtype(), "; convert it with vlp::to");
  Shape dims = normalize_dims(x, dims_in);
  Tensor y = sum_kernel(convert(x, compute_dtype(x.dtype(), x.device())), dims);
  Shape out_shape = keepdim ? kept_shape(x.shape(), dims) : dropped_shape(x.shape(), dims);
  y = as_strided(y, out_shape, contiguous_strides(out_shape), 0);
  if (y.dtype() != x.dtype()) y = convert(y, x.dtype());
  if (Node* n = record("sum", {x}, {&y})) {
    Shape in_shape = x.shape(), keep = kept_shape(x.shape(), dims);
    n->backward = [in_shape, keep](Node&, const Grads& g) -> Grads {
      return {expand(reshape(g[0], keep), in_shape)};
    };
  }
  return y;
}

Tensor mean(const Tensor& x, const Shape& dims_in, bool keepdim) {
  Shape dims = normalize_dims(x, dims_in);
  int64_t count = 1;
  for (int64_t d : dims) count *= x.size(d);
  VLP_CHECK(count > 0, "mean over an empty set of elements (shape ", shape_str(x.shape()), ")");
  return mul(sum(x, dims, keepdim), 1.0 / double(count));
}

Tensor var(const Tensor& x, const Shape& dims_in, int64_t correction, bool keepdim) {
  Shape dims = normalize_dims(x, dims_in);
  int64_t count = 1;
  for (int64_t d : dims) count *= x.size(d);
  VLP_CHECK(count - correction > 0, "var: ", count, " elements with correction ", correction);
  Tensor centered = sub(x, mean(x, dims, /*keepdim=*/true));
  return mul(sum(mul(centered, centered), dims, keepdim), 1.0 / double(count - correction));
}

namespace {
// Max along dim of x: values and I64 indices in the keepdim shape.
void max_kernel(const Tensor& xc, int64_t dim, Tensor* values, Tensor* indices) {
  int64_t outer, n, inner;
  split_sizes(xc.shape(), dim, dim, &outer, &n, &inner);
  VLP_CHECK(n > 0, "max/argmax over an empty dim ", dim, " of shape ", shape_str(xc.shape()));
  Shape keep = kept_shape(xc.shape(), {dim});
  *values = empty(keep, xc.dtype(), xc.device());
  *indices = empty(keep, DType::I64, xc.device());
  call_max_dim("max", xc, *values, *indices, outer, n, inner);
}
}  // namespace

Tensor max(const Tensor& x, int64_t dim, bool keepdim) {
  check_operands("max", {x}, true, /*cuda_ok=*/true);
  dim = x.wrap_dim(dim);
  Tensor xc = convert(x, compute_dtype(x.dtype(), x.device()));
  Tensor values, indices;
  max_kernel(xc, dim, &values, &indices);
  Shape out_shape = keepdim ? values.shape() : dropped_shape(x.shape(), {dim});
  Tensor y = as_strided(values, out_shape, contiguous_strides(out_shape), 0);
  if (y.dtype() != x.dtype()) y = convert(y, x.dtype());
  if (Node* n = record("max", {x}, {&y})) {
    n->save({indices});
    Shape in_shape = x.shape();
    n->backward = [in_shape, dim](Node& n, const Grads& g) -> Grads {
      Tensor gc = convert(g[0], compute_dtype(g[0].dtype(), g[0].device()));
      Tensor dx = zeros(in_shape, gc.dtype(), gc.device());
      int64_t outer, len, inner;
      split_sizes(in_shape, dim, dim, &outer, &len, &inner);
      call_scatter_dim("max", gc, n.saved[0], dx, outer, len, inner);
      return {dx};
    };
  }
  return y;
}

Tensor argmax(const Tensor& x, int64_t dim, bool keepdim) {
  check_operands("argmax", {x}, true, /*cuda_ok=*/true);
  dim = x.wrap_dim(dim);
  Tensor values, indices;
  max_kernel(convert(x, compute_dtype(x.dtype(), x.device())), dim, &values, &indices);
  Shape out_shape = keepdim ? indices.shape() : dropped_shape(x.shape(), {dim});
  return as_strided(indices, out_shape, contiguous_strides(out_shape), 0);
}

}  // namespace vlp
