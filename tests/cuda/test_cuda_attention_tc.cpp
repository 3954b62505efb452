// The tensor-core attention (kernels/cuda/attention_tc.h) against kernels/cpu/attention in BF16: every
// combination of causal mask, key padding, additive bias (broadcast over the batch: the dbias scratch path;
// or one per batch and head: dS written directly) and dropout, on sizes that are not tile multiples
// (Tq 77 / Tk 131, several tiles, Tq = Tk = 1, single-query decoding, more queries than keys), head dims
// 32, 48, 64, 72 and 128, contiguous and [B, T, H, D]-strided inputs, with fully masked rows (a batch whose
// keys are all padded, causal rows that see no unpadded key). Outputs are poisoned first. Also the same
// bits on a second run, and attention_tc_supported's truth table (no device needed).
#ifdef VLP_HAVE_CUDA
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>

#include "kernels/cpu/attention.h"
#include "kernels/cuda/attention_tc.h"
#include "tests/cuda/cuda_test_util.h"

namespace vlp {
namespace {

using namespace cudatest;

struct TcShape {
  int64_t B, H, Tq, Tk, D;
  bool bthd;       // q, k, v stored [B, T, H, D] (strided heads) instead of [B, H, T, D]
  bool full_bias;  // bias [B, H, Tq, Tk] (dbias written directly) instead of [H, Tq, Tk] broadcast over B
};

void strides_for(const TcShape& s, int64_t T, int64_t out[3]) { attention_strides(s.bthd, s.H, T, s.D, out); }

struct TcResult {
  std::vector<double> out, lse, dq, dk, dv, dbias;
};

TcResult run_case(const TcShape& s, bool causal, bool masked, bool biased, double p, bool compare = true) {
  const std::string tag = std::string(causal ? " causal" : "") + (masked ? " key-mask" : "") +
                          (biased ? (s.full_bias ? " full-bias" : " bias") : "") + " p " + std::to_string(p) +
                          " B " + std::to_string(s.B) + " Tq " + std::to_string(s.Tq) + " Tk " + std::to_string(s.Tk) +
                          " D " + std::to_string(s.D) + (s.bthd ? " bthd" : "");
  const DType dt = DType::BF16;
  const int64_t B = s.B, H = s.H, Tq = s.Tq, Tk = s.Tk, D = s.D;
  const int64_t bias_B = s.full_bias ? B : 1;
  Input q = make_input({B * H * Tq * D}, 301, dt), k = make_input({B * H * Tk * D}, 302, dt);
  Input v = make_input({B * H * Tk * D}, 303, dt), bias = make_input({bias_B * H * Tq * Tk}, 304, dt, -2, 2);
  Input dout = make_input({B * H * Tq * D}, 305, dt);
  std::vector<double> keep_v(static_cast<size_t>(B * Tk), 1.0);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t j = 0; j < Tk; ++j) {
      double keep = 1.0;
      if (b == 0) keep = j % 4 == 1 ? 0.0 : 1.0;                  // some keys padded
      if (b == 1) keep = j >= 12 && j % 3 == 0 ? 1.0 : 0.0;       // causal: early rows see no key
      if (b == 2) keep = 0.0;                                     // every row fully masked
      keep_v[size_t(b * Tk + j)] = keep;
    }
  Tensor keep_cpu = from_vector(keep_v, {B, Tk}, DType::Bool);
  Tensor keep_dev = convert(keep_cpu, DType::Bool, gpu());

  cpu::AttentionArgs<float> ca;
  cuda::AttentionArgs ga;
  ca.B = ga.B = B, ca.H = ga.H = H, ca.Tq = ga.Tq = Tq, ca.Tk = ga.Tk = Tk, ca.D = ga.D = D, ca.Dv = ga.Dv = D;
  ca.q = q.c(), ca.k = k.c(), ca.v = v.c();
  ga.q = q.d(), ga.k = k.d(), ga.v = v.d(), ga.dtype = cuda::EwDType::BF16;
  strides_for(s, Tq, ca.q_strides), strides_for(s, Tk, ca.k_strides), strides_for(s, Tk, ca.v_strides);
  for (int d = 0; d < 3; ++d)
    ga.q_strides[d] = ca.q_strides[d], ga.k_strides[d] = ca.k_strides[d], ga.v_strides[d] = ca.v_strides[d];
  const int64_t bias_strides[4] = {s.full_bias ? H * Tq * Tk : 0, Tq * Tk, Tk, 1};
  if (biased) {
    ca.bias = bias.c(), ga.bias = bias.d();
    for (int d = 0; d < 4; ++d) ca.bias_strides[d] = ga.bias_strides[d] = bias_strides[d];
  }
  if (masked) ca.key_keep = keep_cpu.data<bool>(), ga.key_keep = keep_dev.data<bool>();
  ca.causal = ga.causal = causal;
  ca.scale = ga.scale = 1.0 / std::sqrt(double(D));
  ca.dropout_p = ga.dropout_p = p;
  ca.seed = ga.seed = 777, ca.offset = ga.offset = 5;
  EXPECT_TRUE(cuda::attention_tc_supported(ga)) << tag;

