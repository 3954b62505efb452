// PEFT configs: adapter_config.json / training-config fields with HF PEFT's names (spec/peft.md §6.3), parsed
// into PeftConfig; every wrong type or value is named with the config's source and the field.
#include <fstream>

#include "models/peft/peft.h"

namespace vlp::peft {

namespace {

using json = nlohmann::json;

// A string list field: null/absent -> {}, a string -> {string} (is_regex set), a list of strings.
std::vector<std::string> string_list(const json& j, const std::string& key, const std::string& source,
                                     bool* was_string = nullptr) {
  if (was_string) *was_string = false;
  if (!j.contains(key) || j[key].is_null()) return {};
  const json& v = j[key];
  if (v.is_string()) {
    if (was_string) *was_string = true;
    return {v.get<std::string>()};
  }
  VLP_CHECK(v.is_array(), source, ": field '", key, "' must be a list of strings or a string, got ", v.type_name());
  std::vector<std::string> out;
  for (const auto& e : v) {
    VLP_CHECK(e.is_string(), source, ": field '", key, "' must hold strings, got ", e.dump());
    out.push_back(e.get<std::string>());
  }
  return out;
}

}  // namespace

// ---- configs ----

int PeftConfig::get_int(const std::string& key, int fallback) const {
  if (!raw.contains(key) || raw[key].is_null()) return fallback;
  VLP_CHECK(raw[key].is_number_integer(), source, ": field '", key, "' must be an integer, got ", raw[key].dump());
  return raw[key].get<int>();
}

double PeftConfig::get_double(const std::string& key, double fallback) const {
  if (!raw.contains(key) || raw[key].is_null()) return fallback;
  VLP_CHECK(raw[key].is_number(), source, ": field '", key, "' must be a number, got ", raw[key].dump());
  return raw[key].get<double>();
}

bool PeftConfig::get_bool(const std::string& key, bool fallback) const {
  if (!raw.contains(key) || raw[key].is_null()) return fallback;
  VLP_CHECK(raw[key].is_boolean(), source, ": field '", key, "' must be true or false, got ", raw[key].dump());
  return raw[key].get<bool>();
}

std::string PeftConfig::get_string(const std::string& key, const std::string& fallback) const {
  if (!raw.contains(key) || raw[key].is_null()) return fallback;
  VLP_CHECK(raw[key].is_string(), source, ": field '", key, "' must be a string, got ", raw[key].dump());
  return raw[key].get<std::string>();
}

double PeftConfig::require_double(const std::string& key) const {
  VLP_CHECK(raw.contains(key) && !raw[key].is_null(), source, ": field '", key, "' is missing (a scale is never ",
            "defaulted silently)");
  return get_double(key, 0.0);
}

PeftConfig parse_peft_config(const json& j, const std::string& source) {
  VLP_CHECK(j.is_object(), source, ": a PEFT config must be a JSON object");
  PeftConfig c;
  c.source = source;
  c.raw = j;
  VLP_CHECK(j.contains("peft_type") && j["peft_type"].is_string(), source,
            ": field 'peft_type' is missing or not a string");
  c.peft_type = j["peft_type"].get<std::string>();
  find_method(c.peft_type);  // unknown types fail here, listing the known ones
  c.task_type = c.get_string("task_type", "");
  c.base_model_name_or_path = c.get_string("base_model_name_or_path", "");
  bool is_string = false;
  auto targets = string_list(j, "target_modules", source, &is_string);
  if (is_string) {
    if (targets[0] == "all-linear") c.target_all_linear = true;
    else c.target_regex = targets[0];
  } else {
    c.target_modules = targets;
  }
  auto excludes = string_list(j, "exclude_modules", source, &is_string);
  if (is_string) c.exclude_regex = excludes[0];
  else c.exclude_modules = excludes;
  if (j.contains("layers_to_transform") && !j["layers_to_transform"].is_null()) {
    const json& v = j["layers_to_transform"];
    if (v.is_number_integer()) {
      c.layers_to_transform = {v.get<int>()};
    } else {
      VLP_CHECK(v.is_array(), source, ": field 'layers_to_transform' must be an integer or a list of integers");
      for (const auto& e : v) {
        VLP_CHECK(e.is_number_integer(), source, ": field 'layers_to_transform' must hold integers, got ", e.dump());
        c.layers_to_transform.push_back(e.get<int>());
      }
    }
  }
  c.layers_pattern = string_list(j, "layers_pattern", source);
  VLP_CHECK(c.layers_pattern.empty() || !c.layers_to_transform.empty(), source,
            ": field 'layers_pattern' is only meaningful with 'layers_to_transform'");
  for (const char* key : {"rank_pattern", "alpha_pattern"}) {
    if (!j.contains(key) || j[key].is_null()) continue;
    // AdaLoRA's rank_pattern is its pruning masks (name -> list of booleans), read by the method itself.
    if (c.peft_type == "ADALORA" && std::string(key) == "rank_pattern") continue;
    VLP_CHECK(j[key].is_object(), source, ": field '", key, "' must be an object of name pattern -> number");
    for (auto& [k, v] : j[key].items()) {
      if (std::string(key) == "rank_pattern") {
        VLP_CHECK(v.is_number_integer(), source, ": field 'rank_pattern' entry '", k, "' must be an integer");
        c.rank_pattern[k] = v.get<int>();
      } else {
        VLP_CHECK(v.is_number(), source, ": field 'alpha_pattern' entry '", k, "' must be a number");
        c.alpha_pattern[k] = v.get<double>();
      }
    }
  }
  c.modules_to_save = string_list(j, "modules_to_save", source);
  c.bias = c.get_string("bias", "none");
  VLP_CHECK(c.bias == "none" || c.bias == "all" || c.bias == "lora_only", source,
            ": field 'bias' must be \"none\", \"all\" or \"lora_only\", got \"", c.bias, "\"");
  return c;
}

PeftConfig load_peft_config(const std::string& path) {
  std::ifstream f(path);
  VLP_CHECK(f.good(), "cannot open PEFT config ", path);
  json j;
  try {
    f >> j;
  } catch (const json::exception& e) {
    VLP_FAIL(path, ": not valid JSON: ", e.what());
  }
  return parse_peft_config(j, path);
}

}  // namespace vlp::peft
