#include "models/config.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "autograd/elementwise.h"

namespace vlp {

namespace {

using json = nlohmann::json;

// One config file: typed getters that name the key and the file in every error.
struct ConfigReader {
  json doc;
  std::string source;

  const json* find(const std::string& key) const {
    auto it = doc.find(key);
    return it == doc.end() || it->is_null() ? nullptr : &*it;
  }
  bool has(const std::string& key) const { return find(key) != nullptr; }

  int64_t integer(const std::string& key, const json& v) const {
    VLP_CHECK(v.is_number_integer(), source, ": key \"", key, "\" must be an integer, got ", v.dump());
    return v.get<int64_t>();
  }
  int64_t required_int(const std::string& key) const {
    const json* v = find(key);
    VLP_CHECK(v, source, ": missing required key \"", key, "\"");
    int64_t x = integer(key, *v);
    VLP_CHECK(x > 0, source, ": key \"", key, "\" must be positive, got ", x);
    return x;
  }
  int64_t get_int(const std::string& key, int64_t fallback) const {
    const json* v = find(key);
    return v ? integer(key, *v) : fallback;
  }
  double get_double(const std::string& key, double fallback) const {
    const json* v = find(key);
    if (!v) return fallback;
    VLP_CHECK(v->is_number(), source, ": key \"", key, "\" must be a number, got ", v->dump());
    return v->get<double>();
  }
  bool get_bool(const std::string& key, bool fallback) const {
    const json* v = find(key);
    if (!v) return fallback;
    VLP_CHECK(v->is_boolean(), source, ": key \"", key, "\" must be true or false, got ", v->dump());
    return v->get<bool>();
  }
  std::string get_string(const std::string& key, const std::string& fallback) const {
    const json* v = find(key);
    if (!v) return fallback;
    VLP_CHECK(v->is_string(), source, ": key \"", key, "\" must be a string, got ", v->dump());
    return v->get<std::string>();
  }
  // An optional token id: the default applies when the key is absent; an explicit null means "none".
  std::optional<int64_t> get_token(const std::string& key, std::optional<int64_t> fallback) const {
    auto it = doc.find(key);
    if (it == doc.end()) return fallback;
    if (it->is_null()) return std::nullopt;
    return integer(key, *it);
  }
  // An int or a list of ints (eos_token_id may list several).
  std::vector<int64_t> get_token_list(const std::string& key, std::vector<int64_t> fallback) const {
    auto it = doc.find(key);
    if (it == doc.end()) return fallback;
    if (it->is_null()) return {};
    if (it->is_array()) {
      std::vector<int64_t> out;
      for (const json& v : *it) out.push_back(integer(key, v));
      return out;
    }
    return {integer(key, *it)};
  }
};

ConfigReader parse(const std::string& text, const std::string& source) {
  ConfigReader r;
  r.source = source;
  try {
    r.doc = json::parse(text);
  } catch (const json::exception& e) {
    VLP_FAIL(source, ": not valid JSON (", e.what(), ")");
  }
  VLP_CHECK(r.doc.is_object(), source, ": a config must be a JSON object");
  return r;
}

std::string config_path(const std::string& path) {
  namespace fs = std::filesystem;
  fs::path p(path);
  if (fs::is_directory(p)) p /= "config.json";
  return p.string();
}

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  VLP_CHECK(in, "cannot open config file ", path);
  std::ostringstream os;
  os << in.rdbuf();
  return os.str();
}

}  // namespace

ActivationFn activation_by_name(const std::string& name, const std::string& key) {
  if (name == "relu") return relu;
  if (name == "gelu") return gelu;
  if (name == "gelu_new" || name == "gelu_pytorch_tanh" || name == "gelu_fast") return gelu_tanh;
  if (name == "quick_gelu") return quick_gelu;
  if (name == "silu" || name == "swish") return silu;
  if (name == "tanh") return tanh;
  if (name == "sigmoid") return sigmoid;
  VLP_FAIL(key, ": unsupported activation \"", name,
           "\" (supported: relu, gelu, gelu_new, gelu_pytorch_tanh, gelu_fast, quick_gelu, silu, swish, tanh, sigmoid)");
}

