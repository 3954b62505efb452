// VLPEFT_MAM and VLPEFT_UNIPELT (see combinations.h): each part's config is its defaults overridden by the
// user's object for it, attached by the part's own method under the combination's adapter name.
#include "models/peft/combinations.h"

#include "models/peft/adapter.h"
#include "models/peft/lora.h"
#include "models/peft/prefix_tuning.h"

namespace vlp::peft {

namespace {

using json = nlohmann::json;

struct Part {
  const char* key;  // the field of the combination's config
  json defaults;    // with "peft_type"
  void (*attach)(AttachContext& ctx);
};

void attach_parts(AttachContext& ctx, const std::vector<Part>& parts) {
  const PeftConfig& c = ctx.config;
  for (const auto& [key, fields] : c.raw.items()) {
    bool known = key == "peft_type" || key == "task_type" || key == "base_model_name_or_path" ||
                 key == "inference_mode" || key == "modules_to_save" || key == "revision";
    for (const Part& p : parts) known = known || key == p.key;
    VLP_CHECK(known, c.source, ": ", c.peft_type, " has no field '", key,
              "' (a part's fields go in its own object: prefix_tuning, adapter, lora)");
  }
  for (const Part& p : parts) {
    json j = p.defaults;
    if (c.raw.contains(p.key)) {
      const json& user = c.raw[p.key];
      if (user.is_boolean() && !user.get<bool>()) continue;  // part switched off
      VLP_CHECK(user.is_object() || user.is_boolean(), c.source, ": field '", p.key,
                "' must be an object of that part's fields, or false");
      if (user.is_object())
        for (const auto& [k, v] : user.items()) {
          VLP_CHECK(k != "peft_type", c.source, ": field '", p.key, "' may not change the part's peft_type");
          j[k] = v;
        }
    }
    const PeftConfig part = parse_peft_config(j, c.source + " [" + p.key + "]");
    AttachContext sub{ctx.model, part, ctx.adapter_name, ctx.generator, ctx.backbone};
    p.attach(sub);
  }
}

}  // namespace

void attach_mam(AttachContext& ctx) {
  attach_parts(ctx, {
      {"prefix_tuning",
       {{"peft_type", "VLPEFT_PREFIX_TUNING"}, {"num_virtual_tokens", 30}, {"prefix_projection", true},
        {"encoder_hidden_size", 800}},
       attach_vl_prefix_tuning},
      {"adapter",
       {{"peft_type", "VLPEFT_ADAPTER"}, {"placement", "parallel"}, {"reduction_factor", 2}, {"scaling", 4.0},
        {"init_weights", "mam_adapter"}},
       attach_bottleneck_adapter},
  });
}

void attach_unipelt(AttachContext& ctx) {
  attach_parts(ctx, {
      {"prefix_tuning",
       {{"peft_type", "VLPEFT_PREFIX_TUNING"}, {"num_virtual_tokens", 10}, {"prefix_projection", true},
        {"encoder_hidden_size", 512}, {"use_gating", true}},
       attach_vl_prefix_tuning},
      {"adapter",
       {{"peft_type", "VLPEFT_ADAPTER"}, {"placement", "pfeiffer"}, {"reduction_factor", 16},
        {"init_weights", "bert"}, {"use_gating", true}},
       attach_bottleneck_adapter},
      {"lora", {{"peft_type", "LORA"}, {"r", 8}, {"lora_alpha", 2}, {"use_gating", true}}, attach_lora},
  });
}

}  // namespace vlp::peft
