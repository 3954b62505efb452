// LoHa against HF PEFT (tools/reference/make_peft_linear_fixtures.py), no-op init, merge, gradcheck.
#include "fixture.h"
#include "models/peft/loha.h"

namespace vlp::test {
namespace {

TEST(LoHa, MatchesHfPeft) {
  ParityCase c("loha", false, peft::attach_loha);
  c.check_forward_backward();
  c.check_merge();
  c.check_disabled();
}

TEST(LoHa, RankAndAlphaPatterns) {
  ParityCase c("loha_pattern", false, peft::attach_loha);
  auto* a = dynamic_cast<peft::LohaAdapter*>(c.chain->lin2.adapters[0].second.get());
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->options.r, 2);
  EXPECT_DOUBLE_EQ(a->scaling, 1.5);
  c.check_forward_backward();
  c.check_merge();
}

TEST(LoHa, DefaultInitIsNoOp) {
  expect_noop_init(peft::attach_loha, {{"peft_type", "LOHA"}, {"target_modules", {"lin1", "lin2"}}});
  expect_noop_init(peft::attach_loha, {{"peft_type", "LOHA"}, {"target_modules", {"lin1", "lin2"}}}, true);
}

TEST(LoHa, MergesIntoFanInFanOutWeight) {
  Chain chain(true);
  peft::PeftConfig config = peft::parse_peft_config(
      {{"peft_type", "LOHA"}, {"target_modules", {"lin1", "lin2"}}, {"init_weights", false}, {"r", 3}});
  Generator gen(3);
  peft::AttachContext ctx{chain, config, "default", gen, ""};
  peft::attach_loha(ctx);
  Tensor x = rand_input({2, 3, kIn}, 5, DType::F32, false);
  NoGradGuard no_grad;
  Tensor y = chain.forward(x);
  for (Linear* l : {&chain.lin1, &chain.lin2}) l->adapters[0].second->merge(*l);
  EXPECT_TRUE(all_close(chain.forward(x), y, 0.0, 1e-5));
}

TEST(LoHa, ModuleDropoutSkipsInTraining) {
  Linear layer(6, 5);
  peft::LohaOptions o;
  o.r = 2;
  o.init_weights = false;
  o.module_dropout = 1.0;
  Generator gen(1);
  peft::LohaAdapter a(6, 5, o, gen);
  Tensor x = rand_input({4, 6}, 2, DType::F32, false);
  Tensor y0 = layer.base_forward(x);
  ForwardContext train;
  train.training = true;
  EXPECT_TRUE(all_close(a.forward(layer, x, y0, train), y0, 0.0, 0.0));
  EXPECT_FALSE(all_close(a.forward(layer, x, y0, ForwardContext{}), y0, 0.0, 1e-4));
}

TEST(LoHa, Gradcheck) {
  Linear layer(5, 4);
  peft::LohaOptions o;
  o.r = 3;
  o.alpha = 2.0;
  Generator gen(1);
  peft::LohaAdapter a(5, 4, o, gen);
  layer.weight = rand_input({4, 5}, 1, DType::F64, false);
  layer.bias = rand_input({4}, 2, DType::F64, false);
  std::vector<Tensor> in = {rand_input({2, 3, 5}, 3), rand_input({4, 3}, 4), rand_input({3, 5}, 5),
                            rand_input({4, 3}, 6), rand_input({3, 5}, 7)};
  auto f = [&](const std::vector<Tensor>& t) {
    a.hada_w1_a = t[1];
    a.hada_w1_b = t[2];
    a.hada_w2_a = t[3];
    a.hada_w2_b = t[4];
    return a.forward(layer, t[0], layer.base_forward(t[0]), ForwardContext{});
  };
  EXPECT_EQ(gradcheck(f, in), "");
}

}  // namespace
}  // namespace vlp::test
