// The fused LoRA linear (autograd/lora.h) on CUDA against the same op on the CPU: forward and every
// gradient on fresh random odd-sized inputs, F32 (1e-5 relative) and BF16 (1e-2), with dropout (identical
// masks: the same Philox (seed, offset) on both devices), a sliced input read with its row stride, a
// Conv1D-layout (transposed) weight, no bias, and a rank above the fused kernel's limit (the dropout +
// GEMM fallback).
#ifdef VLP_HAVE_CUDA
#include <gtest/gtest.h>

#include "autograd/lora.h"
#include "autograd/ops.h"
#include "kernels/cuda/lora.h"
#include "tests/cuda/cuda_test_util.h"

namespace vlp {
namespace {

using namespace cudatest;

struct LoraCase {
  const char* name;
  int64_t b, t, in, out, r;
  double p;
  bool bias, weight_transposed, sliced;
};

const LoraCase kCases[] = {
    {"r16_dropout_bias", 3, 37, 45, 29, 16, 0.2, true, false, false},
    {"r5_sliced_nodropout", 2, 19, 33, 41, 5, 0.0, true, false, true},
    {"r7_conv1d_nobias_dropout", 1, 53, 27, 35, 7, 0.35, false, true, false},
    {"r80_fallback_dropout", 2, 11, 91, 17, 80, 0.1, true, false, true},
};

TEST(CudaLora, FusedOpForwardAndBackwardMatchTheCpu) {
  VLP_REQUIRE_GPU();
  uint64_t seed = 500;
  for (DType dt : {DType::F32, DType::BF16}) {
    for (const LoraCase& c : kCases) {
      SCOPED_TRACE(std::string(c.name) + (dt == DType::BF16 ? " bf16" : " f32"));
      const int64_t extra = c.sliced ? 3 : 0;
      // The CPU reference computes in F32 on the values rounded through dt (make_input).
      Input xs = make_input({c.b, c.t, c.in + extra}, ++seed, dt);
      Input w = make_input(c.weight_transposed ? Shape{c.in, c.out} : Shape{c.out, c.in}, ++seed, dt, -0.2, 0.2);
      Input bias = make_input({c.out}, ++seed, dt);
      Input a = make_input({c.r, c.in}, ++seed, dt, -0.2, 0.2), bm = make_input({c.out, c.r}, ++seed, dt, -0.3, 0.3);
      Input dy = make_input({c.b, c.t, c.out}, ++seed, dt);
      Tensor cpu[5] = {xs.cpu.detach(), w.cpu.detach(), bias.cpu.detach(), a.cpu.detach(), bm.cpu.detach()};
      Tensor dev[5] = {xs.dev.detach(), w.dev.detach(), bias.dev.detach(), a.dev.detach(), bm.dev.detach()};
      for (int i = 0; i < 5; ++i) cpu[i].set_requires_grad(true), dev[i].set_requires_grad(true);
      auto run = [&](Tensor* in) {
        Generator gen(77);
        gen.take(9);
        Tensor x = c.sliced ? narrow(in[0], -1, 1, c.in) : in[0];
        Tensor wv = c.weight_transposed ? transpose(in[1], 0, 1) : in[1];
        return lora_linear(x, wv, c.bias ? in[2] : Tensor(), in[3], in[4], 1.5, c.p, true, &gen);
      };
      Tensor y_cpu = run(cpu), y_gpu = run(dev);
      ASSERT_TRUE(y_gpu.is_cuda());
      EXPECT_EQ(y_gpu.dtype(), dt);
      const double tol = tol_for(dt);
      EXPECT_TRUE(rel_close(y_gpu, y_cpu, tol, "y"));
      backward(y_cpu, dy.cpu);
      backward(y_gpu, dy.dev);
      const char* names[5] = {"dx", "dW", "dbias", "dA", "dB"};
      for (int i = 0; i < 5; ++i) {
        if (i == 2 && !c.bias) continue;
        ASSERT_TRUE(dev[i].grad().defined()) << names[i];
        EXPECT_TRUE(dev[i].grad().is_cuda()) << names[i];
        EXPECT_TRUE(rel_close(dev[i].grad(), cpu[i].grad(), tol, names[i]));
      }
    }
  }
}

TEST(CudaLora, DropoutMasksAreTheCpus) {
  VLP_REQUIRE_GPU();
  // W = 0, A = B = I, scale 1: y = dropout(x), so the zeros of y are the mask; the gradient of x through
  // the identity factors is the mask times 1/(1-p).
  const int64_t n = 16, rows = 257;
  Input x = make_input({rows, n}, 601, DType::F32, 1.0, 2.0);  // never zero
  Tensor eye = zeros({n, n});
  for (int64_t i = 0; i < n; ++i) copy_(narrow(narrow(eye, 0, i, 1), 1, i, 1), ones({1, 1}));
  Tensor eye_gpu = convert(eye, DType::F32, gpu());
  const double p = 0.45;
  Generator g_cpu(3), g_gpu(3), g_ref(3);
  Tensor x_gpu = x.dev.detach().set_requires_grad(true);
  Tensor y_cpu = lora_linear(x.cpu, zeros({n, n}), Tensor(), eye, eye, 1.0, p, true, &g_cpu);
  Tensor y_gpu = lora_linear(x_gpu, zeros({n, n}, DType::F32, gpu()), Tensor(), eye_gpu, eye_gpu, 1.0, p, true, &g_gpu);
  Tensor ref = dropout(x.cpu, p, true, &g_ref);
  std::vector<double> yc = to_vector(y_cpu), yg = to_vector(y_gpu), r = to_vector(ref);
  int64_t dropped = 0;
  for (size_t i = 0; i < yc.size(); ++i) {
    ASSERT_EQ(yg[i] == 0.0, r[i] == 0.0) << "element " << i;
    ASSERT_EQ(yc[i] == 0.0, r[i] == 0.0) << "element " << i;
    dropped += r[i] == 0.0;
  }
  EXPECT_GT(dropped, 0);
  EXPECT_EQ(g_gpu.offset, g_ref.offset);
  backward(y_gpu, ones({rows, n}, DType::F32, gpu()));
  std::vector<double> dx = to_vector(x_gpu.grad());
  for (size_t i = 0; i < dx.size(); ++i) ASSERT_EQ(dx[i] == 0.0, r[i] == 0.0) << "dx element " << i;
}

}  // namespace
}  // namespace vlp
#endif  // VLP_HAVE_CUDA
