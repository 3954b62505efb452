// Bottleneck adapters at sublayer sites: forward, initialisation, site selection and the VLPEFT_ADAPTER
// attach function (see adapter.h for the formulas and config fields).
#include "models/peft/adapter.h"

#include <cmath>
#include <tuple>

#include "models/peft/routing.h"
#include "runtime/rng.h"

namespace vlp::peft {

DenseProjection::DenseProjection(int64_t in, int64_t out, bool with_bias, DType dtype) {
  weight = zeros({out, in}, dtype);
  register_parameter("weight", &weight);
  if (with_bias) {
    bias = zeros({out}, dtype);
    register_parameter("bias", &bias);
  }
}

ProjectionFactory dense_projections(DType dtype) {
  return [dtype](int64_t in, int64_t out, const std::string&) -> std::unique_ptr<Projection> {
    return std::make_unique<DenseProjection>(in, out, true, dtype);
  };
}

BottleneckAdapter::BottleneckAdapter(const BottleneckOptions& o, const ProjectionFactory& make, DType dtype)
    : options(o) {
  VLP_CHECK(o.d_model > 0 && o.bottleneck > 0, "bottleneck adapter: d_model and bottleneck must be positive, got ",
            o.d_model, " and ", o.bottleneck);
  VLP_CHECK(o.placement == "houlsby" || o.placement == "pfeiffer" || o.placement == "parallel",
            "bottleneck adapter: unknown placement \"", o.placement, "\" (houlsby, pfeiffer, parallel)");
  VLP_CHECK(o.sharing == "single" || o.sharing == "multiple" || o.sharing == "half_shared",
            "bottleneck adapter: unknown sharing \"", o.sharing, "\" (single, multiple, half_shared)");
  VLP_CHECK(o.sharing == "single" || !o.tasks.empty(), "bottleneck adapter: sharing \"", o.sharing,
            "\" needs a non-empty task list");
  act = activation_by_name(o.non_linearity, "non_linearity");
  auto add = [&](const std::string& name, int64_t in, int64_t out, const std::string& role) {
    owned_.push_back(make(in, out, role));
    register_module(name, owned_.back().get());
    return owned_.back().get();
  };
  // Registration order = state-dict order: per slot down then up, shared modules first.
  if (o.sharing == "single") {
    down.push_back(add("down", o.d_model, o.bottleneck, "down"));
    up.push_back(add("up", o.bottleneck, o.d_model, "up"));
  } else if (o.sharing == "half_shared") {
    up.push_back(add("up", o.bottleneck, o.d_model, "up"));
    for (const auto& t : o.tasks) down.push_back(add(t + ".down", o.d_model, o.bottleneck, "down"));
  } else {
    for (const auto& t : o.tasks) {
      down.push_back(add(t + ".down", o.d_model, o.bottleneck, "down"));
      up.push_back(add(t + ".up", o.bottleneck, o.d_model, "up"));
    }
  }
  if (o.learned_scaling) {
    scale = full({1}, o.scaling, dtype);
    register_parameter("scale", &scale);
  }
}

int BottleneckAdapter::slot(const ForwardContext& ctx) const {
  if (options.sharing == "single") return 0;
  VLP_CHECK(ctx.task >= 0 && ctx.task < int(options.tasks.size()), "bottleneck adapter (", options.sharing,
            "): ForwardContext::task = ", ctx.task, " but the adapter has ", options.tasks.size(), " tasks");
  return ctx.task;
}

Tensor BottleneckAdapter::delta(const Tensor& input, const Tensor& output, const ForwardContext& ctx,
                                const Tensor& residual) const {
  const int s = slot(ctx);
  // The block input x: in pre-LN stacks the stream before the norm, as adapter-hub/adapters reads it (its
  // residual_input), not the normed value the sublayer itself read.
  const Tensor& x = residual.defined() ? residual : input;
  Tensor z;
  if (options.placement == "parallel") {
    z = x;
  } else if (options.placement == "pfeiffer") {
    z = block_norm ? block_norm->forward(output + x) : output + x;
  } else {
    z = output;
  }
  const Projection& d = *down[size_t(s)];
  Tensor h = d.forward(z);
  if (options.routing != 0) {
    Tensor xv = routing_visual(ctx, options.visual_pool, h.dtype(), "routed adapter");
    h = route(options.routing, h, d.forward(xv), options.routing_reshape_compat);
  }
  Tensor u = up[up.size() == 1 ? 0 : size_t(s)]->forward(act(h));
  if (options.learned_scaling) u = u * scale;
  else if (options.scaling != 1.0) u = u * options.scaling;
  return gate ? u * gate_column(gate->forward(z), 0, u.dim()) : u;
}

void BottleneckAdapter::add_gate(DType dtype, Generator& gen) {
  gate = std::make_unique<TokenGate>(options.d_model, 1, dtype, Device::cpu(), true, gen);
  register_module("gate", gate.get());
}

void truncated_normal_(const Tensor& t, double std, double lo, double hi, Generator& gen) {
  Tensor draw = empty(t.shape(), DType::F64);
  normal_(draw, 0.0, std, &gen);
  double* p = draw.data<double>();
  const int64_t n = draw.numel();
  // Redraw out-of-range elements in rounds; with ±2σ bounds about 5% redraw per round.
  for (int round = 0; round < 100; ++round) {
    int64_t bad = 0;
    for (int64_t i = 0; i < n; ++i) bad += (p[i] < lo || p[i] > hi);
    if (bad == 0) break;
    Tensor fresh = empty({bad}, DType::F64);
    normal_(fresh, 0.0, std, &gen);
    const double* f = fresh.data<double>();
    for (int64_t i = 0, j = 0; i < n; ++i)
      if (p[i] < lo || p[i] > hi) p[i] = f[j++];
  }
  for (int64_t i = 0; i < n; ++i) p[i] = std::min(hi, std::max(lo, p[i]));
  copy_(t, convert(draw, t.dtype()));
}

void init_bottleneck(BottleneckAdapter& adapter, const std::string& scheme, const std::string& backbone,
                     Generator& gen) {
  // A projection's dense parts: itself, or the dense projections it holds (AdaMix's experts), in order.
  auto dense_parts = [](Projection* p) {
    std::vector<DenseProjection*> parts;
    if (auto* d = dynamic_cast<DenseProjection*>(p)) return std::vector<DenseProjection*>{d};
    for (auto& [name, m] : p->named_modules())
      if (auto* d = dynamic_cast<DenseProjection*>(m)) parts.push_back(d);
    VLP_CHECK(!parts.empty(), "init_bottleneck: only dense projections are initialised here");
    return parts;
  };
  auto linear_default = [&](DenseProjection* d) {
    kaiming_uniform_(d->weight, std::sqrt(5.0), &gen);
    if (d->bias.defined()) {
      double bound = 1.0 / std::sqrt(double(d->in_features()));
      uniform_(d->bias, -bound, bound, &gen);
    }
  };
  auto normal_zero_bias = [&](DenseProjection* d, double std) {
    normal_(d->weight, 0.0, std, &gen);
    if (d->bias.defined()) zeros_(d->bias);
  };
  std::vector<DenseProjection*> downs, ups;
  for (auto* p : adapter.down)
    for (auto* d : dense_parts(p)) downs.push_back(d);
  for (auto* p : adapter.up)
    for (auto* d : dense_parts(p)) ups.push_back(d);
  // Every down-projection, then every up-projection (one fixed order of draws per sharing mode).
  auto each = [&](auto&& fn_down, auto&& fn_up) {
    for (auto* d : downs) fn_down(d);
    for (auto* u : ups) fn_up(u);
  };
  if (scheme == "vl_adapter" || scheme == "zero_up") {
    auto vl = [&](DenseProjection* d) {
      if (backbone == "bart") normal_zero_bias(d, 0.02);
      else linear_default(d);
    };
    each(vl, vl);
    if (scheme == "zero_up")
      for (auto* u : ups) {
        zeros_(u->weight);
        if (u->bias.defined()) zeros_(u->bias);
      }
  } else if (scheme == "bert") {
    auto f = [&](DenseProjection* d) { normal_zero_bias(d, 0.02); };
    each(f, f);
  } else if (scheme == "mam_adapter") {
    each(
        [&](DenseProjection* d) {
          kaiming_uniform_(d->weight, std::sqrt(5.0), &gen);
          if (d->bias.defined()) zeros_(d->bias);
        },
        [&](DenseProjection* u) {
          zeros_(u->weight);
          if (u->bias.defined()) zeros_(u->bias);
        });
  } else if (scheme == "houlsby") {
    // Weights only: adapters (and Houlsby's code) start the biases at zero.
    auto f = [&](DenseProjection* d) {
      truncated_normal_(d->weight, 0.01, -0.02, 0.02, gen);
      if (d->bias.defined()) zeros_(d->bias);
    };
    each(f, f);
  } else {
    VLP_FAIL("adapter init_weights: unknown scheme \"", scheme, "\" (vl_adapter, zero_up, bert, mam_adapter, houlsby)");
  }
}

// ---- sites ----

namespace {

std::vector<std::string> split_dots(const std::string& s) {
  std::vector<std::string> out;
  size_t start = 0;
  while (true) {
    size_t p = s.find('.', start);
    out.push_back(s.substr(start, p == std::string::npos ? std::string::npos : p - start));
    if (p == std::string::npos) break;
    start = p + 1;
  }
  return out;
}

bool all_digits(const std::string& s) {
  if (s.empty()) return false;
  for (char c : s)
    if (c < '0' || c > '9') return false;
  return true;
}

// Width of the sublayer output and the backbone dtype: the first norm weight inside the site's block.
std::pair<int64_t, DType> block_width(Module& block) {
  for (const auto& [name, p] : block.named_parameters()) {
    if (name.find("adapters.") != std::string::npos) continue;
    bool is_norm = name.find("norm") != std::string::npos || name.rfind("ln_", 0) == 0;
    if (is_norm && p.dim() == 1) return {p.size(0), p.dtype()};
  }
  return {0, DType::F32};
}

}  // namespace

std::vector<SublayerTarget> sublayer_targets(AttachContext& ctx, const std::vector<std::string>& default_targets) {
  std::vector<SublayerTarget> out;
  for (const auto& [name, site] : sublayer_sites(ctx.model)) {
    if (!name_matches_targets(ctx.config, name, default_targets)) continue;
    SublayerTarget t;
    t.name = name;
    t.site = site;
    auto parts = split_dots(name);
    const std::string& last = parts.back();
    VLP_CHECK(last.size() > 5 && last.substr(last.size() - 5) == "_site", "sublayer site '", name,
              "' does not end in _site");
    t.block = last.substr(0, last.size() - 5);
    for (size_t i = 0; i + 1 < parts.size(); ++i) {
      if (parts[i] == "encoder" || parts[i] == "decoder") t.stack = parts[i];
      if (all_digits(parts[i])) t.layer = std::stoi(parts[i]);
    }
    const std::string parent = name.substr(0, name.size() - last.size() - 1);
    Module* block = ctx.model.find_module(parent);
    VLP_CHECK(block != nullptr, "sublayer site '", name, "': no parent module '", parent, "'");
    std::tie(t.d_model, t.dtype) = block_width(*block);
    if (ctx.backbone == "bart") {
      const char* norm = t.block == "sa" ? "self_attn_layer_norm" : t.block == "ca" ? "encoder_attn_layer_norm"
                                                                                   : "final_layer_norm";
      t.block_norm = dynamic_cast<const LayerNorm*>(ctx.model.find_module(parent + "." + norm));
    }
    if (t.d_model == 0) t.d_model = ctx.config.get_int("d_model", 0);
    VLP_CHECK(t.d_model > 0, ctx.config.source, ": cannot tell the width of site '", name,
              "'; give \"d_model\" in the config");
    out.push_back(std::move(t));
  }
  VLP_CHECK(!out.empty(), ctx.config.source, ": ", ctx.config.peft_type, " matched no sublayer site of this ",
            ctx.backbone.empty() ? std::string("model") : ctx.backbone, " model");
  return out;
}

std::vector<std::string> config_tasks(const PeftConfig& config, bool required) {
  std::vector<std::string> tasks;
  if (config.raw.contains("tasks") && !config.raw["tasks"].is_null()) {
    const auto& j = config.raw["tasks"];
    VLP_CHECK(j.is_array(), config.source, ": field 'tasks' must be a list of task names");
    for (const auto& t : j) {
      VLP_CHECK(t.is_string() && !t.get<std::string>().empty(), config.source,
                ": field 'tasks' must hold non-empty strings");
      VLP_CHECK(t.get<std::string>().find('.') == std::string::npos, config.source, ": task name '",
                t.get<std::string>(), "' may not contain '.'");
      tasks.push_back(t.get<std::string>());
    }
  }
  VLP_CHECK(!required || !tasks.empty(), config.source, ": this sharing mode needs field 'tasks' (task names)");
  return tasks;
}

BottleneckOptions bottleneck_options(const PeftConfig& config, int64_t d_model) {
  BottleneckOptions o;
  const std::string placement = config.get_string("placement", "vl_adapter");
  int rf_default = 8;
  std::string act_default = "gelu_new";
  double scaling_default = 1.0;
  if (placement == "vl_adapter" || placement == "houlsby") {
    o.placement = "houlsby";
    if (placement == "houlsby") rf_default = 16, act_default = "swish";
  } else if (placement == "pfeiffer") {
    o.placement = "pfeiffer", rf_default = 16, act_default = "relu";
  } else if (placement == "parallel" || placement == "scaled_parallel") {
    o.placement = "parallel", rf_default = 2, act_default = "relu";
    scaling_default = placement == "parallel" ? 4.0 : 1.0;
    o.learned_scaling = placement == "scaled_parallel";
  } else {
    VLP_FAIL(config.source, ": field 'placement' is \"", placement,
             "\" (expected vl_adapter, houlsby, pfeiffer, parallel, scaled_parallel)");
  }
  o.d_model = d_model;
  const int rf = config.get_int("reduction_factor", rf_default);
  VLP_CHECK(rf > 0, config.source, ": field 'reduction_factor' must be positive");
  o.bottleneck = config.get_int("bottleneck_dim", int(d_model / rf));
  VLP_CHECK(o.bottleneck > 0, config.source, ": bottleneck width ", o.bottleneck, " for d_model ", d_model);
  o.non_linearity = config.get_string("non_linearity", act_default);
  activation_by_name(o.non_linearity, config.source + ": non_linearity");
  o.scaling = config.get_double("scaling", scaling_default);
  o.skip = config.get_bool("skip", true);
  o.sharing = config.get_string("sharing", "single");
  o.tasks = config_tasks(config, o.sharing != "single");
  o.use_gating = config.get_bool("use_gating", false);
  return o;
}

// VL-Adapter adapts every sublayer; Houlsby the self-attention and feed-forward ones, as adapters'
// DoubleSeqBnConfig (mh_adapter, output_adapter; cross_adapter false); the others the feed-forward only.
static std::vector<std::string> default_adapter_sites(const PeftConfig& config) {
  const std::string placement = config.get_string("placement", "vl_adapter");
  if (placement == "vl_adapter") return {"sa_site", "ca_site", "ff_site"};
  if (placement == "houlsby") return {"sa_site", "ff_site"};
  return {"ff_site"};
}

std::vector<std::shared_ptr<BottleneckAdapter>> attach_bottlenecks(AttachContext& ctx, const BottleneckMaker& make) {
  const std::string placement = ctx.config.get_string("placement", "vl_adapter");
  const bool before_dropout = ctx.config.get_bool("before_dropout", placement == "vl_adapter");
  const std::string init_default = placement == "vl_adapter"                          ? "vl_adapter"
                                   : placement == "parallel" || placement == "scaled_parallel" ? "mam_adapter"
                                                                                             : "bert";
  const std::string init = ctx.config.get_string("init_weights", init_default);
  std::vector<std::shared_ptr<BottleneckAdapter>> out;
  for (const auto& t : sublayer_targets(ctx, default_adapter_sites(ctx.config))) {
    std::shared_ptr<BottleneckAdapter> a = make(bottleneck_options(ctx.config, t.d_model), t.dtype);
    if (a->options.placement == "pfeiffer") a->block_norm = t.block_norm;
    init_bottleneck(*a, init, ctx.backbone, ctx.generator);
    if (a->options.use_gating) a->add_gate(t.dtype, ctx.generator);
    t.site->before_dropout = before_dropout;
    attach_adapter(*t.site, ctx.adapter_name, a);
    out.push_back(a);
  }
  return out;
}

void attach_bottleneck_adapter(AttachContext& ctx) {
  attach_bottlenecks(ctx, [](const BottleneckOptions& o, DType dtype) {
    return std::make_shared<BottleneckAdapter>(o, dense_projections(dtype), dtype);
  });
}

}  // namespace vlp::peft
