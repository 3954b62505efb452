// The shipped run configs (configs/vl_adapter, configs/routing): every one parses, reports exactly its
// unfilled paths by key, and, with the paths pointed at a make-data benchmark and a tiny model, builds
// a session (the recipe attaches to the backbone and something trains) whose learning rate and task
// prefix are the recipe's (spec/peft.md §2.10, §2.12). Also: a transformers checkpoint directory as the
// backbone, with VL-BART's extra embedding rows.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "data/synthetic.h"
#include "models/checkpoint.h"
#include "models/peft/peft.h"
#include "models/peft/recipes.h"
#include "runtime/error.h"
#include "tests/common/test_util.h"
#include "tools/trainer/trainer.h"

using namespace vlp;
using namespace vlp::trainer;
namespace fs = std::filesystem;

namespace {

const std::string& bench_dir() {
  static const std::string dir = [] {
    const fs::path d = test::temp_dir("trainer_configs_data");
    data::SyntheticOptions o;
    o.coco_train = 8;
    o.coco_restval = 2;
    o.coco_val = 2;
    o.coco_test = 2;
    o.gqa_train = 4;
    o.gqa_val = 2;
    o.gqa_testdev = 2;
    o.nlvr2_train = 4;
    o.nlvr2_dev = 2;
    o.nlvr2_test = 2;
    data::make_synthetic_data(d.string(), o);
    return d.string();
  }();
  return dir;
}

std::vector<std::string> shipped_configs(const std::string& sub) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(fs::path(VLP_SOURCE_DIR) / "configs" / sub))
    if (e.path().extension() == ".json") out.push_back(e.path().string());
  std::sort(out.begin(), out.end());
  return out;
}

bool method_known(const std::string& type) {
  try {
    peft::find_method(type);
    return true;
  } catch (const Error&) {
    return false;
  }
}

}  // namespace

TEST(TrainerConfigs, EveryVlAdapterRecipeRowHasAConfigForBothBackbones) {
  const auto files = shipped_configs("vl_adapter");
  // spec/peft.md §2.14: 11 rows (full, 3 adapters, Hyperformer, 2 Compacters, 2 LoRA, 2 prompts).
  ASSERT_EQ(files.size(), 22u);
  for (const std::string bb : {"bart", "t5"})
    for (const std::string& r : peft::vl_recipe_names())
      EXPECT_TRUE(fs::exists(fs::path(VLP_SOURCE_DIR) / "configs/vl_adapter" / ("vl-" + bb + "-base_" + r + ".json")))
          << bb << " " << r;
}

TEST(TrainerConfigs, UnfilledPathsAreReportedByKey) {
  for (const std::string sub : {"vl_adapter", "routing"}) {
    for (const std::string& path : shipped_configs(sub)) {
      SCOPED_TRACE(path);
      TrainConfig c = load_config(path);
      const auto missing = missing_paths(c);
      ASSERT_FALSE(missing.empty());
      bool model = false, data = false;
      for (const std::string& m : missing) {
        model |= m.find("key 'model_dir' is not set") != std::string::npos;
        data |= m.find("uses {data_dir}, which is not set") != std::string::npos;
        EXPECT_TRUE(m.find("is not set") != std::string::npos) << m;  // nothing but the placeholders
      }
      EXPECT_TRUE(model);
      EXPECT_TRUE(data);
      try {
        validate_config(c);
        ADD_FAILURE() << "validate_config accepted unfilled paths";
      } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("key 'model_dir' is not set"), std::string::npos) << e.what();
      }
    }
  }
}

