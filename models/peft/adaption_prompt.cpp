// Adaption prompt (spec/peft.md §4.16): see adaption_prompt.h.
#include "models/peft/adaption_prompt.h"

#include <cmath>

#include "models/gpt2.h"

namespace vlp::peft {

AdaptionPromptAdapter::AdaptionPromptAdapter(const Linear* c_attn_, int64_t adapter_len, int64_t d, int64_t heads_)
    : adaption_prompt(zeros({1, adapter_len, d})), adaption_gate(zeros({1})), c_attn(c_attn_), heads(heads_) {
  register_parameter("adaption_prompt", &adaption_prompt);
  register_parameter("adaption_gate", &adaption_gate);
}

Tensor AdaptionPromptAdapter::forward(const Tensor& input, const Tensor& output, const ForwardContext& ctx) {
  const int64_t B = input.size(0), T = input.size(1), d = input.size(2), n = adaption_prompt.size(1);
  const int64_t Dh = d / heads;
  auto heads_of = [&](const Tensor& x, int64_t batch, int64_t len) {  // [b, len, d] -> [b, H, len, Dh]
    return permute(reshape(x, {batch, len, heads, Dh}), {0, 2, 1, 3});
  };
  Tensor q = heads_of(narrow(c_attn->forward(input, ctx), 2, 0, d), B, T);
  Tensor kv = c_attn->forward(to(adaption_prompt, input.dtype()), ctx);  // [1, n, 3d]
  Tensor k = expand(heads_of(narrow(kv, 2, d, d), 1, n), {B, heads, n, Dh});
  Tensor v = expand(heads_of(narrow(kv, 2, 2 * d, d), 1, n), {B, heads, n, Dh});
  Tensor scores = mul(matmul(q, transpose(k, 2, 3)), 1.0 / std::sqrt(double(Dh)));
  Tensor p = mul(softmax(scores, -1), to(adaption_gate, input.dtype()));
  Tensor a = reshape(permute(matmul(p, v), {0, 2, 1, 3}), {B, T, d});
  return add(output, a);
}

std::string adaption_prompt_file_key(const std::string& param_name, const std::string& adapter_name) {
  const std::string seg = ".sa_site.adapters." + adapter_name + ".";
  auto at = param_name.find(seg);
  VLP_CHECK(at != std::string::npos, "parameter '", param_name, "' is not one of adaption prompt '", adapter_name, "'");
  return "base_model.model." + param_name.substr(0, at) + ".attn." + param_name.substr(at + seg.size());
}

void adaption_prompt_prepare_save(Module& model, const std::string& adapter_name, nlohmann::json& config,
                                  std::vector<std::pair<std::string, Tensor>>& tensors) {
  // HF's GPT-2 variant targets the attention modules by the fixed name "attn".
  config["target_modules"] = "attn";
}

void attach_adaption_prompt(AttachContext& ctx) {
  const PeftConfig& c = ctx.config;
  auto* lm = dynamic_cast<GPT2LMHeadModel*>(&ctx.model);
  VLP_CHECK(lm, c.source, ": ADAPTION_PROMPT is supported on GPT-2 here (as HF's GPT-2 variant), got backbone '",
            ctx.backbone, "'");
  const int64_t len = c.get_int("adapter_len", 0), layers = c.get_int("adapter_layers", 0);
  const int64_t L = lm->config.n_layer;
  VLP_CHECK(len > 0, c.source, ": field 'adapter_len' must be a positive integer");
  VLP_CHECK(layers > 0 && layers <= L, c.source, ": field 'adapter_layers' must be in 1..", L, ", got ", layers);
  for (int64_t l = L - layers; l < L; ++l) {
    auto& block = *lm->transformer.blocks[size_t(l)];
    auto a = std::make_shared<AdaptionPromptAdapter>(&block.attn.c_attn, len, lm->config.n_embd, lm->config.n_head);
    {
      NoGradGuard no_grad;
      normal_(a->adaption_prompt, 0.0, 1.0, &ctx.generator);
    }
    attach_adapter(block.sa_site, ctx.adapter_name, a);
  }
}

}  // namespace vlp::peft
