#include "autograd/gradcheck.h"

#include <cmath>

#include "autograd/ops.h"
#include "runtime/rng.h"

namespace vlp {

namespace {
double weighted_sum(const Tensor& out, const std::vector<double>& w) {
  std::vector<double> v = to_vector(out);
  double s = 0.0;
  for (size_t i = 0; i < v.size(); ++i) s += v[i] * w[i];
  return s;
}
}  // namespace

std::string gradcheck(const std::function<Tensor(const std::vector<Tensor>&)>& f, const std::vector<Tensor>& inputs,
                      const GradcheckOptions& opt) {
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (!inputs[i].defined() || !inputs[i].requires_grad()) continue;
    VLP_CHECK(inputs[i].dtype() == DType::F64 && inputs[i].is_cpu(), "gradcheck: input ", i,
              " must be an F64 CPU tensor, got ", inputs[i].dtype(), " on ", inputs[i].device());
    VLP_CHECK(inputs[i].is_leaf(), "gradcheck: input ", i, " must be a leaf");
    inputs[i].set_grad(Tensor());
  }
  Tensor out = f(inputs);
  VLP_CHECK(out.requires_grad(), "gradcheck: the output does not depend on any input that requires grad");
  Generator gen(opt.seed);
  Tensor w = randn(out.shape(), &gen, DType::F64);
  std::vector<double> wv = to_vector(w);
  backward(out, to(w, out.dtype()));

  for (size_t i = 0; i < inputs.size(); ++i) {
    const Tensor& x = inputs[i];
    if (!x.defined() || !x.requires_grad()) continue;
    Tensor g = x.grad();
    if (!g.defined()) g = zeros(x.shape(), DType::F64);  // no path from this input: gradient zero
    std::vector<double> analytic = to_vector(g);
    // Walk the input's elements in row-major order through its strides.
    double* base = static_cast<double*>(x.storage()->data);
    for (int64_t j = 0; j < x.numel(); ++j) {
      int64_t off = x.offset(), rest = j;
      for (int64_t d = x.dim() - 1; d >= 0; --d) {
        off += (rest % x.size(d)) * x.stride(d);
        rest /= x.size(d);
      }
      double orig = base[off], plus, minus;
      {
        NoGradGuard no_grad;
        base[off] = orig + opt.eps;
        plus = weighted_sum(f(inputs), wv);
        base[off] = orig - opt.eps;
        minus = weighted_sum(f(inputs), wv);
        base[off] = orig;
      }
      double numeric = (plus - minus) / (2.0 * opt.eps);
      double a = analytic[size_t(j)];
      if (!(std::abs(a - numeric) <= opt.atol + opt.rtol * std::abs(numeric)))
        return str("gradient mismatch for input ", i, " (shape ", shape_str(x.shape()), ") element ", j,
                   ": analytic ", a, ", numeric ", numeric);
    }
  }
  return "";
}

}  // namespace vlp
