#include "models/peft/linear_common.h"

#include <regex>

namespace vlp::peft {

std::vector<std::string> default_linear_targets(const std::string& backbone, const std::string& peft_type) {
  if (backbone == "gpt2") {
    if (peft_type == "FOURIERFT") return {"mlp.c_proj"};
    return {"c_attn"};
  }
  if (backbone == "t5") return {"q", "v"};
  if (backbone == "bart" || backbone == "clip_vision") return {"q_proj", "v_proj"};
  return {};
}

std::vector<std::pair<std::string, Linear*>> select_linear_targets(AttachContext& ctx, const std::string& method) {
  std::vector<std::string> defaults = default_linear_targets(ctx.backbone, method);
  const PeftConfig& c = ctx.config;
  bool explicit_targets = !c.target_modules.empty() || !c.target_regex.empty() || c.target_all_linear;
  VLP_CHECK(explicit_targets || !defaults.empty(), c.source, ": ", method, " has no default target modules for ",
            ctx.backbone.empty() ? std::string("this model") : "backbone '" + ctx.backbone + "'",
            "; set target_modules");
  std::vector<std::pair<std::string, Linear*>> out;
  for (auto& [name, layer] : linear_sites(ctx.model))
    if (name_matches_targets(c, name, defaults)) out.push_back({name, layer});
  VLP_CHECK(!out.empty(), c.source, ": ", method, ": no Linear layer of the model matches the target modules");
  return out;
}

template <class V>
static V pattern_lookup(const std::map<std::string, V>& patterns, const std::string& name, V fallback) {
  for (const auto& [key, value] : patterns) {
    if (key == name) return value;
    if (std::regex_match(name, std::regex("(.*\\.)?(" + key + ")"))) return value;
  }
  return fallback;
}

int pattern_int(const std::map<std::string, int>& patterns, const std::string& name, int fallback) {
  return pattern_lookup(patterns, name, fallback);
}
double pattern_double(const std::map<std::string, double>& patterns, const std::string& name, double fallback) {
  return pattern_lookup(patterns, name, fallback);
}

void add_delta_to_weight(Linear& layer, const Tensor& delta_out_in, double sign) {
  NoGradGuard no_grad;
  Tensor d = to(delta_out_in.detach(), layer.weight.dtype());
  add_(layer.weight, layer.fan_in_fan_out ? transpose(d, 0, 1) : d, sign);
}

void set_weight_out_in(Linear& layer, const Tensor& w_out_in) {
  NoGradGuard no_grad;
  Tensor w = to(w_out_in.detach(), layer.weight.dtype());
  copy_(layer.weight, layer.fan_in_fan_out ? transpose(w, 0, 1) : w);
}

bool module_dropout_skips(double p, const ForwardContext& ctx) {
  if (!ctx.training || p <= 0.0) return false;
  Tensor u = empty({1});
  uniform_(u, 0.0, 1.0, ctx.generator);
  return !(to_vector(u)[0] > p);
}

Tensor rank_dropout_mask(int64_t rows, double p, bool rescale, const ForwardContext& ctx, DType dtype) {
  Tensor u = empty({rows, 1});
  uniform_(u, 0.0, 1.0, ctx.generator);
  std::vector<double> v = to_vector(u);
  double kept = 0;
  for (double& e : v) {
    e = e > p ? 1.0 : 0.0;
    kept += e;
  }
  if (rescale && kept > 0)
    for (double& e : v) e *= double(rows) / kept;
  return from_vector(v, {rows, 1}, dtype);
}

}  // namespace vlp::peft
