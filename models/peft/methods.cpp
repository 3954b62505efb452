// The method table: one line per PEFT method. A method file provides its attach function (and, when its
// tensor names differ from the default rule of spec §6.4, a file_key function); add it here.
#include "models/peft/adalora.h"
#include "models/peft/adamix.h"
#include "models/peft/adapter.h"
#include "models/peft/adaption_prompt.h"
#include "models/peft/boft.h"
#include "models/peft/combinations.h"
#include "models/peft/compacter.h"
#include "models/peft/fourierft.h"
#include "models/peft/fusion.h"
#include "models/peft/hra.h"
#include "models/peft/hyperformer.h"
#include "models/peft/ia3.h"
#include "models/peft/ln_tuning.h"
#include "models/peft/loha.h"
#include "models/peft/lokr.h"
#include "models/peft/lora.h"
#include "models/peft/oft.h"
#include "models/peft/p_tuning.h"
#include "models/peft/peft.h"
#include "models/peft/poly.h"
#include "models/peft/prefix_tuning.h"
#include "models/peft/prompt_tuning.h"
#include "models/peft/routing.h"
#include "models/peft/vera.h"
#include "models/peft/vl_prompt.h"
#include "models/peft/vpt.h"

namespace vlp::peft {

namespace {
// HF PEFT 0.21.2's Config().to_dict() fields (target_modules null, peft_version as written by it), so the
// adapter_config.json written here has HF's exact field set.
const char* kLoraDefaults = R"({"alora_invocation_tokens": null, "alpha_pattern": {}, "arrow_config": null,
 "auto_mapping": null, "base_model_name_or_path": null, "bias": "none", "corda_config": null,
 "ensure_weight_tying": false, "eva_config": null, "exclude_modules": null, "fan_in_fan_out": false,
 "inference_mode": false, "init_lora_weights": true, "kasa_config": null, "layer_replication": null,
 "layers_pattern": null, "layers_to_transform": null, "loftq_config": {}, "lora_alpha": 8, "lora_bias": false,
 "lora_dropout": 0.0, "lora_ga_config": null, "megatron_config": null, "megatron_core": "megatron.core",
 "modules_to_save": null, "monteclora_config": null, "peft_type": "LORA", "peft_version": "0.21.2",
 "qalora_group_size": 16, "r": 8, "rank_pattern": {}, "revision": null, "target_modules": null,
 "target_parameters": null, "task_type": null, "trainable_token_indices": null, "use_bdlora": null,
 "use_dora": false, "use_qalora": false, "use_rslora": false, "velora_config": null})";
const char* kIa3Defaults = R"({"auto_mapping": null, "base_model_name_or_path": null, "exclude_modules": null,
 "fan_in_fan_out": false, "feedforward_modules": null, "inference_mode": false, "init_ia3_weights": true,
 "modules_to_save": null, "peft_type": "IA3", "peft_version": "0.21.2", "revision": null,
 "target_modules": null, "task_type": null})";
const char* kLnTuningDefaults = R"({"auto_mapping": null, "base_model_name_or_path": null,
 "exclude_modules": null, "inference_mode": false, "modules_to_save": null, "peft_type": "LN_TUNING",
 "peft_version": "0.21.2", "revision": null, "target_modules": null, "task_type": null})";
const char* kAdaLoraDefaults = R"({"alora_invocation_tokens": null, "alpha_pattern": {}, "arrow_config": null,
 "auto_mapping": null, "base_model_name_or_path": null, "beta1": 0.85, "beta2": 0.85, "bias": "none",
 "corda_config": null, "deltaT": 1, "ensure_weight_tying": false, "eva_config": null, "exclude_modules": null,
 "fan_in_fan_out": false, "inference_mode": false, "init_lora_weights": true, "init_r": 12, "kasa_config": null,
 "layer_replication": null, "layers_pattern": null, "layers_to_transform": null, "loftq_config": {}, "lora_alpha": 8,
 "lora_bias": false, "lora_dropout": 0.0, "lora_ga_config": null, "megatron_config": null,
 "megatron_core": "megatron.core", "modules_to_save": null, "monteclora_config": null, "orth_reg_weight": 0.5,
 "peft_type": "ADALORA", "peft_version": "0.21.2", "qalora_group_size": 16, "r": 8, "rank_pattern": null,
 "revision": null, "target_modules": null, "target_parameters": null, "target_r": 8, "task_type": null, "tfinal": 0,
 "tinit": 0, "total_step": null, "trainable_token_indices": null, "use_bdlora": null, "use_dora": false,
 "use_qalora": false, "use_rslora": false, "velora_config": null})";
