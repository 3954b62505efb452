// Routing functions, routed LoRA and the routed-adapter attach function (see routing.h).
#include "models/peft/routing.h"

#include <cmath>
#include <map>

#include "models/attention.h"
#include "runtime/rng.h"

namespace vlp::peft {

Tensor route(int function, const Tensor& x_t, const Tensor& x_v, bool reshape_compat) {
  VLP_CHECK(x_t.dim() == 3 && x_v.dim() == 3, "routing function: x_t and x_v must be [B, T, r] and [B, N_v, r], got ",
            shape_str(x_t.shape()), " and ", shape_str(x_v.shape()));
  VLP_CHECK(x_t.size(0) == x_v.size(0) && x_t.size(2) == x_v.size(2), "routing function: x_t ",
            shape_str(x_t.shape()), " and x_v ", shape_str(x_v.shape()), " differ in batch or rank");
  const int64_t B = x_v.size(0), Nv = x_v.size(1), r = x_v.size(2);
  auto need_one = [&](const char* name) {
    VLP_CHECK(Nv == 1, "routing function ", function, " (", name, ") needs one visual vector (N_v = 1), got N_v = ",
              Nv, "; use visual_pool \"mean\" or function 3");
  };
  switch (function) {
    case 1: need_one("element-wise multiply"); return x_t * x_v;
    case 2: need_one("element-wise add"); return x_t + x_v;
    case 3: {
      Tensor x_v_t = reshape_compat ? reshape(x_v, {B, r, Nv}) : transpose(x_v, 1, 2);
      return matmul(matmul(x_t, x_v_t), x_v);
    }
    case 4: need_one("matrix multiply 2"); return sum(x_t, {-1}, true) * x_v;
    default: VLP_FAIL("routing function ", function, " does not exist (1..4)");
  }
}

Tensor routing_visual(const ForwardContext& ctx, const std::string& visual_pool, DType dtype, const char* who) {
  VLP_CHECK(ctx.visual.defined(), who, ": ForwardContext::visual is not set (the routing needs the visual "
            "representation x_R [B, N_v, d] or [B, d])");
  Tensor v = ctx.visual;
  VLP_CHECK(v.dim() == 2 || v.dim() == 3, who, ": ForwardContext::visual must be [B, d] or [B, N_v, d], got ",
            shape_str(v.shape()));
  if (v.dim() == 2) v = unsqueeze(v, 1);
  if (visual_pool == "mean") v = mean(v, {1}, true);
  else VLP_CHECK(visual_pool == "none", who, ": visual_pool \"", visual_pool, "\" (none, mean)");
  return v.dtype() == dtype ? v : to(v, dtype);
}

RoutedLoraSlot::RoutedLoraSlot(int64_t in, int64_t a_rows, int64_t b_rows, int64_t r, DType dtype)
    : lora_A(in, a_rows, false, dtype), lora_B(r, b_rows, false, dtype) {
  register_module("lora_A", &lora_A);
  register_module("lora_B", &lora_B);
}

RoutedLora::RoutedLora(const RoutedLoraOptions& o, int64_t in, int64_t out, DType dtype) : options(o) {
  VLP_CHECK(o.r > 0, "routed LoRA: r must be positive, got ", o.r);
  int64_t enabled = 1, out_rows = out;
  if (!o.groups.empty()) {
    enabled = 0;
    for (bool g : o.groups) enabled += g;
    VLP_CHECK(enabled > 0, "routed LoRA: qkv_groups enables no group");
    VLP_CHECK(out % int64_t(o.groups.size()) == 0, "routed LoRA: output width ", out, " does not split into ",
              o.groups.size(), " qkv_groups");
    out_rows = enabled * (out / int64_t(o.groups.size()));
  }
  VLP_CHECK(o.routing >= 0 && o.routing <= 4, "routed LoRA: routing_function ", o.routing, " (0..4)");
  VLP_CHECK(o.sharing == "single" || o.sharing == "multiple", "routed LoRA: sharing \"", o.sharing,
            "\" (single, multiple)");
  VLP_CHECK(o.sharing == "single" || !o.tasks.empty(), "routed LoRA: sharing \"multiple\" needs a task list");
  if (o.sharing == "single") {
    // Single mode: the plain LoRA names "lora_A.weight", "lora_B.weight" directly under the adapter.
    owned_.push_back(std::make_unique<RoutedLoraSlot>(in, enabled * o.r, out_rows, o.r, dtype));
    register_module("lora_A", &owned_.back()->lora_A);
    register_module("lora_B", &owned_.back()->lora_B);
  } else {
    for (const auto& t : o.tasks) {
      owned_.push_back(std::make_unique<RoutedLoraSlot>(in, enabled * o.r, out_rows, o.r, dtype));
      register_module(t, owned_.back().get());
    }
  }
  for (auto& s : owned_) slots.push_back(s.get());
}

int RoutedLora::slot(const ForwardContext& ctx) const {
  if (options.sharing == "single") return 0;
  VLP_CHECK(ctx.task >= 0 && ctx.task < int(options.tasks.size()), "routed LoRA (multiple): ForwardContext::task = ",
            ctx.task, " but the adapter has ", options.tasks.size(), " tasks");
  return ctx.task;
}

Tensor RoutedLora::forward(const Linear& layer, const Tensor& x, const Tensor& y, const ForwardContext& ctx) {
  const RoutedLoraSlot& s = *slots[size_t(slot(ctx))];
  Tensor h = s.lora_A.forward(dropout(x, options.dropout, ctx));
  if (options.routing != 0) {
    Tensor xv = routing_visual(ctx, options.visual_pool, h.dtype(), "routed LoRA");
    h = route(options.routing, h, s.lora_A.forward(dropout(xv, options.dropout, ctx)), options.routing_reshape_compat);
  }
  if (options.groups.empty()) return y + s.lora_B.forward(h) * scale();
  // Grouped: enabled group k reads channels [k r, (k+1) r) and writes its slice of the output; the disabled
  // groups get no update.
  const int64_t n = int64_t(options.groups.size()), width = y.size(-1) / n, r = options.r;
  std::vector<Tensor> parts;
  int64_t k = 0;
  for (int64_t g = 0; g < n; ++g) {
    if (!options.groups[size_t(g)]) {
      Shape shape = y.shape();
      shape.back() = width;
      parts.push_back(zeros(shape, h.dtype(), h.device()));
      continue;
    }
    parts.push_back(linear(narrow(h, -1, k * r, r), narrow(s.lora_B.weight, 0, k * width, width)));
    ++k;
  }
  return y + concat(parts, -1) * scale();
}

void attach_routed_lora(AttachContext& ctx) {
  const PeftConfig& c = ctx.config;
  RoutedLoraOptions o;
  o.r = c.get_int("r", 8);
  o.alpha = c.get_double("lora_alpha", 8.0);
  o.dropout = c.get_double("lora_dropout", 0.0);
  o.routing = c.get_int("routing_function", 2);
  o.routing_reshape_compat = c.get_bool("routing_reshape_compat", false);
  o.visual_pool = c.get_string("visual_pool", "none");
  o.sharing = c.get_string("sharing", "single");
  o.tasks = config_tasks(c, o.sharing != "single");
  if (c.raw.contains("qkv_groups") && !c.raw["qkv_groups"].is_null()) {
    VLP_CHECK(c.raw["qkv_groups"].is_array(), c.source, ": field 'qkv_groups' must be a list of booleans");
    for (const auto& g : c.raw["qkv_groups"]) {
      VLP_CHECK(g.is_boolean(), c.source, ": field 'qkv_groups' must be a list of booleans");
      o.groups.push_back(g.get<bool>());
    }
  } else if (ctx.backbone == "gpt2") {
    o.groups = {true, false, true};  // spec §3.4: Q and V of the fused c_attn
  }
  for (const auto& [name, layer] : select_linear_targets(ctx.model, c, default_targets("lora", ctx.backbone))) {
    auto a = std::make_shared<RoutedLora>(o, layer->in_features(), layer->out_features(), layer->weight.dtype());
    for (auto* s : a->slots) kaiming_uniform_(s->lora_A.weight, std::sqrt(5.0), &ctx.generator);  // B stays 0
    attach_adapter(*layer, ctx.adapter_name, a);
  }
}

void attach_routed_adapter(AttachContext& ctx) {
  const PeftConfig& c = ctx.config;
  const std::string placement = c.get_string("placement", "houlsby");
  const std::vector<std::string> defaults =
      placement == "houlsby" || placement == "vl_adapter" ? std::vector<std::string>{"sa_site", "ca_site", "ff_site"}
                                                          : std::vector<std::string>{"ff_site"};
  const std::string init = c.get_string("init_weights", "bert");
  const bool before_dropout = c.get_bool("before_dropout", false);
  const bool share_in_block = c.get_bool("share_in_block", ctx.backbone == "gpt2");
  std::map<std::string, SublayerAdapter*> block_adapter;  // block path -> its attention site's module
  for (const auto& t : sublayer_targets(ctx, defaults)) {
    const std::string block_path = t.name.substr(0, t.name.rfind('.'));
    if (share_in_block && block_adapter.count(block_path)) {
      attach_adapter(*t.site, ctx.adapter_name, std::make_shared<BorrowedSublayerAdapter>(block_adapter[block_path]));
      t.site->before_dropout = before_dropout;
      continue;
    }
    BottleneckOptions o = bottleneck_options(c, t.d_model);
    if (!c.raw.contains("non_linearity")) o.non_linearity = ctx.backbone == "gpt2" ? "gelu_new" : "gelu";
    o.routing = c.get_int("routing_function", 2);
    VLP_CHECK(o.routing >= 0 && o.routing <= 4, c.source, ": routing_function ", o.routing, " (0..4)");
    o.routing_reshape_compat = c.get_bool("routing_reshape_compat", false);
    o.visual_pool = c.get_string("visual_pool", "none");
    auto a = std::make_shared<BottleneckAdapter>(o, dense_projections(t.dtype), t.dtype);
    if (o.placement == "pfeiffer") a->block_norm = t.block_norm;
    init_bottleneck(*a, init, ctx.backbone, ctx.generator);
    t.site->before_dropout = before_dropout;
    attach_adapter(*t.site, ctx.adapter_name, a);
    block_adapter[block_path] = a.get();
  }
}

}  // namespace vlp::peft
