// Fused CUDA attention against kernels/cpu/attention for every combination of causal mask, key-padding
// mask, additive bias (broadcast over the batch, as T5's relative positions) and dropout, in F32 and BF16,
// on odd sizes with one key chunk and with several (online softmax across chunks), contiguous and
// [B, T, H, D]-strided inputs. Forward outputs, lse, and dq, dk, dv, dbias are compared. The row kernels
// are selected explicitly (VLP_ATTENTION=rows); the default (auto: tensor-core kernels where they apply)
// runs the BF16 cases again. test_cuda_attention_tc.cpp tests the tensor-core kernels directly.
#ifdef VLP_HAVE_CUDA
#include <gtest/gtest.h>

#include "kernels/cuda/attention.h"
#include "tests/cuda/attention_case.h"

namespace vlp {
namespace {

using namespace cudatest;

struct Shape5 {
  int64_t B, H, Tq, Tk, D, Dv;
  bool bthd;  // q, k, v stored [B, T, H, D] (strided heads) instead of [B, H, T, D]
};

void run_case(const Shape5& s, DType dt, bool causal, bool masked, bool biased, double p) {
  AttentionCase c{s.B, s.H, s.Tq, s.Tk, s.D, s.Dv, s.bthd};
  c.dtype = dt, c.causal = causal, c.masked = masked, c.bias_kind = biased ? 1 : 0, c.p = p;
  c.tol = tol_for(dt);
  run_attention_case(c);
}

TEST(CudaAttention, EveryMaskBiasDropoutAndDtypeCombination) {
  VLP_REQUIRE_GPU();
  const Shape5 shapes[] = {{2, 3, 37, 45, 24, 20, false}, {2, 2, 130, 141, 64, 64, true}};
  for (cuda::AttentionImpl impl : {cuda::AttentionImpl::Rows, cuda::AttentionImpl::Auto}) {
    ImplGuard guard(impl);
    for (const Shape5& s : shapes)
      for (DType dt : {DType::F32, DType::BF16}) {
        if (impl == cuda::AttentionImpl::Auto && dt == DType::F32) continue;  // auto runs rows for F32
        for (bool causal : {false, true})
          for (bool masked : {false, true})
            for (bool biased : {false, true})
              for (double p : {0.0, 0.2}) run_case(s, dt, causal, masked, biased, p);
      }
  }
}

TEST(CudaAttention, CrossAttentionWithMoreKeysThanQueriesAndLargeHeads) {
  VLP_REQUIRE_GPU();
  ImplGuard rows(cuda::AttentionImpl::Rows);
  run_case({1, 1, 3, 300, 200, 136, false}, DType::F32, true, false, true, 0.1);
  run_case({1, 2, 1, 257, 64, 64, false}, DType::BF16, false, true, false, 0.0);
}

TEST(CudaAttention, RejectsHeadDimsAboveTheLimit) {
  VLP_REQUIRE_GPU();
  cuda::AttentionArgs a;
  ImplGuard rows(cuda::AttentionImpl::Rows);
  a.B = a.H = a.Tq = a.Tk = 1, a.D = cuda::kAttentionMaxHeadDim + 1, a.Dv = 8;
  EXPECT_THROW(cuda::attention_forward(a, nullptr, nullptr, stream()), std::runtime_error);
}

}  // namespace
}  // namespace vlp
#endif  // VLP_HAVE_CUDA
