// Visual prompt tuning (Jia et al., ECCV 2022; spec/peft.md §4.21), peft_type VLPEFT_VPT, for ViT and CLIP
// vision. Config fields: num_virtual_tokens (p), vpt_deep (false = shallow).
//   shallow: P [p, d] inserted after CLS at encoder.input_site (after the position embeddings; prompts get
//            none): [x_cls, P, E_0];
//   deep:    P_0 inserted there, and before layer i >= 1 the p prompt slots of the previous output replaced
//            by P_i (the layer's input site).
// Init U(-v, v), v = sqrt(6 / (3 * patch_h * patch_w + d)). CLS stays at position 0 and the patch tokens stay
// the last positions, so the classifier head and patch_tokens() read what they read without prompts.
// Saved with the default key rule: base_model.model.<site>.prompt per site.
#pragma once
#include "models/peft/peft.h"

namespace vlp::peft {

struct VisualPromptAdapter : InputAdapter {
  Tensor prompt;  // [p, d]
  bool replace;   // deep layers >= 1: overwrite slots 1..p instead of inserting
  VisualPromptAdapter(int64_t p, int64_t d, bool replace_) : prompt(zeros({p, d})), replace(replace_) {
    register_parameter("prompt", &prompt);
  }
  Tensor forward(const Tensor& embeds, Tensor& mask, const ForwardContext& ctx) override;
  const char* type_name() const override { return "VisualPromptAdapter"; }
};

void attach_vpt(AttachContext& ctx);

}  // namespace vlp::peft
