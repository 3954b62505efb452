// Method combinations (models/peft/combinations.h) and the gate they use (gate.h): the gate's formula
// against a double-precision loop; each gated part against the same part ungated with the gate's constant
// value folded into its scaling (gate weight 0, bias b: g = σ(b) for every input); gradients by float64
// central differences; which parts VLPEFT_MAM and VLPEFT_UNIPELT attach on the tiny T5 and BART, and what
// they train; config errors; merge refused. Save/load round trips run with the other methods in
// test_methods.cpp.
#include <cmath>

#include "autograd/gradcheck.h"
#include "models/peft/adapter.h"
#include "models/peft/combinations.h"
#include "models/peft/lora.h"
#include "models/peft/prefix_tuning.h"
#include "tests/peft_adapters/peft_test_util.h"

namespace vlp::peft {
namespace {

PeftConfig config(const std::string& json_text) { return parse_peft_config(nlohmann::json::parse(json_text), "test"); }

double sigmoid_ref(double v) { return 1.0 / (1.0 + std::exp(-v)); }

// One Linear, as a model PEFT can target by name.
struct OneLinear : Module {
  Linear proj;
  OneLinear(int64_t in, int64_t out, DType dt) : proj(in, out) {
    Generator g(3);
    NoGradGuard ng;
    proj.weight = convert(proj.weight, dt), proj.bias = convert(proj.bias, dt);
    uniform_(proj.weight, -0.5, 0.5, &g), uniform_(proj.bias, -0.5, 0.5, &g);
    register_module("proj", &proj);
  }
  Tensor forward(const Tensor& x) const { return proj.forward(x); }
};

// The LoRA adapter on the layer, its tensors (F32 as in PEFT) made F64 for exact checks and random.
LoraLayer& f64_random_lora_of(OneLinear& m, uint64_t seed) {
  auto& l = dynamic_cast<LoraLayer&>(*m.proj.adapters.at(0).second);
  Generator gen(seed);
  for (Tensor* t : {&l.lora_A, &l.lora_B, &l.gate->weight, &l.gate->bias}) {
    *t = convert(*t, DType::F64);
    uniform_(*t, -1, 1, &gen);
  }
  return l;
}

TEST(Gate, MeanOverTokensOfTheSigmoid) {
  Generator gen(5);
  TokenGate gate(6, 2, DType::F64, Device::cpu(), false, gen);
  {
    NoGradGuard ng;
    uniform_(gate.weight, -1, 1, &gen), uniform_(gate.bias, -1, 1, &gen);
  }
  Tensor x = test::rand_input({3, 4, 6}, 9, DType::F64, false);
  const auto g = to_vector(gate.forward(x));
  ASSERT_EQ(g.size(), 6u);
  const auto xv = to_vector(x), w = to_vector(gate.weight), b = to_vector(gate.bias);
  for (int64_t bi = 0; bi < 3; ++bi)
    for (int64_t k = 0; k < 2; ++k) {
      double s = 0;
      for (int64_t t = 0; t < 4; ++t) {
        double z = b[size_t(k)];
        for (int64_t i = 0; i < 6; ++i) z += w[size_t(k * 6 + i)] * xv[size_t((bi * 4 + t) * 6 + i)];
        s += sigmoid_ref(z);
      }
      EXPECT_NEAR(g[size_t(bi * 2 + k)], s / 4.0, 1e-14);
    }
  // Init: W ~ N(0, 0.02) (small), bias zero or within nn.Linear's bound 1/sqrt(d).
  TokenGate zero_bias(200, 1, DType::F32, Device::cpu(), true, gen);
  const auto wz = to_vector(zero_bias.weight);
  double var = 0;
  for (double v : wz) var += v * v;
  EXPECT_NEAR(std::sqrt(var / double(wz.size())), 0.02, 0.005);
  EXPECT_EQ(to_vector(zero_bias.bias), std::vector<double>{0.0});
  TokenGate linear_bias(200, 1, DType::F32, Device::cpu(), false, gen);
  EXPECT_LE(std::abs(to_vector(linear_bias.bias)[0]), 1.0 / std::sqrt(200.0));
  EXPECT_NE(to_vector(linear_bias.bias)[0], 0.0);
}

TEST(Gate, GatedLoraIsLoraScaledByTheGateOfItsInput) {
  // Data-dependent gate against a hand-written loop: y = W x + b + g(x) B A x, g per example.
  OneLinear m(5, 4, DType::F64);
  add_adapter(m, config(R"({"peft_type": "LORA", "r": 2, "lora_alpha": 16, "target_modules": ["proj"],
                            "use_gating": true})"), "default", 4);
  ASSERT_TRUE(dynamic_cast<LoraLayer&>(*m.proj.adapters.at(0).second).gate);
  LoraLayer& l = f64_random_lora_of(m, 8);
  EXPECT_FALSE(l.mergeable());
  Tensor x = test::rand_input({2, 3, 5}, 10, DType::F64, false);
  const auto y = to_vector(m.forward(x));
  const auto xv = to_vector(x), W = to_vector(m.proj.weight), b = to_vector(m.proj.bias);
  const auto A = to_vector(l.lora_A), Bm = to_vector(l.lora_B), gw = to_vector(l.gate->weight);
  const double gb = to_vector(l.gate->bias)[0];
  for (int64_t e = 0; e < 2; ++e) {
    double g = 0;
    for (int64_t t = 0; t < 3; ++t) {
      double z = gb;
      for (int64_t i = 0; i < 5; ++i) z += gw[size_t(i)] * xv[size_t((e * 3 + t) * 5 + i)];
      g += sigmoid_ref(z) / 3.0;
    }
    for (int64_t t = 0; t < 3; ++t)
      for (int64_t o = 0; o < 4; ++o) {
        const double* xr = xv.data() + (e * 3 + t) * 5;
        double base = b[size_t(o)], up = 0;
        for (int64_t i = 0; i < 5; ++i) base += W[size_t(o * 5 + i)] * xr[i];
        for (int64_t r = 0; r < 2; ++r) {
          double down = 0;
          for (int64_t i = 0; i < 5; ++i) down += A[size_t(r * 5 + i)] * xr[i];
          up += Bm[size_t(o * 2 + r)] * down;
        }
        EXPECT_NEAR(y[size_t((e * 3 + t) * 4 + o)], base + g * up, 1e-12);
      }
  }
  EXPECT_THROW(merge_adapters(m, {}), Error);
}

TEST(Gate, GatedLoraGradientsByCentralDifferences) {
  OneLinear m(4, 3, DType::F64);
  add_adapter(m, config(R"({"peft_type": "LORA", "r": 2, "target_modules": ["proj"], "use_gating": true})"),
              "default", 4);
  LoraLayer& l = f64_random_lora_of(m, 12);
  Tensor x = test::rand_input({2, 3, 4}, 13);
  // The inputs of the check are the adapter's own tensors: f writes them into the layer and runs it.
  std::vector<Tensor> inputs{x, l.lora_A, l.lora_B, l.gate->weight, l.gate->bias};
  auto f = [&](const std::vector<Tensor>& in) {
    l.lora_A = in[1], l.lora_B = in[2], l.gate->weight = in[3], l.gate->bias = in[4];
    return m.forward(in[0]);
  };
  EXPECT_EQ(gradcheck(f, inputs), "");
}

// The gated parts of a model equal the ungated parts with σ(b) folded in, when the gates are constant.
template <class Model>
void gated_parts_equal_ungated_with_the_constant_folded_in(const std::function<std::unique_ptr<Model>()>& make,
                                                           const char* lora_targets) {
  const double bias = 0.7, g = sigmoid_ref(bias);
  Seq2SeqInput in = test::tiny_batch(make()->config.vocab_size);
  const std::string common_prefix = R"("num_virtual_tokens": 3, "prefix_projection": false)";
  const std::string targets = std::string(R"("target_modules": )") + lora_targets;
  // Gated UniPELT with constant gates, all parts.
  auto gated = make();
  add_adapter(*gated, config(R"({"peft_type": "VLPEFT_UNIPELT", "prefix_tuning": {)" + common_prefix +
                             R"(}, "adapter": {"reduction_factor": 4}, "lora": {"r": 2, )" + targets + "}}"),
              "default", 5);
  // The same three methods ungated, one adapter name each, with σ(b) folded into their scalings.
  auto plain = make();
  add_adapter(*plain, config(R"({"peft_type": "VLPEFT_PREFIX_TUNING", )" + common_prefix + "}"), "p", 5);
  add_adapter(*plain, config(R"({"peft_type": "VLPEFT_ADAPTER", "placement": "pfeiffer", "reduction_factor": 4,
                                 "init_weights": "bert", "scaling": )" + std::to_string(g) + "}"), "a", 5);
  add_adapter(*plain, config(R"({"peft_type": "LORA", "r": 2, "lora_alpha": )" + std::to_string(2 * g) + ", " +
                             targets + "}"), "l", 5);
  set_active_adapters(*plain, {"p", "a", "l"});
  // Same random values for the shared tensors; the prefix table scaled by g (keys and values are rows of it).
  Generator gen(21);
  NoGradGuard ng;
  std::map<std::string, Tensor> plain_params;
  for (auto& [n, p] : plain->named_parameters()) plain_params[n] = p;
  int gates = 0, copied = 0;
  for (auto& [n, p] : gated->named_parameters()) {
    if (n.find(".gate.") != std::string::npos) {
      if (n.size() > 5 && n.compare(n.size() - 5, 5, ".bias") == 0) fill_(p, bias), ++gates;
      else fill_(p, 0.0);
      continue;
    }
    if (n.find(".adapters.default.") == std::string::npos && n.rfind("peft_shared.", 0) != 0) continue;
    uniform_(p, -0.4, 0.4, &gen);
    std::string other = n;
    if (n.rfind("peft_shared.default.", 0) == 0) {
      other = "peft_shared.p." + n.substr(20);
      copy_(plain_params.at(other), mul(p, g));
    } else {
      const size_t at = n.find(".adapters.default.");
      const bool is_lora = n.find("lora_") != std::string::npos;
      other = n.substr(0, at) + (is_lora ? ".adapters.l." : ".adapters.a.") + n.substr(at + 18);
      copy_(plain_params.at(other), p);
    }
    ++copied;
  }
  EXPECT_GT(gates, 3);
  EXPECT_GT(copied, 6);
  const ForwardContext ctx;
  EXPECT_TRUE(test::all_close(gated->forward(in, ctx).logits, plain->forward(in, ctx).logits, 1e-5, 1e-5));
}

TEST(Combinations, GatedPartsEqualUngatedWithTheConstantFoldedInOnBart) {
  gated_parts_equal_ungated_with_the_constant_folded_in<BartForConditionalGeneration>(test::tiny_bart,
                                                                                       R"(["q_proj", "v_proj"])");
}
TEST(Combinations, GatedPartsEqualUngatedWithTheConstantFoldedInOnT5) {
  gated_parts_equal_ungated_with_the_constant_folded_in<T5ForConditionalGeneration>(test::tiny_t5, R"(["q", "v"])");
}

struct PartCounts {
  int prefixes = 0, gated_prefixes = 0, adapters = 0, gated_adapters = 0, loras = 0, gated_loras = 0;
};
PartCounts count_parts(Module& model) {
  PartCounts c;
  for (auto& [n, s] : attention_sites(model))
    for (auto& [a, m] : s->adapters)
      if (auto* p = dynamic_cast<PrefixAdapter*>(m.get())) c.prefixes++, c.gated_prefixes += p->gate != nullptr;
  for (auto& [n, s] : sublayer_sites(model))
    for (auto& [a, m] : s->adapters)
      if (auto* b = dynamic_cast<BottleneckAdapter*>(m.get())) c.adapters++, c.gated_adapters += b->gate != nullptr;
  for (auto& [n, l] : linear_sites(model))
    for (auto& [a, m] : l->adapters)
      if (auto* r = dynamic_cast<LoraLayer*>(m.get())) c.loras++, c.gated_loras += r->gate != nullptr;
  return c;
}

TEST(Combinations, UnipeltAttachesThreeGatedPartsAndTrainsThem) {
  auto model = test::tiny_bart();
  add_adapter(*model, config(R"({"peft_type": "VLPEFT_UNIPELT"})"), "default", 6);
  const PartCounts c = count_parts(*model);
  const int64_t L = model->config.encoder_layers + model->config.decoder_layers;
  EXPECT_EQ(c.prefixes, model->config.encoder_layers + 2 * model->config.decoder_layers);  // self + cross
  EXPECT_EQ(c.gated_prefixes, c.prefixes);
  EXPECT_EQ(c.adapters, L);  // Pfeiffer: after every feed-forward
  EXPECT_EQ(c.gated_adapters, c.adapters);
  EXPECT_EQ(c.loras, 2 * (L + model->config.decoder_layers));  // q_proj, v_proj of every attention
  EXPECT_EQ(c.gated_loras, c.loras);
  // Defaults: 10 prefix tokens through an MLP of width 512; adapter d/16; LoRA r 8.
  const auto shared = model->find_module("peft_shared.default")->named_parameters();
  bool mlp512 = false;
  for (auto& [n, p] : shared) mlp512 = mlp512 || (p.dim() == 2 && p.size(0) == 512);
  EXPECT_TRUE(mlp512);
  for (auto& [n, s] : sublayer_sites(*model))
    for (auto& [a, m] : s->adapters)
      EXPECT_EQ(dynamic_cast<BottleneckAdapter&>(*m).options.bottleneck, model->config.d_model / 16);
  for (auto& [n, l] : linear_sites(*model))
    for (auto& [a, m] : l->adapters) EXPECT_EQ(dynamic_cast<LoraLayer&>(*m).r, 8);
  // One backward: exactly the adapter's tensors (and the prefix MLP) get gradients.
  Seq2SeqInput in = test::tiny_batch(model->config.vocab_size);
  ForwardContext ctx;
  backward(model->forward(in, ctx).loss);
  int trainable = 0;
  for (auto& [n, p] : model->named_parameters()) {
    const bool peft = n.find(".adapters.default.") != std::string::npos || n.rfind("peft_shared.", 0) == 0;
    EXPECT_EQ(p.requires_grad(), peft) << n;
    if (p.requires_grad()) {
      EXPECT_TRUE(p.grad().defined()) << n;
      ++trainable;
    }
  }
  EXPECT_GT(trainable, 0);
  EXPECT_THROW(merge_adapters(*model, {}), Error);
}

TEST(Combinations, MamIsAPrefixAndAParallelAdapterThatStartsAsANoOp) {
  auto model = test::tiny_t5();
  add_adapter(*model, config(R"({"peft_type": "VLPEFT_MAM", "prefix_tuning": {"num_virtual_tokens": 4}})"),
              "default", 6);
  const PartCounts c = count_parts(*model);
  EXPECT_EQ(c.prefixes, model->config.num_layers + 2 * model->config.decoder_layers());
  EXPECT_EQ(c.gated_prefixes + c.gated_adapters + c.loras, 0);
  EXPECT_EQ(c.adapters, model->config.num_layers + model->config.decoder_layers());
  for (auto& [n, s] : sublayer_sites(*model))
    for (auto& [a, m] : s->adapters) {
      const auto& b = dynamic_cast<BottleneckAdapter&>(*m);
      EXPECT_EQ(b.options.placement, "parallel");
      EXPECT_EQ(b.options.scaling, 4.0);
      EXPECT_EQ(b.options.bottleneck, model->config.d_model / 2);
    }
  // "mam_adapter" init: W_up = 0, so with the prefix switched off the model is the base model.
  Seq2SeqInput in = test::tiny_batch(model->config.vocab_size);
  ForwardContext ctx;
  auto base = test::tiny_t5();
  const auto base_logits = to_vector(base->forward(in, ctx).logits);
  for (auto& [n, s] : attention_sites(*model))
    for (auto& [a, m] : s->adapters) m->active = false;
  EXPECT_EQ(to_vector(model->forward(in, ctx).logits), base_logits);
  for (auto& [n, s] : attention_sites(*model))
    for (auto& [a, m] : s->adapters) m->active = true;
  EXPECT_NE(to_vector(model->forward(in, ctx).logits), base_logits);
}

TEST(Combinations, PartsCanBeOverriddenOrSwitchedOff) {
  auto model = test::tiny_bart();
  add_adapter(*model, config(R"({"peft_type": "VLPEFT_UNIPELT", "lora": false,
                                 "adapter": {"bottleneck_dim": 5, "use_gating": false}})"), "default", 6);
  const PartCounts c = count_parts(*model);
  EXPECT_EQ(c.loras, 0);
  EXPECT_GT(c.adapters, 0);
  EXPECT_EQ(c.gated_adapters, 0);
  for (auto& [n, s] : sublayer_sites(*model))
    for (auto& [a, m] : s->adapters) EXPECT_EQ(dynamic_cast<BottleneckAdapter&>(*m).options.bottleneck, 5);
}

TEST(Combinations, ConfigErrorsNameTheField) {
  auto expect_error = [](const std::string& text, const std::string& part) {
    auto model = test::tiny_bart();
    try {
      add_adapter(*model, config(text), "default", 1);
      ADD_FAILURE() << "no error for " << text;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
    }
    EXPECT_TRUE(model->named_parameters().size() == test::tiny_bart()->named_parameters().size())
        << "a failed add_adapter leaves the model as it was";
  };
  expect_error(R"({"peft_type": "VLPEFT_UNIPELT", "r": 4})", "no field 'r'");
  expect_error(R"({"peft_type": "VLPEFT_MAM", "adapter": {"peft_type": "LORA"}})", "may not change");
  expect_error(R"({"peft_type": "VLPEFT_MAM", "adapter": 3})", "field 'adapter' must be");
  expect_error(R"({"peft_type": "VLPEFT_UNIPELT", "adapter": {"placement": "sideways"}})", "placement");
}

}  // namespace
}  // namespace vlp::peft