const char* kLohaDefaults = R"({"alpha": 8, "alpha_pattern": {}, "auto_mapping": null,
 "base_model_name_or_path": null, "exclude_modules": null, "inference_mode": false, "init_weights": true,
 "layers_pattern": null, "layers_to_transform": null, "module_dropout": 0.0, "modules_to_save": null,
 "peft_type": "LOHA", "peft_version": "0.21.2", "r": 8, "rank_dropout": 0.0, "rank_pattern": {},
 "revision": null, "target_modules": null, "task_type": null, "use_effective_conv2d": false})";
const char* kLokrDefaults = R"({"alpha": 8, "alpha_pattern": {}, "auto_mapping": null,
 "base_model_name_or_path": null, "decompose_both": false, "decompose_factor": -1, "exclude_modules": null,
 "inference_mode": false, "init_weights": true, "layers_pattern": null, "layers_to_transform": null,
 "module_dropout": 0.0, "modules_to_save": null, "peft_type": "LOKR", "peft_version": "0.21.2", "r": 8,
 "rank_dropout": 0.0, "rank_dropout_scale": false, "rank_pattern": {}, "revision": null, "target_modules": null,
 "task_type": null, "use_effective_conv2d": false})";
const char* kOftDefaults = R"({"auto_mapping": null, "base_model_name_or_path": null, "bias": "none",
 "block_share": false, "coft": false, "eps": 6e-05, "exclude_modules": null, "fan_in_fan_out": false,
 "inference_mode": false, "init_weights": true, "layers_pattern": null, "layers_to_transform": null,
 "module_dropout": 0.0, "modules_to_save": null, "num_cayley_neumann_terms": 5, "oft_block_size": 32,
 "peft_type": "OFT", "peft_version": "0.21.2", "r": 0, "revision": null, "target_modules": null,
 "task_type": null, "use_cayley_neumann": true})";
const char* kVeraDefaults = R"({"auto_mapping": null, "base_model_name_or_path": null, "bias": "none",
 "d_initial": 0.1, "fan_in_fan_out": false, "inference_mode": false, "init_weights": true,
 "layers_pattern": null, "layers_to_transform": null, "modules_to_save": null, "peft_type": "VERA",
 "peft_version": "0.21.2", "projection_prng_key": 0, "r": 256, "revision": null, "save_projection": true,
 "target_modules": null, "task_type": null, "vera_dropout": 0.0})";
const char* kHraDefaults = R"({"apply_GS": false, "auto_mapping": null, "base_model_name_or_path": null,
 "bias": "none", "exclude_modules": null, "inference_mode": false, "init_weights": true, "layers_pattern": null,
 "layers_to_transform": null, "modules_to_save": null, "peft_type": "HRA", "peft_version": "0.21.2", "r": 8,
 "revision": null, "target_modules": null, "task_type": null})";
const char* kFourierftDefaults = R"({"auto_mapping": null, "base_model_name_or_path": null, "bias": "none",
 "exclude_modules": null, "fan_in_fan_out": false, "inference_mode": false, "init_weights": false,
 "layers_pattern": null, "layers_to_transform": null, "modules_to_save": null, "n_frequency": 1000,
 "n_frequency_pattern": {}, "peft_type": "FOURIERFT", "peft_version": "0.21.2", "random_loc_seed": 777,
 "revision": null, "scaling": 150.0, "target_modules": null, "task_type": null})";
const char* kBoftDefaults = R"({"auto_mapping": null, "base_model_name_or_path": null, "bias": "none",
 "boft_block_num": 0, "boft_block_size": 4, "boft_dropout": 0.0, "boft_n_butterfly_factor": 1,
 "exclude_modules": null, "fan_in_fan_out": false, "inference_mode": false, "init_weights": true,
 "layers_pattern": null, "layers_to_transform": null, "modules_to_save": null, "peft_type": "BOFT",
 "peft_version": "0.21.2", "revision": null, "target_modules": null, "task_type": null})";
const char* kPolyDefaults = R"({"auto_mapping": null, "base_model_name_or_path": null, "exclude_modules": null,
 "inference_mode": false, "init_weights": true, "modules_to_save": null, "n_skills": 4, "n_splits": 1, "n_tasks": 1,
 "peft_type": "POLY", "peft_version": "0.21.2", "poly_type": "poly", "r": 8, "revision": null, "target_modules": null,
 "task_type": null})";