  const int64_t rows = B * H * Tq;
  TcResult res;
  Tensor out = poisoned({rows * D}, dt), lse = gpu_f32(rows);
  cuda::attention_forward_tc(ga, out.data_ptr(), lse.data<float>(), stream());
  res.out = to_vector(out), res.lse = to_vector(lse);
  Tensor dq = poisoned({rows * D}, dt), dk = poisoned({B * H * Tk * D}, dt), dv = poisoned({B * H * Tk * D}, dt);
  Tensor dbias = poisoned({bias_B * H * Tq * Tk}, dt);
  cuda::attention_backward_tc(ga, out.data_ptr(), lse.data<float>(), dout.d(), dq.data_ptr(), dk.data_ptr(),
                              dv.data_ptr(), biased ? dbias.data_ptr() : nullptr, bias_B, H, stream());
  res.dq = to_vector(dq), res.dk = to_vector(dk), res.dv = to_vector(dv);
  if (biased) res.dbias = to_vector(dbias);
  if (!compare) return res;

  std::vector<float> out_ref(static_cast<size_t>(rows * D)), lse_ref(static_cast<size_t>(rows));
  cpu::attention_forward<float>(ca, out_ref.data(), lse_ref.data());
  EXPECT_TRUE(rel_close(res.out, as_doubles(out_ref.data(), out_ref.size()), 1e-2, "out" + tag));
  for (size_t r = 0; r < res.lse.size(); ++r) {
    if (std::isinf(lse_ref[r]) && !(std::isinf(res.lse[r]) && res.lse[r] < 0)) {
      ADD_FAILURE() << "lse row " << r << " is " << res.lse[r] << ", expected -inf" << tag;
      break;
    }
  }
  EXPECT_TRUE(rel_close(res.lse, as_doubles(lse_ref.data(), lse_ref.size()), 1e-4, "lse" + tag));

