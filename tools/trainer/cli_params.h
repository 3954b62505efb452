// `vlpeft params --config TRAIN.json`: the trainer model's parameters, split into what the model holds (the
// backbone, the vision tower, the visual embedding, the PEFT modules) and what trains. Without vision_tower vit the
// vision encoder is not part of the trainer's model (its visual tokens are precomputed features: linear patch
// features of the synthetic images or features from `vlpeft extract-features`), so it is in no count.
#pragma once
#include <cstdint>
#include <string>

#include "tools/trainer/trainer.h"

namespace vlp::trainer {

struct TrainerParams {
  int64_t total = 0;             // every parameter of the model (backbone + visual embedding + PEFT modules)
  int64_t backbone = 0;          // T5 / BART, shared embedding once
  int64_t visual_embedding = 0;  // W_f, N_f, box projection, image-order table
  int64_t vision_tower = 0;      // the ViT "vision_model" (vision_tower vit), else 0
  int64_t peft = 0;              // added by the PEFT method (0 without one)
  int64_t trainable = 0;         // what the optimizer updates
  double trainable_percent() const { return total > 0 ? 100.0 * double(trainable) / double(total) : 0.0; }
};

TrainerParams trainer_params(const Session& s);
// "model: t5 d=64 ...: 1,234 parameters (backbone ..., visual embedding ..., PEFT ...), 56 trainable (4.54%)"
std::string format_trainer_params(const Session& s, const TrainerParams& p);

}  // namespace vlp::trainer
