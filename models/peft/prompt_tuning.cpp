// Prompt tuning (Lester et al., 2021; spec/peft.md §4.14) and the PromptEncoder shared by the prompt methods.
#include "models/peft/prompt_tuning.h"

#include <cmath>

#include "models/bart.h"
#include "models/gpt2.h"
#include "models/t5.h"

namespace vlp::peft {

PromptEncoder::PromptEncoder(int64_t total_virtual_tokens, int64_t width) : embedding(total_virtual_tokens, width) {
  register_module("embedding", &embedding);
}

void PromptEncoder::add_layer(const std::string& group, int index, int64_t in, int64_t out, Generator& gen) {
  layers.push_back(std::make_unique<Linear>(in, out, true));
  Linear& l = *layers.back();
  NoGradGuard no_grad;
  kaiming_uniform_(l.weight, std::sqrt(5.0), &gen);  // nn.Linear's default initialisation
  const double bound = 1.0 / std::sqrt(double(in));
  uniform_(l.bias, -bound, bound, &gen);
  register_module(group + "." + std::to_string(index), &l);
}

Tensor PromptEncoder::prompts() const {
  Tensor h = embedding.weight;
  for (size_t i = 0; i < layers.size(); ++i) {
    h = layers[i]->forward(h);
    if (i + 1 < layers.size()) h = activation == "tanh" ? tanh(h) : relu(h);
  }
  return h;
}

Tensor InputPromptAdapter::forward(const Tensor& embeds, Tensor& mask, const ForwardContext& ctx) {
  VLP_CHECK(embeds.dim() == 3, "prompt tuning: input embeddings must be [B, T, D], got ", shape_str(embeds.shape()));
  const int64_t B = embeds.size(0);
  Tensor p = narrow(encoder->prompts(), 0, 0, count);
  VLP_CHECK(p.size(1) == embeds.size(2), "prompt tuning: token_dim ", p.size(1), " does not match the model's ",
            "embedding width ", embeds.size(2));
  p = expand(unsqueeze(to(p, embeds.dtype()), 0), {B, count, p.size(1)});
  if (mask.defined()) mask = concat({ones({B, count}, mask.dtype(), mask.device()), mask}, 1);
  return concat({p, embeds}, 1);
}

int64_t num_transformer_submodules(const PeftConfig& c) {
  if (c.raw.contains("num_transformer_submodules") && !c.raw["num_transformer_submodules"].is_null())
    return c.get_int("num_transformer_submodules", 1);
  return c.task_type == "SEQ_2_SEQ_LM" ? 2 : 1;
}

int64_t model_token_dim(Module& model, const std::string& backbone) {
  for (const char* name : {"transformer.wte", "shared", "model.shared"})
    if (auto* e = dynamic_cast<Embedding*>(model.find_module(name))) return e->weight.size(1);
  VLP_FAIL("prompt methods: cannot find the token embedding of this ", backbone.empty() ? "model" : backbone,
           "; give token_dim in the config");
}

std::pair<std::string, InputSite*> prompt_input_site(Module& model, const std::string& backbone) {
  for (auto& [name, site] : input_sites(model)) {
    // The first stack's entry: not a decoder, not a per-layer site (VPT-deep's).
    if (name.find("decoder") != std::string::npos || name.find("layer") != std::string::npos ||
        name.find(".h.") != std::string::npos)
      continue;
    return {name, site};
  }
  VLP_FAIL("prompt methods: this ", backbone.empty() ? "model" : backbone, " has no input site for prompts");
}

PromptEncoder& register_prompt_encoder(AttachContext& ctx, int64_t rows, int64_t width) {
  const std::string name = "peft_shared." + ctx.adapter_name;
  VLP_CHECK(!ctx.model.find_module(name), "adapter '", ctx.adapter_name, "' already has prompt embeddings");
  return ctx.model.add_module<PromptEncoder>(name, rows, width);
}

PromptEncoder* find_prompt_encoder(Module& model, const std::string& adapter_name) {
  return dynamic_cast<PromptEncoder*>(model.find_module("peft_shared." + adapter_name));
}

std::string prompt_file_key(const std::string& param_name, const std::string& adapter_name) {
  const std::string shared = "peft_shared." + adapter_name + ".";
  VLP_CHECK(param_name.rfind(shared, 0) == 0, "parameter '", param_name, "' is not one of prompt adapter '",
            adapter_name, "'");
  const std::string rest = param_name.substr(shared.size());
  // The table is the file's one tensor; the reparameterisation's weights keep their HF names here and are
  // replaced by its output in prompt_prepare_save.
  return rest == "embedding.weight" ? "prompt_embeddings" : "prompt_encoder." + rest;
}

void prompt_prepare_save(Module& model, const std::string& adapter_name, nlohmann::json& config,
                         std::vector<std::pair<std::string, Tensor>>& tensors) {
  PromptEncoder* enc = find_prompt_encoder(model, adapter_name);
  VLP_CHECK(enc, "save_adapter: adapter '", adapter_name, "' has no prompt embeddings");
  std::vector<std::pair<std::string, Tensor>> kept;
  for (auto& [k, t] : tensors)
    if (k != "prompt_embeddings" && k.rfind("prompt_encoder.", 0) != 0) kept.push_back({k, t});
  NoGradGuard no_grad;
  kept.insert(kept.begin(), {"prompt_embeddings", enc->prompts()});
  tensors = std::move(kept);
  config["inference_mode"] = true;
  // The fields HF fills from the model when the adapter is made.
  PeftConfig parsed = parse_peft_config(config);
  if (config.value("num_transformer_submodules", nlohmann::json()).is_null())
    config["num_transformer_submodules"] = num_transformer_submodules(parsed);
  const std::string backbone = backbone_kind(model);
  if (config.value("token_dim", nlohmann::json()).is_null()) config["token_dim"] = model_token_dim(model, backbone);
  if (config.contains("encoder_hidden_size") && config["encoder_hidden_size"].is_null())
    config["encoder_hidden_size"] = config["token_dim"];
  int64_t layers = 0, heads = 0;  // transformers' num_hidden_layers / num_attention_heads
  if (auto* lm = dynamic_cast<GPT2LMHeadModel*>(&model)) layers = lm->config.n_layer, heads = lm->config.n_head;
  if (auto* t5 = dynamic_cast<T5ForConditionalGeneration*>(&model)) layers = t5->config.num_layers, heads = t5->config.num_heads;
  if (auto* bart = dynamic_cast<BartForConditionalGeneration*>(&model))
    layers = bart->config.encoder_layers, heads = bart->config.encoder_attention_heads;
  if (layers > 0 && config.value("num_layers", nlohmann::json()).is_null()) config["num_layers"] = layers;
  if (heads > 0 && config.value("num_attention_heads", nlohmann::json()).is_null()) config["num_attention_heads"] = heads;
}

void attach_prompt_tuning(AttachContext& ctx) {
  const PeftConfig& c = ctx.config;
  const int64_t n = c.get_int("num_virtual_tokens", 0);
  VLP_CHECK(n > 0, c.source, ": field 'num_virtual_tokens' must be a positive integer");
  const int64_t d = c.get_int("token_dim", 0) > 0 ? c.get_int("token_dim", 0) : model_token_dim(ctx.model, ctx.backbone);
  const int64_t subs = num_transformer_submodules(c);
  auto [site_name, site] = prompt_input_site(ctx.model, ctx.backbone);
  PromptEncoder& enc = register_prompt_encoder(ctx, n * subs, d);
  const std::string init = c.get_string("prompt_tuning_init", "RANDOM");
  NoGradGuard no_grad;
  if (init == "RANDOM") {
    normal_(enc.embedding.weight, 0.0, 1.0, &ctx.generator);  // nn.Embedding's default
  } else if (init == "TEXT" || init == "SAMPLE_VOCAB") {
    auto* wte = dynamic_cast<Embedding*>(ctx.model.find_module(
        ctx.backbone == "gpt2" ? "transformer.wte" : ctx.model.find_module("shared") ? "shared" : "model.shared"));
    VLP_CHECK(wte, c.source, ": prompt_tuning_init ", init, " needs the model's word embeddings");
    std::vector<int64_t> ids;
    if (init == "TEXT") {
      // The text's token ids: tokenisation lives outside models/, so the caller gives them.
      VLP_CHECK(c.raw.contains("prompt_tuning_init_token_ids") && c.raw["prompt_tuning_init_token_ids"].is_array(),
                c.source, ": prompt_tuning_init TEXT needs 'prompt_tuning_init_token_ids' (the tokenised ",
                "prompt_tuning_init_text) in the config");
      for (const auto& v : c.raw["prompt_tuning_init_token_ids"]) ids.push_back(v.get<int64_t>());
      VLP_CHECK(!ids.empty(), c.source, ": 'prompt_tuning_init_token_ids' is empty");
      // HF repeats the text's tokens to fill the virtual tokens, then cuts.
      std::vector<int64_t> filled;
      while (int64_t(filled.size()) < n * subs) filled.insert(filled.end(), ids.begin(), ids.end());
      filled.resize(size_t(n * subs));
      ids = filled;
    } else {
      Tensor r = empty({n * subs}, DType::F32);
      uniform_(r, 0.0, double(wte->weight.size(0)), &ctx.generator);
      for (double v : to_vector(r)) ids.push_back(std::min<int64_t>(int64_t(v), wte->weight.size(0) - 1));
    }
    Tensor idx = from_data<int64_t>(ids, {int64_t(ids.size())}, wte->weight.device());  // a model already on a GPU
    copy_(enc.embedding.weight, to(index_select(wte->weight.detach(), 0, idx), enc.embedding.weight.dtype()));
  } else {
    VLP_FAIL(c.source, ": field 'prompt_tuning_init' must be RANDOM, TEXT or SAMPLE_VOCAB, got '", init, "'");
  }
  attach_adapter(*site, ctx.adapter_name, std::make_shared<InputPromptAdapter>(&enc, n));
}

}  // namespace vlp::peft