GPT2Config parse_gpt2_config(const std::string& text, const std::string& source) {
  ConfigReader r = parse(text, source);
  GPT2Config c;
  c.vocab_size = r.required_int("vocab_size");
  c.n_positions = r.required_int("n_positions");
  c.n_embd = r.required_int("n_embd");
  c.n_layer = r.required_int("n_layer");
  c.n_head = r.required_int("n_head");
  c.n_inner = r.get_int("n_inner", 0);
  c.activation_function = r.get_string("activation_function", c.activation_function);
  activation_by_name(c.activation_function, source + ": activation_function");
  c.resid_pdrop = r.get_double("resid_pdrop", c.resid_pdrop);
  c.embd_pdrop = r.get_double("embd_pdrop", c.embd_pdrop);
  c.attn_pdrop = r.get_double("attn_pdrop", c.attn_pdrop);
  c.layer_norm_epsilon = r.get_double("layer_norm_epsilon", c.layer_norm_epsilon);
  c.scale_attn_weights = r.get_bool("scale_attn_weights", c.scale_attn_weights);
  c.scale_attn_by_inverse_layer_idx = r.get_bool("scale_attn_by_inverse_layer_idx", false);
  c.tie_word_embeddings = r.get_bool("tie_word_embeddings", true);
  VLP_CHECK(!r.get_bool("add_cross_attention", false), source,
            ": key \"add_cross_attention\" = true (GPT-2 with cross-attention) is not supported");
  VLP_CHECK(c.n_embd % c.n_head == 0, source, ": n_embd (", c.n_embd, ") must be divisible by n_head (", c.n_head, ")");
  c.tokens.bos_token_id = r.get_token("bos_token_id", 50256);
  c.tokens.eos_token_id = r.get_token_list("eos_token_id", {50256});
  c.tokens.pad_token_id = r.get_token("pad_token_id", std::nullopt);
  c.tokens.forced_bos_token_id = r.get_token("forced_bos_token_id", std::nullopt);
  c.tokens.forced_eos_token_id = r.get_token_list("forced_eos_token_id", {});
  return c;
}

T5Config parse_t5_config(const std::string& text, const std::string& source) {
  ConfigReader r = parse(text, source);
  T5Config c;
  c.vocab_size = r.required_int("vocab_size");
  c.d_model = r.required_int("d_model");
  c.d_kv = r.required_int("d_kv");
  c.d_ff = r.required_int("d_ff");
  c.num_layers = r.required_int("num_layers");
  c.num_heads = r.required_int("num_heads");
  c.num_decoder_layers = r.get_int("num_decoder_layers", 0);
  c.relative_attention_num_buckets = r.get_int("relative_attention_num_buckets", 32);
  c.relative_attention_max_distance = r.get_int("relative_attention_max_distance", 128);
  c.dropout_rate = r.get_double("dropout_rate", c.dropout_rate);
  c.layer_norm_epsilon = r.get_double("layer_norm_epsilon", c.layer_norm_epsilon);
  c.feed_forward_proj = r.get_string("feed_forward_proj", c.feed_forward_proj);
  // "gated-<act>" or "<act>", as transformers parses it; "gated-gelu" means gelu_new for compatibility.
  const std::string& ff = c.feed_forward_proj;
  const size_t dash = ff.find('-');
  if (dash == std::string::npos) {
    c.dense_act_fn = ff;
  } else {
    VLP_CHECK(ff.substr(0, dash) == "gated" && ff.find('-', dash + 1) == std::string::npos, source,
              ": key \"feed_forward_proj\" must be \"<act>\" or \"gated-<act>\", got \"", ff, "\"");
    c.is_gated_act = true;
    c.dense_act_fn = ff == "gated-gelu" ? "gelu_new" : ff.substr(dash + 1);
  }
  activation_by_name(c.dense_act_fn, source + ": feed_forward_proj");
  c.tie_word_embeddings = r.get_bool("tie_word_embeddings", true);
  c.scale_decoder_outputs = r.get_bool("scale_decoder_outputs", c.tie_word_embeddings);
  c.tokens.pad_token_id = r.get_token("pad_token_id", 0);
  c.tokens.eos_token_id = r.get_token_list("eos_token_id", {1});
  c.tokens.bos_token_id = r.get_token("bos_token_id", std::nullopt);
  c.tokens.decoder_start_token_id = r.get_token("decoder_start_token_id", std::nullopt);
  c.tokens.forced_bos_token_id = r.get_token("forced_bos_token_id", std::nullopt);
  c.tokens.forced_eos_token_id = r.get_token_list("forced_eos_token_id", {});
  return c;
}

