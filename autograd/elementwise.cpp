// Differentiable elementwise ops over kernels/cpu/elementwise (and kernels/cuda/elementwise for CUDA
// tensors, through autograd/kernel_calls). On the CPU BF16/F16 inputs are computed in F32 and the result
// converted back (on CUDA BF16 is computed as it is); backward works in the compute dtype and the engine
// converts the gradient.
#include "autograd/elementwise.h"

#include "autograd/dispatch.h"
#include "autograd/graph.h"
#include "autograd/kernel_calls.h"
#include "autograd/views.h"
#include "kernels/cpu/elementwise.h"

namespace vlp {

using cpu::Binary;
using cpu::Unary;

namespace {

bool needs_saved(Unary op) {
  return op != Unary::Neg && op != Unary::AddScalar && op != Unary::MulScalar && op != Unary::RSubScalar;
}

Tensor unary(const char* name, Unary op, const Tensor& x, double a = 0.0, double b = 0.0) {
  check_operands(name, {x}, true, /*cuda_ok=*/true);
  VLP_CHECK(is_floating(x.dtype()), name, ": needs a floating tensor, got ", x.dtype());
  Tensor xc = convert(x, compute_dtype(x.dtype(), x.device()));
  Tensor y = empty(x.shape(), xc.dtype(), x.device());
  call_unary_forward(name, op, xc, y, a, b);
  Tensor out = y.dtype() == x.dtype() ? y : convert(y, x.dtype());
  if (Node* n = record(name, {x}, {&out})) {
    const bool from_output = cpu::unary_saves_output(op);
    if (needs_saved(op)) n->save({from_output ? y : xc});
    n->backward = [op, a, b, from_output, name](Node& n, const Grads& g) -> Grads {
      DType dt = compute_dtype(g[0].dtype(), g[0].device());
      Tensor dy = convert(g[0], dt);
      Tensor dx = empty(dy.shape(), dt, dy.device());
      const Tensor s = n.saved.empty() ? Tensor() : n.saved[0];
      call_unary_backward(name, op, from_output ? Tensor() : s, from_output ? s : Tensor(), dy, dx, a, b);
      return {dx};
    };
  }
  return out;
}

Tensor binary(const char* name, Binary op, const Tensor& a, const Tensor& b) {
  check_operands(name, {a, b}, true, /*cuda_ok=*/true);
  VLP_CHECK(is_floating(a.dtype()), name, ": needs floating tensors, got ", a.dtype());
  Shape shape = broadcast_shapes(a.shape(), b.shape());
  DType dt = compute_dtype(a.dtype(), a.device());
  Tensor ac = a.dtype() == dt ? a : convert(a, dt);
  Tensor bc = b.dtype() == dt ? b : convert(b, dt);
  Tensor y = empty(shape, dt, a.device());
  Shape sa = broadcast_strides(ac, shape), sb = broadcast_strides(bc, shape);
  call_binary(name, op, shape, y, ac, sa, bc, sb, 1.0);
  Tensor out = dt == a.dtype() ? y : convert(y, a.dtype());
  if (Node* n = record(name, {a, b}, {&out})) {
    Shape a_shape = a.shape(), b_shape = b.shape();
    if (op == Binary::Mul) n->save({n->needs_grad(0) ? bc : Tensor(), n->needs_grad(1) ? ac : Tensor()});
    if (op == Binary::Div) n->save({bc, n->needs_grad(1) ? y : Tensor()});
    n->backward = [op, a_shape, b_shape](Node& n, const Grads& grads) -> Grads {
      Tensor g = convert(grads[0], compute_dtype(grads[0].dtype(), grads[0].device())), da, db;
      switch (op) {
        case Binary::Add: da = g, db = g; break;
        case Binary::Sub: da = g, db = n.needs_grad(1) ? neg(g) : Tensor(); break;
        case Binary::Mul:
          if (n.needs_grad(0)) da = mul(g, n.saved[0]);
          if (n.needs_grad(1)) db = mul(g, n.saved[1]);
          break;
        case Binary::Div: {  // d(a/b)/da = 1/b, d(a/b)/db = -(a/b)/b
          Tensor g_over_b = div(g, n.saved[0]);
          da = g_over_b;
          if (n.needs_grad(1)) db = neg(mul(g_over_b, n.saved[1]));
          break;
        }
        case Binary::Axpy: VLP_FAIL("axpy is not a differentiable op");
      }
      return {n.needs_grad(0) ? sum_to(da, a_shape) : Tensor(), n.needs_grad(1) ? sum_to(db, b_shape) : Tensor()};
    };
  }
  return out;
}

// dst = dst (op) src in place, in the compute dtype, copied back for BF16/F16.
void binary_inplace(const char* name, Binary op, const Tensor& dst, const Tensor& src, double alpha) {
  check_operands(name, {dst, src}, /*same_dtype=*/false, /*cuda_ok=*/true);
  VLP_CHECK(!(GradMode::enabled() && dst.requires_grad()), name,
            ": in-place update of a tensor that requires grad; wrap it in NoGradGuard");
  VLP_CHECK(is_floating(dst.dtype()), name, ": needs a floating tensor, got ", dst.dtype());
  DType dt = compute_dtype(dst.dtype(), dst.device());
  Tensor work = dst.dtype() == dt ? dst : convert(dst, dt);
  Tensor s = src.dtype() == dt ? src : convert(src, dt);
  Shape sa = work.strides(), sb = broadcast_strides(s, dst.shape());
  dst.storage()->version++;
  call_binary(name, op, dst.shape(), work, work, sa, s, sb, alpha);
  if (dst.dtype() != dt) copy_(dst, work);
}

}  // namespace

Tensor add(const Tensor& a, const Tensor& b) { return binary("add", Binary::Add, a, b); }
Tensor sub(const Tensor& a, const Tensor& b) { return binary("sub", Binary::Sub, a, b); }
Tensor mul(const Tensor& a, const Tensor& b) { return binary("mul", Binary::Mul, a, b); }
Tensor div(const Tensor& a, const Tensor& b) { return binary("div", Binary::Div, a, b); }
Tensor add(const Tensor& a, double s) { return unary("add_scalar", Unary::AddScalar, a, s); }
Tensor mul(const Tensor& a, double s) { return unary("mul_scalar", Unary::MulScalar, a, s); }
Tensor rsub(double s, const Tensor& a) { return unary("rsub_scalar", Unary::RSubScalar, a, s); }
Tensor neg(const Tensor& x) { return unary("neg", Unary::Neg, x); }
Tensor pow(const Tensor& x, double exponent) { return unary("pow", Unary::Pow, x, exponent); }
Tensor exp(const Tensor& x) { return unary("exp", Unary::Exp, x); }
Tensor log(const Tensor& x) { return unary("log", Unary::Log, x); }
Tensor sqrt(const Tensor& x) { return unary("sqrt", Unary::Sqrt, x); }
Tensor rsqrt(const Tensor& x) { return unary("rsqrt", Unary::Rsqrt, x); }
Tensor abs(const Tensor& x) { return unary("abs", Unary::Abs, x); }
Tensor clamp(const Tensor& x, double lo, double hi) {
  VLP_CHECK(lo <= hi, "clamp: lower bound ", lo, " above upper bound ", hi);
  return unary("clamp", Unary::Clamp, x, lo, hi);
}
Tensor tanh(const Tensor& x) { return unary("tanh", Unary::Tanh, x); }
Tensor sigmoid(const Tensor& x) { return unary("sigmoid", Unary::Sigmoid, x); }
Tensor relu(const Tensor& x) { return unary("relu", Unary::Relu, x); }
Tensor gelu(const Tensor& x) { return unary("gelu", Unary::Gelu, x); }
Tensor gelu_tanh(const Tensor& x) { return unary("gelu_tanh", Unary::GeluTanh, x); }
Tensor quick_gelu(const Tensor& x) { return unary("quick_gelu", Unary::QuickGelu, x); }
Tensor silu(const Tensor& x) { return unary("silu", Unary::Silu, x); }

void add_(const Tensor& dst, const Tensor& src, double alpha) {
  binary_inplace("add_", Binary::Axpy, dst, src, alpha);
}

void mul_(const Tensor& dst, double s) {
  binary_inplace("mul_", Binary::Mul, dst, scalar_tensor(s, compute_dtype(dst.dtype(), dst.device()), dst.device()),
                 1.0);
}

}  // namespace vlp
