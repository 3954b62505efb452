// Trainer parameter counts (see cli_params.h).
#include "tools/trainer/cli_params.h"

#include <cstdio>

#include "runtime/rng.h"

namespace vlp::trainer {

TrainerParams trainer_params(const Session& s) {
  TrainerParams p;
  p.total = s.model->num_parameters();
  p.visual_embedding = s.model->visual_embedding->num_parameters();
  // The model as built before PEFT (same config): what the PEFT method added is the difference.
  // Building it draws initial weights from the process-wide generator: keep that generator's state.
  const Generator saved = default_generator();
  const int64_t base = VLSeq2Seq(model_config(s.cfg)).num_parameters();
  default_generator() = saved;
  p.backbone = base - p.visual_embedding;
  p.peft = p.total - base;
  for (const auto& [name, t] : s.trainable) p.trainable += t.numel();
  return p;
}

std::string format_trainer_params(const Session& s, const TrainerParams& p) {
  const std::string method = !s.cfg.peft_type.empty() ? s.cfg.peft_type
                             : !s.cfg.peft_config.empty() ? s.cfg.peft_config
                             : s.cfg.freeze_backbone ? "frozen backbone (visual projection only)"
                                                     : "full fine-tuning";
  char buf[512];
  std::snprintf(buf, sizeof buf,
                "trainer model: %s d=%lld layers=%lld, %s\n"
                "  parameters: %lld (backbone %lld, visual embedding %lld, PEFT modules %lld; no vision encoder: "
                "visual tokens are precomputed features)\n"
                "  trainable:  %lld (%.3f%% of all parameters)\n",
                s.cfg.backbone.c_str(), (long long)s.cfg.d_model, (long long)s.cfg.layers, method.c_str(),
                (long long)p.total, (long long)p.backbone, (long long)p.visual_embedding, (long long)p.peft,
                (long long)p.trainable, p.trainable_percent());
  return buf;
}

}  // namespace vlp::trainer
