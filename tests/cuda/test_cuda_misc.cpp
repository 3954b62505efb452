// CUDA embedding, Philox dropout and random fills, multi-tensor AdamW and the global sum of squares against
// the CPU kernels; dropout masks and uniform draws must equal the CPU's bit for bit.
#ifdef VLP_HAVE_CUDA
#include <gtest/gtest.h>

#include <cmath>

#include "kernels/cpu/embedding.h"
#include "kernels/cpu/index.h"
#include "kernels/cpu/reduce.h"
#include "kernels/cpu/optim.h"
#include "kernels/cpu/random.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/index.h"
#include "kernels/cuda/lora.h"
#include "kernels/cuda/misc.h"
#include "tests/cuda/cuda_test_util.h"

namespace vlp {
namespace {

using namespace cudatest;

const DType kDtypes[] = {DType::F32, DType::BF16};

TEST(CudaEmbedding, ForwardGathersRowsOfEveryDtypeAndWidth) {
  VLP_REQUIRE_GPU();
  const int64_t vocab = 53, n = 41;
  std::vector<int64_t> ids(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) ids[size_t(i)] = (i * 17 + 3) % vocab;
  Tensor ids_dev = upload_i64(ids);
  for (DType dt : kDtypes)
    for (int64_t d : {int64_t(64), int64_t(37)}) {  // 16-byte rows and odd rows
      Input w = make_input({vocab, d}, 101, dt);
      Tensor out = poisoned({n, d}, dt);
      cuda::embedding_forward(w.d(), d * int64_t(dtype_size(dt)), vocab, ids_dev.data<int64_t>(), n, out.data_ptr(),
                              stream());
      std::vector<double> got = to_vector(out), table = to_vector(w.cpu);
      for (int64_t i = 0; i < n; ++i)
        for (int64_t j = 0; j < d; ++j)
          ASSERT_EQ(got[size_t(i * d + j)], table[size_t(ids[size_t(i)] * d + j)]) << "row " << i << " col " << j;
    }
}

TEST(CudaEmbedding, BackwardSumsRepeatedIdsDeterministically) {
  VLP_REQUIRE_GPU();
  const int64_t vocab = 31, n = 97, d = 45;
  std::vector<int64_t> ids(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) ids[size_t(i)] = (i * i + 5) % 13;  // only some rows used, many repeats
  Tensor ids_dev = upload_i64(ids);
  for (DType dt : kDtypes) {
    Input dy = make_input({n, d}, 102, dt);
    std::vector<float> ref(static_cast<size_t>(vocab * d));
    cpu::embedding_backward<float>(dy.c(), ids.data(), n, vocab, d, ref.data());
    Tensor dw = poisoned({vocab, d}, dt), dw2 = poisoned({vocab, d}, dt);
    cuda::embedding_backward(ew(dt), dy.d(), ids_dev.data<int64_t>(), n, vocab, d, dw.data_ptr(), stream());
    cuda::embedding_backward(ew(dt), dy.d(), ids_dev.data<int64_t>(), n, vocab, d, dw2.data_ptr(), stream());
    EXPECT_TRUE(rel_close(to_vector(dw), as_doubles(ref.data(), ref.size()), tol_for(dt), std::string(dtype_name(dt))));
    EXPECT_EQ(to_vector(dw), to_vector(dw2));
  }
}

TEST(CudaRandom, DropoutMasksAndValuesEqualTheCpu) {
  VLP_REQUIRE_GPU();
  for (int64_t n : {int64_t(1), int64_t(7), int64_t(10007)})
    for (double p : {0.1, 0.5})
      for (uint64_t offset : {uint64_t(0), uint64_t(12345)}) {
        const uint64_t seed = 0x1234abcdULL;
        Input x = make_input({n}, 111, DType::F32);
        std::vector<float> ref(static_cast<size_t>(n));
        cpu::dropout<float>(x.c(), ref.data(), n, p, seed, offset);
        Tensor y = poisoned({n}), mask = poisoned({n}, DType::U8);
        cuda::dropout(cuda::EwDType::F32, x.d(), y.data_ptr(), mask.data<uint8_t>(), n, p, seed, offset, stream());
        std::vector<double> got = to_vector(y), m = to_vector(mask);
        for (int64_t i = 0; i < n; ++i) {
          ASSERT_EQ(got[size_t(i)], double(ref[size_t(i)])) << "n " << n << " p " << p << " i " << i;
          ASSERT_EQ(m[size_t(i)], ref[size_t(i)] == 0.f && x.c()[i] != 0.f ? 0.0 : 1.0) << i;
        }
        // BF16: the same mask, values rounded.
        Input xb = make_input({n}, 111, DType::BF16);
        std::vector<float> refb(static_cast<size_t>(n));
        cpu::dropout<float>(xb.c(), refb.data(), n, p, seed, offset);
        Tensor yb = poisoned({n}, DType::BF16);
        cuda::dropout(cuda::EwDType::BF16, xb.d(), yb.data_ptr(), nullptr, n, p, seed, offset, stream());
        std::vector<double> gb = to_vector(yb);
        for (int64_t i = 0; i < n; ++i) {
          ASSERT_EQ(gb[size_t(i)] == 0.0, refb[size_t(i)] == 0.f) << "bf16 mask at " << i;
          ASSERT_NEAR(gb[size_t(i)], refb[size_t(i)], 1e-2 * std::abs(refb[size_t(i)]) + 1e-6);
        }
      }
}

TEST(CudaRandom, UniformDrawsEqualTheCpu) {
  VLP_REQUIRE_GPU();
  const int64_t n = 1003;
  std::vector<float> ref(static_cast<size_t>(n));
  cpu::random_uniform<float>(ref.data(), n, 77, 5, -2.0, 3.0);
  Tensor y = poisoned({n});
  cuda::random_uniform(cuda::EwDType::F32, y.data_ptr(), n, 77, 5, -2.0, 3.0, stream());
  EXPECT_EQ(to_vector(y), as_doubles(ref.data(), ref.size()));
}

TEST(CudaOptim, MultiTensorAdamWMatchesTheCpuStepByStep) {
  VLP_REQUIRE_GPU();
  const std::vector<int64_t> sizes = {1, 37, 20011, 515};  // 20011 spans two chunks
  cpu::AdamWScalars s;
  s.lr = 1e-2, s.beta1 = 0.9, s.beta2 = 0.99, s.eps = 1e-8, s.weight_decay = 0.05;
  for (DType dt : kDtypes) {
    std::vector<Tensor> p_cpu, m_cpu, v_cpu, p_dev, m_dev, v_dev, master;
    for (size_t t = 0; t < sizes.size(); ++t) {
      Input p = make_input({sizes[t]}, 120 + t, dt);
      p_cpu.push_back(from_vector(to_vector(p.cpu), {sizes[t]}));  // a private F32 copy the CPU step updates
      m_cpu.push_back(zeros({sizes[t]}));
      v_cpu.push_back(zeros({sizes[t]}));
      p_dev.push_back(p.dev);
      m_dev.push_back(zeros({sizes[t]}, DType::F32, gpu()));
      v_dev.push_back(zeros({sizes[t]}, DType::F32, gpu()));
      master.push_back(dt == DType::BF16 ? convert(p.cpu, DType::F32, gpu()) : Tensor());
    }
    for (int step = 1; step <= 3; ++step) {
      s.bias_correction1 = 1.0 - std::pow(s.beta1, step);
      s.bias_correction2 = 1.0 - std::pow(s.beta2, step);
      std::vector<cuda::AdamWTensor> list;
      std::vector<Input> grads;
      for (size_t t = 0; t < sizes.size(); ++t) {
        grads.push_back(make_input({sizes[t]}, 1000 * step + t, dt));
        cpu::adamw_step<float>(p_cpu[t].data<float>(), grads[t].c(), m_cpu[t].data<float>(), v_cpu[t].data<float>(),
                               sizes[t], s);
        cuda::AdamWTensor a;
        a.param = p_dev[t].data_ptr(), a.grad = grads[t].d(), a.exp_avg = m_dev[t].data<float>();
        a.exp_avg_sq = v_dev[t].data<float>(), a.master = master[t].defined() ? master[t].data<float>() : nullptr;
        a.n = sizes[t];
        list.push_back(a);
      }
      cuda::adamw_multi_tensor(ew(dt), list, s, stream());
    }
    for (size_t t = 0; t < sizes.size(); ++t) {
      const std::string tag = std::string(dtype_name(dt)) + " tensor " + std::to_string(t);
      // The fp32 master (or the F32 parameter itself) follows the CPU in float; BF16 params are its rounding.
      Tensor tracked = dt == DType::BF16 ? master[t] : p_dev[t];
      EXPECT_TRUE(rel_close(tracked, p_cpu[t], 1e-5, "param " + tag));
      EXPECT_TRUE(rel_close(m_dev[t], m_cpu[t], 1e-5, "exp_avg " + tag));
      EXPECT_TRUE(rel_close(v_dev[t], v_cpu[t], 1e-5, "exp_avg_sq " + tag));
      if (dt == DType::BF16) {
        EXPECT_EQ(to_vector(p_dev[t]), to_vector(convert(convert(master[t], DType::BF16), DType::BF16, Device::cpu())));
      }
    }
  }
}

TEST(CudaOptim, GlobalSumOfSquaresIsExactEnoughAndDeterministic) {
  VLP_REQUIRE_GPU();
  const std::vector<int64_t> sizes = {3, 50001, 777};
  for (DType dt : kDtypes) {
    std::vector<Input> xs;
    std::vector<const void*> ptrs;
    double ref = 0;
    for (size_t t = 0; t < sizes.size(); ++t) {
      xs.push_back(make_input({sizes[t]}, 130 + t, dt));
      ptrs.push_back(xs.back().d());
      ref += cpu::sum_of_squares<float>(xs.back().c(), sizes[t]);
    }
    const double got = cuda::sum_of_squares_multi(ew(dt), ptrs, sizes, stream());
    EXPECT_NEAR(got, ref, 1e-5 * ref) << dtype_name(dt);
    EXPECT_EQ(cuda::sum_of_squares_multi(ew(dt), ptrs, sizes, stream()), got);
  }
}

// The LoRA path: y = x W^T + scale * B (A dropout(x)) with the fused down-projection and the
// up-projection accumulated into the base output, against CPU dropout and GEMMs.
TEST(CudaLora, FusedDownProjectionAndAccumulatedUpProjection) {
  VLP_REQUIRE_GPU();
  const int64_t m = 37, k = 75, n = 41;
  for (int64_t rank : {int64_t(8), int64_t(16), int64_t(40)})
    for (double p : {0.0, 0.1})
      for (DType dt : kDtypes) {
        const std::string tag = std::string(dtype_name(dt)) + " rank " + std::to_string(rank) + " p " + std::to_string(p);
        Input x = make_input({m, k}, 141, dt), w = make_input({n, k}, 142, dt);
        Input a = make_input({rank, k}, 143, dt), b = make_input({n, rank}, 144, dt);
        const double lora_scale = 2.0;
        // CPU: xd = dropout(x); h = xd A^T; y = x W^T + scale h B^T.
        std::vector<float> xd(static_cast<size_t>(m * k)), h_ref(static_cast<size_t>(m * rank), 0.f);
        std::vector<float> y_ref(static_cast<size_t>(m * n), 0.f);
        if (p > 0) cpu::dropout<float>(x.c(), xd.data(), m * k, p, 99, 3);
        else xd.assign(x.c(), x.c() + m * k);
        cpu::gemm<float>(false, true, m, rank, k, 1.0, xd.data(), k, a.c(), k, 0.0, h_ref.data(), rank);
        Tensor h = poisoned({m, rank}, dt);
        cuda::lora_down_dropout(ew(dt), x.d(), k, a.d(), h.data_ptr(), m, k, rank, p, 99, 3, stream());
        EXPECT_TRUE(rel_close(to_vector(h), as_doubles(h_ref.data(), h_ref.size()), tol_for(dt), "h " + tag));
        Tensor h_cpu = convert(h, DType::F32, Device::cpu());  // the up-projection sees h as stored
        cpu::gemm<float>(false, true, m, n, k, 1.0, x.c(), k, w.c(), k, 0.0, y_ref.data(), n);
        cpu::gemm<float>(false, true, m, n, rank, lora_scale, h_cpu.data<float>(), rank, b.c(), rank, 1.0,
                         y_ref.data(), n);
        Tensor y = poisoned({m, n}, dt);
        cuda::GemmArgs base;
        base.trans_b = true, base.m = m, base.n = n, base.k = k;
        base.ab_dtype = base.c_dtype = dt == DType::BF16 ? cuda::GemmDType::BF16 : cuda::GemmDType::F32;
        base.a = x.d(), base.lda = k, base.b = w.d(), base.ldb = k, base.c = y.data_ptr(), base.ldc = n;
        cuda::gemm(base);
        cuda::GemmArgs up = base;
        up.k = rank, up.a = h.data_ptr(), up.lda = rank, up.b = b.d(), up.ldb = rank;
        up.alpha = float(lora_scale), up.beta = 1.f;
        cuda::gemm(up);
        EXPECT_TRUE(rel_close(to_vector(y), as_doubles(y_ref.data(), y_ref.size()), tol_for(dt), "y " + tag));
      }
  EXPECT_THROW(cuda::lora_down_dropout(cuda::EwDType::F32, nullptr, 1, nullptr, nullptr, 1, 1, 65, 0.0, 0, 0, stream()),
               std::runtime_error);
}

TEST(CudaIndex, MaxDimArgmaxAndItsScatter) {
  VLP_REQUIRE_GPU();
  struct S { int64_t outer, n, inner; };
  for (DType dt : kDtypes)
    for (S s : {S{7, 33, 1}, S{3, 17, 11}}) {
      const std::string tag = std::string(dtype_name(dt)) + " inner " + std::to_string(s.inner);
      Input x = make_input({s.outer * s.n * s.inner}, 151, dt, -3, 3);
      std::vector<float> y_ref(static_cast<size_t>(s.outer * s.inner));
      std::vector<int64_t> idx_ref(static_cast<size_t>(s.outer * s.inner));
      cpu::max_dim<float>(x.c(), y_ref.data(), idx_ref.data(), s.outer, s.n, s.inner);
      Tensor y = poisoned({s.outer * s.inner}, dt), idx = poisoned({s.outer * s.inner}, DType::I64);
      cuda::max_dim(ew(dt), x.d(), y.data_ptr(), idx.data<int64_t>(), s.outer, s.n, s.inner, stream());
      EXPECT_EQ(to_vector(y), as_doubles(y_ref.data(), y_ref.size())) << tag;
      EXPECT_EQ(to_vector(idx), as_doubles(idx_ref.data(), idx_ref.size())) << tag;
      Input g = make_input({s.outer * s.inner}, 152, dt);
      std::vector<float> dx_ref(static_cast<size_t>(s.outer * s.n * s.inner), 0.f);
      cpu::scatter_dim<float>(g.c(), idx_ref.data(), dx_ref.data(), s.outer, s.n, s.inner);
      Tensor dx = zeros({s.outer * s.n * s.inner}, dt, gpu());
      cuda::scatter_dim(ew(dt), g.d(), idx.data<int64_t>(), dx.data_ptr(), s.outer, s.n, s.inner, stream());
      EXPECT_EQ(to_vector(dx), as_doubles(dx_ref.data(), dx_ref.size())) << tag;
    }
}

TEST(CudaIndex, IndexSelectAndDeterministicIndexAdd) {
  VLP_REQUIRE_GPU();
  const int64_t outer = 3, n = 11, m = 19, inner = 7;
  std::vector<int64_t> index(static_cast<size_t>(m));
  for (int64_t r = 0; r < m; ++r) index[size_t(r)] = (r * 5 + 2) % 7;  // rows 0..6 of 11, repeated
  Tensor index_dev = upload_i64(index);
  for (DType dt : {DType::F32, DType::BF16, DType::I64, DType::U8}) {
    Tensor x_cpu = convert(make_input({outer * n * inner}, 161, DType::F32, 0, 100).cpu, dt);
    Tensor x_dev = convert(x_cpu, dt, gpu());
    Tensor out = poisoned({outer * m * inner}, dt);
    cuda::index_select(int(dtype_size(dt)), x_dev.data_ptr(), index_dev.data<int64_t>(), out.data_ptr(), outer, n, m,
                       inner, stream());
    std::vector<double> got = to_vector(out), xv = to_vector(x_cpu);
    for (int64_t o = 0; o < outer; ++o)
      for (int64_t r = 0; r < m; ++r)
        for (int64_t i = 0; i < inner; ++i)
          ASSERT_EQ(got[size_t((o * m + r) * inner + i)], xv[size_t((o * n + index[size_t(r)]) * inner + i)]) << dt;
  }
  for (DType dt : kDtypes) {
    Input g = make_input({outer * m * inner}, 162, dt), base = make_input({outer * n * inner}, 163, dt);
    std::vector<float> ref(base.c(), base.c() + outer * n * inner);
    cpu::index_add<float>(g.c(), index.data(), ref.data(), outer, n, m, inner);
    Tensor dx = convert(convert(base.cpu, dt), dt, gpu()), dx2 = convert(convert(base.cpu, dt), dt, gpu());
    cuda::index_add(ew(dt), g.d(), index_dev.data<int64_t>(), dx.data_ptr(), outer, n, m, inner, stream());
    cuda::index_add(ew(dt), g.d(), index_dev.data<int64_t>(), dx2.data_ptr(), outer, n, m, inner, stream());
    EXPECT_TRUE(rel_close(to_vector(dx), as_doubles(ref.data(), ref.size()), tol_for(dt), std::string(dtype_name(dt))));
    EXPECT_EQ(to_vector(dx), to_vector(dx2));
  }
}

}  // namespace
}  // namespace vlp
#endif  // VLP_HAVE_CUDA
