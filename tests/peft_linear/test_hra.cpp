// HRA against HF PEFT (even and odd r, Gram-Schmidt), no-op init for even r, merge/unmerge, gradcheck.
#include "fixture.h"
#include "models/peft/hra.h"

namespace vlp::test {
namespace {

TEST(HRA, MatchesHfPeft) {
  for (const char* name : {"hra", "hra_odd", "hra_gs"}) {
    SCOPED_TRACE(name);
    ParityCase c(name, false, peft::attach_hra);
    c.check_forward_backward();
    c.check_merge();
    c.check_disabled();
  }
}

TEST(HRA, EvenRankInitIsNoOpOddIsNot) {
  nlohmann::json j = {{"peft_type", "HRA"}, {"target_modules", {"lin1", "lin2"}}, {"r", 4}};
  // Paired reflections cancel up to rounding: H x equals x to 1 ulp-level, so compare closely, not bitwise.
  Chain chain(false);
  Tensor x = rand_input({2, 3, kIn}, 5, DType::F32, false);
  NoGradGuard no_grad;
  Tensor base = chain.forward(x);
  peft::PeftConfig config = peft::parse_peft_config(j);
  Generator gen(11);
  peft::AttachContext ctx{chain, config, "default", gen, ""};
  peft::attach_hra(ctx);
  EXPECT_TRUE(all_close(chain.forward(x), base, 0.0, 1e-6));
  Chain odd(false);
  Tensor base_odd = odd.forward(x);
  j["r"] = 3;
  peft::PeftConfig c3 = peft::parse_peft_config(j);
  peft::AttachContext ctx3{odd, c3, "default", gen, ""};
  peft::attach_hra(ctx3);
  EXPECT_FALSE(all_close(odd.forward(x), base_odd, 0.0, 1e-4));
}

TEST(HRA, MergeFanInFanOut) {
  Chain chain(true);
  peft::PeftConfig config = peft::parse_peft_config(
      {{"peft_type", "HRA"}, {"target_modules", {"lin1", "lin2"}}, {"r", 3}, {"init_weights", false}});
  Generator gen(3);
  peft::AttachContext ctx{chain, config, "default", gen, ""};
  peft::attach_hra(ctx);
  Tensor x = rand_input({2, 3, kIn}, 5, DType::F32, false);
  NoGradGuard no_grad;
  Tensor y = chain.forward(x);
  Tensor w = clone(chain.lin1.weight);
  for (Linear* l : {&chain.lin1, &chain.lin2}) l->adapters[0].second->merge(*l);
  EXPECT_TRUE(all_close(chain.forward(x), y, 0.0, 1e-5));
  for (Linear* l : {&chain.lin1, &chain.lin2}) l->adapters[0].second->unmerge(*l);
  EXPECT_TRUE(all_close(chain.lin1.weight, w, 0.0, 1e-5));
}

TEST(HRA, Gradcheck) {
  for (bool gs : {false, true}) {
    SCOPED_TRACE(gs ? "gram-schmidt" : "reflections");
    Linear layer(5, 4);
    layer.weight = rand_input({4, 5}, 1, DType::F64, false);
    layer.bias = rand_input({4}, 2, DType::F64, false);
    peft::HraOptions o;
    o.r = 3;
    o.apply_gs = gs;
    Generator gen(1);
    peft::HraAdapter a(5, o, gen);
    std::vector<Tensor> in = {rand_input({2, 3, 5}, 3), rand_input({5, 3}, 4)};
    auto f = [&](const std::vector<Tensor>& t) {
      a.hra_u = t[1];
      return a.forward(layer, t[0], Tensor(), ForwardContext{});
    };
    EXPECT_EQ(gradcheck(f, in), "");
  }
}

}  // namespace
}  // namespace vlp::test
