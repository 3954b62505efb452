// HRA (Yuan et al. 2024; spec/peft.md §4.10): the frozen weight is multiplied on the right by a chain of r
// Householder reflections, h = (W0 H) x + b, H = Π_i (I − 2 û_i û_iᵀ) (û_i = u_i/‖u_i‖, i = 1..r, left to
// right), or with Gram-Schmidt H = I − 2 Û Ûᵀ (Û the orthonormalised U). The forward applies the reflections
// to x (H x, r rank-one updates) instead of forming W0 H. Mergeable: W ← W H; unmerge W ← W Hᵀ (= the
// reflections in reverse order).
#pragma once
#include "models/peft/peft.h"

namespace vlp::peft {

struct HraOptions {
  int r = 8;
  bool apply_gs = false;
  bool init_weights = true;  // true: r/2 Kaiming columns each repeated twice (no-op for even r)
};

struct HraAdapter : LinearAdapter {
  Tensor hra_u;  // [in, r]
  HraOptions options;

  HraAdapter(int64_t in_features, const HraOptions& options, Generator& gen);
  Tensor reflect(const Tensor& x) const;  // rows x [..., in] -> rows of (H x)
  Tensor forward(const Linear& layer, const Tensor& x, const Tensor& y, const ForwardContext& ctx) override;
  bool replaces_base() const override { return true; }
  bool mergeable() const override { return true; }
  void merge(Linear& layer) override;
  void unmerge(Linear& layer) override;
  const char* type_name() const override { return "HRA"; }
};

// Reads r (+ rank_pattern), apply_GS, init_weights.
void attach_hra(AttachContext& ctx);

}  // namespace vlp::peft
