// The trainer: config errors, crash (SIGKILL) and resume equal to an uninterrupted run bit for bit,
// corrupt / truncated checkpoints refused with the previous one still loading, the NaN stop, and a
// CI-sized demo where adaptation beats the frozen base.
#include <gtest/gtest.h>

#include <sys/wait.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>

#include "runtime/error.h"
#include "runtime/safetensors.h"
#include "tests/common/test_util.h"
#include "tools/trainer/demo.h"
#include "tools/trainer/trainer.h"

using namespace vlp;
using namespace vlp::trainer;
namespace fs = std::filesystem;

namespace {

using ::vlp::test::error_of;

const std::vector<std::string> kSmall = {"d_model=32", "layers=1", "heads=2", "d_ff=64", "train_examples=64",
                                         "eval_examples=16", "batch_size=8", "grad_accum=2", "dropout=0.1",
                                         "eval_every=0", "log_every=1", "threads=1", "progress=false",
                                         "tasks=\"count,color\"", "steps=12", "save_every=4"};

std::string vlpeft_cmd(const std::string& out_dir, const std::string& extra = "") {
  std::string cmd = std::string(VLP_BINARY_DIR) + "/bin/vlpeft train";
  for (const auto& s : kSmall) cmd += " --set '" + s + "'";
  return cmd + " --set out_dir=" + out_dir + " " + extra + " > " + out_dir + ".log 2>&1";
}

std::vector<std::pair<std::string, std::string>> tensor_bytes(const std::string& path) {
  SafetensorsFile f = load_safetensors(path);
  std::vector<std::pair<std::string, std::string>> out;
  for (auto& [name, t] : f.tensors) {
    Tensor c = contiguous(t);
    out.push_back({name, std::string(static_cast<const char*>(c.data_ptr()), size_t(c.numel()) * c.element_size())});
  }
  std::sort(out.begin(), out.end());
  return out;
}

TrainConfig small_config(const std::string& out_dir) {
  std::vector<std::string> sets = kSmall;
  sets.push_back("out_dir=" + out_dir);
  return parse_config(nlohmann::json::object(), "test", sets);
}

}  // namespace

TEST(TrainerConfig, ErrorsNameTheKey) {
  EXPECT_NE(error_of([] { parse_config({{"lrr", 1e-3}}, "run.json"); }).find("run.json: unknown key 'lrr'"),
            std::string::npos);
  EXPECT_NE(error_of([] { parse_config({{"steps", "ten"}}, "run.json"); }).find("key 'steps' must be an integer"),
            std::string::npos);
  EXPECT_NE(error_of([] { parse_config({{"lr", true}}, "run.json"); }).find("key 'lr' must be a number"),
            std::string::npos);
  EXPECT_NE(error_of([] { parse_config(nlohmann::json::object(), "d", {"steps=abc"}); }).find("--set steps=abc"),
            std::string::npos);
  EXPECT_NE(error_of([] { parse_config(nlohmann::json::object(), "d", {"steps"}); }).find("expected key=value"),
            std::string::npos);
  EXPECT_NE(error_of([] { parse_config(nlohmann::json::array(), "run.json"); }).find("JSON object"), std::string::npos);
  EXPECT_NE(error_of([] { validate_config(parse_config({{"init_from", "/no/such/file.safetensors"}}, "r")); })
                .find("key 'init_from' names a missing path '/no/such/file.safetensors'"),
            std::string::npos);
  EXPECT_NE(error_of([] { validate_config(parse_config({{"backbone", "gpt"}}, "r")); }).find("backbone"),
            std::string::npos);
  EXPECT_NE(error_of([] { load_config("/no/such/config.json"); }).find("/no/such/config.json"), std::string::npos);
  // Overrides win over the file and take JSON values.
  TrainConfig c = parse_config({{"steps", 5}, {"lr", 0.1}}, "r", {"steps=7", "tasks=count", "peft_json={\"r\": 4}"});
  EXPECT_EQ(c.steps, 7);
  EXPECT_DOUBLE_EQ(c.lr, 0.1);
  EXPECT_EQ(c.tasks, "count");
  EXPECT_EQ(c.peft_json["r"], 4);
  // Unknown PEFT types are refused by name.
  EXPECT_NE(error_of([] { make_session(parse_config({{"peft_type", "NO_SUCH_METHOD"}}, "r")); }).find("NO_SUCH_METHOD"),
            std::string::npos);
}

TEST(TrainerSchedule, OneTaskPerBatchAndEveryExampleOncePerEpoch) {
  auto s = make_session(small_config(test::temp_dir("trainer_sched").string()));
  // 64 examples / 8 per batch = 8 batches per task, 16 per epoch.
  std::map<int, std::vector<int64_t>> seen;
  for (int64_t m = 0; m < 16; ++m) {
    auto [t, idx] = batch_at(*s, m);
    EXPECT_EQ(idx.size(), 8u);
    seen[t].insert(seen[t].end(), idx.begin(), idx.end());
  }
  for (auto& [t, v] : seen) {
    std::sort(v.begin(), v.end());
    ASSERT_EQ(v.size(), 64u);
    for (int64_t i = 0; i < 64; ++i) EXPECT_EQ(v[size_t(i)], i);
  }
  // Deterministic, and a new order next epoch.
  EXPECT_EQ(batch_at(*s, 3).second, batch_at(*s, 3).second);
  EXPECT_NE(batch_at(*s, 3).second, batch_at(*s, 19).second);
}

