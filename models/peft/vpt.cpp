// Visual prompt tuning (spec/peft.md §4.21): see vpt.h.
#include "models/peft/vpt.h"

#include <cmath>
#include <map>

namespace vlp::peft {

Tensor VisualPromptAdapter::forward(const Tensor& embeds, Tensor& mask, const ForwardContext& ctx) {
  const int64_t B = embeds.size(0), T = embeds.size(1), p = prompt.size(0), d = prompt.size(1);
  VLP_CHECK(embeds.dim() == 3 && embeds.size(2) == d, "VPT: hidden states ", shape_str(embeds.shape()),
            " do not have the prompts' width ", d);
  Tensor P = expand(unsqueeze(to(prompt, embeds.dtype()), 0), {B, p, d});
  Tensor cls = narrow(embeds, 1, 0, 1);
  if (replace) {
    VLP_CHECK(T >= 1 + p, "VPT-deep: the layer input has ", T, " positions, fewer than CLS + ", p, " prompts");
    return concat({cls, P, narrow(embeds, 1, 1 + p, T - 1 - p)}, 1);
  }
  if (mask.defined())
    mask = concat({narrow(mask, 1, 0, 1), ones({B, p}, mask.dtype(), mask.device()), narrow(mask, 1, 1, T - 1)}, 1);
  return concat({cls, P, narrow(embeds, 1, 1, T - 1)}, 1);
}

void attach_vpt(AttachContext& ctx) {
  const PeftConfig& c = ctx.config;
  VLP_CHECK(ctx.backbone == "vit" || ctx.backbone == "clip_vision", c.source,
            ": VLPEFT_VPT needs a ViT or CLIP vision backbone, got '", ctx.backbone, "'");
  const int64_t p = c.get_int("num_virtual_tokens", 0);
  VLP_CHECK(p > 0, c.source, ": field 'num_virtual_tokens' must be a positive integer");
  const bool deep = c.get_bool("vpt_deep", false);
  // The patch projection [d, channels, ph, pw] gives d and the patch area.
  int64_t d = 0, patch_area = 0;
  for (auto& [name, t] : ctx.model.named_parameters())
    if (t.dim() == 4 && d == 0) d = t.size(0), patch_area = t.size(2) * t.size(3);
  VLP_CHECK(d > 0, "VPT: no patch projection found in the model");
  const double v = std::sqrt(6.0 / double(3 * patch_area + d));
  InputSite* entry = nullptr;
  std::map<int64_t, InputSite*> per_layer;
  for (auto& [name, site] : input_sites(ctx.model)) {
    const std::string tail = "encoder.input_site";
    if (name.size() >= tail.size() && name.compare(name.size() - tail.size(), tail.size(), tail) == 0) {
      entry = site;
      continue;
    }
    // "...encoder.layer.N.input_site" (ViT) or "...encoder.layers.N.input_site" (CLIP).
    auto end = name.rfind(".input_site");
    auto dot = name.rfind('.', end - 1);
    per_layer[std::stoll(name.substr(dot + 1, end - dot - 1))] = site;
  }
  VLP_CHECK(entry, "VPT: the model has no encoder.input_site");
  auto make = [&](bool replace) {
    auto a = std::make_shared<VisualPromptAdapter>(p, d, replace);
    NoGradGuard no_grad;
    uniform_(a->prompt, -v, v, &ctx.generator);
    return a;
  };
  attach_adapter(*entry, ctx.adapter_name, make(false));
  if (deep)
    for (auto& [i, site] : per_layer)
      if (i >= 1) attach_adapter(*site, ctx.adapter_name, make(true));
}

}  // namespace vlp::peft
