// Prompt-style methods (spec/peft.md §4.13-4.15, §6.4): prompt tuning, P-tuning and prefix tuning share one
// model-level PromptEncoder, registered as "peft_shared.<adapter>", holding the virtual-token table
// (HF's prompt_encoder.<adapter>.embedding) and, while training, its reparameterisation (prefix projection
// MLP, P-tuning MLP). Site adapters hold no parameters; they read the encoder's output on every forward, so
// gradients reach the table (and the MLP) through each site that uses it.
//
// Files hold one tensor, "prompt_embeddings": the encoder's output (the MLP's result, not the MLP), as HF
// PEFT writes it. A config with inference_mode true (every saved one) builds the table alone at that width.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "models/peft/peft.h"

namespace vlp::peft {

struct PromptEncoder : Module {
  Embedding embedding;                          // [total_virtual_tokens, width]
  std::vector<std::unique_ptr<Linear>> layers;  // the reparameterisation, empty in inference mode
  std::string activation;                       // "tanh" (prefix projection) or "relu" (P-tuning)
  PromptEncoder(int64_t total_virtual_tokens, int64_t width);
  // Adds a Linear registered as "<group>.<index>" (HF's Sequential names), HF's nn.Linear init.
  void add_layer(const std::string& group, int index, int64_t in, int64_t out, Generator& gen);
  // [total_virtual_tokens, output width]: the table through the reparameterisation.
  Tensor prompts() const;
  const char* type_name() const override { return "PromptEncoder"; }
};

// Prepends the first `count` encoder rows to a stack's input embeddings (and ones to its mask).
struct InputPromptAdapter : InputAdapter {
  PromptEncoder* encoder;
  int64_t count;
  InputPromptAdapter(PromptEncoder* e, int64_t n) : encoder(e), count(n) {}
  Tensor forward(const Tensor& embeds, Tensor& mask, const ForwardContext& ctx) override;
  const char* type_name() const override { return "InputPromptAdapter"; }
};

// Shared by the prompt methods.
int64_t num_transformer_submodules(const PeftConfig& c);  // config value, else 2 for SEQ_2_SEQ_LM, else 1
int64_t model_token_dim(Module& model, const std::string& backbone);
// The input site prompts enter: the decoder-only stack, or the encoder of an encoder-decoder.
std::pair<std::string, InputSite*> prompt_input_site(Module& model, const std::string& backbone);
PromptEncoder& register_prompt_encoder(AttachContext& ctx, int64_t rows, int64_t width);
PromptEncoder* find_prompt_encoder(Module& model, const std::string& adapter_name);

// PeftMethod hooks: every encoder tensor is keyed "prompt_embeddings" before save; prepare_save replaces them
// by the one encoder output.
std::string prompt_file_key(const std::string& param_name, const std::string& adapter_name);
void prompt_prepare_save(Module& model, const std::string& adapter_name, nlohmann::json& config,
                         std::vector<std::pair<std::string, Tensor>>& tensors);

// PROMPT_TUNING: num_virtual_tokens, token_dim, num_transformer_submodules, prompt_tuning_init (RANDOM,
// SAMPLE_VOCAB; TEXT needs token ids: prompt_tuning_init_token_ids), prompt_tuning_init_text.
void attach_prompt_tuning(AttachContext& ctx);

}  // namespace vlp::peft
