// PEFT: configs, target selection, and the method table. Every method acts through the adaptation sites
// of models/site.h (Linear adapters, sublayer sites, attention sites, input sites); this file is the one
// place that turns a config into attached modules. A method is one entry of the table in methods.cpp and
// one file under models/peft/ that builds its site modules.
//
// Flow: parse_peft_config(json) -> add_adapter(model, config, "default", seed): select the target sites
// (select_targets), ask the method to attach one module per target, then mark the trainable set
// (mark_trainable). Saving and loading follow HF PEFT's directory format (spec/peft.md §6).
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include <nlohmann/json.hpp>

#include "models/module.h"
#include "models/site.h"

namespace vlp::peft {

// A PEFT config as read from adapter_config.json or a training config. Fields shared by every method are
// parsed here; the method's own fields (r, lora_alpha, reduction_factor, ...) stay in `raw` and the
// method reads them with the typed getters below, which name the field on a wrong type.
struct PeftConfig {
  std::string peft_type;  // "LORA", "IA3", "PREFIX_TUNING", ... or "VLPEFT_ADAPTER", ... (spec §6.5)
  std::string task_type;  // "" = null
  // Targets: a list (exact name or dotted suffix) or one regex (full match); target_all_linear for
  // "all-linear". Empty = the method's default for the backbone (spec/peft.md §5).
  std::vector<std::string> target_modules;
  std::string target_regex;
  bool target_all_linear = false;
  std::vector<std::string> exclude_modules;
  std::string exclude_regex;
  std::vector<int> layers_to_transform;
  std::vector<std::string> layers_pattern;
  std::map<std::string, int> rank_pattern;       // suffix -> r
  std::map<std::string, double> alpha_pattern;   // suffix -> alpha
  std::vector<std::string> modules_to_save;
  std::string bias = "none";                     // none | all | lora_only
  std::string base_model_name_or_path;
  nlohmann::json raw;                            // the whole config as given

