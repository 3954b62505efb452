// Routing functions in low-rank bottlenecks (Qu, Tuytelaars, Moens, ECCV 2024; spec/peft.md §3).
//
// The bottleneck's own down-projection maps both the text hidden states x_H [B, T, d] and the visual
// representation x_R [B, N_v, d] (ForwardContext::visual) to x_t [B, T, r] and x_v [B, N_v, r]; a routing
// function f(x_t, x_v) [B, T, r] replaces x_t before the up-projection:
//   1  x_t ⊙ x_v              (N_v = 1, broadcast over T)
//   2  x_t + x_v              (N_v = 1)
//   3  x_t x_vᵀ x_v           per example; with routing_reshape_compat x_vᵀ is the released code's
//                             reshape of [N_v, r] to [r, N_v] (equal to the transpose only for N_v = 1)
//   4  x_t X_v, X_v = 1 x_v   out[t, j] = (Σ_i x_t[t, i]) x_v[j]  (N_v = 1)
//
// Routed LoRA (peft_type VLPEFT_ROUTED_LORA), a LinearAdapter replacing plain LoRA's term:
//   y = x W^T + b + (α/r) · B f(A drop(x), A x_R),  A Kaiming-uniform(a = √5), B = 0 (a no-op at step 0).
// With routing_function 0 it is plain LoRA, which is how vlpeft runs VL-Adapter's multiple-LoRA recipe.
// Config fields: r (8), lora_alpha (8), lora_dropout (0), routing_function (1..4, 0 = none; default 2),
// routing_reshape_compat (false), visual_pool ("none" | "mean"), sharing ("single" | "multiple") + tasks,
// target_modules (default: the backbone's LoRA targets of spec §5). Parameters
// "<linear>.adapters.<name>.lora_A.weight" [r, d_in], ".lora_B.weight" [d_out, r]; per task
// "<linear>.adapters.<name>.<task>.lora_A.weight". Not mergeable (the update depends on the image).
// Grouped layout for a fused projection (GPT-2's c_attn, spec §3.4): qkv_groups, e.g. [true, false, true],
// splits the output into equal groups and adapts the enabled ones: A [G r, d_in] (G enabled groups, their
// rows in order), B [G d_group, r], group k's update B_k f(...)[k r:(k+1) r]; f acts on the whole G r vector,
// so functions 3 and 4 mix the groups. Default on GPT-2: [true, false, true] (Q and V).
//
// Routed adapter (peft_type VLPEFT_ROUTED_ADAPTER): the bottleneck adapter of adapter.h with
//   A(h) = W_up act(f(W_down h + c_d, W_down x_R + c_d)) + c_u   (+ h with skip)
// Config fields: as VLPEFT_ADAPTER (placement default "houlsby", reduction_factor, bottleneck_dim,
// non_linearity default gelu_new on GPT-2 and exact gelu elsewhere (spec §3.3), skip default true (false
// for the encoder recipe of spec §3.5), sharing, tasks, target_modules), plus routing_function,
// routing_reshape_compat, visual_pool; init_weights default "bert" (N(0, 0.02), zero biases: not a no-op;
// "zero_up" is). share_in_block (default true on GPT-2, spec §3.4): one adapter per
// block, used on both the attention and the MLP output (the feed-forward site borrows the attention site's
// module, so its parameters exist, train and save once).
#pragma once
#include <string>
#include <vector>

#include "models/peft/adapter.h"
#include "models/peft/peft.h"
#include "models/site.h"

namespace vlp::peft {

// f(x_t, x_v) for function 1..4; x_t [B, T, r], x_v [B, N_v, r].
Tensor route(int function, const Tensor& x_t, const Tensor& x_v, bool reshape_compat = false);

// ctx.visual as [B, N_v, d] (a [B, d] input becomes N_v = 1; "mean" pools the tokens), in `dtype`.
Tensor routing_visual(const ForwardContext& ctx, const std::string& visual_pool, DType dtype, const char* who);

struct RoutedLoraOptions {
  int64_t r = 8;
  double alpha = 8.0;
  double dropout = 0.0;
  int routing = 2;
  bool routing_reshape_compat = false;
  std::string visual_pool = "none";
  std::string sharing = "single";   // single | multiple
  std::vector<std::string> tasks;
  std::vector<bool> groups;  // qkv_groups; empty = one group (the whole output)
};

struct RoutedLoraSlot : Module {
  DenseProjection lora_A, lora_B;  // [G r, in], [G d_group, r] (G = 1 ungrouped: [r, in], [out, r]), no bias
  RoutedLoraSlot(int64_t in, int64_t a_rows, int64_t b_rows, int64_t r, DType dtype);
};

struct RoutedLora : LinearAdapter {
  RoutedLoraOptions options;
  std::vector<RoutedLoraSlot*> slots;  // one (single) or one per task
  RoutedLora(const RoutedLoraOptions& options, int64_t in, int64_t out, DType dtype = DType::F32);
  double scale() const { return options.alpha / double(options.r); }
  int slot(const ForwardContext& ctx) const;
  Tensor forward(const Linear& layer, const Tensor& x, const Tensor& y, const ForwardContext& ctx) override;
  const char* type_name() const override { return "RoutedLora"; }

 private:
  std::vector<std::unique_ptr<RoutedLoraSlot>> owned_;
};

// A sublayer adapter that runs another site's module (one adapter used at two sites of a block).
struct BorrowedSublayerAdapter : SublayerAdapter {
  SublayerAdapter* target;
  explicit BorrowedSublayerAdapter(SublayerAdapter* t) : target(t) {}
  Tensor forward(const Tensor& input, const Tensor& output, const ForwardContext& ctx) override {
    return target->forward(input, output, ctx);
  }
  Tensor forward_with_residual(const Tensor& input, const Tensor& residual, const Tensor& output,
                               const ForwardContext& ctx) override {
    return target->forward_with_residual(input, residual, output, ctx);
  }
  const char* type_name() const override { return "BorrowedSublayerAdapter"; }
};

void attach_routed_lora(AttachContext& ctx);
void attach_routed_adapter(AttachContext& ctx);

}  // namespace vlp::peft
