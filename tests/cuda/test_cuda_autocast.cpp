// The autocast policy (autograd/autocast.h) on CUDA: a linear -> attention -> linear block under
// AutocastScope on the GPU (BF16 cuBLASLt GEMMs writing F32, BF16 attention) against the same block under
// autocast on the CPU (F32 kernels on BF16-rounded operands): forward values and every gradient within
// the BF16 tolerance, outputs and gradients F32, and the GEMM output written in F32 directly (not rounded
// to BF16 first).
#ifdef VLP_HAVE_CUDA
#include <gtest/gtest.h>

#include "autograd/ops.h"
#include "tests/cuda/cuda_test_util.h"

namespace vlp {
namespace {

using namespace cudatest;

constexpr int64_t B = 2, T = 6, H = 4, Dh = 8, D = H * Dh;

struct Block {
  Tensor x, w_qkv, b_qkv, bias, w_o;  // F32 leaves that require grad
  Tensor padding;                     // [B, T] I64
};

Block make_block(Device device) {
  Block b;
  b.x = make_input({B, T, D}, 301).cpu;
  b.w_qkv = make_input({3 * D, D}, 302, DType::F32, -0.3, 0.3).cpu;
  b.b_qkv = make_input({3 * D}, 303).cpu;
  b.bias = make_input({1, H, T, T}, 304).cpu;
  b.w_o = make_input({D, D}, 305, DType::F32, -0.3, 0.3).cpu;
  b.padding = from_vector({1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0}, {B, T}, DType::I64, device);
  for (Tensor* t : {&b.x, &b.w_qkv, &b.b_qkv, &b.bias, &b.w_o}) {
    *t = convert(*t, DType::F32, device);
    t->set_requires_grad(true);
  }
  return b;
}

// y = linear(attention(q, k, v; bias, padding, causal), w_o) with q, k, v from one linear of x.
Tensor run_block(const Block& b, Tensor* qkv_out) {
  Tensor qkv = linear(b.x, b.w_qkv, b.b_qkv);  // [B, T, 3D]
  *qkv_out = qkv;
  Tensor heads = permute(reshape(qkv, {B, T, 3, H, Dh}), {2, 0, 3, 1, 4});  // [3, B, H, T, Dh]
  AttentionOptions o;
  o.bias = b.bias;
  o.key_padding_mask = b.padding;
  o.causal = true;
  Tensor a = scaled_dot_product_attention(select(heads, 0, 0), select(heads, 0, 1), select(heads, 0, 2), o);
  return linear(reshape(permute(a, {0, 2, 1, 3}), {B, T, D}), b.w_o);
}

TEST(CudaAutocast, LinearAndAttentionMatchCpuAutocast) {
  VLP_REQUIRE_GPU();
  Block cpu = make_block(Device::cpu()), dev = make_block(gpu());
  Tensor upstream_cpu = make_input({B, T, D}, 306).cpu, upstream_gpu = convert(upstream_cpu, DType::F32, gpu());
  Tensor qkv_cpu, qkv_gpu, y_cpu, y_gpu;
  {
    AutocastScope on(true);
    y_cpu = run_block(cpu, &qkv_cpu);
    y_gpu = run_block(dev, &qkv_gpu);
  }
  ASSERT_TRUE(y_gpu.is_cuda());
  EXPECT_EQ(y_gpu.dtype(), DType::F32);
  EXPECT_EQ(qkv_gpu.dtype(), DType::F32);
  EXPECT_TRUE(rel_close(qkv_gpu, qkv_cpu, 1e-2, "qkv"));
  EXPECT_TRUE(rel_close(y_gpu, y_cpu, 1e-2, "y"));
  // The linear's F32 output comes straight from the GEMM: most values are not BF16-representable.
  std::vector<double> q = to_vector(qkv_gpu), q_rounded = to_vector(convert(qkv_gpu, DType::BF16));
  size_t off_grid = 0;
  for (size_t i = 0; i < q.size(); ++i) off_grid += q[i] != q_rounded[i];
  EXPECT_GT(off_grid, q.size() / 2);

  backward(y_cpu, upstream_cpu);
  backward(y_gpu, upstream_gpu);
  const std::pair<const char*, std::pair<Tensor, Tensor>> grads[] = {
      {"x", {dev.x, cpu.x}},         {"w_qkv", {dev.w_qkv, cpu.w_qkv}}, {"b_qkv", {dev.b_qkv, cpu.b_qkv}},
      {"bias", {dev.bias, cpu.bias}}, {"w_o", {dev.w_o, cpu.w_o}}};
  for (const auto& [name, pair] : grads) {
    const auto& [g, c] = pair;
    ASSERT_TRUE(g.grad().defined()) << name;
    EXPECT_TRUE(g.grad().is_cuda()) << name;
    EXPECT_EQ(g.grad().dtype(), DType::F32) << name;
    EXPECT_TRUE(rel_close(g.grad(), c.grad(), 1e-2, name));
  }
}

TEST(CudaAutocast, MatmulBroadcastMatchesCpuAutocast) {
  VLP_REQUIRE_GPU();
  Tensor a_cpu = make_input({3, 5, 16}, 311).cpu, b_cpu = make_input({16, 7}, 312).cpu;
  Tensor a_gpu = convert(a_cpu, DType::F32, gpu()), b_gpu = convert(b_cpu, DType::F32, gpu());
  for (Tensor* t : {&a_cpu, &b_cpu, &a_gpu, &b_gpu}) t->set_requires_grad(true);
  Tensor y_cpu, y_gpu;
  {
    AutocastScope on(true);
    y_cpu = matmul(a_cpu, b_cpu);
    y_gpu = matmul(a_gpu, b_gpu);
  }
  EXPECT_EQ(y_gpu.dtype(), DType::F32);
  EXPECT_TRUE(rel_close(y_gpu, y_cpu, 1e-2, "y"));
  backward(sum(mul(y_cpu, y_cpu)));
  backward(sum(mul(y_gpu, y_gpu)));
  EXPECT_EQ(a_gpu.grad().dtype(), DType::F32);
  EXPECT_TRUE(rel_close(a_gpu.grad(), a_cpu.grad(), 1e-2, "da"));
  EXPECT_TRUE(rel_close(b_gpu.grad(), b_cpu.grad(), 1e-2, "db"));
}

}  // namespace
}  // namespace vlp
#endif  // VLP_HAVE_CUDA
