// cuBLASLt GEMM against kernels/cpu/gemm on odd sizes: every transpose combination, F32 (exact), TF32,
// BF16 in with F32 or BF16 out, beta accumulation, strided batches (including a repeated matrix), and the
// bias, bias+GELU(tanh) and dGELU+bias-gradient epilogues on both the cuBLASLt and the fallback paths.
#ifdef VLP_HAVE_CUDA
#include <gtest/gtest.h>

#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cuda/gemm.h"
#include "tests/cuda/cuda_test_util.h"

namespace vlp {
namespace {

using namespace cudatest;

cuda::GemmDType gd(DType dt) { return dt == DType::BF16 ? cuda::GemmDType::BF16 : cuda::GemmDType::F32; }

// CPU reference C = alpha op(A) op(B) + beta C0 for one matrix (row-major, A as stored [m,k] or [k,m]).
std::vector<float> ref_gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
                            const float* b, float beta, const float* c0) {
  std::vector<float> c(static_cast<size_t>(m * n), 0.f);
  if (c0) c.assign(c0, c0 + m * n);
  cpu::gemm<float>(ta, tb, m, n, k, alpha, a, ta ? m : k, b, tb ? k : n, c0 ? beta : 0.0, c.data(), n);
  return c;
}

struct Case {
  bool ta, tb;
  DType ab, c;
  bool tf32;
  double tol;
};

TEST(CudaGemm, AllTransposesAndPrecisions) {
  VLP_REQUIRE_GPU();
  const int64_t m = 37, n = 29, k = 53;
  std::vector<Case> cases;
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      cases.push_back({ta, tb, DType::F32, DType::F32, false, 1e-5});
      cases.push_back({ta, tb, DType::F32, DType::F32, true, 5e-3});
      cases.push_back({ta, tb, DType::BF16, DType::F32, false, 1e-2});
      cases.push_back({ta, tb, DType::BF16, DType::BF16, false, 1e-2});
    }
  uint64_t seed = 100;
  for (const Case& cs : cases) {
    Input a = make_input(cs.ta ? Shape{k, m} : Shape{m, k}, seed++, cs.ab);
    Input b = make_input(cs.tb ? Shape{n, k} : Shape{k, n}, seed++, cs.ab);
    Input c0 = make_input({m, n}, seed++, cs.c);
    for (float beta : {0.f, 0.5f}) {
      Tensor c = beta == 0.f ? poisoned({m, n}, cs.c) : convert(c0.dev, cs.c, gpu());
      if (beta != 0.f) c = convert(convert(c0.cpu, cs.c), cs.c, gpu());
      cuda::GemmArgs g;
      g.trans_a = cs.ta, g.trans_b = cs.tb, g.m = m, g.n = n, g.k = k;
      g.ab_dtype = gd(cs.ab), g.c_dtype = gd(cs.c), g.allow_tf32 = cs.tf32;
      g.a = a.d(), g.lda = cs.ta ? m : k, g.b = b.d(), g.ldb = cs.tb ? k : n, g.c = c.data_ptr(), g.ldc = n;
      g.alpha = 1.25f, g.beta = beta;
      cuda::gemm(g);
      std::vector<float> ref = ref_gemm(cs.ta, cs.tb, m, n, k, 1.25f, a.c(), b.c(), beta, beta != 0.f ? c0.c() : nullptr);
      EXPECT_TRUE(rel_close(to_vector(c), as_doubles(ref.data(), ref.size()), cs.tol,
                            "ta " + std::to_string(cs.ta) + " tb " + std::to_string(cs.tb) + " ab " +
                                std::string(dtype_name(cs.ab)) + " c " + std::string(dtype_name(cs.c)) + " tf32 " +
                                std::to_string(cs.tf32) + " beta " + std::to_string(beta)));
    }
  }
  EXPECT_GT(cuda::gemm_cache_size(), 0);
}

