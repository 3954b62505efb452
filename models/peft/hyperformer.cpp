// Hyperformer: shared hypernetwork, per-site adapters and the VLPEFT_HYPERFORMER attach function (see
// hyperformer.h).
#include "models/peft/hyperformer.h"

#include <algorithm>

#include "runtime/rng.h"

namespace vlp::peft {

HyperGenerators::HyperGenerators(const HyperformerOptions& o, DType dtype)
    : up_weight(o.projected_dim, o.d_model * o.bottleneck, true, dtype),
      up_bias(o.projected_dim, o.d_model, true, dtype),
      down_weight(o.projected_dim, o.bottleneck * o.d_model, true, dtype),
      down_bias(o.projected_dim, o.bottleneck, true, dtype) {
  register_module("up_weight", &up_weight);
  register_module("up_bias", &up_bias);
  register_module("down_weight", &down_weight);
  register_module("down_bias", &down_bias);
}

HyperStack::HyperStack(const HyperformerOptions& o, int64_t layers, const std::vector<std::string>& blocks,
                       DType dtype)
    : fc1(2 * o.task_dim, o.hidden_dim, true, dtype), fc2(o.hidden_dim, o.projected_dim, true, dtype) {
  layer_embedding = zeros({layers, o.task_dim}, dtype);
  register_parameter("layer_embedding", &layer_embedding);
  register_module("projector.fc1", &fc1);
  register_module("projector.fc2", &fc2);
  norm_weight = ones({o.projected_dim}, dtype);
  norm_bias = zeros({o.projected_dim}, dtype);
  register_parameter("projector.norm_weight", &norm_weight);
  register_parameter("projector.norm_bias", &norm_bias);
  for (const auto& b : blocks) generators[b] = &add_module<HyperGenerators>(b, o, dtype);
}

Tensor HyperStack::code(const Tensor& task_row, int layer) const {
  VLP_CHECK(layer >= 0 && layer < layer_embedding.size(0), "Hyperformer: layer ", layer, " outside the ",
            layer_embedding.size(0), " layer embeddings");
  Tensor in = unsqueeze(concat({task_row, select(layer_embedding, 0, layer)}, 0), 0);  // [1, 2 task_dim]
  Tensor h = fc2.forward(relu(fc1.forward(in)));
  return layer_norm(h, norm_weight, norm_bias, 1e-5);  // [1, projected_dim]
}

HyperformerShared::HyperformerShared(const HyperformerOptions& o, DType dtype) : options(o), dtype_(dtype) {
  VLP_CHECK(o.num_tasks > 0, "Hyperformer needs at least one task");
  VLP_CHECK(o.d_model > 0 && o.bottleneck > 0, "Hyperformer: d_model and bottleneck must be positive");
  task_embedding = zeros({o.num_tasks, o.task_dim}, dtype);
  register_parameter("task_embedding", &task_embedding);
}

HyperStack& HyperformerShared::add_stack(const std::string& name, int64_t layers,
                                         const std::vector<std::string>& blocks) {
  VLP_CHECK(!stacks.count(name), "Hyperformer: stack '", name, "' added twice");
  owned_.push_back(std::make_unique<HyperStack>(options, layers, blocks, dtype_));
  register_module(name, owned_.back().get());
  stacks[name] = owned_.back().get();
  return *owned_.back();
}

HyperformerShared::Weights HyperformerShared::generate(int task, const std::string& stack, int layer,
                                                       const std::string& block) const {
  VLP_CHECK(task >= 0 && task < options.num_tasks, "Hyperformer: ForwardContext::task = ", task, " but there are ",
            options.num_tasks, " tasks");
  auto s = stacks.find(stack);
  VLP_CHECK(s != stacks.end(), "Hyperformer: no stack '", stack, "'");
  auto g = s->second->generators.find(block);
  VLP_CHECK(g != s->second->generators.end(), "Hyperformer: stack '", stack, "' has no generators for '", block, "'");
  Tensor z = s->second->code(select(task_embedding, 0, task), layer);
  const HyperGenerators& gen = *g->second;
  const int64_t d = options.d_model, m = options.bottleneck;
  Weights w;
  w.up_weight = reshape(gen.up_weight.forward(z), {d, m});
  w.up_bias = reshape(gen.up_bias.forward(z), {d});
  w.down_weight = reshape(gen.down_weight.forward(z), {m, d});
  w.down_bias = reshape(gen.down_bias.forward(z), {m});
  return w;
}

void init_hyperformer(HyperformerShared& shared, Generator& gen) {
  normal_(shared.task_embedding, 0.0, 1.0, &gen);
  auto lin = [&](DenseProjection& p) {
    normal_(p.weight, 0.0, 0.02, &gen);
    zeros_(p.bias);
  };
  for (auto& [name, st] : shared.stacks) {
    normal_(st->layer_embedding, 0.0, 0.02, &gen);
    lin(st->fc1);
    lin(st->fc2);
    ones_(st->norm_weight);
    zeros_(st->norm_bias);
    for (auto& [b, g] : st->generators) {
      lin(g->up_weight);
      lin(g->up_bias);
      lin(g->down_weight);
      lin(g->down_bias);
    }
  }
}

HyperformerAdapter::HyperformerAdapter(const HyperformerShared* s, std::string st, int l, std::string b,
                                       const std::string& non_linearity)
    : shared(s), stack(std::move(st)), block(std::move(b)), layer(l) {
  act = activation_by_name(non_linearity, "non_linearity");
}

Tensor HyperformerAdapter::forward(const Tensor& input, const Tensor& output, const ForwardContext& ctx) {
  // Weights depend only on (task, stack, layer, block): generated once per call, i.e. once per batch.
  auto w = shared->generate(ctx.task, stack, layer, block);
  Tensor d = linear(act(linear(output, w.down_weight, w.down_bias)), w.up_weight, w.up_bias);
  return skip ? output + d : d;
}

void attach_hyperformer(AttachContext& ctx) {
  const PeftConfig& c = ctx.config;
  auto tasks = config_tasks(c, true);
  auto targets = sublayer_targets(ctx, {"sa_site", "ca_site", "ff_site"});
  HyperformerOptions o;
  o.num_tasks = int64_t(tasks.size());
  o.task_dim = c.get_int("task_embedding_dim", 512);
  o.projected_dim = c.get_int("projected_task_dim", 8);
  o.hidden_dim = c.get_int("projector_hidden_dim", 128);
  o.d_model = targets.front().d_model;
  for (const auto& t : targets)
    VLP_CHECK(t.d_model == o.d_model, c.source, ": Hyperformer needs one width for every site, got ", t.d_model,
              " and ", o.d_model);
  const int rf = c.get_int("reduction_factor", 8);
  o.bottleneck = c.get_int("bottleneck_dim", int(o.d_model / std::max(rf, 1)));
  const std::string act = c.get_string("non_linearity", "gelu_new");
  const bool skip = c.get_bool("skip", true), before_dropout = c.get_bool("before_dropout", true);

  auto& shared = ctx.model.add_module<HyperformerShared>("peft_shared." + ctx.adapter_name, o, targets.front().dtype);
  // One hypernetwork per stack: its layer count and the block types it serves.
  std::map<std::string, std::pair<int, std::vector<std::string>>> stacks;
  for (const auto& t : targets) {
    auto& [layers, blocks] = stacks[t.stack.empty() ? "all" : t.stack];
    layers = std::max(layers, t.layer + 1);
    if (std::find(blocks.begin(), blocks.end(), t.block) == blocks.end()) blocks.push_back(t.block);
  }
  for (auto& [name, lb] : stacks) shared.add_stack(name, lb.first, lb.second);
  init_hyperformer(shared, ctx.generator);
  for (const auto& t : targets) {
    auto a = std::make_shared<HyperformerAdapter>(&shared, t.stack.empty() ? "all" : t.stack, t.layer, t.block, act);
    a->skip = skip;
    t.site->before_dropout = before_dropout;
    attach_adapter(*t.site, ctx.adapter_name, a);
  }
}

}  // namespace vlp::peft
