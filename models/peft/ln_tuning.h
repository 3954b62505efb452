// LayerNorm tuning (spec/peft.md §4.11): a trainable copy (γ', β') of each targeted LayerNorm / RMSNorm
// replaces it in the forward. Norms have no adapter hook, so the copy is swapped into the norm's own
// `weight` / `bias` members while the adapter is active and the frozen originals wait in the adapter
// (exactly one handle of each tensor exists at a time, so autograd state is never split between copies).
// The copy is therefore named "<norm>.weight" in named_parameters(); on disk it is HF PEFT's
// "<norm>.ln_tuning_layers.weight" / ".bias". One LN-tuning adapter is active per norm at a time.
#pragma once
#include <string>
#include <utility>
#include <vector>

#include "models/peft/peft.h"

namespace vlp::peft {

struct LnTuningAdapter : Module {
  Module* norm = nullptr;
  Tensor* norm_weight = nullptr;  // the norm's members
  Tensor* norm_bias = nullptr;    // null for RMSNorm
  Tensor stash_weight, stash_bias;  // the frozen originals while swapped in, else the trainable copies
  bool swapped_in = false;
  bool merged = false;  // merged = the copy stays in the norm for good (merge_and_unload)
  void set_active(bool on);  // swaps the copy in / out
  Tensor& trained_weight() { return swapped_in ? *norm_weight : stash_weight; }
  Tensor& trained_bias() { return swapped_in ? *norm_bias : stash_bias; }
  Tensor& base_weight() { return swapped_in ? stash_weight : *norm_weight; }
  const char* type_name() const override { return "LnTuning"; }
};

void attach_ln_tuning(AttachContext& ctx);
// Every LN-tuning adapter of that name with its norm's path.
std::vector<std::pair<std::string, LnTuningAdapter*>> ln_tuning_adapters(Module& model, const std::string& adapter_name);

// BitFit (spec §4.12, peft_type "VLPEFT_BITFIT"): no modules; the trainable set is the biases of the
// targeted Linear / LayerNorm modules (all of them when target_modules is empty), selected by role.
void attach_bitfit(AttachContext& ctx);
std::vector<std::pair<std::string, Tensor>> bitfit_biases(Module& model, const PeftConfig& config);

}  // namespace vlp::peft
