// LoHa (FedPara, LyCORIS family; spec/peft.md §4.3): a Hadamard product of two low-rank matrices as the
// weight delta, ΔW = (α/r) · (W1a W1b) ⊙ (W2a W2b), added to the frozen layer's output. Mergeable.
#pragma once
#include "models/peft/peft.h"

namespace vlp::peft {

struct LohaOptions {
  int r = 8;
  double alpha = 8.0;
  double rank_dropout = 0.0;    // training: Bernoulli row mask on ΔW, divided by its mean
  double module_dropout = 0.0;  // training: skip the adapter with this probability
  bool init_weights = true;     // true: w2_b = 0 (no-op); false: all four Kaiming-uniform
};

struct LohaAdapter : LinearAdapter {
  Tensor hada_w1_a, hada_w1_b, hada_w2_a, hada_w2_b;  // [out, r], [r, in], [out, r], [r, in]
  LohaOptions options;
  double scaling;

  LohaAdapter(int64_t in_features, int64_t out_features, const LohaOptions& options, Generator& gen);
  Tensor delta_weight() const;  // ΔW as [out, in]
  Tensor forward(const Linear& layer, const Tensor& x, const Tensor& y, const ForwardContext& ctx) override;
  bool mergeable() const override { return true; }
  void merge(Linear& layer) override;
  void unmerge(Linear& layer) override;
  const char* type_name() const override { return "LoHa"; }
};

// Reads r, alpha, rank_dropout, module_dropout, init_weights (+ rank_pattern, alpha_pattern) and attaches
// one LohaAdapter per selected Linear.
void attach_loha(AttachContext& ctx);

}  // namespace vlp::peft
