// Adaption prompt (LLaMA-Adapter, Zhang et al., 2023; spec/peft.md §4.16), as HF PEFT's GPT-2 variant: in the
// top `adapter_layers` blocks a learned prompt A [1, adapter_len, d] is projected by the block's own c_attn into
// keys and values; the block's queries attend to them alone (softmax over the prompt, no mask), the result is
// scaled by a zero-initialised gate g and added to the attention sublayer's output (after c_proj and its
// dropout, where HF adds it, so it is not projected again). g = 0 makes the method a no-op at step 0.
// Lives on the block's sa_site (its input is ln_1(x), the attention input). File keys as HF's:
// base_model.model.transformer.h.N.attn.adaption_prompt / .adaption_gate.
#pragma once
#include "models/peft/peft.h"

namespace vlp::peft {

struct AdaptionPromptAdapter : SublayerAdapter {
  Tensor adaption_prompt;  // [1, adapter_len, d]
  Tensor adaption_gate;    // [1]
  const Linear* c_attn;
  int64_t heads;
  AdaptionPromptAdapter(const Linear* c_attn_, int64_t adapter_len, int64_t d, int64_t heads_);
  Tensor forward(const Tensor& input, const Tensor& output, const ForwardContext& ctx) override;
  const char* type_name() const override { return "AdaptionPromptAdapter"; }
};

std::string adaption_prompt_file_key(const std::string& param_name, const std::string& adapter_name);
void adaption_prompt_prepare_save(Module& model, const std::string& adapter_name, nlohmann::json& config,
                                  std::vector<std::pair<std::string, Tensor>>& tensors);
void attach_adaption_prompt(AttachContext& ctx);

}  // namespace vlp::peft
