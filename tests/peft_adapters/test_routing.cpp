// Routing functions, routed LoRA and routed adapters (models/peft/routing.h): each function against its
// formula evaluated with loops, gradcheck, the reshape-compat variant, the zero-B / zero-up no-op at step 0
// on tiny T5 and BART (bit-identical logits), and the routed layers against float64 evaluations.
#include "models/peft/routing.h"
#include "models/gpt2.h"
#include "tests/peft_adapters/peft_test_util.h"

namespace vlp::peft {
namespace {

using test::Vec;

// f(x_t, x_v) by loops over plain numbers. x_t [B, T, r], x_v [B, N, r].
Vec route_ref(int fn, const Tensor& xt, const Tensor& xv, bool compat) {
  const int64_t B = xt.size(0), T = xt.size(1), r = xt.size(2), N = xv.size(1);
  Vec a = to_vector(xt), v = to_vector(xv), out;
  auto A = [&](int64_t b, int64_t t, int64_t i) { return a[size_t((b * T + t) * r + i)]; };
  auto V = [&](int64_t b, int64_t n, int64_t i) { return v[size_t((b * N + n) * r + i)]; };
  // x_vᵀ[b] as an r x N matrix: the transpose, or the row-major reinterpretation of [N, r] as [r, N].
  auto Vt = [&](int64_t b, int64_t i, int64_t n) {
    return compat ? v[size_t(b * N * r + i * N + n)] : V(b, n, i);
  };
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t j = 0; j < r; ++j) {
        double s = 0;
        if (fn == 1) s = A(b, t, j) * V(b, 0, j);
        if (fn == 2) s = A(b, t, j) + V(b, 0, j);
        if (fn == 3)
          for (int64_t n = 0; n < N; ++n) {
            double dot = 0;
            for (int64_t i = 0; i < r; ++i) dot += A(b, t, i) * Vt(b, i, n);
            s += dot * V(b, n, j);
          }
        if (fn == 4) {
          double rowsum = 0;
          for (int64_t i = 0; i < r; ++i) rowsum += A(b, t, i);
          s = rowsum * V(b, 0, j);
        }
        out.push_back(s);
      }
  return out;
}

TEST(Routing, FunctionsMatchTheirFormulasAndGradcheck) {
  Tensor xt = test::rand_input({2, 5, 4}, 1), xv = test::rand_input({2, 1, 4}, 2);
  for (int fn = 1; fn <= 4; ++fn) {
    EXPECT_TRUE(test::values_are(route(fn, xt, xv), route_ref(fn, xt, xv, false), 1e-13)) << "function " << fn;
    auto f = [&](const std::vector<Tensor>& in) { return route(fn, in[0], in[1]); };
    EXPECT_EQ(gradcheck(f, {xt, xv}), "") << "function " << fn;
  }
  // N_v = 1: function 3 is (x_t · x_v) x_v and the reshape equals the transpose.
  EXPECT_TRUE(test::all_close(route(3, xt, xv, true), route(3, xt, xv, false), 0, 0));
}

TEST(Routing, MatrixMultiplyOneWithVisualTokensAndReshapeCompat) {
  Tensor xt = test::rand_input({2, 3, 4}, 3), xv = test::rand_input({2, 6, 4}, 4);
  EXPECT_TRUE(test::values_are(route(3, xt, xv), route_ref(3, xt, xv, false), 1e-13));
  EXPECT_TRUE(test::values_are(route(3, xt, xv, true), route_ref(3, xt, xv, true), 1e-13));
  EXPECT_NE(to_vector(route(3, xt, xv, true)), to_vector(route(3, xt, xv)));
  auto f = [&](const std::vector<Tensor>& in) { return route(3, in[0], in[1], true); };
  EXPECT_EQ(gradcheck(f, {xt, xv}), "");
  // A permuted (non-contiguous) x_t.
  Tensor xt_p = permute(test::rand_input({3, 2, 4}, 5), {1, 0, 2});
  EXPECT_TRUE(test::values_are(route(3, xt_p, xv), route_ref(3, contiguous(xt_p), xv, false), 1e-13));
  for (int fn : {1, 2, 4}) EXPECT_THROW(route(fn, xt, xv), Error) << "function " << fn << " needs N_v = 1";
  EXPECT_THROW(route(5, xt, xv), Error);
}

TEST(Routing, VisualInputShapes) {
  ForwardContext ctx;
  EXPECT_THROW(routing_visual(ctx, "none", DType::F64, "test"), Error);
  ctx.visual = test::rand_input({2, 8}, 1, DType::F32, false);
  EXPECT_EQ(routing_visual(ctx, "none", DType::F64, "test").shape(), Shape({2, 1, 8}));
  ctx.visual = test::rand_input({2, 5, 8}, 1, DType::F64, false);
  Tensor pooled = routing_visual(ctx, "mean", DType::F64, "test");
  EXPECT_EQ(pooled.shape(), Shape({2, 1, 8}));
  EXPECT_TRUE(test::all_close(pooled, mean(ctx.visual, {1}, true), 0, 1e-15));
}

// Routed LoRA: y + (α/r) B f(A x, A x_R) for every token, from the adapter's tensors.
TEST(RoutedLora, MatchesFloat64FormulaAndGradchecks) {
  const int64_t in = 6, out = 5, r = 3;
  for (int fn = 0; fn <= 4; ++fn) {
    RoutedLoraOptions o;
    o.r = r, o.alpha = 6.0, o.routing = fn;
    RoutedLora a(o, in, out, DType::F64);
    test::randomize(a, 20 + fn);
    std::vector<std::string> names;
    for (auto& [n, p] : a.named_parameters()) names.push_back(n);
    EXPECT_EQ(names, (std::vector<std::string>{"lora_A.weight", "lora_B.weight"}));
    Linear layer(in, out);
    Tensor x = test::rand_input({2, 4, in}, 1), y = test::rand_input({2, 4, out}, 2);
    ForwardContext ctx;
    ctx.visual = test::rand_input({2, in}, 3, DType::F64, false);
    Tensor got = a.forward(layer, x, y, ctx);
    test::Mat A = test::mat_of(a.slots[0]->lora_A.weight), Bm = test::mat_of(a.slots[0]->lora_B.weight);
    Vec xs = to_vector(x), ys = to_vector(y), vs = to_vector(ctx.visual), expect;
    Vec xt_all, xv_all;
    for (int64_t t = 0; t < 8; ++t) {
      Vec h = test::affine(A, {}, test::row(xs, t, in));
      xt_all.insert(xt_all.end(), h.begin(), h.end());
    }
    for (int64_t b = 0; b < 2; ++b) {
      Vec h = test::affine(A, {}, test::row(vs, b, in));
      xv_all.insert(xv_all.end(), h.begin(), h.end());
    }
    Vec f = fn == 0 ? xt_all
                    : route_ref(fn, from_vector(xt_all, {2, 4, r}, DType::F64),
                                from_vector(xv_all, {2, 1, r}, DType::F64), false);
    for (int64_t t = 0; t < 8; ++t) {
      Vec d = test::affine(Bm, {}, test::row(f, t, r));
      for (int64_t j = 0; j < out; ++j) expect.push_back(ys[size_t(t * out + j)] + 2.0 * d[size_t(j)]);
    }
    EXPECT_TRUE(test::values_are(got, expect, 1e-12)) << "function " << fn;
    test::set_requires_grad(a);
    std::vector<Tensor> inputs{x, y, a.slots[0]->lora_A.weight, a.slots[0]->lora_B.weight};
    auto g = [&](const std::vector<Tensor>&) { return a.forward(layer, x, y, ctx); };
    EXPECT_EQ(gradcheck(g, inputs), "") << "function " << fn;
    EXPECT_FALSE(a.mergeable());
  }
}

TEST(RoutedLora, MultipleModeOnePairPerTask) {
  RoutedLoraOptions o;
  o.r = 2, o.sharing = "multiple", o.tasks = {"vqa", "caption"};
  RoutedLora a(o, 4, 4, DType::F64);
  std::vector<std::string> names;
  for (auto& [n, p] : a.named_parameters()) names.push_back(n);
  EXPECT_EQ(names, (std::vector<std::string>{"vqa.lora_A.weight", "vqa.lora_B.weight", "caption.lora_A.weight",
                                             "caption.lora_B.weight"}));
  test::randomize(a, 4);
  Linear layer(4, 4);
  Tensor x = test::rand_input({1, 2, 4}, 1, DType::F64, false), y = zeros({1, 2, 4}, DType::F64);
  ForwardContext c0, c1;
  c0.visual = c1.visual = test::rand_input({1, 4}, 2, DType::F64, false);
  c1.task = 1;
  EXPECT_NE(to_vector(a.forward(layer, x, y, c0)), to_vector(a.forward(layer, x, y, c1)));
  // Task 1 alone uses the caption pair: zeroing vqa's B leaves it unchanged.
  Tensor before = a.forward(layer, x, y, c1);
  zeros_(a.slots[0]->lora_B.weight);
  EXPECT_EQ(to_vector(a.forward(layer, x, y, c1)), to_vector(before));
  c1.task = 2;
  EXPECT_THROW(a.forward(layer, x, y, c1), Error);
}

// Attaches routed LoRA (zero B) to the q/v projections and routed adapters (zero up) to every sublayer site
// of a tiny model: the logits are bit-identical to the base model's at step 0, and training moves them.
template <class Model>
void expect_noop_at_step0(Model& model, int64_t d_model, int64_t vocab, const std::vector<std::string>& qv) {
  Seq2SeqInput in = test::tiny_batch(vocab);
  ForwardContext ctx;
  ctx.visual = test::rand_input({2, d_model}, 9, DType::F32, false);
  const std::vector<double> base = to_vector(model.forward(in, ctx).logits);
  Generator g(1);
  int linears = 0, sites = 0;
  for (auto& [name, m] : model.named_modules()) {
    if (auto* l = dynamic_cast<Linear*>(m)) {
      for (const auto& s : qv)
        if (name.size() > s.size() && name.substr(name.size() - s.size() - 1) == "." + s) {
          RoutedLoraOptions o;
          o.r = 4, o.alpha = 4, o.routing = 1 + linears % 4;
          auto a = std::make_shared<RoutedLora>(o, l->in_features(), l->out_features());
          kaiming_uniform_(a->slots[0]->lora_A.weight, std::sqrt(5.0), &g);
          attach_adapter(*l, "default", a);
          ++linears;
        }
    } else if (auto* site = dynamic_cast<SublayerSite*>(m)) {
      BottleneckOptions o;
      o.d_model = d_model, o.bottleneck = 4, o.routing = 1 + sites % 4;
      auto a = std::make_shared<BottleneckAdapter>(o, dense_projections());
      init_bottleneck(*a, "zero_up", "t5", g);
      attach_adapter(*site, "default", a);
      ++sites;
    }
  }
  EXPECT_GT(linears, 0);
  EXPECT_GT(sites, 0);
  EXPECT_EQ(to_vector(model.forward(in, ctx).logits), base);
  // One SGD step on the adapters changes the output (B and W_up receive gradients).
  model.set_requires_grad(false);
  // (Module::set_requires_grad: a fresh parameter has no autograd state, so a copy's flag would not stick.)
  for (auto& [n, m] : model.named_modules())
    if (n.size() > 17 && n.substr(n.size() - 17) == ".adapters.default") m->set_requires_grad(true);
  std::vector<Tensor> params;
  for (auto& [n, p] : model.named_parameters())
    if (n.find(".adapters.") != std::string::npos) params.push_back(p);
  backward(model.forward(in, ctx).loss);
  {
    NoGradGuard ng;
    for (auto& p : params)
      if (p.grad().defined()) add_(p, p.grad(), -0.5);
  }
  EXPECT_NE(to_vector(model.forward(in, ctx).logits), base);
}

TEST(RoutedLora, ZeroInitIsANoOpOnTinyT5AndBart) {
  auto t5 = test::tiny_t5();
  expect_noop_at_step0(*t5, t5->config.d_model, t5->config.vocab_size, {"q", "v"});
  auto bart = test::tiny_bart();
  expect_noop_at_step0(*bart, bart->config.d_model, bart->config.vocab_size, {"q_proj", "v_proj"});
}

TEST(RoutedAdapter, MatchesFloat64Formula) {
  const int64_t D = 6, M = 3;
  for (int fn = 1; fn <= 4; ++fn) {
    BottleneckOptions o;
    o.d_model = D, o.bottleneck = M, o.routing = fn, o.non_linearity = "gelu";
    BottleneckAdapter a(o, dense_projections(DType::F64), DType::F64);
    test::randomize(a, 30 + fn);
    Tensor x = test::rand_input({2, 3, D}, 1), out = test::rand_input({2, 3, D}, 2);
    ForwardContext ctx;
    ctx.visual = test::rand_input({2, 1, D}, 3, DType::F64, false);
    auto* dn = dynamic_cast<DenseProjection*>(a.down[0]);
    auto* up = dynamic_cast<DenseProjection*>(a.up[0]);
    test::Mat Wd = test::mat_of(dn->weight), Wu = test::mat_of(up->weight);
    Vec cd = to_vector(dn->bias), cu = to_vector(up->bias), os = to_vector(out), vs = to_vector(ctx.visual);
    Vec xt, xv;
    for (int64_t t = 0; t < 6; ++t) {
      Vec h = test::affine(Wd, cd, test::row(os, t, D));
      xt.insert(xt.end(), h.begin(), h.end());
    }
    for (int64_t b = 0; b < 2; ++b) {
      Vec h = test::affine(Wd, cd, test::row(vs, b, D));
      xv.insert(xv.end(), h.begin(), h.end());
    }
    Vec f = route_ref(fn, from_vector(xt, {2, 3, M}, DType::F64), from_vector(xv, {2, 1, M}, DType::F64), false);
    Vec expect;
    for (int64_t t = 0; t < 6; ++t) {
      Vec h = test::row(f, t, M);
      for (auto& v : h) v = test::ref_act("gelu", v);
      Vec u = test::affine(Wu, cu, h);
      for (int64_t j = 0; j < D; ++j) expect.push_back(os[size_t(t * D + j)] + u[size_t(j)]);
    }
    EXPECT_TRUE(test::values_are(a.forward(x, out, ctx), expect, 1e-12)) << "function " << fn;
    test::set_requires_grad(a);
    std::vector<Tensor> inputs{x, out};
    for (auto& [n, p] : a.named_parameters()) inputs.push_back(p);
    auto g = [&](const std::vector<Tensor>&) { return a.forward(x, out, ctx); };
    EXPECT_EQ(gradcheck(g, inputs), "") << "function " << fn;
  }
}

}  // namespace
}  // namespace vlp::peft

