// Bottleneck adapters (models/peft/adapter.h): each placement's forward against a plain float64 evaluation,
// gradcheck, multi-task selection, half-shared sharing exactly the up-projection, zero-up no-op, inits.
#include "models/attention.h"
#include "models/peft/adapter.h"
#include "tests/peft_adapters/peft_test_util.h"

namespace vlp::peft {
namespace {

using test::Vec;

constexpr int64_t B = 2, T = 3, D = 8, M = 4;

BottleneckOptions options(const std::string& placement, const std::string& act, double scaling = 1.0,
                          bool learned = false) {
  BottleneckOptions o;
  o.d_model = D, o.bottleneck = M, o.placement = placement, o.non_linearity = act;
  o.scaling = scaling, o.learned_scaling = learned;
  return o;
}

// The site result for every token, from the adapter's own tensors read as plain numbers.
Vec reference(const BottleneckAdapter& a, const Tensor& x, const Tensor& o, int slot, const LayerNorm* ln) {
  auto* down = dynamic_cast<DenseProjection*>(a.down[size_t(slot)]);
  auto* up = dynamic_cast<DenseProjection*>(a.up[a.up.size() == 1 ? 0 : size_t(slot)]);
  test::Mat Wd = test::mat_of(down->weight), Wu = test::mat_of(up->weight);
  Vec cd = to_vector(down->bias), cu = to_vector(up->bias);
  Vec xs = to_vector(x), os = to_vector(o), out;
  const double s = a.options.learned_scaling ? a.scale.item() : a.options.scaling;
  for (int64_t t = 0; t < x.size(0) * x.size(1); ++t) {
    Vec xt = test::row(xs, t, D), ot = test::row(os, t, D), z;
    if (a.options.placement == "parallel") z = xt;
    else if (a.options.placement == "houlsby") z = ot;
    else {
      z = ot;
      for (int64_t i = 0; i < D; ++i) z[size_t(i)] += xt[size_t(i)];
      if (ln) z = test::layer_norm_ref(z, to_vector(ln->weight), to_vector(ln->bias), ln->eps);
    }
    Vec h = test::affine(Wd, cd, z);
    for (auto& v : h) v = test::ref_act(a.options.non_linearity, v);
    Vec u = test::affine(Wu, cu, h);
    for (int64_t i = 0; i < D; ++i) out.push_back((a.options.skip ? ot[size_t(i)] : 0.0) + s * u[size_t(i)]);
  }
  return out;
}

struct Case {
  std::string placement, act;
  double scaling;
  bool learned, with_norm;
};

class Placements : public ::testing::TestWithParam<Case> {};

TEST_P(Placements, ForwardMatchesFloat64FormulaAndGradchecks) {
  const Case c = GetParam();
  BottleneckAdapter a(options(c.placement, c.act, c.scaling, c.learned), dense_projections(DType::F64), DType::F64);
  test::randomize(a, 11);
  if (c.learned) fill_(a.scale, 1.7);
  LayerNorm ln(D);
  ln.weight = convert(ln.weight, DType::F64), ln.bias = convert(ln.bias, DType::F64);
  uniform_(ln.weight, 0.5, 1.5), uniform_(ln.bias, -0.2, 0.2);
  if (c.with_norm) a.block_norm = &ln;
  Tensor x = test::rand_input({B, T, D}, 1), o = test::rand_input({B, T, D}, 2);
  Tensor y = a.forward(x, o, {});
  EXPECT_TRUE(test::values_are(y, reference(a, x, o, 0, c.with_norm ? &ln : nullptr), 1e-12));

  test::set_requires_grad(a);
  std::vector<Tensor> inputs{x, o};
  for (auto& [n, p] : a.named_parameters()) inputs.push_back(p);
  auto f = [&](const std::vector<Tensor>&) { return a.forward(x, o, {}); };
  EXPECT_EQ(gradcheck(f, inputs), "");
}

INSTANTIATE_TEST_SUITE_P(Adapter, Placements,
                         ::testing::Values(Case{"houlsby", "gelu_new", 1.0, false, false},
                                           Case{"houlsby", "swish", 1.0, false, false},
                                           Case{"pfeiffer", "relu", 1.0, false, true},
                                           Case{"pfeiffer", "relu", 1.0, false, false},
                                           Case{"parallel", "relu", 4.0, false, false},
                                           Case{"parallel", "relu", 1.0, true, false}));

TEST(Adapter, WithoutSkipReturnsTheBottleneckAlone) {
  auto o_ = options("houlsby", "gelu_new");
  o_.skip = false;
  BottleneckAdapter a(o_, dense_projections(DType::F64), DType::F64);
  test::randomize(a, 3);
  Tensor x = test::rand_input({B, T, D}, 1, DType::F64, false), o = test::rand_input({B, T, D}, 2, DType::F64, false);
  EXPECT_TRUE(test::values_are(a.forward(x, o, {}), reference(a, x, o, 0, nullptr), 1e-12));
  EXPECT_TRUE(test::all_close(a.forward(x, o, {}), a.delta(x, o, {}), 0, 0));
}

TEST(Adapter, MultipleSelectsTheTasksModule) {
  auto o_ = options("houlsby", "gelu_new");
  o_.sharing = "multiple";
  o_.tasks = {"vqa", "gqa", "nlvr"};
  BottleneckAdapter a(o_, dense_projections(DType::F64), DType::F64);
  test::randomize(a, 5);
  std::vector<std::string> names;
  for (auto& [n, p] : a.named_parameters()) names.push_back(n);
  EXPECT_EQ(names, (std::vector<std::string>{"vqa.down.weight", "vqa.down.bias", "vqa.up.weight", "vqa.up.bias",
                                             "gqa.down.weight", "gqa.down.bias", "gqa.up.weight", "gqa.up.bias",
                                             "nlvr.down.weight", "nlvr.down.bias", "nlvr.up.weight", "nlvr.up.bias"}));
  Tensor x = test::rand_input({B, T, D}, 1, DType::F64, false), o = test::rand_input({B, T, D}, 2, DType::F64, false);
  std::vector<std::vector<double>> outs;
  for (int task = 0; task < 3; ++task) {
    ForwardContext ctx;
    ctx.task = task;
    Tensor y = a.forward(x, o, ctx);
    EXPECT_TRUE(test::values_are(y, reference(a, x, o, task, nullptr), 1e-12)) << "task " << task;
    outs.push_back(to_vector(y));
  }
  EXPECT_NE(outs[0], outs[1]);
  EXPECT_NE(outs[1], outs[2]);
  ForwardContext bad;
  bad.task = 3;
  EXPECT_THROW(a.forward(x, o, bad), Error);

  // Single mode ignores the task id.
  BottleneckAdapter s(options("houlsby", "gelu_new"), dense_projections(DType::F64), DType::F64);
  test::randomize(s, 5);
  ForwardContext t2;
  t2.task = 2;
  EXPECT_TRUE(test::all_close(s.forward(x, o, t2), s.forward(x, o, {}), 0, 0));
}

TEST(Adapter, HalfSharedSharesExactlyTheUpProjection) {
  auto o_ = options("houlsby", "gelu_new");
  o_.sharing = "half_shared";
  o_.tasks = {"vqa", "gqa"};
  BottleneckAdapter a(o_, dense_projections(DType::F64), DType::F64);
  test::randomize(a, 9);
  std::vector<std::string> names;
  for (auto& [n, p] : a.named_parameters()) names.push_back(n);
  EXPECT_EQ(names, (std::vector<std::string>{"up.weight", "up.bias", "vqa.down.weight", "vqa.down.bias",
                                             "gqa.down.weight", "gqa.down.bias"}));
  ASSERT_EQ(a.up.size(), 1u);
  ASSERT_EQ(a.down.size(), 2u);
  EXPECT_NE(a.down[0], a.down[1]);
  test::set_requires_grad(a);
  Tensor x = test::rand_input({B, T, D}, 1, DType::F64, false), o = test::rand_input({B, T, D}, 2, DType::F64, false);
  for (int task = 0; task < 2; ++task) {
    ForwardContext ctx;
    ctx.task = task;
    EXPECT_TRUE(test::values_are(a.forward(x, o, ctx), reference(a, x, o, task, nullptr), 1e-12));
  }
  // A task-1 loss reaches the shared up-projection and gqa's down-projection, never vqa's.
  ForwardContext ctx;
  ctx.task = 1;
  backward(sum(a.forward(x, o, ctx) * a.forward(x, o, ctx)));
  auto* vqa_down = dynamic_cast<DenseProjection*>(a.down[0]);
  auto* gqa_down = dynamic_cast<DenseProjection*>(a.down[1]);
  auto* up = dynamic_cast<DenseProjection*>(a.up[0]);
  EXPECT_FALSE(vqa_down->weight.grad().defined());
  EXPECT_TRUE(gqa_down->weight.grad().defined());
  EXPECT_TRUE(up->weight.grad().defined());
}

TEST(Adapter, ZeroUpInitIsABitExactNoOp) {
  BottleneckAdapter a(options("houlsby", "gelu_new"), dense_projections());
  Generator g(1);
  init_bottleneck(a, "zero_up", "t5", g);
  Tensor x = test::rand_input({B, T, D}, 1, DType::F32, false), o = test::rand_input({B, T, D}, 2, DType::F32, false);
  EXPECT_EQ(to_vector(a.forward(x, o, {})), to_vector(o));
  // The down-projection is still the linear default (not zero), so gradients reach W_up.
  auto* down = dynamic_cast<DenseProjection*>(a.down[0]);
  double s = 0;
  for (double v : to_vector(down->weight)) s += std::abs(v);
  EXPECT_GT(s, 0.0);
}

TEST(Adapter, InitSchemes) {
  auto stats = [](const Tensor& t) {
    auto v = to_vector(t);
    double mean = 0, sq = 0, mx = 0;
    for (double x : v) mean += x, sq += x * x, mx = std::max(mx, std::abs(x));
    mean /= double(v.size());
    return std::tuple<double, double, double>(mean, std::sqrt(sq / double(v.size()) - mean * mean), mx);
  };
  BottleneckOptions o;
  o.d_model = 256, o.bottleneck = 64;
  Generator g(3);
  {
    BottleneckAdapter a(o, dense_projections());
    init_bottleneck(a, "vl_adapter", "bart", g);  // N(0, 0.02), zero biases
    auto* d = dynamic_cast<DenseProjection*>(a.down[0]);
    auto [m, sd, mx] = stats(d->weight);
    EXPECT_NEAR(sd, 0.02, 0.001);
    EXPECT_EQ(stats(d->bias), std::make_tuple(0.0, 0.0, 0.0));
  }
  {
    BottleneckAdapter a(o, dense_projections());
    init_bottleneck(a, "vl_adapter", "t5", g);  // nn.Linear default: U(±1/sqrt(fan_in)) for weight and bias
    auto* d = dynamic_cast<DenseProjection*>(a.down[0]);
    auto [m, sd, mx] = stats(d->weight);
    EXPECT_LE(mx, 1.0 / 16.0);
    EXPECT_NEAR(sd, 1.0 / 16.0 / std::sqrt(3.0), 0.002);
    EXPECT_GT(std::get<2>(stats(d->bias)), 0.0);
  }
  {
    BottleneckAdapter a(o, dense_projections());
    init_bottleneck(a, "houlsby", "t5", g);  // truncated N(0, 0.01) on ±0.02
    auto* u = dynamic_cast<DenseProjection*>(a.up[0]);
    EXPECT_LE(std::get<2>(stats(u->weight)), 0.02);
    EXPECT_NEAR(std::get<1>(stats(u->weight)), 0.0088, 0.0006);  // std of N(0,1) truncated at ±2: 0.880
    EXPECT_EQ(stats(u->bias), std::make_tuple(0.0, 0.0, 0.0));    // biases start at zero, as in adapters
  }
  {
    BottleneckAdapter a(o, dense_projections());
    init_bottleneck(a, "mam_adapter", "t5", g);
    EXPECT_EQ(std::get<2>(stats(dynamic_cast<DenseProjection*>(a.up[0])->weight)), 0.0);
    EXPECT_GT(std::get<2>(stats(dynamic_cast<DenseProjection*>(a.down[0])->weight)), 0.0);
  }
  BottleneckAdapter a(o, dense_projections());
  EXPECT_THROW(init_bottleneck(a, "nope", "t5", g), Error);
}

// Pre-LN sites also pass the stream before the norm: Pfeiffer and parallel read it as x in place of the
// normed sublayer input (adapters' residual_input); Houlsby reads only the output.
TEST(Adapter, PreLnResidualReplacesTheInputAsBlockInput) {
  Tensor normed = test::rand_input({2, 3, D}, 11, DType::F64, false);
  Tensor stream = test::rand_input({2, 3, D}, 12, DType::F64, false);
  Tensor o = test::rand_input({2, 3, D}, 13, DType::F64, false);
  SublayerSite site;
  for (const char* placement : {"pfeiffer", "parallel", "houlsby"}) {
    auto a = std::make_shared<BottleneckAdapter>(options(placement, "relu"), dense_projections(DType::F64), DType::F64);
    test::randomize(*a, 4);
    Tensor with = a->forward_with_residual(normed, stream, o, {});
    EXPECT_TRUE(test::all_close(with, a->forward(stream, o, {}), 0, 0)) << placement;
    if (std::string(placement) != "houlsby") {
      EXPECT_FALSE(test::all_close(with, a->forward(normed, o, {}), 1e-6, 0)) << placement;
    }
    attach_adapter(site, placement, a);
    // Through the site, the residual reaches every adapter in turn.
    Tensor chained = site.forward(normed, o, {}, stream);
    Tensor h = o;
    for (auto& [n, m] : site.adapters) h = m->forward(stream, h, {});
    EXPECT_TRUE(test::all_close(chained, h, 0, 0)) << placement;
  }
}

TEST(Adapter, OptionErrorsNameTheProblem) {
  auto o = options("diagonal", "relu");
  EXPECT_THROW(BottleneckAdapter(o, dense_projections()), Error);
  o = options("houlsby", "relu");
  o.sharing = "multiple";
  EXPECT_THROW(BottleneckAdapter(o, dense_projections()), Error);  // no tasks
  o = options("houlsby", "not_an_activation");
  EXPECT_THROW(BottleneckAdapter(o, dense_projections()), Error);
}

}  // namespace
}  // namespace vlp::peft

