// The file-backed trainer: `make-data` files in the official formats -> a tiny VL-T5 trained on VQA +
// captions through data/loader.h (loss falls, eval reports the official metrics and writes predictions),
// a SIGKILLed run resumed from its checkpoint continues at the same data position (bit-identical to an
// uninterrupted run), worker threads change nothing, and missing paths are reported by key.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "data/synthetic.h"
#include "runtime/error.h"
#include "runtime/safetensors.h"
#include "tests/common/test_util.h"
#include "tools/trainer/trainer.h"

using namespace vlp;
using namespace vlp::trainer;
namespace fs = std::filesystem;

namespace {

// One small benchmark per test process, written once.
const std::string& data_dir() {
  static const std::string dir = [] {
    const fs::path d = test::temp_dir("trainer_files_data");
    data::SyntheticOptions o;
    o.coco_train = 24;
    o.coco_restval = 4;
    o.coco_val = 8;
    o.coco_test = 4;
    o.gqa_train = 8;
    o.gqa_val = 4;
    o.gqa_testdev = 2;
    o.nlvr2_train = 8;
    o.nlvr2_dev = 4;
    o.nlvr2_test = 2;
    data::make_synthetic_data(d.string(), o);
    return d.string();
  }();
  return dir;
}

std::vector<std::string> tiny_sets(const std::string& out_dir) {
  return {"tasks=vqa,caption", "data_dir=" + data_dir(), "d_model=32", "layers=1", "heads=2", "d_ff=64",
          "batch_size=8", "lr=3e-3", "eval_every=0", "log_every=1", "threads=1", "progress=false",
          "out_dir=" + out_dir};
}

std::string vlpeft_train(const std::string& out_dir, const std::string& extra) {
  std::string cmd = std::string(VLP_BINARY_DIR) + "/bin/vlpeft train";
  for (const auto& s : tiny_sets(out_dir)) cmd += " --set '" + s + "'";
  return cmd + " " + extra + " > " + out_dir + ".log 2>&1";
}

std::vector<double> logged_losses(const std::string& out_dir) {
  std::ifstream in(out_dir + "/metrics.jsonl");
  std::vector<double> out;
  std::string line;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line);
    if (j.contains("loss")) out.push_back(j["loss"].get<double>());
  }
  return out;
}

std::map<std::string, std::string> checkpoint_tensors(const std::string& path) {
  SafetensorsFile f = load_safetensors(path);
  std::map<std::string, std::string> out;
  for (auto& [name, t] : f.tensors) {
    Tensor c = contiguous(t);
    out[name] = std::string(static_cast<const char*>(c.data_ptr()), size_t(c.numel()) * c.element_size());
  }
  return out;
}

}  // namespace

TEST(TrainerFiles, VqaAndCaptionsFromOfficialFilesLossFallsAndEvalReportsMetrics) {
  const std::string out = test::temp_dir("trainer_files_run").string();
  std::vector<std::string> sets = tiny_sets(out);
  sets.push_back("steps=48");
  auto s = make_session(parse_config(nlohmann::json::object(), "test", sets));
  ASSERT_TRUE(s->files);
  EXPECT_EQ(s->files->tasks, (std::vector<std::string>{"vqa", "caption"}));
  // Karpathy train (train + restval images, 28) x 3 questions; captions: 28 images x 5.
  EXPECT_EQ(s->files->loader->tasks()[0].examples.size(), 84u);
  EXPECT_EQ(s->files->loader->tasks()[1].examples.size(), 140u);
  EXPECT_FALSE(s->files->codec.vocab.empty());  // the word vocabulary of the training texts
  EXPECT_EQ(s->files->feat_dim, 16 * 16 * 3);
  train(*s);
  const auto losses = logged_losses(out);
  ASSERT_EQ(losses.size(), 48u);
  double first = 0, last = 0;
  for (int i = 0; i < 8; ++i) {
    first += losses[size_t(i)] / 8;
    last += losses[losses.size() - 1 - size_t(i)] / 8;
  }
  EXPECT_LT(last, 0.6 * first) << "first 8 steps " << first << ", last 8 " << last;
  // The official metrics on the val split; predictions in the official result formats.
  auto m = evaluate(*s, -1, true);
  for (const char* k : {"vqa.accuracy", "vqa.soft_score", "caption.cider_d", "caption.bleu_4", "caption.rouge_l"})
    ASSERT_TRUE(m.count(k)) << k;
  EXPECT_GE(m["vqa.accuracy"], 0.0);
  EXPECT_LE(m["vqa.accuracy"], 1.0);
  EXPECT_GT(m["caption.bleu_4"], 0.0);  // the captions share most words with the references
  EXPECT_GT(m["caption.cider_d"], 0.0);
  auto preds = nlohmann::json::parse(std::ifstream(out + "/predictions/predictions_val_vqa.json"));
  ASSERT_EQ(preds.size(), 24u);  // 8 val images x 3 questions
  EXPECT_TRUE(preds[0].contains("question_id") && preds[0]["answer"].is_string());
  auto caps = nlohmann::json::parse(std::ifstream(out + "/predictions/predictions_val_caption.json"));
  ASSERT_EQ(caps.size(), 8u);
  EXPECT_TRUE(caps[0]["image_id"].is_number_integer() && caps[0]["caption"].is_string());
  // Another split by name.
  s->cfg.eval_split = "test";
  auto t = evaluate(*s);
  EXPECT_TRUE(t.count("caption.cider_d"));
  // The binary's eval reads the config stored in the checkpoint.
  const std::string cmd = std::string(VLP_BINARY_DIR) + "/bin/vlpeft eval --checkpoint " + out +
                          "/last.safetensors --split test > " + out + "/eval.txt 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  std::ifstream ev(out + "/eval.txt");
  std::string text((std::istreambuf_iterator<char>(ev)), {});
  EXPECT_NE(text.find("vqa.accuracy:"), std::string::npos) << text;
  EXPECT_NE(text.find("caption.cider_d:"), std::string::npos) << text;
}

