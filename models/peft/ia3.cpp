// IA3: learned rescaling of a linear layer's input or output (spec/peft.md §4.7).
#include "models/peft/ia3.h"

#include <regex>

namespace vlp::peft {

Ia3Layer::Ia3Layer(const Linear& layer, bool feedforward_) : feedforward(feedforward_) {
  ia3_l = feedforward ? ones({1, layer.in_features()}) : ones({layer.out_features(), 1});
  register_parameter("ia3_l", &ia3_l);
}

Tensor Ia3Layer::forward(const Linear& layer, const Tensor& x, const Tensor& y, const ForwardContext& ctx) {
  VLP_CHECK(ctx.sample_adapters.empty(), "IA3 does not support mixed-adapter batches (sample_adapters)");
  if (!feedforward) return mul(y, to(reshape(ia3_l, {-1}), y.dtype()));
  // Input scaling: the first active feed-forward IA3 adapter of the layer applies the product of all of them.
  Tensor l;
  for (const auto& [name, a] : layer.adapters) {
    auto* other = dynamic_cast<Ia3Layer*>(a.get());
    if (!other || !other->feedforward || !other->active || other->merged) continue;
    if (!l.defined() && other != this) return y;  // an earlier one did it
    l = l.defined() ? mul(l, reshape(other->ia3_l, {-1})) : reshape(other->ia3_l, {-1});
  }
  Tensor scaled = mul(x, to(l, x.dtype()));
  if (!y.defined()) return linear(scaled, layer.weight_out_in(), layer.bias);
  // Another adapter already produced y from the unscaled input: add the difference.
  return add(y, linear(sub(scaled, x), layer.weight_out_in()));
}

void Ia3Layer::merge(Linear& layer) {
  NoGradGuard no_grad;
  Tensor w = layer.weight_out_in();
  copy_(w, mul(w, to(ia3_l, w.dtype())));  // [d_out, 1] scales rows, [1, d_in] columns
  if (!feedforward && layer.bias.defined()) copy_(layer.bias, mul(layer.bias, to(reshape(ia3_l, {-1}), layer.bias.dtype())));
}

void Ia3Layer::unmerge(Linear& layer) {
  NoGradGuard no_grad;
  Tensor w = layer.weight_out_in();
  Tensor l = add(ia3_l, 1e-8);
  copy_(w, div(w, to(l, w.dtype())));
  if (!feedforward && layer.bias.defined()) copy_(layer.bias, div(layer.bias, to(reshape(l, {-1}), layer.bias.dtype())));
}

void attach_ia3(AttachContext& ctx) {
  const PeftConfig& c = ctx.config;
  const bool default_targets_used = c.target_modules.empty() && c.target_regex.empty() && !c.target_all_linear;
  auto targets = select_linear_targets(ctx.model, c, default_targets("ia3", ctx.backbone));
  std::vector<std::string> ff_list;
  std::string ff_regex;
  if (c.raw.contains("feedforward_modules") && !c.raw["feedforward_modules"].is_null()) {
    const auto& v = c.raw["feedforward_modules"];
    if (v.is_string()) {
      ff_regex = v.get<std::string>();
    } else {
      VLP_CHECK(v.is_array(), c.source, ": field 'feedforward_modules' must be a list of strings or a regex string");
      for (const auto& e : v) {
        VLP_CHECK(e.is_string(), c.source, ": field 'feedforward_modules' must hold strings, got ", e.dump());
        ff_list.push_back(e.get<std::string>());
      }
    }
  } else if (default_targets_used) {
    ff_list = default_targets("ia3_feedforward", ctx.backbone);
  }
  if (!c.target_modules.empty())
    for (const auto& f : ff_list)
      VLP_CHECK(std::find(c.target_modules.begin(), c.target_modules.end(), f) != c.target_modules.end(), c.source,
                ": field 'feedforward_modules' entry '", f, "' is not in target_modules (it must be a subset)");
  const bool init = c.get_bool("init_ia3_weights", true);
  for (auto& [name, layer] : targets) {
    bool ff = false;
    if (!ff_regex.empty()) {
      ff = std::regex_match(name, std::regex(ff_regex));
    } else {
      for (const auto& f : ff_list) ff = ff || name == f || (name.size() > f.size() && name.compare(name.size() - f.size() - 1, f.size() + 1, "." + f) == 0);
    }
    auto a = std::make_shared<Ia3Layer>(*layer, ff);
    if (!init) {
      NoGradGuard no_grad;
      normal_(a->ia3_l, 0.0, 1.0, &ctx.generator);
    }
    attach_adapter(*layer, ctx.adapter_name, a);
  }
}

}  // namespace vlp::peft
