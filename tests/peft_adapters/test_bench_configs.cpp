// The PEFT configs of bench/compare stay what the benchmark rows claim: the VL-BART row's file is exactly the
// VL-Adapter single-adapter recipe for BART (models/peft/recipes.h), and the text rows' adapter file is that
// recipe's adapter without the norms.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "models/peft/recipes.h"

namespace vlp::peft {
namespace {

nlohmann::json read_json(const std::string& relative) {
  std::ifstream f(std::string(VLP_SOURCE_DIR) + "/" + relative);
  EXPECT_TRUE(f.good()) << relative;
  std::stringstream ss;
  ss << f.rdbuf();
  return nlohmann::json::parse(ss.str());
}

TEST(BenchConfigs, VlBartRowIsTheSingleAdapterRecipe) {
  const nlohmann::json file = read_json("bench/compare/peft/vl_bart_adapter_single.json");
  EXPECT_EQ(file, vl_adapter_recipe("adapter_single", "bart").config.raw);
}

TEST(BenchConfigs, TextAdapterRowsAreTheRecipeAdapterAlone) {
  nlohmann::json recipe = vl_adapter_recipe("adapter_single", "bart").config.raw;
  recipe.erase("modules_to_save");
  EXPECT_EQ(read_json("bench/compare/peft/adapter_rf8.json"), recipe);
}

}  // namespace
}  // namespace vlp::peft
