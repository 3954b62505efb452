// The fused LoRA linear (autograd/lora.h). The CPU path is the composition of the existing ops and
// kernels in the order the composed LoRA forward runs them (linear, dropout, linear, linear, mul, add) and
// its backward follows the composed graph's order too, so both give the same bits in F32 and F64. The CUDA
// path replaces the dropout + down-projection with one kernel and folds scale into the GEMMs' alpha, with
// the up-projection and the base dx accumulated in place (beta = 1).
//
// What the node keeps: x as the [rows, in] compute-dtype view the base GEMM read (for dW and dA; dropout(x)
// is regenerated from (seed, offset)), W (for dx), A (for dx), B (for dx and dA) and h = dropout(x) A^T
// [rows, r] (for dB), each only when a gradient that reads it is wanted.
#include "autograd/lora.h"

#include <cmath>

#include "autograd/autocast.h"
#include "autograd/dispatch.h"
#include "autograd/elementwise.h"
#include "autograd/graph.h"
#include "autograd/kernel_calls.h"
#include "autograd/linalg.h"
#include "autograd/reduce.h"
#include "autograd/views.h"

namespace vlp {

namespace {

constexpr const char* kOp = "lora_linear";

// A 2-D operand as a GEMM reads it: row-major (trans = false) or a transposed row-major matrix (trans =
// true) with leading dimension ld; other layouts are copied.
struct GemmOperand {
  Tensor t;
  bool trans = false;
  int64_t ld = 1;
};

GemmOperand gemm_operand(const Tensor& t) {
  const int64_t rows = t.size(0), cols = t.size(1);
  if (t.is_contiguous()) return {t, false, std::max<int64_t>(cols, 1)};
  if (t.stride(1) == 1 && t.stride(0) >= cols) return {t, false, t.stride(0)};
  if (t.stride(0) == 1 && t.stride(1) >= rows) return {t, true, t.stride(1)};
  return {contiguous_raw(t), false, std::max<int64_t>(cols, 1)};
}

// dropout(x) for a [rows, in] x as a new contiguous tensor (x itself when p == 0).
Tensor dropped(const Tensor& x, double p, uint64_t seed, uint64_t offset) {
  if (p == 0.0) return x;
  Tensor xc = contiguous_raw(x);
  Tensor y = empty(xc.shape(), xc.dtype(), xc.device());
  call_dropout(kOp, xc, y, p, seed, offset);
  return y;
}

}  // namespace

Tensor lora_linear(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& lora_a,
                   const Tensor& lora_b, double scale, double dropout_p, bool training, Generator* gen) {
  VLP_CHECK(x.defined() && weight.defined() && lora_a.defined() && lora_b.defined(), kOp,
            ": x, weight, lora_a and lora_b must be defined");
  // Under autocast (autograd/autocast.h) the op runs on the low-precision copies of its F32 operands and
  // returns F32 like linear; unlike linear its output passes through the low precision once (the fused
  // kernels write their input dtype) and the bias is added in it.
  if (autocast_applies(x)) {
    const Tensor bias_lp = bias.defined() ? autocast_input(bias) : bias;
    return to(lora_linear(autocast_input(x), autocast_input(weight), bias_lp, autocast_input(lora_a),
                          autocast_input(lora_b), scale, dropout_p, training, gen),
              DType::F32);
  }
  check_operands(kOp, {x, weight, bias, lora_a, lora_b}, true, /*cuda_ok=*/true);
  VLP_CHECK(is_floating(x.dtype()), kOp, ": needs floating tensors, got ", x.dtype());
  VLP_CHECK(weight.dim() == 2, kOp, ": weight must be [out, in], got ", shape_str(weight.shape()));
  const int64_t in = weight.size(1), out = weight.size(0);
  VLP_CHECK(x.dim() >= 1 && x.size(-1) == in, kOp, ": input ", shape_str(x.shape()),
            " does not end in the weight's in_features ", in);
  VLP_CHECK(!bias.defined() || bias.shape() == Shape{out}, kOp, ": bias of shape ", shape_str(bias.shape()), " for ",
            out, " output features");
  VLP_CHECK(lora_a.dim() == 2 && lora_a.size(1) == in && lora_a.size(0) >= 1, kOp, ": lora_a must be [r, ", in,
            "], got ", shape_str(lora_a.shape()));
  const int64_t r = lora_a.size(0);
  VLP_CHECK(lora_b.shape() == (Shape{out, r}), kOp, ": lora_b must be [", out, ", ", r, "], got ",
            shape_str(lora_b.shape()));
  VLP_CHECK(std::isfinite(scale), kOp, ": scale must be finite, got ", scale);
  VLP_CHECK(dropout_p >= 0.0 && dropout_p < 1.0, kOp, ": dropout_p must be in [0, 1), got ", dropout_p);

  // The generator draws exactly what vlp::dropout(x, p, training, gen) would.
  const double p = training ? dropout_p : 0.0;
  uint64_t seed = 0, offset = 0;
  if (p > 0.0) {
    Generator& g = gen ? *gen : default_generator();
    seed = g.seed;
    offset = g.take(x.numel());
  }
  const Device dev = x.device();
  const DType dt = compute_dtype(x.dtype(), dev);
  Tensor y, x2, w, a, b, h;
  {
    NoGradGuard no_grad;
    Tensor base = linear(x, weight, bias);  // x W^T + bias, [..., out] in x's dtype
    x2 = reshape(x.dtype() == dt ? x.detach() : convert(x, dt), {-1, in});  // what the base GEMM read
    w = weight.dtype() == dt ? weight.detach() : convert(weight, dt);
    a = convert(lora_a, dt);  // contiguous
    b = convert(lora_b, dt);  // contiguous [out, r]
    const int64_t rows = x2.size(0);
    // The down-projection reads x row-major with unit column stride (the CPU contiguous).
    Tensor xr = x2;
    int64_t ldx = in;
    if (!xr.is_contiguous()) {
      if (!dev.is_cpu() && rows > 1 && xr.stride(1) == 1 && xr.stride(0) >= in) ldx = xr.stride(0);
      else xr = contiguous_raw(xr);
    }
    h = empty({rows, r}, dt, dev);
    call_lora_down_dropout(kOp, xr, ldx, a, h, rows, in, r, p, seed, offset);
    if (dev.is_cpu()) {
      // The composed ops: u = h B^T (h in x's dtype, as linear(dropout(x), A) returns it), y = base + scale u.
      Tensor hx = h.dtype() == x.dtype() ? h : convert(h, x.dtype());
      Tensor u = linear(hx, lora_b);
      y = add(base, reshape(mul(u, scale), base.shape()));
    } else {
      // y2 += scale h B^T, in place in the base GEMM's output.
      Tensor y2 = reshape(base, {-1, out});
      if (y2.dtype() != dt) y2 = convert(y2, dt);
      call_gemm(kOp, false, true, rows, out, r, scale, h, 0, r, b, 0, r, 1.0, y2, 0, out);
      y = reshape(y2, base.shape());
      if (y.dtype() != x.dtype()) y = convert(y, x.dtype());
    }
  }

  if (Node* n = record(kOp, {x, weight, bias, lora_a, lora_b}, {&y})) {
    const bool dx = n->needs_grad(0), dw = n->needs_grad(1), da = n->needs_grad(3), db = n->needs_grad(4);
    n->save({dw || da ? x2 : Tensor(), dx ? w : Tensor(), dx ? a : Tensor(), dx || da ? b : Tensor(),
             db ? h : Tensor()});
    const Shape x_shape = x.shape();
    n->backward = [x_shape, in, out, r, dt, scale, p, seed, offset](Node& n, const Grads& grads) -> Grads {
      const Tensor &x2 = n.saved[0], &w = n.saved[1], &a = n.saved[2], &b = n.saved[3], &h = n.saved[4];
      const bool want_dx = n.needs_grad(0), want_da = n.needs_grad(3), want_db = n.needs_grad(4);
      Tensor g = reshape(convert(grads[0], dt), {-1, out});
      const int64_t rows = g.size(0);
      Tensor gx, gw, gbias, ga, gb;
      if (n.needs_grad(1)) gw = matmul(transpose(g, 0, 1), x2);
      if (n.needs_grad(2)) gbias = sum(g, {0});
      if (g.is_cpu()) {
        // The composed graph's backward: mul's (gu = scale dy), linear B's, linear A's, dropout's, and the
        // base linear's dx added to the LoRA branch's.
        Tensor gu = mul(g, scale);
        if (want_db) gb = matmul(transpose(gu, 0, 1), h);
        if (want_dx || want_da) {
          Tensor dh = matmul(gu, b);
          if (want_da) ga = matmul(transpose(dh, 0, 1), dropped(x2, p, seed, offset));
          if (want_dx) {
            Tensor dxd = matmul(dh, a);
            if (p > 0.0) {
              Tensor t = empty(dxd.shape(), dt, dxd.device());
              call_dropout(kOp, contiguous_raw(dxd), t, p, seed, offset);
              dxd = t;
            }
            gx = reshape(add(matmul(g, w), dxd), x_shape);
          }
        }
        return {gx, gw, gbias, ga, gb};
      }
      // CUDA: scale in alpha, the masked dh A and dy W summed in one buffer.
      if (!g.is_contiguous()) g = contiguous_raw(g);
      const Device dev = g.device();
      if (want_db) {
        gb = empty({out, r}, dt, dev);
        call_gemm(kOp, true, false, out, r, rows, scale, g, 0, out, h, 0, r, 0.0, gb, 0, r);
      }
      if (want_dx || want_da) {
        Tensor dh = empty({rows, r}, dt, dev);
        call_gemm(kOp, false, false, rows, r, out, scale, g, 0, out, b, 0, r, 0.0, dh, 0, r);
        if (want_da) {
          GemmOperand xd = gemm_operand(dropped(x2, p, seed, offset));
          ga = empty({r, in}, dt, dev);
          // dA [r, in] = dh^T dropout(x)
          call_gemm(kOp, true, xd.trans, r, in, rows, 1.0, dh, 0, r, xd.t, 0, xd.ld, 0.0, ga, 0, in);
        }
        if (want_dx) {
          gx = empty({rows, in}, dt, dev);
          call_gemm(kOp, false, false, rows, in, r, 1.0, dh, 0, r, a, 0, in, 0.0, gx, 0, in);
          if (p > 0.0) call_dropout(kOp, gx, gx, p, seed, offset);  // elementwise: in place is safe
          GemmOperand wo = gemm_operand(w);
          call_gemm(kOp, false, wo.trans, rows, in, out, 1.0, g, 0, out, wo.t, 0, wo.ld, 1.0, gx, 0, in);
          gx = reshape(gx, x_shape);
        }
      }
      return {gx, gw, gbias, ga, gb};
    };
  }
  return y;
}

}  // namespace vlp