BartConfig parse_bart_config(const std::string& text, const std::string& source) {
  ConfigReader r = parse(text, source);
  BartConfig c;
  c.vocab_size = r.required_int("vocab_size");
  c.d_model = r.required_int("d_model");
  c.max_position_embeddings = r.required_int("max_position_embeddings");
  c.encoder_layers = r.required_int("encoder_layers");
  c.decoder_layers = r.required_int("decoder_layers");
  c.encoder_attention_heads = r.required_int("encoder_attention_heads");
  c.decoder_attention_heads = r.required_int("decoder_attention_heads");
  c.encoder_ffn_dim = r.required_int("encoder_ffn_dim");
  c.decoder_ffn_dim = r.required_int("decoder_ffn_dim");
  for (auto [key, heads] : {std::pair{"encoder_attention_heads", c.encoder_attention_heads},
                            std::pair{"decoder_attention_heads", c.decoder_attention_heads}})
    VLP_CHECK(c.d_model % heads == 0, source, ": d_model (", c.d_model, ") must be divisible by ", key, " (", heads, ")");
  c.activation_function = r.get_string("activation_function", c.activation_function);
  activation_by_name(c.activation_function, source + ": activation_function");
  c.dropout = r.get_double("dropout", c.dropout);
  c.attention_dropout = r.get_double("attention_dropout", c.attention_dropout);
  c.activation_dropout = r.get_double("activation_dropout", c.activation_dropout);
  c.scale_embedding = r.get_bool("scale_embedding", false);
  c.tie_word_embeddings = r.get_bool("tie_word_embeddings", true);
  VLP_CHECK(c.tie_word_embeddings, source, ": key \"tie_word_embeddings\" = false is not supported for BART");
  for (const char* key : {"add_final_layer_norm", "normalize_before"})
    VLP_CHECK(!r.get_bool(key, false), source, ": key \"", key, "\" = true (an mBART variant) is not supported");
  c.tokens.pad_token_id = r.get_token("pad_token_id", 1);
  c.tokens.bos_token_id = r.get_token("bos_token_id", 0);
  c.tokens.eos_token_id = r.get_token_list("eos_token_id", {2});
  c.tokens.decoder_start_token_id = r.get_token("decoder_start_token_id", 2);
  c.tokens.forced_bos_token_id = r.get_token("forced_bos_token_id", std::nullopt);
  c.tokens.forced_eos_token_id = r.get_token_list("forced_eos_token_id", {2});
  return c;
}

GPT2Config read_gpt2_config(const std::string& path) {
  std::string file = config_path(path);
  return parse_gpt2_config(read_text(file), file);
}
T5Config read_t5_config(const std::string& path) {
  std::string file = config_path(path);
  return parse_t5_config(read_text(file), file);
}
BartConfig read_bart_config(const std::string& path) {
  std::string file = config_path(path);
  return parse_bart_config(read_text(file), file);
}

std::string read_model_type(const std::string& path) {
  std::string file = config_path(path);
  ConfigReader r = parse(read_text(file), file);
  VLP_CHECK(r.has("model_type"), file, ": missing required key \"model_type\"");
  return r.get_string("model_type", "");
}

// ---- parameter counts ----

namespace {
int64_t linear_params(int64_t in, int64_t out, bool bias) { return in * out + (bias ? out : 0); }
}  // namespace

int64_t num_parameters(const GPT2Config& c) {
  const int64_t d = c.n_embd, inner = c.inner_dim();
  const int64_t block = 2 * (2 * d)                      // ln_1, ln_2
                        + linear_params(d, 3 * d, true)  // attn.c_attn
                        + linear_params(d, d, true)      // attn.c_proj
                        + linear_params(d, inner, true)  // mlp.c_fc
                        + linear_params(inner, d, true); // mlp.c_proj
  int64_t n = c.vocab_size * d + c.n_positions * d + c.n_layer * block + 2 * d;
  if (!c.tie_word_embeddings) n += c.vocab_size * d;
  return n;
}

int64_t num_parameters(const T5Config& c) {
  const int64_t d = c.d_model, inner = c.inner_dim();
  const int64_t attention = 3 * linear_params(d, inner, false) + linear_params(inner, d, false);
  const int64_t ff = (c.is_gated_act ? 2 : 1) * linear_params(d, c.d_ff, false) + linear_params(c.d_ff, d, false);
  const int64_t bias_table = c.relative_attention_num_buckets * c.num_heads;  // block 0 of each stack
  const int64_t encoder = c.num_layers * (attention + ff + 2 * d) + bias_table + d;
  const int64_t decoder = c.decoder_layers() * (2 * attention + ff + 3 * d) + bias_table + d;
  int64_t n = c.vocab_size * d + encoder + decoder;
  if (!c.tie_word_embeddings) n += c.vocab_size * d;
  return n;
}

int64_t num_parameters(const BartConfig& c) {
  const int64_t d = c.d_model;
  const int64_t attention = 4 * linear_params(d, d, true);
  const int64_t positions = (c.max_position_embeddings + 2) * d;  // learned, offset 2
  const int64_t enc_layer = attention + linear_params(d, c.encoder_ffn_dim, true) +
                            linear_params(c.encoder_ffn_dim, d, true) + 2 * (2 * d);
  const int64_t dec_layer = 2 * attention + linear_params(d, c.decoder_ffn_dim, true) +
                            linear_params(c.decoder_ffn_dim, d, true) + 3 * (2 * d);
  const int64_t encoder = positions + c.encoder_layers * enc_layer + 2 * d;  // + layernorm_embedding
  const int64_t decoder = positions + c.decoder_layers * dec_layer + 2 * d;
  return c.vocab_size * d + encoder + decoder;  // lm_head tied; final_logits_bias is a buffer
}

}  // namespace vlp
