// Differentiable views: each builds new (shape, strides, offset) over the same storage with as_strided,
// and its backward maps the gradient back to the input's shape.
#include "autograd/views.h"

#include <numeric>

#include "autograd/graph.h"
#include "autograd/reduce.h"

namespace vlp {

namespace {

Shape infer_shape(const Tensor& x, Shape shape) {
  int64_t known = 1, infer_at = -1;
  for (size_t d = 0; d < shape.size(); ++d) {
    if (shape[d] == -1) {
      VLP_CHECK(infer_at < 0, "view/reshape: more than one -1 in ", shape_str(shape));
      infer_at = int64_t(d);
    } else {
      VLP_CHECK(shape[d] >= 0, "view/reshape: invalid size ", shape[d], " in ", shape_str(shape));
      known *= shape[d];
    }
  }
  if (infer_at >= 0) {
    VLP_CHECK(known != 0 && x.numel() % known == 0, "view/reshape: cannot infer -1 in ", shape_str(shape),
              " for ", x.numel(), " elements");
    shape[size_t(infer_at)] = x.numel() / known;
  }
  VLP_CHECK(shape_numel(shape) == x.numel(), "view/reshape: shape ", shape_str(shape), " has ",
            shape_numel(shape), " elements but the tensor of shape ", shape_str(x.shape()), " has ", x.numel());
  return shape;
}

// Strides that give `shape` over x's memory without copying, or false when x's layout cannot be viewed
// that way (PyTorch's rule: each run of dims that are contiguous with each other is split or merged).
bool view_strides(const Tensor& x, const Shape& shape, Shape* strides) {
  if (x.dim() == 0 || x.numel() == 0) {
    *strides = contiguous_strides(shape);
    return true;
  }
  strides->assign(shape.size(), 1);
  int64_t view_d = int64_t(shape.size()) - 1;
  int64_t chunk_stride = x.strides().back();
  int64_t tensor_numel = 1, view_numel = 1;
  for (int64_t d = x.dim() - 1; d >= 0; --d) {
    tensor_numel *= x.size(d);
    bool chunk_ends = d == 0 || (x.size(d - 1) != 1 && x.stride(d - 1) != tensor_numel * chunk_stride);
    if (!chunk_ends) continue;
    while (view_d >= 0 && (view_numel < tensor_numel || shape[size_t(view_d)] == 1)) {
      (*strides)[size_t(view_d)] = view_numel * chunk_stride;
      view_numel *= shape[size_t(view_d)];
      --view_d;
    }
    if (view_numel != tensor_numel) return false;
    if (d > 0) {
      chunk_stride = x.stride(d - 1);
      tensor_numel = view_numel = 1;
    }
  }
  return view_d == -1;
}

// Records a view op whose backward reshapes the gradient to the input's shape.
Tensor reshaped_view(const char* name, const Tensor& x, const Shape& shape, const Shape& strides) {
  Tensor y = as_strided(x, shape, strides, x.offset());
  if (Node* n = record(name, {x}, {&y})) {
    Shape in_shape = x.shape();
    n->backward = [in_shape](Node&, const Grads& g) -> Grads { return {reshape(g[0], in_shape)}; };
  }
  return y;
}

}  // namespace

Tensor view(const Tensor& x, Shape shape) {
  shape = infer_shape(x, std::move(shape));
  Shape strides;
  VLP_CHECK(view_strides(x, shape, &strides), "view: a tensor of shape ", shape_str(x.shape()), " and strides ",
            shape_str(x.strides()), " cannot be viewed as ", shape_str(shape), " without a copy; use reshape");
  return reshaped_view("view", x, shape, strides);
}

Tensor reshape(const Tensor& x, Shape shape) {
  shape = infer_shape(x, std::move(shape));
  Shape strides;
  if (view_strides(x, shape, &strides)) return reshaped_view("reshape", x, shape, strides);
  Tensor c = contiguous(x);
  return reshaped_view("reshape", c, shape, contiguous_strides(shape));
}

Tensor flatten(const Tensor& x, int64_t start_dim, int64_t end_dim) {
  if (x.dim() == 0) return reshape(x, {1});
  start_dim = x.wrap_dim(start_dim);
  end_dim = x.wrap_dim(end_dim);
  VLP_CHECK(start_dim <= end_dim, "flatten: start_dim ", start_dim, " after end_dim ", end_dim);
  Shape shape(x.shape().begin(), x.shape().begin() + start_dim);
  int64_t merged = 1;
  for (int64_t d = start_dim; d <= end_dim; ++d) merged *= x.size(d);
  shape.push_back(merged);
  shape.insert(shape.end(), x.shape().begin() + end_dim + 1, x.shape().end());
  return reshape(x, shape);
}

Tensor permute(const Tensor& x, const Shape& dims) {
  VLP_CHECK(int64_t(dims.size()) == x.dim(), "permute: ", dims.size(), " dims given for a tensor of shape ",
            shape_str(x.shape()));
  Shape shape(dims.size()), strides(dims.size()), inverse(dims.size());
  std::vector<bool> seen(dims.size(), false);
  for (size_t i = 0; i < dims.size(); ++i) {
    int64_t d = x.wrap_dim(dims[i]);
    VLP_CHECK(!seen[size_t(d)], "permute: dim ", d, " repeated in ", shape_str(dims));
    seen[size_t(d)] = true;
    shape[i] = x.size(d);
    strides[i] = x.stride(d);
    inverse[size_t(d)] = int64_t(i);
  }
  Tensor y = as_strided(x, shape, strides, x.offset());
  if (Node* n = record("permute", {x}, {&y}))
    n->backward = [inverse](Node&, const Grads& g) -> Grads { return {permute(g[0], inverse)}; };
  return y;
}

Tensor transpose(const Tensor& x, int64_t dim0, int64_t dim1) {
  Shape dims(size_t(x.dim()));
  std::iota(dims.begin(), dims.end(), 0);
  std::swap(dims[size_t(x.wrap_dim(dim0))], dims[size_t(x.wrap_dim(dim1))]);
  return permute(x, dims);
}

Tensor narrow(const Tensor& x, int64_t dim, int64_t start, int64_t length) {
  dim = x.wrap_dim(dim);
  if (start < 0) start += x.size(dim);
  VLP_CHECK(start >= 0 && length >= 0 && start + length <= x.size(dim), "narrow: [", start, ", ",
            start + length, ") is outside dim ", dim, " of size ", x.size(dim));
  Shape shape = x.shape();
  shape[size_t(dim)] = length;
  Tensor y = as_strided(x, shape, x.strides(), x.offset() + start * x.stride(dim));
  if (Node* n = record("narrow", {x}, {&y})) {
    Shape in_shape = x.shape();
    n->backward = [in_shape, dim, start](Node&, const Grads& g) -> Grads {
      Tensor dx = zeros(in_shape, g[0].dtype(), g[0].device());
      copy_(as_strided(dx, g[0].shape(), dx.strides(), start * dx.stride(dim)), g[0]);
      return {dx};
    };
  }
  return y;
}

Tensor select(const Tensor& x, int64_t dim, int64_t index) {
  dim = x.wrap_dim(dim);
  if (index < 0) index += x.size(dim);
  return squeeze(narrow(x, dim, index, 1), dim);
}

Tensor expand(const Tensor& x, const Shape& shape) {
  VLP_CHECK(int64_t(shape.size()) >= x.dim(), "expand: shape ", shape_str(shape), " has fewer dims than ",
            shape_str(x.shape()));
  size_t lead = shape.size() - size_t(x.dim());
  Shape out_shape(shape.size()), strides(shape.size(), 0);
  for (size_t d = 0; d < shape.size(); ++d) {
    if (d < lead) {
      VLP_CHECK(shape[d] >= 0, "expand: new leading dim ", d, " must have a size, got ", shape[d]);
      out_shape[d] = shape[d];
      continue;
    }
    int64_t have = x.size(int64_t(d - lead));
    int64_t want = shape[d] == -1 ? have : shape[d];
    VLP_CHECK(have == want || have == 1, "expand: cannot expand shape ", shape_str(x.shape()), " to ",
              shape_str(shape));
    out_shape[d] = want;
    strides[d] = have == want ? x.stride(int64_t(d - lead)) : 0;
  }
  Tensor y = as_strided(x, out_shape, strides, x.offset());
  if (Node* n = record("expand", {x}, {&y})) {
    Shape in_shape = x.shape();
    n->backward = [in_shape](Node&, const Grads& g) -> Grads { return {sum_to(g[0], in_shape)}; };
  }
  return y;
}

Tensor squeeze(const Tensor& x, int64_t dim) {
  dim = x.wrap_dim(dim);
  VLP_CHECK(x.size(dim) == 1, "squeeze: dim ", dim, " of shape ", shape_str(x.shape()), " is not 1");
  Shape shape = x.shape(), strides = x.strides();
  shape.erase(shape.begin() + dim);
  strides.erase(strides.begin() + dim);
  return reshaped_view("squeeze", x, shape, strides);
}

Tensor unsqueeze(const Tensor& x, int64_t dim) {
  VLP_CHECK(dim >= -x.dim() - 1 && dim <= x.dim(), "unsqueeze: dim ", dim, " out of range for shape ",
            shape_str(x.shape()));
  if (dim < 0) dim += x.dim() + 1;
  Shape shape = x.shape(), strides = x.strides();
  int64_t stride = dim < x.dim() ? x.stride(dim) * x.size(dim) : 1;
  shape.insert(shape.begin() + dim, 1);
  strides.insert(strides.begin() + dim, stride);
  return reshaped_view("unsqueeze", x, shape, strides);
}

namespace {
// A copy of x (new dtype and/or device) whose backward converts the gradient back.
Tensor copy_op(const char* name, const Tensor& x, DType dtype, Device device) {
  Tensor y = empty(x.shape(), dtype, device);
  copy_(y, x);
  if (Node* n = record(name, {x}, {&y})) {
    DType in_dtype = x.dtype();
    Device in_device = x.device();
    n->backward = [in_dtype, in_device](Node&, const Grads& g) -> Grads {
      return {convert(g[0], in_dtype, in_device)};
    };
  }
  return y;
}
}  // namespace

Tensor contiguous(const Tensor& x) {
  if (x.is_contiguous()) return x;
  return copy_op("contiguous", x, x.dtype(), x.device());
}

Tensor to(const Tensor& x, DType dtype) {
  if (x.dtype() == dtype) return x;
  return copy_op("to_dtype", x, dtype, x.device());
}

Tensor to(const Tensor& x, Device device) {
  if (x.device() == device) return x;
  return copy_op("to_device", x, x.dtype(), device);
}

Tensor clone(const Tensor& x) { return copy_op("clone", x, x.dtype(), x.device()); }

Tensor sum_to(const Tensor& g, const Shape& shape) {
  if (g.shape() == shape) return g;
  VLP_CHECK(int64_t(shape.size()) <= g.dim(), "sum_to: ", shape_str(g.shape()), " cannot reduce to ",
            shape_str(shape));
  size_t lead = size_t(g.dim()) - shape.size();
  Shape dims;
  for (size_t d = 0; d < size_t(g.dim()); ++d) {
    if (d < lead) dims.push_back(int64_t(d));
    else if (shape[d - lead] == 1 && g.size(int64_t(d)) != 1) dims.push_back(int64_t(d));
    else VLP_CHECK(shape[d - lead] == g.size(int64_t(d)), "sum_to: ", shape_str(g.shape()), " cannot reduce to ",
                   shape_str(shape));
  }
  Tensor s = dims.empty() ? g : sum(g, dims, /*keepdim=*/true);
  return reshape(s, shape);
}

}  // namespace vlp
