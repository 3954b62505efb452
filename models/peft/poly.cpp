// Poly / Multi-Head Routing (see poly.h for the formulas, the task ids and the config fields).
#include "models/peft/poly.h"

#include <cmath>

#include "models/peft/linear_common.h"

namespace vlp::peft {

PolyLayer::PolyLayer(int64_t in, int64_t out, const std::string& name, int64_t r_, int64_t tasks, int64_t skills,
                     int64_t splits)
    : adapter_name(name), r(r_), n_tasks(tasks), n_skills(skills), n_splits(splits), in_features(in),
      out_features(out) {
  VLP_CHECK(r > 0, "Poly: r must be positive, got ", r);
  VLP_CHECK(n_tasks > 0 && n_skills > 0 && n_splits > 0, "Poly: n_tasks, n_skills and n_splits must be positive, got ",
            n_tasks, ", ", n_skills, ", ", n_splits);
  VLP_CHECK(in % n_splits == 0 && out % n_splits == 0, "Poly: n_splits = ", n_splits,
            " must divide the layer's in_features ", in, " and out_features ", out);
  poly_lora_A = zeros({n_splits, n_skills, in / n_splits, r});
  poly_lora_B = zeros({n_splits, n_skills, r, out / n_splits});
  module_logits = zeros({n_tasks, n_splits * n_skills});
  register_parameter("poly_lora_A", &poly_lora_A);
  register_parameter("poly_lora_B", &poly_lora_B);
  register_parameter("poly_router.module_logits", &module_logits);
}

void PolyLayer::reset(bool init_weights, Generator& gen) {
  NoGradGuard no_grad;
  const int64_t d = in_features / n_splits, e = out_features / n_splits;
  const double a = std::sqrt(5.0);
  // One nn.Linear-style block per (skill, split), drawn in HF's loop order and stored transposed.
  for (int64_t k = 0; k < n_skills; ++k)
    for (int64_t s = 0; s < n_splits; ++s) {
      Tensor block = empty({r, d});
      kaiming_uniform_(block, a, &gen);
      copy_(select(select(poly_lora_A, 0, s), 0, k), transpose(block, 0, 1));
    }
  if (init_weights) {
    zeros_(poly_lora_B);
  } else {
    for (int64_t k = 0; k < n_skills; ++k)
      for (int64_t s = 0; s < n_splits; ++s) {
        Tensor block = empty({e, r});
        kaiming_uniform_(block, a, &gen);
        copy_(select(select(poly_lora_B, 0, s), 0, k), transpose(block, 0, 1));
      }
  }
  uniform_(module_logits, -1e-3, 1e-3, &gen);
}

std::vector<int64_t> PolyLayer::task_indices(const ForwardContext& ctx, int64_t batch) const {
  std::vector<int64_t> ids;
  if (ctx.task_ids.empty()) {
    VLP_CHECK(ctx.task >= 0 && ctx.task < n_tasks, "Poly (adapter '", adapter_name, "'): ForwardContext::task = ",
              ctx.task, " but the adapter has n_tasks = ", n_tasks, " (task ids are 0 .. ", n_tasks - 1, ")");
    ids.assign(size_t(batch), int64_t(ctx.task));
    return ids;
  }
  VLP_CHECK(int64_t(ctx.task_ids.size()) == batch, "Poly (adapter '", adapter_name, "'): ForwardContext::task_ids has ",
            ctx.task_ids.size(), " entries for a batch of ", batch, " (one task id per example)");
  for (size_t i = 0; i < ctx.task_ids.size(); ++i)
    VLP_CHECK(ctx.task_ids[i] >= 0 && ctx.task_ids[i] < n_tasks, "Poly (adapter '", adapter_name,
              "'): ForwardContext::task_ids[", i, "] = ", ctx.task_ids[i], " but the adapter has n_tasks = ", n_tasks);
  return ctx.task_ids;
}

Tensor PolyLayer::mixing_weights(const std::vector<int64_t>& tasks, bool training, Generator* gen) const {
  const int64_t B = int64_t(tasks.size());
  Tensor logits = index_select(module_logits, 0, from_data(tasks, {B}, module_logits.device()));
  if (training) {
    // Logistic noise log u − log(1 − u), u clamped as torch's clamp_probs; the draw stays on the CPU generator so
    // every device sees the same numbers.
    Tensor u = empty({B, n_splits * n_skills});
    uniform_(u, 0.0, 1.0, gen);
    std::vector<double> noise = to_vector(u);
    const double eps = std::ldexp(1.0, -23);
    for (double& v : noise) {
      v = std::min(1.0 - eps, std::max(eps, v));
      v = std::log(v) - std::log1p(-v);
    }
    logits = add(logits, from_vector(noise, logits.shape(), logits.dtype(), logits.device()));
  }
  Tensor z = reshape(sigmoid(logits), {B, n_splits, n_skills});
  return div(z, add(sum(z, {2}, true), 1e-12));
}

Tensor PolyLayer::mixed_A(const Tensor& w) const {
  const int64_t B = w.size(0), d = in_features / n_splits;
  // [S, B, K] @ [S, K, d·r] -> [S, B, d·r] -> [B, S, d, r] -> [B, d_in, r] (split s holds input rows s·d ..).
  Tensor mixed = matmul(permute(w, {1, 0, 2}), reshape(poly_lora_A, {n_splits, n_skills, d * r}));
  return reshape(permute(mixed, {1, 0, 2}), {B, in_features, r});
}

Tensor PolyLayer::mixed_B(const Tensor& w) const {
  const int64_t B = w.size(0), e = out_features / n_splits;
  // [S, B, K] @ [S, K, r·e] -> [S, B, r, e] -> [B, r, S, e] -> [B, r, d_out] (split s holds output columns s·e ..).
  Tensor mixed = matmul(permute(w, {1, 0, 2}), reshape(poly_lora_B, {n_splits, n_skills, r * e}));
  return reshape(permute(reshape(mixed, {n_splits, B, r, e}), {1, 2, 0, 3}), {B, r, out_features});
}

Tensor PolyLayer::forward(const Linear& layer, const Tensor& x_in, const Tensor& y, const ForwardContext& ctx) {
  VLP_CHECK(x_in.dim() >= 2, "Poly: the input needs a leading batch dimension (one task per example), got ",
            shape_str(x_in.shape()));
  VLP_CHECK(ctx.sample_adapters.empty(), "Poly does not support mixed-adapter batches (sample_adapters)");
  const int64_t B = x_in.size(0);
  Tensor w = mixing_weights(task_indices(ctx, B), ctx.training, ctx.generator);
  Tensor x = x_in.dtype() == poly_lora_A.dtype() ? x_in : to(x_in, poly_lora_A.dtype());
  Tensor x3 = reshape(x, {B, -1, in_features});  // [B, N, d_in]
  Tensor delta = mul(matmul(matmul(x3, mixed_A(w)), mixed_B(w)), 1.0 / double(r));
  Shape out_shape = x_in.shape();
  out_shape.back() = out_features;
  delta = reshape(delta, out_shape);
  if (delta.dtype() != y.dtype()) delta = to(delta, y.dtype());
  return add(y, delta);
}

Tensor PolyLayer::delta_weight(int task) const {
  NoGradGuard no_grad;
  Tensor w = mixing_weights({int64_t(task)}, false, nullptr);
  Tensor ab = mul(matmul(select(mixed_A(w), 0, 0), select(mixed_B(w), 0, 0)), 1.0 / double(r));  // [in, out]
  return contiguous(transpose(ab, 0, 1));
}

void PolyLayer::merge(Linear& layer) {
  VLP_CHECK(merge_task >= 0, "Poly (adapter '", adapter_name, "') cannot be merged without a task: its update ",
            "depends on each example's task id; choose one with set_poly_merge_task(model, \"", adapter_name,
            "\", task)");
  VLP_CHECK(merge_task < n_tasks, "Poly (adapter '", adapter_name, "'): merge task ", merge_task, " but n_tasks = ",
            n_tasks);
  add_delta_to_weight(layer, delta_weight(merge_task), 1.0);
  merged_task = merge_task;
  merged = true;
}

void PolyLayer::unmerge(Linear& layer) {
  VLP_CHECK(merged_task >= 0, "Poly (adapter '", adapter_name, "'): unmerge without a merge");
  add_delta_to_weight(layer, delta_weight(merged_task), -1.0);
  merged_task = -1;
  merged = false;
}

void attach_poly(AttachContext& ctx) {
  const PeftConfig& c = ctx.config;
  const std::string poly_type = c.get_string("poly_type", "poly");
  VLP_CHECK(poly_type == "poly", c.source, ": field 'poly_type' is \"", poly_type, "\"; only \"poly\" is supported");
  const int r = c.get_int("r", 8), n_tasks = c.get_int("n_tasks", 1), n_skills = c.get_int("n_skills", 4),
            n_splits = c.get_int("n_splits", 1);
  VLP_CHECK(r > 0, c.source, ": field 'r' must be positive, got ", r);
  VLP_CHECK(n_tasks > 0, c.source, ": field 'n_tasks' must be positive, got ", n_tasks);
  VLP_CHECK(n_skills > 0, c.source, ": field 'n_skills' must be positive, got ", n_skills);
  VLP_CHECK(n_splits > 0, c.source, ": field 'n_splits' must be positive, got ", n_splits);
  const bool init_weights = c.get_bool("init_weights", true);
  for (auto& [name, layer] : select_method_targets(ctx, "POLY")) {
    const int64_t in = layer->in_features(), out = layer->out_features();
    VLP_CHECK(in % n_splits == 0 && out % n_splits == 0, c.source, ": field 'n_splits' = ", n_splits,
              " does not divide the features of '", name, "' (", in, " -> ", out, ")");
    auto a = std::make_shared<PolyLayer>(in, out, ctx.adapter_name, r, n_tasks, n_skills, n_splits);
    a->reset(init_weights, ctx.generator);
    attach_adapter(*layer, ctx.adapter_name, a);
  }
}

void set_poly_merge_task(Module& model, const std::string& adapter_name, int task) {
  int found = 0;
  for (auto& [name, layer] : linear_sites(model))
    for (auto& [aname, a] : layer->adapters)
      if (auto* p = dynamic_cast<PolyLayer*>(a.get()); p && aname == adapter_name) {
        VLP_CHECK(task < p->n_tasks, "set_poly_merge_task: task ", task, " but adapter '", adapter_name,
                  "' has n_tasks = ", p->n_tasks);
        p->merge_task = task;
        ++found;
      }
  VLP_CHECK(found > 0, "set_poly_merge_task: no Poly adapter '", adapter_name, "' in this model");
}

}  // namespace vlp::peft
