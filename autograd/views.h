// Differentiable views and conversions. Views share storage with their input; their backward maps the
// gradient back into the input's shape (expand sums over the broadcast dims, narrow pads with zeros).
#pragma once
#include "runtime/tensor.h"

namespace vlp {

Tensor view(const Tensor& x, Shape shape);      // one -1 entry is inferred; needs a compatible layout
Tensor reshape(const Tensor& x, Shape shape);   // a view when possible, else a contiguous copy
Tensor flatten(const Tensor& x, int64_t start_dim = 0, int64_t end_dim = -1);
Tensor permute(const Tensor& x, const Shape& dims);
Tensor transpose(const Tensor& x, int64_t dim0, int64_t dim1);
Tensor narrow(const Tensor& x, int64_t dim, int64_t start, int64_t length);  // slice [start, start+length)
Tensor select(const Tensor& x, int64_t dim, int64_t index);                  // narrow + squeeze(dim)
Tensor expand(const Tensor& x, const Shape& shape);  // size-1 dims (and new leading dims) broadcast
Tensor squeeze(const Tensor& x, int64_t dim);        // only when that dim has size 1
Tensor unsqueeze(const Tensor& x, int64_t dim);
Tensor contiguous(const Tensor& x);                  // x itself when already contiguous
Tensor to(const Tensor& x, DType dtype);             // gradient converted back to x's dtype
Tensor to(const Tensor& x, Device device);           // gradient copied back to x's device
Tensor clone(const Tensor& x);                       // a contiguous copy that records the identity

// The gradient of a broadcast: sums g over the dims where `shape` was broadcast to g's shape.
Tensor sum_to(const Tensor& g, const Shape& shape);

}  // namespace vlp
