// AdaLoRA layers, orthogonal regularisation and the rank allocator (spec/peft.md §4.2).
#include "models/peft/adalora.h"

#include <algorithm>
#include <cmath>

namespace vlp::peft {

namespace {

struct AdaLoraRef {
  std::string path;  // the layer's module path
  Linear* layer;
  AdaLoraLayer* a;
};

std::vector<AdaLoraRef> adalora_layers(Module& model, const std::string& adapter_name) {
  std::vector<AdaLoraRef> out;
  for (auto& [path, l] : linear_sites(model))
    for (auto& [n, a] : l->adapters)
      if (n == adapter_name)
        if (auto* ad = dynamic_cast<AdaLoraLayer*>(a.get())) out.push_back({path, l, ad});
  VLP_CHECK(!out.empty(), "AdaLoRA: adapter '", adapter_name, "' has no AdaLoRA layer in this model");
  return out;
}

std::vector<bool> mask_from_json(const nlohmann::json& v, const std::string& key, const std::string& source) {
  VLP_CHECK(v.is_array(), source, ": field 'rank_pattern' entry '", key, "' must be a list of booleans");
  std::vector<bool> m;
  for (const auto& e : v) {
    VLP_CHECK(e.is_boolean(), source, ": field 'rank_pattern' entry '", key, "' must be a list of booleans");
    m.push_back(e.get<bool>());
  }
  return m;
}

}  // namespace

AdaLoraLayer::AdaLoraLayer(const Linear& layer, int64_t r_, double ranknum_, double scaling_, double dropout_)
    : r(r_), ranknum(ranknum_), scaling(scaling_), dropout(dropout_) {
  lora_A = zeros({r, layer.in_features()});
  lora_E = zeros({r, 1});
  lora_B = zeros({layer.out_features(), r});
  register_parameter("lora_A", &lora_A);
  register_parameter("lora_E", &lora_E);
  register_parameter("lora_B", &lora_B);
}

Tensor AdaLoraLayer::delta_weight() const {
  NoGradGuard no_grad;
  if (r == 0) return zeros({lora_B.size(0), lora_A.size(1)}, lora_B.dtype(), lora_B.device());
  return mul(matmul(lora_B, mul(lora_A, lora_E)), scaling / (ranknum + 1e-5));
}

Tensor AdaLoraLayer::forward(const Linear& layer, const Tensor& x_in, const Tensor& y, const ForwardContext& ctx) {
  VLP_CHECK(ctx.sample_adapters.empty(), "AdaLoRA does not support mixed-adapter batches (sample_adapters)");
  if (r == 0) return y;
  Tensor x = x_in.dtype() == lora_A.dtype() ? x_in : to(x_in, lora_A.dtype());
  Tensor xd = dropout > 0 && ctx.training ? vlp::dropout(x, dropout, true, ctx.generator) : x;
  Tensor delta = mul(linear(linear(xd, mul(lora_A, lora_E)), lora_B), scaling / (ranknum + 1e-5));
  if (delta.dtype() != y.dtype()) delta = to(delta, y.dtype());
  return add(y, delta);
}

void AdaLoraLayer::merge(Linear& layer) {
  NoGradGuard no_grad;
  Tensor w = layer.weight_out_in();
  add_(w, to(delta_weight(), w.dtype()));
}

void AdaLoraLayer::unmerge(Linear& layer) {
  NoGradGuard no_grad;
  Tensor w = layer.weight_out_in();
  add_(w, to(delta_weight(), w.dtype()), -1.0);
}

void attach_adalora(AttachContext& ctx) {
  const PeftConfig& c = ctx.config;
  const int init_r = c.get_int("init_r", 12);
  const int total_step = c.get_int("total_step", 0);
  const int tinit = c.get_int("tinit", 0), tfinal = c.get_int("tfinal", 0);
  VLP_CHECK(total_step > 0, c.source, ": field 'total_step' is required by AdaLoRA and must be > 0");
  VLP_CHECK(tinit < total_step - tfinal, c.source, ": fields 'tinit' (", tinit, ") and 'tfinal' (", tfinal,
            ") leave no budgeting phase before 'total_step' (", total_step, ")");
  VLP_CHECK(!c.get_bool("use_dora", false), c.source, ": AdaLoRA does not support use_dora");
  const double alpha = c.get_double("lora_alpha", 8);
  const double scaling = alpha > 0 ? alpha : double(init_r);
  const double dropout = c.get_double("lora_dropout", 0.0);
  const bool init = !c.raw.contains("init_lora_weights") || c.raw["init_lora_weights"].is_null() ||
                    !c.raw["init_lora_weights"].is_boolean() || c.raw["init_lora_weights"].get<bool>();
  nlohmann::json pattern = c.raw.contains("rank_pattern") && c.raw["rank_pattern"].is_object() ? c.raw["rank_pattern"]
                                                                                                : nlohmann::json::object();
  auto targets = select_linear_targets(ctx.model, c, default_targets("adalora", ctx.backbone));
  for (auto& [name, layer] : targets) {
    int64_t r = init_r;
    const std::string key = name + ".lora_E";
    if (pattern.contains(key)) {  // a saved adapter: only the kept ranks are stored
      auto mask = mask_from_json(pattern[key], key, c.source);
      VLP_CHECK(int64_t(mask.size()) == init_r, c.source, ": field 'rank_pattern' entry '", key, "' has ", mask.size(),
                " entries, init_r is ", init_r);
      r = std::count(mask.begin(), mask.end(), true);
    }
    auto a = std::make_shared<AdaLoraLayer>(*layer, r, double(init_r), scaling, dropout);
    NoGradGuard no_grad;
    if (init) {
      normal_(a->lora_A, 0.0, 0.02, &ctx.generator);
      normal_(a->lora_B, 0.0, 0.02, &ctx.generator);
    } else {
      normal_(a->lora_A, 0.0, 1.0, &ctx.generator);
      normal_(a->lora_E, 0.0, 1.0, &ctx.generator);
      normal_(a->lora_B, 0.0, 1.0, &ctx.generator);
    }
    attach_adapter(*layer, ctx.adapter_name, a);
  }
}

void adalora_prepare_save(Module& model, const std::string& adapter_name, nlohmann::json& config,
                          std::vector<std::pair<std::string, Tensor>>& tensors) {
  // Layers the allocator masked: slice A rows, E rows and B columns to the kept ranks.
  for (auto& ref : adalora_layers(model, adapter_name)) {
    const auto& kept = ref.a->kept;
    if (kept.empty() || std::all_of(kept.begin(), kept.end(), [](bool b) { return b; })) continue;
    std::vector<int64_t> idx;
    for (size_t i = 0; i < kept.size(); ++i)
      if (kept[i]) idx.push_back(int64_t(i));
    const std::string prefix = "base_model.model." + ref.path + ".";
    auto keep = [&](const Tensor& t, int64_t dim) {
      NoGradGuard no_grad;
      if (idx.empty()) {  // every triplet pruned: a zero-size tensor, as PEFT writes it
        Shape s = t.shape();
        s[size_t(dim)] = 0;
        return zeros(s, t.dtype(), t.device());
      }
      return index_select(t.detach(), dim, from_data(idx, {int64_t(idx.size())}, t.device()));
    };
    for (auto& [k, t] : tensors) {
      if (k == prefix + "lora_A" || k == prefix + "lora_E") t = keep(t, 0);
      else if (k == prefix + "lora_B") t = keep(t, 1);
    }
  }
  (void)config;  // rank_pattern is kept current in the adapter's config by the allocator
}

Tensor adalora_orthogonal_loss(Module& model, const std::string& adapter_name) {
  const PeftConfig& c = adapter_config(model, adapter_name);
  const double weight = c.get_double("orth_reg_weight", 0.5);
  VLP_CHECK(weight >= 0, c.source, ": field 'orth_reg_weight' must be >= 0");
  Tensor total;
  int64_t n = 0;
  for (auto& ref : adalora_layers(model, adapter_name)) {
    for (int which = 0; which < 2; ++which) {
      const Tensor& p = which == 0 ? ref.a->lora_A : ref.a->lora_B;
      Tensor cov = which == 0 ? matmul(p, transpose(p, 0, 1)) : matmul(transpose(p, 0, 1), p);
      const int64_t k = cov.size(0);
      std::vector<double> eye(size_t(k * k), 0.0);
      for (int64_t i = 0; i < k; ++i) eye[size_t(i * k + i)] = 1.0;
      Tensor d = sub(cov, from_vector(eye, {k, k}, cov.dtype(), cov.device()));
      Tensor fro = sqrt(sum(mul(d, d)));
      total = total.defined() ? add(total, fro) : fro;
      ++n;
    }
  }
  return mul(total, weight / double(n));
}

// ---- rank allocation ----

AdaLoraAllocator::AdaLoraAllocator(Module& model, const std::string& name) : adapter_name(name) {
  const PeftConfig& c = adapter_config(model, name);
  auto layers = adalora_layers(model, name);
  for (auto& ref : layers) init_budget += ref.a->r;
  target_budget = int64_t(c.get_int("target_r", 8)) * int64_t(layers.size());
}

std::pair<int64_t, bool> AdaLoraAllocator::budget_schedule(const PeftConfig& c, int64_t step) const {
  const int64_t tinit = c.get_int("tinit", 0), tfinal = c.get_int("tfinal", 0), total = c.get_int("total_step", 0);
  if (step <= tinit) return {init_budget, false};
  if (step > total - tfinal) return {target_budget, true};
  const double mul_coeff = 1.0 - double(step - tinit) / double(total - tfinal - tinit);
  const int64_t budget = int64_t(double(init_budget - target_budget) * std::pow(mul_coeff, 3) + double(target_budget));
  return {budget, step % c.get_int("deltaT", 1) == 0};
}

int64_t AdaLoraAllocator::update_and_allocate(Module& model, int64_t step) {
  PeftConfig c = adapter_config(model, adapter_name);
  const int64_t total = c.get_int("total_step", 0), tfinal = c.get_int("tfinal", 0);
  const double beta1 = c.get_double("beta1", 0.85), beta2 = c.get_double("beta2", 0.85);
  auto layers = adalora_layers(model, adapter_name);
  NoGradGuard no_grad;
  auto apply_masks = [&](const std::map<std::string, std::vector<bool>>& masks) {
    nlohmann::json pattern = nlohmann::json::object();
    for (auto& ref : layers) {
      const std::string key = ref.path + ".lora_E";
      auto it = masks.find(key);
      VLP_CHECK(it != masks.end() && int64_t(it->second.size()) == ref.a->r, "AdaLoRA: rank_pattern has no mask for ", key);
      std::vector<double> keep(it->second.begin(), it->second.end());
      const Tensor& e = ref.a->lora_E;
      copy_(e, mul(e, from_vector(keep, {ref.a->r, 1}, e.dtype(), e.device())));
      ref.a->kept = it->second;
      pattern[key] = it->second;
    }
    c.raw["rank_pattern"] = pattern;
    set_adapter_config(model, adapter_name, c);
  };
  auto score = [&](const std::string& n) {
    std::vector<double> s = exp_avg_ipt.at(n);
    const auto& u = exp_avg_unc.at(n);
    for (size_t i = 0; i < s.size(); ++i) s[i] *= u[i];
    return s;
  };
  auto mask_to_budget = [&](int64_t budget) {
    std::vector<std::vector<double>> triplets;
    std::vector<double> all;
    for (auto& ref : layers) {
      const int64_t r = ref.a->r, in = ref.a->lora_A.size(1), out = ref.a->lora_B.size(0);
      auto sA = score(ref.path + ".lora_A"), sE = score(ref.path + ".lora_E"), sB = score(ref.path + ".lora_B");
      std::vector<double> t(static_cast<size_t>(r));
      for (int64_t i = 0; i < r; ++i) {
        double a = 0, b = 0;
        for (int64_t j = 0; j < in; ++j) a += sA[size_t(i * in + j)];
        for (int64_t o = 0; o < out; ++o) b += sB[size_t(o * r + i)];
        t[size_t(i)] = sE[size_t(i)] + a / double(in) + b / double(out);
        all.push_back(t[size_t(i)]);
      }
      triplets.push_back(t);
    }
    const int64_t k = init_budget - budget;  // the k-th smallest score is the threshold
    std::map<std::string, std::vector<bool>> masks;
    double threshold = -INFINITY;
    if (k >= 1) {
      std::vector<double> sorted = all;
      std::nth_element(sorted.begin(), sorted.begin() + (k - 1), sorted.end());
      threshold = sorted[size_t(k - 1)];
    }
    for (size_t l = 0; l < layers.size(); ++l) {
      std::vector<bool> m;
      for (double v : triplets[l]) m.push_back(!(k >= 1 && v <= threshold));
      masks[layers[l].path + ".lora_E"] = m;
    }
    apply_masks(masks);
  };
  auto update_ipt = [&] {
    for (auto& ref : layers)
      for (auto& [suffix, p] : std::vector<std::pair<std::string, Tensor>>{
               {".lora_A", ref.a->lora_A}, {".lora_E", ref.a->lora_E}, {".lora_B", ref.a->lora_B}}) {
        const std::string n = ref.path + suffix;
        VLP_CHECK(p.grad().defined(), "AdaLoRA: ", n, " has no gradient; call update_and_allocate after backward");
        std::vector<double> v = to_vector(p), g = to_vector(p.grad());
        auto& ipt = exp_avg_ipt[n];
        auto& unc = exp_avg_unc[n];
        ipt.resize(v.size(), 0.0);
        unc.resize(v.size(), 0.0);
        for (size_t i = 0; i < v.size(); ++i) {
          const double cur = std::abs(v[i] * g[i]);
          ipt[i] = beta1 * ipt[i] + (1 - beta1) * cur;
          unc[i] = beta2 * unc[i] + (1 - beta2) * std::abs(cur - ipt[i]);
        }
      }
  };
  auto [budget, mask_now] = budget_schedule(c, step);
  if (step < total - tfinal) {
    update_ipt();
    if (mask_now) mask_to_budget(budget);
  } else if (step == total - tfinal) {
    mask_to_budget(budget);
    exp_avg_ipt.clear();
    exp_avg_unc.clear();
  } else {
    std::map<std::string, std::vector<bool>> masks;
    VLP_CHECK(c.raw.contains("rank_pattern") && c.raw["rank_pattern"].is_object(),
              "AdaLoRA: no rank_pattern to keep after the budgeting phase");
    for (auto& [k, v] : c.raw["rank_pattern"].items()) masks[k] = mask_from_json(v, k, c.source);
    apply_masks(masks);
  }
  return budget;
}

}  // namespace vlp::peft
