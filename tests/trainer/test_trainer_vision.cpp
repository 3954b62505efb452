// The trainer with a ViT vision tower (vision_tower vit): config keys checked by name, the synthetic tasks
// delivering normalised pixels, the tower trained by full fine-tuning and frozen for PEFT and the frozen-backbone
// probe (trainable counts over every parameter, tower included), and checkpoints / init_from carrying the tower.
#include <gtest/gtest.h>

#include <filesystem>

#include "runtime/error.h"
#include "runtime/safetensors.h"
#include "tests/common/test_util.h"
#include "tools/trainer/cli_params.h"
#include "tools/trainer/trainer.h"

using namespace vlp;
using namespace vlp::trainer;

namespace {

using ::vlp::test::error_of;

TrainConfig vit_config(const std::string& out_dir, std::vector<std::string> extra = {}) {
  std::vector<std::string> sets = {"d_model=32", "layers=1", "heads=2", "d_ff=64", "train_examples=32",
                                   "eval_examples=8", "batch_size=8", "eval_every=0", "log_every=1", "threads=1",
                                   "progress=false", "tasks=\"count,color\"", "steps=2", "save_every=0",
                                   "vision_tower=vit", "vision_layers=1", "image_size=32", "patch=16",
                                   "out_dir=" + out_dir};
  sets.insert(sets.end(), extra.begin(), extra.end());
  return parse_config(nlohmann::json::object(), "test", sets);
}

bool in_tower(const std::string& name) { return name.rfind("vision_model.", 0) == 0; }

}  // namespace

TEST(TrainerVision, ConfigKeysAreChecked) {
  const TrainConfig d = parse_config(nlohmann::json::object(), "r");
  EXPECT_EQ(d.vision_tower, "none");  // old configs and checkpoints keep their patch features
  EXPECT_EQ(config_to_json(vit_config("x"))["vision_tower"], "vit");
  auto err = [](std::vector<std::string> sets) {
    return error_of([&] { validate_config(parse_config(nlohmann::json::object(), "r", sets)); });
  };
  EXPECT_NE(err({"vision_tower=clip"}).find("key 'vision_tower' must be none or vit, got 'clip'"), std::string::npos);
  EXPECT_NE(err({"vision_tower=vit", "vision_layers=0"}).find("key 'vision_layers' must be positive"), std::string::npos);
  EXPECT_NE(err({"vision_hidden=-1"}).find("key 'vision_hidden' must be >= 0"), std::string::npos);
  EXPECT_NE(err({"vision_tower=vit", "vision_hidden=30", "heads=4"}).find("width 30 (vision_hidden"), std::string::npos);
  EXPECT_NE(err({"vision_tower=vit", "tasks=vqa", "data_dir=/tmp"}).find("key 'vision_tower' vit needs the synthetic tasks"),
            std::string::npos);
  EXPECT_NE(error_of([] { parse_config({{"vision_layers", "two"}}, "run.json"); }).find("key 'vision_layers' must be an integer"),
            std::string::npos);
  // The tower's shape from the keys: width vision_hidden (0 = d_model), heads, MLP 4x, image_size, patch.
  const ViTConfig v = vision_config(vit_config("x", {"vision_hidden=48", "vision_layers=3"}));
  EXPECT_EQ(v.hidden_size, 48);
  EXPECT_EQ(v.num_hidden_layers, 3);
  EXPECT_EQ(v.num_attention_heads, 2);
  EXPECT_EQ(v.intermediate_size, 192);
  EXPECT_EQ(v.image_height, 32);
  EXPECT_EQ(v.patch_size, 16);
  EXPECT_EQ(vision_config(vit_config("x")).hidden_size, 32);
}

// The synthetic tasks deliver the scene's pixels [B, 3, H, W] as v / 127.5 - 1, the same image whose patches
// are the features without a tower.
TEST(TrainerVision, PixelsAreTheNormalisedImage) {
  const VLExample f = make_example("color", "train", 3, 0, 32, 16, true, false);
  const VLExample p = make_example("color", "train", 3, 0, 32, 16, true, true);
  ASSERT_EQ(p.image.size(), 32u * 32u * 3u);
  EXPECT_TRUE(p.feats.empty());
  EXPECT_EQ(p.question, f.question);
  VLBatch b = collate("color", 0, {&p}, 4, 768);
  EXPECT_FALSE(b.feats.defined());
  ASSERT_EQ(b.pixels.shape(), (Shape{1, 3, 32, 32}));
  const std::vector<double> px = to_vector(b.pixels);
  // Pixel (y, x, c) against the feature of the same pixel: patch (y/16, x/16), offset ((y%16)*16 + x%16)*3 + c,
  // feature = v / 255 - 0.5, pixel = v / 127.5 - 1 = 2 * feature.
  for (int64_t y : {0, 7, 20, 31})
    for (int64_t x : {0, 9, 16, 30})
      for (int64_t c = 0; c < 3; ++c) {
        const int64_t patch = (y / 16) * 2 + x / 16, off = ((y % 16) * 16 + x % 16) * 3 + c;
        const double feat = f.feats[size_t(patch * 768 + off)];
        EXPECT_NEAR(px[size_t((c * 32 + y) * 32 + x)], 2.0 * feat, 1e-6) << y << " " << x << " " << c;
        const double byte = double(p.image[size_t((y * 32 + x) * 3 + c)]);
        EXPECT_NEAR(px[size_t((c * 32 + y) * 32 + x)], byte / 127.5 - 1.0, 1e-6);
      }
}

