// transformers-5 ViT names -> classic ViT names (see vit_names.h for why). The whole mapping is the three tables
// below; everything else walks dotted names with them.
#include "models/peft/vit_names.h"

#include <algorithm>

#include "runtime/error.h"

namespace vlp::peft {

namespace {

using json = nlohmann::json;

struct Rename {
  const char* from;  // transformers 5
  const char* to;    // classic (transformers 4.x, published checkpoints, models/vit)
};

// The layer block: vit.layers.<N> -> vit.encoder.layer.<N> (ViTModel alone: layers.<N> -> encoder.layer.<N>).
const Rename kLayerBlock = {"layers", "encoder.layer"};

// Modules inside one layer block (the two segments after "layers.<N>"). layernorm_before / layernorm_after keep
// their names.
const Rename kInLayer[] = {
    {"attention.q_proj", "attention.attention.query"},
    {"attention.k_proj", "attention.attention.key"},
    {"attention.v_proj", "attention.attention.value"},
    {"attention.o_proj", "attention.output.dense"},
    {"mlp.fc1", "intermediate.dense"},
    {"mlp.fc2", "output.dense"},
};

// Bare module names as target lists give them (a dotted suffix). fc2's classic suffix "output.dense" also ends
// attention.output.dense, so it is only exact after a layer index (see translate_list).
const Rename kBare[] = {
    {"q_proj", "query"},
    {"k_proj", "key"},
    {"v_proj", "value"},
    {"o_proj", "attention.output.dense"},
    {"fc1", "intermediate.dense"},
    {"fc2", "output.dense"},
};

// Segments that exist only in the transformers-5 scheme: left over after translation they are an error.
const char* const kNewOnly[] = {"q_proj", "k_proj", "v_proj", "o_proj", "fc1", "fc2", "mlp", "layers"};

// The regex matching a classic name ending in "layer.<N>.output.dense" (fc2 without its layer index).
const char* const kFc2Regex = "layer\\.[0-9]+\\.output\\.dense";

std::vector<std::string> split_dots(const std::string& s) {
  std::vector<std::string> out(1);
  for (char c : s) {
    if (c == '.') out.emplace_back();
    else out.back() += c;
  }
  return out;
}

bool all_digits(const std::string& s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

bool is_new_only(const std::string& seg) {
  for (const char* n : kNewOnly)
    if (seg == n) return true;
  return false;
}

struct Translated {
  std::string name;
  bool fc2_without_layer = false;  // ends in a bare "output.dense" from fc2: ambiguous as a suffix
};

// One dotted name (a tensor key or a module-name entry) in classic names; `what` names it in errors.
Translated translate(const std::string& name, const std::string& what) {
  auto seg = split_dots(name);
  std::string out;
  Translated t;
  auto emit = [&](const std::string& s) { out += (out.empty() ? "" : ".") + s; };
  auto fail = [&](const std::string& why) {
    VLP_FAIL(what, " '", name, "': ", why, " (transformers-5 ViT names that map to classic ones: layers.<N>, ",
             "attention.{q,k,v,o}_proj, mlp.fc1, mlp.fc2; models/peft/vit_names.cpp)");
  };
  bool after_layer = false;
  for (size_t i = 0; i < seg.size();) {
    if (seg[i] == kLayerBlock.from && i + 1 < seg.size() && all_digits(seg[i + 1])) {
      emit(std::string(kLayerBlock.to) + "." + seg[i + 1]);
      i += 2;
      after_layer = true;
      continue;
    }
    bool done = false;
    if (i + 1 < seg.size()) {
      const std::string two = seg[i] + "." + seg[i + 1];
      for (const Rename& r : kInLayer)
        if (two == r.from) {
          emit(r.to);
          t.fc2_without_layer = two == "mlp.fc2" && !after_layer;
          i += 2;
          done = true;
          break;
        }
    }
    if (!done && !after_layer)
      for (const Rename& r : kBare)
        if (seg[i] == r.from) {
          emit(r.to);
          t.fc2_without_layer = seg[i] == "fc2";
          i += 1;
          done = true;
          break;
        }
    if (done) {
      after_layer = false;
      continue;
    }
    if (is_new_only(seg[i])) fail("no classic name for '" + seg[i] + "' here");
    emit(seg[i]);
    after_layer = false;
    ++i;
  }
  t.name = out;
  return t;
}

std::string regex_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (std::string("\\^$.|?*+()[]{}").find(c) != std::string::npos) out += '\\';
    out += c;
  }
  return out;
}

bool mentions_new_only(const std::string& text) {
  for (const char* n : kNewOnly)
    if (text.find(n) != std::string::npos) return true;
  return false;
}

// A module-name list: each entry translated; when one is fc2 without its layer index (and the field takes a
// regex), the whole list becomes the regex with the same matching rule (exact name or dotted suffix).
json translate_list(const json& v, const std::string& field, const std::string& source, bool regex_allowed) {
  const std::string what = source + ": field '" + field + "' entry";
  if (v.is_string()) {
    VLP_CHECK(!mentions_new_only(v.get<std::string>()), source, ": field '", field, "' is a regex naming ",
              "transformers-5 ViT modules (", v.get<std::string>(), "); it cannot be rewritten to the classic names ",
              "safely: list the modules instead, or write the regex with classic names");
    return v;
  }
  if (!v.is_array()) return v;  // null, or a type parse_peft_config reports
  std::vector<Translated> entries;
  bool ambiguous = false;
  for (const auto& e : v) {
    if (!e.is_string()) return v;  // parse_peft_config names the bad entry
    entries.push_back(translate(e.get<std::string>(), what));
    ambiguous = ambiguous || entries.back().fc2_without_layer;
  }
  if (!ambiguous) {
    json out = json::array();
    for (const auto& t : entries) out.push_back(t.name);
    return out;
  }
  VLP_CHECK(regex_allowed, what, " 'fc2' has no classic suffix ('output.dense' also names attention.output.dense); ",
            source, ": field '", field, "' takes no regex, so list the full module names");
  std::string alternatives;
  for (const auto& t : entries) {
    std::string alt = regex_escape(t.name);
    if (t.fc2_without_layer) alt = alt.substr(0, alt.size() - std::string("output\\.dense").size()) + kFc2Regex;
    alternatives += (alternatives.empty() ? "" : "|") + alt;
  }
  return "(.*\\.)?(" + alternatives + ")";
}

}  // namespace

