// A full PEFT training step on CUDA against the same steps on the CPU: the tiny reference backbones of
// tests/fixtures/models (GPT-2, T5, BART; d = 24, two layers) with LoRA or a bottleneck adapter, moved to
// the GPU with Module::to_device after the adapter is added; each step runs forward (training mode, so
// dropout runs with the CPU's Philox masks), backward, global-norm clipping and AdamW. Losses, gradient norms and
// the trained parameters must follow the CPU run.
#ifdef VLP_HAVE_CUDA
#include <gtest/gtest.h>

#include "autograd/optim.h"
#include "tests/cuda/cuda_test_util.h"
#include "tests/peft/peft_fixture.h"

namespace vlp {
namespace {

using namespace cudatest;
using J = nlohmann::json;

struct TrainRun {
  std::vector<double> losses, norms;
  std::vector<std::pair<std::string, Tensor>> trained;  // trainable parameters after the last step
};

TrainRun train(const std::string& kind, const J& config, Device device, int steps) {
  test::TinyModel m(kind);
  Module& model = m.module();
  peft::add_adapter(model, peft::parse_peft_config(config, "case"), "default", 5);
  model.to_device(device);
  for (auto& [name, t] : m.batch) t = convert(t, t.dtype(), device);
  model.train(true);
  std::vector<Tensor> params;
  for (auto& [name, p] : model.named_parameters())
    if (p.requires_grad()) params.push_back(p);
  Optimizer opt = make_adamw(params, 1e-2, 0.01);
  TrainRun r;
  Generator gen(77);
  for (int s = 0; s < steps; ++s) {
    ForwardContext ctx;
    ctx.training = true;
    ctx.generator = &gen;
    Tensor loss = m.forward(ctx).loss;
    EXPECT_EQ(loss.device(), device);
    r.losses.push_back(loss.item());
    backward(loss);
    r.norms.push_back(clip_grad_norm_(params, 0.5));
    step(opt);
    zero_grad(opt);
  }
  for (auto& [name, p] : model.named_parameters())
    if (p.requires_grad()) r.trained.push_back({name, p});
  return r;
}

TEST(CudaTraining, PeftStepsOnTinyBackbonesFollowTheCpu) {
  VLP_REQUIRE_GPU();
  const std::vector<std::pair<std::string, J>> cases = {
      {"gpt2", J{{"peft_type", "LORA"}, {"r", 4}, {"lora_alpha", 8}, {"lora_dropout", 0.1}}},
      {"t5", J{{"peft_type", "LORA"}, {"r", 4}, {"lora_alpha", 8}, {"lora_dropout", 0.1}}},
      {"bart", J{{"peft_type", "LORA"}, {"r", 4}, {"lora_alpha", 8}}},
      {"t5", J{{"peft_type", "VLPEFT_ADAPTER"}, {"reduction_factor", 4}, {"init_weights", "bert"}}},
      {"bart", J{{"peft_type", "VLPEFT_ADAPTER"}, {"reduction_factor", 4}, {"init_weights", "bert"}}},
  };
  for (const auto& [kind, config] : cases) {
    const std::string what = kind + " " + config.dump();
    TrainRun c = train(kind, config, Device::cpu(), 3), g = train(kind, config, gpu(), 3);
    // fp32 through a whole model: reductions are ordered differently on the GPU, so not bit-equal.
    EXPECT_TRUE(rel_close(g.losses, c.losses, 1e-4, what + " losses"));
    EXPECT_TRUE(rel_close(g.norms, c.norms, 1e-4, what + " gradient norms"));
    ASSERT_EQ(g.trained.size(), c.trained.size()) << what;
    for (size_t i = 0; i < c.trained.size(); ++i) {
      EXPECT_TRUE(g.trained[i].second.is_cuda()) << g.trained[i].first;
      EXPECT_TRUE(rel_close(g.trained[i].second, c.trained[i].second, 1e-4, what + " " + c.trained[i].first));
    }
  }
}

}  // namespace
}  // namespace vlp
#endif  // VLP_HAVE_CUDA
