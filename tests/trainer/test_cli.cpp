// The vlpeft command line: every command's --help (the built binary), usage errors exit 2 naming the command or
// option; `params` on a training config; `extract-features` writing shards that data/feature_shards.h reads back
// equal to a direct forward of the tower (tiny ViT / CLIP fixtures; written PNGs, the asset photos when present,
// and the images named by dataset files); `generate --image` on a checkpoint trained here, fed exactly as the
// trainer feeds its images.
#include <gtest/gtest.h>

#include <sys/wait.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#define STB_IMAGE_WRITE_IMPLEMENTATION
#define STB_IMAGE_WRITE_STATIC
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#include <stb/stb_image_write.h>
#pragma GCC diagnostic pop

#include "data/feature_shards.h"
#include "data/image.h"
#include "data/synthetic.h"
#include "runtime/error.h"
#include "tests/common/test_util.h"
#include "tools/trainer/cli_features.h"
#include "tools/trainer/cli_generate.h"
#include "tools/trainer/cli_params.h"
#include "tools/trainer/trainer.h"

using namespace vlp;
using namespace vlp::trainer;
namespace fs = std::filesystem;

namespace {

const std::string kBinary = std::string(VLP_BINARY_DIR) + "/bin/vlpeft";
const std::string kModels = std::string(VLP_SOURCE_DIR) + "/tests/fixtures/models";

struct CmdResult {
  int rc = -1;
  std::string out, err;
};

// Runs the binary with arguments (a shell fragment), capturing stdout and stderr.
CmdResult run_vlpeft(const std::string& args) {
  static int n = 0;
  const fs::path dir = test::temp_dir("cli_runs");
  const std::string out = (dir / ("out" + std::to_string(n))).string(), err = (dir / ("err" + std::to_string(n++))).string();
  CmdResult r;
  const int status = std::system((kBinary + " " + args + " > " + out + " 2> " + err).c_str());
  r.rc = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  std::ifstream o(out), e(err);
  std::stringstream so, se;
  so << o.rdbuf();
  se << e.rdbuf();
  r.out = so.str();
  r.err = se.str();
  return r;
}

bool has_binary() { return fs::exists(kBinary); }
#define REQUIRE_BINARY() \
  if (!has_binary()) GTEST_SKIP() << "the vlpeft binary is not built at " << kBinary << " (target vlpeft_bin)"

void write_png(const fs::path& path, int w, int h, const std::vector<uint8_t>& rgb) {
  ASSERT_NE(stbi_write_png(path.string().c_str(), w, h, 3, rgb.data(), w * 3), 0) << path;
}

// A w x h image with smooth gradients and a seed-dependent square, so images differ.
std::vector<uint8_t> pattern(int w, int h, int seed) {
  std::vector<uint8_t> px(size_t(w * h * 3));
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int c = 0; c < 3; ++c) {
        const bool square = x > 4 + seed * 3 && x < 16 + seed * 3 && y > 6 && y < 20;
        px[size_t((y * w + x) * 3 + c)] = uint8_t(square ? 250 - 40 * c : (x * 7 + y * 3 * (c + 1) + seed * 50) % 256);
      }
  return px;
}

// The tower's features of images, one forward each, as the extractor stores them.
Tensor direct_features(const VisionTower& tower, const std::vector<std::string>& paths, const ImageLoader& load,
                       const FeatureOptions& o) {
  NoGradGuard no_grad;
  std::vector<Tensor> rows;
  for (const auto& p : paths) rows.push_back(select(image_features(tower.forward(unsqueeze(load(p), 0)), o), 0, 0));
  return stack(rows, 0);
}

}  // namespace

// ---- --help and usage errors (the binary) ----

