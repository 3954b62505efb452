// Every PEFT method on the GPU against the CPU (issues #3/#7): each case of tests/peft_training's method table
// (tests/peft_training/method_cases.h: one per entry of models/peft/methods.cpp, the variants with other code
// paths, every VL-Adapter recipe) is attached to its tiny backbone (tests/fixtures/models, d = 24, two layers)
// with the same seed on both devices; the model goes to the GPU with Module::to_device after add_adapter, and
// once more with the adapter added to a model already on the GPU. One forward and backward, one AdamW step and a
// second forward must give the CPU's losses and the CPU's gradient for every trainable parameter, all of them
// on the GPU. Training-only paths (BOFT block dropout, LyCORIS rank and module dropout, VeRA / AdaLoRA / routed
// LoRA dropout, COFT's projection, OFT's exact Cayley inverse, HRA's Gram-Schmidt) run in training mode, where
// the draws come from the one CPU generator on both devices. Merging and unmerging on the GPU, AdaLoRA's
// orthogonal loss, rank allocation and save slicing, AdapterFusion's regulariser, switching LN-tuning
// adapters on a GPU model and PiSSA's save as a plain LoRA are checked too.
//
// Tolerance: fp32 through a whole model; the GPU orders its reductions differently, so losses and gradients
// agree to ~1e-6 relative, not bit for bit. Losses must agree to 1e-4 relative; a gradient g to
// ||g_gpu - g_cpu|| <= 1e-4 ||g_cpu|| + 1e-7 (the absolute term for gradients that are zero up to rounding,
// e.g. cancelling terms at identity initialisations; the fixture's gradients are 1e-3 and larger).
#ifdef VLP_HAVE_CUDA
#include <gtest/gtest.h>

#include <cmath>
#include <memory>

#include "autograd/optim.h"
#include "models/peft/adalora.h"
#include "models/peft/fusion.h"
#include "models/peft/lora.h"
#include "tests/cuda/cuda_test_util.h"
#include "tests/peft/peft_fixture.h"
#include "tests/peft_training/method_cases.h"

namespace vlp {
namespace {

using namespace cudatest;
using J = nlohmann::json;
using test::Case;

::testing::AssertionResult grad_close(const Tensor& got, const Tensor& want, const std::string& what) {
  std::vector<double> a = to_vector(got), b = to_vector(want);
  if (a.size() != b.size()) return ::testing::AssertionFailure() << what << ": " << a.size() << " vs " << b.size();
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!std::isfinite(a[i]) && std::isfinite(b[i]))
      return ::testing::AssertionFailure() << what << ": element " << i << " is " << a[i] << ", expected " << b[i];
    num += (a[i] - b[i]) * (a[i] - b[i]);
    den += b[i] * b[i];
  }
  if (std::sqrt(num) <= 1e-4 * std::sqrt(den) + 1e-7) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << what << ": ||gpu - cpu|| = " << std::sqrt(num) << ", ||cpu|| = "
                                       << std::sqrt(den);
}

// The case's model with its adapter on `device`: attached on the CPU and moved, or (attach_on_device) attached
// to a model already on the device.
std::unique_ptr<test::TinyModel> adapted_model(const Case& c, Device device, bool attach_on_device) {
  auto m = std::make_unique<test::TinyModel>(c.model);
  Module& model = m->module();
  if (attach_on_device) model.to_device(device);
  test::attach_case(model, c);
  if (!attach_on_device) model.to_device(device);
  for (auto& [name, t] : m->batch) t = convert(t, t.dtype(), device);
  return m;
}

ForwardContext context_for(const Case& c, test::TinyModel& m, Device device, bool training, Generator* gen) {
  ForwardContext ctx;
  ctx.task = c.task;
  ctx.training = training;
  ctx.generator = gen;
  if (c.visual) {
    Generator g(21);
    ctx.visual = convert(randn({m.batch.at("input_ids").size(0), 1, 24}, &g), DType::F32, device);
  }
  return ctx;
}

struct StepResult {
  double loss = 0, loss_after = 0;
  std::vector<std::pair<std::string, Tensor>> grads;  // every trainable parameter's gradient (undefined: none)
};

