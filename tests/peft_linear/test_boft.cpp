// BOFT against HF PEFT: block size or block count, one to three butterfly factors (HF's CUDA block-diagonal
// replaced by a torch stand-in in the fixture script), no-op init, merge/unmerge, permutations, gradcheck.
#include "fixture.h"
#include "models/peft/boft.h"
#include "models/peft/linear_common.h"

namespace vlp::test {
namespace {

TEST(BOFT, MatchesHfPeft) {
  for (const char* name : {"boft", "boft_num", "boft_butterfly", "boft_butterfly3", "boft_butterfly_num"}) {
    SCOPED_TRACE(name);
    ParityCase c(name, false, peft::attach_boft);
    c.check_forward_backward();
    c.check_merge();
    c.check_disabled();
  }
}

TEST(BOFT, ButterflyPermutation) {
  using V = std::vector<int64_t>;
  EXPECT_EQ(peft::boft_butterfly_perm(8, 4, 1, 0), (V{0, 1, 2, 3, 4, 5, 6, 7}));
  // First factor: groups of one block, runs of half a block in order: the identity.
  EXPECT_EQ(peft::boft_butterfly_perm(8, 4, 1, 1), (V{0, 1, 2, 3, 4, 5, 6, 7}));
  // Second factor: groups of two blocks (4 features), runs of 1 reordered evens then odds.
  EXPECT_EQ(peft::boft_butterfly_perm(8, 2, 1, 1), (V{0, 2, 1, 3, 4, 6, 5, 7}));
  EXPECT_EQ(peft::boft_butterfly_perm(8, 1, 2, 1), (V{0, 1, 4, 5, 2, 3, 6, 7}));
}

TEST(BOFT, DefaultInitIsNoOp) {
  nlohmann::json j = {{"peft_type", "BOFT"}, {"target_modules", {"lin1", "lin2"}}, {"boft_block_size", 2},
                      {"boft_n_butterfly_factor", 2}};
  expect_noop_init(peft::attach_boft, j);
  expect_noop_init(peft::attach_boft, j, true);
}

TEST(BOFT, InvalidLayoutsAreNamed) {
  Generator gen(1);
  peft::BoftOptions o;
  o.block_size = 5;
  EXPECT_THROW(peft::BoftAdapter(16, 4, o, gen), Error);
  o.block_size = 4;
  o.block_num = 4;
  EXPECT_THROW(peft::BoftAdapter(16, 4, o, gen), Error);
  o.block_num = 0;
  o.n_butterfly_factor = 3;  // 16 % (4 * 4) == 0 fine; 12 is not
  EXPECT_NO_THROW(peft::BoftAdapter(16, 4, o, gen));
  EXPECT_THROW(peft::BoftAdapter(12, 4, o, gen), Error);
}

TEST(BOFT, MergeFanInFanOut) {
  Chain chain(true);
  peft::PeftConfig config = peft::parse_peft_config({{"peft_type", "BOFT"}, {"target_modules", {"lin1", "lin2"}},
                                                     {"boft_block_size", 2}, {"boft_n_butterfly_factor", 2},
                                                     {"init_weights", false}});
  Generator gen(3);
  peft::AttachContext ctx{chain, config, "default", gen, ""};
  peft::attach_boft(ctx);
  Tensor x = rand_input({2, 3, kIn}, 5, DType::F32, false);
  NoGradGuard no_grad;
  Tensor y = chain.forward(x);
  Tensor w = clone(chain.lin1.weight);
  for (Linear* l : {&chain.lin1, &chain.lin2}) l->adapters[0].second->merge(*l);
  EXPECT_TRUE(all_close(chain.forward(x), y, 0.0, 1e-5));
  for (Linear* l : {&chain.lin1, &chain.lin2}) l->adapters[0].second->unmerge(*l);
  EXPECT_TRUE(all_close(chain.lin1.weight, w, 0.0, 1e-5));
}

TEST(BOFT, DropoutReplacesBlocksInTrainingOnly) {
  Linear layer(8, 3);
  peft::BoftOptions o;
  o.block_size = 2;
  o.dropout = 1.0;  // every block of the chosen factor becomes the identity
  o.init_weights = false;
  Generator gen(1);
  peft::BoftAdapter a(8, 3, o, gen);
  ForwardContext train;
  train.training = true;
  NoGradGuard no_grad;
  Tensor r = a.rotation_blocks(train);
  for (int64_t i = 0; i < 4; ++i)
    EXPECT_TRUE(all_close(select(select(r, 0, 0), 0, i), peft::identity(2), 0.0, 0.0));
  Tensor r_eval = a.rotation_blocks(ForwardContext{});
  EXPECT_FALSE(all_close(select(select(r_eval, 0, 0), 0, 0), peft::identity(2), 0.0, 1e-4));
}

TEST(BOFT, Gradcheck) {
  Linear layer(8, 3);
  layer.weight = rand_input({3, 8}, 1, DType::F64, false);
  layer.bias = rand_input({3}, 2, DType::F64, false);
  peft::BoftOptions o;
  o.block_size = 2;
  o.n_butterfly_factor = 2;
  Generator gen(1);
  peft::BoftAdapter a(8, 3, o, gen);
  std::vector<Tensor> in = {rand_input({2, 3, 8}, 3), rand_input({2, 4, 2, 2}, 4), rand_input({3, 1}, 5)};
  auto f = [&](const std::vector<Tensor>& t) {
    a.boft_R = t[1];
    a.boft_s = t[2];
    return a.forward(layer, t[0], Tensor(), ForwardContext{});
  };
  EXPECT_EQ(gradcheck(f, in), "");
}

}  // namespace
}  // namespace vlp::test