namespace vlp::peft {
namespace {

// Grouped layout (GPT-2 c_attn, spec §3.4): A [2r, d] over Q and V, B [2 d_g, r]; K gets no update and f acts
// on the whole 2r vector.
TEST(RoutedLora, GroupedQvLayoutMatchesFloat64Formula) {
  const int64_t in = 4, out = 6, r = 2, w = 2;
  for (int fn : {0, 1, 4}) {
    RoutedLoraOptions o;
    o.r = r, o.alpha = 2.0, o.routing = fn, o.groups = {true, false, true};
    RoutedLora a(o, in, out, DType::F64);
    EXPECT_EQ(a.slots[0]->lora_A.weight.shape(), Shape({2 * r, in}));
    EXPECT_EQ(a.slots[0]->lora_B.weight.shape(), Shape({2 * w, r}));
    test::randomize(a, 40 + fn);
    Linear layer(in, out);
    Tensor x = test::rand_input({1, 3, in}, 1), y = test::rand_input({1, 3, out}, 2);
    ForwardContext ctx;
    ctx.visual = test::rand_input({1, in}, 3, DType::F64, false);
    test::Mat A = test::mat_of(a.slots[0]->lora_A.weight), Bm = test::mat_of(a.slots[0]->lora_B.weight);
    Vec xs = to_vector(x), ys = to_vector(y), xt, expect;
    for (int64_t t = 0; t < 3; ++t) {
      Vec h = test::affine(A, {}, test::row(xs, t, in));
      xt.insert(xt.end(), h.begin(), h.end());
    }
    Vec xv = test::affine(A, {}, to_vector(ctx.visual));
    Vec f = fn == 0 ? xt
                    : route_ref(fn, from_vector(xt, {1, 3, 2 * r}, DType::F64),
                                from_vector(xv, {1, 1, 2 * r}, DType::F64), false);
    for (int64_t t = 0; t < 3; ++t) {
      for (int64_t j = 0; j < out; ++j) {
        const int64_t g = j / w;
        double d = 0;
        if (g != 1) {
          const int64_t k = g == 0 ? 0 : 1;  // enabled-group index
          for (int64_t i = 0; i < r; ++i) d += Bm(k * w + j % w, i) * f[size_t(t * 2 * r + k * r + i)];
        }
        expect.push_back(ys[size_t(t * out + j)] + d);
      }
    }
    EXPECT_TRUE(test::values_are(a.forward(layer, x, y, ctx), expect, 1e-12)) << "function " << fn;
    test::set_requires_grad(a);
    auto g = [&](const std::vector<Tensor>&) { return a.forward(layer, x, y, ctx); };
    EXPECT_EQ(gradcheck(g, {x, a.slots[0]->lora_A.weight, a.slots[0]->lora_B.weight}), "") << "function " << fn;
  }
  RoutedLoraOptions bad;
  bad.groups = {true, false, true};
  EXPECT_THROW(RoutedLora(bad, 4, 7), Error);  // 7 does not split into 3 groups
}

std::unique_ptr<GPT2LMHeadModel> tiny_gpt2() {
  auto m = std::make_unique<GPT2LMHeadModel>(read_gpt2_config(test::fixture_dir("gpt2") + "/config.json"));
  load_checkpoint(*m, test::fixture_dir("gpt2"));
  return m;
}

TEST(RoutedLora, Gpt2GroupedNoOpAndSharedBlockAdapterRoundTrip) {
  GPT2Input in;
  in.input_ids = from_data<int64_t>({5, 9, 14, 3, 7, 21, 30, 2}, {2, 4});
  in.labels = in.input_ids;
  ForwardContext ctx;
  ctx.visual = test::rand_input({2, 24}, 5, DType::F32, false);
  auto model = tiny_gpt2();
  const auto base = to_vector(model->forward(in, ctx).logits);
  add_adapter(*model, parse_peft_config(nlohmann::json::parse(R"({"peft_type": "VLPEFT_ROUTED_LORA", "r": 4,
                                                                   "routing_function": 4})")));
  auto* lora = dynamic_cast<RoutedLora*>(model->transformer.blocks[0]->attn.c_attn.adapters.at(0).second.get());
  ASSERT_NE(lora, nullptr);
  EXPECT_EQ(lora->slots[0]->lora_A.weight.shape(), Shape({8, 24}));
  EXPECT_EQ(lora->slots[0]->lora_B.weight.shape(), Shape({48, 4}));
  EXPECT_EQ(to_vector(model->forward(in, ctx).logits), base);  // B = 0

  // Routed adapter: one module per block serving the attention and MLP sites.
  auto m2 = tiny_gpt2();
  PeftConfig c = parse_peft_config(nlohmann::json::parse(R"({"peft_type": "VLPEFT_ROUTED_ADAPTER",
                                                            "routing_function": 2, "bottleneck_dim": 6})"));
  add_adapter(*m2, c, "default", 4);
  int with_params = 0, borrowed = 0;
  for (auto& [name, s] : sublayer_sites(*m2))
    for (auto& [a, mod] : s->adapters) {
      with_params += mod->num_parameters() > 0;
      borrowed += dynamic_cast<BorrowedSublayerAdapter*>(mod.get()) != nullptr;
    }
  EXPECT_EQ(with_params, 2);
  EXPECT_EQ(borrowed, 2);
  Generator g(6);
  {
    NoGradGuard ng;
    for (auto& [n, p] : m2->named_parameters())
      if (n.find(".adapters.") != std::string::npos) uniform_(p, -0.3, 0.3, &g);
  }
  const auto logits = to_vector(m2->forward(in, ctx).logits);
  auto dir = test::temp_dir("peft_adapters_gpt2_routed");
  save_adapter(*m2, c, "default", dir.string());
  auto m3 = tiny_gpt2();
  load_adapter(*m3, dir.string());
  EXPECT_EQ(to_vector(m3->forward(in, ctx).logits), logits);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace vlp::peft
