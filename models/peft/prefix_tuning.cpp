// Prefix tuning (spec/peft.md §4.13): see prefix_tuning.h.
#include "models/peft/prefix_tuning.h"

#include "models/gpt2.h"

namespace vlp::peft {

void PrefixAdapter::before(AttentionState& state, const ForwardContext& ctx) {
  const int64_t B = state.k.size(0), H = state.k.size(1), Dh = state.k.size(3);
  VLP_CHECK(H == heads, "prefix tuning: num_attention_heads ", heads, " does not match the layer's ", H, " heads");
  Tensor e = narrow(encoder->prompts(), 0, 0, count);  // [n, L * 2 * H * Dh]
  VLP_CHECK(e.size(1) % (2 * H * Dh) == 0 && e.size(1) / (2 * H * Dh) > layer, "prefix tuning: prompt width ",
            e.size(1), " does not hold keys and values for layer ", layer, " (token_dim ", H * Dh, ")");
  e = reshape(e, {count, -1, H, Dh});
  auto per_layer = [&](int64_t column) {
    Tensor t = permute(select(e, 1, column), {1, 0, 2});  // [H, n, Dh]
    return expand(unsqueeze(to(t, state.k.dtype()), 0), {B, H, count, Dh});
  };
  state.k = concat({per_layer(2 * layer), state.k}, 2);
  state.v = concat({per_layer(2 * layer + 1), state.v}, 2);
  if (state.key_padding_mask.defined()) {
    const Tensor& m = state.key_padding_mask;
    state.key_padding_mask = concat({ones({B, count}, m.dtype(), m.device()), m}, 1);
  }
}

void attach_prefix_tuning(AttachContext& ctx) {
  const PeftConfig& c = ctx.config;
  VLP_CHECK(ctx.backbone == "gpt2", c.source, ": PREFIX_TUNING is supported on GPT-2 only here (got backbone '",
            ctx.backbone, "'; encoder-decoder prefixes in HF go to the decoder's cache and are not implemented)");
  auto* lm = dynamic_cast<GPT2LMHeadModel*>(&ctx.model);
  VLP_CHECK(lm, "PREFIX_TUNING: expected a GPT2LMHeadModel");
  const int64_t n = c.get_int("num_virtual_tokens", 0);
  VLP_CHECK(n > 0, c.source, ": field 'num_virtual_tokens' must be a positive integer");
  const int64_t d = c.get_int("token_dim", 0) > 0 ? c.get_int("token_dim", 0) : lm->config.n_embd;
  const int64_t L = c.get_int("num_layers", 0) > 0 ? c.get_int("num_layers", 0) : lm->config.n_layer;
  const int64_t H = c.get_int("num_attention_heads", 0) > 0 ? c.get_int("num_attention_heads", 0) : lm->config.n_head;
  VLP_CHECK(d == lm->config.n_embd && L == lm->config.n_layer && H == lm->config.n_head, c.source,
            ": token_dim/num_layers/num_attention_heads ", d, "/", L, "/", H, " do not match the model's ",
            lm->config.n_embd, "/", lm->config.n_layer, "/", lm->config.n_head);
  const int64_t subs = num_transformer_submodules(c);
  const bool projection = c.get_bool("prefix_projection", false) && !c.get_bool("inference_mode", false);
  PromptEncoder& enc = register_prompt_encoder(ctx, n * subs, projection ? d : L * 2 * d);
  {
    NoGradGuard no_grad;
    normal_(enc.embedding.weight, 0.0, 1.0, &ctx.generator);
  }
  if (projection) {
    const int64_t h = c.get_int("encoder_hidden_size", 0) > 0 ? c.get_int("encoder_hidden_size", 0) : d;
    enc.activation = "tanh";
    enc.add_layer("transform", 0, d, h, ctx.generator);
    enc.add_layer("transform", 2, h, L * 2 * d, ctx.generator);
  }
  for (int64_t l = 0; l < L; ++l)
    attach_adapter(lm->transformer.blocks[size_t(l)]->attn.attn_site, ctx.adapter_name,
                   std::make_shared<PrefixAdapter>(&enc, l, n, H));
}

}  // namespace vlp::peft
