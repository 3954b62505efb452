// Hugging Face checkpoints: model.safetensors, or shards listed by model.safetensors.index.json, loaded into
// and saved from a Module by parameter name (files read and written by runtime/safetensors.h).
//
// Loading follows transformers' conventions so published checkpoints load as they are:
//   - tied weights are stored once; a checkpoint that also carries the tied copy (encoder.embed_tokens,
//     decoder.embed_tokens, lm_head when tied) has it dropped, after checking it equals the original;
//   - keys transformers ignores are ignored (GPT-2's attn.bias / attn.masked_bias causal-mask buffers,
//     T5's unused decoder cross-attention relative_attention_bias, BART's encoder/decoder.version);
//   - a checkpoint of the base model (names without "transformer." / "model.") loads into the LM model;
//   - tensors transformers allows to be absent keep their value (BART's final_logits_bias: zeros).
// Everything else must match exactly: every missing, unexpected and mis-shaped (or mis-typed) tensor is
// listed by name in one error.
#pragma once
#include <string>
#include <utility>
#include <vector>

#include "models/bart.h"
#include "models/gpt2.h"
#include "models/module.h"
#include "models/t5.h"

namespace vlp {

struct CheckpointRules {
  // {alias, canonical}: a checkpoint name that is another name of a model tensor (a tied weight).
  std::vector<std::pair<std::string, std::string>> aliases;
  // Checkpoint names to skip (ECMAScript regexes, searched anywhere in the name).
  std::vector<std::string> ignore_unexpected;
  // Model tensors that may be absent from the checkpoint (they keep their current value).
  std::vector<std::string> allow_missing;
  // The prefix of the base model inside the LM model ("transformer", "model"); "" = none.
  std::string base_model_prefix;
};

CheckpointRules checkpoint_rules(const GPT2LMHeadModel& model);
CheckpointRules checkpoint_rules(const T5ForConditionalGeneration& model);
CheckpointRules checkpoint_rules(const BartForConditionalGeneration& model);

// Every tensor of a checkpoint: a .safetensors file, a sharded model.safetensors.index.json, or a directory
// holding either (model.safetensors preferred).
std::vector<std::pair<std::string, Tensor>> read_checkpoint(const std::string& path);

// Matches the checkpoint's tensors to the model's state dict under `rules` and copies them in (floating
// dtypes converted when allow_dtype_conversion). With strict, any problem throws one Error listing all of
// them (and nothing is copied); otherwise the report is returned and the matching tensors are loaded.
StateDictReport load_checkpoint(Module& model, const std::vector<std::pair<std::string, Tensor>>& tensors,
                                const CheckpointRules& rules, bool strict = true, bool allow_dtype_conversion = true);
StateDictReport load_checkpoint(Module& model, const std::string& path, const CheckpointRules& rules,
                                bool strict = true, bool allow_dtype_conversion = true);
// With the model's own rules.
StateDictReport load_checkpoint(GPT2LMHeadModel& model, const std::string& path, bool strict = true);
StateDictReport load_checkpoint(T5ForConditionalGeneration& model, const std::string& path, bool strict = true);
StateDictReport load_checkpoint(BartForConditionalGeneration& model, const std::string& path, bool strict = true);

// Writes the model's state dict (parameters and buffers, each once) as transformers does: `directory`/
// model.safetensors, or, when it exceeds max_shard_bytes > 0, model-0000i-of-0000n.safetensors shards plus
// model.safetensors.index.json. The directory is created when missing.
void save_checkpoint(const Module& model, const std::string& directory, int64_t max_shard_bytes = 0);


}  // namespace vlp
