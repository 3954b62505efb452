// LoRA, rsLoRA, DoRA and LoRA's initialisations (spec/peft.md §4.1), plus PEFT's weighted combination of
// LoRA adapters. The decompositions PiSSA / OLoRA / SVD combination need are small float64 routines here.
#include "models/peft/lora.h"

#include "autograd/lora.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <regex>

namespace vlp::peft {

namespace {

// rank_pattern / alpha_pattern: the first key k with "(.*\.)?k" matching the whole layer name.
template <class V>
V pattern_value(const std::map<std::string, V>& patterns, const std::string& name, V fallback,
                const std::string& field, const std::string& source) {
  for (const auto& [key, value] : patterns) {
    try {
      if (std::regex_match(name, std::regex("(.*\\.)?(" + key + ")"))) return value;
    } catch (const std::regex_error& e) {
      VLP_FAIL(source, ": field '", field, "' key '", key, "' is not a valid pattern: ", e.what());
    }
  }
  return fallback;
}

std::vector<double> weight_as_doubles(const Linear& layer) { return to_vector(contiguous(layer.weight_out_in())); }

void write_weight(Linear& layer, const std::vector<double>& w) {
  NoGradGuard no_grad;
  copy_(layer.weight_out_in(),
        from_vector(w, {layer.out_features(), layer.in_features()}, layer.weight.dtype(), layer.weight.device()));
}

// PiSSA / OLoRA: A, B from a decomposition of W0, and W0 <- W0 - s B A.
void init_from_decomposition(LoraLayer& a, Linear& layer, const std::string& kind) {
  const int64_t m = layer.out_features(), n = layer.in_features(), r = a.r;
  VLP_CHECK(r <= std::min(m, n), "init_lora_weights '", kind, "': r = ", r, " exceeds min(d_out, d_in) = ",
            std::min(m, n));
  std::vector<double> w = weight_as_doubles(layer);
  std::vector<double> A(size_t(r * n)), B(size_t(m * r));
  if (kind == "pissa") {
    std::vector<double> u, s, vt;
    svd_thin(w, m, n, u, s, vt);
    const int64_t k = std::min(m, n);
    for (int64_t i = 0; i < r; ++i) {
      double root = std::sqrt(s[size_t(i)] / a.scaling);
      for (int64_t j = 0; j < n; ++j) A[size_t(i * n + j)] = root * vt[size_t(i * n + j)];
      for (int64_t o = 0; o < m; ++o) B[size_t(o * r + i)] = u[size_t(o * k + i)] * root;
    }
  } else {  // olora
    std::vector<double> q, rr;
    qr_reduced(w, m, n, q, rr);
    const int64_t k = std::min(m, n);
    for (int64_t i = 0; i < r; ++i) {
      for (int64_t j = 0; j < n; ++j) A[size_t(i * n + j)] = rr[size_t(i * n + j)];
      for (int64_t o = 0; o < m; ++o) B[size_t(o * r + i)] = q[size_t(o * k + i)];
    }
  }
  for (int64_t o = 0; o < m; ++o)
    for (int64_t j = 0; j < n; ++j) {
      double d = 0;
      for (int64_t i = 0; i < r; ++i) d += B[size_t(o * r + i)] * A[size_t(i * n + j)];
      w[size_t(o * n + j)] -= a.scaling * d;
    }
  NoGradGuard no_grad;
  copy_(a.lora_A, from_vector(A, {r, n}));
  copy_(a.lora_B, from_vector(B, {m, r}));
  a.init_A = from_vector(A, {r, n});
  a.init_B = from_vector(B, {m, r});
  write_weight(layer, w);
}

}  // namespace

LoraLayer::LoraLayer(const Linear& layer, const std::string& name, int64_t r_, double alpha_, bool use_rslora,
                     double dropout_, bool lora_bias, bool use_dora_)
    : adapter_name(name), r(r_), alpha(alpha_), dropout(dropout_), use_dora(use_dora_) {
  VLP_CHECK(r > 0, "LoRA: r must be positive, got ", r);
  VLP_CHECK(!(use_dora && lora_bias), "LoRA: use_dora and lora_bias cannot be combined (as in PEFT)");
  scaling = use_rslora ? alpha / std::sqrt(double(r)) : alpha / double(r);
  lora_A = zeros({r, layer.in_features()});
  lora_B = zeros({layer.out_features(), r});
  register_parameter("lora_A.weight", &lora_A);
  register_parameter("lora_B.weight", &lora_B);
  if (lora_bias) {
    lora_B_bias = zeros({layer.out_features()});
    register_parameter("lora_B.bias", &lora_B_bias);
  }
  if (use_dora) {
    magnitude = ones({layer.out_features()});
    register_parameter("lora_magnitude_vector", &magnitude);
  }
}

Tensor LoraLayer::delta_weight() const {
  NoGradGuard no_grad;
  return mul(matmul(lora_B, lora_A), scaling);
}

Tensor LoraLayer::dora_scale(const Linear& layer) const {
  Tensor norm;
  {
    NoGradGuard no_grad;  // the weight norm is detached from backprop, as in PEFT
    Tensor w = add(to(layer.weight_out_in(), DType::F32), delta_weight());
    norm = sqrt(sum(mul(w, w), {1}));
  }
  return div(magnitude, norm);
}

bool LoraLayer::fused_applies(const Linear& layer, const Tensor& x, const ForwardContext& ctx) const {
  if (use_dora || gate || lora_B_bias.defined() || !ctx.sample_adapters.empty()) return false;
  const DType dt = x.dtype();
  const Device dev = x.device();
  auto same = [&](const Tensor& t) { return !t.defined() || (t.dtype() == dt && t.device() == dev); };
  return same(layer.weight) && same(layer.bias) && same(lora_A) && same(lora_B);
}

Tensor LoraLayer::forward(const Linear& layer, const Tensor& x_in, const Tensor& y_in, const ForwardContext& ctx) {
  if (!y_in.defined() && fused_applies(layer, x_in, ctx))
    return lora_linear(x_in, layer.weight_out_in(), layer.bias, lora_A, lora_B, scaling, dropout, ctx.training,
                       ctx.generator);
  // The composed path: after another adapter, or for DoRA, lora_bias, mixed-adapter batches, mixed dtypes.
  const Tensor y = y_in.defined() ? y_in : layer.base_forward(x_in);
  std::vector<double> rows;  // mixed-adapter batch: 1 for the examples that use this adapter
  if (!ctx.sample_adapters.empty()) {
    VLP_CHECK(!use_dora, "mixed-adapter batches are not supported with DoRA (adapter '", adapter_name, "')");
    VLP_CHECK(int64_t(ctx.sample_adapters.size()) == x_in.size(0), "sample_adapters has ",
              ctx.sample_adapters.size(), " names for a batch of ", x_in.size(0));
    bool any = false;
    for (const auto& n : ctx.sample_adapters) rows.push_back(n == adapter_name ? 1.0 : 0.0), any = any || n == adapter_name;
    if (!any) return y;
  }
  Tensor x = x_in.dtype() == lora_A.dtype() ? x_in : to(x_in, lora_A.dtype());
  Tensor xd = dropout > 0 && ctx.training ? vlp::dropout(x, dropout, true, ctx.generator) : x;
  Tensor lora = linear(linear(xd, lora_A), lora_B, lora_B_bias);
  Tensor delta;
  if (gate) {
    delta = mul(lora, gate_column(gate->forward(x), 0, lora.dim()));
  } else if (!use_dora) {
    delta = mul(lora, scaling);
  } else {
    // h = b + W0 x + (g - 1) ⊙ (W0 x̃) + g ⊙ (s B A x̃)
    Tensor g = dora_scale(layer);
    Tensor wx = linear(xd, to(layer.weight_out_in(), lora_A.dtype()));
    delta = add(mul(wx, add(g, -1.0)), mul(lora, mul(g, scaling)));
  }
  if (!rows.empty()) {
    Shape s(size_t(x_in.dim()), 1);
    s[0] = x_in.size(0);
    delta = mul(delta, from_vector(rows, s, delta.dtype(), delta.device()));
  }
  if (delta.dtype() != y.dtype()) delta = to(delta, y.dtype());
  return add(y, delta);
}

void LoraLayer::add_gate(int64_t in_features, Generator& gen) {
  VLP_CHECK(!use_dora, "LoRA: use_gating cannot be combined with use_dora (adapter '", adapter_name, "')");
  gate = std::make_unique<TokenGate>(in_features, 1, lora_A.dtype(), lora_A.device(), false, gen);
  register_module("gate", gate.get());
}

void LoraLayer::merge(Linear& layer) {
  VLP_CHECK(!gate, "LoRA adapter '", adapter_name, "' is gated (use_gating): its update depends on the input and "
            "cannot be merged");
  NoGradGuard no_grad;
  Tensor w = layer.weight_out_in();
  if (use_dora) {
    merged_dora_scale = dora_scale(layer).detach();
    Tensor merged = mul(add(to(w, DType::F32), delta_weight()), unsqueeze(merged_dora_scale, 1));
    copy_(w, to(merged, w.dtype()));
  } else {
    add_(w, to(delta_weight(), w.dtype()));
  }
  if (lora_B_bias.defined()) {
    VLP_CHECK(layer.bias.defined(), "LoRA merge: lora_bias needs a base layer with a bias");
    add_(layer.bias, to(lora_B_bias, layer.bias.dtype()), scaling);
  }
}

void LoraLayer::unmerge(Linear& layer) {
  NoGradGuard no_grad;
  Tensor w = layer.weight_out_in();
  if (use_dora) {
    Tensor base = sub(div(to(w, DType::F32), unsqueeze(merged_dora_scale, 1)), delta_weight());
    copy_(w, to(base, w.dtype()));
  } else {
    add_(w, to(delta_weight(), w.dtype()), -1.0);
  }
  if (lora_B_bias.defined()) add_(layer.bias, to(lora_B_bias, layer.bias.dtype()), -scaling);
}

void attach_lora(AttachContext& ctx) {
  const PeftConfig& c = ctx.config;
  auto targets = select_linear_targets(ctx.model, c, default_targets("lora", ctx.backbone));
  const int r0 = c.get_int("r", 8);
  const double alpha0 = c.get_double("lora_alpha", 8);
  const bool rslora = c.get_bool("use_rslora", false), dora = c.get_bool("use_dora", false);
  const bool lora_bias = c.get_bool("lora_bias", false);
  const double dropout = c.get_double("lora_dropout", 0.0);
  VLP_CHECK(dropout >= 0 && dropout < 1, c.source, ": field 'lora_dropout' must be in [0, 1), got ", dropout);
  const bool gating = c.get_bool("use_gating", false);
  std::string init = "true";
  if (c.raw.contains("init_lora_weights") && !c.raw["init_lora_weights"].is_null()) {
    const auto& v = c.raw["init_lora_weights"];
    if (v.is_boolean()) init = v.get<bool>() ? "true" : "false";
    else if (v.is_string()) init = v.get<std::string>();
    else VLP_FAIL(c.source, ": field 'init_lora_weights' must be true, false or a string, got ", v.dump());
  }
  VLP_CHECK(init == "true" || init == "false" || init == "gaussian" || init == "pissa" || init == "olora", c.source,
            ": field 'init_lora_weights' = \"", init, "\" is not supported (true, false, \"gaussian\", \"pissa\", ",
            "\"olora\")");
  for (auto& [name, layer] : targets) {
    const int r = pattern_value(c.rank_pattern, name, r0, "rank_pattern", c.source);
    const double alpha = pattern_value(c.alpha_pattern, name, alpha0, "alpha_pattern", c.source);
    auto a = std::make_shared<LoraLayer>(*layer, ctx.adapter_name, r, alpha, rslora, dropout, lora_bias, dora);
    {
      NoGradGuard no_grad;
      if (init == "true") {
        kaiming_uniform_(a->lora_A, std::sqrt(5.0), &ctx.generator);
      } else if (init == "false") {  // nn.Linear's own init for both: not a no-op
        kaiming_uniform_(a->lora_A, std::sqrt(5.0), &ctx.generator);
        kaiming_uniform_(a->lora_B, std::sqrt(5.0), &ctx.generator);
      } else if (init == "gaussian") {
        normal_(a->lora_A, 0.0, 1.0 / double(r), &ctx.generator);
      } else {
        init_from_decomposition(*a, *layer, init);
      }
      if (dora) {  // m = ||W0 + s B A||_row at init
        Tensor w = add(to(layer->weight_out_in(), DType::F32), a->delta_weight());
        copy_(a->magnitude, sqrt(sum(mul(w, w), {1})));
      }
    }
    if (gating) a->add_gate(layer->in_features(), ctx.generator);
    attach_adapter(*layer, ctx.adapter_name, a);
  }
}

// ---- weighted combination ----

void add_weighted_adapter(Module& model, const std::vector<std::string>& adapters, const std::vector<double>& weights,
                          const std::string& new_name, const std::string& combination_type, int svd_rank) {
  VLP_CHECK(!adapters.empty() && adapters.size() == weights.size(),
            "add_weighted_adapter: one weight per adapter expected (", adapters.size(), " adapters, ", weights.size(),
            " weights)");
  VLP_CHECK(combination_type == "linear" || combination_type == "cat" || combination_type == "svd",
            "add_weighted_adapter: combination_type must be linear, cat or svd, got '", combination_type, "'");
  for (const auto& n : adapters)
    VLP_CHECK(adapter_config(model, n).peft_type == "LORA", "add_weighted_adapter: '", n, "' is not a LoRA adapter");
  // Layers holding any of the adapters, with the LoRA modules found there.
  struct Site {
    std::string name;
    Linear* layer;
    std::vector<std::pair<LoraLayer*, double>> parts;
  };
  std::vector<Site> sites;
  int64_t max_r = 0, sum_r = 0, first_r = -1;
  bool equal_ranks = true;
  for (auto& [name, layer] : linear_sites(model)) {
    Site s{name, layer, {}};
    for (size_t i = 0; i < adapters.size(); ++i)
      for (auto& [an, a] : layer->adapters)
        if (an == adapters[i]) {
          auto* l = dynamic_cast<LoraLayer*>(a.get());
          VLP_CHECK(l && !l->use_dora, "add_weighted_adapter: '", an, "' at ", name, " is not a plain LoRA layer");
          s.parts.push_back({l, weights[i]});
          if (first_r < 0) first_r = l->r;
          equal_ranks = equal_ranks && l->r == first_r;
          max_r = std::max(max_r, l->r);
        }
    if (s.parts.empty()) continue;
    int64_t rs = 0;
    for (auto& p : s.parts) rs += p.first->r;
    sum_r = std::max(sum_r, rs);
    sites.push_back(s);
  }
  VLP_CHECK(!sites.empty(), "add_weighted_adapter: no layer holds any of the adapters");
  int64_t new_r = combination_type == "linear" ? first_r : combination_type == "cat" ? sum_r : (svd_rank > 0 ? svd_rank : max_r);
  VLP_CHECK(combination_type != "linear" || equal_ranks,
            "add_weighted_adapter: 'linear' needs equal ranks; use 'cat' or 'svd'");

  PeftConfig config = adapter_config(model, adapters[0]);
  config.raw["r"] = new_r;
  config.raw["lora_alpha"] = new_r;
  config.raw["rank_pattern"] = nlohmann::json::object();
  config.raw["alpha_pattern"] = nlohmann::json::object();
  config.raw["init_lora_weights"] = true;
  config.rank_pattern.clear();
  config.alpha_pattern.clear();
  std::vector<std::string> names;
  for (auto& s : sites) names.push_back(s.name);
  config.target_modules = names;
  config.target_regex.clear();
  config.target_all_linear = false;
  config.layers_to_transform.clear();
  config.layers_pattern.clear();
  config.exclude_modules.clear();
  config.exclude_regex.clear();
  config.raw["target_modules"] = names;
  config.raw["layers_to_transform"] = nullptr;
  config.raw["layers_pattern"] = nullptr;
  config.raw["exclude_modules"] = nullptr;
  add_adapter(model, config, new_name, 0);

  NoGradGuard no_grad;
  for (auto& s : sites) {
    LoraLayer* target = nullptr;
    for (auto& [an, a] : s.layer->adapters)
      if (an == new_name) target = dynamic_cast<LoraLayer*>(a.get());
    VLP_CHECK(target, "add_weighted_adapter: internal: no new adapter at ", s.name);
    const int64_t out = s.layer->out_features(), in = s.layer->in_features();
    if (combination_type == "linear") {
      Tensor A = zeros({new_r, in}), B = zeros({out, new_r});
      for (auto& [l, w] : s.parts) {
        double ws = w * l->scaling, root = std::sqrt(std::abs(ws));
        add_(A, l->lora_A, ws >= 0 ? root : -root);
        add_(B, l->lora_B, root);
      }
      copy_(target->lora_A, A);
      copy_(target->lora_B, B);
    } else if (combination_type == "cat") {
      std::vector<Tensor> As, Bs;
      int64_t used = 0;
      for (auto& [l, w] : s.parts) As.push_back(mul(l->lora_A, w * l->scaling)), Bs.push_back(l->lora_B), used += l->r;
      if (used < new_r) As.push_back(zeros({new_r - used, in})), Bs.push_back(zeros({out, new_r - used}));
      copy_(target->lora_A, concat(As, 0));
      copy_(target->lora_B, concat(Bs, 1));
    } else {
      Tensor delta = zeros({out, in});
      for (auto& [l, w] : s.parts) add_(delta, l->delta_weight(), w);
      std::vector<double> u, sv, vt;
      svd_thin(to_vector(delta), out, in, u, sv, vt);
      const int64_t k = std::min(out, in), rr = std::min(new_r, k);
      std::vector<double> A(size_t(new_r * in), 0.0), B(size_t(out * new_r), 0.0);
      for (int64_t i = 0; i < rr; ++i) {
        for (int64_t j = 0; j < in; ++j) A[size_t(i * in + j)] = vt[size_t(i * in + j)];
        for (int64_t o = 0; o < out; ++o) B[size_t(o * new_r + i)] = u[size_t(o * k + i)] * sv[size_t(i)];
      }
      copy_(target->lora_A, from_vector(A, {new_r, in}));
      copy_(target->lora_B, from_vector(B, {out, new_r}));
    }
  }
}

void save_adapter_as_plain_lora(Module& model, const std::string& adapter_name, const std::string& dir) {
  PeftConfig config = adapter_config(model, adapter_name);
  VLP_CHECK(config.peft_type == "LORA", "save_adapter_as_plain_lora: '", adapter_name, "' is not a LoRA adapter");
  std::vector<std::pair<LoraLayer*, std::string>> layers;
  bool rewrote = false;
  for (auto& [name, l] : linear_sites(model))
    for (auto& [n, a] : l->adapters)
      if (n == adapter_name)
        if (auto* lora = dynamic_cast<LoraLayer*>(a.get())) {
          layers.push_back({lora, name});
          rewrote = rewrote || lora->init_A.defined();
        }
  if (!rewrote) return save_adapter(model, config, adapter_name, dir);
  VLP_CHECK(config.rank_pattern.empty() && config.alpha_pattern.empty(),
            "save_adapter_as_plain_lora: rank_pattern / alpha_pattern are not supported");
  // Swap in the doubled factors, save, swap back.
  std::vector<std::pair<Tensor, Tensor>> kept;
  {
    NoGradGuard no_grad;
    for (auto& [l, name] : layers) {
      kept.push_back({l->lora_A, l->lora_B});
      // init_A / init_B stay where the initialisation made them (the CPU): bring them to the factors' device.
      l->lora_A = concat({l->lora_A.detach(), convert(l->init_A, l->lora_A.dtype(), l->lora_A.device())}, 0);
      l->lora_B = concat({l->lora_B.detach(), neg(convert(l->init_B, l->lora_B.dtype(), l->lora_B.device()))}, 1);
    }
  }
  PeftConfig plain = config;
  const bool rs = config.get_bool("use_rslora", false);
  plain.raw["r"] = 2 * config.get_int("r", 8);
  if (!rs && config.raw.contains("lora_alpha") && config.raw["lora_alpha"].is_number_integer())
    plain.raw["lora_alpha"] = 2 * config.raw["lora_alpha"].get<int64_t>();
  else
    plain.raw["lora_alpha"] = config.get_double("lora_alpha", 8) * (rs ? std::sqrt(2.0) : 2.0);
  plain.raw["init_lora_weights"] = true;
  try {
    save_adapter(model, plain, adapter_name, dir);
  } catch (...) {
    for (size_t i = 0; i < layers.size(); ++i) layers[i].first->lora_A = kept[i].first, layers[i].first->lora_B = kept[i].second;
    throw;
  }
  for (size_t i = 0; i < layers.size(); ++i) layers[i].first->lora_A = kept[i].first, layers[i].first->lora_B = kept[i].second;
}

// ---- decompositions ----

void svd_thin(const std::vector<double>& a, int64_t m, int64_t n, std::vector<double>& u, std::vector<double>& s,
              std::vector<double>& vt) {
  if (m < n) {  // A = (Aᵀ)ᵀ: decompose the tall transpose and swap the factors
    std::vector<double> at(size_t(m * n));
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) at[size_t(j * m + i)] = a[size_t(i * n + j)];
    std::vector<double> u2, vt2;
    svd_thin(at, n, m, u2, s, vt2);  // Aᵀ = U2 S Vt2: U2 [n, m], Vt2 [m, m]
    u.assign(size_t(m * m), 0.0);
    vt.assign(size_t(m * n), 0.0);
    for (int64_t i = 0; i < m; ++i)
      for (int64_t k = 0; k < m; ++k) u[size_t(i * m + k)] = vt2[size_t(k * m + i)];
    for (int64_t k = 0; k < m; ++k)
      for (int64_t j = 0; j < n; ++j) vt[size_t(k * n + j)] = u2[size_t(j * m + k)];
    return;
  }
  // One-sided Jacobi (Hestenes): rotate column pairs of A until all are orthogonal; then A V = U S.
  const size_t nn = static_cast<size_t>(n), mm = static_cast<size_t>(m);
  std::vector<std::vector<double>> col(nn, std::vector<double>(mm)), v(nn, std::vector<double>(nn, 0.0));
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) col[size_t(j)][size_t(i)] = a[size_t(i * n + j)];
  for (int64_t j = 0; j < n; ++j) v[size_t(j)][size_t(j)] = 1.0;
  auto dot = [](const std::vector<double>& x, const std::vector<double>& y) {
    return std::inner_product(x.begin(), x.end(), y.begin(), 0.0);
  };
  auto rotate = [](std::vector<double>& p, std::vector<double>& q, double c, double sn) {
    for (size_t i = 0; i < p.size(); ++i) {
      double x = p[i], y = q[i];
      p[i] = c * x - sn * y;
      q[i] = sn * x + c * y;
    }
  };
  for (int sweep = 0; sweep < 80; ++sweep) {
    bool rotated = false;
    for (int64_t p = 0; p < n; ++p)
      for (int64_t q = p + 1; q < n; ++q) {
        double alpha = dot(col[size_t(p)], col[size_t(p)]), beta = dot(col[size_t(q)], col[size_t(q)]);
        double gamma = dot(col[size_t(p)], col[size_t(q)]);
        if (gamma == 0.0 || std::abs(gamma) <= 1e-15 * std::sqrt(alpha * beta)) continue;
        rotated = true;
        double zeta = (beta - alpha) / (2.0 * gamma);
        double t = (zeta >= 0 ? 1.0 : -1.0) / (std::abs(zeta) + std::sqrt(1.0 + zeta * zeta));
        double c = 1.0 / std::sqrt(1.0 + t * t), sn = c * t;
        rotate(col[size_t(p)], col[size_t(q)], c, sn);
        rotate(v[size_t(p)], v[size_t(q)], c, sn);
      }
    if (!rotated) break;
  }
  std::vector<double> sigma(nn);
  for (int64_t j = 0; j < n; ++j) sigma[size_t(j)] = std::sqrt(dot(col[size_t(j)], col[size_t(j)]));
  std::vector<int64_t> order(nn);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t x, int64_t y) { return sigma[size_t(x)] > sigma[size_t(y)]; });
  u.assign(size_t(m * n), 0.0);
  s.assign(size_t(n), 0.0);
  vt.assign(size_t(n * n), 0.0);
  for (int64_t k = 0; k < n; ++k) {
    const int64_t j = order[size_t(k)];
    s[size_t(k)] = sigma[size_t(j)];
    for (int64_t i = 0; i < m; ++i) u[size_t(i * n + k)] = sigma[size_t(j)] > 0 ? col[size_t(j)][size_t(i)] / sigma[size_t(j)] : 0.0;
    for (int64_t i = 0; i < n; ++i) vt[size_t(k * n + i)] = v[size_t(j)][size_t(i)];
  }
}

