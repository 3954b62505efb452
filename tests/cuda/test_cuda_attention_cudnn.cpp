// The cuDNN attention (VLP_ATTENTION=cudnn, kernels/cuda/attention_cudnn.h) against kernels/cpu/attention:
// BF16 inputs, odd Tq/Tk, causal / key padding / additive bias (broadcast over the batch as T5's, or per
// batch) and their combinations, contiguous and [B, T, H, D]-strided inputs; forward out and lse, and
// dq, dk, dv, dbias from the GPU's own forward. Then the same through autograd on permuted views. The
// refusals (F32, head dims, dropout, causal with Tq != Tk, unaligned rows) happen before the device is
// touched, so they run on machines without a GPU too, as does the VLP_ATTENTION parsing.
#ifdef VLP_HAVE_CUDA
#include <gtest/gtest.h>

#include <cmath>
#include <stdexcept>
#include <string>

#include "autograd/attention.h"
#include "autograd/ops.h"
#include "autograd/views.h"
#include "kernels/cpu/attention.h"
#include "kernels/cuda/attention.h"
#include "kernels/cuda/attention_cudnn.h"
#include "tests/cuda/attention_case.h"

namespace vlp {
namespace {

using namespace cudatest;

// Selects an attention implementation for the scope of a test and restores the previous one.
// A GPU test also needs a build with cuDNN; under VLP_REQUIRE_CUDA=1 its absence is a failure.
#define VLP_REQUIRE_GPU_AND_CUDNN()                                                                   \
  do {                                                                                                \
    VLP_REQUIRE_GPU();                                                                                \
    if (!cuda::cudnn_built()) {                                                                       \
      if (cuda_required()) FAIL() << "VLP_REQUIRE_CUDA is set but vlpeft was built without cuDNN";    \
      GTEST_SKIP() << "built without cuDNN";                                                          \
    }                                                                                                 \
  } while (0)

struct Case {
  int64_t B, H, Tq, Tk, D, Dv;
  bool bthd;  // q, k, v stored [B, T, H, D] (strided heads) instead of [B, H, T, D]
};

// bias: 0 none, 1 [1, H, Tq, Tk] (T5), 2 [B, H, Tq, Tk]. Key 0 is always kept, so no query row loses every
// key (unsupported by the cuDNN path); cuDNN's stats are the natural-log LSE of the scaled, biased, masked
// scores, as ours (to 2e-3).
void run_case(const Case& s, bool causal, bool masked, int bias_kind) {
  AttentionCase c{s.B, s.H, s.Tq, s.Tk, s.D, s.Dv, s.bthd};
  c.causal = causal, c.masked = masked, c.bias_kind = bias_kind, c.every_row_sees_a_key = true;
  c.seed = 301, c.tol = 1e-2, c.lse_tol = 2e-3;
  ImplGuard cudnn(cuda::AttentionImpl::Cudnn);
  run_attention_case(c);
}

TEST(CudaAttentionCudnn, CrossAttentionWithOddLengthsEveryMaskAndBias) {
  VLP_REQUIRE_GPU_AND_CUDNN();
  for (const Case& s : {Case{2, 3, 37, 45, 64, 64, false}, Case{2, 2, 33, 21, 32, 32, true}})
    for (bool masked : {false, true})
      for (int bias_kind : {0, 1, 2}) run_case(s, false, masked, bias_kind);
}

TEST(CudaAttentionCudnn, CausalSelfAttentionEveryMaskAndBias) {
  VLP_REQUIRE_GPU_AND_CUDNN();
  for (const Case& s : {Case{2, 3, 77, 77, 64, 64, true}, Case{1, 2, 130, 130, 128, 128, false}})
    for (bool masked : {false, true})
      for (int bias_kind : {0, 1}) run_case(s, true, masked, bias_kind);
}

TEST(CudaAttentionCudnn, AlignedLengthsWritesDbiasInPlace) {
  VLP_REQUIRE_GPU_AND_CUDNN();
  run_case({2, 2, 128, 256, 64, 64, false}, false, false, 1);  // dbias [1, H, ...] straight from cuDNN
  run_case({2, 2, 64, 64, 16, 16, false}, true, false, 2);     // per-batch bias, causal
}

// Through autograd: [B, T, H, D] projections permuted to [B, H, T, D] (strided heads read in place), GPT-2
// (causal) and T5 (a trained bias [1, H, T, T], key padding) against the CPU.
TEST(CudaAttentionCudnn, AutogradMatchesTheCpu) {
  VLP_REQUIRE_GPU_AND_CUDNN();
  ImplGuard cudnn(cuda::AttentionImpl::Cudnn);
  const int64_t B = 2, T = 29, H = 3, D = 16;
  std::vector<double> mv(static_cast<size_t>(B * T), 1.0);
  for (int64_t j = 21; j < T; ++j) mv[size_t(T + j)] = 0.0;  // batch 1: the last keys are padding
  Tensor mask = from_vector(mv, {B, T}, DType::Bool);
  const DType dt = DType::BF16;
  for (bool t5 : {false, true}) {
    Input q = make_input({B, T, H, D}, 321, dt), k = make_input({B, T, H, D}, 322, dt);
    Input v = make_input({B, T, H, D}, 323, dt), bias = make_input({1, H, T, T}, 324, dt);
    auto run = [&](Device dev) {
      Tensor qs = convert(q.cpu, dt, dev), ks = convert(k.cpu, dt, dev), vs = convert(v.cpu, dt, dev);
      Tensor bs = convert(bias.cpu, dt, dev);
      for (Tensor* t : {&qs, &ks, &vs, &bs}) t->set_requires_grad(true);
      AttentionOptions o;
      o.causal = !t5;
      if (t5) o.bias = bs, o.scale = 1.0, o.key_padding_mask = convert(mask, DType::Bool, dev);
      Tensor y = scaled_dot_product_attention(permute(qs, {0, 2, 1, 3}), permute(ks, {0, 2, 1, 3}),
                                              permute(vs, {0, 2, 1, 3}), o);
      backward(sum(mul(y, y)));
      std::vector<Tensor> r{y, qs.grad(), ks.grad(), vs.grad()};
      if (t5) r.push_back(bs.grad());
      return r;
    };
    std::vector<Tensor> c = run(Device::cpu()), g = run(gpu());
    const char* names[] = {"out", "dq", "dk", "dv", "dbias"};
    for (size_t i = 0; i < c.size(); ++i)
      EXPECT_TRUE(rel_close(g[i], c[i], 3e-2, std::string(names[i]) + (t5 ? " t5" : " causal")));
  }
}

// Expects fn to throw std::runtime_error whose message contains `part` (or, in a build without cuDNN,
// the "built without cuDNN" message).
template <class Fn>
void expect_refusal(Fn&& fn, const std::string& part) {
  try {
    fn();
    ADD_FAILURE() << "no error; expected one mentioning '" << part << "'";
  } catch (const std::runtime_error& e) {
    const std::string msg = e.what();
    const std::string want = cuda::cudnn_built() ? part : "built without cuDNN";
    EXPECT_NE(msg.find(want), std::string::npos) << msg;
    EXPECT_NE(msg.find("VLP_ATTENTION"), std::string::npos) << msg;
  }
}

// Runs without a GPU: every refusal comes before the device is touched (null pointers never read).
TEST(CudaAttentionCudnn, RefusesWhatItCannotTakeWithAClearError) {
  ImplGuard cudnn(cuda::AttentionImpl::Cudnn);
  cuda::AttentionArgs a;
  a.dtype = cuda::EwDType::BF16;
  a.B = 2, a.H = 2, a.Tq = a.Tk = 16, a.D = a.Dv = 64, a.scale = 0.125;
  const int64_t st[3] = {2 * 16 * 64, 16 * 64, 64};
  for (int d = 0; d < 3; ++d) a.q_strides[d] = a.k_strides[d] = a.v_strides[d] = st[d];
  auto forward = [](const cuda::AttentionArgs& x) {
    return [x] { cuda::attention_forward(x, nullptr, nullptr, nullptr); };
  };

  cuda::AttentionArgs f32 = a;
  f32.dtype = cuda::EwDType::F32;
  expect_refusal(forward(f32), "BF16");
  cuda::AttentionArgs odd_head = a;
  odd_head.D = odd_head.Dv = 12;
  expect_refusal(forward(odd_head), "multiples of 8 up to 128");
  cuda::AttentionArgs big_head = a;
  big_head.D = 256;
  expect_refusal(forward(big_head), "multiples of 8 up to 128");
  cuda::AttentionArgs dropout = a;
  dropout.dropout_p = 0.1;
  expect_refusal(forward(dropout), "dropout");
  cuda::AttentionArgs causal_cross = a;
  causal_cross.causal = true, causal_cross.Tq = 8;
  expect_refusal(forward(causal_cross), "Tq == Tk");
  cuda::AttentionArgs unaligned = a;
  unaligned.k_strides[2] = 68, unaligned.k_strides[1] = 16 * 68;
  expect_refusal(forward(unaligned), "multiples of 8 elements");
  cuda::AttentionArgs tiny = a;
  tiny.Tq = tiny.Tk = 1;
  expect_refusal([tiny] { cuda::attention_backward(tiny, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr,
                                                   nullptr, 1, 1, nullptr); },
                 "Tq = Tk = 1");
}

TEST(CudaAttentionSelection, ParsesVlpAttention) {
  EXPECT_EQ(cuda::parse_attention_impl(nullptr), cuda::AttentionImpl::Auto);
  EXPECT_EQ(cuda::parse_attention_impl(""), cuda::AttentionImpl::Auto);
  EXPECT_EQ(cuda::parse_attention_impl("auto"), cuda::AttentionImpl::Auto);
  EXPECT_EQ(cuda::parse_attention_impl("rows"), cuda::AttentionImpl::Rows);
  EXPECT_EQ(cuda::parse_attention_impl("tensor_core"), cuda::AttentionImpl::TensorCore);
  EXPECT_EQ(cuda::parse_attention_impl("cudnn"), cuda::AttentionImpl::Cudnn);
  for (const char* bad : {"CUDNN", "flash", "rows "}) {
    try {
      cuda::parse_attention_impl(bad);
      ADD_FAILURE() << "'" << bad << "' accepted";
    } catch (const std::runtime_error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find("VLP_ATTENTION"), std::string::npos) << msg;
      EXPECT_NE(msg.find(bad), std::string::npos) << msg;
      EXPECT_NE(msg.find("auto, rows, tensor_core, cudnn"), std::string::npos) << msg;
    }
  }
  EXPECT_STREQ(cuda::attention_impl_name(cuda::AttentionImpl::Cudnn), "cudnn");
  EXPECT_STREQ(cuda::attention_impl_name(cuda::AttentionImpl::TensorCore), "tensor_core");
  {
    ImplGuard rows(cuda::AttentionImpl::Rows);
    EXPECT_EQ(cuda::attention_impl(), cuda::AttentionImpl::Rows);
    {
      ImplGuard cudnn(cuda::AttentionImpl::Cudnn);
      EXPECT_EQ(cuda::attention_impl(), cuda::AttentionImpl::Cudnn);
    }
    EXPECT_EQ(cuda::attention_impl(), cuda::AttentionImpl::Rows);
  }
}

}  // namespace
}  // namespace vlp
#endif  // VLP_HAVE_CUDA
