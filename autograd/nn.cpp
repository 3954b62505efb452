// Differentiable NN ops over kernels/cpu/{softmax,norm,embedding,random} (and their kernels/cuda
// counterparts for CUDA tensors, through autograd/kernel_calls; on CUDA BF16 is computed as it is and the
// norm statistics are F32). Inputs of any layout are
// copied to contiguous compute-dtype buffers (BF16/F16 computed in F32, the result converted back);
// backward works in the compute dtype and the engine converts the gradient to the input's dtype.
//
// What each node keeps for backward:
//   softmax, log_softmax  the output (compute dtype)
//   layer_norm            x, per-row mean and rstd (F64), gamma; x and the statistics only when dx or
//                         dgamma is wanted, gamma only for dx; nothing for dbeta alone
//   rms_norm              x and per-row rstd (F64), weight only for dx
//   embedding             the ids (I64), never the table
//   dropout               nothing: backward regenerates the mask from the saved (seed, offset)
#include "autograd/nn.h"

#include "autograd/dispatch.h"
#include "autograd/graph.h"
#include "autograd/kernel_calls.h"
#include "kernels/cpu/embedding.h"
#include "kernels/cpu/norm.h"
#include "kernels/cpu/random.h"
#include "kernels/cpu/softmax.h"

namespace vlp {

namespace {

void check_floating(const char* op, const Tensor& t, const char* what) {
  VLP_CHECK(is_floating(t.dtype()), op, ": ", what, " must be a floating tensor, got ", t.dtype());
}

// The gradient arriving from the engine, as a contiguous tensor of the compute dtype dt.
Tensor incoming(const Tensor& g, DType dt) { return convert(g, dt); }

Tensor restore_dtype(const Tensor& y, DType dtype) { return y.dtype() == dtype ? y : convert(y, dtype); }

// Product of x's dims before the last: the number of rows a last-dim op sees.
int64_t leading_rows(const Tensor& x) {
  int64_t rows = 1;
  for (int64_t d = 0; d + 1 < x.dim(); ++d) rows *= x.size(d);
  return rows;
}

Tensor softmax_op(const char* name, const Tensor& x, int64_t dim, bool log) {
  check_operands(name, {x}, true, /*cuda_ok=*/true);
  check_floating(name, x, "input");
  // A 0-dim tensor is one row of one element (dim 0 or -1, as PyTorch allows).
  int64_t outer = 1, n = 1, inner = 1;
  if (x.dim() == 0) {
    VLP_CHECK(dim == 0 || dim == -1, name, ": dim ", dim, " out of range for a 0-dim tensor");
  } else {
    dim = x.wrap_dim(dim);
    for (int64_t d = 0; d < x.dim(); ++d) (d < dim ? outer : d == dim ? n : inner) *= x.size(d);
  }
  const DType dt = compute_dtype(x.dtype(), x.device());
  Tensor xc = convert(x, dt);
  Tensor y = empty(x.shape(), dt, x.device());
  call_softmax_forward(name, xc, y, outer, n, inner, log);
  Tensor out = restore_dtype(y, x.dtype());
  if (Node* node = record(name, {x}, {&out})) {
    node->save({y});
    node->backward = [name, dt, outer, n, inner, log](Node& node, const Grads& g) -> Grads {
      Tensor dy = incoming(g[0], dt);
      Tensor dx = empty(dy.shape(), dt, dy.device());
      call_softmax_backward(name, node.saved[0], dy, dx, outer, n, inner, log);
      return {dx};
    };
  }
  return out;
}

// weight / bias of a last-dim normalisation: undefined, or [d].
void check_affine(const char* op, const Tensor& p, const char* what, const Tensor& x) {
  if (!p.defined()) return;
  VLP_CHECK(p.dim() == 1 && p.size(0) == x.size(-1), op, ": ", what, " of shape ", shape_str(p.shape()),
            " does not match the last dim of the input ", shape_str(x.shape()), " (expected [", x.size(-1), "])");
}

Tensor optional_convert(const Tensor& t, DType dt) { return t.defined() ? convert(t, dt) : Tensor(); }

}  // namespace

Tensor softmax(const Tensor& x, int64_t dim) { return softmax_op("softmax", x, dim, /*log=*/false); }
Tensor log_softmax(const Tensor& x, int64_t dim) { return softmax_op("log_softmax", x, dim, /*log=*/true); }

Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps) {
  const char* op = "layer_norm";
  check_operands(op, {x, weight, bias}, true, /*cuda_ok=*/true);
  check_floating(op, x, "input");
  VLP_CHECK(x.dim() >= 1, op, ": input must have at least 1 dim, got a 0-dim tensor");
  VLP_CHECK(eps >= 0.0, op, ": eps must be non-negative, got ", eps);
  check_affine(op, weight, "weight", x);
  check_affine(op, bias, "bias", x);
  const DType dt = compute_dtype(x.dtype(), x.device());
  const int64_t rows = leading_rows(x), d = x.size(-1);
  Tensor xc = convert(x, dt), wc = optional_convert(weight, dt), bc = optional_convert(bias, dt);
  const DType st = norm_stats_dtype(x.device());
  Tensor y = empty(x.shape(), dt, x.device()), mean = empty({rows}, st, x.device()), rstd = empty({rows}, st, x.device());
  call_layer_norm_forward(op, xc, wc, bc, y, mean, rstd, rows, d, eps);
  Tensor out = restore_dtype(y, x.dtype());
  if (Node* node = record(op, {x, weight, bias}, {&out})) {
    const bool stats = node->needs_grad(0) || node->needs_grad(1);
    node->save({stats ? xc : Tensor(), stats ? mean : Tensor(), stats ? rstd : Tensor(),
                node->needs_grad(0) ? wc : Tensor()});
    node->backward = [op, dt, rows, d](Node& node, const Grads& g) -> Grads {
      Tensor dy = incoming(g[0], dt);
      const Tensor &xs = node.saved[0], &ms = node.saved[1], &rs = node.saved[2], &ws = node.saved[3];
      const Device dev = dy.device();
      Tensor dx = node.needs_grad(0) ? empty(dy.shape(), dt, dev) : Tensor();
      Tensor dw = node.needs_grad(1) ? empty({d}, dt, dev) : Tensor();
      Tensor db = node.needs_grad(2) ? empty({d}, dt, dev) : Tensor();
      call_layer_norm_backward(op, xs, ms, rs, ws, dy, dx, dw, db, rows, d);
      return {dx, dw, db};
    };
  }
  return out;
}

