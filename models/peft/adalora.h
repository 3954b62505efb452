// AdaLoRA (spec/peft.md §4.2): LoRA in SVD form, h = W0 x + b + B (A ⊙ E) x̃ · α / (r_init + 1e-5), with a
// rank allocator that prunes the least important singular-value triplets along a cubic budget schedule.
//
// Config fields (HF PEFT's AdaLoraConfig): init_r (12), target_r (8), tinit, tfinal, deltaT (1), beta1, beta2
// (0.85), orth_reg_weight (0.5), total_step (required), lora_alpha (8; ≤ 0 means init_r), lora_dropout,
// rank_pattern (the pruning masks: "<layer>.lora_E" -> [bool] over init_r; a saved adapter's tensors hold only
// the kept ranks). Training loop, as in PEFT:
//     loss = model loss + adalora_orthogonal_loss(model);  backward(loss);  step(opt);
//     allocator.update_and_allocate(model, global_step);   zero_grad(opt);
#pragma once
#include <map>
#include <string>
#include <vector>

#include "models/peft/peft.h"

namespace vlp::peft {

struct AdaLoraLayer : LinearAdapter {
  int64_t r = 0;         // current size of the tensors
  double ranknum = 0;    // r_init: never changed by pruning
  double scaling = 0;    // α
  double dropout = 0;
  Tensor lora_A;  // [r, d_in]   "lora_A"
  Tensor lora_E;  // [r, 1]      "lora_E"
  Tensor lora_B;  // [d_out, r]  "lora_B"
  std::vector<bool> kept;  // the allocator's mask over r (empty = all kept)
  AdaLoraLayer(const Linear& layer, int64_t r, double ranknum, double scaling, double dropout);
  Tensor forward(const Linear& layer, const Tensor& x, const Tensor& y, const ForwardContext& ctx) override;
  bool mergeable() const override { return true; }
  void merge(Linear& layer) override;
  void unmerge(Linear& layer) override;
  Tensor delta_weight() const;  // B (A ⊙ E) α / (r_init + 1e-5), [d_out, d_in]
  const char* type_name() const override { return "AdaLoRA"; }
};

void attach_adalora(AttachContext& ctx);
void adalora_prepare_save(Module& model, const std::string& adapter_name, nlohmann::json& config,
                          std::vector<std::pair<std::string, Tensor>>& tensors);

// orth_reg_weight × the mean over every A and B of the adapter of ‖A Aᵀ − I‖_F and ‖Bᵀ B − I‖_F.
Tensor adalora_orthogonal_loss(Module& model, const std::string& adapter_name = "default");

// PEFT's RankAllocator plus AdaLoraModel.update_and_allocate: sensitivity |p ⊙ ∇p| smoothed by EMA (β1), its
// uncertainty by EMA (β2), triplet score s(E_i) + mean_j s(A_ij) + mean_j s(B_ji), budget init_r·n → target_r·n
// along a cubic schedule between tinit and total_step − tfinal; masked triplets get E_i = 0. The masks are
// written to the adapter's config (rank_pattern) and to the layers, so save_adapter writes what PEFT writes.
struct AdaLoraAllocator {
  std::string adapter_name;
  int64_t init_budget = 0, target_budget = 0;
  std::map<std::string, std::vector<double>> exp_avg_ipt, exp_avg_unc;  // by parameter name
  explicit AdaLoraAllocator(Module& model, const std::string& adapter_name = "default");
  // Call after backward (and the optimizer step), before zero_grad. Returns the budget of this step.
  int64_t update_and_allocate(Module& model, int64_t global_step);
  // The budget and whether this step masks.
  std::pair<int64_t, bool> budget_schedule(const PeftConfig& config, int64_t step) const;
};

}  // namespace vlp::peft
