// VeRA against HF PEFT (Linear and GPT-2-style Conv1D layers), the shared projections regenerated
// bit-exactly from projection_prng_key, no-op init, merge, gradcheck.
#include "fixture.h"
#include "models/peft/vera.h"

namespace vlp::test {
namespace {

std::string vera_key(const std::string& p) { return default_file_key(p); }

TEST(VeRA, MatchesHfPeft) {
  for (auto [name, conv1d] : {std::pair{"vera", false}, std::pair{"vera_conv1d", true}}) {
    SCOPED_TRACE(name);
    ParityCase c(name, conv1d, peft::attach_vera, vera_key);
    c.check_forward_backward(vera_key);
    c.check_merge();
    c.check_disabled();
  }
}

TEST(VeRA, ProjectionsReproduceTorchGeneratorBitExactly) {
  for (auto [name, key] : {std::pair{"vera", 0}, std::pair{"vera_conv1d", 5}}) {
    SCOPED_TRACE(name);
    SafetensorsFile f = load_safetensors(fixture_path(std::string(name) + ".safetensors"));
    const Tensor& a = f.at("adapter.base_model.vera_A");
    const Tensor& b = f.at("adapter.base_model.vera_B");
    peft::VeraShared shared(int(a.size(0)), a.size(1), b.size(0), uint64_t(key));
    EXPECT_TRUE(all_close(shared.vera_A, a, 0.0, 0.0));
    EXPECT_TRUE(all_close(shared.vera_B, b, 0.0, 0.0));
  }
}

TEST(VeRA, SharedProjectionSizedToLargestTarget) {
  ParityCase c("vera", false, peft::attach_vera, vera_key);
  Module* shared = c.chain->find_module("peft_shared.default");
  ASSERT_NE(shared, nullptr);
  auto* s = dynamic_cast<peft::VeraShared*>(shared);
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(s->vera_A.shape(), (Shape{4, kIn}));
  EXPECT_EQ(s->vera_B.shape(), (Shape{kMid, 4}));
  EXPECT_FALSE(s->vera_A.requires_grad());
}

TEST(VeRA, DefaultInitIsNoOp) {
  expect_noop_init(peft::attach_vera, {{"peft_type", "VERA"}, {"target_modules", {"lin1", "lin2"}}, {"r", 4}});
  expect_noop_init(peft::attach_vera, {{"peft_type", "VERA"}, {"target_modules", {"lin1", "lin2"}}, {"r", 4}}, true);
}

TEST(VeRA, Gradcheck) {
  Linear layer(5, 4);
  layer.weight = rand_input({4, 5}, 1, DType::F64, false);
  layer.bias = rand_input({4}, 2, DType::F64, false);
  peft::VeraShared shared(3, 7, 6, 0);
  shared.vera_A = rand_input({3, 7}, 8, DType::F64, false);
  shared.vera_B = rand_input({6, 3}, 9, DType::F64, false);
  peft::VeraOptions o;
  o.r = 3;
  Generator gen(1);
  peft::VeraAdapter a(5, 4, &shared, o, gen);
  std::vector<Tensor> in = {rand_input({2, 3, 5}, 3), rand_input({4}, 4), rand_input({3}, 5)};
  auto f = [&](const std::vector<Tensor>& t) {
    a.vera_lambda_b = t[1];
    a.vera_lambda_d = t[2];
    return a.forward(layer, t[0], layer.base_forward(t[0]), ForwardContext{});
  };
  EXPECT_EQ(gradcheck(f, in), "");
}

}  // namespace
}  // namespace vlp::test
