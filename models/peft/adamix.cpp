// AdaMix: mixture-of-experts adapters and LoRA (see adamix.h for the formulas and config fields).
#include "models/peft/adamix.h"

#include <algorithm>
#include <cmath>

#include "models/peft/linear_common.h"
#include "runtime/rng.h"

namespace vlp::peft {

int64_t draw_expert(int64_t num_experts, Generator* gen) {
  Tensor u = empty({1});
  uniform_(u, 0.0, 1.0, gen);
  return std::min(num_experts - 1, int64_t(std::floor(to_vector(u)[0] * double(num_experts))));
}

namespace {

Tensor mean_of(const std::vector<Tensor>& ts) {
  if (ts.size() == 1) return ts[0];
  return mean(stack(ts, 0), {0});
}

}  // namespace

// ---- adapter variant ----

MixtureProjection::MixtureProjection(int64_t in, int64_t out, int64_t num_experts, DType dtype) {
  VLP_CHECK(num_experts > 0, "AdaMix: num_experts must be positive, got ", num_experts);
  for (int64_t m = 0; m < num_experts; ++m) {
    experts.push_back(std::make_unique<DenseProjection>(in, out, true, dtype));
    register_module(std::to_string(m), experts.back().get());
  }
}

Tensor MixtureProjection::mean_weight() const {
  std::vector<Tensor> ws;
  for (const auto& e : experts) ws.push_back(e->weight);
  return mean_of(ws);
}

Tensor MixtureProjection::mean_bias() const {
  std::vector<Tensor> bs;
  for (const auto& e : experts) bs.push_back(e->bias);
  return mean_of(bs);
}

Tensor MixtureProjection::forward(const Tensor& x) const {
  if (experts.size() == 1) return experts[0]->forward(x);
  if (chosen >= 0) {
    VLP_CHECK(chosen < int64_t(experts.size()), "AdaMix: expert ", chosen, " of ", experts.size());
    return experts[size_t(chosen)]->forward(x);
  }
  return linear(x, mean_weight(), mean_bias());
}

AdaMixAdapter::AdaMixAdapter(const BottleneckOptions& o, int64_t down_experts, int64_t up_experts, DType dtype)
    : BottleneckAdapter(
          o,
          [=](int64_t in, int64_t out, const std::string& role) -> std::unique_ptr<Projection> {
            return std::make_unique<MixtureProjection>(in, out, role == "down" ? down_experts : up_experts, dtype);
          },
          dtype) {}

std::vector<MixtureProjection*> AdaMixAdapter::mixtures() const {
  std::vector<MixtureProjection*> out;
  for (auto* p : down) out.push_back(static_cast<MixtureProjection*>(p));
  for (auto* p : up) out.push_back(static_cast<MixtureProjection*>(p));
  return out;
}

void AdaMixAdapter::choose(const ForwardContext& ctx) {
  for (auto* m : mixtures()) {
    const int64_t n = int64_t(m->experts.size());
    m->chosen = ctx.training && n > 1 ? draw_expert(n, ctx.generator) : -1;
  }
}

Tensor AdaMixAdapter::forward(const Tensor& input, const Tensor& output, const ForwardContext& ctx) {
  return forward_with_residual(input, Tensor(), output, ctx);
}

Tensor AdaMixAdapter::forward_with_residual(const Tensor& input, const Tensor& residual, const Tensor& output,
                                            const ForwardContext& ctx) {
  choose(ctx);
  return BottleneckAdapter::forward_with_residual(input, residual, output, ctx);
}

// ---- LoRA variant ----

AdaMixLoraLayer::AdaMixLoraLayer(int64_t in, int64_t out, int64_t r_, double alpha_, double dropout_, int64_t na,
                                 int64_t nb)
    : r(r_), alpha(alpha_), dropout(dropout_) {
  VLP_CHECK(r > 0, "AdaMix LoRA: r must be positive, got ", r);
  VLP_CHECK(na > 0 && nb > 0, "AdaMix LoRA: the expert counts must be positive, got ", na, " and ", nb);
  scaling = alpha / double(r);
  experts_A.resize(size_t(na));
  experts_B.resize(size_t(nb));
  for (int64_t m = 0; m < na; ++m) {
    experts_A[size_t(m)] = zeros({r, in});
    register_parameter("experts_lora_A." + std::to_string(m), &experts_A[size_t(m)]);
  }
  for (int64_t m = 0; m < nb; ++m) {
    experts_B[size_t(m)] = zeros({out, r});
    register_parameter("experts_lora_B." + std::to_string(m), &experts_B[size_t(m)]);
  }
}

Tensor AdaMixLoraLayer::mean_A() const { return mean_of(experts_A); }
Tensor AdaMixLoraLayer::mean_B() const { return mean_of(experts_B); }

Tensor AdaMixLoraLayer::forward(const Linear& layer, const Tensor& x_in, const Tensor& y, const ForwardContext& ctx) {
  VLP_CHECK(ctx.sample_adapters.empty(), "AdaMix LoRA does not support mixed-adapter batches (sample_adapters)");
  Tensor A, B;
  if (ctx.training) {
    // One pick for A, then one for B (microsoft/AdaMix's order); a shared projection draws nothing.
    chosen_A = experts_A.size() > 1 ? draw_expert(int64_t(experts_A.size()), ctx.generator) : 0;
    chosen_B = experts_B.size() > 1 ? draw_expert(int64_t(experts_B.size()), ctx.generator) : 0;
    A = experts_A[size_t(chosen_A)];
    B = experts_B[size_t(chosen_B)];
  } else {
    chosen_A = chosen_B = -1;
    A = mean_A();
    B = mean_B();
  }
  Tensor x = x_in.dtype() == A.dtype() ? x_in : to(x_in, A.dtype());
  Tensor xd = dropout > 0 && ctx.training ? vlp::dropout(x, dropout, true, ctx.generator) : x;
  Tensor delta = mul(linear(linear(xd, A), B), scaling);
  if (delta.dtype() != y.dtype()) delta = to(delta, y.dtype());
  return add(y, delta);
}

Tensor AdaMixLoraLayer::delta_weight() const {
  NoGradGuard no_grad;
  return mul(matmul(mean_B(), mean_A()), scaling);
}

void AdaMixLoraLayer::merge(Linear& layer) {
  add_delta_to_weight(layer, delta_weight(), 1.0);
  merged = true;
}

void AdaMixLoraLayer::unmerge(Linear& layer) {
  add_delta_to_weight(layer, delta_weight(), -1.0);
  merged = false;
}

// ---- consistency loss ----

Tensor adamix_consistency_loss(const Tensor& a, const Tensor& b, const Tensor& mask) {
  VLP_CHECK(a.shape() == b.shape(), "adamix_consistency_loss: logits shapes differ: ", shape_str(a.shape()), " vs ",
            shape_str(b.shape()));
  VLP_CHECK(a.dim() >= 1, "adamix_consistency_loss: logits need a class dimension");
  const int64_t c = a.dim() - 1;
  Tensor la = log_softmax(a, c), lb = log_softmax(b, c);
  // KL(p‖q) + KL(q‖p) = Σ (p − q)(log p − log q)
  Tensor per_row = mul(sum(mul(sub(exp(la), exp(lb)), sub(la, lb)), {c}), 0.5);
  if (!mask.defined()) return mean(per_row);
  VLP_CHECK(mask.shape() == per_row.shape(), "adamix_consistency_loss: mask ", shape_str(mask.shape()),
            " does not match the logits' positions ", shape_str(per_row.shape()));
  Tensor m = to(mask, per_row.dtype());
  return div(sum(mul(per_row, m)), sum(m));
}

// ---- attach ----

namespace {

int64_t experts_for(const PeftConfig& c, const std::string& share_field, int64_t m) {
  return c.get_bool(share_field, false) ? 1 : m;
}

// expert_init "copy": every expert of a mixture takes the first one's values.
void copy_first_expert(std::vector<Tensor>& experts) {
  NoGradGuard no_grad;
  for (size_t i = 1; i < experts.size(); ++i) copy_(experts[i], experts[0]);
}

}  // namespace

void attach_adamix(AttachContext& ctx) {
  const PeftConfig& c = ctx.config;
  const std::string variant = c.get_string("adamix_variant", "adapter");
  const int m = c.get_int("num_experts", 4);
  VLP_CHECK(m > 0, c.source, ": field 'num_experts' must be positive, got ", m);
  const std::string init = c.get_string("expert_init", "copy");
  VLP_CHECK(init == "copy" || init == "independent", c.source, ": field 'expert_init' is \"", init,
            "\" (expected copy or independent)");
  if (variant == "adapter") {
    const int64_t nd = experts_for(c, "share_down", m), nu = experts_for(c, "share_up", m);
    auto adapters = attach_bottlenecks(ctx, [&](const BottleneckOptions& o, DType dtype) {
      return std::make_shared<AdaMixAdapter>(o, nd, nu, dtype);
    });
    if (init == "copy")
      for (auto& a : adapters)
        for (auto* mix : static_cast<AdaMixAdapter*>(a.get())->mixtures()) {
          std::vector<Tensor> ws, bs;
          for (auto& e : mix->experts) ws.push_back(e->weight), bs.push_back(e->bias);
          copy_first_expert(ws);
          copy_first_expert(bs);
        }
    return;
  }
  VLP_CHECK(variant == "lora", c.source, ": field 'adamix_variant' is \"", variant, "\" (expected adapter or lora)");
  const int r = c.get_int("r", 8);
  const double alpha = c.get_double("lora_alpha", 8.0), dropout = c.get_double("lora_dropout", 0.0);
  VLP_CHECK(dropout >= 0 && dropout < 1, c.source, ": field 'lora_dropout' must be in [0, 1), got ", dropout);
  const int64_t na = experts_for(c, "share_A", m), nb = experts_for(c, "share_B", m);
  for (auto& [name, layer] : select_method_targets(ctx, "VLPEFT_ADAMIX")) {
    auto a = std::make_shared<AdaMixLoraLayer>(layer->in_features(), layer->out_features(), r, alpha, dropout, na, nb);
    {
      NoGradGuard no_grad;
      for (auto& t : a->experts_A) {
        kaiming_uniform_(t, std::sqrt(5.0), &ctx.generator);
        if (init == "copy") break;
      }
      if (init == "copy") copy_first_expert(a->experts_A);
    }
    attach_adapter(*layer, ctx.adapter_name, a);
  }
}

}  // namespace vlp::peft
