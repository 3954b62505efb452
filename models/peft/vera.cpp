#include "models/peft/vera.h"

#include <cmath>
#include <random>

#include "models/peft/linear_common.h"

namespace vlp::peft {

// std::mt19937 seeded with a 32-bit value is the generator torch's CPU generator runs (same seeding, same
// tempering); torch turns one draw into a float in [lo, hi) as (draw & (2^24 - 1)) * 2^-24 * (hi - lo) + lo,
// in float with lo and hi first rounded to float, the multiply-add fused (its CPU kernels are built with FMA;
// the unfused form differs in the last bit for some draws, checked against fixtures).
struct TorchCpuUniform::State {
  std::mt19937 mt;
};

TorchCpuUniform::TorchCpuUniform(uint64_t seed) : state(std::make_shared<State>()) {
  state->mt.seed(uint32_t(seed & 0xffffffffu));
}

uint32_t TorchCpuUniform::next() { return uint32_t(state->mt()); }

void TorchCpuUniform::fill(const Tensor& t, double lo, double hi) {
  VLP_CHECK(t.dtype() == DType::F32, "torch CPU uniform: only float32 tensors are reproduced");
  const float from = float(lo), to = float(hi);
  std::vector<double> v(size_t(t.numel()));
  for (double& e : v) {
    const float x = float(next() & ((1u << 24) - 1)) * (1.0f / float(1u << 24));
    e = double(std::fmaf(x, to - from, from));
  }
  copy_(t, from_vector(v, t.shape(), DType::F32));
}

VeraShared::VeraShared(int r, int64_t in_max, int64_t out_max, uint64_t key) {
  vera_A = empty({r, in_max});
  vera_B = empty({out_max, r});
  TorchCpuUniform gen(key);
  // Kaiming-uniform with gain sqrt(2) over fan_in = size(1), as HF's _kaiming_init.
  for (Tensor* t : {&vera_A, &vera_B}) {
    const double bound = std::sqrt(3.0) * (std::sqrt(2.0) / std::sqrt(double(t->size(1))));
    gen.fill(*t, -bound, bound);
  }
  register_buffer("vera_A", &vera_A);
  register_buffer("vera_B", &vera_B);
}

VeraAdapter::VeraAdapter(int64_t in, int64_t out, VeraShared* s, const VeraOptions& o, Generator& gen)
    : shared(s), options(o), in_features(in), out_features(out) {
  VLP_CHECK(s != nullptr, "VeRA: no shared projections");
  VLP_CHECK(s->vera_A.size(0) == o.r && s->vera_B.size(1) == o.r, "VeRA: projections have rank ",
            s->vera_A.size(0), ", the layer needs ", o.r);
  VLP_CHECK(s->vera_A.size(1) >= in && s->vera_B.size(0) >= out, "VeRA: projections [", s->vera_B.size(0), ", ",
            s->vera_A.size(1), "] are smaller than the layer [", out, ", ", in, "]");
  if (o.init_weights) {
    vera_lambda_b = zeros({out});
    vera_lambda_d = full({o.r}, o.d_initial);
  } else {
    vera_lambda_b = ones({out});
    vera_lambda_d = empty({o.r});
    normal_(vera_lambda_d, 0.0, 1.0, &gen);
  }
  register_parameter("vera_lambda_b", &vera_lambda_b);
  register_parameter("vera_lambda_d", &vera_lambda_d);
  set_requires_grad(true);  // trainable, as nn.Parameter; copies of these tensors share the flag
}

Tensor VeraAdapter::delta_weight() const {
  Tensor a = narrow(shared->vera_A, 1, 0, in_features), b = narrow(shared->vera_B, 0, 0, out_features);
  return matmul(mul(unsqueeze(vera_lambda_b, 1), b), mul(unsqueeze(vera_lambda_d, 1), a));
}

Tensor VeraAdapter::forward(const Linear& layer, const Tensor& x, const Tensor& y, const ForwardContext& ctx) {
  Tensor a = narrow(shared->vera_A, 1, 0, in_features), b = narrow(shared->vera_B, 0, 0, out_features);
  Tensor xd = options.vera_dropout > 0 ? dropout(x, options.vera_dropout, ctx.training, ctx.generator) : x;
  Tensor h = mul(vera_lambda_d, linear(xd, to(a, x.dtype())));
  return add(y, mul(vera_lambda_b, linear(h, to(b, x.dtype()))));
}

void VeraAdapter::merge(Linear& layer) {
  add_delta_to_weight(layer, delta_weight(), 1.0);
  merged = true;
}

void VeraAdapter::unmerge(Linear& layer) {
  add_delta_to_weight(layer, delta_weight(), -1.0);
  merged = false;
}

void attach_vera(AttachContext& ctx) {
  const PeftConfig& c = ctx.config;
  auto targets = select_method_targets(ctx, "VERA");
  int64_t in_max = 0, out_max = 0;
  for (auto& [name, layer] : targets) {
    in_max = std::max(in_max, layer->in_features());
    out_max = std::max(out_max, layer->out_features());
  }
  VeraOptions o;
  o.r = c.get_int("r", 256);
  o.vera_dropout = c.get_double("vera_dropout", 0.0);
  o.d_initial = c.get_double("d_initial", 0.1);
  o.init_weights = c.get_bool("init_weights", true);
  const int key = c.get_int("projection_prng_key", 0);
  VLP_CHECK(o.r > 0, c.source, ": VeRA r must be positive, got ", o.r);
  const std::string shared_name = "peft_shared." + ctx.adapter_name;
  for (const auto& [name, child] : ctx.model.children())
    VLP_CHECK(name != shared_name, "VeRA: the model already has ", shared_name);
  auto& shared = ctx.model.add_module<VeraShared>(shared_name, o.r, in_max, out_max, uint64_t(key));
  for (auto& [name, layer] : targets)
    attach_adapter(*layer, ctx.adapter_name,
                   std::make_shared<VeraAdapter>(layer->in_features(), layer->out_features(), &shared, o,
                                                 ctx.generator));
}

void vera_prepare_save(Module& model, const std::string& adapter_name, nlohmann::json& config,
                       std::vector<std::pair<std::string, Tensor>>& tensors) {
  bool a = false, b = false;
  for (auto& [key, t] : tensors) a |= key == "base_model.vera_A", b |= key == "base_model.vera_B";
  VLP_CHECK(a && b, "VeRA adapter '", adapter_name, "': the shared projections are missing from the save");
  config["save_projection"] = true;
}

}  // namespace vlp::peft