StepResult one_step(const Case& c, Device device, bool training, bool attach_on_device) {
  const std::string what = c.label + " on " + (device.is_cpu() ? "cpu" : "cuda");
  auto m = adapted_model(c, device, attach_on_device);
  Module& model = m->module();
  std::vector<Tensor> params;
  for (auto& [name, p] : model.named_parameters()) {
    EXPECT_EQ(p.device(), device) << what << ": " << name;
    if (p.requires_grad()) params.push_back(p);
  }
  EXPECT_FALSE(params.empty()) << what;
  Generator gen(77);
  ForwardContext ctx = context_for(c, *m, device, training, &gen);
  Tensor loss = m->forward(ctx).loss;
  EXPECT_EQ(loss.device(), device) << what;
  StepResult r;
  r.loss = loss.item();
  backward(loss);
  for (auto& [name, p] : model.named_parameters()) {
    if (!p.requires_grad()) continue;
    if (p.grad().defined()) {
      EXPECT_EQ(p.grad().device(), device) << what << ": gradient of " << name;
    }
    r.grads.push_back({name, p.grad().defined() ? convert(p.grad(), DType::F32, Device::cpu()) : Tensor()});
  }
  Optimizer opt = make_adamw(params, c.lr, 0.0);
  step(opt);
  {
    NoGradGuard no_grad;
    r.loss_after = m->forward(ctx).loss.item();
  }
  return r;
}

void expect_gpu_follows_cpu(const Case& c, bool training) {
  StepResult cpu = one_step(c, Device::cpu(), training, false);
  for (bool on_device : {false, true}) {
    const std::string what = c.label + (on_device ? " (attached on the GPU)" : " (moved after attaching)");
    StepResult g = one_step(c, gpu(), training, on_device);
    EXPECT_TRUE(rel_close(std::vector<double>{g.loss}, {cpu.loss}, 1e-4, what + " loss"));
    EXPECT_TRUE(rel_close(std::vector<double>{g.loss_after}, {cpu.loss_after}, 1e-4, what + " loss after AdamW"));
    ASSERT_EQ(g.grads.size(), cpu.grads.size()) << what;
    for (size_t i = 0; i < cpu.grads.size(); ++i) {
      const auto& [name, want] = cpu.grads[i];
      EXPECT_EQ(g.grads[i].first, name) << what;
      ASSERT_EQ(g.grads[i].second.defined(), want.defined()) << what << ": gradient of " << name;
      if (want.defined()) {
        EXPECT_TRUE(grad_close(g.grads[i].second, want, what + " gradient of " + name));
      }
    }
  }
}

TEST(CudaPeft, EveryMethodOfTheTableFollowsTheCpu) {
  VLP_REQUIRE_GPU();
  for (const Case& c : test::method_cases()) {
    SCOPED_TRACE(c.label);
    expect_gpu_follows_cpu(c, /*training=*/false);
  }
}

