// Differentiable joining, splitting and indexing over kernels/cpu/index.
//
// concat and stack copy each input into a slice of a fresh output through copy_ (any layout, any dtype);
// split returns views of its input (they share its storage, like narrow) and its backward writes each
// output's gradient into its slice (zeros for an output that was not used). Floating tensors are indexed
// in their compute dtype (BF16/F16 through F32); integer and Bool tensors are moved as they are and never
// record a gradient. Masks and conditions (Bool/U8/I32/I64) mean "true" where nonzero. On CUDA (through
// autograd/kernel_calls.h) where/masked_fill and scatter_add take floating tensors (computed in F32 or
// BF16), index_select and gather any dtype (a byte copy); concat, split and stack are copies and work on
// any device. The accumulating backward passes (index_add, scatter_add) are deterministic on both.
#include "autograd/indexing.h"

#include "autograd/dispatch.h"
#include "autograd/graph.h"
#include "autograd/kernel_calls.h"
#include "autograd/views.h"
#include "kernels/cpu/index.h"

namespace vlp {

namespace {

// The dtype an index kernel runs in for a tensor of dtype dt.
DType kernel_dtype(DType dt) { return is_floating(dt) ? compute_dtype(dt) : dt; }

// Calls fn(T{}) for the element types the data-movement kernels are instantiated for.
template <class Fn>
void dispatch_movable(const char* op, DType dt, Fn&& fn) {
  switch (dt) {
    case DType::F32: fn(float{}); break;
    case DType::F64: fn(double{}); break;
    case DType::I32: fn(int32_t{}); break;
    case DType::I64: fn(int64_t{}); break;
    case DType::U8: fn(uint8_t{}); break;
    case DType::Bool: fn(bool{}); break;
    default: VLP_FAIL(op, ": no CPU kernel for dtype ", dt);
  }
}

// The same for the accumulating kernels (index_add, scatter_add).
template <class Fn>
void dispatch_summable(const char* op, DType dt, Fn&& fn) {
  switch (dt) {
    case DType::F32: fn(float{}); break;
    case DType::F64: fn(double{}); break;
    case DType::I32: fn(int32_t{}); break;
    case DType::I64: fn(int64_t{}); break;
    default: VLP_FAIL(op, ": cannot add ", dt, " values; convert to a numeric dtype first");
  }
}

// The same on x's device: CUDA moves BF16 as it is.
DType kernel_dtype(const Tensor& x) {
  return is_floating(x.dtype()) ? compute_dtype(x.dtype(), x.device()) : x.dtype();
}

// x in the kernel dtype, keeping its layout when no conversion is needed.
Tensor in_kernel_dtype(const Tensor& x) {
  DType kd = kernel_dtype(x);
  return x.dtype() == kd ? x.detach() : convert(x, kd);
}

Tensor back_to(const Tensor& y, DType dtype) { return y.dtype() == dtype ? y : convert(y, dtype); }

// A mask or condition as a Bool tensor (nonzero = true), keeping its shape.
Tensor bool_mask(const char* op, const Tensor& mask) {
  VLP_CHECK(mask.defined(), op, ": the mask is undefined");
  DType dt = mask.dtype();
  VLP_CHECK(dt == DType::Bool || dt == DType::U8 || dt == DType::I32 || dt == DType::I64, op,
            ": the mask must be Bool, U8, I32 or I64 (nonzero = true), got ", dt);
  return convert(mask, DType::Bool, mask.device());
}

// A 0-dim tensor holding value in dt on device (a broadcast operand of where).
Tensor scalar_on(double value, DType dt, Device device) { return scalar_tensor(value, dt, device); }

void check_index_range(const char* op, const Tensor& index, int64_t size, int64_t dim) {
  const int64_t* p = index.data<int64_t>();
  int64_t at = cpu::first_out_of_range(p, index.numel(), size);
  VLP_CHECK(at < 0, op, ": index ", at < 0 ? 0 : p[at], " (element ", at, " of the index) is out of range for dim ",
            dim, " of size ", size);
}

// Raw (unrecorded) views: [start, start + length) of dim, and one position of dim with dim removed.
Tensor slice_raw(const Tensor& t, int64_t dim, int64_t start, int64_t length) {
  Shape shape = t.shape();
  shape[size_t(dim)] = length;
  return as_strided(t, shape, t.strides(), t.offset() + start * t.stride(dim));
}
Tensor select_raw(const Tensor& t, int64_t dim, int64_t index) {
  Shape shape = t.shape(), strides = t.strides();
  shape.erase(shape.begin() + dim);
  strides.erase(strides.begin() + dim);
  return as_strided(t, shape, strides, t.offset() + index * t.stride(dim));
}

// [outer, n, inner] sizes of shape around dim.
void split_around(const Shape& shape, int64_t dim, int64_t* outer, int64_t* n, int64_t* inner) {
  *outer = *inner = 1;
  for (int64_t d = 0; d < int64_t(shape.size()); ++d) {
    if (d < dim) *outer *= shape[size_t(d)];
    if (d > dim) *inner *= shape[size_t(d)];
  }
  *n = shape[size_t(dim)];
}

// Every tensor of a list defined, on one device, with one dtype.
void check_list(const char* op, const std::vector<Tensor>& xs) {
  VLP_CHECK(!xs.empty(), op, ": no tensors given");
  for (size_t i = 0; i < xs.size(); ++i) {
    VLP_CHECK(xs[i].defined(), op, ": tensor ", i, " is undefined");
    VLP_CHECK(xs[i].device() == xs[0].device(), op, ": tensor ", i, " is on ", xs[i].device(), ", tensor 0 on ",
              xs[0].device());
    VLP_CHECK(xs[i].dtype() == xs[0].dtype(), op, ": tensor ", i, " has dtype ", xs[i].dtype(), ", tensor 0 has ",
              xs[0].dtype(), "; convert one with vlp::to");
  }
}

std::vector<Tensor*> pointers(std::vector<Tensor>& ts) {
  std::vector<Tensor*> out;
  for (Tensor& t : ts) out.push_back(&t);
  return out;
}

// out = cond ? a : b over `shape` (all three broadcast to it; a and b share the kernel dtype).
Tensor select_where(const Tensor& cond, const Tensor& a, const Tensor& b, const Shape& shape) {
  Tensor y = empty(shape, a.dtype(), a.device());
  Shape sc = broadcast_strides(cond, shape), sa = broadcast_strides(a, shape), sb = broadcast_strides(b, shape);
  if (!y.is_cpu()) {
    VLP_CHECK(is_floating(a.dtype()), "where/masked_fill on ", y.device(), ": only floating tensors, got ", a.dtype());
    call_where("where", shape, y, cond, sc, a, sa, b, sb);
    return y;
  }
  dispatch_movable("where", a.dtype(), [&](auto t) {
    using T = decltype(t);
    cpu::where<T>(shape, y.data<T>(), y.strides().data(), cond.data<bool>(), sc.data(), a.data<T>(), sa.data(),
                  b.data<T>(), sb.data());
  });
  return y;
}

}  // namespace

Tensor concat(const std::vector<Tensor>& xs, int64_t dim) {
  check_list("concat", xs);
  const Tensor& first = xs[0];
  VLP_CHECK(first.dim() > 0, "concat: 0-dim tensors cannot be concatenated; use stack");
  dim = first.wrap_dim(dim);
  Shape shape = first.shape();
  shape[size_t(dim)] = 0;
  for (size_t i = 0; i < xs.size(); ++i) {
    bool same = xs[i].dim() == first.dim();
    for (int64_t d = 0; same && d < first.dim(); ++d) same = d == dim || xs[i].size(d) == first.size(d);
    VLP_CHECK(same, "concat along dim ", dim, ": tensor ", i, " has shape ", shape_str(xs[i].shape()),
              ", tensor 0 has ", shape_str(first.shape()), "; all other dims must match");
    shape[size_t(dim)] += xs[i].size(dim);
  }
  Tensor y = empty(shape, first.dtype(), first.device());
  Shape sizes;
  int64_t start = 0;
  for (const Tensor& x : xs) {
    copy_(slice_raw(y, dim, start, x.size(dim)), x);
    sizes.push_back(x.size(dim));
    start += x.size(dim);
  }
  if (Node* n = record("concat", xs, std::vector<Tensor*>{&y})) {
    n->backward = [sizes, dim](Node& n, const Grads& g) -> Grads {
      Grads dx(sizes.size());
      int64_t start = 0;
      for (size_t i = 0; i < sizes.size(); start += sizes[i], ++i)
        if (n.needs_grad(i)) dx[i] = slice_raw(g[0], dim, start, sizes[i]);
      return dx;
    };
  }
  return y;
}

std::vector<Tensor> split(const Tensor& x, const Shape& sizes, int64_t dim) {
  VLP_CHECK(x.defined() && x.dim() > 0, "split: needs a tensor with at least one dim");
  dim = x.wrap_dim(dim);
  int64_t total = 0;
  for (int64_t s : sizes) {
    VLP_CHECK(s >= 0, "split: negative size in ", shape_str(sizes));
    total += s;
  }
  VLP_CHECK(total == x.size(dim), "split: sizes ", shape_str(sizes), " add up to ", total, " but dim ", dim,
            " of shape ", shape_str(x.shape()), " has size ", x.size(dim));
  std::vector<Tensor> outs;
  int64_t start = 0;
  for (int64_t s : sizes) {
    outs.push_back(slice_raw(x, dim, start, s));  // a view sharing x's storage
    start += s;
  }
  if (Node* n = record("split", std::vector<Tensor>{x}, pointers(outs))) {
    Shape in_shape = x.shape();
    n->backward = [sizes, dim, in_shape](Node&, const Grads& g) -> Grads {
      // The engine hands zeros for outputs that were not used, so every slice is written.
      Tensor dx = empty(in_shape, g[0].dtype(), g[0].device());
      int64_t at = 0;
      for (size_t i = 0; i < sizes.size(); at += sizes[i], ++i) copy_(slice_raw(dx, dim, at, sizes[i]), g[i]);
      return {dx};
    };
  }
  return outs;
}

Tensor stack(const std::vector<Tensor>& xs, int64_t dim) {
  check_list("stack", xs);
  const int64_t rank = xs[0].dim();
  VLP_CHECK(dim >= -rank - 1 && dim <= rank, "stack: dim ", dim, " out of range for tensors of rank ", rank);
  if (dim < 0) dim += rank + 1;
  for (size_t i = 0; i < xs.size(); ++i)
    VLP_CHECK(xs[i].shape() == xs[0].shape(), "stack: tensor ", i, " has shape ", shape_str(xs[i].shape()),
              ", tensor 0 has ", shape_str(xs[0].shape()), "; all must match");
  Shape shape = xs[0].shape();
  shape.insert(shape.begin() + dim, int64_t(xs.size()));
  Tensor y = empty(shape, xs[0].dtype(), xs[0].device());
  for (size_t i = 0; i < xs.size(); ++i) copy_(select_raw(y, dim, int64_t(i)), xs[i]);
  if (Node* n = record("stack", xs, std::vector<Tensor*>{&y})) {
    n->backward = [dim](Node& n, const Grads& g) -> Grads {
      Grads dx(n.inputs.size());
      for (size_t i = 0; i < dx.size(); ++i)
        if (n.needs_grad(i)) dx[i] = select_raw(g[0], dim, int64_t(i));
      return dx;
    };
  }
  return y;
}

Tensor index_select(const Tensor& x, int64_t dim, const Tensor& index) {
  check_operands("index_select", {x, index}, /*same_dtype=*/false, /*cuda_ok=*/true);
  VLP_CHECK(x.dim() > 0, "index_select: x must have at least one dim");
  dim = x.wrap_dim(dim);
  VLP_CHECK(index.dim() <= 1, "index_select: index must be 1-D, got shape ", shape_str(index.shape()));
  Tensor idx = index_as_i64("index_select", index);
  check_index_range("index_select", idx, x.size(dim), dim);
  // Contiguous: the kernel works on [outer, n, inner]. CUDA copies bytes, so x keeps its dtype there.
  Tensor xc = x.is_cpu() ? convert(x, kernel_dtype(x.dtype())) : contiguous_raw(x);
  int64_t outer, n, inner;
  split_around(x.shape(), dim, &outer, &n, &inner);
  const int64_t m = idx.numel();
  Shape shape = x.shape();
  shape[size_t(dim)] = m;
  Tensor y;
  if (x.is_cpu()) {
    y = empty(shape, xc.dtype());
    dispatch_movable("index_select", xc.dtype(), [&](auto t) {
      using T = decltype(t);
      cpu::index_select<T>(xc.data<T>(), idx.data<int64_t>(), y.data<T>(), outer, n, m, inner);
    });
  } else {  // a byte copy of any dtype: x as it is
    y = empty(shape, x.dtype(), x.device());
    call_index_select("index_select", xc, idx, y, outer, n, inner);
  }
  Tensor out = back_to(y, x.dtype());
  if (Node* node = is_floating(x.dtype()) ? record("index_select", {x}, {&out}) : nullptr) {
    node->save({idx});
    Shape in_shape = x.shape();
    node->backward = [in_shape, dim](Node& node, const Grads& g) -> Grads {
      Tensor gc = convert(g[0], compute_dtype(g[0].dtype(), g[0].device()));
      Tensor dx = zeros(in_shape, gc.dtype(), gc.device());
      const Tensor& idx = node.saved[0];
      int64_t outer, n, inner;
      split_around(in_shape, dim, &outer, &n, &inner);
      call_index_add("index_select backward", gc, idx, dx, outer, n, inner);
      return {dx};
    };
  }
  return out;
}

namespace {
// The shape rules shared by gather and scatter_add (torch's): index has x's rank and is no larger than
// x outside dim.
void check_gather_shapes(const char* op, const Tensor& x, int64_t dim, const Tensor& index) {
  VLP_CHECK(index.dim() == x.dim(), op, ": index of shape ", shape_str(index.shape()),
            " must have as many dims as x of shape ", shape_str(x.shape()));
  for (int64_t d = 0; d < x.dim(); ++d)
    VLP_CHECK(d == dim || index.size(d) <= x.size(d), op, ": index of shape ", shape_str(index.shape()),
              " is larger than x of shape ", shape_str(x.shape()), " in dim ", d);
}
}  // namespace

Tensor gather(const Tensor& x, int64_t dim, const Tensor& index) {
  check_operands("gather", {x, index}, /*same_dtype=*/false, /*cuda_ok=*/true);
  VLP_CHECK(x.dim() > 0, "gather: x must have at least one dim");
  dim = x.wrap_dim(dim);
  check_gather_shapes("gather", x, dim, index);
  Tensor idx = index_as_i64("gather", index);
  check_index_range("gather", idx, x.size(dim), dim);
  Tensor xc = in_kernel_dtype(x);  // CUDA: x as it is (a byte copy of any dtype)
  Tensor y = empty(index.shape(), xc.dtype(), x.device());
  if (x.is_cpu() && !is_floating(xc.dtype())) {
    if (y.numel() > 0)
      dispatch_movable("gather", xc.dtype(), [&](auto t) {
        using T = decltype(t);
        cpu::gather<T>(index.shape(), dim, xc.data<T>(), xc.strides().data(), idx.data<int64_t>(), y.data<T>());
      });
  } else {
    call_gather("gather", xc, dim, idx, y);
  }
  Tensor out = back_to(y, x.dtype());
  if (Node* node = is_floating(x.dtype()) ? record("gather", {x}, {&out}) : nullptr) {
    node->save({idx});
    Shape in_shape = x.shape();
    node->backward = [in_shape, dim](Node& node, const Grads& g) -> Grads {
      Tensor gc = convert(g[0], compute_dtype(g[0].dtype(), g[0].device()));
      Tensor dx = zeros(in_shape, gc.dtype(), gc.device());
      call_scatter_add("gather backward", dx, dim, node.saved[0], gc);
      return {dx};
    };
  }
  return out;
}

Tensor scatter_add(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& src) {
  check_operands("scatter_add", {x, src}, /*same_dtype=*/true, /*cuda_ok=*/true);
  check_operands("scatter_add", {x, index}, /*same_dtype=*/false, /*cuda_ok=*/true);
  VLP_CHECK(x.dim() > 0, "scatter_add: x must have at least one dim");
  VLP_CHECK(x.is_cpu() || is_floating(x.dtype()), "scatter_add on ", x.device(),
            ": only floating tensors (computed in F32 or BF16), got ", x.dtype());
  dim = x.wrap_dim(dim);
  check_gather_shapes("scatter_add", x, dim, index);
  VLP_CHECK(src.dim() == x.dim(), "scatter_add: src of shape ", shape_str(src.shape()),
            " must have as many dims as x of shape ", shape_str(x.shape()));
  for (int64_t d = 0; d < x.dim(); ++d)
    VLP_CHECK(index.size(d) <= src.size(d), "scatter_add: index of shape ", shape_str(index.shape()),
              " is larger than src of shape ", shape_str(src.shape()), " in dim ", d);
  Tensor idx = index_as_i64("scatter_add", index);
  check_index_range("scatter_add", idx, x.size(dim), dim);
  DType kd = kernel_dtype(x);
  Tensor y = empty(x.shape(), kd, x.device());
  copy_(y, x);
  Tensor sc = in_kernel_dtype(src);
  if (x.is_cpu() && !is_floating(kd)) {
    if (idx.numel() > 0)
      dispatch_summable("scatter_add", kd, [&](auto t) {
        using T = decltype(t);
        cpu::scatter_add<T>(index.shape(), dim, y.data<T>(), y.strides().data(), idx.data<int64_t>(), sc.data<T>(),
                            sc.strides().data());
      });
  } else {
    call_scatter_add("scatter_add", y, dim, idx, sc);
  }
  Tensor out = back_to(y, x.dtype());
  if (Node* node = is_floating(x.dtype()) ? record("scatter_add", {x, src}, {&out}) : nullptr) {
    node->save({node->needs_grad(1) ? idx : Tensor()});
    Shape src_shape = src.shape();
    node->backward = [dim, src_shape](Node& node, const Grads& g) -> Grads {
      Tensor gc = convert(g[0], compute_dtype(g[0].dtype(), g[0].device()));
      Tensor dsrc;
      if (node.needs_grad(1)) {  // dsrc = gather(g, dim, index), zero where src reaches past the index
        const Tensor& idx = node.saved[0];
        Tensor gathered = empty(idx.shape(), gc.dtype(), gc.device());
        call_gather("scatter_add backward", gc, dim, idx, gathered);
        if (idx.shape() == src_shape) {
          dsrc = gathered;
        } else {
          dsrc = zeros(src_shape, gc.dtype(), gc.device());
          copy_(as_strided(dsrc, idx.shape(), dsrc.strides(), 0), gathered);
        }
      }
      return {node.needs_grad(0) ? gc : Tensor(), dsrc};
    };
  }
  return out;
}

Tensor masked_fill(const Tensor& x, const Tensor& mask, double value) {
  check_operands("masked_fill", {x, mask}, /*same_dtype=*/false, /*cuda_ok=*/true);
  Tensor m = bool_mask("masked_fill", mask);
  VLP_CHECK(m.dim() <= x.dim() && broadcast_shapes(x.shape(), m.shape()) == x.shape(), "masked_fill: mask of shape ",
            shape_str(m.shape()), " does not broadcast to x's shape ", shape_str(x.shape()));
  Tensor xc = in_kernel_dtype(x);
  Tensor y = select_where(m, scalar_on(value, xc.dtype(), xc.device()), xc, x.shape());
  Tensor out = back_to(y, x.dtype());
  if (Node* n = record("masked_fill", {x}, {&out})) {
    n->save({m});
    n->backward = [](Node& n, const Grads& g) -> Grads {
      Tensor gc = convert(g[0], compute_dtype(g[0].dtype(), g[0].device()));
      return {select_where(n.saved[0], scalar_on(0.0, gc.dtype(), gc.device()), gc, gc.shape())};
    };
  }
  return out;
}

Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b) {
  check_operands("where", {a, b}, true, /*cuda_ok=*/true);
  check_operands("where", {cond, a}, /*same_dtype=*/false, /*cuda_ok=*/true);
  Tensor c = bool_mask("where", cond);
  Shape shape = broadcast_shapes(broadcast_shapes(c.shape(), a.shape()), b.shape());
  Tensor y = select_where(c, in_kernel_dtype(a), in_kernel_dtype(b), shape);
  Tensor out = back_to(y, a.dtype());
  if (Node* n = is_floating(a.dtype()) ? record("where", {a, b}, {&out}) : nullptr) {
    n->save({c});
    Shape a_shape = a.shape(), b_shape = b.shape();
    n->backward = [a_shape, b_shape](Node& n, const Grads& g) -> Grads {
      Tensor gc = convert(g[0], compute_dtype(g[0].dtype(), g[0].device()));
      Tensor zero = scalar_on(0.0, gc.dtype(), gc.device()), da, db;
      if (n.needs_grad(0)) da = sum_to(select_where(n.saved[0], gc, zero, gc.shape()), a_shape);
      if (n.needs_grad(1)) db = sum_to(select_where(n.saved[0], zero, gc, gc.shape()), b_shape);
      return {da, db};
    };
  }
  return out;
}

}  // namespace vlp
