// VL-Adapter prompt tuning with its reparameterisation MLP (spec/peft.md §2.9): see vl_prompt.h.
#include "models/peft/vl_prompt.h"

#include "models/peft/adapter.h"

namespace vlp::peft {

Tensor VlPromptAdapter::prompts(const ForwardContext& ctx) const {
  if (encoders.size() == 1) return encoders[0]->prompts();
  VLP_CHECK(ctx.task >= 0 && ctx.task < int(encoders.size()), "VL prompt tuning (multiple): ForwardContext::task = ",
            ctx.task, " but the adapter has ", encoders.size(), " tasks");
  return encoders[size_t(ctx.task)]->prompts();
}

Tensor VlPromptAdapter::forward(const Tensor& embeds, Tensor& mask, const ForwardContext& ctx) {
  VLP_CHECK(embeds.dim() == 3, "VL prompt tuning: input embeddings must be [B, T, D], got ", shape_str(embeds.shape()));
  const int64_t B = embeds.size(0);
  Tensor p = prompts(ctx);
  VLP_CHECK(p.size(1) == embeds.size(2), "VL prompt tuning: token_dim ", p.size(1), " does not match the model's ",
            "embedding width ", embeds.size(2));
  p = expand(unsqueeze(to(p, embeds.dtype()), 0), {B, count, p.size(1)});
  if (mask.defined()) mask = concat({ones({B, count}, mask.dtype(), mask.device()), mask}, 1);
  return concat({p, embeds}, 1);
}

namespace {

void init_encoder(PromptEncoder& enc, int64_t d, int64_t hidden, Generator& gen) {
  {
    NoGradGuard no_grad;
    normal_(enc.embedding.weight, 0.0, 1.0, &gen);
  }
  enc.activation = "tanh";
  enc.add_layer("transform", 0, d, hidden, gen);
  enc.add_layer("transform", 2, hidden, d, gen);
}

}  // namespace

void attach_vl_prompt(AttachContext& ctx) {
  const PeftConfig& c = ctx.config;
  const int64_t n = c.get_int("num_virtual_tokens", 40);
  VLP_CHECK(n > 0, c.source, ": field 'num_virtual_tokens' must be a positive integer");
  const int64_t hidden = c.get_int("prompt_hidden_dim", 800);
  VLP_CHECK(hidden > 0, c.source, ": field 'prompt_hidden_dim' must be a positive integer");
  const int64_t d = c.get_int("token_dim", 0) > 0 ? c.get_int("token_dim", 0) : model_token_dim(ctx.model, ctx.backbone);
  const std::string sharing = c.get_string("sharing", "single");
  VLP_CHECK(sharing == "single" || sharing == "multiple", c.source, ": field 'sharing' must be \"single\" or ",
            "\"multiple\" for VLPEFT_PROMPT, got \"", sharing, "\"");
  auto [site_name, site] = prompt_input_site(ctx.model, ctx.backbone);
  const std::string shared = "peft_shared." + ctx.adapter_name;
  VLP_CHECK(!ctx.model.find_module(shared), "adapter '", ctx.adapter_name, "' already has prompt embeddings");
  std::vector<PromptEncoder*> encoders;
  if (sharing == "single") {
    PromptEncoder& enc = ctx.model.add_module<PromptEncoder>(shared, n, d);
    init_encoder(enc, d, hidden, ctx.generator);
    encoders.push_back(&enc);
  } else {
    const std::vector<std::string> tasks = config_tasks(c, true);
    auto& bank = ctx.model.add_module<VlPromptBank>(shared);
    for (const auto& task : tasks) {
      bank.encoders.push_back(std::make_unique<PromptEncoder>(n, d));
      PromptEncoder& enc = *bank.encoders.back();
      bank.register_module(task, &enc);
      init_encoder(enc, d, hidden, ctx.generator);
      encoders.push_back(&enc);
    }
  }
  attach_adapter(*site, ctx.adapter_name, std::make_shared<VlPromptAdapter>(std::move(encoders), n));
}

std::string vl_prompt_file_key(const std::string& param_name, const std::string& adapter_name) {
  const std::string shared = "peft_shared." + adapter_name + ".";
  VLP_CHECK(param_name.rfind(shared, 0) == 0, "parameter '", param_name, "' is not one of prompt adapter '",
            adapter_name, "'");
  return "prompt_encoder." + param_name.substr(shared.size());
}

}  // namespace vlp::peft