TEST(TrainerConfigs, WithPathsFilledEveryConfigBuildsItsSession) {
  for (const std::string& path : shipped_configs("vl_adapter")) {
    SCOPED_TRACE(path);
    // A tiny model of the same backbone in place of model_dir; the make-data layout as data and images.
    TrainConfig c = load_config(path, {"model_dir=", "data_dir=" + bench_dir(), "features_dir=" + bench_dir(),
                                       "d_model=32", "layers=1", "heads=2", "d_ff=64", "workers=0",
                                       "out_dir=" + test::temp_dir("trainer_configs_run").string()});
    EXPECT_TRUE(missing_paths(c).empty());
    if (c.peft_recipe.rfind("prompt_", 0) == 0 && !method_known("VLPEFT_PROMPT")) {
      std::printf("note: %s not built: VLPEFT_PROMPT is not in this build's method table\n", path.c_str());
      continue;
    }
    auto s = make_session(c);
    EXPECT_EQ(s->tasks, (std::vector<std::string>{"vqa", "gqa", "nlvr2", "caption"}));
    EXPECT_FALSE(s->trainable.empty());
    EXPECT_GT(s->cfg.steps, 0);  // from epochs
    const peft::VlRecipe r = peft::vl_adapter_recipe(c.peft_recipe, c.backbone);
    EXPECT_DOUBLE_EQ(c.lr, r.learning_rate);
    EXPECT_EQ(c.task_prefix, r.task_prefix);
    EXPECT_EQ(s->peft, !r.full_finetuning);
    // Per-task batch sizes from B0 (BART 500, T5 300).
    EXPECT_EQ(s->files->loader->tasks()[0].batch_size, c.backbone == "bart" ? 500 : 300);
    EXPECT_EQ(s->files->loader->tasks()[2].batch_size, c.backbone == "bart" ? 166 : 100);
  }
}

// The routing setups (spec §3.4-3.6) on tiny models of their shapes: a few steps train, eval scores.
TEST(TrainerConfigs, RoutingSetupsTrainAndEvaluate) {
  const auto files = shipped_configs("routing");
  ASSERT_EQ(files.size(), 4u);
  for (const std::string& path : files) {
    SCOPED_TRACE(path);
    TrainConfig c = load_config(path, {"model_dir=", "data_dir=" + bench_dir(), "coco_images=" + bench_dir() + "/coco",
                                       "d_model=32", "layers=1", "heads=2", "d_ff=64", "workers=0", "epochs=0",
                                       "steps=3", "batch_size=4", "warmup_steps=0", "eval_every=0", "threads=1",
                                       "progress=false", "eval_limit=4", "caption_beams=2",
                                       "out_dir=" + test::temp_dir("trainer_configs_routing").string()});
    auto s = make_session(c);
    EXPECT_TRUE(s->peft);
    bool routed = false;
    for (auto& [name, p] : s->trainable) routed |= name.find("lora_A") != std::string::npos || name.find("adapters") != std::string::npos;
    EXPECT_TRUE(routed);
    RunSummary r = train(*s);
    EXPECT_EQ(r.steps, 3);
    EXPECT_TRUE(std::isfinite(r.last_loss));
    auto m = evaluate(*s);
    EXPECT_TRUE(m.count(c.model_kind == "gpt2_prefix" ? "caption.cider_d" : "vqa.soft_score"));
  }
}

// A transformers checkpoint directory as the backbone; vocab_extra_rows appends rows after the
// checkpoint's (VL-BART's added tokens), and a short run trains from it.
TEST(TrainerConfigs, ModelDirLoadsTheCheckpointWithExtraRows) {
  const std::string model_dir = std::string(VLP_SOURCE_DIR) + "/tests/fixtures/models/bart";
  const std::string out = test::temp_dir("trainer_configs_model_dir").string();
  TrainConfig c = parse_config(
      {{"backbone", "bart"}, {"model_dir", model_dir}, {"tokenizer", "words"}, {"vocab_extra_rows", 200},
       {"tasks", "vqa"}, {"data_dir", bench_dir()}, {"steps", 3}, {"batch_size", 4}, {"eval_every", 0},
       {"threads", 1}, {"progress", false}, {"out_dir", out}, {"peft_recipe", "adapter_single"}},
      "test");
  auto s = make_session(c);
  EXPECT_EQ(s->model->vocab_size(), 96 + 200);
  BartForConditionalGeneration ref(read_bart_config(model_dir + "/config.json"));
  load_checkpoint(ref, model_dir);
  const Tensor mine = contiguous(s->model->shared().weight), theirs = contiguous(ref.model.shared.weight);
  ASSERT_EQ(mine.size(0), 296);
  const int64_t d = theirs.size(1);
  for (int64_t i = 0; i < 96 * d; ++i) ASSERT_EQ(mine.data<float>()[i], theirs.data<float>()[i]) << i;
  double sq = 0;
  for (int64_t i = 96 * d; i < 296 * d; ++i) sq += double(mine.data<float>()[i]) * mine.data<float>()[i];
  EXPECT_NEAR(std::sqrt(sq / double(200 * d)), 0.02, 0.004);  // N(0, 0.02) rows
  RunSummary r = train(*s);
  EXPECT_EQ(r.steps, 3);
  EXPECT_TRUE(std::isfinite(r.last_loss));
}
