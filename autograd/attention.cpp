// Differentiable scaled-dot-product attention over kernels/cpu/attention.
//
// Memory: like flash attention, the node saves q, k, v, the output and one log-sum-exp per query row
// (plus the bias and key mask, which are inputs); the [Tq, Tk] probabilities are recomputed head by
// head in the backward, and the dropout mask is regenerated from the Philox (seed, offset) the forward
// drew. q, k and v are read in place when their last dim is contiguous (a permuted [B, T, H, D]
// projection needs no copy); other layouts and BF16/F16 are converted to a contiguous compute-dtype copy.
//
// A query row whose keys are all masked (key padding, causal with Tq > Tk, or a bias of -inf) outputs
// zeros and passes zero gradient to q, k, v and the bias.
//
// Autocast (autograd/autocast.h): F32 q, k, v and bias are read as low-precision copies (the kernels take
// one dtype for all four) and the output comes back in F32. The kernels write their output in their input
// dtype, so that is a BF16 output converted to F32: one extra elementwise pass, and the output rounded
// to BF16 on every device (the CPU emulates it through the same conversions).
#include "autograd/attention.h"

#include <cmath>

#include "autograd/autocast.h"
#include "autograd/dispatch.h"
#include "autograd/graph.h"
#include "autograd/kernel_calls.h"
#include "autograd/views.h"
#include "kernels/cpu/attention.h"

