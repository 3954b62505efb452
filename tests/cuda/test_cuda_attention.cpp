// Fused CUDA attention against kernels/cpu/attention for every combination of causal mask, key-padding
// mask, additive bias (broadcast over the batch, as T5's relative positions) and dropout, in F32 and BF16,
// on odd sizes with one key chunk and with several (online softmax across chunks), contiguous and
// [B, T, H, D]-strided inputs. Forward outputs, lse, and dq, dk, dv, dbias are compared. The row kernels
// are selected explicitly (VLP_ATTENTION=rows); the default (auto: tensor-core kernels where they apply)
// runs the BF16 cases again. test_cuda_attention_tc.cpp tests the tensor-core kernels directly.
#ifdef VLP_HAVE_CUDA
#include <gtest/gtest.h>

#include <cmath>

#include "kernels/cpu/attention.h"
#include "kernels/cuda/attention.h"
#include "tests/cuda/cuda_test_util.h"

namespace vlp {
namespace {

using namespace cudatest;

struct Shape5 {
  int64_t B, H, Tq, Tk, D, Dv;
  bool bthd;  // q, k, v stored [B, T, H, D] (strided heads) instead of [B, H, T, D]
};

void strides_for(const Shape5& s, int64_t T, int64_t D, int64_t out[3]) { attention_strides(s.bthd, s.H, T, D, out); }

void run_case(const Shape5& s, DType dt, bool causal, bool masked, bool biased, double p) {
  const std::string tag = std::string(dtype_name(dt)) + (causal ? " causal" : "") + (masked ? " key-mask" : "") +
                          (biased ? " bias" : "") + " p " + std::to_string(p) + " Tq " + std::to_string(s.Tq) +
                          " Tk " + std::to_string(s.Tk) + (s.bthd ? " bthd" : "");
  Input q = make_input({s.B * s.H * s.Tq * s.D}, 201, dt), k = make_input({s.B * s.H * s.Tk * s.D}, 202, dt);
  Input v = make_input({s.B * s.H * s.Tk * s.Dv}, 203, dt), bias = make_input({s.H * s.Tq * s.Tk}, 204, dt, -2, 2);
  Input dout = make_input({s.B * s.H * s.Tq * s.Dv}, 205, dt);
  std::vector<double> keep_v(static_cast<size_t>(s.B * s.Tk), 1.0);
  for (int64_t j = 0; j < s.Tk; ++j) keep_v[size_t(j)] = j % 4 == 1 ? 0.0 : 1.0;  // batch 0: some keys padded
  if (s.B > 1)
    for (int64_t j = 0; j < s.Tk; ++j) keep_v[size_t(s.Tk + j)] = j >= 12 && j % 3 == 0 ? 1.0 : 0.0;  // causal: early rows see no key
  Tensor keep_cpu = from_vector(keep_v, {s.B, s.Tk}, DType::Bool);
  Tensor keep_dev = convert(keep_cpu, DType::Bool, gpu());

  cpu::AttentionArgs<float> ca;
  cuda::AttentionArgs ga;
  ca.B = ga.B = s.B, ca.H = ga.H = s.H, ca.Tq = ga.Tq = s.Tq, ca.Tk = ga.Tk = s.Tk, ca.D = ga.D = s.D;
  ca.Dv = ga.Dv = s.Dv;
  ca.q = q.c(), ca.k = k.c(), ca.v = v.c();
  ga.q = q.d(), ga.k = k.d(), ga.v = v.d(), ga.dtype = ew(dt);
  strides_for(s, s.Tq, s.D, ca.q_strides), strides_for(s, s.Tk, s.D, ca.k_strides);
  strides_for(s, s.Tk, s.Dv, ca.v_strides);
  for (int d = 0; d < 3; ++d)
    ga.q_strides[d] = ca.q_strides[d], ga.k_strides[d] = ca.k_strides[d], ga.v_strides[d] = ca.v_strides[d];
  const int64_t bias_strides[4] = {0, s.Tq * s.Tk, s.Tk, 1};
  if (biased) {
    ca.bias = bias.c(), ga.bias = bias.d();
    for (int d = 0; d < 4; ++d) ca.bias_strides[d] = ga.bias_strides[d] = bias_strides[d];
  }
  if (masked) ca.key_keep = keep_cpu.data<bool>(), ga.key_keep = keep_dev.data<bool>();
  ca.causal = ga.causal = causal;
  ca.scale = ga.scale = 1.0 / std::sqrt(double(s.D));
  ca.dropout_p = ga.dropout_p = p;
  ca.seed = ga.seed = 4242, ca.offset = ga.offset = 17;

  const int64_t rows = s.B * s.H * s.Tq;
  std::vector<float> out_ref(static_cast<size_t>(rows * s.Dv)), lse_ref(static_cast<size_t>(rows));
  cpu::attention_forward<float>(ca, out_ref.data(), lse_ref.data());
  Tensor out = poisoned({rows * s.Dv}, dt), lse = gpu_f32(rows);
  cuda::attention_forward(ga, out.data_ptr(), lse.data<float>(), stream());
  EXPECT_TRUE(rel_close(to_vector(out), as_doubles(out_ref.data(), out_ref.size()), tol_for(dt), "out " + tag));
  std::vector<double> lse_got = to_vector(lse);
  for (size_t r = 0; r < lse_got.size(); ++r) {
    if (std::isinf(lse_ref[r])) {
      ASSERT_TRUE(std::isinf(lse_got[r]) && lse_got[r] < 0) << "lse row " << r << " " << tag;
    }
  }
  EXPECT_TRUE(rel_close(lse_got, as_doubles(lse_ref.data(), lse_ref.size()), 1e-5, "lse " + tag));

  // Backward from the GPU's own forward output (rounded in BF16), as training would.
  Tensor out_cpu = convert(out, DType::F32, Device::cpu());
  std::vector<float> dq_ref(static_cast<size_t>(rows * s.D)), dk_ref(static_cast<size_t>(s.B * s.H * s.Tk * s.D));
  std::vector<float> dv_ref(static_cast<size_t>(s.B * s.H * s.Tk * s.Dv)), dbias_ref(static_cast<size_t>(s.H * s.Tq * s.Tk), 0.f);
  cpu::attention_backward<float>(ca, out_cpu.data<float>(), lse_ref.data(), dout.c(), dq_ref.data(), dk_ref.data(),
                                 dv_ref.data(), biased ? dbias_ref.data() : nullptr, bias_strides);
  Tensor dq = poisoned({rows * s.D}, dt), dk = poisoned({s.B * s.H * s.Tk * s.D}, dt);
  Tensor dv = poisoned({s.B * s.H * s.Tk * s.Dv}, dt), dbias = poisoned({s.H * s.Tq * s.Tk}, dt);
  cuda::attention_backward(ga, out.data_ptr(), lse.data<float>(), dout.d(), dq.data_ptr(), dk.data_ptr(),
                           dv.data_ptr(), biased ? dbias.data_ptr() : nullptr, 1, s.H, stream());
  // dq/dk/dv are laid out [B, H, T, D] whatever the input strides: compare against the CPU's, which are too.
  EXPECT_TRUE(rel_close(to_vector(dq), as_doubles(dq_ref.data(), dq_ref.size()), tol_for(dt), "dq " + tag));
  EXPECT_TRUE(rel_close(to_vector(dk), as_doubles(dk_ref.data(), dk_ref.size()), tol_for(dt), "dk " + tag));
  EXPECT_TRUE(rel_close(to_vector(dv), as_doubles(dv_ref.data(), dv_ref.size()), tol_for(dt), "dv " + tag));
  if (biased) {
    EXPECT_TRUE(rel_close(to_vector(dbias), as_doubles(dbias_ref.data(), dbias_ref.size()), tol_for(dt), "dbias " + tag));
  }
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
