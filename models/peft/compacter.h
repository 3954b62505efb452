// Compacter: bottleneck adapters whose projections are PHM layers (Karimi Mahabadi et al., NeurIPS 2021;
// spec/peft.md §2.7, §4.19). Row-vector layout:
//   H = Σ_{i=1..n} A_i ⊗ B_i  [d_in, d_out],  y = x H + c,  A_i [n, n],  B_i [d_in/n, d_out/n]
//   (low-rank option: B_i = S_i T_i, S_i [d_in/n, k], T_i [k, d_out/n])
// The adapter around the two PHM layers, its placements and sharing modes are adapter.h's.
//
// Config fields of peft_type VLPEFT_COMPACTER:
//   placement        "vl_adapter" (default: every sublayer site, before dropout, as VL-Adapter's runs)
//                    | "houlsby" (Compacter) | "pfeiffer" (Compacter++, feed-forward sites only)
//   phm_dim          n (default 2 for vl_adapter, 4 otherwise); d_model and the bottleneck divide by n
//   reduction_factor (8 for vl_adapter, 32 otherwise), bottleneck_dim, non_linearity (gelu_new / gelu)
//   shared_phm_rule  one set of A_i per stack and direction at model level (default false for vl_adapter,
//                    true otherwise), in "peft_shared.<adapter>.<stack or 'all'>.phm_rule_{down,up}"
//   phm_rule_scope   "stack" (default: one set per stack and direction, spec §2.7) | "model" (one set per
//                    direction for the whole model, spec §4.19; stored under "all") | "adapter" (one set for
//                    the whole model and both directions, "peft_shared.<adapter>.all.phm_rule": what
//                    adapter-hub/adapters 1.3.0 does with shared_phm_rule, its PHM layers reading one
//                    shared_parameters[<adapter>]["phm_rule"] whatever their position)
//   phm_rank         k for low-rank B_i (default 0 = full B_i for vl_adapter, 1 otherwise)
//   phm_init_range   std of A_i's normal init (default 0.01 for vl_adapter, 1e-4 otherwise)
//   phm_w_init       "xavier_uniform" (gain √2, default for vl_adapter) | "xavier_normal" (the library's
//                    actual init, default otherwise); c = 0
//   sharing, tasks, skip, scaling, before_dropout, target_modules: as VLPEFT_ADAPTER
// Parameters (per projection "down" / "up", per task as in adapter.h): ".phm_rule" [n, n, n] (unless shared),
// ".W" [n, d_in/n, d_out/n] or ".W_left" [n, d_in/n, k] and ".W_right" [n, k, d_out/n], ".bias" [d_out].
#pragma once
#include <string>

#include "models/peft/adapter.h"

namespace vlp::peft {

struct PhmProjection : Projection {
  int64_t n, d_in, d_out, rank;  // rank 0 = full B_i
  Tensor phm_rule;               // [n, n, n] when not shared
  const Tensor* shared_rule = nullptr;
  Tensor W, W_left, W_right, bias;
  PhmProjection(int64_t n, int64_t d_in, int64_t d_out, int64_t rank, const Tensor* shared_rule,
                DType dtype = DType::F32);
  const Tensor& rule() const { return shared_rule ? *shared_rule : phm_rule; }
  // H = Σ_i A_i ⊗ B_i as [d_in, d_out].
  Tensor phm_matrix() const;
  Tensor forward(const Tensor& x) const override { return matmul(x, phm_matrix()) + bias; }
  int64_t in_features() const override { return d_in; }
  int64_t out_features() const override { return d_out; }
  const char* type_name() const override { return "PhmProjection"; }
};

// Model-level shared A_i of one stack: "phm_rule_down", "phm_rule_up", each [n, n, n].
// With one_rule (phm_rule_scope "adapter"): a single "phm_rule" that both directions use.
struct PhmSharedRules : Module {
  Tensor phm_rule_down, phm_rule_up;
  Tensor phm_rule;  // one_rule only
  PhmSharedRules(int64_t n, DType dtype, bool one_rule = false);
  const Tensor* rule(const std::string& role) const {
    return phm_rule.defined() ? &phm_rule : role == "down" ? &phm_rule_down : &phm_rule_up;
  }
};

// B_i (or S_i, T_i) per slice with the given scheme; A_i ~ N(0, rule_std) when owned; c = 0.
void init_phm(PhmProjection& p, const std::string& w_init, double rule_std, Generator& gen);

void attach_compacter(AttachContext& ctx);

}  // namespace vlp::peft
