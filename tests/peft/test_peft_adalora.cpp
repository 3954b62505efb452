// AdaLoRA against PEFT 0.21.2 (tests/fixtures/peft/t5_adalora, tools/reference/make_peft_fixtures.py): the
// adapted T5's logits, its loss with the orthogonal regularisation, every adapter gradient, the triplets the
// rank allocator masks at one step, and PEFT's save of the pruned adapter (sliced tensors + rank_pattern),
// written here identically and loaded here with PEFT's outputs; an adapter trained further here is left in
// build/peft_written/t5_adalora for the reverse check in PEFT.
#include <filesystem>

#include "autograd/optim.h"
#include "models/peft/adalora.h"
#include "tests/peft/peft_fixture.h"

namespace vlp {
namespace {

constexpr int64_t kAllocationStep = 5;  // ADALORA_STEP in the script

TEST(AdaLora, MatchesPeftIncludingRankAllocation) {
  const std::string dir = test::peft_fixture_dir("t5_adalora");
  test::TinyModel m("t5");
  peft::load_adapter(m.module(), dir);
  auto fx = test::read_tensors(dir + "/fixture.safetensors");
  auto out = m.forward();
  Tensor loss = add(out.loss, peft::adalora_orthogonal_loss(m.module()));
  EXPECT_TRUE(test::close_to_scale(out.logits, fx.at("logits"), 1e-5));
  EXPECT_NEAR(loss.item(), fx.at("loss").item(), 1e-5 * std::abs(fx.at("loss").item()));
  backward(loss);
  EXPECT_TRUE(test::grads_exactly_on_trainable(m.module()));
  auto sd = peft::adapter_state_dict(m.module(), "default");
  EXPECT_EQ(sd.size(), 32u * 3);  // q, k, v, o, wi, wo: 12 encoder + 20 decoder layers
  for (auto& [key, t] : sd) {
    ASSERT_TRUE(fx.count("grad." + key)) << key;
    EXPECT_TRUE(test::close_in_norm(t.grad(), fx.at("grad." + key), 1e-4, 1e-6)) << key;
  }
  // The allocator at the same step masks the same triplets.
  peft::AdaLoraAllocator allocator(m.module());
  EXPECT_EQ(allocator.init_budget, 128);
  EXPECT_EQ(allocator.update_and_allocate(m.module(), kAllocationStep), 72);
  for (auto& [key, t] : peft::adapter_state_dict(m.module(), "default"))
    if (key.size() > 7 && key.compare(key.size() - 7, 7, ".lora_E") == 0)
      EXPECT_TRUE(test::all_close(t, fx.at("masked." + key), 0, 0)) << key;
  EXPECT_TRUE(test::close_to_scale(m.logits(), fx.at("logits_after"), 1e-5));
  // Saving writes PEFT's pruned adapter.
  auto saved = test::temp_dir("adalora");
  peft::save_adapter(m.module(), peft::adapter_config(m.module(), "default"), "default", saved.string());
  auto ours = read_safetensors_header((saved / "adapter_model.safetensors").string());
  auto theirs = read_safetensors_header(dir + "/allocated/adapter_model.safetensors");
  ASSERT_EQ(ours.entries.size(), theirs.entries.size());
  for (size_t i = 0; i < ours.entries.size(); ++i) {
    EXPECT_EQ(ours.entries[i].name, theirs.entries[i].name);
    EXPECT_EQ(ours.entries[i].shape, theirs.entries[i].shape) << ours.entries[i].name;
  }
  auto ours_json = nlohmann::json::parse(test::read_text((saved / "adapter_config.json").string()));
  auto theirs_json = nlohmann::json::parse(test::read_text(dir + "/allocated/adapter_config.json"));
  EXPECT_EQ(ours_json["rank_pattern"], theirs_json["rank_pattern"]);
  EXPECT_EQ(ours_json, theirs_json);
  std::filesystem::remove_all(saved);
  // For the reverse check in PEFT (make_peft_fixtures.py --check build/peft_written): one more step trained here.
  {
    std::vector<Tensor> trainable;
    for (auto& [n, p] : m.module().named_parameters())
      if (p.requires_grad()) trainable.push_back(p);
    Optimizer opt = make_adamw(trainable, 1e-2, 0.0);
    step(opt);
    allocator.update_and_allocate(m.module(), kAllocationStep + 1);
    const auto out_dir = std::filesystem::path(VLP_BINARY_DIR) / "peft_written" / "t5_adalora";
    std::filesystem::remove_all(out_dir);
    peft::save_adapter(m.module(), peft::adapter_config(m.module(), "default"), "default", out_dir.string());
    save_safetensors((out_dir / "outputs.safetensors").string(), {{"logits", contiguous(m.logits())}});
  }
  // PEFT's pruned adapter loads here (resized by rank_pattern) with PEFT's outputs.
  test::TinyModel pruned("t5");
  peft::load_adapter(pruned.module(), dir + "/allocated");
  EXPECT_TRUE(test::close_to_scale(pruned.logits(), fx.at("logits_after"), 1e-5));
  peft::merge_and_unload(pruned.module());
  EXPECT_TRUE(test::close_to_scale(pruned.logits(), fx.at("logits_after"), 1e-5));
}

TEST(AdaLora, NoOpInitConfigErrorsAndTraining) {
  test::TinyModel m("bart");
  Tensor base = m.logits();
  auto cfg = [](const char* t) { return peft::parse_peft_config(nlohmann::json::parse(t), "ada.json"); };
  std::string err;
  try {
    peft::add_adapter(m.module(), cfg(R"({"peft_type": "ADALORA", "init_r": 4})"));
  } catch (const std::exception& e) {
    err = e.what();
  }
  EXPECT_NE(err.find("'total_step'"), std::string::npos) << err;
  EXPECT_TRUE(peft::adapter_names(m.module()).empty());
  peft::add_adapter(m.module(), cfg(R"({"peft_type": "ADALORA", "init_r": 4, "target_r": 2, "total_step": 8,
                                       "tinit": 1, "tfinal": 2, "deltaT": 2})"));
  EXPECT_TRUE(test::all_close(m.logits(), base, 0, 0));  // E = 0
  std::vector<Tensor> trainable;
  for (auto& [n, p] : m.module().named_parameters())
    if (p.requires_grad()) trainable.push_back(p);
  Optimizer opt = make_adamw(trainable, 2e-2, 0.0);
  peft::AdaLoraAllocator allocator(m.module());
  double first = 0, last = 0;
  for (int64_t s = 0; s < 8; ++s) {
    Tensor loss = add(m.forward().loss, peft::adalora_orthogonal_loss(m.module()));
    (s == 0 ? first : last) = loss.item();
    backward(loss);
    step(opt);
    allocator.update_and_allocate(m.module(), s);
    zero_grad(opt);
  }
  EXPECT_LT(last, first);
  // After the budgeting phase exactly target_r ranks per layer remain on average.
  auto pattern = peft::adapter_config(m.module(), "default").raw.at("rank_pattern");
  int64_t kept = 0, layers = 0;
  for (auto& [k, v] : pattern.items()) {
    ++layers;
    for (auto& b : v) kept += b.get<bool>();
  }
  EXPECT_EQ(kept, 2 * layers);
}

}  // namespace
}  // namespace vlp