// Options whose code runs only in training mode, or only off the default initialisation.
TEST(CudaPeft, TrainingOnlyPathsFollowTheCpu) {
  VLP_REQUIRE_GPU();
  const std::vector<Case> cases = {
      {"boft_dropout", "t5", J{{"peft_type", "BOFT"}, {"boft_block_size", 4}, {"boft_n_butterfly_factor", 2},
                               {"boft_dropout", 0.5}, {"init_weights", false}}},
      {"loha_rank_module_dropout", "t5", J{{"peft_type", "LOHA"}, {"r", 4}, {"alpha", 8}, {"rank_dropout", 0.3},
                                           {"module_dropout", 0.2}, {"init_weights", false}}},
      {"lokr_rank_dropout_scale", "t5", J{{"peft_type", "LOKR"}, {"r", 4}, {"alpha", 8}, {"rank_dropout", 0.3},
                                          {"rank_dropout_scale", true}, {"init_weights", false}}},
      {"adalora_dropout", "bart", J{{"peft_type", "ADALORA"}, {"init_r", 6}, {"target_r", 4}, {"lora_alpha", 8},
                                    {"total_step", 100}, {"lora_dropout", 0.1}}},
      {"vera_dropout", "gpt2", J{{"peft_type", "VERA"}, {"r", 8}, {"vera_dropout", 0.1}, {"init_weights", false}}},
      {"oft_coft_exact_cayley", "t5", J{{"peft_type", "OFT"}, {"oft_block_size", 4}, {"r", 0}, {"coft", true},
                                        {"eps", 1e-2}, {"use_cayley_neumann", false}, {"init_weights", false}}},
      {"oft_block_share", "bart", J{{"peft_type", "OFT"}, {"oft_block_size", 4}, {"r", 0}, {"block_share", true},
                                    {"init_weights", false}}},
      {"hra_gram_schmidt", "t5", J{{"peft_type", "HRA"}, {"r", 3}, {"apply_GS", true}, {"init_weights", false}}},
      {"fourierft_gpt2", "gpt2", J{{"peft_type", "FOURIERFT"}, {"n_frequency", 32}, {"init_weights", false}}},
      {"ia3_random", "bart", J{{"peft_type", "IA3"}, {"init_ia3_weights", false}}},
      {"routed_lora_dropout", "t5", J{{"peft_type", "VLPEFT_ROUTED_LORA"}, {"r", 4}, {"routing_function", 1},
                                      {"lora_dropout", 0.1}}, 1e-2, 0, true},
      {"prompt_tuning_sample_vocab", "gpt2", J{{"peft_type", "PROMPT_TUNING"}, {"task_type", "CAUSAL_LM"},
                                               {"num_virtual_tokens", 4}, {"prompt_tuning_init", "SAMPLE_VOCAB"}}},
      {"p_tuning_gpt2", "gpt2", J{{"peft_type", "P_TUNING"}, {"task_type", "CAUSAL_LM"}, {"num_virtual_tokens", 4},
                                  {"encoder_hidden_size", 16}}},
      {"fusion_static", "bart", J{{"peft_type", "VLPEFT_FUSION"}, {"adapters", {"a", "b"}}, {"fusion_type", "static"}},
       1e-2, 0, false, true},
      // Poly's RelaxedBernoulli draws and AdaMix's expert picks come from the CPU generator on every device.
      {"poly_relaxed_bernoulli", "t5", J{{"peft_type", "POLY"}, {"r", 2}, {"n_tasks", 2}, {"n_splits", 2},
                                         {"init_weights", false}}, 1e-2, 1},
      {"adamix_adapter_picks", "bart", J{{"peft_type", "VLPEFT_ADAMIX"}, {"num_experts", 3}, {"reduction_factor", 4},
                                         {"expert_init", "independent"}}},
      {"adamix_lora_picks", "t5", J{{"peft_type", "VLPEFT_ADAMIX"}, {"adamix_variant", "lora"}, {"num_experts", 3},
                                    {"r", 4}, {"lora_dropout", 0.1}, {"expert_init", "independent"}}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.label);
    expect_gpu_follows_cpu(c, /*training=*/true);
  }
}

// merge_adapters / unmerge_adapters on a GPU model (the float64 merges run on the host) give the CPU's logits.
TEST(CudaPeft, MergeAndUnmergeOnTheGpuFollowTheCpu) {
  VLP_REQUIRE_GPU();
  const std::vector<Case> cases = {
      {"loha", "t5", J{{"peft_type", "LOHA"}, {"r", 4}, {"alpha", 8}, {"init_weights", false}}},
      {"lokr", "t5", J{{"peft_type", "LOKR"}, {"r", 4}, {"alpha", 8}, {"init_weights", false}}},
      {"vera", "t5", J{{"peft_type", "VERA"}, {"r", 8}, {"init_weights", false}}},
      {"oft", "t5", J{{"peft_type", "OFT"}, {"oft_block_size", 4}, {"r", 0}, {"init_weights", false}}},
      {"oft_exact", "bart", J{{"peft_type", "OFT"}, {"oft_block_size", 4}, {"r", 0}, {"use_cayley_neumann", false},
                              {"init_weights", false}}},
      {"boft", "t5", J{{"peft_type", "BOFT"}, {"boft_block_size", 4}, {"boft_n_butterfly_factor", 2},
                       {"init_weights", false}}},
      {"hra", "t5", J{{"peft_type", "HRA"}, {"r", 3}, {"init_weights", false}}},
      {"fourierft", "t5", J{{"peft_type", "FOURIERFT"}, {"n_frequency", 64}, {"init_weights", false}}},
      {"ia3", "gpt2", J{{"peft_type", "IA3"}, {"init_ia3_weights", false}}},
      {"adalora", "t5", J{{"peft_type", "ADALORA"}, {"init_r", 6}, {"target_r", 4}, {"total_step", 100},
                          {"init_lora_weights", false}}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.label);
    auto logits = [&](Device device) {
      auto m = adapted_model(c, device, false);
      std::vector<Tensor> out{m->logits()};
      peft::merge_adapters(m->module(), {"default"});
      out.push_back(m->logits());
      peft::unmerge_adapters(m->module());
      out.push_back(m->logits());
      return out;
    };
    std::vector<Tensor> cpu = logits(Device::cpu()), g = logits(gpu());
    const char* stage[] = {"adapted", "merged", "unmerged"};
    for (size_t i = 0; i < cpu.size(); ++i) {
      EXPECT_TRUE(g[i].is_cuda()) << stage[i];
      EXPECT_TRUE(rel_close(g[i], cpu[i], 1e-4, c.label + " " + stage[i] + " logits"));
    }
  }
}