namespace vlp::peft {
namespace {

// VL-Adapter's placement: the backbone calls the site before its dropout, x + Drop(A(Sublayer(x))); the
// adapter-hub placements run after it, x + A(Drop(Sublayer(x))).
TEST(Adapter, BeforeDropoutPlacementAtTheSite) {
  BottleneckOptions o;
  o.d_model = 8, o.bottleneck = 4;
  auto a = std::make_shared<BottleneckAdapter>(o, dense_projections(DType::F64), DType::F64);
  test::randomize(*a, 2);
  SublayerSite site;
  attach_adapter(site, "default", a);
  Tensor x = test::rand_input({2, 3, 8}, 1, DType::F64, false), out = test::rand_input({2, 3, 8}, 2, DType::F64, false);
  auto run = [&](bool before) {
    site.before_dropout = before;
    Generator g(5);
    ForwardContext ctx;
    ctx.training = true, ctx.generator = &g;
    return sublayer_output(site, x, out, 0.5, ctx);
  };
  Generator g1(5), g2(5);
  EXPECT_TRUE(test::all_close(run(true), dropout(a->forward(x, out, {}), 0.5, true, &g1), 0, 0));
  Tensor dropped = dropout(out, 0.5, true, &g2);
  EXPECT_TRUE(test::all_close(run(false), a->forward(x, dropped, {}), 0, 0));
  EXPECT_NE(to_vector(run(true)), to_vector(run(false)));
}

}  // namespace
}  // namespace vlp::peft
