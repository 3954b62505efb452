// OFT against HF PEFT: Neumann (5 and 3 terms) and exact Cayley, r or block size, block_share, COFT;
// no-op init, merge/unmerge, orthogonality, gradcheck.
#include "fixture.h"
#include "models/peft/linear_common.h"
#include "models/peft/oft.h"

namespace vlp::test {
namespace {

TEST(OFT, MatchesHfPeft) {
  for (const char* name : {"oft", "oft_cayley", "oft_r", "oft_share", "oft_coft"}) {
    SCOPED_TRACE(name);
    ParityCase c(name, false, peft::attach_oft);
    c.check_forward_backward();
    c.check_merge();
    c.check_disabled();
  }
}

TEST(OFT, BlockLayoutFromConfig) {
  ParityCase c("oft_r", false, peft::attach_oft);
  auto* a = dynamic_cast<peft::OftAdapter*>(c.chain->lin2.adapters[0].second.get());
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->num_blocks, 2);
  EXPECT_EQ(a->block_size, 6);
  EXPECT_EQ(peft::oft_adjust(12, 5), 4);
  EXPECT_EQ(peft::oft_adjust(16, 7), 8);
  EXPECT_EQ(peft::oft_adjust(12, 40), 12);
}

TEST(OFT, DefaultInitIsNoOp) {
  nlohmann::json j = {{"peft_type", "OFT"}, {"target_modules", {"lin1", "lin2"}}, {"oft_block_size", 4}};
  expect_noop_init(peft::attach_oft, j);
  j["use_cayley_neumann"] = false;
  expect_noop_init(peft::attach_oft, j, true);
}

TEST(OFT, ExactCayleyIsOrthogonal) {
  peft::OftOptions o;
  o.block_size = 4;
  o.use_cayley_neumann = false;
  o.init_weights = false;
  Generator gen(2);
  peft::OftAdapter a(8, o, gen);
  NoGradGuard no_grad;
  Tensor r = to(contiguous(a.rotation_blocks()), DType::F64);
  Tensor rrt = bmm(r, transpose(r, 1, 2));
  for (int64_t i = 0; i < 2; ++i) EXPECT_TRUE(all_close(select(rrt, 0, i), peft::identity(4, DType::F64), 0.0, 1e-6));
}

TEST(OFT, MergeFanInFanOut) {
  Chain chain(true);
  peft::PeftConfig config = peft::parse_peft_config(
      {{"peft_type", "OFT"}, {"target_modules", {"lin1", "lin2"}}, {"oft_block_size", 4}, {"init_weights", false}});
  Generator gen(3);
  peft::AttachContext ctx{chain, config, "default", gen, ""};
  peft::attach_oft(ctx);
  Tensor x = rand_input({2, 3, kIn}, 5, DType::F32, false);
  NoGradGuard no_grad;
  Tensor y = chain.forward(x);
  Tensor w = clone(chain.lin1.weight);
  for (Linear* l : {&chain.lin1, &chain.lin2}) l->adapters[0].second->merge(*l);
  EXPECT_TRUE(all_close(chain.forward(x), y, 0.0, 1e-5));
  for (Linear* l : {&chain.lin1, &chain.lin2}) l->adapters[0].second->unmerge(*l);
  EXPECT_TRUE(all_close(chain.lin1.weight, w, 0.0, 1e-5));
}

void oft_gradcheck(bool neumann, bool share) {
  Linear layer(6, 4);
  layer.weight = rand_input({4, 6}, 1, DType::F64, false);
  layer.bias = rand_input({4}, 2, DType::F64, false);
  peft::OftOptions o;
  o.block_size = 3;
  o.block_share = share;
  o.use_cayley_neumann = neumann;
  Generator gen(1);
  peft::OftAdapter a(6, o, gen);
  std::vector<Tensor> in = {rand_input({2, 3, 6}, 3), mul(rand_input({share ? 1 : 2, 3}, 4, DType::F64, false), 0.5)};
  in[1].set_requires_grad(true);
  auto f = [&](const std::vector<Tensor>& t) {
    a.oft_R.weight = t[1];
    return a.forward(layer, t[0], Tensor(), ForwardContext{});
  };
  EXPECT_EQ(gradcheck(f, in), "");
}

TEST(OFT, Gradcheck) {
  oft_gradcheck(true, false);
  oft_gradcheck(false, false);
  oft_gradcheck(false, true);
}

TEST(OFT, BatchedInverseGradcheck) {
  Tensor eye = expand(reshape(peft::identity(3, DType::F64), {1, 3, 3}), {2, 3, 3});
  Tensor a = contiguous(add(rand_input({2, 3, 3}, 9, DType::F64, false), mul(eye, 3.0)));  // well conditioned
  a.set_requires_grad(true);
  EXPECT_EQ(gradcheck([](const std::vector<Tensor>& t) { return peft::batched_inverse(t[0], "test"); }, {a}), "");
}

}  // namespace
}  // namespace vlp::test