// AdaLoRA's extra pieces on the GPU: the orthogonal regulariser against the CPU, and a short run of
// update_and_allocate down to the target budget, whose masks the save slicing applies to the GPU tensors.
TEST(CudaPeft, AdaLoraAllocationAndSaveSlicingOnTheGpu) {
  VLP_REQUIRE_GPU();
  const Case c{"adalora_budget", "t5", J{{"peft_type", "ADALORA"}, {"init_r", 6}, {"target_r", 2}, {"lora_alpha", 8},
                                         {"total_step", 4}, {"tinit", 0}, {"tfinal", 1}, {"init_lora_weights", false}}};
  auto orth = [&](Device device) {
    auto m = adapted_model(c, device, false);
    Tensor l = peft::adalora_orthogonal_loss(m->module());
    EXPECT_EQ(l.device(), device);
    return l.item();
  };
  EXPECT_TRUE(rel_close(std::vector<double>{orth(gpu())}, {orth(Device::cpu())}, 1e-4, "orthogonal loss"));

  auto m = adapted_model(c, gpu(), false);
  Module& model = m->module();
  std::vector<Tensor> params;
  for (auto& [name, p] : model.named_parameters())
    if (p.requires_grad()) params.push_back(p);
  Optimizer opt = make_adamw(params, 1e-2, 0.0);
  peft::AdaLoraAllocator alloc(model);
  for (int64_t s = 1; s <= 4; ++s) {
    Tensor loss = add(m->forward().loss, peft::adalora_orthogonal_loss(model));
    backward(loss);
    step(opt);
    alloc.update_and_allocate(model, s);
    zero_grad(opt);
  }
  auto tensors = peft::adapter_state_dict(model, "default");
  std::map<std::string, Tensor> full;
  for (auto& [k, t] : tensors) full[k] = convert(t, DType::F32, Device::cpu());
  J config = J::object();
  peft::adalora_prepare_save(model, "default", config, tensors);
  int64_t kept_total = 0, layers = 0;
  for (auto& [k, t] : tensors) {
    if (k.size() < 7 || k.compare(k.size() - 7, 7, ".lora_E") != 0) continue;
    EXPECT_TRUE(t.is_cuda()) << k;
    kept_total += t.size(0);
    ++layers;
    // The kept rows are the nonzero entries of the masked E, in order.
    std::vector<double> e = to_vector(full.at(k)), kept;
    for (double v : e)
      if (v != 0.0) kept.push_back(v);
    EXPECT_EQ(to_vector(t), kept) << k;
  }
  EXPECT_GT(layers, 0);
  EXPECT_EQ(kept_total, 2 * layers) << "target_r = 2 ranks per layer after the budgeting phase";
}

