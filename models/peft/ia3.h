// IA3 (spec/peft.md §4.7) as a LinearAdapter: a learned vector ia3_l scales the output of attention
// targets (h = (W0 x + b) ⊙ l, l [d_out, 1]) and the input of feed-forward targets (h = W0 (x ⊙ l) + b,
// l [1, d_in]); init ones (no-op). Several IA3 adapters on one layer multiply. Mergeable: rows (output) or
// columns (input) of W scaled, output scaling also scales b; unmerge divides by l + 1e-8 (inexact, as PEFT).
// Config fields: target_modules, feedforward_modules (list or regex; must be a subset of target_modules),
// init_ia3_weights.
#pragma once
#include "models/peft/peft.h"

namespace vlp::peft {

struct Ia3Layer : LinearAdapter {
  bool feedforward = false;
  Tensor ia3_l;  // "ia3_l": [d_out, 1], or [1, d_in] when feedforward
  Ia3Layer(const Linear& layer, bool feedforward);
  Tensor forward(const Linear& layer, const Tensor& x, const Tensor& y, const ForwardContext& ctx) override;
  bool replaces_base() const override { return feedforward; }
  bool mergeable() const override { return true; }
  void merge(Linear& layer) override;
  void unmerge(Linear& layer) override;
  const char* type_name() const override { return "IA3"; }
};

void attach_ia3(AttachContext& ctx);

}  // namespace vlp::peft