// SIGKILL after step 6 (last checkpoint at step 4), resume: the final checkpoint equals an uninterrupted
// run's bit for bit (weights, optimizer moments, step counts).
// Every synthetic task answers from its own answer set, each answer about equally often (so the text alone
// stays near chance), with every question word in the vocabulary.
TEST(TrainerTasks, AnswersComeFromTheirSetsAndAreBalanced) {
  const std::map<std::string, std::vector<std::string>> answers = {
      {"count", {"one", "two", "three"}},         {"color", {"yes", "no"}},
      {"shape", {"yes", "no"}},                   {"object_color", {"red", "green", "blue", "yellow"}},
      {"what_color", {"red", "green", "blue", "yellow"}}, {"color_shape", {"yes", "no"}},
      {"count_color", {"one", "two"}}};
  ASSERT_EQ(answers.size(), known_tasks().size());
  for (const std::string& task : known_tasks()) {
    SCOPED_TRACE(task);
    const auto& allowed = answers.at(task);
    std::map<std::string, int> seen;
    const int n = 400;
    for (const VLExample& e : make_split(task, "train", n, 7, 32, 16, true, true)) {
      ASSERT_NE(std::find(allowed.begin(), allowed.end(), e.answer_text), allowed.end()) << e.answer_text;
      ++seen[e.answer_text];
      for (int64_t id : e.question) EXPECT_NE(id, 3) << "a question word outside the vocabulary";
      EXPECT_EQ(e.image.size(), size_t(32 * 32 * 3));
    }
    for (const std::string& a : allowed) {
      EXPECT_GT(seen[a], n / int(allowed.size()) / 2) << a;
      EXPECT_LT(seen[a], 2 * n / int(allowed.size())) << a;
    }
    EXPECT_NEAR(task_chance(task), 1.0 / double(allowed.size()), 1e-12);
  }
}

TEST(TrainerResume, SigkillAndResumeEqualsUninterruptedRun) {
  const fs::path dir = test::temp_dir("trainer_resume");
  const std::string a = (dir / "uninterrupted").string(), b = (dir / "killed").string();
  ASSERT_EQ(std::system(vlpeft_cmd(a).c_str()), 0) << "see " << a << ".log";
  const int killed = std::system(("VLP_TRAINER_KILL_AT_STEP=6 " + vlpeft_cmd(b)).c_str());
  ASSERT_NE(killed, 0) << "the run was not killed";
  ASSERT_TRUE(fs::exists(b + "/last.safetensors"));
  ASSERT_EQ(std::system(vlpeft_cmd(b, "--set resume=true").c_str()), 0) << "see " << b << ".log";
  std::ifstream log(b + ".log");
  std::string text((std::istreambuf_iterator<char>(log)), {});
  EXPECT_NE(text.find("resumed from"), std::string::npos) << text;
  auto x = tensor_bytes(a + "/last.safetensors"), y = tensor_bytes(b + "/last.safetensors");
  ASSERT_EQ(x.size(), y.size());
  int64_t differing = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    ASSERT_EQ(x[i].first, y[i].first);
    differing += x[i].second != y[i].second;
  }
  EXPECT_EQ(differing, 0);
  EXPECT_TRUE(fs::exists(a + "/metrics.svg"));
  EXPECT_TRUE(fs::exists(a + "/metrics.jsonl"));
}

