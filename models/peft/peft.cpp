// PEFT core (configs are parsed in peft_config.cpp): site enumeration, target matching (spec/peft.md §5), named
// adapters (add / delete / activate), the trainable set, merging, parameter reports, and HF PEFT's
// adapter directory format (§6). Method-specific code lives in the method files; this file only walks
// sites and modules.
#include "models/peft/peft.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <regex>
#include <set>
#include <sstream>

#include "models/peft/ln_tuning.h"
#include "models/peft/vit_names.h"
#include "runtime/safetensors.h"

namespace vlp::peft {

namespace {

using json = nlohmann::json;

// What the model remembers about its adapters: the config each was added with, which are active, and
// the order adapters were merged in (unmerge is last-in-first-out). Held by a parameterless child module
// "peft_state" of the model, so it lives and dies with the model.
struct ModelState : Module {
  std::map<std::string, PeftConfig> configs;
  std::vector<std::string> active;
  std::vector<std::string> merged;
  const char* type_name() const override { return "PeftState"; }
};

bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

bool starts_with(const std::string& s, const std::string& head) { return s.rfind(head, 0) == 0; }

// Exact name or dotted suffix.
bool matches_entry(const std::string& name, const std::string& entry) {
  return name == entry || ends_with(name, "." + entry);
}

bool in_list(const std::string& name, const std::vector<std::string>& list) {
  for (const auto& e : list)
    if (matches_entry(name, e)) return true;
  return false;
}

// A full-match regex with the config named on a malformed pattern.
bool full_match(const std::string& pattern, const std::string& name, const std::string& field,
                const std::string& source) {
  try {
    return std::regex_match(name, std::regex(pattern));
  } catch (const std::regex_error& e) {
    VLP_FAIL(source, ": field '", field, "' is not a valid regex (", pattern, "): ", e.what());
  }
}

// A path inside PEFT machinery (an adapter's own layers, shared PEFT tensors): never a target.
bool inside_peft(const std::string& name) {
  return name.find(".adapters.") != std::string::npos || starts_with(name, "adapters.") ||
         starts_with(name, "peft_shared") || starts_with(name, "peft_state");
}

std::vector<std::string> split_dots(const std::string& s) {
  std::vector<std::string> out;
  std::string cur;
  for (char c : s) {
    if (c == '.') out.push_back(cur), cur.clear();
    else cur += c;
  }
  out.push_back(cur);
  return out;
}

bool all_digits(const std::string& s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// The layer index of spec §5: the first ".<pattern>.<digits>." segment; -1 when there is none.
int layer_index(const std::string& name, const std::vector<std::string>& patterns) {
  static const std::vector<std::string> common = {"layers", "h", "layer", "block", "blocks"};
  const auto& pats = patterns.empty() ? common : patterns;
  auto seg = split_dots(name);
  // ".<pattern>.<digits>." needs a segment before the pattern and one after the digits.
  for (size_t i = 1; i + 2 < seg.size(); ++i)
    if (std::find(pats.begin(), pats.end(), seg[i]) != pats.end() && all_digits(seg[i + 1]))
      return std::stoi(seg[i + 1]);
  return -1;
}

ModelState& state_of(Module& model) {
  for (auto& [name, child] : model.children())
    if (name == "peft_state") return *static_cast<ModelState*>(child);
  return model.add_module<ModelState>("peft_state");
}

// Every adapter module of every kind, with its site's path and adapter name.
struct AdapterRef {
  std::string site_path;
  std::string name;
  Module* site;
  Module* adapter;
  Linear* linear = nullptr;           // when on a Linear
  LinearAdapter* linear_adapter = nullptr;
  LnTuningAdapter* ln = nullptr;
};

std::vector<AdapterRef> all_adapter_refs(Module& model) {
  std::vector<AdapterRef> out;
  for (auto& [path, m] : model.named_modules()) {
    if (auto* l = dynamic_cast<Linear*>(m)) {
      for (auto& [name, a] : l->adapters) out.push_back({path, name, m, a.get(), l, a.get()});
    } else if (auto* s = dynamic_cast<SublayerSite*>(m)) {
      for (auto& [name, a] : s->adapters) out.push_back({path, name, m, a.get()});
    } else if (auto* s2 = dynamic_cast<AttentionSite*>(m)) {
      for (auto& [name, a] : s2->adapters) out.push_back({path, name, m, a.get()});
    } else if (auto* s3 = dynamic_cast<InputSite*>(m)) {
      for (auto& [name, a] : s3->adapters) out.push_back({path, name, m, a.get()});
    } else {
      for (auto& [cname, child] : m->children())
        if (auto* ln = dynamic_cast<LnTuningAdapter*>(child)) {
          AdapterRef r{path, cname.substr(std::string("adapters.").size()), m, child};
          r.ln = ln;
          out.push_back(r);
        }
    }
  }
  return out;
}

void set_module_active(const AdapterRef& r, bool on) {
  if (auto* a = dynamic_cast<LinearAdapter*>(r.adapter)) a->active = on;
  else if (auto* b = dynamic_cast<SublayerAdapter*>(r.adapter)) b->active = on;
  else if (auto* c = dynamic_cast<AttentionAdapter*>(r.adapter)) c->active = on;
  else if (auto* d = dynamic_cast<InputAdapter*>(r.adapter)) d->active = on;
  else if (r.ln) r.ln->set_active(on);
}

std::string join_path(const std::string& a, const std::string& b) { return a.empty() ? b : a + "." + b; }

// The module paths saved whole (modules_to_save) present in the model.
std::vector<std::pair<std::string, Module*>> modules_to_save_of(Module& model, const PeftConfig& config) {
  std::vector<std::pair<std::string, Module*>> out;
  if (config.modules_to_save.empty()) return out;
  for (auto& [path, m] : model.named_modules()) {
    if (path.empty() || inside_peft(path)) continue;
    if (in_list(path, config.modules_to_save)) out.push_back({path, m});
  }
  return out;
}

// Biases trained under config.bias: "all" = every parameter named "<...>.bias" (by role, so T5's
// relative_attention_bias table is not one), "lora_only" = the biases of Linear layers carrying this
// config's adapter.
std::vector<std::pair<std::string, Tensor>> config_biases(Module& model, const PeftConfig& config,
                                                          const std::string& adapter_name) {
  std::vector<std::pair<std::string, Tensor>> out;
  if (config.bias == "all") {
    for (auto& [name, t] : model.named_parameters())
      if ((name == "bias" || ends_with(name, ".bias")) && !inside_peft(name)) out.push_back({name, t});
  } else if (config.bias == "lora_only") {
    for (auto& [path, l] : linear_sites(model)) {
      bool has = false;
      for (auto& [n, a] : l->adapters) has = has || n == adapter_name;
      if (has && l->bias.defined()) out.push_back({join_path(path, "bias"), l->bias});
    }
  }
  if (config.peft_type == "VLPEFT_BITFIT") {
    auto b = bitfit_biases(model, config);
    out.insert(out.end(), b.begin(), b.end());
  }
  return out;
}

// The saved name of a base-model tensor: a layer that holds adapters is HF PEFT's wrapper, whose own
// tensors sit under "base_layer".
std::string base_tensor_key(Module& model, const std::string& name) {
  auto dot = name.rfind('.');
  std::string owner = dot == std::string::npos ? "" : name.substr(0, dot);
  std::string leaf = dot == std::string::npos ? name : name.substr(dot + 1);
  Module* m = model.find_module(owner);
  bool wrapped = false;
  if (auto* l = dynamic_cast<Linear*>(m)) wrapped = !l->adapters.empty();
  if (m && !wrapped)
    for (auto& [cname, child] : m->children()) wrapped = wrapped || dynamic_cast<LnTuningAdapter*>(child);
  return "base_model.model." + (wrapped ? join_path(owner, "base_layer." + leaf) : name);
}

// The default file-key rule of spec §6.4: drop ".adapters.<name>" (and "peft_shared.<name>" becomes the
// model-level "base_model.<rest>").
std::string default_file_key(const std::string& param, const std::string& adapter_name) {
  const std::string shared = "peft_shared." + adapter_name + ".";
  if (starts_with(param, shared)) return "base_model." + param.substr(shared.size());
  const std::string seg = ".adapters." + adapter_name + ".";
  auto at = param.find(seg);
  VLP_CHECK(at != std::string::npos, "parameter '", param, "' is not one of adapter '", adapter_name, "'");
  return "base_model.model." + param.substr(0, at) + "." + param.substr(at + seg.size());
}

// Every tensor one adapter saves: {file key, tensor}. Adapter modules' parameters and buffers, LN-tuning
// copies, modules_to_save and biases.
std::vector<std::pair<std::string, Tensor>> adapter_tensors(Module& model, const PeftConfig& config,
                                                            const std::string& adapter_name) {
  const PeftMethod& method = find_method(config.peft_type);
  auto key_of = [&](const std::string& param) {
    return method.file_key ? method.file_key(param, adapter_name) : default_file_key(param, adapter_name);
  };
  std::vector<std::pair<std::string, Tensor>> out;
  std::set<std::string> seen;
  auto add = [&](const std::string& key, const Tensor& t) {
    if (seen.insert(key).second) out.push_back({key, t});
  };
  for (auto& r : all_adapter_refs(model)) {
    if (r.name != adapter_name) continue;
    if (r.ln) {
      add("base_model.model." + join_path(r.site_path, "ln_tuning_layers.weight"), r.ln->trained_weight());
      if (r.ln->norm_bias && r.ln->trained_bias().defined())
        add("base_model.model." + join_path(r.site_path, "ln_tuning_layers.bias"), r.ln->trained_bias());
      continue;
    }
    const std::string prefix = join_path(r.site_path, "adapters." + adapter_name);
    for (auto& [n, t] : r.adapter->state_dict(prefix)) add(key_of(n), t);
  }
  if (Module* shared = model.find_module("peft_shared." + adapter_name))
    for (auto& [n, t] : shared->state_dict("peft_shared." + adapter_name)) add(key_of(n), t);
  for (auto& [path, m] : modules_to_save_of(model, config))
    for (auto& [n, t] : m->named_parameters(path)) add("base_model.model." + n, t);
  for (auto& [n, t] : config_biases(model, config, adapter_name)) add(base_tensor_key(model, n), t);
  return out;
}

void write_text_atomic(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    VLP_CHECK(f.good(), "cannot write ", tmp);
    f << text;
    f.flush();
    VLP_CHECK(f.good(), "write failed: ", tmp);
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  VLP_CHECK(!ec, "cannot rename ", tmp, " to ", path, ": ", ec.message());
}

}  // namespace

// ---- sites and matching ----

std::vector<std::string> default_targets(const std::string& column, const std::string& backbone) {
  static const std::map<std::string, std::map<std::string, std::vector<std::string>>> table = {
      {"lora",
       {{"t5", {"q", "v"}}, {"bart", {"q_proj", "v_proj"}}, {"gpt2", {"c_attn"}}, {"clip_vision", {"q_proj", "v_proj"}}}},
      {"ia3", {{"t5", {"k", "v", "wo"}}, {"bart", {"q_proj", "v_proj", "fc2"}}, {"gpt2", {"c_attn", "mlp.c_proj"}}}},
      {"ia3_feedforward", {{"t5", {"wo"}}, {"bart", {"fc2"}}, {"gpt2", {"mlp.c_proj"}}}},
      {"ln_tuning",
       {{"t5", {"layer_norm", "final_layer_norm"}},
        {"bart", {"self_attn_layer_norm", "encoder_attn_layer_norm", "final_layer_norm"}},
        {"gpt2", {"ln_1", "ln_2", "ln_f"}}}},
      {"adalora",
       {{"t5", {"q", "k", "v", "o", "wi", "wo"}},
        {"bart", {"q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"}},
        {"gpt2", {"c_attn"}}}},
  };
  auto col = table.find(column);
  VLP_CHECK(col != table.end(), "default_targets: unknown column '", column, "'");
  auto it = col->second.find(backbone);
  return it == col->second.end() ? std::vector<std::string>{} : it->second;
}

std::string backbone_kind(Module& model) {
  const std::string t = model.type_name();
  if (starts_with(t, "GPT2")) return "gpt2";
  if (starts_with(t, "T5")) return "t5";
  if (starts_with(t, "Bart")) return "bart";
  if (starts_with(t, "ViT")) return "vit";
  if (starts_with(t, "CLIPVision")) return "clip_vision";
  return "";
}

namespace {
template <class Site>
std::vector<std::pair<std::string, Site*>> sites_of(Module& model) {
  std::vector<std::pair<std::string, Site*>> out;
  for (auto& [path, m] : model.named_modules())
    if (auto* s = dynamic_cast<Site*>(m); s && !inside_peft(path)) out.push_back({path, s});
  return out;
}
}  // namespace

std::vector<std::pair<std::string, Linear*>> linear_sites(Module& model) { return sites_of<Linear>(model); }
std::vector<std::pair<std::string, SublayerSite*>> sublayer_sites(Module& model) { return sites_of<SublayerSite>(model); }
std::vector<std::pair<std::string, AttentionSite*>> attention_sites(Module& model) {
  return sites_of<AttentionSite>(model);
}
std::vector<std::pair<std::string, InputSite*>> input_sites(Module& model) { return sites_of<InputSite>(model); }

bool name_matches_targets(const PeftConfig& config, const std::string& name,
                          const std::vector<std::string>& default_targets) {
  if (inside_peft(name)) return false;
  if (!config.exclude_regex.empty() && full_match(config.exclude_regex, name, "exclude_modules", config.source))
    return false;
  if (in_list(name, config.exclude_modules)) return false;
  // Modules saved whole (and everything inside them) are never targeted.
  for (const auto& m : config.modules_to_save)
    if (matches_entry(name, m) || name.find(m + ".") == 0 || name.find("." + m + ".") != std::string::npos)
      return false;
  bool found;
  if (!config.target_regex.empty()) found = full_match(config.target_regex, name, "target_modules", config.source);
  else if (config.target_all_linear) found = true;
  else found = in_list(name, config.target_modules.empty() ? default_targets : config.target_modules);
  if (!found) return false;
  if (!config.layers_to_transform.empty()) {
    int idx = layer_index(name, config.layers_pattern);
    if (idx < 0) return false;
    return std::find(config.layers_to_transform.begin(), config.layers_to_transform.end(), idx) !=
           config.layers_to_transform.end();
  }
  return true;
}

std::vector<std::pair<std::string, Linear*>> select_linear_targets(Module& model, const PeftConfig& config,
                                                                   const std::vector<std::string>& defaults) {
  VLP_CHECK(!config.target_modules.empty() || !config.target_regex.empty() || config.target_all_linear ||
                !defaults.empty(),
            config.source, ": field 'target_modules' is required: ", config.peft_type,
            " has no default targets for backbone '", backbone_kind(model), "' (spec/peft.md §5)");
  std::vector<std::pair<std::string, Linear*>> out;
  for (auto& [name, l] : linear_sites(model)) {
    if (config.target_all_linear && (matches_entry(name, "lm_head") || matches_entry(name, "classifier"))) continue;
    if (name_matches_targets(config, name, defaults)) out.push_back({name, l});
  }
  if (out.empty()) {
    std::string targets = !config.target_regex.empty() ? "regex '" + config.target_regex + "'" : "";
    for (const auto& t : config.target_modules.empty() ? defaults : config.target_modules) targets += t + " ";
    VLP_FAIL(config.source, ": target_modules (", targets, ") matched no linear layer of the model",
             config.layers_to_transform.empty() ? "" : " within layers_to_transform",
             config.exclude_modules.empty() && config.exclude_regex.empty() ? "" : " after exclude_modules");
  }
  return out;
}

// ---- methods ----

const PeftMethod& find_method(const std::string& peft_type) {
  for (const auto& m : all_methods())
    if (peft_type == m.peft_type) return m;
  std::string known;
  for (const auto& m : all_methods()) known += std::string(known.empty() ? "" : ", ") + m.peft_type;
  VLP_FAIL("unknown peft_type '", peft_type, "'; known: ", known);
}

// ---- named adapters ----

std::vector<std::string> adapter_names(Module& model) {
  std::vector<std::string> names;
  for (const auto& [n, c] : state_of(model).configs) names.push_back(n);
  return names;
}

const PeftConfig& adapter_config(Module& model, const std::string& adapter_name) {
  auto& st = state_of(model);
  auto it = st.configs.find(adapter_name);
  VLP_CHECK(it != st.configs.end(), "no adapter '", adapter_name, "' in this model");
  return it->second;
}

void set_adapter_config(Module& model, const std::string& adapter_name, const PeftConfig& config) {
  adapter_config(model, adapter_name);  // must exist
  state_of(model).configs[adapter_name] = config;
}

std::vector<std::string> active_adapters(Module& model) { return state_of(model).active; }

void add_adapter(Module& model, const PeftConfig& config, const std::string& adapter_name, uint64_t seed) {
  VLP_CHECK(!adapter_name.empty() && adapter_name.find('.') == std::string::npos, "adapter name '", adapter_name,
            "' must be non-empty and contain no '.'");
  auto& st = state_of(model);
  VLP_CHECK(!st.configs.count(adapter_name), "adapter '", adapter_name, "' already exists in this model");
  const PeftMethod& method = find_method(config.peft_type);
  // Methods build and initialise their tensors on the CPU (the same draws on every device); on a model
  // already moved to a GPU they follow it below.
  Device device = Device::cpu();
  for (auto& [name, p] : model.named_parameters()) {
    device = p.device();
    break;
  }
  Generator gen(seed);
  AttachContext ctx{model, config, adapter_name, gen, backbone_kind(model)};
  try {
    method.attach(ctx);
  } catch (...) {
    // Leave the model as it was: drop whatever the method attached before failing.
    st.configs[adapter_name] = config;
    try {
      delete_adapter(model, adapter_name);
    } catch (...) {
    }
    throw;
  }
  st.configs[adapter_name] = config;
  if (!device.is_cpu()) model.to_device(device);  // moves only what is not there yet: the new adapter
  const bool first = st.active.empty() && st.configs.size() == 1;
  if (first) st.active = {adapter_name};
  for (auto& r : all_adapter_refs(model))
    if (r.name == adapter_name) set_module_active(r, first);
  mark_trainable(model, config);
}

void delete_adapter(Module& model, const std::string& adapter_name) {
  auto& st = state_of(model);
  VLP_CHECK(st.configs.count(adapter_name), "delete_adapter: no adapter '", adapter_name, "' in this model");
  for (auto& r : all_adapter_refs(model)) {
    if (r.name != adapter_name) continue;
    if (r.linear) {
      if (r.linear_adapter->merged) r.linear_adapter->unmerge(*r.linear), r.linear_adapter->merged = false;
      detach_adapter(*r.linear, adapter_name);
    } else if (auto* s = dynamic_cast<SublayerSite*>(r.site)) {
      detach_adapter(*s, adapter_name);
    } else if (auto* a = dynamic_cast<AttentionSite*>(r.site)) {
      detach_adapter(*a, adapter_name);
    } else if (auto* i = dynamic_cast<InputSite*>(r.site)) {
      detach_adapter(*i, adapter_name);
    } else if (r.ln) {
      r.ln->set_active(false);
      r.site->remove_module("adapters." + adapter_name);
    }
  }
  if (model.find_module("peft_shared." + adapter_name)) model.remove_module("peft_shared." + adapter_name);
  st.configs.erase(adapter_name);
  st.active.erase(std::remove(st.active.begin(), st.active.end(), adapter_name), st.active.end());
  st.merged.erase(std::remove(st.merged.begin(), st.merged.end(), adapter_name), st.merged.end());
}

void set_active_adapters(Module& model, const std::vector<std::string>& names) {
  auto& st = state_of(model);
  for (const auto& n : names) VLP_CHECK(st.configs.count(n), "set_active_adapters: no adapter '", n, "'");
  // Disabling a merged adapter first unmerges it (spec §4).
  for (const auto& m : st.merged)
    if (std::find(names.begin(), names.end(), m) == names.end()) {
      unmerge_adapters(model);
      break;
    }
  auto refs = all_adapter_refs(model);
  for (auto& r : refs)  // deactivate first: LN tuning swaps copies, one at a time per norm
    if (std::find(names.begin(), names.end(), r.name) == names.end()) set_module_active(r, false);
  for (auto& r : refs)
    if (std::find(names.begin(), names.end(), r.name) != names.end()) set_module_active(r, true);
  st.active = names;
}

void mark_trainable(Module& model, const PeftConfig& config) {
  NoGradGuard no_grad;
  // named_parameters() returns handles; a handle without autograd state would get its own on
  // set_requires_grad(true), split from the module's member. Turning every member on through the modules
  // first gives all handles one shared state, which the handles below then set.
  model.set_requires_grad(true);
  for (auto& [n, t] : model.named_parameters()) {
    Tensor h = t;
    if (h.grad().defined()) h.set_grad(Tensor());
    h.set_requires_grad(false);
  }
  for (auto& r : all_adapter_refs(model)) {
    if (r.ln) {
      r.ln->trained_weight().set_requires_grad(true);
      if (r.ln->norm_bias && r.ln->trained_bias().defined()) r.ln->trained_bias().set_requires_grad(true);
      continue;
    }
    for (auto& [n, t] : r.adapter->named_parameters()) {
      Tensor h = t;
      h.set_requires_grad(true);
    }
  }
  for (auto& [path, m] : model.named_modules())
    if (starts_with(path, "peft_shared.") && path.find('.', 12) == std::string::npos) m->set_requires_grad(true);
  std::vector<PeftConfig> configs{config};
  std::vector<std::string> names{""};
  for (auto& [n, c] : state_of(model).configs) configs.push_back(c), names.push_back(n);
  for (size_t i = 0; i < configs.size(); ++i) {
    for (auto& [path, m] : modules_to_save_of(model, configs[i])) m->set_requires_grad(true);
    for (auto& [n, t] : config_biases(model, configs[i], names[i])) {
      Tensor h = t;
      h.set_requires_grad(true);
    }
  }
}

// ---- merging ----

void merge_adapters(Module& model, const std::vector<std::string>& names_in) {
  auto& st = state_of(model);
  std::vector<std::string> names = names_in.empty() ? st.active : names_in;
  for (const auto& n : names) VLP_CHECK(st.configs.count(n), "merge_adapters: no adapter '", n, "'");
  auto refs = all_adapter_refs(model);
  for (const auto& n : names)
    for (auto& r : refs) {
      if (r.name != n) continue;
      VLP_CHECK(r.linear || r.ln, "merge_adapters: adapter '", n, "' (", st.configs[n].peft_type, ", ",
                r.adapter->type_name(), " at ", r.site_path, ") is not mergeable");
      if (r.linear)
        VLP_CHECK(r.linear_adapter->mergeable(), "merge_adapters: adapter '", n, "' (", r.adapter->type_name(),
                  " at ", r.site_path, ") cannot be merged");
    }
  NoGradGuard no_grad;
  for (const auto& n : names) {
    if (std::find(st.merged.begin(), st.merged.end(), n) != st.merged.end()) continue;
    for (auto& r : refs) {
      if (r.name != n) continue;
      if (r.linear && !r.linear_adapter->merged) {
        r.linear_adapter->merge(*r.linear);
        r.linear_adapter->merged = true;
      } else if (r.ln) {
        r.ln->set_active(true);  // "merging" LN tuning = the copy in place
        r.ln->merged = true;
      }
    }
    st.merged.push_back(n);
  }
}

void unmerge_adapters(Module& model) {
  auto& st = state_of(model);
  NoGradGuard no_grad;
  auto refs = all_adapter_refs(model);
  for (auto it = st.merged.rbegin(); it != st.merged.rend(); ++it) {
    // Within a layer, later adapters unmerge first: walk refs backwards.
    for (auto r = refs.rbegin(); r != refs.rend(); ++r) {
      if (r->name != *it) continue;
      if (r->linear && r->linear_adapter->merged) {
        r->linear_adapter->unmerge(*r->linear);
        r->linear_adapter->merged = false;
      } else if (r->ln) {
        r->ln->merged = false;
        bool active = std::find(st.active.begin(), st.active.end(), *it) != st.active.end();
        r->ln->set_active(active);
      }
    }
  }
  st.merged.clear();
}

void merge_and_unload(Module& model) {
  auto& st = state_of(model);
  unmerge_adapters(model);
  merge_adapters(model, st.active);
  auto refs = all_adapter_refs(model);
  for (auto& r : refs) {
    if (r.linear_adapter) r.linear_adapter->merged = false;  // stays folded into the weight
    if (r.ln && r.ln->merged) {
      // Keep the copy in the norm, drop the original.
      r.ln->stash_weight = Tensor();
      r.ln->stash_bias = Tensor();
      r.ln->swapped_in = false;
    }
  }
  for (auto& r : refs) {
    if (r.linear) {
      detach_adapter(*r.linear, r.name);
    } else if (auto* s = dynamic_cast<SublayerSite*>(r.site)) {
      detach_adapter(*s, r.name);
    } else if (auto* a = dynamic_cast<AttentionSite*>(r.site)) {
      detach_adapter(*a, r.name);
    } else if (auto* i = dynamic_cast<InputSite*>(r.site)) {
      detach_adapter(*i, r.name);
    } else if (r.ln) {
      if (r.ln->swapped_in) r.ln->set_active(false);
      r.site->remove_module("adapters." + r.name);
    }
  }
  for (const auto& [n, c] : st.configs)
    if (model.find_module("peft_shared." + n)) model.remove_module("peft_shared." + n);
  model.remove_module("peft_state");
  for (auto& [n, t] : model.named_parameters()) {
    Tensor h = t;
    h.set_requires_grad(false);
  }
}

// ---- reports ----

ParamReport count_parameters(Module& model) {
  ParamReport r;
  for (auto& [n, t] : model.named_parameters()) {
    r.total += t.numel();
    if (t.requires_grad()) r.trainable += t.numel();
  }
  for (auto& [name, child] : model.children()) {
    if (name == "peft_state") continue;
    int64_t tr = 0, tot = 0;
    for (auto& [n, t] : child->named_parameters()) {
      tot += t.numel();
      if (t.requires_grad()) tr += t.numel();
    }
    r.per_module.push_back({name, tr, tot});
  }
  return r;
}

std::string ParamReport::to_string() const {
  std::ostringstream os;
  auto pct = [](int64_t a, int64_t b) { return b ? 100.0 * double(a) / double(b) : 0.0; };
  os << std::fixed << std::setprecision(4);
  for (const auto& [name, tr, tot] : per_module)
    os << name << ": trainable " << tr << " / " << tot << " (" << pct(tr, tot) << "%)\n";
  os << "trainable params: " << trainable << " || all params: " << total << " || trainable%: " << pct(trainable, total);
  return os.str();
}

// ---- files ----

std::vector<std::pair<std::string, Tensor>> adapter_state_dict(Module& model, const std::string& adapter_name) {
  return adapter_tensors(model, adapter_config(model, adapter_name), adapter_name);
}

void save_adapter(Module& model, const PeftConfig& config, const std::string& adapter_name, const std::string& dir) {
  VLP_CHECK(state_of(model).configs.count(adapter_name), "save_adapter: no adapter '", adapter_name, "' in this model");
  namespace fs = std::filesystem;
  const fs::path out = adapter_name == "default" ? fs::path(dir) : fs::path(dir) / adapter_name;
  fs::create_directories(out);
  const PeftMethod& method = find_method(config.peft_type);

  // The config: HF's defaults, then the given fields, then what the model decided.
  json j = method.default_config ? json::parse(method.default_config) : json::object();
  for (auto& [k, v] : config.raw.items()) j[k] = v;
  j["peft_type"] = config.peft_type;
  j["inference_mode"] = true;
  if (config.target_modules.empty() && config.target_regex.empty() && !config.target_all_linear &&
      j.contains("target_modules") && j["target_modules"].is_null()) {
    // The defaults the method used, as PEFT writes them back (the targeted module names' last parts).
    std::set<std::string> leaves;
    for (auto& r : all_adapter_refs(model))
      if (r.name == adapter_name) leaves.insert(split_dots(r.site_path).back());
    j["target_modules"] = std::vector<std::string>(leaves.begin(), leaves.end());
  }
  // GPT-2's Conv1D forces fan_in_fan_out, as PEFT does when it wraps one.
  if (j.contains("fan_in_fan_out")) {
    bool conv1d = false;
    for (auto& r : all_adapter_refs(model))
      if (r.name == adapter_name && r.linear && r.linear->fan_in_fan_out) conv1d = true;
    j["fan_in_fan_out"] = conv1d;
  }
  auto live = adapter_tensors(model, config, adapter_name);
  if (method.prepare_save) method.prepare_save(model, adapter_name, j, live);
  write_text_atomic((out / "adapter_config.json").string(), j.dump(2));

  NamedTensors tensors;
  for (auto& [k, t] : live) tensors.push_back({k, convert(t.detach(), DType::F32)});
  save_safetensors((out / "adapter_model.safetensors").string(), tensors, {{"format", "pt"}});
}

PeftConfig load_adapter(Module& model, const std::string& dir, const std::string& adapter_name) {
  namespace fs = std::filesystem;
  fs::path base = dir;
  if (!fs::exists(base / "adapter_config.json") && fs::exists(base / adapter_name / "adapter_config.json"))
    base = base / adapter_name;
  const fs::path st_path = base / "adapter_model.safetensors";
  if (!fs::exists(st_path) && fs::exists(base / "adapter_model.bin"))
    VLP_FAIL(base.string(), ": only the legacy pickled adapter_model.bin is present; it is refused (not safe to ",
             "read). Re-save the adapter with safetensors (save_pretrained(safe_serialization=True)).");
  VLP_CHECK(fs::exists(base / "adapter_config.json"), base.string(), ": no adapter_config.json");
  VLP_CHECK(fs::exists(st_path), base.string(), ": no adapter_model.safetensors");
  const std::string config_path = (base / "adapter_config.json").string();
  SafetensorsFile file = load_safetensors(st_path.string());
  // The file's tensors by key. A ViT adapter written by PEFT on transformers 5 names the renamed modules
  // (vit.layers.N.attention.q_proj, ...): its keys and config are translated to the classic names models/vit
  // uses, by the one table of models/peft/vit_names.cpp (save_adapter writes the classic names).
  std::map<std::string, Tensor> file_tensors;
  for (auto& [k, t] : file.tensors) file_tensors[k] = t;
  PeftConfig config = load_peft_config(config_path);
  if (backbone_kind(model) == "vit") {
    std::vector<std::string> keys;
    for (auto& [k, t] : file.tensors) keys.push_back(k);
    if (uses_transformers5_vit_names(config.raw, keys)) {
      config = parse_peft_config(vit_config_from_transformers5(config.raw, config_path), config_path);
      file_tensors.clear();
      for (auto& [k, t] : file.tensors) {
        const std::string classic = vit_key_from_transformers5(k);
        VLP_CHECK(file_tensors.emplace(classic, t).second, st_path.string(), ": tensors '", k,
                  "' and another map to the same classic ViT name '", classic, "'");
      }
    }
  }
  // The file's tensors replace whatever the initialisation drew. Base-rewriting inits (PiSSA, OLoRA) run again
  // on load, as PEFT does, so an adapter saved with them loads onto the original base; an adapter converted
  // with save_adapter_as_plain_lora (init true, rank 2r) needs no rewrite.
  add_adapter(model, config, adapter_name, 0);

  auto expected = adapter_tensors(model, config, adapter_name);
  auto find = [&](const std::string& key) -> const Tensor* {
    auto it = file_tensors.find(key);
    return it == file_tensors.end() ? nullptr : &it->second;
  };
  std::vector<std::string> problems;
  std::set<std::string> used;
  for (auto& [key, t] : expected) {
    const Tensor* src = find(key);
    // VeRA saved with save_projection = false: the projections were regenerated from projection_prng_key by
    // attach_vera, bit-exactly as torch's generator (models/peft/vera.h).
    if (!src && config.peft_type == "VERA" && !config.get_bool("save_projection", true) &&
        (key == "base_model.vera_A" || key == "base_model.vera_B"))
      continue;
    if (!src) {
      problems.push_back("missing tensor: " + key + " " + shape_str(t.shape()));
      continue;
    }
    used.insert(key);
    if (src->shape() != t.shape())
      problems.push_back(str("shape mismatch: ", key, ": file ", shape_str(src->shape()), " vs model ",
                             shape_str(t.shape()), " (check r / rank_pattern / target_modules against the model)"));
    else if (!is_floating(src->dtype()))
      problems.push_back(str("dtype mismatch: ", key, ": file ", src->dtype(), ", a floating dtype expected"));
  }
  for (auto& [key, t] : file_tensors)
    if (!used.count(key)) problems.push_back("unexpected tensor: " + key + " " + shape_str(t.shape()));
  if (!problems.empty()) {
    delete_adapter(model, adapter_name);
    std::string all;
    for (auto& p : problems) all += "\n  " + p;
    VLP_FAIL(st_path.string(), " does not match the model with adapter '", adapter_name, "' (", config.peft_type,
             "):", all);
  }
  NoGradGuard no_grad;
  for (auto& [key, t] : expected)
    if (const Tensor* src = find(key)) copy_(t, convert(*src, t.dtype()));
  return config;
}

}  // namespace vlp::peft
