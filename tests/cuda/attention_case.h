// One attention case against kernels/cpu/attention, shared by the attention tests of every implementation
// the dispatch can select (rows, auto, cuDNN: the caller holds the ImplGuard): q, k, v, bias and dout of
// fresh random values, outputs poisoned; forward out and lse, then dq, dk, dv and dbias from the GPU's own
// forward output (rounded to the storage dtype, as training would).
#pragma once
#ifdef VLP_HAVE_CUDA
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "kernels/cpu/attention.h"
#include "kernels/cuda/attention.h"
#include "tests/cuda/cuda_test_util.h"

namespace vlp::cudatest {

struct AttentionCase {
  int64_t B, H, Tq, Tk, D, Dv;
  bool bthd;  // q, k, v stored [B, T, H, D] (strided heads) instead of [B, H, T, D]
  DType dtype = DType::BF16;
  bool causal = false, masked = false;
  int bias_kind = 0;  // 0 none, 1 [1, H, Tq, Tk] (broadcast over the batch, as T5's), 2 [B, H, Tq, Tk]
  double p = 0.0;     // dropout
  // Key padding pattern: false pads some keys of batch 0 and, in batch 1, every key before 12 (so early
  // causal rows see no key at all); true keeps key 0 of every batch (no fully masked row, which cuDNN
  // cannot take).
  bool every_row_sees_a_key = false;
  uint64_t seed = 201;        // q, k, v, bias, dout use seed .. seed + 4
  double tol = 1e-2;          // out, dq, dk, dv, dbias
  double lse_tol = 1e-5;
};

inline void run_attention_case(const AttentionCase& s) {
  const DType dt = s.dtype;
  const std::string tag = std::string(dtype_name(dt)) + (s.causal ? " causal" : "") +
                          (s.masked ? " key-mask" : "") + (s.bias_kind ? " bias" + std::to_string(s.bias_kind) : "") +
                          " p " + std::to_string(s.p) + " B " + std::to_string(s.B) + " Tq " + std::to_string(s.Tq) +
                          " Tk " + std::to_string(s.Tk) + " D " + std::to_string(s.D) + (s.bthd ? " bthd" : "");
  const int64_t bias_B = s.bias_kind == 2 ? s.B : 1;
  Input q = make_input({s.B * s.H * s.Tq * s.D}, s.seed, dt), k = make_input({s.B * s.H * s.Tk * s.D}, s.seed + 1, dt);
  Input v = make_input({s.B * s.H * s.Tk * s.Dv}, s.seed + 2, dt);
  Input bias = make_input({bias_B * s.H * s.Tq * s.Tk}, s.seed + 3, dt, -2, 2);
  Input dout = make_input({s.B * s.H * s.Tq * s.Dv}, s.seed + 4, dt);
  std::vector<double> keep_v(static_cast<size_t>(s.B * s.Tk), 1.0);
  for (int64_t b = 0; b < s.B; ++b)
    for (int64_t j = 0; j < s.Tk; ++j) {
      double keep = 1.0;
      if (s.every_row_sees_a_key) keep = b % 2 == 0 ? (j % 4 == 1 ? 0.0 : 1.0) : (j % 3 == 2 || j > s.Tk - 5 ? 0.0 : 1.0);
      else if (b == 0) keep = j % 4 == 1 ? 0.0 : 1.0;
      else if (b == 1) keep = j >= 12 && j % 3 == 0 ? 1.0 : 0.0;
      keep_v[size_t(b * s.Tk + j)] = keep;
    }
  Tensor keep_cpu = from_vector(keep_v, {s.B, s.Tk}, DType::Bool);
  Tensor keep_dev = convert(keep_cpu, DType::Bool, gpu());

  cpu::AttentionArgs<float> ca;
  cuda::AttentionArgs ga;
  ca.B = ga.B = s.B, ca.H = ga.H = s.H, ca.Tq = ga.Tq = s.Tq, ca.Tk = ga.Tk = s.Tk, ca.D = ga.D = s.D;
  ca.Dv = ga.Dv = s.Dv;
  ca.q = q.c(), ca.k = k.c(), ca.v = v.c();
  ga.q = q.d(), ga.k = k.d(), ga.v = v.d(), ga.dtype = ew(dt);
  attention_strides(s.bthd, s.H, s.Tq, s.D, ca.q_strides), attention_strides(s.bthd, s.H, s.Tk, s.D, ca.k_strides);
  attention_strides(s.bthd, s.H, s.Tk, s.Dv, ca.v_strides);
  for (int d = 0; d < 3; ++d)
    ga.q_strides[d] = ca.q_strides[d], ga.k_strides[d] = ca.k_strides[d], ga.v_strides[d] = ca.v_strides[d];
  const int64_t bias_strides[4] = {bias_B == 1 ? 0 : s.H * s.Tq * s.Tk, s.Tq * s.Tk, s.Tk, 1};
  if (s.bias_kind) {
    ca.bias = bias.c(), ga.bias = bias.d();
    for (int d = 0; d < 4; ++d) ca.bias_strides[d] = ga.bias_strides[d] = bias_strides[d];
  }
  if (s.masked) ca.key_keep = keep_cpu.data<bool>(), ga.key_keep = keep_dev.data<bool>();
  ca.causal = ga.causal = s.causal;
  ca.scale = ga.scale = 1.0 / std::sqrt(double(s.D));
  ca.dropout_p = ga.dropout_p = s.p;
  ca.seed = ga.seed = 4242, ca.offset = ga.offset = 17;

  const int64_t rows = s.B * s.H * s.Tq;
  std::vector<float> out_ref(static_cast<size_t>(rows * s.Dv)), lse_ref(static_cast<size_t>(rows));
  cpu::attention_forward<float>(ca, out_ref.data(), lse_ref.data());
  Tensor out = poisoned({rows * s.Dv}, dt), lse = gpu_f32(rows);
  cuda::attention_forward(ga, out.data_ptr(), lse.data<float>(), stream());
  EXPECT_TRUE(rel_close(to_vector(out), as_doubles(out_ref.data(), out_ref.size()), s.tol, "out " + tag));
  std::vector<double> lse_got = to_vector(lse);
  for (size_t r = 0; r < lse_got.size(); ++r) {
    if (std::isinf(lse_ref[r])) {
      ASSERT_TRUE(std::isinf(lse_got[r]) && lse_got[r] < 0) << "lse row " << r << " " << tag;
    }
  }
  EXPECT_TRUE(rel_close(lse_got, as_doubles(lse_ref.data(), lse_ref.size()), s.lse_tol, "lse " + tag));

  Tensor out_cpu = convert(out, DType::F32, Device::cpu());
  std::vector<float> dq_ref(static_cast<size_t>(rows * s.D)), dk_ref(static_cast<size_t>(s.B * s.H * s.Tk * s.D));
  std::vector<float> dv_ref(static_cast<size_t>(s.B * s.H * s.Tk * s.Dv));
  std::vector<float> dbias_ref(static_cast<size_t>(bias_B * s.H * s.Tq * s.Tk), 0.f);
  cpu::attention_backward<float>(ca, out_cpu.data<float>(), lse_ref.data(), dout.c(), dq_ref.data(), dk_ref.data(),
                                 dv_ref.data(), s.bias_kind ? dbias_ref.data() : nullptr, bias_strides);
  Tensor dq = poisoned({rows * s.D}, dt), dk = poisoned({s.B * s.H * s.Tk * s.D}, dt);
  Tensor dv = poisoned({s.B * s.H * s.Tk * s.Dv}, dt), dbias = poisoned({bias_B * s.H * s.Tq * s.Tk}, dt);
  cuda::attention_backward(ga, out.data_ptr(), lse.data<float>(), dout.d(), dq.data_ptr(), dk.data_ptr(),
                           dv.data_ptr(), s.bias_kind ? dbias.data_ptr() : nullptr, bias_B, s.H, stream());
  // dq/dk/dv are laid out [B, H, T, D] whatever the input strides: compare against the CPU's, which are too.
  EXPECT_TRUE(rel_close(to_vector(dq), as_doubles(dq_ref.data(), dq_ref.size()), s.tol, "dq " + tag));
  EXPECT_TRUE(rel_close(to_vector(dk), as_doubles(dk_ref.data(), dk_ref.size()), s.tol, "dk " + tag));
  EXPECT_TRUE(rel_close(to_vector(dv), as_doubles(dv_ref.data(), dv_ref.size()), s.tol, "dv " + tag));
  if (s.bias_kind) {
    EXPECT_TRUE(rel_close(to_vector(dbias), as_doubles(dbias_ref.data(), dbias_ref.size()), s.tol, "dbias " + tag));
  }
}

}  // namespace vlp::cudatest
#endif  // VLP_HAVE_CUDA
