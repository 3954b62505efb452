// VL-Adapter recipes as PEFT configs (see recipes.h).
#include "models/peft/recipes.h"

namespace vlp::peft {

std::vector<std::string> vl_recipe_names() {
  return {"full",          "adapter_single",   "adapter_multiple",   "adapter_half_shared",
          "hyperformer",   "compacter_single", "compacter_multiple", "lora_single",
          "lora_multiple", "prompt_single",    "prompt_multiple"};
}

VlRecipe vl_adapter_recipe(const std::string& name, const std::string& backbone,
                           const std::vector<std::string>& tasks, const std::vector<std::string>& always_trainable) {
  VLP_CHECK(backbone == "t5" || backbone == "bart", "VL-Adapter recipe '", name,
            "': backbone must be t5 or bart, got '", backbone, "'");
  std::string list;
  for (const auto& n : vl_recipe_names()) list += (list.empty() ? "" : ", ") + n;
  VlRecipe r;
  r.name = name;
  const std::vector<std::string> norms =
      backbone == "t5" ? std::vector<std::string>{"layer_norm", "final_layer_norm"}
                       : std::vector<std::string>{"self_attn_layer_norm", "encoder_attn_layer_norm", "final_layer_norm",
                                                  "layernorm_embedding"};
  nlohmann::json j;
  j["modules_to_save"] = always_trainable;
  auto with_norms = [&] {
    auto m = always_trainable;
    m.insert(m.end(), norms.begin(), norms.end());
    j["modules_to_save"] = m;
  };
  auto per_task = [&](const std::string& sharing) {
    j["sharing"] = sharing;
    if (sharing != "single") j["tasks"] = tasks;
  };
  const bool multiple = name.size() > 9 && name.substr(name.size() - 9) == "_multiple";
  if (name == "full") {
    r.full_finetuning = true;
    r.learning_rate = 1e-4;
    r.task_prefix = false;
    return r;
  } else if (name == "adapter_single" || name == "adapter_multiple" || name == "adapter_half_shared") {
    j["peft_type"] = "VLPEFT_ADAPTER";
    j["placement"] = "vl_adapter";
    j["reduction_factor"] = 8;
    j["non_linearity"] = "gelu_new";
    j["init_weights"] = "vl_adapter";
    per_task(name == "adapter_single" ? "single" : name == "adapter_multiple" ? "multiple" : "half_shared");
    with_norms();
    r.learning_rate = name == "adapter_multiple" ? 3e-4 : 1e-3;
    r.task_prefix = name == "adapter_single";
  } else if (name == "hyperformer") {
    j["peft_type"] = "VLPEFT_HYPERFORMER";
    j["tasks"] = tasks;
    j["task_embedding_dim"] = 512;
    j["projected_task_dim"] = 8;
    j["projector_hidden_dim"] = 128;
    j["reduction_factor"] = 8;
    with_norms();
    r.task_prefix = false;
  } else if (name == "compacter_single" || name == "compacter_multiple") {
    j["peft_type"] = "VLPEFT_COMPACTER";
    j["placement"] = "vl_adapter";
    j["phm_dim"] = 2;
    j["reduction_factor"] = 8;
    j["shared_phm_rule"] = false;
    j["phm_rank"] = 0;
    per_task(multiple ? "multiple" : "single");
    with_norms();
    r.task_prefix = !multiple;
  } else if (name == "lora_single" || name == "lora_multiple") {
    j["peft_type"] = multiple ? "VLPEFT_ROUTED_LORA" : "LORA";
    j["r"] = 128;
    j["lora_alpha"] = 32;
    j["lora_dropout"] = 0.1;
    j["bias"] = "all";
    j["target_modules"] = backbone == "t5" ? std::vector<std::string>{"q", "v"}
                                           : std::vector<std::string>{"q_proj", "v_proj"};
    if (multiple) {
      j["routing_function"] = 0;
      per_task("multiple");
    }
    r.task_prefix = !multiple;
  } else if (name == "prompt_single" || name == "prompt_multiple") {
    j["peft_type"] = "VLPEFT_PROMPT";
    j["num_virtual_tokens"] = 40;
    j["prompt_hidden_dim"] = 800;
    per_task(multiple ? "multiple" : "single");
    r.task_prefix = !multiple;
  } else {
    VLP_FAIL("unknown VL-Adapter recipe '", name, "' (", list, ")");
  }
  r.config = parse_peft_config(j, "VL-Adapter recipe " + name);
  return r;
}

}  // namespace vlp::peft