// Full fine-tuning trains the tower; every PEFT method and the frozen-backbone probe leave it frozen (as
// VL-Adapter freezes CLIP); the trainable share counts the tower among all parameters.
TEST(TrainerVision, TowerTrainsInFullFineTuningOnlyAndCounts) {
  const std::string out = test::temp_dir("trainer_vision_freeze").string();
  struct Case {
    std::vector<std::string> sets;
    bool tower_trains;
  };
  const std::vector<Case> cases = {
      {{}, true},
      {{"freeze_backbone=true"}, false},
      {{"peft_type=LORA", "peft_json={\"r\": 2, \"target_modules\": [\"q\", \"v\"]}"}, false},
      {{"peft_type=VLPEFT_ADAPTER", "peft_json={\"reduction_factor\": 4}"}, false},
      {{"peft_type=PROMPT_TUNING", "peft_json={\"num_virtual_tokens\": 2}"}, false},
      {{"peft_recipe=lora_single"}, false},
      {{"peft_recipe=full"}, true},
  };
  for (const Case& k : cases) {
    auto s = make_session(vit_config(out, k.sets));
    ASSERT_TRUE(s->model->vision_model);
    const std::string what = k.sets.empty() ? "full" : k.sets[0];
    int64_t tower_params = 0, tower_trainable = 0, trainable = 0;
    for (auto& [n, p] : s->model->named_parameters())
      if (in_tower(n)) tower_params += p.numel();
    for (auto& [n, p] : s->trainable) {
      trainable += p.numel();
      if (in_tower(n)) tower_trainable += p.numel();
    }
    EXPECT_EQ(tower_params, s->model->vision_model->num_parameters()) << what;
    EXPECT_EQ(tower_trainable, k.tower_trains ? tower_params : 0) << what;
    EXPECT_GE(s->base_parameters, tower_params + s->model->visual_embedding->num_parameters()) << what;
    if (k.tower_trains) EXPECT_EQ(trainable, s->model->num_parameters()) << what;
    else EXPECT_LT(trainable, s->model->num_parameters() - tower_params) << what;
    // The visual embedding trains in every case (spec §2.2).
    EXPECT_TRUE(s->model->visual_embedding->feat_proj.weight.requires_grad()) << what;
    // A frozen tower gets no gradient from a training step; a trained one changes.
    const Tensor w = s->model->vision_model->embeddings.projection.weight;
    const std::vector<double> before = to_vector(w);
    s->cfg.steps = 1;
    train(*s);
    if (k.tower_trains) EXPECT_NE(to_vector(w), before) << what;
    else EXPECT_EQ(to_vector(w), before) << what;
  }
}

// Checkpoints hold the tower; init_from loads it (and refuses a checkpoint without one); resuming is exact.
TEST(TrainerVision, CheckpointsAndInitFromCarryTheTower) {
  const std::string out = test::temp_dir("trainer_vision_ckpt").string();
  auto a = make_session(vit_config(out));
  train(*a);
  const std::string last = out + "/last.safetensors";
  SafetensorsFile f = load_safetensors(last);
  ASSERT_TRUE(f.find("model.vision_model.embeddings.patch_embeddings.projection.weight"));
  ASSERT_TRUE(f.find("model.vision_model.encoder.layer.0.attention.attention.query.weight"));
  // Adapt from it with LoRA: the tower (frozen) equals the checkpoint's.
  auto b = make_session(vit_config(test::temp_dir("trainer_vision_adapt").string(),
                                   {"init_from=" + last, "peft_type=LORA", "peft_json={\"r\": 2}"}));
  for (auto& [n, p] : b->model->vision_model->named_parameters("vision_model")) {
    const Tensor* src = f.find("model." + n);
    ASSERT_TRUE(src) << n;
    EXPECT_EQ(to_vector(p), to_vector(*src)) << n;
  }
  EXPECT_EQ(evaluate(*a), evaluate(*b));  // same weights, LoRA starts at zero
  // A tower-less checkpoint does not silently leave the tower random.
  const std::string plain = test::temp_dir("trainer_vision_plain").string();
  auto c = make_session(vit_config(plain, {"vision_tower=none"}));
  EXPECT_FALSE(c->model->vision_model);
  train(*c);
  EXPECT_NE(error_of([&] { make_session(vit_config(out, {"init_from=" + plain + "/last.safetensors"})); })
                .find("has no tensor for the vision tower's 'vision_model."),
            std::string::npos);
  // Resuming restores the tower with everything else.
  auto d = make_session(vit_config(out, {"steps=3", "resume=true"}));
  load_training_checkpoint(*d, last);
  EXPECT_EQ(to_vector(d->model->vision_model->layernorm.weight), to_vector(a->model->vision_model->layernorm.weight));
}

// `vlpeft params --config`: the tower is its own line item and part of the total.
TEST(TrainerVision, ParamsCountTheTower) {
  auto s = make_session(vit_config(test::temp_dir("trainer_vision_params").string(),
                                   {"peft_type=LORA", "peft_json={\"r\": 2}"}));
  const TrainerParams p = trainer_params(*s);
  EXPECT_EQ(p.vision_tower, s->model->vision_model->num_parameters());
  EXPECT_EQ(p.backbone + p.vision_tower + p.visual_embedding + p.peft, p.total);
  EXPECT_EQ(p.total, s->model->num_parameters());
  const std::string text = format_trainer_params(*s, p);
  EXPECT_NE(text.find("vision tower (ViT) " + std::to_string(p.vision_tower)), std::string::npos) << text;
  EXPECT_EQ(text.find("no vision encoder"), std::string::npos) << text;
}