TEST(CliHelp, EveryCommandPrintsItsUsageAndOptions) {
  REQUIRE_BINARY();
  const std::map<std::string, std::vector<std::string>> flags = {
      {"demo", {"--pretrain-steps", "--adapt-steps", "--only", "--vision-tower"}},
      {"train", {"--config", "--set", "--print-config"}},
      {"eval", {"--checkpoint", "--config"}},
      {"generate", {"--checkpoint", "--image", "--question", "--beams"}},
      {"params", {"--config", "--set"}},
      {"make-data", {"--out", "--seed", "--image-size"}},
      {"extract-features", {"--model", "--images", "--out", "--mode", "--batch", "--dtype", "--dataset", "--no-resume"}}};
  for (const auto& [cmd, names] : flags) {
    SCOPED_TRACE(cmd);
    for (const char* h : {"--help", "-h"}) {
      CmdResult r = run_vlpeft(cmd + " " + h);
      EXPECT_EQ(r.rc, 0) << r.err;
      EXPECT_NE(r.out.find("usage: vlpeft " + (cmd == "demo" ? std::string("[demo]") : cmd)), std::string::npos) << r.out;
      for (const auto& f : names) EXPECT_NE(r.out.find(f), std::string::npos) << f << " not in\n" << r.out;
      EXPECT_EQ(r.err, "");
    }
  }
  CmdResult top = run_vlpeft("--help");
  EXPECT_EQ(top.rc, 0);
  for (const auto& [cmd, names] : flags) EXPECT_NE(top.out.find("  " + cmd + " "), std::string::npos) << cmd;
}

TEST(CliHelp, UnknownCommandsAndOptionsAreUsageErrors) {
  REQUIRE_BINARY();
  CmdResult r = run_vlpeft("frobnicate");
  EXPECT_EQ(r.rc, 2);
  EXPECT_NE(r.err.find("unknown command 'frobnicate'"), std::string::npos) << r.err;
  for (const std::string cmd : {"demo", "train", "eval", "generate", "params", "make-data", "extract-features"}) {
    r = run_vlpeft(cmd + " --no-such-flag 3");
    EXPECT_EQ(r.rc, 2) << cmd;
    EXPECT_NE(r.err.find(cmd + ": unknown option '--no-such-flag'"), std::string::npos) << r.err;
  }
  r = run_vlpeft("demo --pretrain-steps");  // a missing value
  EXPECT_EQ(r.rc, 2);
  EXPECT_NE(r.err.find("--pretrain-steps needs a value"), std::string::npos) << r.err;
  r = run_vlpeft("demo --vision-tower clip");
  EXPECT_EQ(r.rc, 2);
  EXPECT_NE(r.err.find("--vision-tower must be vit or none, got 'clip'"), std::string::npos) << r.err;
  r = run_vlpeft("extract-features --images x --out y");  // a missing required option
  EXPECT_EQ(r.rc, 2);
  EXPECT_NE(r.err.find("--model is required"), std::string::npos) << r.err;
  r = run_vlpeft("train stray");
  EXPECT_EQ(r.rc, 2);
  EXPECT_NE(r.err.find("unexpected argument 'stray'"), std::string::npos) << r.err;
  r = run_vlpeft("make-data --out /tmp/x --seed abc");
  EXPECT_EQ(r.rc, 2);
  EXPECT_NE(r.err.find("--seed expects an integer"), std::string::npos) << r.err;
}

// ---- params ----

const std::vector<std::string> kTiny = {"d_model=32", "layers=1", "heads=2", "d_ff=64", "train_examples=8",
                                        "eval_examples=8", "threads=1", "progress=false"};

TEST(CliParams, TrainerCountsIncludeVisualEmbeddingAndPeftModules) {
  std::vector<std::string> sets = kTiny;
  sets.push_back("peft_type=LORA");
  sets.push_back("peft_json={\"r\": 4, \"target_modules\": [\"q\", \"v\"]}");
  auto s = make_session(parse_config(nlohmann::json::object(), "test", sets));
  const TrainerParams p = trainer_params(*s);
  int64_t lora = 0, visual = 0, trainable = 0;
  for (auto& [name, t] : s->model->named_parameters()) {
    if (name.find("lora_") != std::string::npos) lora += t.numel();
    if (name.rfind("visual_embedding.", 0) == 0) visual += t.numel();
  }
  for (auto& [name, t] : s->trainable) trainable += t.numel();
  EXPECT_GT(lora, 0);
  EXPECT_EQ(p.total, s->model->num_parameters());
  EXPECT_EQ(p.peft, lora);
  EXPECT_EQ(p.visual_embedding, visual);
  EXPECT_EQ(p.backbone + p.visual_embedding + p.peft, p.total);
  EXPECT_EQ(p.trainable, trainable);
  EXPECT_EQ(p.trainable, lora + visual);  // LoRA matrices and the visual projection train, nothing else
  EXPECT_DOUBLE_EQ(p.trainable_percent(), 100.0 * double(lora + visual) / double(p.total));
  const std::string text = format_trainer_params(*s, p);
  char pct[32];
  std::snprintf(pct, sizeof pct, "(%.3f%% of all parameters)", p.trainable_percent());
  EXPECT_NE(text.find(pct), std::string::npos) << text;

  auto full = make_session(parse_config(nlohmann::json::object(), "test", kTiny));
  const TrainerParams f = trainer_params(*full);
  EXPECT_EQ(f.peft, 0);
  EXPECT_EQ(f.trainable, f.total);
  EXPECT_EQ(f.backbone, p.backbone);
}