// Killed after step 7 (checkpoint at step 6), resumed: the final checkpoint equals an uninterrupted
// run's, and the saved loader position is where the uninterrupted run's loader stood after step 6.
TEST(TrainerFiles, ResumeContinuesTheSameDataPosition) {
  const fs::path dir = test::temp_dir("trainer_files_resume");
  const std::string a = (dir / "a").string(), b = (dir / "b").string();
  const std::string args = "--set steps=12 --set save_every=6 --set grad_accum=2 --set dropout=0.1";
  ASSERT_EQ(std::system(vlpeft_train(a, args).c_str()), 0) << "see " << a << ".log";
  ASSERT_NE(std::system(("VLP_TRAINER_KILL_AT_STEP=7 " + vlpeft_train(b, args)).c_str()), 0);
  const SafetensorsFile mid = load_safetensors(b + "/last.safetensors");
  ASSERT_EQ(mid.metadata.at("step"), "6");
  // The loader position after 12 micro-batches (6 steps x grad_accum 2).
  {
    std::vector<std::string> sets = tiny_sets((dir / "probe").string());
    sets.push_back("grad_accum=2");
    auto p = make_session(parse_config(nlohmann::json::object(), "test", sets));
    for (int i = 0; i < 12; ++i) next_micro_batch(*p);
    EXPECT_EQ(mid.metadata.at("loader_position"), data::position_to_json(p->loader_pos));
  }
  ASSERT_EQ(std::system(vlpeft_train(b, args + " --set resume=true").c_str()), 0) << "see " << b << ".log";
  auto x = checkpoint_tensors(a + "/last.safetensors"), y = checkpoint_tensors(b + "/last.safetensors");
  ASSERT_EQ(x.size(), y.size());
  int64_t differing = 0;
  for (auto& [name, bytes] : x) differing += y.at(name) != bytes;
  EXPECT_EQ(differing, 0);
  EXPECT_EQ(load_safetensors(a + "/last.safetensors").metadata.at("loader_position"),
            load_safetensors(b + "/last.safetensors").metadata.at("loader_position"));
}

TEST(TrainerFiles, WorkerThreadsGiveTheSameRun) {
  auto run = [](int workers) {
    const std::string out = test::temp_dir("trainer_files_workers" + std::to_string(workers)).string();
    std::vector<std::string> sets = tiny_sets(out);
    sets.push_back("steps=6");
    sets.push_back("tasks=gqa,nlvr2");  // NLVR2: two images per example
    sets.push_back("workers=" + std::to_string(workers));
    auto s = make_session(parse_config(nlohmann::json::object(), "test", sets));
    train(*s);
    auto m = evaluate(*s);
    EXPECT_TRUE(m.count("gqa.accuracy") && m.count("nlvr2.accuracy") && m.count("nlvr2.consistency"));
    return checkpoint_tensors(out + "/last.safetensors");
  };
  EXPECT_EQ(run(0), run(2));
}

