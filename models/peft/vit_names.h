// ViT module names of transformers 5 -> the classic names models/vit uses, for loading PEFT adapter files.
//
// transformers 5 renamed ViT's modules (vit.layers.N.attention.q_proj, .attention.o_proj, .mlp.fc1, .mlp.fc2)
// and converts checkpoints on load, so HF PEFT run on transformers 5 writes ViT adapter files and configs under
// the new names. models/vit keeps the classic names (vit.encoder.layer.N.attention.attention.query, ...,
// attention.output.dense, intermediate.dense, output.dense): they are the names of every published ViT checkpoint
// and of adapters made with transformers 4.x. So:
//   - load_adapter on a ViT translates a transformers-5 adapter (its tensor keys and the module names in its
//     config) with the one table in vit_names.cpp, and fails naming any key or name it cannot map;
//   - save_adapter always writes the classic names (keys and config), loadable by PEFT on a transformers-4.x ViT
//     and, after the inverse renaming, on transformers 5 (tools/reference/make_peft_vit_fixtures.py --check).
#pragma once
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace vlp::peft {

// True when an adapter for a ViT uses transformers-5 names: a tensor key with a "layers.<N>" layer block, or a
// module-name field of the config naming q_proj, k_proj, v_proj, o_proj, fc1, fc2 or mlp (none exists in the
// classic ViT).
bool uses_transformers5_vit_names(const nlohmann::json& config, const std::vector<std::string>& tensor_keys);

// One adapter_model.safetensors key in classic names, e.g.
//   base_model.model.vit.layers.0.attention.q_proj.lora_A.weight
//   -> base_model.model.vit.encoder.layer.0.attention.attention.query.lora_A.weight
// Keys outside the layer blocks (classifier, embeddings, final layernorm, base_model.vera_A) are unchanged.
// Throws naming the key when a new-scheme name in it has no classic equivalent.
std::string vit_key_from_transformers5(const std::string& key);

// The config with its module-name fields (target_modules, exclude_modules, feedforward_modules,
// modules_to_save, layers_pattern, rank_pattern / alpha_pattern / n_frequency_pattern keys) in classic names.
// A list entry is a dotted suffix; "fc2" becomes "output.dense" only after a layer index, since a bare
// "output.dense" suffix would also match attention.output.dense: such a list is turned into the equivalent
// full-match regex. Regex fields naming new-scheme modules cannot be rewritten safely and are an error.
nlohmann::json vit_config_from_transformers5(const nlohmann::json& config, const std::string& source);

}  // namespace vlp::peft