TEST(CudaGemm, StridedBatchedWithARepeatedMatrix) {
  VLP_REQUIRE_GPU();
  const int64_t batch = 3, m = 19, n = 23, k = 11;
  for (DType dt : {DType::F32, DType::BF16}) {
    Input a = make_input({batch, m, k}, 7, dt);
    Input w = make_input({n, k}, 8, dt);  // shared across the batch (stride 0), used transposed
    Tensor c = poisoned({batch, m, n}, dt);
    cuda::GemmArgs g;
    g.trans_b = true, g.m = m, g.n = n, g.k = k, g.ab_dtype = gd(dt), g.c_dtype = gd(dt);
    g.a = a.d(), g.lda = k, g.stride_a = m * k;
    g.b = w.d(), g.ldb = k, g.stride_b = 0;
    g.c = c.data_ptr(), g.ldc = n, g.stride_c = m * n, g.batch = batch;
    cuda::gemm(g);
    std::vector<double> ref;
    for (int64_t i = 0; i < batch; ++i) {
      std::vector<float> r = ref_gemm(false, true, m, n, k, 1.f, a.c() + i * m * k, w.c(), 0.f, nullptr);
      ref.insert(ref.end(), r.begin(), r.end());
    }
    EXPECT_TRUE(rel_close(to_vector(c), ref, tol_for(dt), std::string(dtype_name(dt))));
  }
}

std::vector<float> gelu_tanh_ref(const std::vector<float>& x) {
  std::vector<float> y(x.size());
  cpu::unary_forward<float>(cpu::Unary::GeluTanh, x.data(), y.data(), int64_t(x.size()), 0, 0);
  return y;
}

