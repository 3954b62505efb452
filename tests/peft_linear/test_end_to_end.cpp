// Every Linear-site method through the PEFT core: an adapter directory as HF PEFT writes it (its
// adapter_config.json and adapter_model.safetensors keys, from the fixtures) loads with load_adapter and
// reproduces HF's output; merge_adapters / unmerge_adapters; save_adapter writes back the same tensors
// under the same keys, and a config that loads again.
#include <filesystem>

#include "fixture.h"

namespace vlp::test {
namespace {

struct E2eCase {
  const char* name;
  bool conv1d;
  bool mergeable;
};

const E2eCase kCases[] = {
    {"loha", false, true},       {"loha_pattern", false, true}, {"lokr", false, true},
    {"lokr_both", false, true},  {"lokr_factor", false, true},  {"oft", false, true},
    {"oft_cayley", false, true}, {"oft_r", false, true},        {"oft_share", false, true},
    {"vera", false, true},       {"vera_conv1d", true, true},   {"hra", false, true},
    {"hra_odd", false, true},    {"hra_gs", false, true},       {"fourierft", false, true},
    {"fourierft_conv1d", true, true}, {"boft", false, true},    {"boft_butterfly", false, true},
    {"boft_butterfly_num", false, true},
};

// Writes the fixture's adapter as an HF PEFT directory: adapter_config.json + adapter_model.safetensors.
std::filesystem::path write_hf_dir(const std::string& name, const SafetensorsFile& file) {
  auto dir = temp_dir("peft_linear_hf_" + name);
  std::filesystem::copy_file(fixture_path(name + ".json"), dir / "adapter_config.json");
  NamedTensors tensors;
  for (auto& [k, t] : file.tensors)
    if (k.rfind("adapter.", 0) == 0) tensors.push_back({k.substr(8), t});
  save_safetensors((dir / "adapter_model.safetensors").string(), tensors, {{"format", "pt"}});
  return dir;
}

std::unique_ptr<Chain> base_chain(const SafetensorsFile& file, bool conv1d) {
  auto chain = std::make_unique<Chain>(conv1d);
  for (auto [pname, t] : chain->named_parameters()) copy_(t, file.at("base." + pname));
  return chain;
}

TEST(PeftLinearEndToEnd, LoadMergeSaveThroughCore) {
  for (const E2eCase& c : kCases) {
    SCOPED_TRACE(c.name);
    SafetensorsFile file = load_safetensors(fixture_path(std::string(c.name) + ".safetensors"));
    auto dir = write_hf_dir(c.name, file);
    auto chain = base_chain(file, c.conv1d);
    peft::PeftConfig config = peft::load_adapter(*chain, dir.string());
    Tensor x = file.at("x");
    {
      NoGradGuard no_grad;
      EXPECT_TRUE(all_close(chain->forward(x), file.at("y"), 0.0, 1e-5)) << "loaded adapter vs HF";
      if (c.mergeable) {
        peft::merge_adapters(*chain, {"default"});
        EXPECT_TRUE(all_close(chain->forward(x), file.at("y"), 0.0, 1e-5)) << "merged";
        peft::unmerge_adapters(*chain);
        EXPECT_TRUE(all_close(chain->lin1.weight, file.at("base.lin1.weight"), 0.0, 1e-5)) << "unmerged";
      }
      peft::set_active_adapters(*chain, {});
      EXPECT_TRUE(all_close(chain->forward(x), file.at("y_base"), 0.0, 1e-6)) << "adapters disabled";
      peft::set_active_adapters(*chain, {"default"});
    }
    // add_adapter for training: the trainable set is exactly the adapter parameters.
    {
      auto fresh = base_chain(file, c.conv1d);
      peft::add_adapter(*fresh, config, "default", 3);
      for (auto& [n, t] : fresh->named_parameters())
        EXPECT_EQ(t.requires_grad(), n.find(".adapters.default.") != std::string::npos) << n;
    }

    auto out = temp_dir(std::string("peft_linear_saved_") + c.name);
    peft::save_adapter(*chain, config, "default", out.string());
    SafetensorsFile saved = load_safetensors((out / "adapter_model.safetensors").string());
    size_t n_ref = 0;
    for (auto& [k, t] : file.tensors) {
      if (k.rfind("adapter.", 0) != 0) continue;
      ++n_ref;
      const Tensor* s = saved.find(k.substr(8));
      ASSERT_NE(s, nullptr) << "saved adapter lacks " << k.substr(8);
      EXPECT_TRUE(all_close(*s, t, 0.0, 0.0)) << k;
    }
    EXPECT_EQ(saved.tensors.size(), n_ref);
    nlohmann::json j = nlohmann::json::parse(std::ifstream(out / "adapter_config.json"));
    nlohmann::json ref = nlohmann::json::parse(std::ifstream(fixture_path(std::string(c.name) + ".json")));
    for (auto& [k, v] : ref.items()) {
      if (k == "auto_mapping" || k == "target_modules" || k == "inference_mode") continue;
      EXPECT_EQ(j[k], v) << "adapter_config.json field " << k;
    }
    if (ref["peft_type"] == "VERA") {
      EXPECT_EQ(j["save_projection"], true);
    }
    // And it loads again.
    auto again = base_chain(file, c.conv1d);
    peft::load_adapter(*again, out.string());
    NoGradGuard no_grad;
    EXPECT_TRUE(all_close(again->forward(x), file.at("y"), 0.0, 1e-5)) << "reloaded";
    std::filesystem::remove_all(dir);
    std::filesystem::remove_all(out);
  }
}

}  // namespace
}  // namespace vlp::test

namespace vlp::test {
namespace {

// HF VeRA saved without its projections (save_projection = false): they are regenerated from
// projection_prng_key, and vlpeft writes them back with save_projection = true (spec §6.5).
TEST(PeftLinearEndToEnd, VeraWithoutSavedProjections) {
  SafetensorsFile file = load_safetensors(fixture_path("vera_noproj.safetensors"));
  ASSERT_EQ(file.find("adapter.base_model.vera_A"), nullptr);
  auto dir = write_hf_dir("vera_noproj", file);
  auto chain = base_chain(file, false);
  peft::PeftConfig config = peft::load_adapter(*chain, dir.string());
  NoGradGuard no_grad;
  EXPECT_TRUE(all_close(chain->forward(file.at("x")), file.at("y"), 0.0, 1e-5));
  auto out = temp_dir("peft_linear_saved_vera_noproj");
  peft::save_adapter(*chain, config, "default", out.string());
  SafetensorsFile saved = load_safetensors((out / "adapter_model.safetensors").string());
  EXPECT_NE(saved.find("base_model.vera_A"), nullptr);
  EXPECT_NE(saved.find("base_model.vera_B"), nullptr);
  nlohmann::json j = nlohmann::json::parse(std::ifstream(out / "adapter_config.json"));
  EXPECT_EQ(j["save_projection"], true);
  std::filesystem::remove_all(dir);
  std::filesystem::remove_all(out);
}

}  // namespace
}  // namespace vlp::test
