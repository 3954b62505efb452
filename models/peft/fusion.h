// AdapterFusion and composition blocks over bottleneck adapters already attached to the same sublayer
// sites (Pfeiffer et al., EACL 2021; adapter-hub/adapters conventions, spec/peft.md §4.20).
//
// With sublayer input x, output o, and u_i = A_i(...) each member's value before its own residual
// (BottleneckAdapter::delta), the composed site result is:
//   fuse     o + Σ_i α_i W_v u_i,  α = softmax_i((W_q o + c_q)·(W_k u_i + c_k) / T)  per token
//            (static: no W_v; dynamic (default): bias-free W_v, init identity with 1e-6 off-diagonal;
//             W_q, W_k N(0, 0.02), biases 0; the regulariser 0.01 Σ_sites ‖I − W_v‖² is
//             fusion_regularization(model))
//   stack    h_0 = o, h_k = A_k.forward(x, h_{k-1}): each member reads the previous one's output
//   average  o + Σ_i w_i u_i (weights normalised to sum 1 unless normalize_weights is false)
//   parallel the batch is n equal chunks (the caller replicates the inputs n times); chunk k runs
//            member k alone: multi-task inference in one pass
// The members are deactivated at the site (the composition calls them), and stay attached under their
// own names, so their tensors save and load as before.
//
// Config fields of peft_type VLPEFT_FUSION: adapters (member adapter names, required), composition
// ("fuse" | "stack" | "average" | "parallel"; default fuse), fusion_type ("dynamic" | "static"),
// temperature (1; a trainer may anneal it with set_fusion_temperature), weights (average),
// normalize_weights (true), target_modules (default: every site holding all members).
// Parameters (fuse only): "<site>.adapters.<name>.query.{weight,bias}", ".key.{weight,bias}", ".value.weight".
#pragma once
#include <string>
#include <vector>

#include "models/peft/adapter.h"

namespace vlp::peft {

struct FusionAdapter : SublayerAdapter {
  std::string composition;  // fuse | stack | average | parallel
  std::vector<std::pair<std::string, BottleneckAdapter*>> members;  // not owned: attached at the same site
  std::vector<double> weights;  // average, normalised
  bool dynamic = true;
  double temperature = 1.0;
  std::unique_ptr<DenseProjection> query, key;  // fuse
  Tensor value_weight;                          // fuse, dynamic: [d, d]

  FusionAdapter(std::string composition, std::vector<std::pair<std::string, BottleneckAdapter*>> members,
                int64_t d_model, bool dynamic = true, DType dtype = DType::F32);
  Tensor forward(const Tensor& input, const Tensor& output, const ForwardContext& ctx) override;
  // Hands a pre-LN block's `residual` on to the members (SublayerAdapter::forward_with_residual).
  Tensor forward_with_residual(const Tensor& input, const Tensor& residual, const Tensor& output,
                               const ForwardContext& ctx) override;
  const char* type_name() const override { return "FusionAdapter"; }
};

void init_fusion(FusionAdapter& f, Generator& gen);
// 0.01 · Σ ‖I − W_v‖² over every dynamic fusion module in the model (a scalar, differentiable).
Tensor fusion_regularization(Module& model, double weight = 0.01);
void set_fusion_temperature(Module& model, double temperature);
// AdapterFusion trains the fusion layers only: add_adapter's trainable set holds every adapter's parameters,
// so a trainer fusing frozen adapters calls this after add_adapter (members' parameters stop requiring grad).
void freeze_fusion_members(Module& model);

void attach_fusion(AttachContext& ctx);

}  // namespace vlp::peft