  // Method fields, with the config named in errors ("adapter_config.json: field 'r' must be an integer").
  int get_int(const std::string& key, int fallback) const;
  double get_double(const std::string& key, double fallback) const;
  bool get_bool(const std::string& key, bool fallback) const;
  std::string get_string(const std::string& key, const std::string& fallback) const;
  double require_double(const std::string& key) const;  // a missing field is an error (scales, spec §6.3)
  std::string source = "PEFT config";                     // file name for messages
};

PeftConfig parse_peft_config(const nlohmann::json& j, const std::string& source = "PEFT config");
PeftConfig load_peft_config(const std::string& path);

// The defaults of spec/peft.md §5 for one column of the table ("lora" for LoRA and most methods, "ia3",
// "ia3_feedforward", "ln_tuning", "adalora") and a backbone; {} where there is no default.
std::vector<std::string> default_targets(const std::string& column, const std::string& backbone);

// Which backbone a model is ("gpt2", "t5", "bart", "vit", "clip_vision", or "" when unknown); decides the
// default targets of spec/peft.md §5.
std::string backbone_kind(Module& model);

// Every site of one kind in the model, with its full dotted name.
std::vector<std::pair<std::string, Linear*>> linear_sites(Module& model);
std::vector<std::pair<std::string, SublayerSite*>> sublayer_sites(Module& model);
std::vector<std::pair<std::string, AttentionSite*>> attention_sites(Module& model);
std::vector<std::pair<std::string, InputSite*>> input_sites(Module& model);

// The matching rules of spec/peft.md §5 on one module name: exclusions first, list entries match exactly
// or as a dotted suffix, a regex must match the whole name, layer selection reads the index after the
// first ".<layers_pattern>.<digits>." segment (any "layers|h|layer|block|blocks" when no pattern given).
bool name_matches_targets(const PeftConfig& config, const std::string& name,
                          const std::vector<std::string>& default_targets);

// The Linear sites a config targets: name_matches_targets over linear_sites (adapter-internal layers and
// modules_to_save never included; "all-linear" leaves out the output head lm_head / classifier). Throws,
// naming the target fields, when nothing matched.
std::vector<std::pair<std::string, Linear*>> select_linear_targets(Module& model, const PeftConfig& config,
                                                                   const std::vector<std::string>& default_targets);
// The same rule over any site list (sublayer, attention, input sites); an empty result is not an error.
template <class Site>
std::vector<std::pair<std::string, Site*>> select_targets(const PeftConfig& config,
                                                          const std::vector<std::pair<std::string, Site*>>& sites,
                                                          const std::vector<std::string>& default_targets) {
  std::vector<std::pair<std::string, Site*>> out;
  for (const auto& s : sites)
    if (name_matches_targets(config, s.first, default_targets)) out.push_back(s);
  return out;
}

// What a method needs to attach its modules.
struct AttachContext {
  Module& model;
  const PeftConfig& config;
  std::string adapter_name;
  Generator& generator;  // initialisation, seeded from add_adapter's seed
  std::string backbone;  // backbone_kind(model)
};

// One method: its type name, and a function attaching its modules for one adapter name (calls
// attach_adapter on the sites it selects, or registers model-level modules). Model-level tensors shared
// across sites (VeRA's projections, Hyperformer's generator) live in a module registered on the model as
// "peft_shared.<adapter_name>".
struct PeftMethod {
  const char* peft_type;
  void (*attach)(AttachContext& ctx);
  // Tensor names in adapter_model.safetensors for one of this method's parameter names (the model path
  // with the adapter name removed, spec §6.4); null = the default rule.
  std::string (*file_key)(const std::string& param_name, const std::string& adapter_name) = nullptr;
  // HF PEFT's adapter_config.json fields with their defaults for this type (JSON text of the pinned
  // peft's Config().to_dict()); save_adapter writes them under the config's own fields so the file has
  // exactly HF's field set. Null = write the config's fields only.
  const char* default_config = nullptr;
  // Called by save_adapter only, on the config JSON and the tensors about to be written (keys as in the
  // file): methods whose files differ from their live modules (AdaLoRA slices pruned ranks) adjust them here.
  void (*prepare_save)(Module& model, const std::string& adapter_name, nlohmann::json& config,
                       std::vector<std::pair<std::string, Tensor>>& tensors) = nullptr;
};
const PeftMethod& find_method(const std::string& peft_type);  // errors list the known types
const std::vector<PeftMethod>& all_methods();

// Conventions for method modules: parameters registered in an adapter module are trainable and saved;
// frozen tensors an adapter must still save (VeRA's projections) are registered as buffers.
// Attaches one named adapter and freezes everything but the trainable set of every adapter present.
// As in HF PEFT, the first adapter of a model is active; later ones are added inactive (set_active_adapters).
// The configs, the active set and the merge order live in a parameterless child module "peft_state" of the
// model (created on first use), so they go away with the model. modules_to_save are trained in place (no
// per-adapter copy) and so are shared by all adapters of a model.
void add_adapter(Module& model, const PeftConfig& config, const std::string& adapter_name = "default",
                 uint64_t seed = 0);
// The config an adapter was added with (throws naming the adapter when absent); set_adapter_config replaces it
// (methods that learn fields during training, e.g. AdaLoRA's rank_pattern).
const PeftConfig& adapter_config(Module& model, const std::string& adapter_name);
void set_adapter_config(Module& model, const std::string& adapter_name, const PeftConfig& config);
std::vector<std::string> active_adapters(Module& model);
void delete_adapter(Module& model, const std::string& adapter_name);
// set_active_adapters({"a","b"}) activates exactly those; {} disables all (base model).
void set_active_adapters(Module& model, const std::vector<std::string>& adapter_names);
std::vector<std::string> adapter_names(Module& model);

// requires_grad on exactly: every adapter parameter, modules_to_save, and biases per `bias`.
void mark_trainable(Module& model, const PeftConfig& config);

// Merging, for Linear adapters that are mergeable; a method that cannot merge is named in the error.
void merge_adapters(Module& model, const std::vector<std::string>& adapter_names);
void unmerge_adapters(Module& model);
void merge_and_unload(Module& model);

// Trainable and total parameters, overall and per top-level module.
struct ParamReport {
  int64_t trainable = 0, total = 0;
  std::vector<std::tuple<std::string, int64_t, int64_t>> per_module;  // name, trainable, total
  std::string to_string() const;
};
ParamReport count_parameters(Module& model);

// HF PEFT directory format: <dir>/adapter_config.json + adapter_model.safetensors (adapter "default"),
// <dir>/<name>/... for the others. Written atomically; fp32.
void save_adapter(Module& model, const PeftConfig& config, const std::string& adapter_name, const std::string& dir);
// The tensors save_adapter writes for one adapter (the model's own tensors, not copies), keyed as in
// adapter_model.safetensors: adapter parameters and buffers, modules_to_save, biases per `bias`.
std::vector<std::pair<std::string, Tensor>> adapter_state_dict(Module& model, const std::string& adapter_name);
// Reads the config, attaches the adapter, loads its tensors; every mismatch named.
// ViT names: models/vit uses the classic module names (vit.encoder.layer.N.attention.attention.query, ...,
// attention.output.dense, intermediate.dense, output.dense), those of every published ViT checkpoint and of
// adapters made with transformers 4.x, and save_adapter writes them. An adapter HF PEFT wrote on transformers 5
// (vit.layers.N.attention.q_proj, mlp.fc1, ...) is translated on load by the one table of
// models/peft/vit_names.cpp, which names any key or config entry it cannot map.
PeftConfig load_adapter(Module& model, const std::string& dir, const std::string& adapter_name = "default");

}  // namespace vlp::peft