Tensor rms_norm(const Tensor& x, const Tensor& weight, double eps) {
  const char* op = "rms_norm";
  check_operands(op, {x, weight}, true, /*cuda_ok=*/true);
  check_floating(op, x, "input");
  VLP_CHECK(x.dim() >= 1, op, ": input must have at least 1 dim, got a 0-dim tensor");
  VLP_CHECK(eps >= 0.0, op, ": eps must be non-negative, got ", eps);
  check_affine(op, weight, "weight", x);
  const DType dt = compute_dtype(x.dtype(), x.device());
  const int64_t rows = leading_rows(x), d = x.size(-1);
  Tensor xc = convert(x, dt), wc = optional_convert(weight, dt);
  Tensor y = empty(x.shape(), dt, x.device()), rstd = empty({rows}, norm_stats_dtype(x.device()), x.device());
  call_rms_norm_forward(op, xc, wc, y, rstd, rows, d, eps);
  Tensor out = restore_dtype(y, x.dtype());
  if (Node* node = record(op, {x, weight}, {&out})) {
    node->save({xc, rstd, node->needs_grad(0) ? wc : Tensor()});
    node->backward = [op, dt, rows, d](Node& node, const Grads& g) -> Grads {
      Tensor dy = incoming(g[0], dt);
      Tensor dx = node.needs_grad(0) ? empty(dy.shape(), dt, dy.device()) : Tensor();
      Tensor dw = node.needs_grad(1) ? empty({d}, dt, dy.device()) : Tensor();
      call_rms_norm_backward(op, node.saved[0], node.saved[1], node.saved[2], dy, dx, dw, rows, d);
      return {dx, dw};
    };
  }
  return out;
}