void qr_reduced(const std::vector<double>& a, int64_t m, int64_t n, std::vector<double>& q, std::vector<double>& r) {
  const int64_t k = std::min(m, n);
  q.assign(size_t(m * k), 0.0);
  r.assign(size_t(k * n), 0.0);
  // Modified Gram-Schmidt on the first k columns, then R = Qᵀ A (upper triangular).
  std::vector<std::vector<double>> qs;
  for (int64_t j = 0; j < k; ++j) {
    std::vector<double> v(static_cast<size_t>(m));
    for (int64_t i = 0; i < m; ++i) v[size_t(i)] = a[size_t(i * n + j)];
    for (const auto& qi : qs) {
      double d = std::inner_product(v.begin(), v.end(), qi.begin(), 0.0);
      for (int64_t i = 0; i < m; ++i) v[size_t(i)] -= d * qi[size_t(i)];
    }
    double norm = std::sqrt(std::inner_product(v.begin(), v.end(), v.begin(), 0.0));
    for (auto& x : v) x = norm > 0 ? x / norm : 0.0;
    qs.push_back(v);
  }
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < k; ++j) q[size_t(i * k + j)] = qs[size_t(j)][size_t(i)];
  for (int64_t i = 0; i < k; ++i)
    for (int64_t j = i; j < n; ++j) {
      double d = 0;
      for (int64_t t = 0; t < m; ++t) d += qs[size_t(i)][size_t(t)] * a[size_t(t * n + j)];
      r[size_t(i * n + j)] = d;
    }
}

}  // namespace vlp::peft
