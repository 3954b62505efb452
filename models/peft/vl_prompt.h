// VL-Adapter's prompt tuning (spec/peft.md §2.9), peft_type VLPEFT_PROMPT: encoder prompts produced every step
// by a reparameterisation MLP,
//
//     P = W2 · tanh(W1 E + c1) + c2,   E ∈ R^{n×d},  W1: d → h,  W2: h → d      (VL-Adapter: n = 40, h = 800)
//
// prepended to the encoder input (the same input site as PROMPT_TUNING: BART after positions, before
// layernorm_embedding; T5 before the blocks; VL models put the visual tokens after the text). No decoder
// prompts, no per-layer prefixes.
//
// Config fields (adapter_config.json, project type, spec §6.5):
//   num_virtual_tokens  n (default 40)
//   prompt_hidden_dim   h (default 800)
//   token_dim           d (default: the model's embedding width)
//   sharing             "single" (default) | "multiple": one (E, MLP) per task, chosen by ForwardContext::task
//   tasks               task names (required for multiple)
// Init as the original nn.Embedding / nn.Linear: E ~ N(0, 1); W, c nn.Linear's default (Kaiming-uniform(√5),
// U(±1/√fan_in)).
//
// Modules live in the model-level container of the prompt methods, "peft_shared.<adapter>": single = one
// PromptEncoder there (embedding.weight, transform.0.{weight,bias} = W1, c1, transform.2.{weight,bias} =
// W2, c2); multiple = a VlPromptBank whose children "<task>" are PromptEncoders. Unlike HF's prompt types the
// file keeps E and the MLP (training can resume from it): keys "prompt_encoder.<param>", per task
// "prompt_encoder.<task>.<param>". Not mergeable.
#pragma once
#include "models/peft/prompt_tuning.h"

namespace vlp::peft {

// The per-task encoders of sharing "multiple", children named by task.
struct VlPromptBank : Module {
  std::vector<std::unique_ptr<PromptEncoder>> encoders;
  const char* type_name() const override { return "VlPromptBank"; }
};

struct VlPromptAdapter : InputAdapter {
  std::vector<PromptEncoder*> encoders;  // one (single) or one per task
  int64_t count;
  VlPromptAdapter(std::vector<PromptEncoder*> e, int64_t n) : encoders(std::move(e)), count(n) {}
  // P [n, d] for the batch's task.
  Tensor prompts(const ForwardContext& ctx) const;
  Tensor forward(const Tensor& embeds, Tensor& mask, const ForwardContext& ctx) override;
  const char* type_name() const override { return "VlPromptAdapter"; }
};

void attach_vl_prompt(AttachContext& ctx);
// File keys of the project prompt types (VLPEFT_PROMPT, VLPEFT_PREFIX_TUNING): "peft_shared.<adapter>.<rest>"
// is saved as "prompt_encoder.<rest>" (the table and its MLP, not only the MLP's output).
std::string vl_prompt_file_key(const std::string& param_name, const std::string& adapter_name);

}  // namespace vlp::peft
