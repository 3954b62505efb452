// Poly / Multi-Head Routing against HF PEFT 0.21.2 (tools/reference/make_peft_poly_fixtures.py): eval-mode
// outputs, router weights and adapter gradients on the two-layer chain with per-example task ids, HF's adapter
// directory loading onto tiny T5 (logits, loss, gradients) and written back with HF's keys and fields; the
// training-mode RelaxedBernoulli draws; task-id errors; per-task merge; gradcheck.
#include <cstdio>
#include <filesystem>
#include <set>

#include "fixture.h"
#include "models/checkpoint.h"
#include "models/peft/poly.h"
#include "models/t5.h"
#include "tests/models/text_fixture.h"

namespace vlp::test {
namespace {

double max_abs_diff(const Tensor& a, const Tensor& b) {
  std::vector<double> va = to_vector(a), vb = to_vector(b);
  double m = 0;
  for (size_t i = 0; i < va.size(); ++i) m = std::max(m, std::abs(va[i] - vb[i]));
  return m;
}

std::vector<int64_t> ids_of(const Tensor& t) {
  std::vector<int64_t> out;
  for (double v : to_vector(t)) out.push_back(int64_t(v));
  return out;
}

peft::PolyLayer* poly_of(Linear& l) {
  auto* p = dynamic_cast<peft::PolyLayer*>(l.adapters.at(0).second.get());
  EXPECT_NE(p, nullptr);
  return p;
}

void check_against_hf(const std::string& name) {
  ParityCase c(name, false, peft::attach_poly);
  ForwardContext ctx;
  ctx.task_ids = ids_of(c.file.at("task_ids"));
  {
    NoGradGuard no_grad;
    Tensor w = poly_of(c.chain->lin1)->mixing_weights(ctx.task_ids, false, nullptr);
    EXPECT_TRUE(all_close(w, c.file.at("extra.lin1.mixing_weights"), 0.0, 1e-7)) << "router weights";
  }
  Tensor y = c.chain->forward(c.file.at("x"), ctx);
  const double dy = max_abs_diff(y, c.file.at("y"));
  EXPECT_LE(dy, 1e-5) << "output vs HF PEFT";
  EXPECT_FALSE(all_close(y, c.file.at("y_base"), 0.0, 1e-3)) << "fixture adapter is a no-op";
  backward(sum(mul(y, c.file.at("probe"))));
  int checked = 0;
  double dg = 0;
  for (auto [pname, t] : c.chain->named_parameters()) {
    if (!t.requires_grad()) continue;
    const Tensor* g = c.file.find("grad." + default_file_key(pname));
    ASSERT_NE(g, nullptr) << pname;
    ASSERT_TRUE(t.grad().defined()) << pname;
    EXPECT_TRUE(all_close(t.grad(), *g, 0.0, 1e-4)) << "gradient of " << pname;
    dg = std::max(dg, max_abs_diff(t.grad(), *g));
    ++checked;
  }
  EXPECT_EQ(checked, 6);
  std::printf("  %s vs HF PEFT: max |dy| = %.2e, max |dgrad| = %.2e over %d tensors\n", name.c_str(), dy, dg, checked);
  c.check_disabled();
}

TEST(Poly, MatchesHfPeft) { check_against_hf("poly"); }
TEST(Poly, MultiHeadRoutingMatchesHfPeft) { check_against_hf("poly_mhr"); }

TEST(Poly, ShapesAndNamesAsHf) {
  ParityCase c("poly_mhr", false, peft::attach_poly);
  auto* p = poly_of(c.chain->lin2);
  EXPECT_EQ(p->poly_lora_A.shape(), (Shape{4, 2, 3, 3}));
  EXPECT_EQ(p->poly_lora_B.shape(), (Shape{4, 2, 3, 2}));
  EXPECT_EQ(p->module_logits.shape(), (Shape{3, 8}));
  std::vector<std::string> names;
  for (auto& [n, t] : p->named_parameters()) names.push_back(n);
  EXPECT_EQ(names, (std::vector<std::string>{"poly_lora_A", "poly_lora_B", "poly_router.module_logits"}));
}

TEST(Poly, DefaultInitIsNoOpAndDrawsAsHf) {
  expect_noop_init(peft::attach_poly, {{"peft_type", "POLY"}, {"target_modules", {"lin1", "lin2"}}, {"r", 2}});
  Linear layer(kIn, kMid);
  peft::PolyLayer p(kIn, kMid, "default", 2, 3, 4, 2);
  Generator gen(3);
  p.reset(true, gen);
  const double bound = 1.0 / std::sqrt(double(kIn / 2));  // Kaiming-uniform of a [r, d_in/S] block
  for (double v : to_vector(p.poly_lora_A)) EXPECT_LE(std::abs(v), bound);
  for (double v : to_vector(p.poly_lora_B)) EXPECT_EQ(v, 0.0);
  for (double v : to_vector(p.module_logits)) EXPECT_LE(std::abs(v), 1e-3);
  p.reset(false, gen);
  double bmax = 0;
  for (double v : to_vector(p.poly_lora_B)) bmax = std::max(bmax, std::abs(v));
  EXPECT_GT(bmax, 0.0);
  EXPECT_LE(bmax, 1.0 / std::sqrt(2.0));  // fan_in r of a [d_out/S, r] block
}

TEST(Poly, TrainingDrawsRelaxedBernoulliWeights) {
  peft::PolyLayer p(kIn, kMid, "default", 2, 3, 4, 2);
  Generator init(1);
  p.reset(false, init);
  {
    NoGradGuard no_grad;
    normal_(p.module_logits, 0.0, 2.0, &init);
  }
  const std::vector<int64_t> tasks = {0, 2, 1, 2};
  auto draw = [&](uint64_t seed) {
    Generator g(seed);
    NoGradGuard no_grad;
    return p.mixing_weights(tasks, true, &g);
  };
  Tensor a = draw(5), b = draw(5), c = draw(6);
  EXPECT_TRUE(all_close(a, b, 0.0, 0.0)) << "same seed, same draw";
  EXPECT_FALSE(all_close(a, c, 0.0, 1e-6)) << "another seed, another draw";
  EXPECT_EQ(a.shape(), (Shape{4, 2, 4}));
  std::vector<double> w = to_vector(a);
  for (double v : w) {
    EXPECT_GT(v, 0.0);
    EXPECT_LT(v, 1.0);
  }
  for (size_t row = 0; row < w.size() / 4; ++row) {  // normalised over the skills of each split
    double s = 0;
    for (size_t k = 0; k < 4; ++k) s += w[row * 4 + k];
    EXPECT_NEAR(s, 1.0, 1e-6);
  }
  // Eval: sigmoid(logits[t]) normalised per split, the same for every call.
  NoGradGuard no_grad;
  Tensor e = p.mixing_weights(tasks, false, nullptr);
  std::vector<double> logits = to_vector(p.module_logits), ev = to_vector(e);
  for (size_t i = 0; i < tasks.size(); ++i)
    for (size_t s = 0; s < 2; ++s) {
      double z[4], sum = 0;
      for (size_t k = 0; k < 4; ++k)
        z[k] = 1.0 / (1.0 + std::exp(-logits[size_t(tasks[i]) * 8 + s * 4 + k])), sum += z[k];
      for (size_t k = 0; k < 4; ++k) EXPECT_NEAR(ev[i * 8 + s * 4 + k], z[k] / (sum + 1e-12), 1e-6);
    }
  // A training forward through the layer uses the draw (so differs from eval) and advances the generator.
  Linear layer(kIn, kMid);
  Tensor x = rand_input({4, 3, kIn}, 2, DType::F32, false);
  ForwardContext train;
  train.training = true;
  Generator g(9);
  train.generator = &g;
  train.task_ids = tasks;
  ForwardContext eval = train;
  eval.training = false;
  Tensor yt = p.forward(layer, x, layer.base_forward(x), train);
  EXPECT_GT(g.offset, 0u);
  EXPECT_FALSE(all_close(yt, p.forward(layer, x, layer.base_forward(x), eval), 0.0, 1e-5));
}

TEST(Poly, TaskIdErrorsNameTheField) {
  peft::PolyLayer p(kIn, kMid, "default", 2, 3, 4, 1);
  Linear layer(kIn, kMid);
  Tensor x = rand_input({2, 3, kIn}, 2, DType::F32, false);
  Tensor y = layer.base_forward(x);
  ForwardContext short_ids;
  short_ids.task_ids = {0};
  EXPECT_NE(error_of([&] { p.forward(layer, x, y, short_ids); }).find("ForwardContext::task_ids has 1 entries"),
            std::string::npos);
  ForwardContext out_of_range;
  out_of_range.task_ids = {0, 3};
  EXPECT_NE(error_of([&] { p.forward(layer, x, y, out_of_range); }).find("ForwardContext::task_ids[1] = 3"),
            std::string::npos);
  out_of_range.task_ids = {-1, 0};
  EXPECT_NE(error_of([&] { p.forward(layer, x, y, out_of_range); }).find("task_ids[0] = -1"), std::string::npos);
  ForwardContext batch_task;
  batch_task.task = 5;
  EXPECT_NE(error_of([&] { p.forward(layer, x, y, batch_task); }).find("ForwardContext::task = 5"), std::string::npos);
  // No task_ids: every example takes the batch's task.
  ForwardContext ids;
  ids.task_ids = {2, 2};
  ForwardContext task;
  task.task = 2;
  EXPECT_TRUE(all_close(p.forward(layer, x, y, ids), p.forward(layer, x, y, task), 0.0, 0.0));
  EXPECT_NE(error_of([] {
              peft::PeftConfig c = peft::parse_peft_config(
                  {{"peft_type", "POLY"}, {"target_modules", {"lin1"}}, {"n_splits", 5}}, "cfg.json");
              Chain chain(false);
              Generator g(0);
              peft::AttachContext ctx{chain, c, "default", g, ""};
              peft::attach_poly(ctx);
            }).find("'n_splits' = 5 does not divide"),
            std::string::npos);
}

// Merging folds one task's update into the weight (either layout); without a chosen task it is refused.
void check_merge_for_one_task(bool conv1d) {
  Chain chain(conv1d);
  peft::PeftConfig config = peft::parse_peft_config(
      {{"peft_type", "POLY"}, {"target_modules", {"lin1", "lin2"}}, {"r", 2}, {"n_tasks", 3}, {"n_splits", 2},
       {"init_weights", false}});
  peft::add_adapter(chain, config, "default", 4);
  {
    NoGradGuard no_grad;
    Generator g(8);
    for (Linear* l : {&chain.lin1, &chain.lin2}) normal_(poly_of(*l)->module_logits, 0.0, 1.0, &g);
  }
  Tensor x = rand_input({2, 3, kIn}, 5, DType::F32, false);
  NoGradGuard no_grad;
  EXPECT_NE(error_of([&] { peft::merge_adapters(chain, {"default"}); }).find("set_poly_merge_task"),
            std::string::npos);
  Tensor w1 = clone(chain.lin1.weight);
  ForwardContext ctx;
  ctx.task = 1;
  Tensor y1 = chain.forward(x, ctx);
  ctx.task = 2;
  Tensor y2 = chain.forward(x, ctx);
  peft::set_poly_merge_task(chain, "default", 1);
  peft::merge_adapters(chain, {"default"});
  EXPECT_TRUE(all_close(chain.forward(x, {}), y1, 0.0, 1e-5)) << "merged task 1 = unmerged task 1";
  EXPECT_FALSE(all_close(chain.forward(x, {}), y2, 0.0, 1e-4));
  peft::unmerge_adapters(chain);
  EXPECT_TRUE(all_close(chain.lin1.weight, w1, 0.0, 1e-6));
  ctx.task = 1;
  EXPECT_TRUE(all_close(chain.forward(x, ctx), y1, 0.0, 1e-6));
}

TEST(Poly, MergesOnlyForOneTask) {
  check_merge_for_one_task(false);
  check_merge_for_one_task(true);
}

TEST(Poly, Gradcheck) {
  Linear layer(6, 4);
  layer.weight = rand_input({4, 6}, 1, DType::F64, false);
  layer.bias = rand_input({4}, 2, DType::F64, false);
  peft::PolyLayer p(6, 4, "default", 2, 3, 3, 2);
  std::vector<Tensor> in = {rand_input({3, 2, 6}, 3), rand_input({2, 3, 3, 2}, 4), rand_input({2, 3, 2, 2}, 5),
                            rand_input({3, 6}, 6)};
  ForwardContext ctx;
  ctx.task_ids = {2, 0, 2};
  auto f = [&](const std::vector<Tensor>& t) {
    p.poly_lora_A = t[1];
    p.poly_lora_B = t[2];
    p.module_logits = t[3];
    return p.forward(layer, t[0], layer.base_forward(t[0]), ctx);
  };
  EXPECT_EQ(gradcheck(f, in), "");
  // A 2-D input (one token per example) and a non-contiguous one.
  std::vector<Tensor> in2 = {rand_input({3, 6}, 7), in[1], in[2], in[3]};
  EXPECT_EQ(gradcheck(f, in2), "");
  Tensor wide = rand_input({2, 3, 6}, 8);
  auto g = [&](const std::vector<Tensor>& t) {
    Tensor xt = transpose(t[0], 0, 1);  // [3, 2, 6] view
    p.poly_lora_A = t[1];
    p.poly_lora_B = t[2];
    p.module_logits = t[3];
    return p.forward(layer, xt, layer.base_forward(xt), ctx);
  };
  EXPECT_EQ(gradcheck(g, {wide, in[1], in[2], in[3]}), "");
  // Training mode: the RelaxedBernoulli sample is differentiable in the logits (the same draw every call).
  auto train = [&](const std::vector<Tensor>& t) {
    Generator gen(4);
    ForwardContext tc = ctx;
    tc.training = true;
    tc.generator = &gen;
    p.poly_lora_A = t[1];
    p.poly_lora_B = t[2];
    p.module_logits = t[3];
    return p.forward(layer, t[0], layer.base_forward(t[0]), tc);
  };
  EXPECT_EQ(gradcheck(train, in), "");
}

// ---- HF's files on tiny T5 ----

std::string t5_poly_dir() { return fixture_path("backbone/t5_poly"); }

struct T5Run {
  std::unique_ptr<T5ForConditionalGeneration> model;
  std::map<std::string, Tensor> batch;
  T5Run() {
    const std::string dir = model_fixture_dir("t5");
    model = std::make_unique<T5ForConditionalGeneration>(read_t5_config(dir));
    load_checkpoint(*model, dir);
    model->train(false);
    batch = read_fixture("t5");
  }
  Seq2SeqOutput forward(const ForwardContext& ctx) {
    Seq2SeqInput in;
    in.encoder.input_ids = batch.at("input_ids");
    in.encoder.attention_mask = batch.at("attention_mask");
    in.labels = batch.at("labels");
    return model->forward(in, ctx);
  }
};

TEST(Poly, LoadsHfAdapterOntoT5AndMatches) {
  SafetensorsFile ref = load_safetensors(t5_poly_dir() + "/reference.safetensors");
  T5Run run;
  peft::load_adapter(*run.model, t5_poly_dir());
  ForwardContext ctx;
  ctx.task_ids = ids_of(ref.at("task_ids"));
  Seq2SeqOutput out = run.forward(ctx);
  EXPECT_TRUE(close_to_scale(out.logits, ref.at("logits"), 1e-5));
  EXPECT_NEAR(out.loss.item(), ref.at("loss").item(), 1e-5 * std::abs(ref.at("loss").item()));
  const double dl = max_abs_diff(out.logits, ref.at("logits"));
  backward(out.loss);
  size_t compared = 0, expected = 0;
  double dg = 0;
  for (auto& [k, t] : ref.tensors) expected += k.rfind("grad.", 0) == 0;
  for (auto& [name, p] : run.model->named_parameters()) {
    if (!p.requires_grad()) continue;
    std::string key = name;
    key.erase(key.find(".adapters.default"), std::string(".adapters.default").size());
    const Tensor* g = ref.find("grad.base_model.model." + key);
    ASSERT_NE(g, nullptr) << "trainable " << name << " has no HF gradient";
    EXPECT_TRUE(close_in_norm(p.grad(), *g, 1e-4, 1e-7)) << "gradient of " << name;
    dg = std::max(dg, max_abs_diff(p.grad(), *g));
    ++compared;
  }
  EXPECT_EQ(compared, expected) << "trainable set differs from HF PEFT's";
  std::printf("  t5_poly vs HF PEFT: max |dlogits| = %.2e, |dloss| = %.2e, max |dgrad| = %.2e over %zu tensors\n", dl,
              std::abs(out.loss.item() - ref.at("loss").item()), dg, compared);
}

TEST(Poly, WritesHfKeysAndFields) {
  T5Run run;
  peft::PeftConfig config = peft::load_adapter(*run.model, t5_poly_dir());
  ScratchDir dir("poly_files");
  peft::save_adapter(*run.model, config, "default", dir.string());
  SafetensorsFile hf = load_safetensors(t5_poly_dir() + "/adapter_model.safetensors");
  SafetensorsFile ours = load_safetensors((dir / "adapter_model.safetensors").string());
  std::set<std::string> hf_keys, our_keys;
  for (auto& [k, t] : hf.tensors) hf_keys.insert(k);
  for (auto& [k, t] : ours.tensors) our_keys.insert(k);
  EXPECT_EQ(our_keys, hf_keys);
  for (auto& [k, t] : hf.tensors)
    if (const Tensor* o = ours.find(k)) {
      EXPECT_TRUE(all_close(*o, t, 0.0, 0.0)) << k;
    }
  auto read_json = [](const std::string& p) {
    std::ifstream in(p);
    return nlohmann::json::parse(in);
  };
  nlohmann::json hf_cfg = read_json(t5_poly_dir() + "/adapter_config.json");
  nlohmann::json our_cfg = read_json((dir / "adapter_config.json").string());
  std::set<std::string> hf_fields, our_fields;
  for (auto& [k, v] : hf_cfg.items()) hf_fields.insert(k);
  for (auto& [k, v] : our_cfg.items()) our_fields.insert(k);
  EXPECT_EQ(our_fields, hf_fields);
  for (const char* f : {"peft_type", "r", "n_tasks", "n_skills", "n_splits", "poly_type", "init_weights",
                        "target_modules", "inference_mode"})
    EXPECT_EQ(our_cfg[f], hf_cfg[f]) << f;

  // A fresh config (no target_modules given) writes the same field set, with the default targets.
  T5Run fresh;
  peft::PeftConfig c2 = peft::parse_peft_config({{"peft_type", "POLY"}, {"r", 2}, {"n_tasks", 2}});
  peft::add_adapter(*fresh.model, c2, "default", 1);
  ScratchDir dir2("poly_files_fresh");
  peft::save_adapter(*fresh.model, c2, "default", dir2.string());
  nlohmann::json cfg2 = read_json((dir2 / "adapter_config.json").string());
  std::set<std::string> fields2;
  for (auto& [k, v] : cfg2.items()) fields2.insert(k);
  EXPECT_EQ(fields2, hf_fields);
  EXPECT_EQ(cfg2["target_modules"], (nlohmann::json{"q", "v"}));
  // ... and loads back to the same outputs.
  T5Run back;
  peft::load_adapter(*back.model, dir2.string());
  ForwardContext ctx;
  ctx.task_ids = {1, 0};
  NoGradGuard no_grad;
  EXPECT_TRUE(all_close(back.forward(ctx).logits, fresh.forward(ctx).logits, 0.0, 0.0));
}

}  // namespace
}  // namespace vlp::test