TEST(TrainerFiles, MissingPathsAreListedByKey) {
  TrainConfig c = parse_config({{"tasks", "vqa,nlvr2"}, {"vqa_train", "/no/vqa/karpathy_train.json"},
                                {"coco_images", "/no/coco"}, {"nlvr2_train", "/no/nlvr2/train.json"}},
                               "run.json");
  const auto missing = missing_paths(c);
  auto has = [&](const std::string& text) {
    for (const auto& m : missing)
      if (m.find(text) != std::string::npos) return true;
    return false;
  };
  EXPECT_TRUE(has("key 'vqa_train' names a missing path '/no/vqa/karpathy_train.json'"));
  EXPECT_TRUE(has("key 'coco_images' names a missing path '/no/coco'"));
  EXPECT_TRUE(has("key 'nlvr2_images' is empty"));
  try {
    validate_config(c);
    FAIL() << "validate_config accepted missing paths";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("missing path(s)"), std::string::npos) << e.what();
  }
  EXPECT_THROW(validate_config(parse_config({{"tasks", "vqa,count"}}, "r")), Error);  // mixed task kinds
}

// The real T5 tokenizer (assets): ids, </s> / <pad>, and a tiny model trains and decodes through it.
TEST(TrainerFiles, T5TokenizerFromTheAssets) {
  const std::string assets = test::assets_dir();
  if (assets.empty() || !fs::exists(assets + "/tokenizers/t5/tokenizer.json"))
    GTEST_SKIP() << "no assets (tokenizers/t5/tokenizer.json): set VLP_ASSETS or provide ../shared/assets";
  const std::string out = test::temp_dir("trainer_files_t5tok").string();
  std::vector<std::string> sets = tiny_sets(out);
  sets.insert(sets.end(), {"tokenizer=" + assets + "/tokenizers/t5/tokenizer.json", "tasks=vqa", "steps=3",
                           "eval_limit=4"});
  auto s = make_session(parse_config(nlohmann::json::object(), "test", sets));
  const TextCodec& k = s->files->codec;
  EXPECT_FALSE(k.words);
  EXPECT_EQ(k.eos, 1);  // T5: <pad> 0, </s> 1
  EXPECT_EQ(k.pad, 0);
  EXPECT_GE(k.size, 32100);
  const auto ids = k.encode("vqa: what color is the circle?", 20);
  EXPECT_EQ(ids.back(), 1);
  EXPECT_EQ(k.decode(ids), "vqa: what color is the circle?");
  EXPECT_EQ(s->model->vocab_size(), k.size);
  train(*s);
  auto m = evaluate(*s);
  EXPECT_TRUE(m.count("vqa.accuracy"));
}

// Feature directories from `vlpeft extract-features` (a tiny ViT over the benchmark's COCO images) as the
// image source: grid features for VL-T5, pooled ones for the GPT-2 prefix model.
TEST(TrainerFiles, FeatureDirectoriesFromExtractFeatures) {
  const fs::path dir = test::temp_dir("trainer_files_features");
  const std::string vit = std::string(VLP_SOURCE_DIR) + "/tests/fixtures/models/vit/base";
  for (const std::string mode : {"grid", "pooled"}) {
    const std::string out = (dir / mode).string();
    const std::string cmd = std::string(VLP_BINARY_DIR) + "/bin/vlpeft extract-features --model " + vit + " --images " +
                            data_dir() + "/coco --out " + out + " --mode " + mode + " --grid 2 --quiet > " + out +
                            ".log 2>&1";
    ASSERT_EQ(std::system(cmd.c_str()), 0) << "see " << out << ".log";
  }
  std::vector<std::string> sets = tiny_sets((dir / "run_grid").string());
  sets.insert(sets.end(), {"coco_images=" + (dir / "grid").string(), "steps=4", "eval_limit=4", "caption_beams=2"});
  auto s = make_session(parse_config(nlohmann::json::object(), "test", sets));
  EXPECT_TRUE(s->files->visual.at("vqa")->features);
  EXPECT_EQ(s->files->visual.at("vqa")->tokens, 4);  // 2 x 2 grid
  train(*s);
  EXPECT_TRUE(evaluate(*s).count("caption.cider_d"));
  sets = tiny_sets((dir / "run_pooled").string());
  sets.insert(sets.end(), {"coco_images=" + (dir / "pooled").string(), "steps=4", "eval_limit=4", "caption_beams=2",
                           "model_kind=gpt2_prefix", "backbone=gpt2", "tasks=caption", "task_prefix=false"});
  auto g = make_session(parse_config(nlohmann::json::object(), "test", sets));
  EXPECT_EQ(g->files->visual.at("caption")->tokens, 1);
  EXPECT_TRUE(std::isfinite(train(*g).last_loss));
  EXPECT_TRUE(evaluate(*g).count("caption.bleu_4"));
}
