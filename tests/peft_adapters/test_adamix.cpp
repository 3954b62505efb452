// AdaMix (models/peft/adamix.h): averaged inference equals the adapter / LoRA built from the hand-averaged experts,
// training picks vary across steps and repeat for a seed, gradients reach only the picked experts, gradcheck
// (eval and a fixed training pick), merge of the LoRA variant, sharing and init options, the consistency loss.
// The save/load round trip on tiny T5 and BART is in test_methods.cpp (method_configs "adamix", "adamix_lora").
#include <set>

#include "models/peft/adamix.h"
#include "tests/peft_adapters/peft_test_util.h"

namespace vlp::peft {
namespace {

constexpr int64_t B = 2, T = 3, D = 8, M = 4, E = 3;

BottleneckOptions options(const std::string& placement) {
  BottleneckOptions o;
  o.d_model = D, o.bottleneck = M, o.placement = placement;
  o.non_linearity = placement == "houlsby" ? "gelu_new" : "relu";
  o.scaling = placement == "parallel" ? 4.0 : 1.0;
  return o;
}

// The (1/n) Σ of the experts' tensors, from plain numbers.
Tensor hand_mean(const std::vector<Tensor>& ts) {
  std::vector<double> acc(size_t(ts[0].numel()), 0.0);
  for (const auto& t : ts) {
    std::vector<double> v = to_vector(t);
    for (size_t i = 0; i < v.size(); ++i) acc[i] += v[i] / double(ts.size());
  }
  return from_vector(acc, ts[0].shape(), DType::F64);
}

// A plain bottleneck adapter with the given weights for the down- and up-projection.
std::unique_ptr<BottleneckAdapter> plain_adapter(const BottleneckOptions& o, const Tensor& wd, const Tensor& bd,
                                                 const Tensor& wu, const Tensor& bu) {
  auto a = std::make_unique<BottleneckAdapter>(o, dense_projections(DType::F64), DType::F64);
  auto* d = dynamic_cast<DenseProjection*>(a->down[0]);
  auto* u = dynamic_cast<DenseProjection*>(a->up[0]);
  copy_(d->weight, wd), copy_(d->bias, bd), copy_(u->weight, wu), copy_(u->bias, bu);
  return a;
}

std::vector<Tensor> weights_of(const MixtureProjection& m) {
  std::vector<Tensor> out;
  for (const auto& e : m.experts) out.push_back(e->weight);
  return out;
}
std::vector<Tensor> biases_of(const MixtureProjection& m) {
  std::vector<Tensor> out;
  for (const auto& e : m.experts) out.push_back(e->bias);
  return out;
}

TEST(AdaMix, AveragedInferenceIsTheMeanExpertAdapter) {
  for (const std::string placement : {"houlsby", "parallel", "pfeiffer"}) {
    SCOPED_TRACE(placement);
    AdaMixAdapter a(options(placement), E, E, DType::F64);
    test::randomize(a, 11);
    auto mix = a.mixtures();
    ASSERT_EQ(mix.size(), 2u);
    auto ref = plain_adapter(options(placement), hand_mean(weights_of(*mix[0])), hand_mean(biases_of(*mix[0])),
                             hand_mean(weights_of(*mix[1])), hand_mean(biases_of(*mix[1])));
    Tensor x = test::rand_input({B, T, D}, 1, DType::F64, false), o = test::rand_input({B, T, D}, 2, DType::F64, false);
    NoGradGuard no_grad;
    EXPECT_TRUE(test::all_close(a.forward(x, o, {}), ref->forward(x, o, {}), 0.0, 1e-12));
    EXPECT_EQ(mix[0]->chosen, -1);
  }
}

TEST(AdaMix, TrainingPicksVaryAcrossStepsAndRepeatForASeed) {
  AdaMixAdapter a(options("houlsby"), E, E, DType::F64);
  test::randomize(a, 5);
  Tensor x = test::rand_input({B, T, D}, 1, DType::F64, false), o = test::rand_input({B, T, D}, 2, DType::F64, false);
  auto run = [&](uint64_t seed) {
    Generator g(seed);
    ForwardContext ctx;
    ctx.training = true;
    ctx.generator = &g;
    std::vector<std::pair<int64_t, int64_t>> picks;
    NoGradGuard no_grad;
    for (int step = 0; step < 24; ++step) {
      Tensor y = a.forward(x, o, ctx);
      auto mix = a.mixtures();
      picks.push_back({mix[0]->chosen, mix[1]->chosen});
      // The step's output is the plain adapter of exactly the picked experts.
      auto& dn = *mix[0]->experts[size_t(mix[0]->chosen)];
      auto& up = *mix[1]->experts[size_t(mix[1]->chosen)];
      auto ref = plain_adapter(options("houlsby"), dn.weight, dn.bias, up.weight, up.bias);
      EXPECT_TRUE(test::all_close(y, ref->forward(x, o, {}), 0.0, 1e-12)) << "step " << step;
    }
    return picks;
  };
  auto p1 = run(3), p2 = run(3), p3 = run(4);
  EXPECT_EQ(p1, p2) << "the same seed picks the same experts";
  EXPECT_NE(p1, p3);
  std::set<int64_t> downs, ups;
  for (auto& [d, u] : p1) downs.insert(d), ups.insert(u);
  EXPECT_EQ(downs.size(), size_t(E)) << "every down expert picked in 24 steps";
  EXPECT_EQ(ups.size(), size_t(E));
  bool differ = false;
  for (auto& [d, u] : p1) differ = differ || d != u;
  EXPECT_TRUE(differ) << "down and up are picked independently";
}

TEST(AdaMix, GradientsReachOnlyThePickedExperts) {
  AdaMixAdapter a(options("houlsby"), E, E, DType::F64);
  test::randomize(a, 5);
  a.set_requires_grad(true);
  Tensor x = test::rand_input({B, T, D}, 1, DType::F64, false), o = test::rand_input({B, T, D}, 2, DType::F64, false);
  Generator g(7);
  ForwardContext ctx;
  ctx.training = true;
  ctx.generator = &g;
  backward(sum(a.forward(x, o, ctx)));
  for (auto* m : a.mixtures())
    for (int64_t e = 0; e < E; ++e) {
      EXPECT_EQ(m->experts[size_t(e)]->weight.grad().defined(), e == m->chosen) << "expert " << e;
      EXPECT_EQ(m->experts[size_t(e)]->bias.grad().defined(), e == m->chosen) << "expert " << e;
    }

  Linear layer(D, 5);
  AdaMixLoraLayer l(D, 5, 2, 4.0, 0.0, E, E);
  test::randomize(l, 6);
  l.set_requires_grad(true);
  Tensor x32 = convert(x, DType::F32);
  backward(sum(l.forward(layer, x32, layer.base_forward(x32), ctx)));
  for (int64_t e = 0; e < E; ++e) {
    EXPECT_EQ(l.experts_A[size_t(e)].grad().defined(), e == l.chosen_A) << "A expert " << e;
    EXPECT_EQ(l.experts_B[size_t(e)].grad().defined(), e == l.chosen_B) << "B expert " << e;
  }
}

TEST(AdaMix, Gradcheck) {
  AdaMixAdapter a(options("pfeiffer"), E, 2, DType::F64);
  test::randomize(a, 9);
  a.set_requires_grad(true);
  Tensor x = test::rand_input({B, T, D}, 1), o = test::rand_input({B, T, D}, 2);
  std::vector<Tensor> inputs{x, o};
  for (auto& [n, p] : a.named_parameters()) inputs.push_back(p);
  auto eval = [&](const std::vector<Tensor>&) { return a.forward(x, o, {}); };
  EXPECT_EQ(gradcheck(eval, inputs), "");
  // A training forward with a fixed pick (the same seed every call).
  auto train = [&](const std::vector<Tensor>&) {
    Generator g(2);
    ForwardContext ctx;
    ctx.training = true;
    ctx.generator = &g;
    return a.forward(x, o, ctx);
  };
  EXPECT_EQ(gradcheck(train, inputs), "");

  Linear layer(D, 5);
  layer.weight = test::rand_input({5, D}, 3, DType::F64, false);
  layer.bias = test::rand_input({5}, 4, DType::F64, false);
  AdaMixLoraLayer l(D, 5, 2, 4.0, 0.0, E, E);
  for (auto& t : l.experts_A) t = convert(t, DType::F64);
  for (auto& t : l.experts_B) t = convert(t, DType::F64);
  std::vector<Tensor> lin{test::rand_input({T, B, D}, 5)};  // used transposed: a non-contiguous input
  for (int64_t e = 0; e < E; ++e) lin.push_back(test::rand_input({2, D}, 10 + uint64_t(e)));
  for (int64_t e = 0; e < E; ++e) lin.push_back(test::rand_input({5, 2}, 20 + uint64_t(e)));
  auto f = [&](const std::vector<Tensor>& t) {
    for (int64_t e = 0; e < E; ++e) l.experts_A[size_t(e)] = t[size_t(1 + e)], l.experts_B[size_t(e)] = t[size_t(1 + E + e)];
    Tensor xt = transpose(t[0], 0, 1);
    return l.forward(layer, xt, layer.base_forward(xt), {});
  };
  EXPECT_EQ(gradcheck(f, lin), "");
}

// A one-layer model for the LoRA variant through the PEFT core.
struct OneLinear : Module {
  Linear lin{D, 6};
  OneLinear() { register_module("lin", &lin); }
};

TEST(AdaMix, LoraAveragesAndMergesAsLora) {
  OneLinear model;
  PeftConfig c = parse_peft_config({{"peft_type", "VLPEFT_ADAMIX"}, {"adamix_variant", "lora"}, {"num_experts", E},
                                    {"r", 3}, {"lora_alpha", 6}, {"expert_init", "independent"},
                                    {"target_modules", {"lin"}}});
  add_adapter(model, c, "default", 2);
  auto* l = dynamic_cast<AdaMixLoraLayer*>(model.lin.adapters[0].second.get());
  ASSERT_NE(l, nullptr);
  EXPECT_EQ(l->experts_A.size(), size_t(E));
  EXPECT_FALSE(test::all_close(l->experts_A[0], l->experts_A[1], 0.0, 1e-6)) << "independent init";
  {
    Generator g(3);
    NoGradGuard no_grad;
    for (auto& t : l->experts_B) uniform_(t, -0.5, 0.5, &g);
  }
  Tensor x = test::rand_input({B, T, D}, 1, DType::F32, false);
  NoGradGuard no_grad;
  Tensor y = model.lin.forward(x, {});
  // By hand: W0 x + b + s · x mean(A)ᵀ mean(B)ᵀ in float64.
  Tensor A = hand_mean(l->experts_A), Bm = hand_mean(l->experts_B);
  Tensor ref = add(linear(convert(x, DType::F64), convert(model.lin.weight, DType::F64), convert(model.lin.bias, DType::F64)),
                   mul(linear(linear(convert(x, DType::F64), A), Bm), 2.0));
  EXPECT_TRUE(test::all_close(y, ref, 0.0, 1e-5));
  Tensor w0 = clone(model.lin.weight);
  merge_adapters(model, {"default"});
  EXPECT_TRUE(test::all_close(model.lin.forward(x, {}), y, 0.0, 1e-5)) << "merged = unmerged inference";
  unmerge_adapters(model);
  EXPECT_TRUE(test::all_close(model.lin.weight, w0, 0.0, 1e-6));
}

TEST(AdaMix, SharingAndInitOptions) {
  auto t5 = test::tiny_t5();
  add_adapter(*t5, parse_peft_config({{"peft_type", "VLPEFT_ADAMIX"}, {"num_experts", 3}, {"reduction_factor", 4},
                                      {"share_down", true}}),
              "default", 1);
  int sites = 0;
  for (auto& [name, site] : sublayer_sites(*t5))
    for (auto& [n, a] : site->adapters) {
      auto* am = dynamic_cast<AdaMixAdapter*>(a.get());
      ASSERT_NE(am, nullptr);
      auto mix = am->mixtures();
      EXPECT_EQ(mix[0]->experts.size(), 1u) << "share_down: one down-projection";
      ASSERT_EQ(mix[1]->experts.size(), 3u);
      // expert_init "copy": every up expert starts as the first.
      EXPECT_TRUE(test::all_close(mix[1]->experts[2]->weight, mix[1]->experts[0]->weight, 0.0, 0.0));
      ++sites;
    }
  EXPECT_GT(sites, 0);
  std::set<std::string> names;
  for (auto& [n, p] : t5->named_parameters())
    if (n.find(".adapters.") != std::string::npos) names.insert(n.substr(n.find(".adapters.")));
  EXPECT_TRUE(names.count(".adapters.default.down.0.weight"));
  EXPECT_TRUE(names.count(".adapters.default.up.2.bias"));
  EXPECT_FALSE(names.count(".adapters.default.down.1.weight"));

  auto bad = [](const nlohmann::json& j) {
    return test::error_of([&] {
      auto m = test::tiny_t5();
      add_adapter(*m, parse_peft_config(j, "cfg.json"), "default", 1);
    });
  };
  EXPECT_NE(bad({{"peft_type", "VLPEFT_ADAMIX"}, {"adamix_variant", "prefix"}}).find("'adamix_variant'"),
            std::string::npos);
  EXPECT_NE(bad({{"peft_type", "VLPEFT_ADAMIX"}, {"num_experts", 0}}).find("'num_experts'"), std::string::npos);
  EXPECT_NE(bad({{"peft_type", "VLPEFT_ADAMIX"}, {"expert_init", "random"}}).find("'expert_init'"), std::string::npos);
}

TEST(AdaMix, ConsistencyLossIsTheSymmetricKl) {
  Tensor a = test::rand_input({2, 3, 5}, 1), b = test::rand_input({2, 3, 5}, 2);
  EXPECT_NEAR(adamix_consistency_loss(a, a).item(), 0.0, 1e-15);
  // By hand: mean over the 6 rows of ½ Σ_c (p − q)(log p − log q).
  std::vector<double> va = to_vector(a), vb = to_vector(b);
  double total = 0, masked = 0;
  const std::vector<double> mask = {1, 0, 1, 1, 0, 1};
  for (size_t r = 0; r < 6; ++r) {
    double za = 0, zb = 0;
    for (size_t c = 0; c < 5; ++c) za += std::exp(va[r * 5 + c]), zb += std::exp(vb[r * 5 + c]);
    double kl = 0;
    for (size_t c = 0; c < 5; ++c) {
      double p = std::exp(va[r * 5 + c]) / za, q = std::exp(vb[r * 5 + c]) / zb;
      kl += 0.5 * (p - q) * (std::log(p) - std::log(q));
    }
    total += kl / 6.0;
    masked += mask[r] * kl / 4.0;
  }
  EXPECT_NEAR(adamix_consistency_loss(a, b).item(), total, 1e-12);
  EXPECT_NEAR(adamix_consistency_loss(b, a).item(), total, 1e-12) << "symmetric";
  Tensor m = from_vector(mask, {2, 3}, DType::F64);
  EXPECT_NEAR(adamix_consistency_loss(a, b, m).item(), masked, 1e-12);
  EXPECT_EQ(gradcheck([&](const std::vector<Tensor>& t) { return adamix_consistency_loss(t[0], t[1], m); }, {a, b}),
            "");
}

}  // namespace
}  // namespace vlp::peft