TEST(CliParams, BinaryPrintsHfAndTrainerCounts) {
  REQUIRE_BINARY();
  const std::string hf = std::string(VLP_SOURCE_DIR) + "/configs/hf/";
  CmdResult r = run_vlpeft("params " + hf + "vit-base-patch16-224.json " + hf + "clip-vit-base-patch32.json");
  EXPECT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("vit (ViTForImageClassification) 86567656 parameters"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("clip (CLIPVisionModelWithProjection) 87849216 parameters"), std::string::npos) << r.out;
  std::string args = "params --set peft_type=LORA";
  for (const auto& s : kTiny) args += " --set " + s;
  r = run_vlpeft(args);
  EXPECT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("trainable:"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("% of all parameters)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("no vision encoder"), std::string::npos) << r.out;
}

// ---- extract-features ----

TEST(CliExtract, ShardsReadBackThroughDataEqualTheTower) {
  const fs::path dir = test::temp_dir("cli_extract");
  // Written PNGs in a directory (one of another size: the ViT transform resizes it).
  fs::create_directories(dir / "pngs");
  for (int i = 0; i < 4; ++i) write_png(dir / "pngs" / ("img" + std::to_string(i) + ".png"), i == 3 ? 48 : 32, 32, pattern(i == 3 ? 48 : 32, 32, i));
  // A list file: the asset photos when present, else the written PNGs under other ids.
  std::vector<std::pair<std::string, std::string>> listed;
  const std::string assets = test::assets_dir();
  if (!assets.empty() && fs::exists(assets + "/images/astronaut.png")) {
    listed = {{"astronaut", assets + "/images/astronaut.png"}, {"coffee", assets + "/images/coffee.png"},
              {"rocket", assets + "/images/rocket.jpg"}};
  } else {
    std::printf("(test assets not found: the list file names written PNGs instead of photos)\n");
    for (int i = 0; i < 3; ++i) listed.push_back({"photo" + std::to_string(i), (dir / "pngs" / ("img" + std::to_string(i) + ".png")).string()});
  }
  {
    std::ofstream list(dir / "images.txt");
    list << "# id<tab>path\n";
    for (const auto& [id, path] : listed) list << id << "\t" << path << "\n";
  }
  auto vit = load_vit_model(kModels + "/vit/base");
  const VisionTower tower = frozen_tower(*vit);
  const ImageLoader load = image_loader_for(kModels + "/vit/base");

  struct Case {
    std::string images, mode, dtype;
    double tol;
  };
  for (const Case& c : {Case{(dir / "pngs").string(), "grid", "f32", 1e-5}, Case{(dir / "images.txt").string(), "pooled", "f32", 1e-5},
                        Case{(dir / "pngs").string(), "pooled", "f16", 2e-3}}) {
    SCOPED_TRACE(c.images + " " + c.mode + " " + c.dtype);
    ExtractFeaturesArgs a;
    a.model_dir = kModels + "/vit/base";
    a.images = c.images;
    a.out_dir = (dir / ("out_" + c.mode + "_" + c.dtype + "_" + fs::path(c.images).stem().string())).string();
    a.mode = c.mode;
    a.grid = 2;
    a.batch = 2;
    a.shard_size = 2;
    a.dtype = c.dtype;
    ExtractionReport r = extract_features_command(a);
    const std::vector<ImageRef> refs = list_images(c.images);
    EXPECT_EQ(r.images, int64_t(refs.size()));
    EXPECT_EQ(r.images_extracted, r.images);

    // Read back through the data side, by image id.
    data::FeatureShardIndex index = data::read_feature_shard_index(a.out_dir);
    EXPECT_EQ(index.kind, c.mode);
    EXPECT_EQ(index.dtype, c.dtype == "f16" ? DType::F16 : DType::F32);
    EXPECT_EQ(index.shards.size(), refs.size());
    EXPECT_EQ(index.feature_shape, c.mode == "grid" ? (Shape{4, 24}) : (Shape{24}));
    std::vector<std::string> ids, paths;
    for (const auto& ref : refs) {
      ids.push_back(ref.id);
      paths.push_back(ref.path);
    }
    if (c.images.find("images.txt") != std::string::npos) {
      for (size_t i = 0; i < listed.size(); ++i) EXPECT_EQ(ids[i], listed[i].first);
    }
    FeatureOptions o;
    o.kind = c.mode == "grid" ? FeatureKind::Grid : FeatureKind::Pooled;
    o.grid_h = o.grid_w = 2;
    const Tensor expected = direct_features(tower, paths, load, o);
    const Tensor got = data::read_image_features(index, ids);
    EXPECT_EQ(got.shape(), expected.shape());
    EXPECT_TRUE(test::all_close(got, expected, c.tol, c.tol));
    // One image through its shard path (the ImagePathFn) equals its row.
    const std::string shard = data::feature_shard_files(index)(ids.back());
    EXPECT_TRUE(test::all_close(data::read_shard_features(shard, ids.back()), select(expected, 0, int64_t(ids.size()) - 1), c.tol, c.tol));
    EXPECT_FALSE(test::all_close(select(got, 0, 0), select(got, 0, 1), 1e-3, 1e-3));  // images differ

    // Resumed by default: a second run skips every shard; --no-resume extracts again.
    ExtractionReport again = extract_features_command(a);
    EXPECT_EQ(again.shards_skipped, again.shards);
    EXPECT_EQ(again.images_extracted, 0);
    a.resume = false;
    EXPECT_EQ(extract_features_command(a).images_extracted, r.images);
  }
  // The binary: the same extraction from the command line.
  if (has_binary()) {
    const std::string out = (dir / "out_binary").string();
    CmdResult b = run_vlpeft("extract-features --model " + kModels + "/vit/base --images " + (dir / "pngs").string() +
                             " --out " + out + " --mode grid --grid 2 --batch 3 --dtype f32 --quiet");
    EXPECT_EQ(b.rc, 0) << b.err;
    EXPECT_NE(b.out.find("4 images in 1 shards"), std::string::npos) << b.out;
    FeatureOptions o;
    o.grid_h = o.grid_w = 2;
    std::vector<std::string> paths;
    for (int i = 0; i < 4; ++i) paths.push_back((dir / "pngs" / ("img" + std::to_string(i) + ".png")).string());
    EXPECT_TRUE(test::all_close(data::read_image_features(data::read_feature_shard_index(out), {"img0", "img1", "img2", "img3"}),
                                direct_features(tower, paths, load, o), 1e-5, 1e-5));
    b = run_vlpeft("extract-features --model " + kModels + "/vit/base --images " + (dir / "pngs").string() + " --out " +
                   out + " --mode grid --grid 2 --quiet");
    EXPECT_EQ(b.rc, 0) << b.err;
    EXPECT_NE(b.out.find("0 extracted now, 1 shards already there"), std::string::npos) << b.out;
    b = run_vlpeft("extract-features --model " + kModels + "/vit/base --images " + (dir / "pngs").string() + " --out " +
                   out + " --mode pooled --quiet");  // other settings in the same directory: refused
    EXPECT_EQ(b.rc, 1);
    EXPECT_NE(b.err.find("other settings"), std::string::npos) << b.err;
  }
  // Unknown ids are errors naming them and the directory.
  data::FeatureShardIndex index = data::read_feature_shard_index((dir / "out_grid_f32_pngs").string());
  try {
    data::read_image_features(index, {"img0", "nope"});
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'nope'"), std::string::npos) << e.what();
  }
  fs::remove_all(dir);
}

TEST(CliExtract, DatasetFilesNameTheImages) {
  const fs::path dir = test::temp_dir("cli_extract_data");
  data::SyntheticOptions so;
  so.coco_train = 6, so.coco_restval = 1, so.coco_val = 1, so.coco_test = 1;
  so.gqa_train = 2, so.gqa_val = 1, so.gqa_testdev = 1;
  so.nlvr2_train = 2, so.nlvr2_dev = 1, so.nlvr2_test = 1;
  data::make_synthetic_data((dir / "data").string(), so);
  const std::string root = (dir / "data").string();
  struct Case {
    std::string file, kind, image_root;
    size_t images;
  };
  // Karpathy COCO: 9 images; VQA val2014 questions: the 1 val image... counted from the loaders below.
  for (const Case& c : {Case{root + "/coco/dataset_coco.json", "coco-karpathy", root + "/coco", 9},
                        Case{root + "/gqa/questions1.2/val_balanced_questions.json", "gqa", root + "/gqa", 1},
                        Case{root + "/nlvr2/dev.json", "nlvr2", root + "/nlvr2", 4}}) {
    SCOPED_TRACE(c.kind);
    const std::vector<ImageRef> refs = list_images(c.file, c.kind, c.image_root);
    EXPECT_EQ(refs.size(), c.images);
    ExtractFeaturesArgs a;
    a.model_dir = kModels + "/clip_vision";
    a.images = c.file;
    a.dataset = c.kind;
    a.image_root = c.image_root;
    a.out_dir = (dir / ("out_" + c.kind)).string();
    a.mode = "projected";
    ExtractionReport r = extract_features_command(a);
    EXPECT_EQ(r.images, int64_t(c.images));
    auto clip = load_clip_vision_model(kModels + "/clip_vision");
    std::vector<std::string> ids, paths;
    for (const auto& ref : refs) {
      ids.push_back(ref.id);
      paths.push_back(ref.path);
      EXPECT_EQ(fs::path(ref.path).stem().string(), ref.id);
    }
    FeatureOptions o;
    o.kind = FeatureKind::Projected;
    const Tensor expected = direct_features(frozen_tower(*clip), paths, image_loader_for(a.model_dir), o);
    EXPECT_TRUE(test::all_close(data::read_image_features(data::read_feature_shard_index(a.out_dir), ids), expected,
                                1e-5, 1e-5));
  }
  // A dataset file without --dataset, and an unknown kind, are errors saying what to pass.
  EXPECT_THROW(list_images(root + "/coco/dataset_coco.json"), Error);
  try {
    list_images(root + "/coco/dataset_coco.json", "coco", root);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("unknown --dataset 'coco'"), std::string::npos) << e.what();
  }
  fs::remove_all(dir);
}

// ---- generate --image ----

namespace {

// The RGB image behind a trainer example's patch features (their inverse: byte = (f + 0.5) * 255).
std::vector<uint8_t> image_of_example(const VLExample& e, int64_t size, int64_t patch) {
  std::vector<uint8_t> rgb(size_t(size * size * 3));
  const int64_t g = size / patch;
  size_t k = 0;
  for (int64_t py = 0; py < g; ++py)
    for (int64_t px = 0; px < g; ++px)
      for (int64_t y = 0; y < patch; ++y)
        for (int64_t x = 0; x < patch; ++x)
          for (int c = 0; c < 3; ++c)
            rgb[size_t(((py * patch + y) * size + px * patch + x) * 3 + c)] =
                uint8_t(std::lround((double(e.feats[k++]) + 0.5) * 255.0));
  return rgb;
}

}  // namespace

TEST(CliGenerate, ImageFileIsAnsweredAsTheTrainerFeedsIt) {
  const fs::path dir = test::temp_dir("cli_generate");
  std::vector<std::string> sets = {"d_model=32", "layers=1", "heads=2", "d_ff=64", "train_examples=512",
                                   "eval_examples=24", "batch_size=16", "steps=600", "lr=0.003", "eval_every=0",
                                   "save_every=0", "log_every=0", "threads=1", "progress=false",
                                   "tasks=\"count,color\"", "out_dir=" + (dir / "run").string()};
  auto trained = make_session(parse_config(nlohmann::json::object(), "test", sets));
  train(*trained);
  const std::string ckpt = (dir / "run" / "last.safetensors").string();
  ASSERT_TRUE(fs::exists(ckpt));

  // The checkpoint's own config rebuilds the session (no --config needed).
  const TrainConfig cfg = checkpoint_config(ckpt, {"train_examples=1", "eval_examples=1"});
  EXPECT_EQ(cfg.d_model, 32);
  EXPECT_EQ(cfg.tasks, "count,color");
  auto s = make_session(cfg);
  load_training_checkpoint(*s, ckpt);

  std::map<std::string, int> correct, total;
  for (size_t t = 0; t < trained->tasks.size(); ++t) {
    const std::string task = trained->tasks[t];
    for (size_t i = 0; i < trained->eval_data[t].size(); ++i) {
      const VLExample& e = trained->eval_data[t][i];
      const fs::path png = dir / (task + std::to_string(i) + ".png");
      write_png(png, 32, 32, image_of_example(e, 32, 16));
      // The image file gives exactly the trainer's features.
      const std::vector<float> feats = image_patch_features(load_image(png.string()), 32, 16);
      ASSERT_EQ(feats.size(), e.feats.size());
      for (size_t k = 0; k < feats.size(); ++k) ASSERT_NEAR(feats[k], e.feats[k], 1e-6) << png << " value " << k;
      // The question, typed as a person would (capitals, "?" attached), tokenises as the trainer's.
      std::string q = vl_vocab().decode(e.question);
      q = q.substr(q.find(' ') + 1);  // drop the "count:" prefix: the task is found from the question
      std::string typed = q;
      typed[0] = char(std::toupper(typed[0]));
      typed.erase(typed.size() - 2, 1);  // "objects ?" -> "objects?"
      ImageAnswer a = answer_about_image(*s, png.string(), typed);
      EXPECT_EQ(a.task, task) << typed;
      EXPECT_EQ(a.question_ids, e.question) << typed;
      EXPECT_TRUE(a.unknown_words.empty());
      // The same answer as the trained model's generation on the example itself.
      VLBatch b = collate(task, int(t), {&e}, trained->n_patches, trained->patch_dim);
      VisualInput vi;
      vi.feats = b.feats;
      ForwardContext ctx;
      ctx.task = int(t);
      GenerationOptions opt;
      opt.max_new_tokens = cfg.max_new_tokens;
      Tensor seq;
      {
        NoGradGuard no_grad;
        trained->model->train(false);
        seq = contiguous(trained->model->generate(b.input_ids, b.attention_mask, vi, opt, ctx).sequences);
      }
      EXPECT_EQ(a.answer, vl_vocab().decode(std::vector<int64_t>(seq.data<int64_t>() + 1, seq.data<int64_t>() + seq.size(1))));
      correct[task] += a.answer == e.answer_text;
      ++total[task];
    }
  }
  std::printf("answers about image files after 600 steps: count %d / %d, color %d / %d correct\n", correct["count"],
              total["count"], correct["color"], total["color"]);
  // Counting is learnt in these few steps (chance 1/3); colour questions stay near chance at this size.
  EXPECT_GE(correct["count"], total["count"] * 2 / 3);

  // Task choice and errors.
  EXPECT_EQ(choose_task(*s, "is there a red object ?"), "color");
  EXPECT_EQ(choose_task(*s, "count: anything"), "count");
  EXPECT_EQ(choose_task(*s, "what is this ?"), "count");  // no template: the first task
  EXPECT_THROW(choose_task(*s, "how many objects ?", "shape"), Error);
  EXPECT_THROW(choose_task(*s, ""), Error);  // no captioning task: a question is needed
  std::vector<std::string> unknown;
  question_tokens("how many zebras ?", "count", true, &unknown);
  EXPECT_EQ(unknown, std::vector<std::string>{"zebras"});
  // An image of another size is resized to the config's size.
  write_png(dir / "big.png", 64, 48, pattern(64, 48, 1));
  EXPECT_EQ(image_patch_features(load_image((dir / "big.png").string()), 32, 16).size(), size_t(4 * 16 * 16 * 3));

  // The binary prints the same answer.
  if (has_binary()) {
    const VLExample& e = trained->eval_data[0][0];
    ImageAnswer a = answer_about_image(*s, (dir / "count0.png").string(), "how many objects ?");
    CmdResult r = run_vlpeft("generate --checkpoint " + ckpt + " --image " + (dir / "count0.png").string() +
                       " --question 'How many objects?'");
    EXPECT_EQ(r.rc, 0) << r.err;
    EXPECT_EQ(r.out, "[count] " + a.answer + "\n") << "reference: " << e.answer_text;
    r = run_vlpeft("generate --checkpoint " + ckpt + " --image " + (dir / "count0.png").string());
    EXPECT_EQ(r.rc, 1);
    EXPECT_NE(r.err.find("pass --question"), std::string::npos) << r.err;
  }
  fs::remove_all(dir);
}
