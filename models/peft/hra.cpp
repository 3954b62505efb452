#include "models/peft/hra.h"

#include "models/peft/linear_common.h"

namespace vlp::peft {

HraAdapter::HraAdapter(int64_t in, const HraOptions& o, Generator& gen) : options(o) {
  VLP_CHECK(o.r > 0, "HRA: r must be positive, got ", o.r);
  const double a = 2.23606797749979;
  if (o.init_weights && o.r % 2 == 0) {
    // Each Kaiming column twice: consecutive equal reflections cancel, so H = I.
    Tensor half = empty({in, o.r / 2});
    kaiming_uniform_(half, a, &gen);
    hra_u = contiguous(reshape(expand(unsqueeze(half, 2), {in, o.r / 2, 2}), {in, o.r}));
  } else {
    hra_u = empty({in, o.r});
    kaiming_uniform_(hra_u, a, &gen);
  }
  register_parameter("hra_u", &hra_u);
  set_requires_grad(true);  // trainable, as nn.Parameter; copies of this tensor share the flag
}

// Rows z of x become (H z_col)ᵀ. Without Gram-Schmidt H = R_1 ... R_r, so R_r acts first.
Tensor HraAdapter::reflect(const Tensor& x) const {
  // Device first (merge reflects a CPU float64 identity; the GPU holds no float64), then dtype.
  Tensor u = to(to(hra_u, x.device()), x.dtype());
  const int64_t r = u.size(1);
  if (options.apply_gs) {
    std::vector<Tensor> basis;
    for (int64_t i = 0; i < r; ++i) {
      Tensor ui = select(u, 1, i);
      for (const Tensor& b : basis) ui = sub(ui, mul(sum(mul(b, ui)), b));
      basis.push_back(div(ui, sqrt(sum(mul(ui, ui)))));
    }
    Tensor ub = stack(basis, 1);  // [in, r], orthonormal columns
    return sub(x, mul(matmul(matmul(x, ub), transpose(ub, 0, 1)), 2.0));
  }
  Tensor un = div(u, sqrt(sum(mul(u, u), {0}, true)));
  Tensor z = x;
  for (int64_t i = r - 1; i >= 0; --i) {
    Tensor ui = select(un, 1, i);  // [in]
    z = sub(z, mul(unsqueeze(sum(mul(z, ui), {-1}), -1), mul(ui, 2.0)));
  }
  return z;
}

Tensor HraAdapter::forward(const Linear& layer, const Tensor& x, const Tensor& y, const ForwardContext& ctx) {
  Tensor z = reflect(x);
  if (!y.defined()) return layer.base_forward(z);
  return add(y, linear(sub(z, x), layer.weight_out_in()));  // after another adapter: W x -> W H x
}

void HraAdapter::merge(Linear& layer) {
  NoGradGuard no_grad;
  // reflect(I) has rows (H e_j)ᵀ, i.e. it is Hᵀ.
  // In double on the CPU whatever the layer's device (the CUDA kernels compute in F32); copied back.
  Tensor ht = reflect(identity(hra_u.size(0), DType::F64));
  set_weight_out_in(layer, matmul(host_f64(layer.weight_out_in()), transpose(ht, 0, 1)));
  merged = true;
}

void HraAdapter::unmerge(Linear& layer) {
  NoGradGuard no_grad;
  Tensor ht = reflect(identity(hra_u.size(0), DType::F64));
  set_weight_out_in(layer, matmul(host_f64(layer.weight_out_in()), ht));
  merged = false;
}

void attach_hra(AttachContext& ctx) {
  const PeftConfig& c = ctx.config;
  for (auto& [name, layer] : select_method_targets(ctx, "HRA")) {
    HraOptions o;
    o.r = pattern_int(c.rank_pattern, name, c.get_int("r", 8));
    o.apply_gs = c.get_bool("apply_GS", false);
    o.init_weights = c.get_bool("init_weights", true);
    attach_adapter(*layer, ctx.adapter_name, std::make_shared<HraAdapter>(layer->in_features(), o, ctx.generator));
  }
}

}  // namespace vlp::peft
