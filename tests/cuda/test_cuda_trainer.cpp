// The trainer (tools/trainer) with `device: cuda`: a short synthetic run follows the same run on the CPU
// step by step (autocast off: F32 everywhere, reductions ordered differently, so close but not bit-equal),
// evaluation and generation run on the GPU, micro-batches and the optimizer state live there, checkpoints
// hold CPU copies that load back onto the GPU (and into a CPU session), resuming restores the saved state
// exactly, and the bf16 autocast run trains (its loss falls).
#ifdef VLP_HAVE_CUDA
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "runtime/safetensors.h"
#include "tests/common/test_util.h"
#include "tests/cuda/cuda_test_util.h"
#include "tools/trainer/trainer.h"

namespace vlp {
namespace {

using namespace cudatest;
using namespace vlp::trainer;
namespace fs = std::filesystem;

TrainConfig tiny(const std::string& out_dir, const std::vector<std::string>& extra = {}) {
  std::vector<std::string> sets = {"d_model=32", "layers=1", "heads=2", "d_ff=64", "train_examples=64",
                                   "eval_examples=32", "batch_size=8", "steps=20", "lr=3e-3", "dropout=0.0",
                                   "eval_every=0", "save_every=0", "log_every=1", "threads=2", "progress=false",
                                   "tasks=\"count,color\"", "out_dir=" + out_dir};
  sets.insert(sets.end(), extra.begin(), extra.end());
  return parse_config(nlohmann::json::object(), "test", sets);
}

// The per-step training losses the run logged.
std::vector<double> logged_losses(const std::string& out_dir) {
  std::ifstream in(out_dir + "/metrics.jsonl");
  std::vector<double> losses;
  std::string line;
  while (std::getline(in, line)) {
    const auto j = nlohmann::json::parse(line);
    if (j.contains("loss")) losses.push_back(j.at("loss").get<double>());
  }
  return losses;
}

struct TrainerRun {
  std::vector<double> losses;
  std::map<std::string, double> eval;
  std::unique_ptr<Session> session;
};

TrainerRun trainer_run(const std::string& name, const std::string& device, const std::string& autocast,
        const std::vector<std::string>& extra = {}) {
  const std::string out = (test::temp_dir("cuda_trainer_" + name) / "run").string();
  TrainerRun r;
  std::vector<std::string> sets = {"device=" + device, "autocast=" + autocast};
  sets.insert(sets.end(), extra.begin(), extra.end());
  r.session = make_session(tiny(out, sets));
  train(*r.session);
  r.losses = logged_losses(out);
  r.eval = evaluate(*r.session);
  return r;
}

TEST(CudaTrainer, SyntheticRunFollowsTheCpuStepByStep) {
  VLP_REQUIRE_GPU();
  TrainerRun on_cpu = trainer_run("f32_cpu", "cpu", "off"), on_gpu = trainer_run("f32_gpu", "cuda", "off");
  ASSERT_EQ(on_cpu.losses.size(), 20u);
  ASSERT_EQ(on_gpu.losses.size(), 20u);
  EXPECT_FALSE(on_gpu.session->autocast_bf16);
  for (size_t i = 0; i < on_cpu.losses.size(); ++i)
    EXPECT_NEAR(on_gpu.losses[i], on_cpu.losses[i], 1e-3 * std::abs(on_cpu.losses[i])) << "step " << i + 1;
  // Evaluation (greedy generation on the GPU) gives every task an accuracy; a near-tie in an argmax may
  // flip an answer or two.
  ASSERT_EQ(on_gpu.eval.size(), 2u);
  for (const auto& [task, acc] : on_cpu.eval) {
    ASSERT_TRUE(on_gpu.eval.count(task)) << task;
    EXPECT_GE(on_gpu.eval[task], 0.0);
    EXPECT_LE(on_gpu.eval[task], 1.0);
    EXPECT_NEAR(on_gpu.eval[task], acc, 0.1) << task;
  }
  // The weights after training follow the CPU's and stayed on the GPU.
  auto c = on_cpu.session->net().named_parameters(), g = on_gpu.session->net().named_parameters();
  ASSERT_EQ(c.size(), g.size());
  for (size_t i = 0; i < c.size(); ++i) {
    EXPECT_TRUE(g[i].second.is_cuda()) << g[i].first;
    EXPECT_TRUE(rel_close(g[i].second, c[i].second, 1e-3, c[i].first));
  }
}

TEST(CudaTrainer, BatchesOptimizerStateAndPeakMemoryLiveOnTheGpu) {
  VLP_REQUIRE_GPU();
  auto s = make_session(tiny((test::temp_dir("cuda_trainer_placement") / "run").string(), {"device=cuda", "steps=2"}));
  EXPECT_EQ(s->device, gpu());
  EXPECT_TRUE(s->autocast_bf16);  // auto on CUDA
  for (auto& [name, p] : s->trainable) EXPECT_TRUE(p.is_cuda() && p.requires_grad()) << name;
  MicroBatch b = next_micro_batch(*s);
  for (const Tensor* t : {&b.input_ids, &b.attention_mask, &b.visual.feats}) EXPECT_TRUE(t->is_cuda());
  EXPECT_TRUE(b.labels.is_cpu());  // the losses read labels on the host
  s->micro_batch = 0;
  RunSummary r = train(*s);
  EXPECT_EQ(r.steps, 2);
  EXPECT_GT(r.peak_device_bytes, 0);
  for (auto& [name, t] : export_optimizer_state(s->opt)) {
    if (t.numel() > 1) {
      EXPECT_TRUE(t.is_cuda()) << name;
    }
  }
}

TEST(CudaTrainer, CheckpointsHoldCpuCopiesAndResumeOntoTheGpu) {
  VLP_REQUIRE_GPU();
  const std::string dir = (test::temp_dir("cuda_trainer_resume") / "run").string();
  // 8 steps straight, and 4 steps, then a new session resuming to 8.
  const std::string full = dir + "_full", half = dir + "_half";
  fs::remove_all(full);
  fs::remove_all(half);
  auto a = make_session(tiny(full, {"device=cuda", "autocast=off", "steps=8", "save_every=4"}));
  train(*a);
  auto b = make_session(tiny(half, {"device=cuda", "autocast=off", "steps=4", "save_every=4"}));
  train(*b);
  // The file holds CPU tensors equal to the GPU session's weights.
  SafetensorsFile f = load_safetensors(half + "/last.safetensors");
  for (auto& [name, t] : b->net().state_dict()) {
    const Tensor* saved = f.find("model." + name);
    ASSERT_NE(saved, nullptr) << name;
    EXPECT_TRUE(saved->is_cpu());
    EXPECT_EQ(to_vector(*saved), to_vector(t)) << name;
  }
  // It loads onto the GPU exactly (weights, step) and into a CPU session too.
  auto back = make_session(tiny(half, {"device=cuda", "autocast=off", "steps=8", "save_every=4"}));
  load_training_checkpoint(*back, half + "/last.safetensors");
  EXPECT_EQ(back->step, 4);
  auto cpu = make_session(tiny(half, {"device=cpu", "steps=8"}));
  load_training_checkpoint(*cpu, half + "/last.safetensors");
  auto wb = back->net().named_parameters(), wc = cpu->net().named_parameters(), w4 = b->net().named_parameters();
  for (size_t i = 0; i < w4.size(); ++i) {
    EXPECT_TRUE(wb[i].second.is_cuda());
    EXPECT_EQ(to_vector(wb[i].second), to_vector(w4[i].second)) << w4[i].first;
    EXPECT_EQ(to_vector(wc[i].second), to_vector(w4[i].second)) << w4[i].first;
  }
  // Resuming continues the run: the restored state is exact, the later steps close to the straight run's.
  auto resumed = make_session(tiny(half, {"device=cuda", "autocast=off", "steps=8", "save_every=4", "resume=true"}));
  train(*resumed);
  const std::vector<double> straight = logged_losses(full), split = logged_losses(half);
  ASSERT_EQ(straight.size(), 8u);
  ASSERT_EQ(split.size(), 8u);  // 4 + 4 lines in the one log
  EXPECT_TRUE(rel_close(split, straight, 1e-4, "resumed losses"));
  auto wa = a->net().named_parameters(), wr = resumed->net().named_parameters();
  for (size_t i = 0; i < wa.size(); ++i) EXPECT_TRUE(rel_close(wr[i].second, wa[i].second, 1e-4, wa[i].first));
}

TEST(CudaTrainer, Bf16AutocastRunLowersTheLoss) {
  VLP_REQUIRE_GPU();
  TrainerRun r = trainer_run("bf16_gpu", "cuda", "bf16");
  EXPECT_TRUE(r.session->autocast_bf16);
  ASSERT_EQ(r.losses.size(), 20u);
  double first = 0, last = 0;
  for (size_t i = 0; i < 3; ++i) first += r.losses[i] / 3, last += r.losses[r.losses.size() - 1 - i] / 3;
  for (double l : r.losses) EXPECT_TRUE(std::isfinite(l));
  EXPECT_LT(last, 0.8 * first) << "first " << first << ", last " << last;
  EXPECT_EQ(r.eval.size(), 2u);
}

}  // namespace
}  // namespace vlp
#endif  // VLP_HAVE_CUDA
