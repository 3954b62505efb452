#include "models/peft/lokr.h"

#include <algorithm>

#include "models/peft/linear_common.h"

namespace vlp::peft {

std::pair<int64_t, int64_t> lokr_factorization(int64_t dimension, int64_t factor) {
  if (factor > 0 && dimension % factor == 0) return {factor, dimension / factor};
  if (factor == -1) factor = dimension;
  int64_t m = 1, n = dimension;
  while (m < n) {
    int64_t new_m = m + 1;
    while (dimension % new_m != 0) ++new_m;
    int64_t new_n = dimension / new_m;
    if (new_m + new_n > m + n || new_m > factor) break;
    m = new_m;
    n = new_n;
  }
  if (m > n) std::swap(m, n);
  return {m, n};
}

LokrAdapter::LokrAdapter(int64_t in, int64_t out, const LokrOptions& o, Generator& gen)
    : options(o), scaling(o.alpha / o.r) {
  VLP_CHECK(o.r > 0, "LoKr: r must be positive, got ", o.r);
  VLP_CHECK(o.init_weights == "true" || o.init_weights == "false" || o.init_weights == "lycoris",
            "LoKr: init_weights must be true, false or \"lycoris\", got ", o.init_weights);
  auto [in_m, in_n] = lokr_factorization(in, o.decompose_factor);
  auto [out_l, out_k] = lokr_factorization(out, o.decompose_factor);
  bool use_w1 = !(o.decompose_both && o.r < std::max(out_l, in_m) / 2.0);
  bool use_w2 = !(o.r < std::max(out_k, in_n) / 2.0);
  const double a = 2.23606797749979;
  const bool random = o.init_weights == "false", lycoris = o.init_weights == "lycoris";
  if (use_w1) {
    lokr_w1 = empty({out_l, in_m});
    if (random || lycoris) kaiming_uniform_(lokr_w1, a, &gen); else zeros_(lokr_w1);
    register_parameter("lokr_w1", &lokr_w1);
  } else {
    lokr_w1_a = empty({out_l, o.r});
    lokr_w1_b = empty({o.r, in_m});
    if (random || lycoris) kaiming_uniform_(lokr_w1_a, a, &gen); else zeros_(lokr_w1_a);
    kaiming_uniform_(lokr_w1_b, a, &gen);
    register_parameter("lokr_w1_a", &lokr_w1_a);
    register_parameter("lokr_w1_b", &lokr_w1_b);
  }
  if (use_w2) {
    lokr_w2 = empty({out_k, in_n});
    if (lycoris) zeros_(lokr_w2); else kaiming_uniform_(lokr_w2, a, &gen);
    register_parameter("lokr_w2", &lokr_w2);
  } else {
    lokr_w2_a = empty({out_k, o.r});
    lokr_w2_b = empty({o.r, in_n});
    kaiming_uniform_(lokr_w2_a, a, &gen);
    if (lycoris) zeros_(lokr_w2_b); else kaiming_uniform_(lokr_w2_b, a, &gen);
    register_parameter("lokr_w2_a", &lokr_w2_a);
    register_parameter("lokr_w2_b", &lokr_w2_b);
  }
  set_requires_grad(true);  // trainable, as nn.Parameter; copies of these tensors share the flag
}

Tensor LokrAdapter::delta_weight() const {
  Tensor w1 = lokr_w1.defined() ? lokr_w1 : matmul(lokr_w1_a, lokr_w1_b);
  Tensor w2 = lokr_w2.defined() ? lokr_w2 : matmul(lokr_w2_a, lokr_w2_b);
  return mul(kron(w1, w2), scaling);
}

Tensor LokrAdapter::forward(const Linear& layer, const Tensor& x, const Tensor& y, const ForwardContext& ctx) {
  if (module_dropout_skips(options.module_dropout, ctx)) return y;
  Tensor dw = delta_weight();
  if (ctx.training && options.rank_dropout > 0)
    dw = mul(dw, rank_dropout_mask(dw.size(0), options.rank_dropout, options.rank_dropout_scale, ctx, dw.dtype(), dw.device()));
  return add(y, linear(x, to(dw, x.dtype())));
}

void LokrAdapter::merge(Linear& layer) {
  add_delta_to_weight(layer, delta_weight(), 1.0);
  merged = true;
}

void LokrAdapter::unmerge(Linear& layer) {
  add_delta_to_weight(layer, delta_weight(), -1.0);
  merged = false;
}

void attach_lokr(AttachContext& ctx) {
  const PeftConfig& c = ctx.config;
  for (auto& [name, layer] : select_method_targets(ctx, "LOKR")) {
    LokrOptions o;
    o.r = pattern_int(c.rank_pattern, name, c.get_int("r", 8));
    o.alpha = pattern_double(c.alpha_pattern, name, c.get_double("alpha", 8.0));
    o.decompose_both = c.get_bool("decompose_both", false);
    o.decompose_factor = c.get_int("decompose_factor", -1);
    o.rank_dropout = c.get_double("rank_dropout", 0.0);
    o.module_dropout = c.get_double("module_dropout", 0.0);
    o.rank_dropout_scale = c.get_bool("rank_dropout_scale", false);
    const auto& init = c.raw.contains("init_weights") ? c.raw["init_weights"] : nlohmann::json(true);
    if (init.is_boolean())
      o.init_weights = init.get<bool>() ? "true" : "false";
    else if (init.is_string())
      o.init_weights = init.get<std::string>();
    else
      VLP_FAIL(c.source, ": field 'init_weights' must be a boolean or \"lycoris\"");
    attach_adapter(*layer, ctx.adapter_name,
                   std::make_shared<LokrAdapter>(layer->in_features(), layer->out_features(), o, ctx.generator));
  }
}

}  // namespace vlp::peft
