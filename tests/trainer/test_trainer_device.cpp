// The trainer's device and autocast keys on any machine: parsing, defaults and printing; bad values are
// errors naming the key; `device: cuda` without a usable GPU fails at session creation (and the demo before
// it writes anything) with the key and CUDA's reason; a CPU session keeps everything on the CPU; the CLI
// shortcut --device and the demo table's device header. The GPU runs themselves: tests/cuda/test_cuda_trainer.cpp.
#include <gtest/gtest.h>

#include <sys/wait.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "runtime/device_copy.h"
#include "runtime/error.h"
#include "tests/common/test_util.h"
#include "tools/trainer/demo.h"
#include "tools/trainer/trainer.h"

using namespace vlp;
using namespace vlp::trainer;
namespace fs = std::filesystem;

namespace {

using ::vlp::test::error_of;

TrainConfig tiny(const std::vector<std::string>& extra = {}) {
  std::vector<std::string> sets = {"d_model=16", "layers=1", "heads=2", "d_ff=32", "train_examples=16",
                                   "eval_examples=8", "batch_size=4", "steps=2", "eval_every=0", "log_every=1",
                                   "threads=1", "progress=false", "tasks=count"};
  sets.insert(sets.end(), extra.begin(), extra.end());
  return parse_config(nlohmann::json::object(), "test", sets);
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

}  // namespace

TEST(TrainerDevice, KeysParsePrintAndResolve) {
  const TrainConfig d = tiny();
  EXPECT_EQ(d.device, "cpu");
  EXPECT_EQ(d.autocast, "auto");
  EXPECT_TRUE(config_device(d).is_cpu());
  EXPECT_FALSE(autocast_bf16(d));  // auto: off on the CPU
  const nlohmann::json j = config_to_json(tiny({"device=cuda:1", "autocast=off"}));
  EXPECT_EQ(j.at("device"), "cuda:1");
  EXPECT_EQ(j.at("autocast"), "off");
  EXPECT_EQ(parse_config(j, "printed").device, "cuda:1");  // what --print-config writes loads back
  EXPECT_EQ(config_device(tiny({"device=cuda:1"})), Device::cuda(1));
  EXPECT_EQ(config_device(tiny({"device=cuda"})), Device::cuda(0));
  // autocast resolves without touching a GPU: auto = bf16 exactly on CUDA.
  EXPECT_TRUE(autocast_bf16(tiny({"device=cuda"})));
  EXPECT_FALSE(autocast_bf16(tiny({"device=cuda", "autocast=off"})));
  EXPECT_TRUE(autocast_bf16(tiny({"autocast=bf16"})));
  EXPECT_FALSE(autocast_bf16(tiny({"autocast=off"})));
  // Every key has a line in the docs (--help, --print-config's _keys).
  std::string docs;
  for (const auto& [k, v] : config_key_docs()) docs += k + ": " + v + "\n";
  EXPECT_TRUE(contains(docs, "device: cpu (default) | cuda | cuda:N")) << docs;
  EXPECT_TRUE(contains(docs, "autocast: auto")) << docs;
}

TEST(TrainerDevice, BadValuesAreErrorsNamingTheKey) {
  EXPECT_TRUE(contains(error_of([] { parse_config({{"device", 0}}, "run.json"); }), "key 'device' must be a string"));
  EXPECT_TRUE(contains(error_of([] { parse_config({{"autocast", true}}, "run.json"); }), "key 'autocast' must be a string"));
  for (const std::string bad : {"gpu", "cuda:", "cuda:x", "CUDA", "cpu:0", ""}) {
    const std::string e = error_of([&] { validate_config(tiny({"device=" + bad})); });
    EXPECT_TRUE(contains(e, "key 'device' must be cpu, cuda or cuda:N, got '" + bad + "'")) << e;
    EXPECT_TRUE(contains(error_of([&] { make_session(tiny({"device=" + bad})); }), "key 'device'"));
  }
  for (const std::string bad : {"fp16", "on", "BF16", "true"}) {
    const std::string e = error_of([&] { validate_config(tiny({"autocast=\"" + bad + "\""})); });
    EXPECT_TRUE(contains(e, "key 'autocast' must be auto, off or bf16, got '" + bad + "'")) << e;
  }
  EXPECT_EQ(error_of([] { validate_config(tiny({"autocast=bf16"})); }), "");  // bf16 on the CPU is allowed
}

TEST(TrainerDevice, CudaWithoutAGpuFailsBeforeAnyWork) {
  if (cuda_available()) GTEST_SKIP() << "a CUDA device is present: tests/cuda/test_cuda_trainer.cpp runs it";
  const std::string reason = cuda_unavailable_reason();
  ASSERT_FALSE(reason.empty());
  for (const std::string dev : {"cuda", "cuda:0", "cuda:3"}) {
    const std::string e = error_of([&] { make_session(tiny({"device=" + dev})); });
    EXPECT_TRUE(contains(e, "key 'device' is '" + dev + "'")) << e;
    EXPECT_TRUE(contains(e, "no CUDA device can be used: " + reason)) << e;
  }
  // The demo refuses before it creates its output directory or trains anything.
  DemoOptions o;
  o.device = "cuda";
  o.progress = false;
  o.out_dir = (test::temp_dir("trainer_device_demo") / "never").string();
  const std::string e = error_of([&] { run_demo(o); });
  EXPECT_TRUE(contains(e, "key 'device'") && contains(e, reason)) << e;
  EXPECT_FALSE(fs::exists(o.out_dir));
}

TEST(TrainerDevice, CpuSessionKeepsEverythingOnTheCpu) {
  auto s = make_session(tiny({"out_dir=" + (test::temp_dir("trainer_device_cpu") / "run").string()}));
  EXPECT_TRUE(s->device.is_cpu());
  EXPECT_FALSE(s->autocast_bf16);
  for (auto& [name, p] : s->net().named_parameters()) EXPECT_TRUE(p.is_cpu()) << name;
  MicroBatch b = next_micro_batch(*s);
  for (const Tensor* t : {&b.input_ids, &b.attention_mask, &b.labels, &b.visual.feats}) EXPECT_TRUE(t->is_cpu());
  RunSummary r = train(*s);
  EXPECT_EQ(r.steps, 2);
  EXPECT_EQ(r.peak_device_bytes, 0);
  EXPECT_GT(r.peak_rss_bytes, 0);
}

// autocast=bf16 on the CPU emulates the GPU policy (bf16-rounded matmul and attention operands): the run
// trains with F32 master weights, its loss close to the F32 run's but not equal to it.
TEST(TrainerDevice, Bf16AutocastTrainsWithF32MasterWeights) {
  const fs::path dir = test::temp_dir("trainer_device_autocast");
  auto f32 = make_session(tiny({"steps=6", "out_dir=" + (dir / "f32").string()}));
  auto bf16 = make_session(tiny({"steps=6", "autocast=bf16", "out_dir=" + (dir / "bf16").string()}));
  EXPECT_TRUE(bf16->autocast_bf16);
  const RunSummary a = train(*f32), b = train(*bf16);
  EXPECT_TRUE(std::isfinite(b.last_loss));
  EXPECT_NE(a.last_loss, b.last_loss);
  EXPECT_NEAR(a.last_loss, b.last_loss, 0.05 * std::abs(a.last_loss));
  for (auto& [name, p] : bf16->net().named_parameters()) EXPECT_EQ(p.dtype(), DType::F32) << name;
}

TEST(TrainerDevice, DemoTableHeaderNamesTheDevice) {
  DemoResult r;
  DemoRow row;
  row.method = "LoRA";
  row.scores = {{"what_color", 0.5}, {"color_shape", 0.75}};
  row.peak_mb = 12;
  row.peak_device_mb = 3.5;
  r.rows = {row};
  DemoOptions o;
  const std::string cpu = format_demo_table(r, o);
  EXPECT_TRUE(contains(cpu, "exact-match accuracy, device cpu:\n")) << cpu;
  EXPECT_FALSE(contains(cpu, "GPU MB")) << cpu;
  o.device = "cuda";
  const std::string gpu = format_demo_table(r, o);
  EXPECT_TRUE(contains(gpu, "device cuda:0 (autocast bf16):\n")) << gpu;
  EXPECT_TRUE(contains(gpu, "GPU MB")) << gpu;
  EXPECT_TRUE(contains(gpu, "       3.5")) << gpu;
}

// The binary: --device is a shortcut for --set device=DEV (and wins over it); the demo takes it too.
TEST(TrainerDevice, CliDeviceShortcut) {
  const std::string bin = std::string(VLP_BINARY_DIR) + "/bin/vlpeft";
  if (!fs::exists(bin)) GTEST_SKIP() << "the vlpeft binary is not built at " << bin << " (target vlpeft_bin)";
  const fs::path dir = test::temp_dir("trainer_device_cli");
  auto run = [&](const std::string& args, std::string* out) {
    const std::string o = (dir / "out").string();
    const int status = std::system((bin + " " + args + " > " + o + " 2>&1").c_str());
    std::ifstream f(o);
    std::stringstream ss;
    ss << f.rdbuf();
    *out = ss.str();
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  };
  std::string out;
  ASSERT_EQ(run("train --set device=cpu --device cuda:2 --print-config", &out), 0) << out;
  EXPECT_EQ(nlohmann::json::parse(out).at("device"), "cuda:2");
  for (const std::string cmd : {"demo", "train", "eval", "generate"}) {
    ASSERT_EQ(run(cmd + " --help", &out), 0);
    EXPECT_TRUE(contains(out, "--device")) << cmd << ":\n" << out;
  }
  EXPECT_EQ(run("train --device gpu --set steps=0", &out), 1);
  EXPECT_TRUE(contains(out, "key 'device' must be cpu, cuda or cuda:N, got 'gpu'")) << out;
  if (!cuda_available()) {
    EXPECT_EQ(run("train --device cuda --set out_dir=" + (dir / "never").string(), &out), 1);
    EXPECT_TRUE(contains(out, "key 'device' is 'cuda'") && contains(out, cuda_unavailable_reason())) << out;
    EXPECT_EQ(run("--device cuda --out " + (dir / "demo_never").string(), &out), 1);  // the demo, the default command
    EXPECT_TRUE(contains(out, "key 'device'")) << out;
    EXPECT_FALSE(fs::exists(dir / "demo_never"));
  }
}
