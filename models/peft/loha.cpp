#include "models/peft/loha.h"

#include "models/peft/linear_common.h"

namespace vlp::peft {

LohaAdapter::LohaAdapter(int64_t in, int64_t out, const LohaOptions& o, Generator& gen)
    : options(o), scaling(o.alpha / o.r) {
  VLP_CHECK(o.r > 0, "LoHa: r must be positive, got ", o.r);
  hada_w1_a = empty({out, o.r});
  hada_w1_b = empty({o.r, in});
  hada_w2_a = empty({out, o.r});
  hada_w2_b = empty({o.r, in});
  const double a = 2.23606797749979;  // Kaiming-uniform with a = sqrt(5), as nn.Linear
  kaiming_uniform_(hada_w1_a, a, &gen);
  kaiming_uniform_(hada_w1_b, a, &gen);
  kaiming_uniform_(hada_w2_a, a, &gen);
  if (o.init_weights)
    zeros_(hada_w2_b);
  else
    kaiming_uniform_(hada_w2_b, a, &gen);
  register_parameter("hada_w1_a", &hada_w1_a);
  register_parameter("hada_w1_b", &hada_w1_b);
  register_parameter("hada_w2_a", &hada_w2_a);
  register_parameter("hada_w2_b", &hada_w2_b);
  set_requires_grad(true);  // trainable, as nn.Parameter; copies of these tensors share the flag
}

Tensor LohaAdapter::delta_weight() const {
  return mul(mul(matmul(hada_w1_a, hada_w1_b), matmul(hada_w2_a, hada_w2_b)), scaling);
}

Tensor LohaAdapter::forward(const Linear& layer, const Tensor& x, const Tensor& y, const ForwardContext& ctx) {
  if (module_dropout_skips(options.module_dropout, ctx)) return y;
  Tensor dw = delta_weight();
  if (ctx.training && options.rank_dropout > 0)
    dw = mul(dw, rank_dropout_mask(dw.size(0), options.rank_dropout, true, ctx, dw.dtype(), dw.device()));
  return add(y, linear(x, to(dw, x.dtype())));
}

void LohaAdapter::merge(Linear& layer) {
  add_delta_to_weight(layer, delta_weight(), 1.0);
  merged = true;
}

void LohaAdapter::unmerge(Linear& layer) {
  add_delta_to_weight(layer, delta_weight(), -1.0);
  merged = false;
}

void attach_loha(AttachContext& ctx) {
  const PeftConfig& c = ctx.config;
  for (auto& [name, layer] : select_method_targets(ctx, "LOHA")) {
    LohaOptions o;
    o.r = pattern_int(c.rank_pattern, name, c.get_int("r", 8));
    o.alpha = pattern_double(c.alpha_pattern, name, c.get_double("alpha", 8.0));
    o.rank_dropout = c.get_double("rank_dropout", 0.0);
    o.module_dropout = c.get_double("module_dropout", 0.0);
    o.init_weights = c.get_bool("init_weights", true);
    attach_adapter(*layer, ctx.adapter_name,
                   std::make_shared<LohaAdapter>(layer->in_features(), layer->out_features(), o, ctx.generator));
  }
}

}  // namespace vlp::peft
