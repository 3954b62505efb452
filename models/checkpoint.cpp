#include "models/checkpoint.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "runtime/safetensors.h"

namespace vlp {

namespace fs = std::filesystem;
using json = nlohmann::json;

// ---- reading checkpoints ----

namespace {

std::vector<std::pair<std::string, Tensor>> read_sharded(const fs::path& index_file) {
  std::ifstream in(index_file);
  VLP_CHECK(in, "cannot open ", index_file.string());
  json index;
  try {
    index = json::parse(in);
  } catch (const json::exception& e) {
    VLP_FAIL(index_file.string(), ": not valid JSON (", e.what(), ")");
  }
  VLP_CHECK(index.contains("weight_map") && index["weight_map"].is_object(), index_file.string(),
            ": missing required key \"weight_map\"");
  std::map<std::string, std::set<std::string>> by_shard;
  for (auto it = index["weight_map"].begin(); it != index["weight_map"].end(); ++it)
    by_shard[it.value().get<std::string>()].insert(it.key());
  std::vector<std::pair<std::string, Tensor>> out;
  for (const auto& [shard, names] : by_shard) {
    auto tensors = load_safetensors((index_file.parent_path() / shard).string()).tensors;
    std::set<std::string> found;
    for (auto& [name, t] : tensors)
      if (names.count(name)) {
        out.push_back({name, t});
        found.insert(name);
      }
    for (const auto& name : names)
      VLP_CHECK(found.count(name), index_file.string(), ": tensor ", name, " is listed in shard ", shard,
                " but that file does not hold it");
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  return out;
}

// Bitwise equality (tied copies are saved from one tensor).
bool same_values(const Tensor& a, const Tensor& b) {
  if (a.shape() != b.shape() || a.dtype() != b.dtype()) return false;
  Tensor ca = convert(a, a.dtype(), Device::cpu()), cb = convert(b, b.dtype(), Device::cpu());
  return std::memcmp(ca.data_ptr(), cb.data_ptr(), size_t(ca.numel()) * ca.element_size()) == 0;
}

}  // namespace

std::vector<std::pair<std::string, Tensor>> read_checkpoint(const std::string& path) {
  fs::path p(path);
  if (fs::is_directory(p)) {
    if (fs::exists(p / "model.safetensors")) return load_safetensors((p / "model.safetensors").string()).tensors;
    if (fs::exists(p / "model.safetensors.index.json")) return read_sharded(p / "model.safetensors.index.json");
    VLP_FAIL(path, ": no model.safetensors or model.safetensors.index.json in this directory");
  }
  VLP_CHECK(fs::exists(p), "checkpoint not found: ", path);
  if (p.extension() == ".json") return read_sharded(p);
  return load_safetensors(path).tensors;
}

// ---- matching ----

StateDictReport load_checkpoint(Module& model, const std::vector<std::pair<std::string, Tensor>>& tensors,
                                const CheckpointRules& rules, bool strict, bool allow_dtype_conversion) {
  auto state = model.state_dict();
  std::map<std::string, Tensor> wanted(state.begin(), state.end());
  std::map<std::string, std::string> alias_of(rules.aliases.begin(), rules.aliases.end());
  std::vector<std::regex> ignore;
  for (const auto& pattern : rules.ignore_unexpected) ignore.emplace_back(pattern);
  auto ignored = [&](const std::string& name) {
    return std::any_of(ignore.begin(), ignore.end(), [&](const std::regex& r) { return std::regex_search(name, r); });
  };
  auto known = [&](const std::string& name) { return wanted.count(name) || alias_of.count(name) || ignored(name); };

  // A base-model checkpoint (no "transformer." / "model." prefix) loads into the LM model.
  const std::string prefix = rules.base_model_prefix.empty() ? "" : rules.base_model_prefix + ".";
  bool add_prefix = !prefix.empty();
  for (const auto& [name, t] : tensors) add_prefix = add_prefix && name.rfind(prefix, 0) != 0;
  StateDictReport report;
  std::map<std::string, Tensor> found;
  std::vector<std::pair<std::string, Tensor>> aliased;
  for (const auto& [raw, t] : tensors) {
    std::string name = add_prefix && !known(raw) && known(prefix + raw) ? prefix + raw : raw;
    if (ignored(name)) continue;
    if (alias_of.count(name)) {
      aliased.push_back({name, t});
      continue;
    }
    if (!found.insert({name, t}).second) report.unexpected.push_back(name + " (twice)");
  }
  for (const auto& [alias, t] : aliased) {
    const std::string& canonical = alias_of[alias];
    auto it = found.find(canonical);
    if (it == found.end()) {
      found.insert({canonical, t});  // only the tied copy was saved
    } else if (!same_values(it->second, t)) {
      report.mismatched.push_back(alias + ": differs from " + canonical +
                                  ", which this model ties it to (check tie_word_embeddings in the config)");
    }
  }
  std::vector<std::pair<Tensor, Tensor>> copies;
  for (const auto& [name, param] : wanted) {
    auto it = found.find(name);
    if (it == found.end()) {
      if (std::find(rules.allow_missing.begin(), rules.allow_missing.end(), name) == rules.allow_missing.end())
        report.missing.push_back(name);
      continue;
    }
    const Tensor& src = it->second;
    const bool dtype_ok = src.dtype() == param.dtype() ||
                          (allow_dtype_conversion && is_floating(src.dtype()) && is_floating(param.dtype()));
    if (src.shape() != param.shape() || !dtype_ok)
      report.mismatched.push_back(str(name, ": checkpoint ", src.dtype(), " ", shape_str(src.shape()), " vs model ",
                                      param.dtype(), " ", shape_str(param.shape())));
    else
      copies.push_back({param, src});
  }
  for (const auto& [name, t] : found)
    if (!wanted.count(name)) report.unexpected.push_back(name);
  VLP_CHECK(!strict || report.ok(), "checkpoint does not match the model:\n", report.describe());
  NoGradGuard no_grad;
  for (auto& [param, src] : copies) copy_(param, src);
  return report;
}

StateDictReport load_checkpoint(Module& model, const std::string& path, const CheckpointRules& rules, bool strict,
                                bool allow_dtype_conversion) {
  try {
    return load_checkpoint(model, read_checkpoint(path), rules, strict, allow_dtype_conversion);
  } catch (const Error& e) {
    throw Error(path + ": " + e.what());
  }
}

CheckpointRules checkpoint_rules(const GPT2LMHeadModel& model) {
  CheckpointRules r;
  r.base_model_prefix = "transformer";
  if (model.config.tie_word_embeddings) r.aliases.push_back({"lm_head.weight", "transformer.wte.weight"});
  r.ignore_unexpected = {R"(^transformer\.h\.\d+\.attn\.(masked_)?bias$)"};
  return r;
}

CheckpointRules checkpoint_rules(const T5ForConditionalGeneration& model) {
  CheckpointRules r;
  r.aliases = {{"encoder.embed_tokens.weight", "shared.weight"}, {"decoder.embed_tokens.weight", "shared.weight"}};
  if (model.config.tie_word_embeddings) r.aliases.push_back({"lm_head.weight", "shared.weight"});
  r.ignore_unexpected = {R"(^decoder\.block\.0\.layer\.1\.EncDecAttention\.relative_attention_bias\.weight$)"};
  return r;
}

CheckpointRules checkpoint_rules(const BartForConditionalGeneration&) {
  CheckpointRules r;
  r.base_model_prefix = "model";
  r.aliases = {{"model.encoder.embed_tokens.weight", "model.shared.weight"},
               {"model.decoder.embed_tokens.weight", "model.shared.weight"},
               {"lm_head.weight", "model.shared.weight"}};
  r.ignore_unexpected = {R"(^model\.(encoder|decoder)\.version$)"};
  r.allow_missing = {"final_logits_bias"};
  return r;
}

StateDictReport load_checkpoint(GPT2LMHeadModel& model, const std::string& path, bool strict) {
  return load_checkpoint(model, path, checkpoint_rules(model), strict);
}
StateDictReport load_checkpoint(T5ForConditionalGeneration& model, const std::string& path, bool strict) {
  return load_checkpoint(model, path, checkpoint_rules(model), strict);
}
StateDictReport load_checkpoint(BartForConditionalGeneration& model, const std::string& path, bool strict) {
  return load_checkpoint(model, path, checkpoint_rules(model), strict);
}

// ---- saving ----

void save_checkpoint(const Module& model, const std::string& directory, int64_t max_shard_bytes) {
  fs::create_directories(directory);
  auto state = model.state_dict();
  int64_t total = 0;
  for (const auto& [name, t] : state) total += t.numel() * int64_t(t.element_size());
  if (max_shard_bytes <= 0 || total <= max_shard_bytes) {
    save_safetensors((fs::path(directory) / "model.safetensors").string(), state, {{"format", "pt"}});
    return;
  }
  // Greedy shards in state-dict order, each at most max_shard_bytes (a larger tensor gets a shard of its own).
  std::vector<std::vector<std::pair<std::string, Tensor>>> shards(1);
  int64_t used = 0;
  for (const auto& entry : state) {
    const int64_t bytes = entry.second.numel() * int64_t(entry.second.element_size());
    if (!shards.back().empty() && used + bytes > max_shard_bytes) shards.emplace_back(), used = 0;
    shards.back().push_back(entry);
    used += bytes;
  }
  json index;
  index["metadata"] = {{"total_size", total}};
  index["weight_map"] = json::object();
  for (size_t i = 0; i < shards.size(); ++i) {
    char file[64];
    std::snprintf(file, sizeof file, "model-%05zu-of-%05zu.safetensors", i + 1, shards.size());
    save_safetensors((fs::path(directory) / file).string(), shards[i], {{"format", "pt"}});
    for (const auto& [name, t] : shards[i]) index["weight_map"][name] = file;
  }
  std::ofstream out(fs::path(directory) / "model.safetensors.index.json");
  VLP_CHECK(out, "cannot write ", directory, "/model.safetensors.index.json");
  out << index.dump(2) << "\n";
}

}  // namespace vlp