// AdapterFusion's value regulariser on the GPU: the CPU's value, on the model's device, also when no dynamic
// fusion is active (the zero scalar).
TEST(CudaPeft, FusionRegularizationFollowsTheModel) {
  VLP_REQUIRE_GPU();
  Case c{"fusion", "bart", J{{"peft_type", "VLPEFT_FUSION"}, {"adapters", {"a", "b"}}}, 1e-2, 0, false, true};
  auto reg = [&](Device device, bool active) {
    auto m = adapted_model(c, device, false);
    {
      NoGradGuard no_grad;  // move value.weight off the identity so the regulariser is not 0
      for (auto& [name, p] : m->module().named_parameters())
        if (name.find("value.weight") != std::string::npos) add_(p, full(p.shape(), 0.01, p.dtype(), p.device()));
    }
    if (!active) peft::set_active_adapters(m->module(), {"a"});
    Tensor r = peft::fusion_regularization(m->module(), 0.5);
    EXPECT_EQ(r.device(), device);
    return r.item();
  };
  const double cpu = reg(Device::cpu(), true);
  EXPECT_GT(cpu, 0.0);
  EXPECT_TRUE(rel_close(std::vector<double>{reg(gpu(), true)}, {cpu}, 1e-5, "fusion regulariser"));
  EXPECT_EQ(reg(gpu(), false), 0.0);
}

// LN tuning keeps the frozen norms outside every registration; switching adapters on a GPU model swaps them
// back in on the GPU.
TEST(CudaPeft, LnTuningAdaptersSwitchOnTheGpu) {
  VLP_REQUIRE_GPU();
  auto logits = [&](Device device) {
    test::TinyModel m("bart");
    J j = {{"peft_type", "LN_TUNING"}};
    peft::add_adapter(m.module(), peft::parse_peft_config(j), "x", 1);
    peft::add_adapter(m.module(), peft::parse_peft_config(j), "y", 2);
    m.module().to_device(device);
    for (auto& [name, t] : m.batch) t = convert(t, t.dtype(), device);
    {
      NoGradGuard no_grad;  // make adapter x's copies differ from the frozen norms
      for (auto& [name, p] : m.module().named_parameters())
        if (p.requires_grad()) add_(p, full(p.shape(), 0.05, p.dtype(), p.device()));
    }
    std::vector<Tensor> out{m.logits()};
    peft::set_active_adapters(m.module(), {"y"});
    out.push_back(m.logits());
    peft::set_active_adapters(m.module(), {});
    out.push_back(m.logits());
    peft::set_active_adapters(m.module(), {"x"});
    out.push_back(m.logits());
    for (auto& [name, p] : m.module().named_parameters()) EXPECT_EQ(p.device(), device) << name;
    return out;
  };
  std::vector<Tensor> cpu = logits(Device::cpu()), g = logits(gpu());
  for (size_t i = 0; i < cpu.size(); ++i) EXPECT_TRUE(rel_close(g[i], cpu[i], 1e-4, "logits " + std::to_string(i)));
  EXPECT_TRUE(rel_close(g[3], cpu[0], 1e-4, "x again"));
}

// PiSSA's save as a plain LoRA (the initial factors appended, kept on the CPU by the initialisation) from a
// GPU model writes the CPU's file.
TEST(CudaPeft, PissaSavedAsPlainLoraFromTheGpu) {
  VLP_REQUIRE_GPU();
  const Case c{"lora_pissa", "bart", J{{"peft_type", "LORA"}, {"r", 4}, {"lora_alpha", 4},
                                       {"init_lora_weights", "pissa"}}};
  const std::string root = std::string(VLP_BINARY_DIR) + "/test_cuda_peft_pissa";
  auto saved = [&](Device device) {
    auto m = adapted_model(c, device, false);
    {
      NoGradGuard no_grad;  // move the factors off their initial values, as training would
      for (auto& [name, p] : m->module().named_parameters())
        if (p.requires_grad()) add_(p, full(p.shape(), 0.01, p.dtype(), p.device()));
    }
    const std::string dir = root + (device.is_cpu() ? "/cpu" : "/cuda");
    peft::save_adapter_as_plain_lora(m->module(), "default", dir);
    for (auto& [name, p] : m->module().named_parameters()) EXPECT_EQ(p.device(), device) << name;
    return test::read_tensors(dir + "/adapter_model.safetensors");
  };
  auto cpu = saved(Device::cpu()), g = saved(gpu());
  ASSERT_EQ(g.size(), cpu.size());
  for (auto& [k, t] : cpu) {
    ASSERT_TRUE(g.count(k)) << k;
    EXPECT_EQ(g.at(k).shape(), t.shape()) << k;
    EXPECT_TRUE(rel_close(g.at(k), t, 1e-6, k));  // copies of the same values: pissa's SVD runs on the host
  }
}

}  // namespace
}  // namespace vlp
#endif  // VLP_HAVE_CUDA
