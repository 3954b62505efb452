// The per-method cases of tests/peft_training (one per entry of the method table, models/peft/methods.cpp,
// plus the variants that take other code paths and every VL-Adapter recipe on tiny T5 and BART), shared with
// tests/cuda/test_cuda_peft.cpp, which runs each of them on the GPU against the CPU.
#pragma once
#include <ostream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "models/peft/fusion.h"
#include "models/peft/peft.h"
#include "models/peft/recipes.h"

namespace vlp::test {

struct Case {
  std::string label;
  std::string model;    // gpt2 | t5 | bart | vit
  nlohmann::json config;
  double lr = 1e-2;
  int task = 0;         // ForwardContext::task (multi-task modules)
  bool visual = false;  // routed methods read ForwardContext::visual
  bool fusion = false;  // attach two bottleneck adapters first, fuse them, train the fusion layers only
  double min_drop = 0.1;  // required relative drop (first - last) / first
};

inline std::ostream& operator<<(std::ostream& os, const Case& c) { return os << c.label; }

inline std::vector<Case> method_cases() {
  using J = nlohmann::json;
  std::vector<Case> cs = {
      // Linear-site methods, on T5's default targets (q, v) unless named.
      {"lora", "t5", J{{"peft_type", "LORA"}, {"r", 4}, {"lora_alpha", 8}}},
      {"lora_rslora_bias_all", "bart", J{{"peft_type", "LORA"}, {"r", 4}, {"lora_alpha", 8}, {"use_rslora", true},
                                         {"bias", "all"}}},
      {"lora_dora", "t5", J{{"peft_type", "LORA"}, {"r", 4}, {"lora_alpha", 8}, {"use_dora", true}}},
      {"lora_pissa", "bart", J{{"peft_type", "LORA"}, {"r", 4}, {"lora_alpha", 4}, {"init_lora_weights", "pissa"}}},
      {"lora_gaussian_lora_bias", "t5", J{{"peft_type", "LORA"}, {"r", 4}, {"lora_alpha", 8},
                                          {"init_lora_weights", "gaussian"}, {"lora_bias", true}}},
      {"lora_gpt2_conv1d", "gpt2", J{{"peft_type", "LORA"}, {"r", 4}, {"lora_alpha", 8}}},
      {"adalora", "t5", J{{"peft_type", "ADALORA"}, {"init_r", 6}, {"target_r", 4}, {"lora_alpha", 8},
                          {"total_step", 100}}},
      {"ia3", "t5", J{{"peft_type", "IA3"}}, 3e-2},
      {"loha", "t5", J{{"peft_type", "LOHA"}, {"r", 4}, {"alpha", 8}}},
      {"lokr", "t5", J{{"peft_type", "LOKR"}, {"r", 4}, {"alpha", 8}}},
      {"vera", "t5", J{{"peft_type", "VERA"}, {"r", 8}}, 5e-2},
      {"oft", "t5", J{{"peft_type", "OFT"}, {"oft_block_size", 4}, {"r", 0}}},
      {"boft", "t5", J{{"peft_type", "BOFT"}, {"boft_block_size", 4}, {"boft_n_butterfly_factor", 2}}},
      {"hra", "t5", J{{"peft_type", "HRA"}, {"r", 4}}},
      {"fourierft", "t5", J{{"peft_type", "FOURIERFT"}, {"n_frequency", 64}, {"scaling", 10.0}}, 5e-2},
      {"poly", "t5", J{{"peft_type", "POLY"}, {"r", 2}, {"n_tasks", 2}, {"n_skills", 2}, {"n_splits", 2}}, 3e-2, 1},
      {"adamix_lora", "bart", J{{"peft_type", "VLPEFT_ADAMIX"}, {"adamix_variant", "lora"}, {"num_experts", 3},
                                {"r", 4}, {"lora_alpha", 8}}},
      {"bitfit", "bart", J{{"peft_type", "VLPEFT_BITFIT"}}, 3e-2},
      {"ln_tuning", "bart", J{{"peft_type", "LN_TUNING"}}, 3e-2},
      // Sublayer-site methods.
      {"adapter_vl_adapter", "bart", J{{"peft_type", "VLPEFT_ADAPTER"}, {"reduction_factor", 4}}},
      {"adapter_houlsby", "t5", J{{"peft_type", "VLPEFT_ADAPTER"}, {"placement", "houlsby"}, {"reduction_factor", 4}}},
      {"adapter_pfeiffer", "bart", J{{"peft_type", "VLPEFT_ADAPTER"}, {"placement", "pfeiffer"}, {"reduction_factor", 4}}},
      {"adapter_parallel", "t5", J{{"peft_type", "VLPEFT_ADAPTER"}, {"placement", "parallel"}}},
      {"adapter_scaled_parallel", "bart", J{{"peft_type", "VLPEFT_ADAPTER"}, {"placement", "scaled_parallel"}}},
      {"adapter_multiple", "t5", J{{"peft_type", "VLPEFT_ADAPTER"}, {"sharing", "multiple"}, {"tasks", {"a", "b"}},
                                   {"reduction_factor", 4}}, 1e-2, 1},
      {"adapter_half_shared", "bart", J{{"peft_type", "VLPEFT_ADAPTER"}, {"sharing", "half_shared"},
                                        {"tasks", {"a", "b"}}, {"reduction_factor", 4}}, 1e-2, 1},
      {"adamix_adapter", "t5", J{{"peft_type", "VLPEFT_ADAMIX"}, {"num_experts", 3}, {"reduction_factor", 4}}},
      // Combinations: prefix + adapter (+ gated LoRA).
      {"mam", "bart", J{{"peft_type", "VLPEFT_MAM"}, {"prefix_tuning", {{"num_virtual_tokens", 3},
                                                                         {"encoder_hidden_size", 16}}}}},
      {"unipelt", "t5", J{{"peft_type", "VLPEFT_UNIPELT"}, {"prefix_tuning", {{"num_virtual_tokens", 3},
                                                                               {"encoder_hidden_size", 16}}}}},
      {"unipelt_gpt2", "gpt2", J{{"peft_type", "VLPEFT_UNIPELT"}, {"prefix_tuning", {{"num_virtual_tokens", 3},
                                                                                     {"encoder_hidden_size", 16}}}}},
      {"compacter", "t5", J{{"peft_type", "VLPEFT_COMPACTER"}, {"phm_dim", 2}, {"reduction_factor", 4}}},
      {"compacter_shared_low_rank", "bart", J{{"peft_type", "VLPEFT_COMPACTER"}, {"phm_dim", 2},
                                              {"reduction_factor", 4}, {"shared_phm_rule", true}, {"phm_rank", 1}}},
      {"hyperformer", "t5", J{{"peft_type", "VLPEFT_HYPERFORMER"}, {"task_embedding_dim", 16},
                              {"projector_hidden_dim", 8}, {"tasks", {"a", "b"}}}, 1e-2, 1},
      {"routed_lora", "t5", J{{"peft_type", "VLPEFT_ROUTED_LORA"}, {"r", 4}, {"routing_function", 1}},
       1e-2, 0, true},
      {"routed_lora_multiple", "bart", J{{"peft_type", "VLPEFT_ROUTED_LORA"}, {"r", 4}, {"routing_function", 3},
                                         {"sharing", "multiple"}, {"tasks", {"a", "b"}}}, 1e-2, 1, true},
      {"routed_adapter", "bart", J{{"peft_type", "VLPEFT_ROUTED_ADAPTER"}, {"reduction_factor", 4},
                                   {"routing_function", 2}}, 1e-2, 0, true},
      {"routed_adapter_gpt2", "gpt2", J{{"peft_type", "VLPEFT_ROUTED_ADAPTER"}, {"reduction_factor", 4},
                                        {"routing_function", 4}}, 1e-2, 0, true},
      {"fusion", "bart", J{{"peft_type", "VLPEFT_FUSION"}, {"adapters", {"a", "b"}}}, 5e-2, 0, false, true},
      // Prompt methods.
      {"prompt_tuning_gpt2", "gpt2", J{{"peft_type", "PROMPT_TUNING"}, {"task_type", "CAUSAL_LM"},
                                       {"num_virtual_tokens", 4}}, 5e-2},
      {"prompt_tuning_t5", "t5", J{{"peft_type", "PROMPT_TUNING"}, {"task_type", "SEQ_2_SEQ_LM"},
                                   {"num_virtual_tokens", 4}}, 2e-1},
      {"p_tuning_bart", "bart", J{{"peft_type", "P_TUNING"}, {"task_type", "SEQ_2_SEQ_LM"},
                                  {"num_virtual_tokens", 4}, {"encoder_hidden_size", 16}}},
      {"prefix_tuning_gpt2", "gpt2", J{{"peft_type", "PREFIX_TUNING"}, {"task_type", "CAUSAL_LM"},
                                       {"num_virtual_tokens", 4}}, 5e-2},
      {"prefix_tuning_t5_projection", "t5", J{{"peft_type", "PREFIX_TUNING"}, {"task_type", "SEQ_2_SEQ_LM"},
                                              {"num_virtual_tokens", 4}, {"prefix_projection", true},
                                              {"encoder_hidden_size", 16}}, 3e-2},
      {"prefix_tuning_bart", "bart", J{{"peft_type", "PREFIX_TUNING"}, {"task_type", "SEQ_2_SEQ_LM"},
                                       {"num_virtual_tokens", 4}}, 5e-2},
      {"vl_prefix_tuning_bart", "bart", J{{"peft_type", "VLPEFT_PREFIX_TUNING"}, {"num_virtual_tokens", 4}}, 5e-2},
      {"vl_prefix_tuning_t5_projection", "t5", J{{"peft_type", "VLPEFT_PREFIX_TUNING"}, {"num_virtual_tokens", 4},
                                                 {"prefix_projection", true}, {"encoder_hidden_size", 16}}, 3e-2},
      {"vl_prompt", "t5", J{{"peft_type", "VLPEFT_PROMPT"}, {"num_virtual_tokens", 4}, {"prompt_hidden_dim", 16}}, 3e-2},
      {"vl_prompt_multiple", "bart", J{{"peft_type", "VLPEFT_PROMPT"}, {"num_virtual_tokens", 4},
                                       {"prompt_hidden_dim", 16}, {"sharing", "multiple"}, {"tasks", {"a", "b"}}},
       3e-2, 1},
      {"adaption_prompt", "gpt2", J{{"peft_type", "ADAPTION_PROMPT"}, {"task_type", "CAUSAL_LM"}, {"adapter_len", 4},
                                    {"adapter_layers", 2}}, 5e-2},
      {"vpt_shallow", "vit", J{{"peft_type", "VLPEFT_VPT"}, {"num_virtual_tokens", 4}}, 5e-2},
      {"vpt_deep", "vit", J{{"peft_type", "VLPEFT_VPT"}, {"num_virtual_tokens", 4}, {"vpt_deep", true}}, 5e-2},
  };
  // Prompts on tiny T5's encoder: the random T5 reads its encoder weakly (a 5-10% drop in 25 steps, ~11% in
  // 100; its parity with HF PEFT is tests/peft_prompts'), so these two ask for 4%.
  for (Case& c : cs)
    if (c.label == "prompt_tuning_t5" || c.label == "vl_prompt") c.min_drop = 0.04;
  // The VL-Adapter recipes as they are, on tiny T5 and BART (Compacter: d = 24 gives a bottleneck 3 that
  // n = 2 does not divide, so reduction 4).
  for (const std::string backbone : {"t5", "bart"})
    for (const auto& name : peft::vl_recipe_names()) {
      if (name == "full") continue;
      peft::VlRecipe r = peft::vl_adapter_recipe(name, backbone, {"a", "b"});
      J j = r.config.raw;
      if (name.rfind("compacter", 0) == 0) j["reduction_factor"] = 4;
      // The recipes' learning rates (1e-3, 3e-4) suit 20 epochs of real data; 25 steps here use 1e-2.
      Case c{"recipe_" + backbone + "_" + name, backbone, j, 1e-2};
      c.task = 1;
      cs.push_back(c);
    }
  return cs;
}

// Attaches the case's method to `model` (fusion cases: two bert-init adapters "a", "b" and the fusion over
// them, the members frozen), seeded as both tests expect.
inline void attach_case(Module& model, const Case& c) {
  using J = nlohmann::json;
  if (c.fusion) {
    J a = {{"peft_type", "VLPEFT_ADAPTER"}, {"reduction_factor", 4}, {"init_weights", "bert"}};
    peft::add_adapter(model, peft::parse_peft_config(a), "a", 11);
    peft::add_adapter(model, peft::parse_peft_config(a), "b", 12);
  }
  peft::add_adapter(model, peft::parse_peft_config(c.config, c.label), c.fusion ? "fusion" : "default", 5);
  if (c.fusion) {
    peft::set_active_adapters(model, {"fusion"});
    peft::freeze_fusion_members(model);
  }
}

}  // namespace vlp::test
