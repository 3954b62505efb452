// TEMPORARY (branch peft-linear): minimal definitions of the peft.h functions the Linear-site methods use,
// so they build and test before the core (peft.cpp, branch peft-core) lands. Deleted on merging the core.
#include <regex>

#include "models/peft/peft.h"

namespace vlp::peft {

int PeftConfig::get_int(const std::string& key, int fallback) const {
  return raw.contains(key) && !raw[key].is_null() ? raw[key].get<int>() : fallback;
}
double PeftConfig::get_double(const std::string& key, double fallback) const {
  return raw.contains(key) && !raw[key].is_null() ? raw[key].get<double>() : fallback;
}
bool PeftConfig::get_bool(const std::string& key, bool fallback) const {
  return raw.contains(key) && !raw[key].is_null() ? raw[key].get<bool>() : fallback;
}
std::string PeftConfig::get_string(const std::string& key, const std::string& fallback) const {
  return raw.contains(key) && !raw[key].is_null() ? raw[key].get<std::string>() : fallback;
}

PeftConfig parse_peft_config(const nlohmann::json& j, const std::string& source) {
  PeftConfig c;
  c.raw = j;
  c.source = source;
  c.peft_type = j.value("peft_type", "");
  if (j.contains("target_modules") && j["target_modules"].is_array())
    c.target_modules = j["target_modules"].get<std::vector<std::string>>();
  if (j.contains("target_modules") && j["target_modules"].is_string()) c.target_regex = j["target_modules"];
  if (j.contains("rank_pattern") && j["rank_pattern"].is_object())
    for (auto& [k, v] : j["rank_pattern"].items()) c.rank_pattern[k] = v.get<int>();
  if (j.contains("alpha_pattern") && j["alpha_pattern"].is_object())
    for (auto& [k, v] : j["alpha_pattern"].items()) c.alpha_pattern[k] = v.get<double>();
  return c;
}

std::vector<std::pair<std::string, Linear*>> linear_sites(Module& model) {
  std::vector<std::pair<std::string, Linear*>> out;
  for (auto& [name, m] : model.named_modules())
    if (auto* l = dynamic_cast<Linear*>(m)) out.push_back({name, l});
  return out;
}

bool name_matches_targets(const PeftConfig& c, const std::string& name, const std::vector<std::string>& defaults) {
  if (!c.target_regex.empty()) return std::regex_match(name, std::regex(c.target_regex));
  const auto& targets = c.target_modules.empty() ? defaults : c.target_modules;
  for (const auto& t : targets)
    if (name == t || (name.size() > t.size() && name.compare(name.size() - t.size(), t.size(), t) == 0 &&
                      name[name.size() - t.size() - 1] == '.'))
      return true;
  return false;
}

}  // namespace vlp::peft
