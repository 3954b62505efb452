// LoKr (LyCORIS; spec/peft.md §4.4): a Kronecker product as the weight delta, ΔW = (α/r) · (W1 ⊗ W2),
// W1 [l, m], W2 [k, n] with d_out = l·k, d_in = m·n from factorization(). Each factor is full or a
// rank-r product (w1 only with decompose_both). Mergeable.
#pragma once
#include <utility>

#include "models/peft/peft.h"

namespace vlp::peft {

struct LokrOptions {
  int r = 8;
  double alpha = 8.0;
  bool decompose_both = false;
  int decompose_factor = -1;
  double rank_dropout = 0.0;
  double module_dropout = 0.0;
  bool rank_dropout_scale = false;
  std::string init_weights = "true";  // "true": W1 (or w1_a) = 0; "lycoris": W2 (or w2_b) = 0; "false": random
};

// LyCORIS's factorization: (m, n) with m·n = dimension, m <= n; m = factor when it divides, else the divisor
// pair nearest the square root that keeps m <= factor (factor -1 = no limit).
std::pair<int64_t, int64_t> lokr_factorization(int64_t dimension, int64_t factor = -1);

struct LokrAdapter : LinearAdapter {
  // Either the full factor or its two low-rank halves is defined (and registered).
  Tensor lokr_w1, lokr_w1_a, lokr_w1_b, lokr_w2, lokr_w2_a, lokr_w2_b;
  LokrOptions options;
  double scaling;

  LokrAdapter(int64_t in_features, int64_t out_features, const LokrOptions& options, Generator& gen);
  Tensor delta_weight() const;  // ΔW as [out, in]
  Tensor forward(const Linear& layer, const Tensor& x, const Tensor& y, const ForwardContext& ctx) override;
  bool mergeable() const override { return true; }
  void merge(Linear& layer) override;
  void unmerge(Linear& layer) override;
  const char* type_name() const override { return "LoKr"; }
};

// Reads r, alpha, decompose_both, decompose_factor, rank_dropout, module_dropout, rank_dropout_scale,
// init_weights (+ rank_pattern, alpha_pattern).
void attach_lokr(AttachContext& ctx);

}  // namespace vlp::peft
