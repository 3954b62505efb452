// AdaMix (Wang et al., "AdaMix: Mixture-of-Adaptations for Parameter-efficient Model Tuning", EMNLP 2022;
// microsoft/AdaMix; spec/peft.md §4.22). HF PEFT has no such type: peft_type "VLPEFT_ADAMIX".
//
// Every adaptation module holds M experts per projection. Training: each forward picks, independently for every
// projection of every site, one expert uniformly at random (drawn from the forward context's Generator, so a
// seeded run picks the same experts every time; the draws differ from torch's randint) and uses it alone:
//   adapter: x + W_up^{m'} f(W_down^{m} x)            LoRA: h = W0 x + b + s · B^{m'} A^{m} x
// Inference (ctx.training false): the experts' weights (and biases) averaged, AdaMix's "expert soup" with
// uniform weights: W_down = (1/M) Σ_m W_down^m, likewise W_up, A and B. The LoRA variant then merges as LoRA
// (ΔW = s · mean(B) mean(A)); the adapter variant, a sublayer module, does not merge.
//
// adamix_variant "adapter" (default): a bottleneck adapter of adapter.h whose down- and up-projections are
// mixtures of experts (MixtureProjection); every VLPEFT_ADAPTER field applies unchanged (placement, reduction_factor,
// bottleneck_dim, non_linearity, scaling, skip, before_dropout, init_weights, sharing, tasks, target_modules).
// adamix_variant "lora": on Linear layers (LoRA's default targets, spec §5); r (8), lora_alpha (8), lora_dropout
// (0); scaling α/r; A Kaiming-uniform, B = 0 (a no-op at init).
// Shared fields: num_experts M (4); share_down / share_up (adapter) and share_A / share_B (LoRA): one expert for
// that projection (microsoft/AdaMix's sharing_down / sharing_up, share_A / share_B; default false);
// expert_init "copy" (default: every expert starts as a copy of the first, as microsoft/AdaMix deep-copies one
// initialised module) or "independent" (each expert drawn on its own).
//
// Tensors: adapter "<site>.adapters.<name>.down.<m>.weight" / ".bias", "up.<m>.weight" / ".bias" (per task
// "<task>.down.<m>..." with sharing multiple); LoRA "<layer>.adapters.<name>.experts_lora_A.<m>" [r, d_in],
// "experts_lora_B.<m>" [d_out, r]. Files follow the default key rule of spec §6.4.
//
// Consistency regularisation (AdaMix's optional second pass): adamix_consistency_loss below, the symmetric KL
// between the outputs of two training passes over the same batch (each with its own expert picks), for the
// caller to add to its loss with its own weight. The trainer (tools/trainer) does not add it by itself.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "models/peft/adapter.h"
#include "models/peft/peft.h"

namespace vlp::peft {

// An expert index in [0, num_experts), uniform, from gen (the default generator when null).
int64_t draw_expert(int64_t num_experts, Generator* gen);

// M dense projections in -> out; forward uses experts[chosen], or the averaged weights and biases when chosen
// is -1. The owning adapter sets `chosen` before each forward.
struct MixtureProjection : Projection {
  std::vector<std::unique_ptr<DenseProjection>> experts;
  int64_t chosen = -1;
  MixtureProjection(int64_t in, int64_t out, int64_t num_experts, DType dtype);
  Tensor forward(const Tensor& x) const override;
  Tensor mean_weight() const;  // (1/M) Σ_m W^m, differentiable
  Tensor mean_bias() const;
  int64_t in_features() const override { return experts[0]->in_features(); }
  int64_t out_features() const override { return experts[0]->out_features(); }
  const char* type_name() const override { return "MixtureProjection"; }
};

// A bottleneck adapter (adapter.h) with mixture projections: picks the experts, then runs as the adapter.
struct AdaMixAdapter : BottleneckAdapter {
  AdaMixAdapter(const BottleneckOptions& options, int64_t down_experts, int64_t up_experts, DType dtype);
  std::vector<MixtureProjection*> mixtures() const;  // every down mixture, then every up mixture
  // Training: a fresh expert per mixture (in mixtures() order); eval: the averages.
  void choose(const ForwardContext& ctx);
  Tensor forward(const Tensor& input, const Tensor& output, const ForwardContext& ctx) override;
  Tensor forward_with_residual(const Tensor& input, const Tensor& residual, const Tensor& output,
                               const ForwardContext& ctx) override;
  const char* type_name() const override { return "AdaMixAdapter"; }
};

struct AdaMixLoraLayer : LinearAdapter {
  int64_t r = 0;
  double alpha = 0, scaling = 0, dropout = 0;
  std::vector<Tensor> experts_A;  // M_A x [r, d_in]   "experts_lora_A.<m>"
  std::vector<Tensor> experts_B;  // M_B x [d_out, r]  "experts_lora_B.<m>"
  int64_t chosen_A = -1, chosen_B = -1;  // the last training forward's picks (-1 after an eval forward)

  AdaMixLoraLayer(int64_t in_features, int64_t out_features, int64_t r, double alpha, double dropout,
                  int64_t experts_A, int64_t experts_B);
  Tensor mean_A() const;  // (1/M_A) Σ A^m, differentiable
  Tensor mean_B() const;
  Tensor forward(const Linear& layer, const Tensor& x, const Tensor& y, const ForwardContext& ctx) override;
  Tensor delta_weight() const;  // s · mean(B) mean(A) as [d_out, d_in], no grad
  bool mergeable() const override { return true; }
  void merge(Linear& layer) override;
  void unmerge(Linear& layer) override;
  const char* type_name() const override { return "AdaMixLoRA"; }
};

// ½ [KL(p_a ‖ p_b) + KL(p_b ‖ p_a)], p = softmax over the last dimension of the logits [..., C], summed over C and
// averaged over the other positions (over those where mask [...] is 1, when a mask is given). Differentiable in
// both logits; 0 for equal inputs.
Tensor adamix_consistency_loss(const Tensor& logits_a, const Tensor& logits_b, const Tensor& mask = Tensor());

void attach_adamix(AttachContext& ctx);

}  // namespace vlp::peft
