// FourierFT against HF PEFT (Linear; Conv1D with n_frequency_pattern), the random locations reproducing
// torch's CPU randperm bit-exactly, zero-init no-op, merge, gradcheck.
#include "fixture.h"
#include "models/peft/fourierft.h"

namespace vlp::test {
namespace {

std::vector<int64_t> as_ints(const Tensor& t) {
  std::vector<double> v = to_vector(t);
  return std::vector<int64_t>(v.begin(), v.end());
}

TEST(FourierFT, MatchesHfPeft) {
  for (auto [name, conv1d] : {std::pair{"fourierft", false}, std::pair{"fourierft_conv1d", true}}) {
    SCOPED_TRACE(name);
    ParityCase c(name, conv1d, peft::attach_fourierft);
    c.check_forward_backward();
    c.check_merge();
    c.check_disabled();
  }
}

TEST(FourierFT, LocationsAreTorchRandperm) {
  for (auto [name, conv1d] : {std::pair{"fourierft", false}, std::pair{"fourierft_conv1d", true}}) {
    SCOPED_TRACE(name);
    ParityCase c(name, conv1d, peft::attach_fourierft);
    for (auto [lname, layer] : {std::pair{"lin1", &c.chain->lin1}, std::pair{"lin2", &c.chain->lin2}}) {
      auto* a = dynamic_cast<peft::FourierftAdapter*>(layer->adapters[0].second.get());
      ASSERT_NE(a, nullptr);
      std::vector<int64_t> ref = as_ints(c.file.at(std::string("extra.") + lname + ".indices"));  // [2, n]
      const size_t n = a->rows.size();
      ASSERT_EQ(ref.size(), 2 * n) << lname;
      for (size_t k = 0; k < n; ++k) {
        EXPECT_EQ(a->rows[k], ref[k]) << lname << " row " << k;
        EXPECT_EQ(a->cols[k], ref[n + k]) << lname << " col " << k;
      }
    }
  }
  ParityCase c("fourierft_conv1d", true, peft::attach_fourierft);
  auto* a2 = dynamic_cast<peft::FourierftAdapter*>(c.chain->lin2.adapters[0].second.get());
  EXPECT_EQ(a2->rows.size(), 12u);  // n_frequency_pattern
  // A GPT-2-sized layer (3072 x 768) with the default seed.
  std::vector<int64_t> big = peft::torch_randperm_prefix(3072 * 768, 1000, 777);
  EXPECT_EQ(big, as_ints(c.file.at("extra.randperm_2359296_777")));
}

TEST(FourierFT, ZeroInitIsNoOpDefaultIsNot) {
  nlohmann::json j = {{"peft_type", "FOURIERFT"}, {"target_modules", {"lin1", "lin2"}}, {"n_frequency", 10},
                      {"init_weights", true}};
  expect_noop_init(peft::attach_fourierft, j);
  expect_noop_init(peft::attach_fourierft, j, true);
  Chain chain(false);
  Tensor x = rand_input({2, 3, kIn}, 5, DType::F32, false);
  NoGradGuard no_grad;
  Tensor base = chain.forward(x);
  j["init_weights"] = false;
  peft::PeftConfig config = peft::parse_peft_config(j);
  Generator gen(1);
  peft::AttachContext ctx{chain, config, "default", gen, ""};
  peft::attach_fourierft(ctx);
  EXPECT_FALSE(all_close(chain.forward(x), base, 0.0, 1e-4));
}

TEST(FourierFT, Gradcheck) {
  Linear layer(5, 4);
  layer.weight = rand_input({4, 5}, 1, DType::F64, false);
  layer.bias = rand_input({4}, 2, DType::F64, false);
  peft::FourierftOptions o;
  o.n_frequency = 7;
  o.scaling = 3.0;
  Generator gen(1);
  peft::FourierftAdapter a(5, 4, o, gen);
  std::vector<Tensor> in = {rand_input({2, 3, 5}, 3), rand_input({7}, 4)};
  auto f = [&](const std::vector<Tensor>& t) {
    a.fourierft_spectrum = t[1];
    return a.forward(layer, t[0], layer.base_forward(t[0]), ForwardContext{});
  };
  EXPECT_EQ(gradcheck(f, in), "");
}

}  // namespace
}  // namespace vlp::test
