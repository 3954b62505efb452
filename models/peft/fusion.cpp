// AdapterFusion and the Stack / Average / Parallel compositions (see fusion.h).
#include "models/peft/fusion.h"

#include <numeric>

#include "runtime/rng.h"

namespace vlp::peft {

FusionAdapter::FusionAdapter(std::string comp, std::vector<std::pair<std::string, BottleneckAdapter*>> m,
                             int64_t d_model, bool dyn, DType dtype)
    : composition(std::move(comp)), members(std::move(m)), dynamic(dyn) {
  VLP_CHECK(composition == "fuse" || composition == "stack" || composition == "average" || composition == "parallel",
            "adapter fusion: composition \"", composition, "\" (fuse, stack, average, parallel)");
  VLP_CHECK(!members.empty(), "adapter fusion: no member adapters");
  for (const auto& [name, a] : members) VLP_CHECK(a != nullptr, "adapter fusion: member '", name, "' is missing");
  weights.assign(members.size(), 1.0 / double(members.size()));
  if (composition == "fuse") {
    query = std::make_unique<DenseProjection>(d_model, d_model, true, dtype);
    key = std::make_unique<DenseProjection>(d_model, d_model, true, dtype);
    register_module("query", query.get());
    register_module("key", key.get());
    if (dynamic) {
      value_weight = zeros({d_model, d_model}, dtype);
      register_parameter("value.weight", &value_weight);
    }
  }
}

Tensor FusionAdapter::forward(const Tensor& input, const Tensor& output, const ForwardContext& ctx) {
  return forward_with_residual(input, Tensor(), output, ctx);
}

Tensor FusionAdapter::forward_with_residual(const Tensor& input, const Tensor& residual, const Tensor& output,
                                            const ForwardContext& ctx) {
  if (composition == "stack") {
    Tensor h = output;
    for (auto& [name, a] : members) h = a->forward_with_residual(input, residual, h, ctx);
    return h;
  }
  if (composition == "parallel") {
    const int64_t n = int64_t(members.size()), B = output.size(0);
    VLP_CHECK(B % n == 0, "adapter fusion (parallel): batch ", B, " is not ", n,
              " equal copies (replicate the inputs once per member adapter)");
    std::vector<Tensor> parts;
    for (int64_t k = 0; k < n; ++k) {
      Tensor in_k = narrow(input, 0, k * (B / n), B / n), out_k = narrow(output, 0, k * (B / n), B / n);
      Tensor res_k = residual.defined() ? narrow(residual, 0, k * (B / n), B / n) : Tensor();
      parts.push_back(members[size_t(k)].second->forward_with_residual(in_k, res_k, out_k, ctx));
    }
    return concat(parts, 0);
  }
  std::vector<Tensor> u;
  for (auto& [name, a] : members) u.push_back(a->delta(input, output, ctx, residual));
  if (composition == "average") {
    Tensor sum_u = u[0] * weights[0];
    for (size_t i = 1; i < u.size(); ++i) sum_u = sum_u + u[i] * weights[i];
    return output + sum_u;
  }
  // fuse: per-token attention over the members' outputs.
  Tensor q = query->forward(output);  // [B, T, d]
  std::vector<Tensor> scores;
  for (const auto& ui : u) scores.push_back(sum(q * key->forward(ui), {-1}, true));  // [B, T, 1]
  Tensor alpha = softmax(concat(scores, -1) * (1.0 / temperature), -1);            // [B, T, n]
  Tensor mixed;
  for (size_t i = 0; i < u.size(); ++i) {
    Tensor v = dynamic ? linear(u[i], value_weight) : u[i];
    Tensor term = v * narrow(alpha, -1, int64_t(i), 1);
    mixed = mixed.defined() ? mixed + term : term;
  }
  return output + mixed;
}

void init_fusion(FusionAdapter& f, Generator& gen) {
  if (f.composition != "fuse") return;
  normal_(f.query->weight, 0.0, 0.02, &gen);
  zeros_(f.query->bias);
  normal_(f.key->weight, 0.0, 0.02, &gen);
  zeros_(f.key->bias);
  if (f.dynamic) {
    const int64_t d = f.value_weight.size(0);
    Tensor v = full({d, d}, 1e-6, DType::F64);
    double* p = v.data<double>();
    for (int64_t i = 0; i < d; ++i) p[i * d + i] = 1.0;
    copy_(f.value_weight, convert(v, f.value_weight.dtype(), f.value_weight.device()));
  }
}

namespace {
std::vector<FusionAdapter*> fusion_modules(Module& model) {
  std::vector<FusionAdapter*> out;
  for (auto& [name, m] : model.named_modules())
    if (auto* f = dynamic_cast<FusionAdapter*>(m)) out.push_back(f);
  return out;
}
}  // namespace

Tensor fusion_regularization(Module& model, double weight) {
  Tensor total;
  Device device = Device::cpu();  // the model's (where a loss this is added to lives)
  for (auto& [name, p] : model.named_parameters()) {
    device = p.device();
    break;
  }
  for (auto* f : fusion_modules(model)) {
    if (!f->dynamic || !f->active) continue;
    const int64_t d = f->value_weight.size(0);
    Tensor ev = zeros({d, d}, DType::F64);
    for (int64_t i = 0; i < d; ++i) ev.data<double>()[i * d + i] = 1.0;
    Tensor diff = convert(ev, f->value_weight.dtype(), f->value_weight.device()) - f->value_weight;
    Tensor term = sum(diff * diff);
    total = total.defined() ? total + term : term;
  }
  return total.defined() ? total * weight : scalar_tensor(0.0, DType::F32, device);
}

void set_fusion_temperature(Module& model, double temperature) {
  VLP_CHECK(temperature > 0, "adapter fusion: temperature must be positive, got ", temperature);
  for (auto* f : fusion_modules(model)) f->temperature = temperature;
}

void freeze_fusion_members(Module& model) {
  for (auto* f : fusion_modules(model))
    for (auto& [name, a] : f->members) a->set_requires_grad(false);
}

void attach_fusion(AttachContext& ctx) {
  const PeftConfig& c = ctx.config;
  VLP_CHECK(c.raw.contains("adapters") && c.raw["adapters"].is_array() && !c.raw["adapters"].empty(), c.source,
            ": VLPEFT_FUSION needs field 'adapters' (the member adapter names)");
  std::vector<std::string> names;
  for (const auto& j : c.raw["adapters"]) {
    VLP_CHECK(j.is_string(), c.source, ": field 'adapters' must hold adapter names");
    names.push_back(j.get<std::string>());
  }
  const std::string composition = c.get_string("composition", "fuse");
  const std::string type = c.get_string("fusion_type", "dynamic");
  VLP_CHECK(type == "dynamic" || type == "static", c.source, ": fusion_type \"", type, "\" (dynamic, static)");
  std::vector<double> weights;
  if (c.raw.contains("weights")) {
    VLP_CHECK(c.raw["weights"].is_array() && c.raw["weights"].size() == names.size(), c.source,
              ": field 'weights' must be a list with one number per adapter");
    for (const auto& w : c.raw["weights"]) weights.push_back(w.get<double>());
    if (c.get_bool("normalize_weights", true)) {
      double s = std::accumulate(weights.begin(), weights.end(), 0.0);
      VLP_CHECK(s != 0.0, c.source, ": fusion weights sum to 0");
      for (auto& w : weights) w /= s;
    }
  }
  int attached = 0;
  for (const auto& [site_name, site] : sublayer_sites(ctx.model)) {
    if (!name_matches_targets(c, site_name, {"sa_site", "ca_site", "ff_site"})) continue;
    std::vector<std::pair<std::string, BottleneckAdapter*>> members;
    for (const auto& n : names)
      for (auto& [an, a] : site->adapters)
        if (an == n) members.push_back({n, dynamic_cast<BottleneckAdapter*>(a.get())});
    if (members.size() != names.size()) continue;  // a site without every member is left alone
    for (const auto& [n, a] : members)
      VLP_CHECK(a != nullptr, c.source, ": fusion member '", n, "' at '", site_name, "' is not a bottleneck adapter");
    const int64_t d = members.front().second->options.d_model;
    auto f = std::make_shared<FusionAdapter>(composition, members, d, type == "dynamic",
                                             members.front().second->down[0]->parameters().front().dtype());
    if (!weights.empty()) f->weights = weights;
    f->temperature = c.get_double("temperature", 1.0);
    init_fusion(*f, ctx.generator);
    for (auto& [n, a] : members) a->active = false;
    attach_adapter(*site, ctx.adapter_name, f);
    ++attached;
  }
  VLP_CHECK(attached > 0, c.source, ": no sublayer site holds every fusion member (", names.size(), " adapters)");
}

}  // namespace vlp::peft
