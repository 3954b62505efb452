// VL-Adapter's recipes (spec/peft.md §2.4–§2.12) as PEFT configs, for the trainer and `vlpeft params`.
//
// Recipe names and what they build (tasks default to vqa, gqa, nlvr, caption):
//   full                  no PEFT config: every encoder, decoder, LM-head and shared-embedding parameter
//   adapter_single        VLPEFT_ADAPTER, placement vl_adapter (d/8, gelu_new, every sublayer site)
//   adapter_multiple      the same, one adapter per task
//   adapter_half_shared   the same, shared up-projection, per-task down-projection
//   hyperformer           VLPEFT_HYPERFORMER (task embedding 512, projection 8, reduction 8)
//   compacter_single      VLPEFT_COMPACTER, placement vl_adapter (n = 2, A_i per layer, full B_i)
//   compacter_multiple    the same, one per task
//   lora_single           LORA on the attention q/v projections (BART q_proj, v_proj; T5 q, v),
//                         r = 128, α = 32, dropout 0.1, bias "all"
//   lora_multiple         VLPEFT_ROUTED_LORA without routing (plain LoRA), one per task, same settings
//   prompt_single         VLPEFT_PROMPT (vl_prompt.h): 40 encoder prompts through the MLP d -> 800 -> d
//   prompt_multiple       the same, one table and MLP per task
// Adapters, Hyperformer and Compacter also train every backbone norm (listed in modules_to_save: T5
// layer_norm and final_layer_norm, BART the three block norms and layernorm_embedding); LoRA trains every
// bias (norm weights frozen); prompts train the prompt module only. `always_trainable` (the VL models'
// visual embedding module names) is added to modules_to_save of every recipe.
#pragma once
#include <string>
#include <vector>

#include "models/peft/peft.h"

namespace vlp::peft {

struct VlRecipe {
  std::string name;
  bool full_finetuning = false;  // no PEFT config: train the whole backbone
  PeftConfig config;             // peft_type empty when full_finetuning
  double learning_rate = 1e-3;   // spec §2.12
  bool task_prefix = true;       // "vqa: " etc. prepended (single-module runs), spec §2.10
};

std::vector<std::string> vl_recipe_names();
// backbone: "t5" or "bart". Errors name the recipe list.
VlRecipe vl_adapter_recipe(const std::string& name, const std::string& backbone,
                           const std::vector<std::string>& tasks = {"vqa", "gqa", "nlvr", "caption"},
                           const std::vector<std::string>& always_trainable = {});

}  // namespace vlp::peft
