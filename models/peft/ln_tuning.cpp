// LayerNorm tuning (spec/peft.md §4.11) and BitFit (§4.12).
#include "models/peft/ln_tuning.h"

#include <utility>

namespace vlp::peft {

namespace {
Tensor fresh_copy(const Tensor& t) {
  if (!t.defined()) return t;
  NoGradGuard no_grad;
  Tensor c = empty(t.shape(), t.dtype(), t.device());
  copy_(c, t);
  return c;
}

bool internal_path(const std::string& p) {
  return p.find(".adapters.") != std::string::npos || p.rfind("peft_", 0) == 0;
}
}  // namespace

namespace {
// The stashed tensor is no registration of any module, so Module::to_device leaves it where it was: bring it
// to the device and dtype of the tensor it replaces (keeping its trainable flag) before swapping it in.
void follow(Tensor& stash, const Tensor& live) {
  if (!stash.defined() || !live.defined() || (stash.device() == live.device() && stash.dtype() == live.dtype()))
    return;
  const bool grad = stash.requires_grad();
  stash = convert(stash.detach(), live.dtype(), live.device());
  if (grad) stash.set_requires_grad(true);
}
}  // namespace

void LnTuningAdapter::set_active(bool on) {
  if (on == swapped_in) return;
  follow(stash_weight, *norm_weight);
  std::swap(*norm_weight, stash_weight);
  if (norm_bias) {
    follow(stash_bias, *norm_bias);
    std::swap(*norm_bias, stash_bias);
  }
  swapped_in = on;
}

void attach_ln_tuning(AttachContext& ctx) {
  const PeftConfig& c = ctx.config;
  const auto defaults = default_targets("ln_tuning", ctx.backbone);
  VLP_CHECK(!c.target_modules.empty() || !c.target_regex.empty() || !defaults.empty(), c.source,
            ": field 'target_modules' is required: LN_TUNING has no default targets for backbone '", ctx.backbone, "'");
  int attached = 0;
  for (auto& [path, m] : ctx.model.named_modules()) {
    if (internal_path(path)) continue;
    Tensor* w = nullptr;
    Tensor* b = nullptr;
    if (auto* ln = dynamic_cast<LayerNorm*>(m)) {
      w = &ln->weight;
      b = ln->bias.defined() ? &ln->bias : nullptr;
    } else if (auto* rms = dynamic_cast<RMSNorm*>(m)) {
      w = &rms->weight;
    } else {
      continue;
    }
    if (!w->defined() || !name_matches_targets(c, path, defaults)) continue;
    auto& a = m->add_module<LnTuningAdapter>("adapters." + ctx.adapter_name);
    a.norm = m;
    a.norm_weight = w;
    a.norm_bias = b;
    a.stash_weight = fresh_copy(*w);
    if (b) a.stash_bias = fresh_copy(*b);
    ++attached;
  }
  VLP_CHECK(attached > 0, c.source, ": target_modules matched no LayerNorm / RMSNorm of the model");
}

std::vector<std::pair<std::string, LnTuningAdapter*>> ln_tuning_adapters(Module& model, const std::string& adapter_name) {
  std::vector<std::pair<std::string, LnTuningAdapter*>> out;
  for (auto& [path, m] : model.named_modules())
    for (auto& [cname, child] : m->children())
      if (cname == "adapters." + adapter_name)
        if (auto* a = dynamic_cast<LnTuningAdapter*>(child)) out.push_back({path, a});
  return out;
}

std::vector<std::pair<std::string, Tensor>> bitfit_biases(Module& model, const PeftConfig& config) {
  const bool all = config.target_modules.empty() && config.target_regex.empty();
  std::vector<std::pair<std::string, Tensor>> out;
  for (auto& [path, m] : model.named_modules()) {
    if (internal_path(path)) continue;
    Tensor bias;
    if (auto* l = dynamic_cast<Linear*>(m)) bias = l->bias;
    else if (auto* ln = dynamic_cast<LayerNorm*>(m)) bias = ln->bias;
    if (!bias.defined()) continue;
    if (!all && !name_matches_targets(config, path, {})) continue;
    out.push_back({path + ".bias", bias});
  }
  return out;
}

void attach_bitfit(AttachContext& ctx) {
  VLP_CHECK(!bitfit_biases(ctx.model, ctx.config).empty(), ctx.config.source,
            ": BitFit found no bias to train (T5's linears and RMSNorms have none; spec/peft.md §4.12)");
}

}  // namespace vlp::peft
