// Compacter's PHM layers, Hyperformer's generated weights and AdapterFusion / Stack / Average / Parallel,
// each against plain float64 evaluations of spec/peft.md §2.6, §2.7, §4.20, with gradchecks.
#include "models/peft/compacter.h"
#include "models/peft/fusion.h"
#include "models/peft/hyperformer.h"
#include "tests/peft_adapters/peft_test_util.h"

namespace vlp::peft {
namespace {

using test::Vec;

// H[a p + κ, c q + π] = Σ_i A_i[a, c] B_i[κ, π], written out with loops.
Vec phm_ref(const Tensor& rule, const Tensor& Bs, int64_t n, int64_t din, int64_t dout) {
  const int64_t p = din / n, q = dout / n;
  Vec A = to_vector(rule), Bv = to_vector(Bs), H(size_t(din * dout), 0.0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t a = 0; a < n; ++a)
      for (int64_t c = 0; c < n; ++c)
        for (int64_t k = 0; k < p; ++k)
          for (int64_t pi = 0; pi < q; ++pi)
            H[size_t((a * p + k) * dout + c * q + pi)] +=
                A[size_t((i * n + a) * n + c)] * Bv[size_t((i * p + k) * q + pi)];
  return H;
}

TEST(Compacter, PhmMatrixIsTheKroneckerSumAndGradchecks) {
  for (int64_t rank : {0, 2}) {
    const int64_t n = 2, din = 6, dout = 4;
    PhmProjection p(n, din, dout, rank, nullptr, DType::F64);
    test::randomize(p, 4 + uint64_t(rank));
    Tensor Bs = rank == 0 ? p.W : matmul(p.W_left, p.W_right);
    Vec H = phm_ref(p.phm_rule, Bs, n, din, dout);
    EXPECT_TRUE(test::values_are(p.phm_matrix(), H, 1e-13)) << "rank " << rank;
    // Same as Σ_i kron(A_i, B_i) through the library's kron.
    Tensor via_kron = kron(select(p.phm_rule, 0, 0), select(Bs, 0, 0));
    for (int64_t i = 1; i < n; ++i) via_kron = via_kron + kron(select(p.phm_rule, 0, i), select(Bs, 0, i));
    EXPECT_TRUE(test::all_close(p.phm_matrix(), via_kron, 0, 1e-14));
    // y = x H + c for a batch of tokens.
    Tensor x = test::rand_input({2, 3, din}, 1);
    Vec xs = to_vector(x), c = to_vector(p.bias), expect;
    for (int64_t t = 0; t < 6; ++t)
      for (int64_t o = 0; o < dout; ++o) {
        double s = c[size_t(o)];
        for (int64_t i = 0; i < din; ++i) s += xs[size_t(t * din + i)] * H[size_t(i * dout + o)];
        expect.push_back(s);
      }
    EXPECT_TRUE(test::values_are(p.forward(x), expect, 1e-12));
    test::set_requires_grad(p);
    std::vector<Tensor> in{x};
    for (auto& [name, t] : p.named_parameters()) in.push_back(t);
    auto f = [&](const std::vector<Tensor>&) { return p.forward(x); };
    EXPECT_EQ(gradcheck(f, in), "") << "rank " << rank;
  }
}

TEST(Compacter, SharedRuleAndParameterNames) {
  PhmSharedRules rules(2, DType::F64);
  test::randomize(rules, 2);
  PhmProjection a(2, 8, 4, 0, &rules.phm_rule_down, DType::F64), b(2, 8, 4, 1, &rules.phm_rule_down, DType::F64);
  std::vector<std::string> names;
  for (auto& [n, t] : a.named_parameters()) names.push_back(n);
  EXPECT_EQ(names, (std::vector<std::string>{"W", "bias"}));
  names.clear();
  for (auto& [n, t] : b.named_parameters()) names.push_back(n);
  EXPECT_EQ(names, (std::vector<std::string>{"W_left", "W_right", "bias"}));
  EXPECT_EQ(b.W_left.shape(), Shape({2, 4, 1}));
  test::randomize(a, 3);
  EXPECT_TRUE(test::values_are(a.phm_matrix(), phm_ref(rules.phm_rule_down, a.W, 2, 8, 4), 1e-13));
  // The shared rule is the model-level tensor itself: a change there changes every layer using it.
  fill_(rules.phm_rule_down, 0.0);
  EXPECT_EQ(to_vector(a.phm_matrix()), Vec(32, 0.0));
  EXPECT_THROW(PhmProjection(3, 8, 4, 0, nullptr), Error);  // n must divide the widths
}

TEST(Compacter, InitAndAdapterForward) {
  Generator g(5);
  PhmProjection p(2, 768, 96, 0, nullptr);
  init_phm(p, "xavier_uniform", 0.01, g);
  // Xavier-uniform with gain √2 on each [384, 48] slice: bound √2·√(6 / 432).
  const double bound = std::sqrt(2.0) * std::sqrt(6.0 / (384.0 + 48.0));
  double mx = 0;
  for (double v : to_vector(p.W)) mx = std::max(mx, std::abs(v));
  EXPECT_LE(mx, bound);
  EXPECT_GT(mx, 0.9 * bound);
  EXPECT_EQ(to_vector(p.bias), Vec(96, 0.0));
  double sq = 0;
  for (double v : to_vector(p.phm_rule)) sq += v * v;
  EXPECT_LT(std::sqrt(sq / 8.0), 0.03);

  // A Compacter adapter is the bottleneck of adapter.h around two PHM layers.
  BottleneckOptions o;
  o.d_model = 8, o.bottleneck = 4;
  ProjectionFactory make = [](int64_t in, int64_t out, const std::string&) -> std::unique_ptr<Projection> {
    return std::make_unique<PhmProjection>(2, in, out, 0, nullptr, DType::F64);
  };
  BottleneckAdapter a(o, make, DType::F64);
  test::randomize(a, 6);
  Tensor x = test::rand_input({1, 3, 8}, 1), out = test::rand_input({1, 3, 8}, 2);
  auto* dn = dynamic_cast<PhmProjection*>(a.down[0]);
  auto* up = dynamic_cast<PhmProjection*>(a.up[0]);
  Tensor expect = out + matmul(gelu_tanh(matmul(out, dn->phm_matrix()) + dn->bias), up->phm_matrix()) + up->bias;
  EXPECT_TRUE(test::all_close(a.forward(x, out, {}), expect, 0, 1e-13));
  test::set_requires_grad(a);
  std::vector<Tensor> in{x, out};
  for (auto& [n, t] : a.named_parameters()) in.push_back(t);
  auto f = [&](const std::vector<Tensor>&) { return a.forward(x, out, {}); };
  EXPECT_EQ(gradcheck(f, in), "");
}

HyperformerShared& tiny_hyper(Module& root, Generator& g) {
  HyperformerOptions o;
  o.num_tasks = 3, o.task_dim = 6, o.projected_dim = 4, o.hidden_dim = 5, o.d_model = 8, o.bottleneck = 2;
  auto& s = root.add_module<HyperformerShared>("peft_shared.default", o, DType::F64);
  s.add_stack("encoder", 2, {"sa", "ff"});
  s.add_stack("decoder", 2, {"sa", "ca", "ff"});
  init_hyperformer(s, g);
  return s;
}

TEST(Hyperformer, GeneratesPerTaskPerLayerWeightsOfTheRightShapes) {
  Module root;
  Generator g(3);
  auto& s = tiny_hyper(root, g);
  auto w = s.generate(0, "encoder", 0, "sa");
  EXPECT_EQ(w.down_weight.shape(), Shape({2, 8}));
  EXPECT_EQ(w.down_bias.shape(), Shape({2}));
  EXPECT_EQ(w.up_weight.shape(), Shape({8, 2}));
  EXPECT_EQ(w.up_bias.shape(), Shape({8}));
  auto differ = [](const HyperformerShared::Weights& a, const HyperformerShared::Weights& b) {
    return to_vector(a.up_weight) != to_vector(b.up_weight) && to_vector(a.down_weight) != to_vector(b.down_weight);
  };
  EXPECT_TRUE(differ(w, s.generate(1, "encoder", 0, "sa")));  // task
  EXPECT_TRUE(differ(w, s.generate(0, "encoder", 1, "sa")));  // layer
  EXPECT_TRUE(differ(w, s.generate(0, "encoder", 0, "ff")));  // block type
  EXPECT_TRUE(differ(w, s.generate(0, "decoder", 0, "sa")));  // stack
  EXPECT_EQ(to_vector(w.up_weight), to_vector(s.generate(0, "encoder", 0, "sa").up_weight));  // deterministic
  EXPECT_THROW(s.generate(3, "encoder", 0, "sa"), Error);
  EXPECT_THROW(s.generate(0, "encoder", 2, "sa"), Error);
  EXPECT_THROW(s.generate(0, "encoder", 0, "ca"), Error);
  // Parameter layout: one task table, per stack layer embeddings, projector and generators.
  EXPECT_EQ(s.task_embedding.shape(), Shape({3, 6}));
  EXPECT_EQ(s.stacks.at("decoder")->generators.size(), 3u);
  EXPECT_EQ(s.stacks.at("encoder")->generators.size(), 2u);
  EXPECT_EQ(s.stacks.at("encoder")->generators.at("sa")->up_weight.weight.shape(), Shape({16, 4}));
}

TEST(Hyperformer, GeneratedWeightsAndAdapterMatchFloat64Formula) {
  Module root;
  Generator g(4);
  auto& s = tiny_hyper(root, g);
  test::randomize(s, 8, 0.4);
  const int task = 2, layer = 1;
  HyperStack& st = *s.stacks.at("decoder");
  // z = LN(W2 relu(W1 [t; l] + c1) + c2)
  Vec tl = test::row(to_vector(s.task_embedding), task, 6);
  Vec l = test::row(to_vector(st.layer_embedding), layer, 6);
  tl.insert(tl.end(), l.begin(), l.end());
  Vec h = test::affine(test::mat_of(st.fc1.weight), to_vector(st.fc1.bias), tl);
  for (auto& v : h) v = std::max(v, 0.0);
  Vec z = test::layer_norm_ref(test::affine(test::mat_of(st.fc2.weight), to_vector(st.fc2.bias), h),
                               to_vector(st.norm_weight), to_vector(st.norm_bias), 1e-5);
  const HyperGenerators& gen = *st.generators.at("ca");
  Vec up_w = test::affine(test::mat_of(gen.up_weight.weight), to_vector(gen.up_weight.bias), z);
  Vec up_b = test::affine(test::mat_of(gen.up_bias.weight), to_vector(gen.up_bias.bias), z);
  Vec dn_w = test::affine(test::mat_of(gen.down_weight.weight), to_vector(gen.down_weight.bias), z);
  Vec dn_b = test::affine(test::mat_of(gen.down_bias.weight), to_vector(gen.down_bias.bias), z);
  auto w = s.generate(task, "decoder", layer, "ca");
  EXPECT_TRUE(test::values_are(w.up_weight, up_w, 1e-12));  // reshape(G_up z, [d, m]) row-major
  EXPECT_TRUE(test::values_are(w.up_bias, up_b, 1e-12));
  EXPECT_TRUE(test::values_are(w.down_weight, dn_w, 1e-12));
  EXPECT_TRUE(test::values_are(w.down_bias, dn_b, 1e-12));

  HyperformerAdapter a(&s, "decoder", layer, "ca");
  Tensor x = test::rand_input({2, 3, 8}, 1), o = test::rand_input({2, 3, 8}, 2);
  ForwardContext ctx;
  ctx.task = task;
  test::Mat Wd{2, 8, dn_w}, Wu{8, 2, up_w};
  Vec os = to_vector(o), expect;
  for (int64_t t = 0; t < 6; ++t) {
    Vec hh = test::affine(Wd, dn_b, test::row(os, t, 8));
    for (auto& v : hh) v = test::ref_act("gelu_new", v);
    Vec u = test::affine(Wu, up_b, hh);
    for (int64_t j = 0; j < 8; ++j) expect.push_back(os[size_t(t * 8 + j)] + u[size_t(j)]);
  }
  EXPECT_TRUE(test::values_are(a.forward(x, o, ctx), expect, 1e-12));
  // Gradcheck through the hypernetwork into the embeddings and generators.
  s.set_requires_grad(true);
  std::vector<Tensor> in{o, s.task_embedding, st.layer_embedding, st.fc1.weight, st.fc2.bias, st.norm_weight,
                         gen.up_weight.weight, gen.down_bias.bias};
  auto f = [&](const std::vector<Tensor>&) { return a.forward(x, o, ctx); };
  EXPECT_EQ(gradcheck(f, in), "");
}

// Two member adapters with random F64 weights.
struct Members {
  std::unique_ptr<BottleneckAdapter> a, b;
  Members() {
    BottleneckOptions o;
    o.d_model = 6, o.bottleneck = 3;
    a = std::make_unique<BottleneckAdapter>(o, dense_projections(DType::F64), DType::F64);
    o.placement = "parallel", o.scaling = 2.0;
    b = std::make_unique<BottleneckAdapter>(o, dense_projections(DType::F64), DType::F64);
    test::randomize(*a, 1);
    test::randomize(*b, 2);
  }
  std::vector<std::pair<std::string, BottleneckAdapter*>> list() { return {{"a", a.get()}, {"b", b.get()}}; }
};

TEST(Fusion, FuseMatchesFloat64FormulaAndGradchecks) {
  for (bool dynamic : {true, false}) {
    Members m;
    FusionAdapter f("fuse", m.list(), 6, dynamic, DType::F64);
    Generator g(3);
    init_fusion(f, g);
    if (dynamic) {  // identity + 1e-6 off the diagonal
      Vec v = to_vector(f.value_weight);
      EXPECT_EQ(v[0], 1.0);
      EXPECT_EQ(v[1], 1e-6);
    }
    test::randomize(f, 5);
    f.temperature = 1.5;
    Tensor x = test::rand_input({2, 2, 6}, 1), o = test::rand_input({2, 2, 6}, 2);
    Vec ua = to_vector(m.a->delta(x, o, {})), ub = to_vector(m.b->delta(x, o, {})), os = to_vector(o), expect;
    test::Mat Wq = test::mat_of(f.query->weight), Wk = test::mat_of(f.key->weight);
    Vec cq = to_vector(f.query->bias), ck = to_vector(f.key->bias);
    for (int64_t t = 0; t < 4; ++t) {
      Vec q = test::affine(Wq, cq, test::row(os, t, 6));
      Vec us[2] = {test::row(ua, t, 6), test::row(ub, t, 6)};
      double s[2];
      for (int i = 0; i < 2; ++i) {
        Vec k = test::affine(Wk, ck, us[i]);
        s[i] = 0;
        for (int j = 0; j < 6; ++j) s[i] += q[size_t(j)] * k[size_t(j)];
        s[i] /= 1.5;
      }
      double mx = std::max(s[0], s[1]), e0 = std::exp(s[0] - mx), e1 = std::exp(s[1] - mx);
      double al[2] = {e0 / (e0 + e1), e1 / (e0 + e1)};
      Vec y = test::row(os, t, 6);
      for (int i = 0; i < 2; ++i) {
        Vec v = dynamic ? test::affine(test::mat_of(f.value_weight), {}, us[i]) : us[i];
        for (int j = 0; j < 6; ++j) y[size_t(j)] += al[i] * v[size_t(j)];
      }
      expect.insert(expect.end(), y.begin(), y.end());
    }
    EXPECT_TRUE(test::values_are(f.forward(x, o, {}), expect, 1e-12)) << "dynamic " << dynamic;
    test::set_requires_grad(f);
    std::vector<Tensor> in{x, o};
    for (auto& [n, t] : f.named_parameters()) in.push_back(t);
    auto fn = [&](const std::vector<Tensor>&) { return f.forward(x, o, {}); };
    EXPECT_EQ(gradcheck(fn, in), "") << "dynamic " << dynamic;
  }
}

TEST(Fusion, StackAverageParallelAndRegulariser) {
  Members m;
  Tensor x = test::rand_input({4, 2, 6}, 1, DType::F64, false), o = test::rand_input({4, 2, 6}, 2, DType::F64, false);
  FusionAdapter stack("stack", m.list(), 6, true, DType::F64);
  EXPECT_TRUE(test::all_close(stack.forward(x, o, {}), m.b->forward(x, m.a->forward(x, o, {}), {}), 0, 0));
  FusionAdapter avg("average", m.list(), 6, true, DType::F64);
  avg.weights = {0.25, 0.75};
  EXPECT_TRUE(test::all_close(avg.forward(x, o, {}), o + m.a->delta(x, o, {}) * 0.25 + m.b->delta(x, o, {}) * 0.75,
                              0, 1e-15));
  FusionAdapter par("parallel", m.list(), 6, true, DType::F64);
  Tensor y = par.forward(x, o, {});
  EXPECT_TRUE(test::all_close(narrow(y, 0, 0, 2), m.a->forward(narrow(x, 0, 0, 2), narrow(o, 0, 0, 2), {}), 0, 0));
  EXPECT_TRUE(test::all_close(narrow(y, 0, 2, 2), m.b->forward(narrow(x, 0, 2, 2), narrow(o, 0, 2, 2), {}), 0, 0));
  EXPECT_THROW(par.forward(narrow(x, 0, 0, 3), narrow(o, 0, 0, 3), {}), Error);  // not n equal copies

  Module root;
  auto f = std::make_shared<FusionAdapter>("fuse", m.list(), 6, true, DType::F64);
  Generator g(1);
  init_fusion(*f, g);
  SublayerSite site;
  root.register_module("site", &site);
  attach_adapter(site, "fusion", f);
  // Identity + 1e-6 off-diagonal: ‖I − W_v‖² = 30 · 1e-12.
  EXPECT_NEAR(fusion_regularization(root).item(), 0.01 * 30e-12, 1e-24);
  fill_(f->value_weight, 0.0);
  EXPECT_NEAR(fusion_regularization(root).item(), 0.01 * 6, 1e-15);
  set_fusion_temperature(root, 50.0);
  EXPECT_EQ(f->temperature, 50.0);
  EXPECT_THROW(FusionAdapter("mix", m.list(), 6), Error);
}

}  // namespace
}  // namespace vlp::peft
