// The optimizers (autograd/optim.h) on CUDA parameters against the same steps on the CPU: AdamW through
// the multi-tensor kernel (F32 parameters; BF16 parameters with fp32 master weights), SGD with momentum,
// global-norm clipping through the deterministic sum of squares, and the optimizer state's export and
// import (through a safetensors round trip) with the state staying on the GPU.
#ifdef VLP_HAVE_CUDA
#include <gtest/gtest.h>

#include "autograd/ops.h"
#include "autograd/optim.h"
#include "runtime/safetensors.h"
#include "tests/cuda/cuda_test_util.h"

namespace vlp {
namespace {

using namespace cudatest;

// Odd sizes; the last one spans several 16384-element chunks of the multi-tensor kernels.
const std::vector<Shape> kShapes = {{37, 53}, {7}, {3, 5, 11}, {20011}};

// A fresh contiguous copy of t on device.
Tensor copy_on(const Tensor& t, DType dt, Device device) {
  Tensor c = empty(t.shape(), dt, device);
  copy_(c, t);
  return c;
}

// Leaf parameters: the same values (rounded through dt) on the CPU in F32 and on the GPU in dt.
struct Params {
  std::vector<Tensor> cpu, gpu;
};
Params make_params(DType dt, uint64_t seed) {
  Params p;
  for (size_t i = 0; i < kShapes.size(); ++i) {
    Input in = make_input(kShapes[i], seed + i, dt);
    p.cpu.push_back(in.cpu);
    p.gpu.push_back(in.dev);
    p.cpu.back().set_requires_grad(true);
    p.gpu.back().set_requires_grad(true);
  }
  return p;
}

// Fresh gradients (values rounded through dt) for every parameter except `skip` (-1: none).
void set_grads(Params& p, DType dt, uint64_t seed, int skip = -1, double scale = 1.0) {
  for (size_t i = 0; i < p.cpu.size(); ++i) {
    p.cpu[i].set_grad(Tensor());
    p.gpu[i].set_grad(Tensor());
    if (int(i) == skip) continue;
    Input g = make_input(kShapes[i], seed + 17 * i, dt, -scale, scale);
    p.cpu[i].set_grad(g.cpu);
    p.gpu[i].set_grad(g.dev);
  }
}

std::vector<ParamGroup> two_groups(const std::vector<Tensor>& params, bool sgd) {
  ParamGroup a, b;
  a.params = {params[0], params[3]};
  b.params = {params[1], params[2]};
  a.lr = 3e-3, b.lr = 1e-2;
  a.weight_decay = 0.05;
  if (sgd) {
    a.momentum = 0.9, a.dampening = 0.1;
    b.momentum = 0.8, b.nesterov = true, b.weight_decay = 0.01;
  }
  return {a, b};
}

TEST(CudaOptimizer, AdamWMatchesTheCpuForF32Parameters) {
  VLP_REQUIRE_GPU();
  Params p = make_params(DType::F32, 301);
  Optimizer oc = make_adamw(two_groups(p.cpu, false)), og = make_adamw(two_groups(p.gpu, false));
  for (int s = 0; s < 4; ++s) {
    set_grads(p, DType::F32, 400 + 10 * s, s == 1 ? 2 : -1);  // parameter 2 skips a step: mixed step counts
    step(oc);
    step(og);
  }
  for (size_t i = 0; i < p.cpu.size(); ++i) {
    EXPECT_TRUE(p.gpu[i].is_cuda());
    EXPECT_TRUE(rel_close(p.gpu[i], p.cpu[i], 1e-5, "param " + std::to_string(i)));
  }
  for (size_t g = 0; g < 2; ++g)
    for (size_t i = 0; i < 2; ++i) {
      const ParamState &c = oc.state[g][i], &d = og.state[g][i];
      EXPECT_EQ(c.step, d.step);
      EXPECT_TRUE(d.exp_avg.is_cuda());
      EXPECT_EQ(d.exp_avg.dtype(), DType::F32);
      EXPECT_FALSE(d.master.defined());
      EXPECT_TRUE(rel_close(d.exp_avg, c.exp_avg, 1e-5, "exp_avg"));
      EXPECT_TRUE(rel_close(d.exp_avg_sq, c.exp_avg_sq, 1e-5, "exp_avg_sq"));
    }
}

TEST(CudaOptimizer, AdamWOnBf16ParametersKeepsFp32MasterWeights) {
  VLP_REQUIRE_GPU();
  // The CPU reference runs in F32 from the same bf16 values and bf16 gradients: the GPU's master weights
  // follow it to float rounding, the BF16 parameters are those rounded.
  Params p = make_params(DType::BF16, 311);
  Optimizer oc = make_adamw(two_groups(p.cpu, false)), og = make_adamw(two_groups(p.gpu, false));
  for (int s = 0; s < 3; ++s) {
    set_grads(p, DType::BF16, 500 + 10 * s);
    step(oc);
    step(og);
  }
  for (size_t g = 0; g < 2; ++g)
    for (size_t i = 0; i < 2; ++i) {
      const Tensor& pc = oc.groups[g].params[i];
      const ParamState& d = og.state[g][i];
      EXPECT_EQ(og.groups[g].params[i].dtype(), DType::BF16);
      ASSERT_TRUE(d.master.defined());
      EXPECT_TRUE(d.master.is_cuda());
      EXPECT_TRUE(rel_close(d.master, pc, 1e-5, "master"));
      EXPECT_TRUE(rel_close(og.groups[g].params[i], pc, 1e-2, "bf16 param"));
      EXPECT_TRUE(rel_close(d.exp_avg_sq, oc.state[g][i].exp_avg_sq, 1e-5, "exp_avg_sq"));
    }
}

TEST(CudaOptimizer, SgdWithMomentumMatchesTheCpu) {
  VLP_REQUIRE_GPU();
  for (DType dt : {DType::F32, DType::BF16}) {
    Params p = make_params(dt, 321);
    Optimizer oc = make_sgd(two_groups(p.cpu, true)), og = make_sgd(two_groups(p.gpu, true));
    for (int s = 0; s < 3; ++s) {
      set_grads(p, dt, 600 + 10 * s);
      step(oc);
      step(og);
    }
    for (size_t i = 0; i < p.cpu.size(); ++i)
      EXPECT_TRUE(rel_close(p.gpu[i], p.cpu[i], tol_for(dt), std::string(dtype_name(dt)) + " param"));
    EXPECT_TRUE(og.state[1][1].momentum_buffer.is_cuda());
    EXPECT_TRUE(rel_close(og.state[1][1].momentum_buffer, oc.state[1][1].momentum_buffer, tol_for(dt), "momentum"));
  }
}

TEST(CudaOptimizer, ClipGradNormMatchesTheCpuAndIsDeterministic) {
  VLP_REQUIRE_GPU();
  for (DType dt : {DType::F32, DType::BF16})
    for (double max_norm : {1e6, 0.5}) {  // no clipping, clipping
      Params p = make_params(dt, 331);
      set_grads(p, dt, 700, 1);
      std::vector<Tensor> before;
      for (const Tensor& t : p.gpu) before.push_back(t.grad().defined() ? copy_on(t.grad(), dt, gpu()) : Tensor());
      const double nc = clip_grad_norm_(p.cpu, max_norm);
      const double ng = clip_grad_norm_(p.gpu, max_norm);
      EXPECT_NEAR(ng, nc, 1e-5 * nc) << dtype_name(dt);
      for (size_t i = 0; i < p.cpu.size(); ++i) {
        if (!p.cpu[i].grad().defined()) {
          EXPECT_FALSE(p.gpu[i].grad().defined());
          continue;
        }
        EXPECT_TRUE(p.gpu[i].grad().is_cuda());
        EXPECT_TRUE(rel_close(p.gpu[i].grad(), p.cpu[i].grad(), tol_for(dt), "clipped grad"));
      }
      // The same gradients again: the same bits.
      for (size_t i = 0; i < p.gpu.size(); ++i) p.gpu[i].set_grad(before[i]);
      EXPECT_EQ(clip_grad_norm_(p.gpu, 1e6), ng);
    }
}

TEST(CudaOptimizer, StateExportsImportsAndResumesOnTheGpu) {
  VLP_REQUIRE_GPU();
  for (DType dt : {DType::F32, DType::BF16}) {
    Params p = make_params(dt, 341);
    Optimizer og = make_adamw(two_groups(p.gpu, false));
    set_grads(p, dt, 800);
    step(og);
    // Save (the state is on the GPU; save_safetensors copies to the host), reload on the CPU.
    const std::string path = testing::TempDir() + "vlp_cuda_optim_state.safetensors";
    save_safetensors(path, export_optimizer_state(og));
    SafetensorsFile f = load_safetensors(path);
    if (dt == DType::BF16) {
      EXPECT_NE(f.find("state.group0.param0.master"), nullptr);
    }
    // A second optimizer over copies of the parameters, resumed from the file.
    std::vector<Tensor> copies;
    for (const Tensor& t : p.gpu) copies.push_back(copy_on(t, dt, gpu()).set_requires_grad(true));
    Optimizer resumed = make_adamw(two_groups(copies, false));
    import_optimizer_state(resumed, f.tensors);
    EXPECT_TRUE(resumed.state[0][0].exp_avg.is_cuda());
    EXPECT_EQ(resumed.state[0][0].master.defined(), dt == DType::BF16);
    set_grads(p, dt, 810);
    for (size_t i = 0; i < copies.size(); ++i) copies[i].set_grad(copy_on(p.gpu[i].grad(), dt, gpu()));
    step(og);
    step(resumed);
    for (size_t i = 0; i < copies.size(); ++i) EXPECT_EQ(to_vector(copies[i]), to_vector(p.gpu[i])) << i;
    // The GPU state also loads into an optimizer over CPU parameters (the master entry is ignored there).
    std::vector<Tensor> host;
    for (const Tensor& t : p.gpu) host.push_back(copy_on(t, dt, Device::cpu()).set_requires_grad(true));
    Optimizer on_cpu = make_adamw(two_groups(host, false));
    import_optimizer_state(on_cpu, f.tensors);
    EXPECT_TRUE(on_cpu.state[0][0].exp_avg.is_cpu());
    EXPECT_FALSE(on_cpu.state[0][0].master.defined());
  }
}

}  // namespace
}  // namespace vlp
#endif  // VLP_HAVE_CUDA
