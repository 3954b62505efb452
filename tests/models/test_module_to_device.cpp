// Module::to_device: parameters and buffers converted (here F32 -> BF16 -> F32 on the CPU; this machine has no
// GPU), tied tensors still sharing one storage, requires_grad kept, and a clear error for a missing GPU.
#include <gtest/gtest.h>

#include "models/module.h"
#include "runtime/device_copy.h"
#include "runtime/rng.h"

namespace vlp {
namespace {

// A Linear plus a second parameter that views the Linear's weight (as a tied head does) and an I64 buffer.
struct Tied : Module {
  Linear lin{3, 4};
  Tensor tied, steps;
  Tied() {
    register_module("lin", &lin);
    tied = lin.weight;  // same storage, as a tied LM head
    register_parameter("tied", &tied);
    steps = full({2}, 7.0, DType::I64);
    register_buffer("steps", &steps);
  }
};

TEST(ModuleToDevice, ConvertsFloatsKeepsTiesAndRequiresGrad) {
  Tied m;
  normal_(m.lin.weight, 0.0, 1.0);
  m.lin.weight.set_requires_grad(true);
  const std::vector<double> w = to_vector(m.lin.weight);
  m.to_device(Device::cpu(), DType::BF16);
  EXPECT_EQ(m.lin.weight.dtype(), DType::BF16);
  EXPECT_EQ(m.lin.bias.dtype(), DType::BF16);
  EXPECT_EQ(m.steps.dtype(), DType::I64);  // not floating: unchanged
  EXPECT_EQ(m.tied.storage(), m.lin.weight.storage());
  EXPECT_TRUE(m.lin.weight.requires_grad());
  EXPECT_FALSE(m.lin.bias.requires_grad());
  m.to_device(Device::cpu(), DType::F32);
  const std::vector<double> back = to_vector(m.lin.weight);
  ASSERT_EQ(back.size(), w.size());
  for (size_t i = 0; i < w.size(); ++i) EXPECT_NEAR(back[i], w[i], std::abs(w[i]) * 1.0 / 128);  // 8-bit mantissa
  EXPECT_EQ(to_vector(m.steps), (std::vector<double>{7, 7}));
}

TEST(ModuleToDevice, NoGpuIsAClearError) {
  if (cuda_available()) GTEST_SKIP() << "a GPU is present";
  Tied m;
  try {
    m.to_device(Device::cuda());
    FAIL() << "moving to cuda:0 without a GPU did not throw";
  } catch (const Error& e) {
    EXPECT_FALSE(std::string(e.what()).empty());
  }
}

}  // namespace
}  // namespace vlp