// Linear layer shapes: X [m, k] times W^T (W [n, k]) plus bias [n]. n = 24 takes cuBLASLt's aux path
// (leading dimension a multiple of 8), n = 29 the fallback kernels.
TEST(CudaGemm, BiasAndGeluEpilogues) {
  VLP_REQUIRE_GPU();
  const int64_t m = 33, k = 45;
  for (int64_t n : {int64_t(24), int64_t(29)})
    for (DType dt : {DType::F32, DType::BF16}) {
      const std::string tag = std::string(dtype_name(dt)) + " n " + std::to_string(n);
      Input x = make_input({m, k}, 21, dt), w = make_input({n, k}, 22, dt), bias = make_input({n}, 23, dt);
      std::vector<float> pre = ref_gemm(false, true, m, n, k, 1.f, x.c(), w.c(), 0.f, nullptr);
      for (int64_t i = 0; i < m; ++i)
        for (int64_t j = 0; j < n; ++j) pre[size_t(i * n + j)] += bias.c()[j];
      std::vector<float> act = gelu_tanh_ref(pre);
      cuda::GemmArgs g;
      g.trans_b = true, g.m = m, g.n = n, g.k = k, g.ab_dtype = gd(dt), g.c_dtype = gd(dt);
      g.a = x.d(), g.lda = k, g.b = w.d(), g.ldb = k, g.ldc = n, g.bias = bias.d();

      Tensor y = poisoned({m, n}, dt);
      g.c = y.data_ptr(), g.epilogue = cuda::Epilogue::Bias;
      cuda::gemm(g);
      EXPECT_TRUE(rel_close(to_vector(y), as_doubles(pre.data(), pre.size()), tol_for(dt), "bias " + tag));

      Tensor y2 = poisoned({m, n}, dt);
      g.c = y2.data_ptr(), g.epilogue = cuda::Epilogue::BiasGeluTanh;
      cuda::gemm(g);
      EXPECT_TRUE(rel_close(to_vector(y2), as_doubles(act.data(), act.size()), tol_for(dt), "bias+gelu " + tag));

      Tensor y3 = poisoned({m, n}, dt), aux = poisoned({m, n}, dt);
      g.c = y3.data_ptr(), g.aux = aux.data_ptr();
      cuda::gemm(g);
      EXPECT_TRUE(rel_close(to_vector(y3), as_doubles(act.data(), act.size()), tol_for(dt), "bias+gelu+aux " + tag));
      EXPECT_TRUE(rel_close(to_vector(aux), as_doubles(pre.data(), pre.size()), tol_for(dt), "aux " + tag));

      // Backward through the activation: dpre = (dZ W2) * gelu'(pre), bias_grad = column sums of dpre.
      const int64_t n2 = 17;
      Input dz = make_input({m, n2}, 24, dt), w2 = make_input({n2, n}, 25, dt);
      std::vector<float> dact = ref_gemm(false, false, m, n, n2, 1.f, dz.c(), w2.c(), 0.f, nullptr);
      std::vector<float> pre_rounded;  // the saved pre-activation as stored (rounded for BF16)
      for (double v : to_vector(aux)) pre_rounded.push_back(float(v));
      std::vector<float> dpre(dact.size());
      cpu::unary_backward<float>(cpu::Unary::GeluTanh, pre_rounded.data(), nullptr, dact.data(), dpre.data(),
                                 int64_t(dact.size()), 0, 0);
      std::vector<double> dbias(static_cast<size_t>(n), 0.0);
      for (int64_t i = 0; i < m; ++i)
        for (int64_t j = 0; j < n; ++j) dbias[size_t(j)] += dpre[size_t(i * n + j)];
      Tensor dp = poisoned({m, n}, dt), db = poisoned({n}, dt);
      cuda::GemmArgs gb;
      gb.m = m, gb.n = n, gb.k = n2, gb.ab_dtype = gd(dt), gb.c_dtype = gd(dt);
      gb.a = dz.d(), gb.lda = n2, gb.b = w2.d(), gb.ldb = n, gb.c = dp.data_ptr(), gb.ldc = n;
      gb.epilogue = cuda::Epilogue::DGeluTanh, gb.aux = aux.data_ptr(), gb.bias_grad = db.data_ptr();
      cuda::gemm(gb);
      EXPECT_TRUE(rel_close(to_vector(dp), as_doubles(dpre.data(), dpre.size()), tol_for(dt), "dgelu " + tag));
      EXPECT_TRUE(rel_close(to_vector(db), dbias, tol_for(dt), "bias grad " + tag));
    }
}

// A bias vector one element into its storage (4- or 2-byte aligned) takes the unfused path instead of
// handing cuBLASLt's epilogue a misaligned bias pointer.
TEST(CudaGemm, BiasEpiloguesWithAMisalignedBias) {
  VLP_REQUIRE_GPU();
  const int64_t m = 21, n = 16, k = 24;
  for (DType dt : {DType::F32, DType::BF16}) {
    const std::string tag(dtype_name(dt));
    Input x = make_input({m, k}, 31, dt), w = make_input({n, k}, 32, dt), bias = make_input({n + 1}, 33, dt);
    std::vector<float> pre = ref_gemm(false, true, m, n, k, 1.f, x.c(), w.c(), 0.f, nullptr);
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) pre[size_t(i * n + j)] += bias.c()[j + 1];
    std::vector<float> act = gelu_tanh_ref(pre);
    cuda::GemmArgs g;
    g.trans_b = true, g.m = m, g.n = n, g.k = k, g.ab_dtype = gd(dt), g.c_dtype = gd(dt);
    g.a = x.d(), g.lda = k, g.b = w.d(), g.ldb = k, g.ldc = n;
    g.bias = static_cast<const char*>(bias.d()) + dtype_size(dt);
    Tensor y = poisoned({m, n}, dt);
    g.c = y.data_ptr(), g.epilogue = cuda::Epilogue::Bias;
    cuda::gemm(g);
    EXPECT_TRUE(rel_close(to_vector(y), as_doubles(pre.data(), pre.size()), tol_for(dt), "bias " + tag));
    Tensor y2 = poisoned({m, n}, dt), aux = poisoned({m, n}, dt);
    g.c = y2.data_ptr(), g.epilogue = cuda::Epilogue::BiasGeluTanh;
    cuda::gemm(g);
    EXPECT_TRUE(rel_close(to_vector(y2), as_doubles(act.data(), act.size()), tol_for(dt), "bias+gelu " + tag));
    Tensor y3 = poisoned({m, n}, dt);
    g.c = y3.data_ptr(), g.aux = aux.data_ptr();
    cuda::gemm(g);
    EXPECT_TRUE(rel_close(to_vector(y3), as_doubles(act.data(), act.size()), tol_for(dt), "bias+gelu+aux " + tag));
    EXPECT_TRUE(rel_close(to_vector(aux), as_doubles(pre.data(), pre.size()), tol_for(dt), "aux " + tag));
  }
}

