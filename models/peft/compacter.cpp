// PHM projections and the VLPEFT_COMPACTER attach function (see compacter.h).
#include "models/peft/compacter.h"

#include <cmath>

#include "runtime/rng.h"

namespace vlp::peft {

PhmProjection::PhmProjection(int64_t n_, int64_t in, int64_t out, int64_t rank_, const Tensor* shared, DType dtype)
    : n(n_), d_in(in), d_out(out), rank(rank_), shared_rule(shared) {
  VLP_CHECK(n > 0 && in % n == 0 && out % n == 0, "PHM layer: phm_dim ", n, " must divide d_in ", in,
            " and d_out ", out);
  VLP_CHECK(rank >= 0, "PHM layer: phm_rank must be >= 0, got ", rank);
  if (!shared) {
    phm_rule = zeros({n, n, n}, dtype);
    register_parameter("phm_rule", &phm_rule);
  } else {
    VLP_CHECK(shared->shape() == Shape({n, n, n}), "PHM layer: shared rule has shape ", shape_str(shared->shape()),
              ", expected [", n, ", ", n, ", ", n, "]");
  }
  if (rank == 0) {
    W = zeros({n, in / n, out / n}, dtype);
    register_parameter("W", &W);
  } else {
    W_left = zeros({n, in / n, rank}, dtype);
    W_right = zeros({n, rank, out / n}, dtype);
    register_parameter("W_left", &W_left);
    register_parameter("W_right", &W_right);
  }
  bias = zeros({out}, dtype);
  register_parameter("bias", &bias);
}

Tensor PhmProjection::phm_matrix() const {
  const int64_t p = d_in / n, q = d_out / n;
  Tensor B = rank == 0 ? W : matmul(W_left, W_right);  // [n, p, q]
  // H[a p + κ, c q + π] = Σ_i A_i[a, c] B_i[κ, π]: one [n², n] x [n, p q] product, then (a, c, κ, π) ->
  // (a, κ, c, π). Same value as summing n Kronecker products, one GEMM instead of n.
  Tensor A = reshape(rule(), {n, n * n});
  Tensor sum_ab = matmul(transpose(A, 0, 1), reshape(B, {n, p * q}));  // [n*n, p*q]
  Tensor h4 = permute(reshape(sum_ab, {n, n, p, q}), {0, 2, 1, 3});
  return reshape(h4, {d_in, d_out});
}

PhmSharedRules::PhmSharedRules(int64_t n, DType dtype, bool one_rule) {
  if (one_rule) {
    phm_rule = zeros({n, n, n}, dtype);
    register_parameter("phm_rule", &phm_rule);
    return;
  }
  phm_rule_down = zeros({n, n, n}, dtype);
  phm_rule_up = zeros({n, n, n}, dtype);
  register_parameter("phm_rule_down", &phm_rule_down);
  register_parameter("phm_rule_up", &phm_rule_up);
}

void init_phm(PhmProjection& p, const std::string& w_init, double rule_std, Generator& gen) {
  auto init_slices = [&](const Tensor& t) {
    for (int64_t i = 0; i < t.size(0); ++i) {
      Tensor slice = select(t, 0, i);
      if (w_init == "xavier_uniform") xavier_uniform_(slice, std::sqrt(2.0), &gen);
      else if (w_init == "xavier_normal") xavier_normal_(slice, 1.0, &gen);
      else VLP_FAIL("compacter: phm_w_init \"", w_init, "\" (xavier_uniform, xavier_normal)");
    }
  };
  if (p.rank == 0) {
    init_slices(p.W);
  } else {
    init_slices(p.W_left);
    init_slices(p.W_right);
  }
  if (!p.shared_rule) normal_(p.phm_rule, 0.0, rule_std, &gen);
  zeros_(p.bias);
}

void attach_compacter(AttachContext& ctx) {
  const PeftConfig& c = ctx.config;
  const std::string placement = c.get_string("placement", "vl_adapter");
  VLP_CHECK(placement == "vl_adapter" || placement == "houlsby" || placement == "pfeiffer", c.source,
            ": Compacter placement \"", placement, "\" (vl_adapter, houlsby, pfeiffer)");
  const bool vl = placement == "vl_adapter";
  const int64_t n = c.get_int("phm_dim", vl ? 2 : 4);
  const int64_t rank = c.get_int("phm_rank", vl ? 0 : 1);
  const bool shared = c.get_bool("shared_phm_rule", !vl);
  const double rule_std = c.get_double("phm_init_range", vl ? 0.01 : 1e-4);
  const std::string w_init = c.get_string("phm_w_init", vl ? "xavier_uniform" : "xavier_normal");
  const bool before_dropout = c.get_bool("before_dropout", vl);
  const std::string scope = c.get_string("phm_rule_scope", "stack");
  VLP_CHECK(scope == "stack" || scope == "model" || scope == "adapter", c.source, ": phm_rule_scope \"", scope,
            "\" (stack, model, adapter)");
  // As the bottleneck adapters' defaults: VL-Adapter every sublayer, Houlsby (adapters' CompacterConfig)
  // self-attention and feed-forward, Pfeiffer (Compacter++) feed-forward.
  const std::vector<std::string> defaults =
      placement == "pfeiffer"  ? std::vector<std::string>{"ff_site"}
      : placement == "houlsby" ? std::vector<std::string>{"sa_site", "ff_site"}
                               : std::vector<std::string>{"sa_site", "ca_site", "ff_site"};

  Module* shared_root = nullptr;
  if (shared) shared_root = &ctx.model.add_module<Module>("peft_shared." + ctx.adapter_name);
  for (const auto& t : sublayer_targets(ctx, defaults)) {
    BottleneckOptions o = bottleneck_options(c, t.d_model);
    if (!c.raw.contains("reduction_factor") && !c.raw.contains("bottleneck_dim"))
      o.bottleneck = t.d_model / (vl ? 8 : 32);
    if (!c.raw.contains("non_linearity")) o.non_linearity = vl ? "gelu_new" : "gelu";
    PhmSharedRules* rules = nullptr;
    if (shared) {
      const std::string stack = t.stack.empty() || scope != "stack" ? "all" : t.stack;
      rules = dynamic_cast<PhmSharedRules*>(shared_root->find_module(stack));
      if (!rules) {
        rules = &shared_root->add_module<PhmSharedRules>(stack, n, t.dtype, scope == "adapter");
        if (scope == "adapter") {
          normal_(rules->phm_rule, 0.0, rule_std, &ctx.generator);
        } else {
          normal_(rules->phm_rule_down, 0.0, rule_std, &ctx.generator);
          normal_(rules->phm_rule_up, 0.0, rule_std, &ctx.generator);
        }
      }
    }
    ProjectionFactory make = [&](int64_t in, int64_t out, const std::string& role) -> std::unique_ptr<Projection> {
      const Tensor* rule = rules ? rules->rule(role) : nullptr;
      auto p = std::make_unique<PhmProjection>(n, in, out, rank, rule, t.dtype);
      init_phm(*p, w_init, rule_std, ctx.generator);
      return p;
    };
    auto a = std::make_shared<BottleneckAdapter>(o, make, t.dtype);
    if (o.placement == "pfeiffer") a->block_norm = t.block_norm;
    t.site->before_dropout = before_dropout;
    attach_adapter(*t.site, ctx.adapter_name, a);
  }
}

}  // namespace vlp::peft