const char* kPromptTuningDefaults = R"({"auto_mapping": null, "base_model_name_or_path": null,
 "inference_mode": false, "modules_to_save": null, "num_attention_heads": null, "num_layers": null,
 "num_transformer_submodules": null, "num_virtual_tokens": null, "peft_type": "PROMPT_TUNING",
 "peft_version": "0.21.2", "prompt_tuning_init": "RANDOM", "prompt_tuning_init_text": null, "revision": null,
 "task_type": null, "token_dim": null, "tokenizer_kwargs": null, "tokenizer_name_or_path": null})";
const char* kPTuningDefaults = R"({"auto_mapping": null, "base_model_name_or_path": null, "encoder_dropout": 0.0,
 "encoder_hidden_size": null, "encoder_num_layers": 2, "encoder_reparameterization_type": "MLP",
 "inference_mode": false, "modules_to_save": null, "num_attention_heads": null, "num_layers": null,
 "num_transformer_submodules": null, "num_virtual_tokens": null, "peft_type": "P_TUNING", "peft_version": "0.21.2",
 "revision": null, "task_type": null, "token_dim": null})";
const char* kPrefixTuningDefaults = R"({"auto_mapping": null, "base_model_name_or_path": null,
 "encoder_hidden_size": null, "inference_mode": false, "init_weights": null, "modules_to_save": null,
 "num_attention_heads": null, "num_layers": null, "num_transformer_submodules": null, "num_virtual_tokens": null,
 "peft_type": "PREFIX_TUNING", "peft_version": "0.21.2", "prefix_projection": false, "revision": null,
 "task_type": null, "token_dim": null})";
const char* kAdaptionPromptDefaults = R"({"adapter_layers": null, "adapter_len": null, "auto_mapping": null,
 "base_model_name_or_path": null, "inference_mode": false, "peft_type": "ADAPTION_PROMPT", "peft_version": "0.21.2",
 "revision": null, "target_modules": null, "task_type": null})";
}  // namespace

const std::vector<PeftMethod>& all_methods() {
  static const std::vector<PeftMethod> methods = {
      {"LORA", attach_lora, nullptr, kLoraDefaults},
      {"IA3", attach_ia3, nullptr, kIa3Defaults},
      {"LN_TUNING", attach_ln_tuning, nullptr, kLnTuningDefaults},
      {"VLPEFT_BITFIT", attach_bitfit},
      {"ADALORA", attach_adalora, nullptr, kAdaLoraDefaults, adalora_prepare_save},
      {"LOHA", attach_loha, nullptr, kLohaDefaults},
      {"LOKR", attach_lokr, nullptr, kLokrDefaults},
      {"OFT", attach_oft, nullptr, kOftDefaults},
      {"VERA", attach_vera, nullptr, kVeraDefaults, vera_prepare_save},
      {"HRA", attach_hra, nullptr, kHraDefaults},
      {"FOURIERFT", attach_fourierft, nullptr, kFourierftDefaults},
      {"BOFT", attach_boft, nullptr, kBoftDefaults},
      {"POLY", attach_poly, nullptr, kPolyDefaults},
      {"VLPEFT_ADAMIX", attach_adamix},
      {"VLPEFT_MAM", attach_mam},
      {"VLPEFT_UNIPELT", attach_unipelt},
      {"VLPEFT_ADAPTER", attach_bottleneck_adapter},
      {"VLPEFT_COMPACTER", attach_compacter},
      {"VLPEFT_HYPERFORMER", attach_hyperformer},
      {"VLPEFT_ROUTED_LORA", attach_routed_lora},
      {"VLPEFT_ROUTED_ADAPTER", attach_routed_adapter},
      {"VLPEFT_FUSION", attach_fusion},
      {"PROMPT_TUNING", attach_prompt_tuning, prompt_file_key, kPromptTuningDefaults, prompt_prepare_save},
      {"P_TUNING", attach_p_tuning, prompt_file_key, kPTuningDefaults, prompt_prepare_save},
      {"PREFIX_TUNING", attach_prefix_tuning, prompt_file_key, kPrefixTuningDefaults, prompt_prepare_save},
      {"VLPEFT_PROMPT", attach_vl_prompt, vl_prompt_file_key},
      {"VLPEFT_PREFIX_TUNING", attach_vl_prefix_tuning, vl_prompt_file_key},
      {"VLPEFT_VPT", attach_vpt},
      {"ADAPTION_PROMPT", attach_adaption_prompt, adaption_prompt_file_key, kAdaptionPromptDefaults,
       adaption_prompt_prepare_save},
  };
  return methods;
}

}  // namespace vlp::peft
