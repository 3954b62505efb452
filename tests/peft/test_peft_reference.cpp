// PEFT against huggingface/peft 0.21.2 (fixtures of tools/reference/make_peft_fixtures.py): adapter
// directories PEFT wrote load here and give PEFT's logits and loss (1e-5) and adapter gradients (1e-4 relative
// to the gradient norm); after one backward exactly the trainable set has gradients; the files written here are
// byte-identical to PEFT's (safetensors) and field-identical (adapter_config.json); merged == unmerged.
//
// Each case also leaves build/peft_written/<case>/ (the adapter directory written here plus outputs.safetensors
// with our logits) for `make_peft_fixtures.py --check build/peft_written`, which loads them in PEFT and
// records the comparison in tests/fixtures/peft/written_by_vlpeft_check.json.
#include <filesystem>
#include <fstream>

#include "autograd/optim.h"

#include "tests/peft/peft_fixture.h"

namespace vlp {
namespace {

using test::close_in_norm;
using test::close_to_scale;

struct Case {
  std::string name, model;
};

std::ostream& operator<<(std::ostream& os, const Case& c) { return os << c.name; }

class HfPeftReference : public ::testing::TestWithParam<Case> {};

TEST_P(HfPeftReference, OutputsAndGradientsMatchPeft) {
  const Case c = GetParam();
  test::TinyModel m(c.model);
  peft::load_adapter(m.module(), test::peft_fixture_dir(c.name));
  auto fx = test::read_tensors(test::peft_fixture_dir(c.name) + "/fixture.safetensors");
  auto out = m.forward();
  EXPECT_TRUE(close_to_scale(out.logits, fx.at("logits"), 1e-5));
  EXPECT_NEAR(out.loss.item(), fx.at("loss").item(), 1e-5 * std::abs(fx.at("loss").item()));
  backward(out.loss);
  EXPECT_TRUE(test::grads_exactly_on_trainable(m.module()));
  auto sd = peft::adapter_state_dict(m.module(), "default");
  size_t grads_in_fixture = 0;
  for (auto& [k, t] : fx) grads_in_fixture += k.rfind("grad.", 0) == 0;
  EXPECT_EQ(sd.size(), grads_in_fixture) << "trainable set differs from PEFT's";
  for (auto& [key, t] : sd) {
    ASSERT_TRUE(fx.count("grad." + key)) << "PEFT has no gradient for " << key;
    ASSERT_TRUE(t.requires_grad()) << key;
    EXPECT_TRUE(close_in_norm(t.grad(), fx.at("grad." + key), 1e-4, 1e-6)) << key;
  }
  // Only the adapter's tensors are trainable.
  int64_t trainable = 0, saved = 0;
  for (auto& [n, p] : m.module().named_parameters()) trainable += p.requires_grad() ? p.numel() : 0;
  for (auto& [k, t] : sd) saved += t.numel();
  EXPECT_EQ(trainable, saved);
  EXPECT_EQ(peft::count_parameters(m.module()).trainable, trainable);
}

TEST_P(HfPeftReference, WrittenFilesAreThoseOfPeft) {
  const Case c = GetParam();
  test::TinyModel m(c.model);
  const std::string hf_dir = test::peft_fixture_dir(c.name);
  peft::PeftConfig config = peft::load_adapter(m.module(), hf_dir);
  const auto out_dir = test::temp_dir("peft_written_" + c.name);
  peft::save_adapter(m.module(), config, "default", out_dir.string());
  // Tensors: same keys, shapes, dtypes and bytes (the reference writer's layout).
  auto ours = read_safetensors_header((out_dir / "adapter_model.safetensors").string());
  auto theirs = read_safetensors_header(hf_dir + "/adapter_model.safetensors");
  ASSERT_EQ(ours.entries.size(), theirs.entries.size());
  for (size_t i = 0; i < ours.entries.size(); ++i) {
    EXPECT_EQ(ours.entries[i].name, theirs.entries[i].name);
    EXPECT_EQ(ours.entries[i].shape, theirs.entries[i].shape) << ours.entries[i].name;
    EXPECT_EQ(ours.entries[i].dtype, DType::F32) << ours.entries[i].name;
  }
  EXPECT_EQ(ours.metadata, theirs.metadata);
  EXPECT_TRUE(test::read_text((out_dir / "adapter_model.safetensors").string()) ==
              test::read_text(hf_dir + "/adapter_model.safetensors"))
      << "adapter_model.safetensors differs in bytes from PEFT's";
  // Config: every field with PEFT's value, and the same text (sorted keys, indent 2).
  auto ours_json = nlohmann::json::parse(test::read_text((out_dir / "adapter_config.json").string()));
  auto theirs_json = nlohmann::json::parse(test::read_text(hf_dir + "/adapter_config.json"));
  EXPECT_EQ(ours_json, theirs_json);
  EXPECT_EQ(test::read_text((out_dir / "adapter_config.json").string()), test::read_text(hf_dir + "/adapter_config.json"));
  std::filesystem::remove_all(out_dir);
}

// Values trained here, written here: they load back here identically, and the directory plus our logits are
// left in build/peft_written/<case> for the reverse check in PEFT (make_peft_fixtures.py --check).
TEST_P(HfPeftReference, TrainedAdapterRoundTrips) {
  const Case c = GetParam();
  test::TinyModel m(c.model);
  peft::PeftConfig config = peft::load_adapter(m.module(), test::peft_fixture_dir(c.name));
  std::vector<Tensor> trainable;
  for (auto& [n, p] : m.module().named_parameters())
    if (p.requires_grad()) trainable.push_back(p);
  Optimizer opt = make_adamw(trainable, 1e-2, 0.0);
  backward(m.forward().loss);
  step(opt);
  const auto out_dir = std::filesystem::path(VLP_BINARY_DIR) / "peft_written" / c.name;
  std::filesystem::remove_all(out_dir);
  peft::save_adapter(m.module(), config, "default", out_dir.string());
  Tensor logits = m.logits();
  save_safetensors((out_dir / "outputs.safetensors").string(), {{"logits", contiguous(logits)}});
  test::TinyModel again(c.model);
  peft::load_adapter(again.module(), out_dir.string());
  EXPECT_TRUE(test::all_close(again.logits(), logits, 0, 0));
  EXPECT_FALSE(test::read_text((out_dir / "adapter_model.safetensors").string()) ==
               test::read_text(test::peft_fixture_dir(c.name) + "/adapter_model.safetensors"));
}

TEST_P(HfPeftReference, MergedEqualsUnmerged) {
  const Case c = GetParam();
  test::TinyModel m(c.model);
  peft::load_adapter(m.module(), test::peft_fixture_dir(c.name));
  Tensor unmerged = m.logits();
  peft::merge_adapters(m.module(), {});
  EXPECT_TRUE(close_to_scale(m.logits(), unmerged, 1e-5));
  peft::unmerge_adapters(m.module());
  EXPECT_TRUE(close_to_scale(m.logits(), unmerged, 1e-5));
  peft::merge_and_unload(m.module());
  EXPECT_TRUE(close_to_scale(m.logits(), unmerged, 1e-5));
  for (auto& [path, l] : peft::linear_sites(m.module())) EXPECT_TRUE(l->adapters.empty()) << path;
}

INSTANTIATE_TEST_SUITE_P(Cases, HfPeftReference,
                         ::testing::Values(Case{"gpt2_lora", "gpt2"}, Case{"gpt2_rslora", "gpt2"},
                                           Case{"gpt2_dora", "gpt2"}, Case{"gpt2_ia3", "gpt2"},
                                           Case{"t5_lora_gaussian", "t5"}, Case{"t5_ia3", "t5"},
                                           Case{"bart_lora", "bart"}, Case{"bart_dora", "bart"},
                                           Case{"bart_ia3", "bart"}, Case{"bart_lora_bias_all", "bart"},
                                           Case{"bart_ln_tuning", "bart"}),
                         [](const auto& info) { return info.param.name; });

}  // namespace
}  // namespace vlp
