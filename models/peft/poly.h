// Poly (Polytropon, Ponti et al. 2023; spec/peft.md §4.17) and its Multi-Head Routing form (n_splits > 1), as
// HF PEFT 0.21.2's POLY. Each targeted Linear holds S·K LoRA "skills" (S splits of the features, K skills per
// split) and a router with one row of S·K logits per task. For an example of task t:
//   z = sigmoid(logits[t])                        (eval)
//   z = RelaxedBernoulli(τ = 1, logits[t]).rsample() (training), both viewed [S, K]
//   w[s, k] = z[s, k] / (Σ_k z[s, k] + 1e-12)
//   A_t = rows s·d_in/S.. of Σ_k w[s, k] A[s, k]  -> [d_in, r];   B_t likewise by columns -> [r, d_out]
//   h = W0 x + b + x A_t B_t / r                 (row-vector form; the scaling is 1/r)
// so each example of a batch gets its own low-rank update.
//
// Task ids: ForwardContext::task_ids, one per example (HF PEFT's task_ids argument). When it is empty every
// example takes ForwardContext::task, the batch's task (spec §2.10: one task per batch), so the trainer's
// one-task batches need nothing more; HF instead refuses a forward without task_ids. A task_ids of the wrong
// length, or an id outside [0, n_tasks), is an error naming the field.
//
// Training draws: u ~ U(0, 1) from the forward context's Generator, clamped to [ε, 1 − ε] (ε = 2^-23, F32's
// epsilon, as torch's clamp_probs), z = sigmoid(logits + log u − log(1 − u)): torch's reparameterised
// RelaxedBernoulli at temperature 1, with the same distribution but other bits than torch's generator. Eval mode
// is deterministic and is what the HF parity fixtures check.
//
// Config fields of peft_type POLY (HF names and defaults): r (8), n_tasks (1), n_skills (4), n_splits (1; must
// divide d_in and d_out), poly_type ("poly", the only one), init_weights (true: B = 0, a no-op; false: B
// Kaiming-uniform per block), target_modules (default: LoRA's, spec §5), exclude_modules, modules_to_save.
// Tensors (spec §6.4): poly_lora_A [S, K, d_in/S, r] (each block the transpose of an nn.Linear-initialised
// [r, d_in/S]), poly_lora_B [S, K, r, d_out/S], poly_router.module_logits [n_tasks, S·K] (U(±1e-3)).
// Unlike HF PEFT, which takes nn.Linear only, GPT-2's Conv1D layers are accepted (x is multiplied, not W).
//
// Merging: the update depends on each example's task, so a Poly layer merges only for one fixed task
// (set_poly_merge_task, then merge_adapters): W += (A_t B_t / r)ᵀ with the eval-mode weights of that task. With
// no task set, merge fails saying so. HF PEFT has no merge for Poly.
#pragma once
#include <string>
#include <vector>

#include "models/peft/peft.h"

namespace vlp::peft {

struct PolyLayer : LinearAdapter {
  std::string adapter_name;
  int64_t r = 0, n_tasks = 0, n_skills = 0, n_splits = 0;
  int64_t in_features = 0, out_features = 0;
  Tensor poly_lora_A;    // [S, K, d_in/S, r]        "poly_lora_A"
  Tensor poly_lora_B;    // [S, K, r, d_out/S]       "poly_lora_B"
  Tensor module_logits;  // [n_tasks, S·K]           "poly_router.module_logits"
  int merge_task = -1;   // the task merge() folds in; -1 = none chosen (merge refuses)
  int merged_task = -1;  // the task folded into the weight while merged (unmerge subtracts it)

  PolyLayer(int64_t in_features, int64_t out_features, const std::string& adapter_name, int64_t r, int64_t n_tasks,
            int64_t n_skills, int64_t n_splits);
  // Initialisation as HF: A per block Kaiming-uniform (a = √5) drawn [r, d_in/S] and transposed; B zero or, with
  // init_weights false, Kaiming-uniform per block drawn [d_out/S, r] and transposed; logits U(±1e-3).
  void reset(bool init_weights, Generator& gen);
  // The per-example task indices of a batch of `batch` examples (task_ids, else `task` repeated), checked.
  std::vector<int64_t> task_indices(const ForwardContext& ctx, int64_t batch) const;
  // Mixing weights [B, S, K] for the given tasks: sigmoid (eval) or a RelaxedBernoulli draw (training),
  // normalised over the skills of each split. Differentiable in module_logits.
  Tensor mixing_weights(const std::vector<int64_t>& tasks, bool training, Generator* gen) const;
  // Per-example A [B, d_in, r] and B [B, r, d_out] for mixing weights [B, S, K].
  Tensor mixed_A(const Tensor& weights) const;
  Tensor mixed_B(const Tensor& weights) const;
  Tensor forward(const Linear& layer, const Tensor& x, const Tensor& y, const ForwardContext& ctx) override;
  // The [out, in] update of one task (eval-mode weights), no gradient.
  Tensor delta_weight(int task) const;
  bool mergeable() const override { return true; }
  void merge(Linear& layer) override;
  void unmerge(Linear& layer) override;
  const char* type_name() const override { return "Poly"; }
};

void attach_poly(AttachContext& ctx);

// The task every Poly layer of `adapter_name` merges (merge_adapters / merge_and_unload); -1 clears it.
void set_poly_merge_task(Module& model, const std::string& adapter_name, int task);

}  // namespace vlp::peft