TEST(TrainerCheckpoint, CorruptOrTruncatedIsRefusedAndThePreviousLoads) {
  const fs::path dir = test::temp_dir("trainer_corrupt");
  TrainConfig c = small_config((dir / "run").string());
  c.steps = 8;
  {
    auto s = make_session(c);
    train(*s);
  }
  const std::string last = c.out_dir + "/last.safetensors", prev = c.out_dir + "/last.prev.safetensors";
  ASSERT_TRUE(fs::exists(prev));
  const auto size = fs::file_size(last);
  // Truncated.
  const std::string trunc = (dir / "trunc.safetensors").string();
  fs::copy_file(last, trunc);
  fs::resize_file(trunc, size / 2);
  auto s = make_session(c);
  std::string err = error_of([&] { load_training_checkpoint(*s, trunc); });
  EXPECT_NE(err.find("is truncated or corrupt"), std::string::npos) << err;
  EXPECT_NE(err.find(trunc), std::string::npos) << err;
  // One flipped byte in the last tensor's data.
  const std::string flip = (dir / "flip.safetensors").string();
  fs::copy_file(last, flip);
  {
    std::fstream f(flip, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(std::streamoff(size - 3));
    char ch;
    f.read(&ch, 1);
    ch = char(ch ^ 0x5a);
    f.seekp(std::streamoff(size - 3));
    f.write(&ch, 1);
  }
  err = error_of([&] { load_training_checkpoint(*s, flip); });
  EXPECT_NE(err.find("is corrupt: checksum"), std::string::npos) << err;
  // The session was not changed by the refused loads, and the previous checkpoint loads.
  EXPECT_EQ(s->step, 0);
  load_training_checkpoint(*s, prev);
  EXPECT_EQ(s->step, 4);
  // Resuming with a corrupt last falls back to the previous one.
  fs::copy_file(trunc, last, fs::copy_options::overwrite_existing);
  TrainConfig r = c;
  r.resume = true;
  auto s2 = make_session(r);
  train(*s2);
  EXPECT_EQ(s2->step, 8);
  // A checkpoint of another model is refused by name.
  TrainConfig other = c;
  other.d_model = 64;
  other.heads = 4;
  auto s3 = make_session(other);
  err = error_of([&] { load_training_checkpoint(*s3, prev); });
  EXPECT_NE(err.find("another shape"), std::string::npos) << err;
}

TEST(TrainerLoop, NonFiniteLossStopsWithAClearMessage) {
  TrainConfig c = small_config(test::temp_dir("trainer_nan").string());
  c.lr = 1e30;
  c.warmup_ratio = 0;
  c.clip_norm = 1e30;
  c.steps = 10;
  c.save_every = 0;
  auto s = make_session(c);
  const std::string err = error_of([&] { train(*s); });
  EXPECT_NE(err.find("training stopped"), std::string::npos) << err;
}

TEST(TrainerPeft, OnlyAdapterAndVisualProjectionTrain) {
  TrainConfig c = small_config(test::temp_dir("trainer_peft").string());
  c.peft_type = "LORA";
  c.peft_json = {{"r", 4}, {"target_modules", {"q", "v"}}};
  auto s = make_session(c);
  bool lora = false, visual = false;
  for (auto& [name, p] : s->trainable) {
    lora |= name.find("lora_A") != std::string::npos;
    visual |= name.rfind("visual_embedding.", 0) == 0;
    EXPECT_TRUE(name.find("lora_") != std::string::npos || name.rfind("visual_embedding.", 0) == 0 ||
                name.find("bias") != std::string::npos)
        << name;
  }
  EXPECT_TRUE(lora);
  EXPECT_TRUE(visual);
}

// Prompt tables live on the backbone ("peft_shared.<name>"); the VL model must list them so the optimizer,
// checkpoints and the trainable count see them.
TEST(TrainerPeft, PromptTuningTableIsTrainedAndCheckpointed) {
  TrainConfig c = small_config(test::temp_dir("trainer_prompt").string());
  c.peft_type = "PROMPT_TUNING";
  c.peft_json = {{"num_virtual_tokens", 4}};
  auto s = make_session(c);
  std::vector<std::string> prompt_params;
  for (auto& [name, p] : s->trainable)
    if (name.find("peft_shared.default.") != std::string::npos) prompt_params.push_back(name);
  ASSERT_EQ(prompt_params.size(), 1u);
  EXPECT_EQ(prompt_params[0], "peft_shared.default.embedding.weight");
  int64_t listed = 0;
  for (auto& [name, p] : s->model->named_parameters())
    if (name == prompt_params[0]) listed = p.numel();
  EXPECT_EQ(listed, 4 * c.d_model);
}

// CI-sized demo: the base (ViT tower + T5, the demo's default) learns its tasks, and LoRA adaptation (tower
// frozen) beats the frozen base, zero-shot and with a trained visual projection, on the held-out tasks.
TEST(TrainerDemo, AdaptedModelBeatsFrozenBase) {
  DemoOptions o;
  EXPECT_EQ(o.vision_tower, "vit");
  o.pretrain_steps = 300;
  o.adapt_steps = 300;
  o.train_examples = 512;
  o.eval_examples = 100;
  o.progress = false;
  o.out_dir = test::temp_dir("trainer_demo").string();
  o.only = {"frozen base (zero-shot)", "frozen base + visual proj", "LoRA"};
  DemoResult r = run_demo(o);
  std::printf("%s", format_demo_table(r, o).c_str());
  EXPECT_GT(r.pretrain_scores["count"], 0.6);
  ASSERT_EQ(r.rows.size(), 3u);
  double sums[3] = {};
  for (int i = 0; i < 3; ++i) {
    ASSERT_EQ(r.rows[size_t(i)].error, "");
    for (auto& [k, v] : r.rows[size_t(i)].scores) sums[i] += v;
  }
  EXPECT_GT(sums[2], sums[0] + 0.5);  // LoRA vs the zero-shot frozen base
  EXPECT_GT(sums[2], sums[1] + 0.1);  // LoRA vs the frozen base with a trained visual projection
}
