// Hugging Face config.json files of the text backbones, read into plain structs.
//
// Field names and defaults are transformers' (GPT2Config, T5Config, BartConfig). Keys that define the
// architecture's shapes are required: a missing one is an error naming the key and the file. Every other
// key falls back to transformers' default; keys vlpeft does not use are ignored. Unsupported variants
// (GPT-2 cross-attention, T5 with an unknown feed-forward type, an unknown activation) are errors naming the
// key. The published configurations of gpt2, t5-base, t5-v1_1-base and bart-base are in configs/hf/.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "runtime/tensor.h"

namespace vlp {

// Special tokens, as generate() reads them (any may be absent; eos may list several ids).
struct SpecialTokens {
  std::optional<int64_t> bos_token_id, pad_token_id, decoder_start_token_id, forced_bos_token_id;
  std::vector<int64_t> eos_token_id, forced_eos_token_id;
};

struct GPT2Config {
  int64_t vocab_size = 0, n_positions = 0, n_embd = 0, n_layer = 0, n_head = 0;  // required
  int64_t n_inner = 0;                          // 0 = 4 * n_embd
  std::string activation_function = "gelu_new";
  double resid_pdrop = 0.1, embd_pdrop = 0.1, attn_pdrop = 0.1;
  double layer_norm_epsilon = 1e-5;
  bool scale_attn_weights = true;               // scores / sqrt(d_head)
  bool scale_attn_by_inverse_layer_idx = false;  // and / (layer + 1)
  bool tie_word_embeddings = true;
  SpecialTokens tokens;                         // bos = eos = 50256 by default

  int64_t inner_dim() const { return n_inner > 0 ? n_inner : 4 * n_embd; }
};

struct T5Config {
  int64_t vocab_size = 0, d_model = 0, d_kv = 0, d_ff = 0, num_layers = 0, num_heads = 0;  // required
  int64_t num_decoder_layers = 0;               // 0 = num_layers
  int64_t relative_attention_num_buckets = 32, relative_attention_max_distance = 128;
  double dropout_rate = 0.1, layer_norm_epsilon = 1e-6;
  std::string feed_forward_proj = "relu";       // "relu" (v1.0), "gated-gelu" (v1.1), "gated-<act>", "<act>"
  std::string dense_act_fn;                     // derived: the activation ("gelu_new" for gated-gelu)
  bool is_gated_act = false;                    // derived: wi_0 / wi_1 instead of wi
  // lm_head shares `shared` (v1.0) or has its own weight (v1.1, tie_word_embeddings false).
  bool tie_word_embeddings = true;
  // Decoder output scaled by d_model^-0.5 before lm_head: transformers 5 writes scale_decoder_outputs;
  // older configs imply it by tie_word_embeddings (true for v1.0, false for v1.1).
  bool scale_decoder_outputs = true;
  SpecialTokens tokens;                         // pad 0, eos 1, decoder start from the file

  int64_t inner_dim() const { return d_kv * num_heads; }
  int64_t decoder_layers() const { return num_decoder_layers > 0 ? num_decoder_layers : num_layers; }
};

struct BartConfig {
  int64_t vocab_size = 0, d_model = 0, max_position_embeddings = 0;  // required
  int64_t encoder_layers = 0, decoder_layers = 0;                    // required
  int64_t encoder_attention_heads = 0, decoder_attention_heads = 0;  // required
  int64_t encoder_ffn_dim = 0, decoder_ffn_dim = 0;                  // required
  std::string activation_function = "gelu";
  double dropout = 0.1, attention_dropout = 0.0, activation_dropout = 0.0;
  bool scale_embedding = false;                 // token embeddings times sqrt(d_model)
  bool tie_word_embeddings = true;              // lm_head shares model.shared (always so in BART)
  SpecialTokens tokens;                         // pad 1, bos 0, eos 2, decoder start 2, forced eos 2
};

// `path` is a config.json file or a directory holding one.
GPT2Config read_gpt2_config(const std::string& path);
T5Config read_t5_config(const std::string& path);
BartConfig read_bart_config(const std::string& path);
// The same from JSON text; `source` names it in error messages.
GPT2Config parse_gpt2_config(const std::string& json_text, const std::string& source);
T5Config parse_t5_config(const std::string& json_text, const std::string& source);
BartConfig parse_bart_config(const std::string& json_text, const std::string& source);
// "model_type" of a config.json ("gpt2", "t5", "bart"); an error when absent.
std::string read_model_type(const std::string& path);

// Trainable parameters of GPT2LMHeadModel / T5ForConditionalGeneration / BartForConditionalGeneration
// built from the config, counted as transformers counts them (tied weights once, buffers not at all).
int64_t num_parameters(const GPT2Config& config);
int64_t num_parameters(const T5Config& config);
int64_t num_parameters(const BartConfig& config);

// The activation named by a config ("relu", "gelu", "gelu_new", ...); an error naming `key` otherwise.
using ActivationFn = Tensor (*)(const Tensor&);
ActivationFn activation_by_name(const std::string& name, const std::string& key = "activation_function");

}  // namespace vlp
