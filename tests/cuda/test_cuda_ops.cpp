// CUDA elementwise, reduction, softmax, cross-entropy and normalisation kernels against the CPU kernels on
// odd sizes, in F32 (relative error 1e-5) and BF16 (1e-2), outputs poisoned with NaN beforehand.
#ifdef VLP_HAVE_CUDA
#include <gtest/gtest.h>

#include <cmath>

#include "autograd/ops.h"
#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/loss.h"
#include "kernels/cpu/norm.h"
#include "kernels/cpu/reduce.h"
#include "kernels/cpu/softmax.h"
#include "kernels/cuda/nn.h"
#include "tests/cuda/cuda_test_util.h"

namespace vlp {
namespace {

using namespace cudatest;
using cpu::Binary;
using cpu::Unary;

const DType kDtypes[] = {DType::F32, DType::BF16};

struct UnaryCase {
  Unary op;
  const char* name;
  double lo, hi, a, b;
};

const UnaryCase kUnary[] = {
    {Unary::Neg, "neg", -2, 2, 0, 0},          {Unary::Exp, "exp", -2, 2, 0, 0},
    {Unary::Log, "log", 0.1, 3, 0, 0},         {Unary::Sqrt, "sqrt", 0.1, 3, 0, 0},
    {Unary::Rsqrt, "rsqrt", 0.1, 3, 0, 0},     {Unary::Abs, "abs", -2, 2, 0, 0},
    {Unary::Tanh, "tanh", -2, 2, 0, 0},        {Unary::Sigmoid, "sigmoid", -4, 4, 0, 0},
    {Unary::Relu, "relu", -2, 2, 0, 0},        {Unary::Gelu, "gelu", -3, 3, 0, 0},
    {Unary::GeluTanh, "gelu_tanh", -3, 3, 0, 0}, {Unary::QuickGelu, "quick_gelu", -3, 3, 0, 0},
    {Unary::Silu, "silu", -3, 3, 0, 0},        {Unary::Pow, "pow", 0.1, 2, 2.5, 0},
    {Unary::Clamp, "clamp", -2, 2, -0.5, 0.75}, {Unary::AddScalar, "add_scalar", -2, 2, 0.3, 0},
    {Unary::MulScalar, "mul_scalar", -2, 2, -1.7, 0}, {Unary::RSubScalar, "rsub_scalar", -2, 2, 0.9, 0},
};

TEST(CudaElementwise, EveryUnaryOpForwardAndBackward) {
  VLP_REQUIRE_GPU();
  for (int64_t n : {int64_t(1031), int64_t(4099)})  // odd: the vector path plus a scalar tail
    for (DType dt : kDtypes)
      for (const UnaryCase& u : kUnary) {
        const std::string tag = std::string(u.name) + " " + std::string(dtype_name(dt)) + " n " + std::to_string(n);
        Input x = make_input({n}, 31, dt, u.lo, u.hi), dy = make_input({n}, 32, dt);
        std::vector<float> y_ref(static_cast<size_t>(n)), dx_ref(static_cast<size_t>(n));
        cpu::unary_forward<float>(u.op, x.c(), y_ref.data(), n, u.a, u.b);
        Tensor y = poisoned({n}, dt);
        cuda::unary_forward(ew(dt), u.op, x.d(), y.data_ptr(), n, u.a, u.b, stream());
        EXPECT_TRUE(rel_close(to_vector(y), as_doubles(y_ref.data(), y_ref.size()), tol_for(dt), "forward " + tag));
        // Backward from what the op saves: its output y as the GPU computed it (rounded), or x.
        const bool from_y = cpu::unary_saves_output(u.op);
        Tensor y_cpu = convert(y, DType::F32, Device::cpu());
        cpu::unary_backward<float>(u.op, from_y ? nullptr : x.c(), from_y ? y_cpu.data<float>() : nullptr, dy.c(),
                                   dx_ref.data(), n, u.a, u.b);
        Tensor dx = poisoned({n}, dt);
        cuda::unary_backward(ew(dt), u.op, from_y ? nullptr : x.d(), from_y ? y.data_ptr() : nullptr, dy.d(),
                             dx.data_ptr(), n, u.a, u.b, stream());
        EXPECT_TRUE(rel_close(to_vector(dx), as_doubles(dx_ref.data(), dx_ref.size()), tol_for(dt), "backward " + tag));
      }
}

// clamp propagates NaN like the CPU's std::min(std::max(x, lo), hi) (and PyTorch); fminf/fmaxf would not.
TEST(CudaElementwise, ClampKeepsNaN) {
  VLP_REQUIRE_GPU();
  for (DType dt : kDtypes) {
    const std::vector<double> v = {std::nan(""), -3.0, 0.25, 4.0, std::nan("")};
    Tensor x = from_vector(v, {5}, dt, gpu());
    Tensor y = full({5}, 7.0, dt, gpu());  // not NaN-poisoned: a NaN must come from the kernel
    cuda::unary_forward(ew(dt), Unary::Clamp, x.data_ptr(), y.data_ptr(), 5, -0.5, 0.75, stream());
    const std::vector<double> got = to_vector(y);
    EXPECT_TRUE(std::isnan(got[0]) && std::isnan(got[4])) << dtype_name(dt);
    EXPECT_EQ(got[1], -0.5);
    EXPECT_EQ(got[2], 0.25);
    EXPECT_EQ(got[3], 0.75);
  }
}

TEST(CudaElementwise, BinaryOpsBroadcastStridedAndInPlace) {
  VLP_REQUIRE_GPU();
  const Shape out_shape = {5, 3, 7};
  for (DType dt : kDtypes)
    for (Binary op : {Binary::Add, Binary::Sub, Binary::Mul, Binary::Div, Binary::Axpy}) {
      const std::string tag = std::string(dtype_name(dt)) + " op " + std::to_string(int(op));
      Input a = make_input({5, 1, 7}, 41, dt);               // broadcast along dim 1
      Input b = make_input({7, 3}, 42, dt, 0.5, 2.0);        // used transposed: a permuted view [3, 7]
      const Shape as = {7, 0, 1}, bs = {0, 1, 3};
      Tensor out = poisoned(out_shape, dt);
      const Shape os = out.strides();
      std::vector<float> ref(static_cast<size_t>(shape_numel(out_shape)));
      cpu::binary<float>(op, out_shape, ref.data(), os.data(), a.c(), as.data(), b.c(), bs.data(), 0.7);
      cuda::binary(ew(dt), op, out_shape, out.data_ptr(), os.data(), a.d(), as.data(), b.d(), bs.data(), 0.7, stream());
      EXPECT_TRUE(rel_close(to_vector(out), as_doubles(ref.data(), ref.size()), tol_for(dt), "broadcast " + tag));

      // Contiguous, same shape, written in place over a (the vectorised path), odd length.
      const int64_t n = 2053;
      Input x = make_input({n}, 43, dt), y = make_input({n}, 44, dt, 0.5, 2.0);
      const Shape s1 = {1};
      std::vector<float> ref2(static_cast<size_t>(n));
      cpu::binary<float>(op, {n}, ref2.data(), s1.data(), x.c(), s1.data(), y.c(), s1.data(), 0.7);
      cuda::binary(ew(dt), op, {n}, x.d(), s1.data(), x.d(), s1.data(), y.d(), s1.data(), 0.7, stream());
      EXPECT_TRUE(rel_close(to_vector(x.dev), as_doubles(ref2.data(), ref2.size()), tol_for(dt), "in place " + tag));
    }
}

// Contiguous views that start one element into their storage (4- or 2-byte aligned): the 16-byte vector
// path must step aside for every operand, including when only the output or only one input is misaligned.
TEST(CudaElementwise, MisalignedContiguousViews) {
  VLP_REQUIRE_GPU();
  const int64_t n = 1037;
  for (DType dt : kDtypes) {
    const std::string tag(dtype_name(dt));
    const int64_t es = int64_t(dtype_size(dt));
    Input x = make_input({n + 1}, 45, dt), y = make_input({n + 1}, 46, dt, 0.5, 2.0);
    for (int shift_out : {0, 1})
      for (int shift_in : {0, 1}) {
        if (shift_out == 0 && shift_in == 0) continue;
        const char* xs = static_cast<const char*>(x.d()) + shift_in * es;
        Tensor out = poisoned({n + 1}, dt);
        char* os = static_cast<char*>(out.data_ptr()) + shift_out * es;
        std::vector<float> ref(static_cast<size_t>(n));
        cpu::unary_forward<float>(Unary::Tanh, x.c() + shift_in, ref.data(), n, 0, 0);
        cuda::unary_forward(ew(dt), Unary::Tanh, xs, os, n, 0, 0, stream());
        std::vector<double> got = to_vector(out);
        got.erase(got.begin() + (shift_out ? 0 : n), got.begin() + (shift_out ? 1 : n + 1));
        EXPECT_TRUE(rel_close(got, as_doubles(ref.data(), ref.size()), tol_for(dt), "tanh " + tag));
        const Shape s1 = {1};
        std::vector<float> ref2(static_cast<size_t>(n));
        cpu::binary<float>(Binary::Mul, {n}, ref2.data(), s1.data(), x.c() + shift_in, s1.data(), y.c(), s1.data(),
                           1.0);
        Tensor out2 = poisoned({n + 1}, dt);
        char* os2 = static_cast<char*>(out2.data_ptr()) + shift_out * es;
        cuda::binary(ew(dt), Binary::Mul, {n}, os2, s1.data(), xs, s1.data(), y.d(), s1.data(), 1.0, stream());
        std::vector<double> got2 = to_vector(out2);
        got2.erase(got2.begin() + (shift_out ? 0 : n), got2.begin() + (shift_out ? 1 : n + 1));
        EXPECT_TRUE(rel_close(got2, as_doubles(ref2.data(), ref2.size()), tol_for(dt), "mul " + tag));
      }
  }
}

// More rows than the row kernels' grid (65535 * 4 blocks): each block handles several rows in turn, reusing
// its block-reduction shared memory from one row to the next.
TEST(CudaSoftmax, RowKernelsLoopOverMoreRowsThanBlocks) {
  VLP_REQUIRE_GPU();
  const int64_t rows = 65535 * 4 + 1001, d = 3;
  Input x = make_input({rows * d}, 63, DType::F32, -4, 4);
  std::vector<float> ref(static_cast<size_t>(rows * d));
  cpu::softmax_forward<float>(x.c(), ref.data(), rows, d, 1, false);
  Tensor y = poisoned({rows * d});
  cuda::softmax_forward(cuda::EwDType::F32, x.d(), y.data_ptr(), rows, d, 1, false, stream());
  EXPECT_TRUE(rel_close(to_vector(y), as_doubles(ref.data(), ref.size()), 1e-5, "softmax"));
  std::vector<float> ln_ref(static_cast<size_t>(rows * d));
  std::vector<double> mean_ref(static_cast<size_t>(rows)), rstd_ref(static_cast<size_t>(rows));
  cpu::layer_norm_forward<float>(x.c(), nullptr, nullptr, ln_ref.data(), mean_ref.data(), rstd_ref.data(), rows, d,
                                 1e-5);
  Tensor ln = poisoned({rows * d}), mean = gpu_f32(rows), rstd = gpu_f32(rows);
  cuda::layer_norm_forward(cuda::EwDType::F32, x.d(), nullptr, nullptr, nullptr, ln.data_ptr(), nullptr,
                           mean.data<float>(), rstd.data<float>(), rows, d, 1e-5, stream());
  EXPECT_TRUE(rel_close(to_vector(ln), as_doubles(ln_ref.data(), ln_ref.size()), 1e-4, "layer_norm"));
  EXPECT_TRUE(rel_close(to_vector(rstd), rstd_ref, 1e-4, "rstd"));
  std::vector<int64_t> target(static_cast<size_t>(rows));
  for (int64_t i = 0; i < rows; ++i) target[size_t(i)] = i % d;
  std::vector<double> loss_ref(static_cast<size_t>(rows)), lse_ref(static_cast<size_t>(rows));
  cpu::cross_entropy_forward<float>(x.c(), target.data(), nullptr, rows, d, -100, 0.1, loss_ref.data(),
                                    lse_ref.data(), nullptr);
  Tensor loss = gpu_f32(rows), lse = gpu_f32(rows), tgt_dev = upload_i64(target);
  cuda::cross_entropy_forward(cuda::EwDType::F32, x.d(), tgt_dev.data<int64_t>(), nullptr, rows, d, -100,
                              0.1, loss.data<float>(), lse.data<float>(), nullptr, stream());
  EXPECT_TRUE(rel_close(to_vector(loss), loss_ref, 1e-5, "cross_entropy"));
}

TEST(CudaReduce, SumAlongEveryPosition) {
  VLP_REQUIRE_GPU();
  struct S { int64_t outer, n, inner; };
  for (DType dt : kDtypes)
    for (S s : {S{13, 257, 1}, S{1, 1000, 1}, S{7, 33, 5}, S{3, 9, 131}}) {
      Input x = make_input({s.outer, s.n, s.inner}, 51, dt);
      std::vector<float> ref(static_cast<size_t>(s.outer * s.inner));
      cpu::sum_dim<float>(x.c(), ref.data(), s.outer, s.n, s.inner);
      Tensor y = poisoned({s.outer, s.inner}, dt);
      cuda::sum_dim(ew(dt), x.d(), y.data_ptr(), s.outer, s.n, s.inner, stream());
      EXPECT_TRUE(rel_close(to_vector(y), as_doubles(ref.data(), ref.size()), tol_for(dt),
                            "sum " + std::to_string(s.outer) + "x" + std::to_string(s.n) + "x" + std::to_string(s.inner)));
    }
}

TEST(CudaSoftmax, ForwardAndBackwardBothLayoutsBothKinds) {
  VLP_REQUIRE_GPU();
  struct S { int64_t outer, n, inner; };
  for (DType dt : kDtypes)
    for (bool log : {false, true})
      for (S s : {S{11, 517, 1}, S{3, 2049, 1}, S{5, 37, 9}}) {
        const std::string tag = std::string(log ? "log_softmax " : "softmax ") + std::string(dtype_name(dt)) + " n " +
                                std::to_string(s.n) + " inner " + std::to_string(s.inner);
        const int64_t total = s.outer * s.n * s.inner;
        Input x = make_input({total}, 61, dt, -4, 4), dy = make_input({total}, 62, dt);
        std::vector<float> y_ref(static_cast<size_t>(total)), dx_ref(static_cast<size_t>(total));
        cpu::softmax_forward<float>(x.c(), y_ref.data(), s.outer, s.n, s.inner, log);
        Tensor y = poisoned({total}, dt);
        cuda::softmax_forward(ew(dt), x.d(), y.data_ptr(), s.outer, s.n, s.inner, log, stream());
        EXPECT_TRUE(rel_close(to_vector(y), as_doubles(y_ref.data(), y_ref.size()), tol_for(dt), "forward " + tag));
        Tensor y_cpu = convert(y, DType::F32, Device::cpu());
        cpu::softmax_backward<float>(y_cpu.data<float>(), dy.c(), dx_ref.data(), s.outer, s.n, s.inner, log);
        Tensor dx = poisoned({total}, dt);
        cuda::softmax_backward(ew(dt), y.data_ptr(), dy.d(), dx.data_ptr(), s.outer, s.n, s.inner, log, stream());
        EXPECT_TRUE(rel_close(to_vector(dx), as_doubles(dx_ref.data(), dx_ref.size()), tol_for(dt),
                              "backward " + tag));
      }
}

TEST(CudaLoss, CrossEntropyForwardBackwardAndFused) {
  VLP_REQUIRE_GPU();
  const int64_t n = 13, c = 1001, ignore = -100;
  std::vector<int64_t> target(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) target[size_t(i)] = (i * 389 + 7) % c;
  target[3] = ignore;
  target[8] = ignore;
  Tensor tgt_dev = upload_i64(target);
  for (DType dt : kDtypes)
    for (double eps : {0.0, 0.1})
      for (bool weighted : {false, true}) {
        const std::string tag = std::string(dtype_name(dt)) + " eps " + std::to_string(eps) + (weighted ? " weighted" : "");
        Input logits = make_input({n, c}, 71, dt, -5, 5), w = make_input({n}, 72, dt, 0.5, 1.5);
        std::vector<double> loss_ref(static_cast<size_t>(n)), lse_ref(static_cast<size_t>(n)), raw_ref(static_cast<size_t>(n));
        cpu::cross_entropy_forward<float>(logits.c(), target.data(), weighted ? w.c() : nullptr, n, c, ignore, eps,
                                          loss_ref.data(), lse_ref.data(), raw_ref.data());
        Tensor loss = gpu_f32(n), lse = gpu_f32(n), raw = gpu_f32(n);
        cuda::cross_entropy_forward(ew(dt), logits.d(), tgt_dev.data<int64_t>(), weighted ? w.d() : nullptr, n, c,
                                    ignore, eps, loss.data<float>(), lse.data<float>(), raw.data<float>(), stream());
        EXPECT_TRUE(rel_close(to_vector(loss), loss_ref, 1e-5, "loss " + tag));
        EXPECT_TRUE(rel_close(to_vector(lse), lse_ref, 1e-5, "lse " + tag));
        EXPECT_TRUE(rel_close(to_vector(raw), raw_ref, 1e-5, "raw loss " + tag));

        // Backward with a per-row dloss (stride 1) and a scale, with the sample weight's gradient from the
        // unweighted row losses (the GPU's, as the op saves them).
        Input dloss = make_input({n}, 73, DType::F32);
        std::vector<float> dlogits_ref(static_cast<size_t>(n * c)), dweight_ref(static_cast<size_t>(n));
        std::vector<double> raw_gpu = to_vector(raw);
        cpu::cross_entropy_backward<float>(logits.c(), target.data(), weighted ? w.c() : nullptr, lse_ref.data(),
                                           raw_gpu.data(), dloss.c(), 1, 0.5, n, c, ignore, eps, dlogits_ref.data(),
                                           dweight_ref.data());
        Tensor dlogits = poisoned({n, c}, dt), dweight = poisoned({n}, dt);
        cuda::cross_entropy_backward(ew(dt), logits.d(), tgt_dev.data<int64_t>(), weighted ? w.d() : nullptr,
                                     lse.data<float>(), raw.data<float>(), dloss.dev.data<float>(), 1, 0.5, n, c,
                                     ignore, eps, dlogits.data_ptr(), dweight.data_ptr(), stream());
        EXPECT_TRUE(rel_close(to_vector(dlogits), as_doubles(dlogits_ref.data(), dlogits_ref.size()), tol_for(dt),
                              "dlogits " + tag));
        EXPECT_TRUE(rel_close(to_vector(dweight), as_doubles(dweight_ref.data(), dweight_ref.size()), tol_for(dt),
                              "dweight " + tag));
        // The sample weight's gradient alone (no logits, no lse: a frozen-logits graph).
        Tensor dweight_only = poisoned({n}, dt);
        cuda::cross_entropy_backward(ew(dt), nullptr, tgt_dev.data<int64_t>(), weighted ? w.d() : nullptr, nullptr,
                                     raw.data<float>(), dloss.dev.data<float>(), 1, 0.5, n, c, ignore, eps, nullptr,
                                     dweight_only.data_ptr(), stream());
        EXPECT_TRUE(rel_close(to_vector(dweight_only), as_doubles(dweight_ref.data(), dweight_ref.size()),
                              tol_for(dt), "dweight alone " + tag));

        // Fused: loss and lse, and the logits overwritten by dlogits for a constant gradient 1/11 per row.
        const double scale = 1.0 / 11.0;
        Tensor ones_dloss = from_vector(std::vector<double>(size_t(n), 1.0), {n});
        std::vector<float> fused_ref(static_cast<size_t>(n * c));
        cpu::cross_entropy_backward<float>(logits.c(), target.data(), weighted ? w.c() : nullptr, lse_ref.data(),
                                           nullptr, ones_dloss.data<float>(), 1, scale, n, c, ignore, eps,
                                           fused_ref.data(), nullptr);
        Tensor work = convert(convert(logits.cpu, dt), dt, gpu());
        Tensor loss2 = gpu_f32(n), lse2 = gpu_f32(n);
        cuda::cross_entropy_fused(ew(dt), work.data_ptr(), tgt_dev.data<int64_t>(), weighted ? w.d() : nullptr, n, c,
                                  ignore, eps, scale, loss2.data<float>(), lse2.data<float>(), stream());
        EXPECT_TRUE(rel_close(to_vector(loss2), loss_ref, 1e-5, "fused loss " + tag));
        EXPECT_TRUE(rel_close(to_vector(work), as_doubles(fused_ref.data(), fused_ref.size()), tol_for(dt),
                              "fused dlogits " + tag));
      }
}

// A masked class (logit -inf) without label smoothing: the CPU loss is finite (the row mean of the logits,
// -inf, only enters with smoothing), and so must the GPU's be: 0 * inf would make it NaN.
TEST(CudaLoss, CrossEntropyWithAMaskedClassAndNoSmoothingStaysFinite) {
  VLP_REQUIRE_GPU();
  const int64_t n = 5, c = 37, ignore = -100;
  std::vector<int64_t> target = {3, 0, 36, 17, 9};
  Tensor tgt_dev = upload_i64(target);
  for (DType dt : kDtypes) {
    Input logits = make_input({n, c}, 74, dt, -3, 3);
    float* lc = logits.cpu.data<float>();
    for (int64_t i = 0; i < n; ++i) lc[i * c + (target[size_t(i)] + 1) % c] = -INFINITY;
    logits.dev = convert(logits.cpu, dt, gpu());
    std::vector<double> loss_ref(static_cast<size_t>(n)), lse_ref(static_cast<size_t>(n));
    cpu::cross_entropy_forward<float>(logits.c(), target.data(), nullptr, n, c, ignore, 0.0, loss_ref.data(),
                                      lse_ref.data(), nullptr);
    for (double v : loss_ref) ASSERT_TRUE(std::isfinite(v));
    Tensor loss = gpu_f32(n), lse = gpu_f32(n);
    cuda::cross_entropy_forward(ew(dt), logits.d(), tgt_dev.data<int64_t>(), nullptr, n, c, ignore, 0.0,
                                loss.data<float>(), lse.data<float>(), nullptr, stream());
    EXPECT_TRUE(rel_close(to_vector(loss), loss_ref, 1e-5, "loss " + std::string(dtype_name(dt))));
    Tensor work = convert(logits.cpu, dt, gpu());
    Tensor loss2 = gpu_f32(n), lse2 = gpu_f32(n);
    cuda::cross_entropy_fused(ew(dt), work.data_ptr(), tgt_dev.data<int64_t>(), nullptr, n, c, ignore, 0.0, 1.0,
                              loss2.data<float>(), lse2.data<float>(), stream());
    EXPECT_TRUE(rel_close(to_vector(loss2), loss_ref, 1e-5, "fused loss " + std::string(dtype_name(dt))));
    for (double v : to_vector(work)) EXPECT_TRUE(std::isfinite(v)) << dtype_name(dt);
  }
}

TEST(CudaNorm, LayerNormWithResidualForwardBackward) {
  VLP_REQUIRE_GPU();
  const int64_t rows = 37;
  for (int64_t d : {int64_t(769), int64_t(33)})
    for (DType dt : kDtypes)
      for (bool affine : {true, false})
        for (bool with_residual : {false, true}) {
          const std::string tag = std::string(dtype_name(dt)) + " d " + std::to_string(d) + (affine ? " affine" : "") +
                                  (with_residual ? " residual" : "");
          Input x = make_input({rows, d}, 81, dt, -3, 5), res = make_input({rows, d}, 82, dt);
          Input gamma = make_input({d}, 83, dt, 0.5, 1.5), beta = make_input({d}, 84, dt);
          // CPU reference on h = x + residual rounded to dt, as the GPU kernel normalises.
          Tensor h_cpu = with_residual ? convert(convert(add(x.cpu, res.cpu), dt), DType::F32) : x.cpu;
          std::vector<float> y_ref(static_cast<size_t>(rows * d));
          std::vector<double> mean_ref(static_cast<size_t>(rows)), rstd_ref(static_cast<size_t>(rows));
          cpu::layer_norm_forward<float>(h_cpu.data<float>(), affine ? gamma.c() : nullptr, affine ? beta.c() : nullptr,
                                         y_ref.data(), mean_ref.data(), rstd_ref.data(), rows, d, 1e-5);
          Tensor y = poisoned({rows, d}, dt), h = poisoned({rows, d}, dt), mean = gpu_f32(rows), rstd = gpu_f32(rows);
          cuda::layer_norm_forward(ew(dt), x.d(), with_residual ? res.d() : nullptr, affine ? gamma.d() : nullptr,
                                   affine ? beta.d() : nullptr, y.data_ptr(), h.data_ptr(), mean.data<float>(),
                                   rstd.data<float>(), rows, d, 1e-5, stream());
          EXPECT_TRUE(rel_close(to_vector(y), as_doubles(y_ref.data(), y_ref.size()), tol_for(dt), "y " + tag));
          EXPECT_TRUE(rel_close(h, h_cpu, 0.0, "h " + tag));
          EXPECT_TRUE(rel_close(to_vector(mean), mean_ref, 1e-5, "mean " + tag));
          EXPECT_TRUE(rel_close(to_vector(rstd), rstd_ref, 1e-5, "rstd " + tag));

          Input dy = make_input({rows, d}, 85, dt);
          std::vector<float> dx_ref(static_cast<size_t>(rows * d)), dg_ref(static_cast<size_t>(d)), db_ref(static_cast<size_t>(d));
          cpu::layer_norm_backward<float>(h_cpu.data<float>(), mean_ref.data(), rstd_ref.data(),
                                          affine ? gamma.c() : nullptr, dy.c(), dx_ref.data(), dg_ref.data(),
                                          db_ref.data(), rows, d);
          Tensor dx = poisoned({rows, d}, dt), dg = poisoned({d}, dt), db = poisoned({d}, dt);
          cuda::layer_norm_backward(ew(dt), h.data_ptr(), mean.data<float>(), rstd.data<float>(),
                                    affine ? gamma.d() : nullptr, dy.d(), dx.data_ptr(), dg.data_ptr(), db.data_ptr(),
                                    rows, d, stream());
          EXPECT_TRUE(rel_close(to_vector(dx), as_doubles(dx_ref.data(), dx_ref.size()), tol_for(dt), "dx " + tag));
          EXPECT_TRUE(rel_close(to_vector(dg), as_doubles(dg_ref.data(), dg_ref.size()), tol_for(dt), "dgamma " + tag));
          EXPECT_TRUE(rel_close(to_vector(db), as_doubles(db_ref.data(), db_ref.size()), tol_for(dt), "dbeta " + tag));
          // Deterministic: a second backward gives the same bits.
          Tensor dg2 = poisoned({d}, dt);
          cuda::layer_norm_backward(ew(dt), h.data_ptr(), mean.data<float>(), rstd.data<float>(),
                                    affine ? gamma.d() : nullptr, dy.d(), nullptr, dg2.data_ptr(), nullptr, rows, d,
                                    stream());
          EXPECT_EQ(to_vector(dg2), to_vector(dg)) << tag;
        }
}

TEST(CudaNorm, RmsNormForwardBackward) {
  VLP_REQUIRE_GPU();
  const int64_t rows = 29;
  for (int64_t d : {int64_t(515), int64_t(63)})
    for (DType dt : kDtypes)
      for (bool with_weight : {true, false}) {
        const std::string tag = std::string(dtype_name(dt)) + " d " + std::to_string(d) + (with_weight ? " weight" : "");
        Input x = make_input({rows, d}, 91, dt, -2, 2), w = make_input({d}, 92, dt, 0.5, 1.5);
        std::vector<float> y_ref(static_cast<size_t>(rows * d));
        std::vector<double> rstd_ref(static_cast<size_t>(rows));
        cpu::rms_norm_forward<float>(x.c(), with_weight ? w.c() : nullptr, y_ref.data(), rstd_ref.data(), rows, d, 1e-6);
        Tensor y = poisoned({rows, d}, dt), rstd = gpu_f32(rows);
        cuda::rms_norm_forward(ew(dt), x.d(), with_weight ? w.d() : nullptr, y.data_ptr(), rstd.data<float>(), rows, d,
                               1e-6, stream());
        EXPECT_TRUE(rel_close(to_vector(y), as_doubles(y_ref.data(), y_ref.size()), tol_for(dt), "y " + tag));
        EXPECT_TRUE(rel_close(to_vector(rstd), rstd_ref, 1e-5, "rstd " + tag));
        Input dy = make_input({rows, d}, 93, dt);
        std::vector<float> dx_ref(static_cast<size_t>(rows * d)), dw_ref(static_cast<size_t>(d));
        cpu::rms_norm_backward<float>(x.c(), rstd_ref.data(), with_weight ? w.c() : nullptr, dy.c(), dx_ref.data(),
                                      dw_ref.data(), rows, d);
        Tensor dx = poisoned({rows, d}, dt), dw = poisoned({d}, dt);
        cuda::rms_norm_backward(ew(dt), x.d(), rstd.data<float>(), with_weight ? w.d() : nullptr, dy.d(), dx.data_ptr(),
                                dw.data_ptr(), rows, d, stream());
        EXPECT_TRUE(rel_close(to_vector(dx), as_doubles(dx_ref.data(), dx_ref.size()), tol_for(dt), "dx " + tag));
        EXPECT_TRUE(rel_close(to_vector(dw), as_doubles(dw_ref.data(), dw_ref.size()), tol_for(dt), "dweight " + tag));
      }
}

}  // namespace
}  // namespace vlp
#endif  // VLP_HAVE_CUDA
