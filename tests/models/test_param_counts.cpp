// `vlpeft params CONFIG` (models/param_count.h): for every configs/hf/*.json, the count equals transformers'
// (tests/fixtures/models/param_counts.json, tools/reference/make_text_model_fixtures.py), and every count in
// that file has its config.
#include <filesystem>
#include <fstream>
#include <set>

#include <nlohmann/json.hpp>

#include "common/test_util.h"
#include "models/clip_vision.h"
#include "models/param_count.h"

namespace vlp {
namespace {

namespace fs = std::filesystem;

TEST(ParamCounts, EveryHfConfigMatchesTransformers) {
  std::ifstream f(std::string(VLP_SOURCE_DIR) + "/tests/fixtures/models/param_counts.json");
  ASSERT_TRUE(f.good());
  const nlohmann::json expected = nlohmann::json::parse(f);
  std::set<std::string> seen;
  for (const auto& e : fs::directory_iterator(std::string(VLP_SOURCE_DIR) + "/configs/hf")) {
    if (e.path().extension() != ".json") continue;
    const std::string name = e.path().stem().string();
    SCOPED_TRACE(name);
    ASSERT_TRUE(expected.contains(name)) << "param_counts.json has no count for configs/hf/" << name << ".json";
    const HfParamCount c = count_hf_parameters(e.path().string());
    EXPECT_EQ(c.parameters, expected[name].get<int64_t>()) << c.model_type << " counted as " << c.counted_as;
    seen.insert(name);
  }
  for (const auto& [name, v] : expected.items()) EXPECT_TRUE(seen.count(name)) << name << " has no configs/hf file";
  EXPECT_GE(seen.size(), 10u);
}

TEST(ParamCounts, ClassesCounted) {
  const std::string hf = std::string(VLP_SOURCE_DIR) + "/configs/hf/";
  EXPECT_EQ(count_hf_parameters(hf + "vit-base-patch16-224.json").counted_as, "ViTForImageClassification");
  EXPECT_EQ(count_hf_parameters(hf + "vit-base-patch16-224-in21k.json").counted_as, "ViTModel");
  EXPECT_EQ(count_hf_parameters(hf + "clip-vit-base-patch32.json").counted_as, "CLIPVisionModelWithProjection");
  // The tiny CLIP vision fixture (model_type clip_vision_model) counts as its module does.
  const std::string tiny = std::string(VLP_SOURCE_DIR) + "/tests/fixtures/models/clip_vision";
  EXPECT_EQ(count_hf_parameters(tiny).parameters, CLIPVisionModel(read_clip_vision_config(tiny)).num_parameters());
}

TEST(ParamCounts, UnknownModelTypeIsAnErrorNamingIt) {
  fs::path dir = test::temp_dir("param_counts");
  std::ofstream(dir / "config.json") << R"({"model_type": "llama", "hidden_size": 8})";
  try {
    count_hf_parameters((dir / "config.json").string());
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'llama'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("vit, clip"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace vlp