bool uses_transformers5_vit_names(const json& config, const std::vector<std::string>& tensor_keys) {
  for (const auto& key : tensor_keys) {
    auto seg = split_dots(key);
    for (size_t i = 0; i + 1 < seg.size(); ++i)
      if (seg[i] == kLayerBlock.from && all_digits(seg[i + 1])) return true;
  }
  if (!config.is_object() || !config.contains("target_modules")) return false;
  const json& t = config["target_modules"];
  if (t.is_string()) return mentions_new_only(t.get<std::string>());
  if (t.is_array())
    for (const auto& e : t)
      if (e.is_string())
        for (const auto& s : split_dots(e.get<std::string>()))
          if (is_new_only(s)) return true;
  return false;
}

std::string vit_key_from_transformers5(const std::string& key) {
  Translated t = translate(key, "adapter tensor");
  VLP_CHECK(!t.fc2_without_layer, "adapter tensor '", key, "': mlp.fc2 outside a layers.<N> block has no classic name");
  return t.name;
}

json vit_config_from_transformers5(const json& config, const std::string& source) {
  json out = config;
  const struct {
    const char* field;
    bool regex_allowed;
  } lists[] = {{"target_modules", true}, {"exclude_modules", true}, {"feedforward_modules", true},
               {"modules_to_save", false}};
  for (const auto& l : lists)
    if (out.contains(l.field)) out[l.field] = translate_list(out[l.field], l.field, source, l.regex_allowed);
  if (out.contains("layers_pattern")) {
    json& p = out["layers_pattern"];
    auto fix = [](json& e) {
      if (e.is_string() && e.get<std::string>() == kLayerBlock.from) e = "layer";
    };
    if (p.is_array())
      for (auto& e : p) fix(e);
    else fix(p);
  }
  for (const char* field : {"rank_pattern", "alpha_pattern", "n_frequency_pattern"}) {
    if (!out.contains(field) || !out[field].is_object()) continue;
    json renamed = json::object();
    for (auto& [k, v] : out[field].items()) {
      Translated t = translate(k, source + ": field '" + field + "' key");
      VLP_CHECK(!t.fc2_without_layer, source, ": field '", field, "' key '", k, "': 'fc2' has no classic suffix ",
                "('output.dense' also names attention.output.dense); give the layer, e.g. layers.0.mlp.fc2");
      renamed[t.name] = v;
    }
    out[field] = renamed;
  }
  return out;
}

}  // namespace vlp::peft
