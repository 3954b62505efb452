// Differentiable losses over kernels/cpu/loss. Reductions add the per-row (or per-element) losses in
// double in a fixed order, so a loss value does not depend on the thread count.
//
// cross_entropy keeps, for a logits gradient, the logits (compute dtype), the per-row logsumexp (F64),
// the targets and the sample weights; for a sample-weight gradient, the unweighted per-row losses.
// With Reduction::Mean and every row ignored, the loss is 0 with a zero gradient (PyTorch gives NaN):
// a batch whose labels are all padding then leaves training undisturbed.
#include "autograd/loss.h"

#include "autograd/dispatch.h"
#include "autograd/elementwise.h"
#include "autograd/graph.h"
#include "autograd/kernel_calls.h"
#include "autograd/reduce.h"
#include "kernels/cpu/loss.h"

namespace vlp {

namespace {

template <class T>
const T* optional_data(const Tensor& t) {
  return t.defined() ? t.data<T>() : nullptr;
}
template <class T>
T* optional_data_mut(const Tensor& t) {
  return t.defined() ? t.data<T>() : nullptr;
}

}  // namespace

Tensor cross_entropy(const Tensor& logits, const Tensor& target, int64_t ignore_index, double label_smoothing,
                     const Tensor& sample_weight, Reduction reduction) {
  const char* op = "cross_entropy";
  check_operands(op, {logits, sample_weight}, /*same_dtype=*/false, /*cuda_ok=*/true);
  VLP_CHECK(is_floating(logits.dtype()), op, ": logits must be a floating tensor, got ", logits.dtype());
  VLP_CHECK(logits.dim() == 2, op, ": logits must be [N, C], got shape ", shape_str(logits.shape()));
  const int64_t n = logits.size(0), c = logits.size(1);
  VLP_CHECK(c > 0, op, ": logits ", shape_str(logits.shape()), " have no classes");
  VLP_CHECK(target.defined(), op, ": target is undefined");
  VLP_CHECK(target.dim() == 1 && target.size(0) == n, op, ": target must be [N] = [", n, "] for logits ",
            shape_str(logits.shape()), ", got shape ", shape_str(target.shape()));
  VLP_CHECK(label_smoothing >= 0.0 && label_smoothing <= 1.0, op, ": label_smoothing must be in [0, 1], got ",
            label_smoothing);
  if (sample_weight.defined()) {
    VLP_CHECK(is_floating(sample_weight.dtype()), op, ": sample_weight must be a floating tensor, got ",
              sample_weight.dtype());
    VLP_CHECK(sample_weight.dim() == 1 && sample_weight.size(0) == n, op, ": sample_weight must be [N] = [", n,
              "], got shape ", shape_str(sample_weight.shape()));
  }
  Tensor tgt = index_as_i64(op, target);
  const int64_t* t = tgt.data<int64_t>();
  int64_t count = 0;  // rows that are not ignored: the Mean normaliser
  for (int64_t i = 0; i < n; ++i) {
    if (t[i] == ignore_index) continue;
    VLP_CHECK(t[i] >= 0 && t[i] < c, op, ": target ", t[i], " at row ", i, " is outside [0, ", c,
              ") and is not ignore_index (", ignore_index, ")");
    ++count;
  }

  const Device dev = logits.device();
  const DType dt = compute_dtype(logits.dtype(), dev);
  Tensor xc = convert(logits, dt);
  Tensor wc = sample_weight.defined() ? convert(sample_weight, dt) : Tensor();
  const bool weight_grad = any_requires_grad({sample_weight});
  const DType st = norm_stats_dtype(dev);  // F64 on the CPU, F32 on CUDA
  Tensor rows = empty({n}, st, dev), lse = empty({n}, st, dev);
  Tensor raw = weight_grad ? empty({n}, st, dev) : Tensor();
  call_cross_entropy_forward(op, xc, tgt, wc, ignore_index, label_smoothing, rows, lse, raw);

  Tensor out;
  double scale = 1.0;  // d(output)/d(row loss) apart from the incoming gradient
  if (reduction == Reduction::None) {
    out = convert(rows, logits.dtype());
  } else {
    double total = 0.0;
    const std::vector<double> r = to_vector(rows);  // in row order, in double, on every device
    for (int64_t i = 0; i < n; ++i) total += r[size_t(i)];
    if (reduction == Reduction::Mean) scale = count > 0 ? 1.0 / double(count) : 0.0;
    out = scalar_tensor(total * scale, logits.dtype(), dev);
  }

  if (Node* node = record(op, {logits, sample_weight}, {&out})) {
    const bool dlogits = node->needs_grad(0);
    node->save({tgt, dlogits ? xc : Tensor(), dlogits ? lse : Tensor(), dlogits ? wc : Tensor(),
                node->needs_grad(1) ? raw : Tensor()});
    const int64_t stride = reduction == Reduction::None ? 1 : 0;
    node->backward = [op, dt, n, c, ignore_index, label_smoothing, stride, scale](Node& node,
                                                                                 const Grads& g) -> Grads {
      Tensor dy = convert(g[0], dt);
      Tensor dx = node.needs_grad(0) ? empty({n, c}, dt, dy.device()) : Tensor();
      Tensor dw = node.needs_grad(1) ? empty({n}, dt, dy.device()) : Tensor();
      const auto& s = node.saved;
      call_cross_entropy_backward(op, s[1], s[0], s[3], s[2], s[4], dy, stride, scale, c, ignore_index,
                                  label_smoothing, dx, dw);
      return {dx, dw};
    };
  }
  return out;
}

Tensor binary_cross_entropy_with_logits(const Tensor& logits, const Tensor& target, Reduction reduction) {
  const char* op = "binary_cross_entropy_with_logits";
  VLP_CHECK(logits.defined() && target.defined(), op, ": logits and target must both be defined");
  check_operands(op, {logits, target}, /*same_dtype=*/true, /*cuda_ok=*/true);
  VLP_CHECK(is_floating(logits.dtype()), op, ": logits must be a floating tensor, got ", logits.dtype());
  VLP_CHECK(target.shape() == logits.shape(), op, ": target of shape ", shape_str(target.shape()),
            " does not match logits of shape ", shape_str(logits.shape()));
  const Device device = logits.device();
  const DType dt = compute_dtype(logits.dtype(), device);
  const int64_t n = logits.numel();
  Tensor xc = convert(logits, dt), tc = convert(target, dt);
  Tensor out;
  double scale = 1.0;
  if (reduction == Reduction::Mean) scale = 1.0 / double(n);  // n == 0: NaN, as PyTorch
  if (!device.is_cpu()) {
    // Per-element losses on the GPU; a reduction sums them in F32 (no gradient is recorded through these).
    Tensor loss = empty(logits.shape(), reduction == Reduction::None ? dt : DType::F32, device);
    call_bce_with_logits_forward(op, xc, tc, loss);
    if (reduction == Reduction::None) {
      out = convert(loss, logits.dtype());
    } else {
      NoGradGuard no_grad;
      out = convert(mul(sum(loss), scale), logits.dtype());
    }
  } else {
    dispatch_float(op, dt, [&](auto tag) {
      using T = decltype(tag);
      if (reduction == Reduction::None) {
        Tensor loss = empty(logits.shape(), dt);
        cpu::bce_with_logits_forward<T>(xc.data<T>(), tc.data<T>(), loss.data<T>(), n);
        out = loss.dtype() == logits.dtype() ? loss : convert(loss, logits.dtype());
      } else {
        const double total = cpu::bce_with_logits_forward<T>(xc.data<T>(), tc.data<T>(), nullptr, n);
        out = scalar_tensor(total * scale, logits.dtype());
      }
    });
  }
  if (Node* node = record(op, {logits, target}, {&out})) {
    node->save({xc, node->needs_grad(0) ? tc : Tensor()});  // dt = -g x needs x only
    const int64_t stride = reduction == Reduction::None ? 1 : 0;
    node->backward = [op, dt, stride, scale](Node& node, const Grads& g) -> Grads {
      Tensor dy = convert(g[0], dt);
      const Tensor &xs = node.saved[0], &ts = node.saved[1];
      Tensor dx = node.needs_grad(0) ? empty(xs.shape(), dt, xs.device()) : Tensor();
      Tensor dtarget = node.needs_grad(1) ? empty(xs.shape(), dt, xs.device()) : Tensor();
      call_bce_with_logits_backward(op, xs, ts, dy, stride, scale, dx, dtarget);
      return {dx, dtarget};
    };
  }
  return out;
}

}  // namespace vlp
