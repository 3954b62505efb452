// P-tuning (spec/peft.md §4.15): see p_tuning.h.
#include "models/peft/p_tuning.h"

namespace vlp::peft {

void attach_p_tuning(AttachContext& ctx) {
  const PeftConfig& c = ctx.config;
  const int64_t n = c.get_int("num_virtual_tokens", 0);
  VLP_CHECK(n > 0, c.source, ": field 'num_virtual_tokens' must be a positive integer");
  const int64_t d = c.get_int("token_dim", 0) > 0 ? c.get_int("token_dim", 0) : model_token_dim(ctx.model, ctx.backbone);
  const int64_t subs = num_transformer_submodules(c);
  const bool inference = c.get_bool("inference_mode", false);
  const std::string type = c.get_string("encoder_reparameterization_type", "MLP");
  auto [site_name, site] = prompt_input_site(ctx.model, ctx.backbone);
  PromptEncoder& enc = register_prompt_encoder(ctx, n * subs, d);
  {
    NoGradGuard no_grad;
    normal_(enc.embedding.weight, 0.0, 1.0, &ctx.generator);
  }
  if (!inference) {
    VLP_CHECK(type == "MLP", c.source, ": encoder_reparameterization_type '", type,
              "' is not supported (MLP is; the LSTM encoder is not implemented)");
    const int64_t h = c.get_int("encoder_hidden_size", 0) > 0 ? c.get_int("encoder_hidden_size", 0) : d;
    enc.activation = "relu";
    enc.add_layer("mlp_head", 0, d, h, ctx.generator);
    enc.add_layer("mlp_head", 2, h, h, ctx.generator);
    enc.add_layer("mlp_head", 4, h, d, ctx.generator);
  }
  attach_adapter(*site, ctx.adapter_name, std::make_shared<InputPromptAdapter>(&enc, n));
}

}  // namespace vlp::peft
