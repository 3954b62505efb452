// LoKr against HF PEFT: full factors, decompose_both, decompose_factor; factorization; no-op inits; gradcheck.
#include "fixture.h"
#include "models/peft/lokr.h"

namespace vlp::test {
namespace {

TEST(LoKr, Factorization) {
  using P = std::pair<int64_t, int64_t>;
  EXPECT_EQ(peft::lokr_factorization(256), P(16, 16));
  EXPECT_EQ(peft::lokr_factorization(128), P(8, 16));
  EXPECT_EQ(peft::lokr_factorization(127), P(1, 127));
  EXPECT_EQ(peft::lokr_factorization(128, 4), P(4, 32));
  EXPECT_EQ(peft::lokr_factorization(768), P(24, 32));
  EXPECT_EQ(peft::lokr_factorization(2304), P(48, 48));
  EXPECT_EQ(peft::lokr_factorization(12), P(3, 4));
  EXPECT_EQ(peft::lokr_factorization(768, 5), P(4, 192));  // 5 does not divide: the nearest pair with m <= 5
}

TEST(LoKr, MatchesHfPeft) {
  for (const char* name : {"lokr", "lokr_both", "lokr_factor"}) {
    SCOPED_TRACE(name);
    ParityCase c(name, false, peft::attach_lokr);
    c.check_forward_backward();
    c.check_merge();
    c.check_disabled();
  }
}

TEST(LoKr, DecomposedFactorsWhereHfDecomposes) {
  ParityCase c("lokr_both", false, peft::attach_lokr);
  auto* a = dynamic_cast<peft::LokrAdapter*>(c.chain->lin1.adapters[0].second.get());
  ASSERT_NE(a, nullptr);
  EXPECT_TRUE(a->lokr_w1_a.defined() && a->lokr_w2_a.defined());
  EXPECT_FALSE(a->lokr_w1.defined() || a->lokr_w2.defined());
}

TEST(LoKr, DefaultAndLycorisInitAreNoOps) {
  nlohmann::json j = {{"peft_type", "LOKR"}, {"target_modules", {"lin1", "lin2"}}, {"r", 2}};
  expect_noop_init(peft::attach_lokr, j);
  j["init_weights"] = "lycoris";
  expect_noop_init(peft::attach_lokr, j);
  j["decompose_both"] = true;
  j["r"] = 1;
  expect_noop_init(peft::attach_lokr, j, true);
}

TEST(LoKr, Gradcheck) {
  Linear layer(16, 12);
  peft::LokrOptions o;
  o.r = 1;
  o.decompose_both = true;  // 12 = 3*4, 16 = 4*4: r = 1 < 2, both factors decomposed
  Generator gen(1);
  peft::LokrAdapter a(16, 12, o, gen);
  ASSERT_TRUE(a.lokr_w1_a.defined() && a.lokr_w2_a.defined());
  layer.weight = rand_input({12, 16}, 1, DType::F64, false);
  layer.bias = rand_input({12}, 2, DType::F64, false);
  std::vector<Tensor> in = {rand_input({3, 16}, 3), rand_input({3, 1}, 4), rand_input({1, 4}, 5),
                            rand_input({4, 1}, 6), rand_input({1, 4}, 7)};
  auto f = [&](const std::vector<Tensor>& t) {
    a.lokr_w1_a = t[1];
    a.lokr_w1_b = t[2];
    a.lokr_w2_a = t[3];
    a.lokr_w2_b = t[4];
    return a.forward(layer, t[0], layer.base_forward(t[0]), ForwardContext{});
  };
  EXPECT_EQ(gradcheck(f, in), "");
}

}  // namespace
}  // namespace vlp::test