  // Backward from the GPU's own (bf16) forward output, as training would.
  std::vector<float> out_gpu(res.out.begin(), res.out.end());
  std::vector<float> dq_ref(static_cast<size_t>(rows * D)), dk_ref(static_cast<size_t>(B * H * Tk * D));
  std::vector<float> dv_ref(dk_ref.size()), dbias_ref(static_cast<size_t>(bias_B * H * Tq * Tk), 0.f);
  cpu::attention_backward<float>(ca, out_gpu.data(), lse_ref.data(), dout.c(), dq_ref.data(), dk_ref.data(),
                                 dv_ref.data(), biased ? dbias_ref.data() : nullptr, bias_strides);
  EXPECT_TRUE(rel_close(res.dq, as_doubles(dq_ref.data(), dq_ref.size()), 1e-2, "dq" + tag));
  EXPECT_TRUE(rel_close(res.dk, as_doubles(dk_ref.data(), dk_ref.size()), 1e-2, "dk" + tag));
  EXPECT_TRUE(rel_close(res.dv, as_doubles(dv_ref.data(), dv_ref.size()), 1e-2, "dv" + tag));
  if (biased) {
    EXPECT_TRUE(rel_close(res.dbias, as_doubles(dbias_ref.data(), dbias_ref.size()), 1e-2, "dbias" + tag));
  }
  return res;
}

void every_combination(const TcShape& s) {
  for (bool causal : {false, true})
    for (bool masked : {false, true})
      for (bool biased : {false, true})
        for (double p : {0.0, 0.2}) run_case(s, causal, masked, biased, p);
}

TEST(CudaAttentionTc, OddSizesEveryMaskBiasDropoutCombination) {
  VLP_REQUIRE_GPU();
  every_combination({3, 2, 77, 131, 64, false, false});  // batch 2: every key padded
  every_combination({2, 2, 130, 141, 128, true, true});  // several tiles each way, strided heads, dS direct
}

TEST(CudaAttentionTc, SingleRowsDecodingAndMoreQueriesThanKeys) {
  VLP_REQUIRE_GPU();
  every_combination({1, 2, 1, 1, 64, false, false});      // Tq = Tk = 1
  every_combination({2, 3, 1, 200, 32, false, true});     // one query (decoding), D 32 in the 64 kernel
  every_combination({2, 1, 50, 20, 48, true, false});     // causal shift < 0: rows 0..29 see no key; D 48
  every_combination({1, 2, 65, 64, 72, false, false});    // D 72 in the 128 kernel, one row past a tile
}

TEST(CudaAttentionTc, SameBitsEveryRun) {
  VLP_REQUIRE_GPU();
  const TcShape s{2, 2, 100, 90, 64, false, false};
  TcResult a = run_case(s, true, true, true, 0.1, false), b = run_case(s, true, true, true, 0.1, false);
  EXPECT_EQ(a.out, b.out);
  EXPECT_EQ(a.dq, b.dq);
  EXPECT_EQ(a.dk, b.dk);
  EXPECT_EQ(a.dv, b.dv);
  EXPECT_EQ(a.dbias, b.dbias);
}

TEST(CudaAttentionTc, RejectsUnsupportedArguments) {
  VLP_REQUIRE_GPU();
  cuda::AttentionArgs a;
  a.dtype = cuda::EwDType::F32, a.B = a.H = a.Tq = a.Tk = 1, a.D = a.Dv = 64;
  EXPECT_THROW(cuda::attention_forward_tc(a, nullptr, nullptr, stream()), std::runtime_error);
  EXPECT_THROW(cuda::attention_backward_tc(a, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, 1, 1,
                                           stream()),
               std::runtime_error);
}

// attention_tc_supported touches no device: this runs without a GPU.
TEST(CudaAttentionTc, SupportedTruthTable) {
  const auto fake = [](uintptr_t at) { return reinterpret_cast<const void*>(at); };
  cuda::AttentionArgs base;
  base.dtype = cuda::EwDType::BF16, base.B = 2, base.H = 12, base.Tq = 77, base.Tk = 131, base.D = base.Dv = 64;
  base.q = fake(0x10000), base.k = fake(0x20000), base.v = fake(0x30000);
  const int64_t st[3] = {12 * 131 * 64, 131 * 64, 64};
  for (int d = 0; d < 3; ++d) base.q_strides[d] = base.k_strides[d] = base.v_strides[d] = st[d];
  EXPECT_TRUE(cuda::attention_tc_supported(base));
  auto with = [&](auto change) {
    cuda::AttentionArgs a = base;
    change(a);
    return cuda::attention_tc_supported(a);
  };
  EXPECT_FALSE(with([](cuda::AttentionArgs& a) { a.dtype = cuda::EwDType::F32; }));
  for (int64_t d : {8, 16, 32, 48, 64, 72, 96, 128})
    EXPECT_TRUE(with([&](cuda::AttentionArgs& a) { a.D = a.Dv = d; })) << d;
  for (int64_t d : {0, 4, 60, 100, 136, 256})
    EXPECT_FALSE(with([&](cuda::AttentionArgs& a) { a.D = a.Dv = d; })) << d;
  EXPECT_FALSE(with([](cuda::AttentionArgs& a) { a.Dv = 32; }));
  EXPECT_FALSE(with([&](cuda::AttentionArgs& a) { a.k = fake(0x20008); }));                 // 8-byte aligned
  EXPECT_FALSE(with([](cuda::AttentionArgs& a) { a.q_strides[2] = 68; }));                  // row stride % 8
  EXPECT_FALSE(with([](cuda::AttentionArgs& a) { a.v_strides[1] = 131 * 64 + 4; }));        // head stride % 8
  EXPECT_TRUE(with([](cuda::AttentionArgs& a) { a.Tq = 1, a.q_strides[2] = 3; }));          // one row: unused
  EXPECT_TRUE(with([](cuda::AttentionArgs& a) { a.B = 1, a.k_strides[0] = 5; }));           // one batch: unused
  EXPECT_TRUE(with([](cuda::AttentionArgs& a) { a.k_strides[0] = 0, a.v_strides[1] = 0; })); // broadcast
  EXPECT_TRUE(with([](cuda::AttentionArgs& a) { a.dropout_p = 0.5; }));
  EXPECT_FALSE(with([](cuda::AttentionArgs& a) { a.dropout_p = 1.0; }));
  EXPECT_TRUE(with([](cuda::AttentionArgs& a) { a.causal = true, a.Tq = 0; }));
  int64_t odd_bias[4] = {0, 7, 3, 1};  // any bias strides (read element by element)
  EXPECT_TRUE(with([&](cuda::AttentionArgs& a) {
    a.bias = fake(0x40002);
    for (int d = 0; d < 4; ++d) a.bias_strides[d] = odd_bias[d];
  }));
}

}  // namespace
}  // namespace vlp
#endif  // VLP_HAVE_CUDA
