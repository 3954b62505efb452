// Differentiable matrix products over kernels/cpu/gemm (cuBLASLt for CUDA tensors, through
// autograd/kernel_calls). A strided 2-D operand goes to BLAS as it is
// when one of its dims has unit stride (transposed views become a transpose flag); only other layouts
// are copied.
//
// Autocast (autograd/autocast.h): linear and matmul read F32 operands as low-precision copies and return
// F32; the GEMM writes the F32 result directly (on CUDA a BF16 x BF16 -> F32 cuBLASLt call, no extra
// cast pass), and the backward rounds the incoming F32 gradient to the operands' dtype.
#include "autograd/linalg.h"

#include "autograd/autocast.h"
#include "autograd/dispatch.h"
#include "autograd/elementwise.h"
#include "autograd/graph.h"
#include "autograd/kernel_calls.h"
#include "autograd/reduce.h"
#include "autograd/views.h"
#include "kernels/cpu/gemm.h"

namespace vlp {

namespace {

// How a [rows, cols] matrix with the given strides is passed to BLAS, or ok = false when its layout
// needs a copy first.
struct BlasMatrix {
  bool ok = false;
  bool trans = false;
  int64_t ld = 1;
};

BlasMatrix blas_layout(int64_t rows, int64_t cols, int64_t row_stride, int64_t col_stride) {
  // Row-major: element (i, j) at i * ld + j. A unit dim's stride never matters.
  if ((cols == 1 || col_stride == 1) && (rows == 1 || row_stride >= std::max<int64_t>(cols, 1)))
    return {true, false, rows == 1 ? std::max<int64_t>(cols, 1) : row_stride};
  // Column-major (a transposed row-major matrix): element (i, j) at j * ld + i.
  if ((rows == 1 || row_stride == 1) && (cols == 1 || col_stride >= std::max<int64_t>(rows, 1)))
    return {true, true, cols == 1 ? std::max<int64_t>(rows, 1) : col_stride};
  return {};
}

// The dtype a GEMM writes for operands in compute dtype dt and an op result of out_dtype: F32 whenever the
// result is F32 (autocast: low-precision operands, F32 output), else the compute dtype.
DType gemm_out_dtype(DType dt, DType out_dtype) { return out_dtype == DType::F32 ? DType::F32 : dt; }

// out [batch..., n, m] = a [batch..., n, k] @ b [batch..., k, m], a and b already broadcast (stride 0 on
// broadcast batch dims) and in the compute dtype; out in out_dtype (gemm_out_dtype).
Tensor batched_gemm(Tensor a, Tensor b, const Shape& batch, DType out_dtype) {
  const int64_t n = a.size(-2), k = a.size(-1), m = b.size(-1);
  BlasMatrix la = blas_layout(n, k, a.stride(-2), a.stride(-1));
  if (!la.ok) a = contiguous_raw(a), la = blas_layout(n, k, a.stride(-2), a.stride(-1));
  BlasMatrix lb = blas_layout(k, m, b.stride(-2), b.stride(-1));
  if (!lb.ok) b = contiguous_raw(b), lb = blas_layout(k, m, b.stride(-2), b.stride(-1));
  Shape out_shape = batch;
  out_shape.push_back(n);
  out_shape.push_back(m);
  Tensor out = empty(out_shape, out_dtype, a.device());
  const int64_t count = shape_numel(batch);
  for (int64_t i = 0; i < count; ++i) {
    int64_t oa = 0, ob = 0, rest = i;  // element offsets of batch item i
    for (int64_t d = int64_t(batch.size()) - 1; d >= 0; --d) {
      int64_t idx = rest % batch[size_t(d)];
      rest /= batch[size_t(d)];
      oa += idx * a.stride(d);
      ob += idx * b.stride(d);
    }
    call_gemm("matmul", la.trans, lb.trans, n, m, k, 1.0, a, oa, la.ld, b, ob, lb.ld, 0.0, out, i * n * m, m);
  }
  return out;
}

Tensor matmul_forward(const Tensor& a, const Tensor& b, DType out_dtype) {
  DType dt = compute_dtype(a.dtype(), a.device());
  const DType c_dt = gemm_out_dtype(dt, out_dtype);
  Tensor ac = a.dtype() == dt ? a.detach() : convert(a, dt);
  Tensor bc = b.dtype() == dt ? b.detach() : convert(b, dt);
  const int64_t n = a.size(-2), k = a.size(-1), m = b.size(-1);
  if (b.dim() == 2) {  // fold a's batch dims into its rows: one GEMM
    Tensor a2;
    {
      NoGradGuard no_grad;
      a2 = reshape(ac, {-1, k});
    }
    Shape out_shape(a.shape().begin(), a.shape().end() - 1);
    out_shape.push_back(m);
    Tensor out = batched_gemm(a2, bc, {}, c_dt);
    return as_strided(out, out_shape, contiguous_strides(out_shape), 0);
  }
  Shape batch_a(a.shape().begin(), a.shape().end() - 2), batch_b(b.shape().begin(), b.shape().end() - 2);
  Shape batch = broadcast_shapes(batch_a, batch_b);
  Shape full_a = batch, full_b = batch;
  full_a.insert(full_a.end(), {n, k});
  full_b.insert(full_b.end(), {k, m});
  return batched_gemm(as_strided(ac, full_a, broadcast_strides(ac, full_a), ac.offset()),
                      as_strided(bc, full_b, broadcast_strides(bc, full_b), bc.offset()), batch, c_dt);
}

}  // namespace

Tensor matmul(const Tensor& a_in, const Tensor& b_in) {
  check_operands("matmul", {a_in, b_in}, true, /*cuda_ok=*/true);
  VLP_CHECK(a_in.dim() >= 2 && b_in.dim() >= 2, "matmul: operands need at least 2 dims, got ",
            shape_str(a_in.shape()), " and ", shape_str(b_in.shape()));
  VLP_CHECK(a_in.size(-1) == b_in.size(-2), "matmul: inner dims differ: ", shape_str(a_in.shape()), " @ ",
            shape_str(b_in.shape()));
  const DType out_dtype = a_in.dtype();
  const Tensor a = autocast_input(a_in), b = autocast_input(b_in);  // a_in, b_in themselves without autocast
  Tensor y = matmul_forward(a, b, out_dtype);
  if (y.dtype() != out_dtype) y = convert(y, out_dtype);
  if (Node* n = record("matmul", {a, b}, {&y})) {
    n->save({n->needs_grad(1) ? a : Tensor(), n->needs_grad(0) ? b : Tensor()});
    Shape a_shape = a.shape(), b_shape = b.shape();
    const DType in_dtype = a.dtype();
    n->backward = [a_shape, b_shape, in_dtype](Node& n, const Grads& grads) -> Grads {
      const Tensor &a = n.saved[0], &b = n.saved[1];
      // Under autocast the gradient arrives in F32: the backward GEMMs read it in the operands' dtype.
      const Tensor g = grads[0].dtype() == in_dtype ? grads[0] : convert(grads[0], in_dtype);
      Tensor da, db;
      if (n.needs_grad(0)) da = sum_to(matmul(g, transpose(b, -1, -2)), a_shape);
      if (n.needs_grad(1)) {
        if (b_shape.size() == 2)  // a's batch dims were folded into rows: one GEMM, no batch of partials
          db = matmul(transpose(reshape(a, {-1, a_shape.back()}), 0, 1), reshape(g, {-1, b_shape.back()}));
        else
          db = sum_to(matmul(transpose(a, -1, -2), g), b_shape);
      }
      return {da, db};
    };
  }
  return y;
}

Tensor bmm(const Tensor& a, const Tensor& b) {
  VLP_CHECK(a.dim() == 3 && b.dim() == 3 && a.size(0) == b.size(0), "bmm: needs [batch, n, k] and [batch, k, m], got ",
            shape_str(a.shape()), " and ", shape_str(b.shape()));
  return matmul(a, b);
}

Tensor linear(const Tensor& x_in, const Tensor& weight_in, const Tensor& bias) {
  check_operands("linear", {x_in, weight_in, bias}, true, /*cuda_ok=*/true);
  VLP_CHECK(weight_in.dim() == 2, "linear: weight must be [out, in], got ", shape_str(weight_in.shape()));
  VLP_CHECK(x_in.dim() >= 1 && x_in.size(-1) == weight_in.size(1), "linear: input ", shape_str(x_in.shape()),
            " does not end in the weight's in_features ", weight_in.size(1));
  VLP_CHECK(!bias.defined() || bias.shape() == Shape{weight_in.size(0)}, "linear: bias of shape ",
            shape_str(bias.shape()), " for ", weight_in.size(0), " output features");
  // Autocast: x and W as low-precision copies; the bias stays F32 and is added in the F32 output.
  const DType out_dtype = x_in.dtype();
  const Tensor x = autocast_input(x_in), weight = autocast_input(weight_in);
  const int64_t in = weight.size(1), out = weight.size(0);
  DType dt = compute_dtype(x.dtype(), x.device());
  Tensor x2, w = weight.dtype() == dt ? weight.detach() : convert(weight, dt);
  {
    NoGradGuard no_grad;
    x2 = reshape(x.dtype() == dt ? x.detach() : convert(x, dt), {-1, in});
  }
  const int64_t rows = x2.size(0);
  Tensor y2 = empty({rows, out}, gemm_out_dtype(dt, out_dtype), x.device());
  if (bias.defined()) copy_(y2, bias);
  BlasMatrix lx = blas_layout(rows, in, x2.stride(0), x2.stride(1));
  if (!lx.ok) x2 = contiguous_raw(x2), lx = blas_layout(rows, in, x2.stride(0), x2.stride(1));
  BlasMatrix lw = blas_layout(out, in, w.stride(0), w.stride(1));
  if (!lw.ok) w = contiguous_raw(w), lw = blas_layout(out, in, w.stride(0), w.stride(1));
  call_gemm("linear", lx.trans, !lw.trans, rows, out, in, 1.0, x2, 0, lx.ld, w, 0, lw.ld, bias.defined() ? 1.0 : 0.0,
            y2, 0, out);
  Shape out_shape(x.shape().begin(), x.shape().end() - 1);
  out_shape.push_back(out);
  Tensor y = as_strided(y2, out_shape, contiguous_strides(out_shape), 0);
  if (y.dtype() != out_dtype) y = convert(y, out_dtype);
  if (Node* n = record("linear", {x, weight, bias}, {&y})) {
    // A frozen weight needs no dW, so the input is not kept: the core of cheap frozen-base PEFT.
    n->save({n->needs_grad(1) ? x2 : Tensor(), n->needs_grad(0) ? w : Tensor()});
    Shape x_shape = x.shape();
    const DType in_dtype = x.dtype();
    n->backward = [x_shape, out, in_dtype](Node& n, const Grads& grads) -> Grads {
      auto rows_in_compute_dtype = [out](const Tensor& t) {
        return reshape(convert(t, compute_dtype(t.dtype(), t.device())), {-1, out});
      };
      // Under autocast the gradient arrives in F32: the GEMMs read it rounded to x's dtype, the bias sums
      // it as it is.
      Tensor g = rows_in_compute_dtype(grads[0].dtype() == in_dtype ? grads[0] : convert(grads[0], in_dtype));
      Tensor dx, dw, db;
      if (n.needs_grad(0)) dx = reshape(matmul(g, n.saved[1]), x_shape);
      if (n.needs_grad(1)) dw = matmul(transpose(g, 0, 1), n.saved[0]);
      if (n.needs_grad(2)) db = sum(grads[0].dtype() == in_dtype ? g : rows_in_compute_dtype(grads[0]), {0});
      return {dx, dw, db};
    };
  }
  return y;
}

Tensor kron(const Tensor& a, const Tensor& b) {
  VLP_CHECK(a.dim() == 2 && b.dim() == 2, "kron: needs two 2-D tensors, got ", shape_str(a.shape()), " and ",
            shape_str(b.shape()));
  const int64_t p = a.size(0), q = a.size(1), r = b.size(0), s = b.size(1);
  // (a (x) b)[i*r + k, j*s + l] = a[i, j] * b[k, l]: a broadcast product over [p, r, q, s].
  Tensor prod = mul(reshape(a, {p, 1, q, 1}), reshape(b, {1, r, 1, s}));
  return reshape(prod, {p * r, q * s});
}

}  // namespace vlp
