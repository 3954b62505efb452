// Prefix tuning (spec/peft.md §4.13): see prefix_tuning.h.
#include "models/peft/prefix_tuning.h"

#include <algorithm>

#include "models/bart.h"
#include "models/gpt2.h"
#include "models/t5.h"

namespace vlp::peft {

void PrefixAdapter::before(AttentionState& state, const ForwardContext& ctx) {
  const int64_t B = state.k.size(0), H = state.k.size(1), Dh = state.k.size(3);
  VLP_CHECK(H == heads, "prefix tuning: num_attention_heads ", heads, " does not match the layer's ", H, " heads");
  Tensor e = narrow(encoder->prompts(), 0, 0, count);  // [n, L * 2 * H * Dh]
  VLP_CHECK(e.size(1) % (2 * H * Dh) == 0 && e.size(1) / (H * Dh) > key_block + 1, "prefix tuning: prompt width ",
            e.size(1), " does not hold key block ", key_block, " and value block ", key_block + 1, " (token_dim ",
            H * Dh, ")");
  e = reshape(e, {count, -1, H, Dh});
  auto block = [&](int64_t column) {
    Tensor t = permute(select(e, 1, column), {1, 0, 2});  // [H, n, Dh]
    return expand(unsqueeze(to(t, state.k.dtype()), 0), {B, H, count, Dh});
  };
  Tensor pk = block(key_block), pv = block(key_block + 1);
  if (gate) {
    VLP_CHECK(state.input.defined(), "gated prefix tuning: the attention call carries no input");
    Tensor g = to(gate_column(gate->forward(state.input), 0, 4), pk.dtype());
    pk = mul(pk, g), pv = mul(pv, g);
  }
  state.k = concat({pk, state.k}, 2);
  state.v = concat({pv, state.v}, 2);
  if (state.key_padding_mask.defined()) {
    const Tensor& m = state.key_padding_mask;
    state.key_padding_mask = concat({ones({B, count}, m.dtype(), m.device()), m}, 1);
  }
}

void PrefixAdapter::add_gate(int64_t d, Generator& gen) {
  const Tensor& w = encoder->embedding.weight;
  gate = std::make_unique<TokenGate>(d, 1, w.dtype(), w.device(), false, gen);
  register_module("gate", gate.get());
}

namespace {

// What prefix tuning needs of a backbone: transformers' num_hidden_layers / num_attention_heads / hidden
// size, and the self-attention sites that get prefixes, in layer order.
struct PrefixTargets {
  int64_t layers = 0, heads = 0, width = 0, head_dim = 0;
  std::vector<AttentionSite*> sites;                // decoder (or decoder-only) self-attention
  std::vector<AttentionSite*> encoder_sites, cross_sites;  // encoder-decoders
  bool encoder_decoder = false;
};

PrefixTargets prefix_targets(Module& model, const std::string& source) {
  PrefixTargets t;
  if (auto* lm = dynamic_cast<GPT2LMHeadModel*>(&model)) {
    t.layers = lm->config.n_layer, t.heads = lm->config.n_head, t.width = lm->config.n_embd;
    t.head_dim = t.width / t.heads;
    for (auto& b : lm->transformer.blocks) t.sites.push_back(&b->attn.attn_site);
  } else if (auto* t5 = dynamic_cast<T5ForConditionalGeneration*>(&model)) {
    t.layers = t5->config.num_layers, t.heads = t5->config.num_heads, t.width = t5->config.d_model;
    t.head_dim = t5->config.d_kv;
    t.encoder_decoder = true;
    for (auto& b : t5->decoder.blocks) {
      t.sites.push_back(&b->self_attention.SelfAttention.attn_site);
      t.cross_sites.push_back(&b->cross_attention->EncDecAttention.attn_site);
    }
    for (auto& b : t5->encoder.blocks) t.encoder_sites.push_back(&b->self_attention.SelfAttention.attn_site);
  } else if (auto* bart = dynamic_cast<BartForConditionalGeneration*>(&model)) {
    t.layers = bart->config.encoder_layers, t.heads = bart->config.decoder_attention_heads;
    t.width = bart->config.d_model, t.head_dim = t.width / t.heads;
    t.encoder_decoder = true;
    for (auto& b : bart->model.decoder.blocks) {
      t.sites.push_back(&b->self_attn.attn_site);
      t.cross_sites.push_back(&b->encoder_attn->attn_site);
    }
    for (auto& b : bart->model.encoder.blocks) t.encoder_sites.push_back(&b->self_attn.attn_site);
  } else {
    VLP_FAIL(source, ": PREFIX_TUNING supports GPT-2, T5 and BART models (got backbone '", backbone_kind(model), "')");
  }
  return t;
}

// The prefix table: n rows of `width` (every key and value block of a virtual token), N(0, 1) as HF's
// nn.Embedding; with prefix_projection, n rows of d through HF's Linear(d, h) - tanh - Linear(h, width).
PromptEncoder& register_prefix_encoder(AttachContext& ctx, int64_t n, int64_t d, int64_t width, bool projection) {
  const PeftConfig& c = ctx.config;
  PromptEncoder& enc = register_prompt_encoder(ctx, n, projection ? d : width);
  {
    NoGradGuard no_grad;
    normal_(enc.embedding.weight, 0.0, 1.0, &ctx.generator);
  }
  if (projection) {
    const int64_t h = c.get_int("encoder_hidden_size", 0) > 0 ? c.get_int("encoder_hidden_size", 0) : d;
    enc.activation = "tanh";
    enc.add_layer("transform", 0, d, h, ctx.generator);
    enc.add_layer("transform", 2, h, width, ctx.generator);
  }
  return enc;
}

}  // namespace

void attach_prefix_tuning(AttachContext& ctx) {
  const PeftConfig& c = ctx.config;
  const PrefixTargets m = prefix_targets(ctx.model, c.source);
  const int64_t n = c.get_int("num_virtual_tokens", 0);
  VLP_CHECK(n > 0, c.source, ": field 'num_virtual_tokens' must be a positive integer");
  const int64_t d = c.get_int("token_dim", 0) > 0 ? c.get_int("token_dim", 0) : m.width;
  const int64_t L = c.get_int("num_layers", 0) > 0 ? c.get_int("num_layers", 0) : m.layers;
  const int64_t H = c.get_int("num_attention_heads", 0) > 0 ? c.get_int("num_attention_heads", 0) : m.heads;
  VLP_CHECK(d == m.width && L == m.layers && H == m.heads, c.source, ": token_dim/num_layers/num_attention_heads ", d,
            "/", L, "/", H, " do not match the model's ", m.width, "/", m.layers, "/", m.heads);
  VLP_CHECK(m.heads * m.head_dim == d, c.source, ": prefix tuning needs heads x head width (", m.heads, " x ",
            m.head_dim, ") equal to token_dim ", d, ", as HF PEFT splits token_dim into the heads");
  VLP_CHECK(int64_t(m.sites.size()) == L, c.source, ": prefix tuning reads num_layers = ", L,
            " layer groups but the model's ", m.encoder_decoder ? "decoder" : "stack", " has ", m.sites.size(),
            " layers");
  const int64_t subs = num_transformer_submodules(c);
  VLP_CHECK(subs == (m.encoder_decoder ? 2 : 1), c.source, ": num_transformer_submodules ", subs, " (task_type '",
            c.task_type, "') does not fit this ", m.encoder_decoder ? "encoder-decoder (SEQ_2_SEQ_LM, 2)" : "decoder-only model (1)");
  const bool projection = c.get_bool("prefix_projection", false) && !c.get_bool("inference_mode", false);
  // HF's PrefixEncoder has num_virtual_tokens rows whatever the submodule count.
  PromptEncoder& enc = register_prefix_encoder(ctx, n, d, L * 2 * d, projection);
  for (int64_t l = 0; l < L; ++l) {
    // Encoder-decoders: HF's duplicated (self, cross) groups, see prefix_tuning.h.
    const int64_t key_block = m.encoder_decoder ? (4 * l) % (2 * L) : 2 * l;
    attach_adapter(*m.sites[size_t(l)], ctx.adapter_name, std::make_shared<PrefixAdapter>(&enc, key_block, n, H));
  }
}

void attach_vl_prefix_tuning(AttachContext& ctx) {
  const PeftConfig& c = ctx.config;
  const PrefixTargets m = prefix_targets(ctx.model, c.source);
  const int64_t n = c.get_int("num_virtual_tokens", 0);
  VLP_CHECK(n > 0, c.source, ": field 'num_virtual_tokens' must be a positive integer");
  const int64_t d = m.width;
  VLP_CHECK(m.heads * m.head_dim == d, c.source, ": prefix tuning needs heads x head width (", m.heads, " x ",
            m.head_dim, ") equal to the model width ", d);
  std::vector<std::string> locations;
  if (c.raw.contains("locations") && !c.raw["locations"].is_null()) {
    VLP_CHECK(c.raw["locations"].is_array(), c.source, ": field 'locations' must be a list of \"encoder\", ",
              "\"decoder\", \"cross\"");
    for (const auto& l : c.raw["locations"]) {
      VLP_CHECK(l.is_string(), c.source, ": field 'locations' must hold strings");
      locations.push_back(l.get<std::string>());
    }
  } else {
    locations = m.encoder_decoder ? std::vector<std::string>{"encoder", "decoder", "cross"}
                                  : std::vector<std::string>{"decoder"};
  }
  auto has = [&](const std::string& where) {
    return std::find(locations.begin(), locations.end(), where) != locations.end();
  };
  for (const auto& l : locations) {
    VLP_CHECK(l == "encoder" || l == "decoder" || l == "cross", c.source, ": unknown prefix location \"", l,
              "\" (encoder, decoder, cross)");
    VLP_CHECK(m.encoder_decoder || l == "decoder", c.source, ": location \"", l,
              "\" needs an encoder-decoder model (this one has self-attention only: \"decoder\")");
  }
  std::vector<AttentionSite*> sites;  // the documented order: encoder, decoder self, cross
  if (has("encoder")) sites.insert(sites.end(), m.encoder_sites.begin(), m.encoder_sites.end());
  if (has("decoder")) sites.insert(sites.end(), m.sites.begin(), m.sites.end());
  if (has("cross")) sites.insert(sites.end(), m.cross_sites.begin(), m.cross_sites.end());
  VLP_CHECK(!sites.empty(), c.source, ": field 'locations' selects no attention");
  const int64_t S = int64_t(sites.size());
  const bool projection = c.get_bool("prefix_projection", false);
  PromptEncoder& enc = register_prefix_encoder(ctx, n, d, S * 2 * d, projection);
  const bool gating = c.get_bool("use_gating", false);
  for (int64_t k = 0; k < S; ++k) {
    auto a = std::make_shared<PrefixAdapter>(&enc, 2 * k, n, m.heads);
    if (gating) a->add_gate(d, ctx.generator);
    attach_adapter(*sites[size_t(k)], ctx.adapter_name, a);
  }
}

}  // namespace vlp::peft