// Views starting one element into their storage (4- or 2-byte aligned): cuBLASLt with the alignment
// declared, or the simple kernel; and the simple kernel on its own for every transpose and dtype pair.
TEST(CudaGemm, MisalignedViewsAndTheSimpleKernel) {
  VLP_REQUIRE_GPU();
  const int64_t m = 13, n = 9, k = 21;
  uint64_t seed = 300;
  for (bool ta : {false, true})
    for (bool tb : {false, true})
      for (DType ab : {DType::F32, DType::BF16})
        for (DType cd : {DType::F32, DType::BF16}) {
          const std::string tag = std::string(dtype_name(ab)) + "->" + std::string(dtype_name(cd)) + " ta " +
                                  std::to_string(ta) + " tb " + std::to_string(tb);
          Input a = make_input({m * k + 1}, seed++, ab), b = make_input({k * n + 1}, seed++, ab);
          Input c0 = make_input({m * n + 1}, seed++, cd);
          std::vector<float> ref = ref_gemm(ta, tb, m, n, k, 0.5f, a.c() + 1, b.c() + 1, 2.f, c0.c() + 1);
          for (bool simple : {false, true}) {
            Tensor c = convert(convert(c0.cpu, cd), cd, gpu());
            cuda::GemmArgs g;
            g.trans_a = ta, g.trans_b = tb, g.m = m, g.n = n, g.k = k, g.ab_dtype = gd(ab), g.c_dtype = gd(cd);
            const int64_t es = int64_t(dtype_size(ab)), cs = int64_t(dtype_size(cd));
            g.a = static_cast<char*>(a.d()) + es, g.lda = ta ? m : k;
            g.b = static_cast<char*>(b.d()) + es, g.ldb = tb ? k : n;
            g.c = static_cast<char*>(c.data_ptr()) + cs, g.ldc = n;
            g.alpha = 0.5f, g.beta = 2.f;
            if (simple) cuda::gemm_simple(g);
            else cuda::gemm(g);
            std::vector<double> got = to_vector(c);
            EXPECT_EQ(got[0], to_vector(convert(c0.cpu, cd))[0]) << "element before the view written, " << tag;
            got.erase(got.begin());
            EXPECT_TRUE(rel_close(got, as_doubles(ref.data(), ref.size()), tol_for(cd == DType::BF16 ? cd : ab),
                                  (simple ? "simple " : "gemm ") + tag));
          }
        }
}

TEST(CudaGemm, RejectsBadArguments) {
  VLP_REQUIRE_GPU();
  cuda::GemmArgs g;
  g.m = 0, g.n = 4, g.k = 4;
  EXPECT_THROW(cuda::gemm(g), std::runtime_error);
  g.m = 4, g.batch = 2, g.epilogue = cuda::Epilogue::Bias;
  EXPECT_THROW(cuda::gemm(g), std::runtime_error);
}

}  // namespace
}  // namespace vlp
#endif  // VLP_HAVE_CUDA