Tensor embedding(const Tensor& weight, const Tensor& ids) {
  const char* op = "embedding";
  check_operands(op, {weight}, true, /*cuda_ok=*/true);
  VLP_CHECK(weight.dim() == 2, op, ": weight must be [num_embeddings, dim], got shape ", shape_str(weight.shape()));
  Tensor idx = index_as_i64(op, ids);
  const int64_t vocab = weight.size(0), d = weight.size(1), n = idx.numel();
  const int64_t* id = idx.data<int64_t>();
  if (int64_t bad = cpu::first_invalid_id(id, n, vocab); bad >= 0) {
    Shape position(size_t(idx.dim()));  // the multi-index of flat position `bad` in the ids tensor
    for (int64_t k = idx.dim() - 1, rest = bad; k >= 0; --k) {
      position[size_t(k)] = rest % idx.size(k);
      rest /= idx.size(k);
    }
    VLP_FAIL(op, ": id ", id[bad], " at position ", shape_str(position), " of ids ", shape_str(idx.shape()),
             " is outside [0, ", vocab, ") for a table of ", vocab, " rows");
  }
  Tensor w = contiguous_raw(weight);
  Shape out_shape = idx.shape();
  out_shape.push_back(d);
  Tensor out = empty(out_shape, weight.dtype(), weight.device());
  call_embedding_forward(op, w, idx, out);
  if (Node* node = record(op, {weight}, {&out})) {
    node->save({idx});
    node->backward = [op, vocab, d](Node& node, const Grads& g) -> Grads {
      const Tensor& saved_ids = node.saved[0];
      const DType dt = compute_dtype(g[0].dtype(), g[0].device());
      Tensor dy = incoming(g[0], dt);
      Tensor dw = empty({vocab, d}, dt, dy.device());
      call_embedding_backward(op, dy, saved_ids, dw);
      return {dw};
    };
  }
  return out;
}

// p == 1 is refused rather than returning zeros: a layer that drops everything is almost always a
// configuration mistake, and 1/(1-p) has no value there.
Tensor dropout(const Tensor& x, double p, bool training, Generator* gen) {
  const char* op = "dropout";
  VLP_CHECK(x.defined(), op, ": input is undefined");
  VLP_CHECK(p >= 0.0 && p < 1.0, op, ": p must be in [0, 1), got ", p,
            p == 1.0 ? " (p = 1 would drop every element; remove the layer or use p < 1)" : "");
  if (!training || p == 0.0) return x;
  check_operands(op, {x}, true, /*cuda_ok=*/true);
  check_floating(op, x, "input");
  Generator& g = gen ? *gen : default_generator();
  const uint64_t seed = g.seed, offset = g.take(x.numel());
  const DType dt = compute_dtype(x.dtype(), x.device());
  Tensor xc = convert(x, dt);  // row-major order: element i of the mask is element i of x in that order
  Tensor y = empty(x.shape(), dt, x.device());
  call_dropout(op, xc, y, p, seed, offset);
  Tensor out = restore_dtype(y, x.dtype());
  if (Node* node = record(op, {x}, {&out})) {
    node->backward = [op, dt, p, seed, offset](Node&, const Grads& g) -> Grads {
      Tensor dy = incoming(g[0], dt);
      Tensor dx = empty(dy.shape(), dt, dy.device());
      call_dropout(op, dy, dx, p, seed, offset);
      return {dx};
    };
  }
  return out;
}

}  // namespace vlp
