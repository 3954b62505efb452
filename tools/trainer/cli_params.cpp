// Trainer parameter counts (see cli_params.h).
#include "tools/trainer/cli_params.h"

#include <cstdio>

#include "runtime/rng.h"

namespace vlp::trainer {

TrainerParams trainer_params(const Session& s) {
  TrainerParams p;
  p.total = s.net().num_parameters();
  const Linear* proj = s.gpt2 ? s.gpt2->visual_projection.get() : s.classifier ? s.classifier->visual_projection.get() : nullptr;
  p.visual_embedding = s.model ? s.model->visual_embedding->num_parameters() : proj ? proj->num_parameters() : 0;
  p.vision_tower = s.model && s.model->vision_model ? s.model->vision_model->num_parameters() : 0;
  // The model before PEFT (counted by make_session): what the PEFT method added is the difference.
  const int64_t base = s.base_parameters;
  p.backbone = base - p.visual_embedding - p.vision_tower;
  p.peft = p.total - base;
  for (const auto& [name, t] : s.trainable) p.trainable += t.numel();
  return p;
}

std::string format_trainer_params(const Session& s, const TrainerParams& p) {
  const std::string method = !s.cfg.peft_recipe.empty() ? "recipe " + s.cfg.peft_recipe
                             : !s.cfg.peft_type.empty() ? s.cfg.peft_type
                             : !s.cfg.peft_config.empty() ? s.cfg.peft_config
                             : s.cfg.freeze_backbone ? "frozen backbone (visual projection only)"
                                                     : "full fine-tuning";
  char tower[128];
  if (p.vision_tower > 0)
    std::snprintf(tower, sizeof tower, "vision tower (ViT) %lld, ", (long long)p.vision_tower);
  else
    std::snprintf(tower, sizeof tower, "%s", "");
  char buf[640];
  std::snprintf(buf, sizeof buf,
                "trainer model: %s d=%lld layers=%lld, %s\n"
                "  parameters: %lld (backbone %lld, %svisual embedding %lld, PEFT modules %lld%s)\n"
                "  trainable:  %lld (%.3f%% of all parameters)\n",
                s.cfg.backbone.c_str(), (long long)s.cfg.d_model, (long long)s.cfg.layers, method.c_str(),
                (long long)p.total, (long long)p.backbone, tower, (long long)p.visual_embedding, (long long)p.peft,
                p.vision_tower > 0 ? "" : "; no vision encoder: visual tokens are precomputed features",
                (long long)p.trainable, p.trainable_percent());
  return buf;
}

}  // namespace vlp::trainer