namespace vlp {

namespace {

constexpr const char* kOp = "scaled_dot_product_attention";

// x as the kernel reads it: compute dtype, unit stride in the last dim, rows no closer than a row's length.
Tensor head_layout(const Tensor& x, DType dt) {
  const bool unit_cols = x.size(3) == 1 || x.stride(3) == 1;
  const bool rows_apart = x.size(2) == 1 || x.stride(2) >= x.size(3);
  return x.dtype() == dt && unit_cols && rows_apart ? x.detach() : convert(x, dt);
}

}  // namespace

Tensor scaled_dot_product_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                                    const AttentionOptions& options) {
  check_operands(kOp, {q, k, v, options.bias}, true, /*cuda_ok=*/true);
  if (autocast_applies(q)) {  // the inner call sees low-precision operands and does not autocast again
    AttentionOptions low = options;
    low.bias = autocast_input(options.bias);
    Tensor y = scaled_dot_product_attention(autocast_input(q), autocast_input(k), autocast_input(v), low);
    return to(y, q.dtype());
  }
  VLP_CHECK(is_floating(q.dtype()), kOp, ": needs floating tensors, got ", q.dtype());
  VLP_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4, kOp, ": q, k and v must be [B, H, T, D], got ",
            shape_str(q.shape()), ", ", shape_str(k.shape()), " and ", shape_str(v.shape()));
  AttentionConfig c;
  c.B = q.size(0), c.H = q.size(1), c.Tq = q.size(2), c.D = q.size(3), c.Tk = k.size(2), c.Dv = v.size(3);
  VLP_CHECK(k.size(0) == c.B && k.size(1) == c.H && k.size(3) == c.D, kOp, ": k of shape ", shape_str(k.shape()),
            " does not match q of shape ", shape_str(q.shape()), " (same B, H and D expected)");
  VLP_CHECK(v.size(0) == c.B && v.size(1) == c.H && v.size(2) == c.Tk, kOp, ": v of shape ", shape_str(v.shape()),
            " does not match k of shape ", shape_str(k.shape()), " (same B, H and Tk expected)");
  VLP_CHECK(c.D > 0, kOp, ": q and k have an empty last dim");
  const Shape scores_shape{c.B, c.H, c.Tq, c.Tk};
  const Tensor& bias = options.bias;
  VLP_CHECK(!bias.defined() || (bias.dim() <= 4 && broadcast_shapes(bias.shape(), scores_shape) == scores_shape),
            kOp, ": bias of shape ", shape_str(bias.shape()), " does not broadcast to [B, H, Tq, Tk] = ",
            shape_str(scores_shape));
  Tensor keep;
  if (const Tensor& m = options.key_padding_mask; m.defined()) {
    VLP_CHECK(m.device() == q.device(), kOp, ": key_padding_mask is on ", m.device(), ", q on ", q.device());
    VLP_CHECK(m.dtype() == DType::Bool || m.dtype() == DType::U8 || m.dtype() == DType::I32 || m.dtype() == DType::I64,
              kOp, ": key_padding_mask must be Bool, U8, I32 or I64 (nonzero = attend), got ", m.dtype());
    VLP_CHECK(m.shape() == (Shape{c.B, c.Tk}), kOp, ": key_padding_mask of shape ", shape_str(m.shape()),
              ", expected [B, Tk] = ", shape_str({c.B, c.Tk}));
    keep = convert(m, DType::Bool, q.device());
  }
  VLP_CHECK(options.dropout_p >= 0.0 && options.dropout_p < 1.0, kOp, ": dropout_p must be in [0, 1), got ",
            options.dropout_p);
  c.causal = options.causal;
  c.scale = options.scale < 0.0 ? 1.0 / std::sqrt(double(c.D)) : options.scale;
  if (options.training && options.dropout_p > 0.0) {
    Generator& gen = options.generator ? *options.generator : default_generator();
    c.dropout_p = options.dropout_p;
    c.seed = gen.seed;
    c.offset = gen.take(c.B * c.H * c.Tq * c.Tk);  // element index = flat index into [B, H, Tq, Tk]
  }

  const Device dev = q.device();
  const DType dt = compute_dtype(q.dtype(), dev);
  Tensor qc = head_layout(q, dt), kc = head_layout(k, dt), vc = head_layout(v, dt);
  Tensor bias_c = !bias.defined() ? Tensor() : bias.dtype() == dt ? bias.detach() : convert(bias, dt);
  Tensor out = empty({c.B, c.H, c.Tq, c.Dv}, dt, dev);
  Tensor lse = empty({c.B, c.H, c.Tq}, dev.is_cpu() ? dt : norm_stats_dtype(dev), dev);
  call_attention_forward(kOp, c, qc, kc, vc, bias_c, keep, out, lse);
  Tensor y = out.dtype() == q.dtype() ? out : convert(out, q.dtype());

  if (Node* n = record(kOp, {q, k, v, bias}, {&y})) {
    // v and the output only enter dS; a graph that trains v alone (or nothing else) does not keep them.
    // (The CUDA backward always reads them.)
    const bool need_ds = n->needs_grad(0) || n->needs_grad(1) || n->needs_grad(3) || !dev.is_cpu();
    n->save({qc, kc, need_ds ? vc : Tensor(), need_ds ? out : Tensor(), lse, bias_c, keep});
    Shape bias_shape = bias.defined() ? bias.shape() : Shape{};
    n->backward = [c, dt, bias_shape](Node& n, const Grads& g) -> Grads {
      const Tensor &qs = n.saved[0], &ks = n.saved[1], &vs = n.saved[2], &os = n.saved[3], &ls = n.saved[4],
                   &bs = n.saved[5], &keep = n.saved[6];
      Tensor dout = convert(g[0], dt);
      const Device dev = dout.device();
      Tensor dq, dk, dv, dbias;
      if (n.needs_grad(0)) dq = empty({c.B, c.H, c.Tq, c.D}, dt, dev);
      if (n.needs_grad(1)) dk = empty({c.B, c.H, c.Tk, c.D}, dt, dev);
      if (n.needs_grad(2)) dv = empty({c.B, c.H, c.Tk, c.Dv}, dt, dev);
      Shape dbias_strides;
      if (n.needs_grad(3)) {  // accumulated in the bias's shape, left-padded to 4 dims
        Shape bias4(4 - bias_shape.size(), 1);
        bias4.insert(bias4.end(), bias_shape.begin(), bias_shape.end());
        dbias = zeros(bias4, dt, dev);
        dbias_strides = broadcast_strides(dbias, {c.B, c.H, c.Tq, c.Tk});
      }
      call_attention_backward(kOp, c, qs, ks, vs, bs, keep, os, ls, dout, dq, dk, dv, dbias, dbias_strides);
      if (dbias.defined()) dbias = as_strided(dbias, bias_shape, contiguous_strides(bias_shape), 0);
      return {dq, dk, dv, dbias};
    };
  }
  return y;
}

}  // namespace vlp
