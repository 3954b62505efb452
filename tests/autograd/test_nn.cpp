// NN ops: softmax / log_softmax, layer_norm, rms_norm, embedding, dropout. Values against references
// computed here with plain double loops and a few hand-checked numbers; gradchecks on non-contiguous
// inputs (permuted, sliced, transposed, strided parameters); what each op saves for backward.
#include <omp.h>

#include <cmath>
#include <cstring>

#include "common/test_util.h"

namespace vlp {
namespace {

using test::all_close;
using test::rand_input;
using test::values_are;

using ::vlp::test::error_of;

// Softmax (or log-softmax) of row-major values of `shape` along dim, in double.
std::vector<double> softmax_reference(const std::vector<double>& x, const Shape& shape, int64_t dim, bool log) {
  int64_t outer = 1, n = shape[size_t(dim)], inner = 1;
  for (int64_t d = 0; d < dim; ++d) outer *= shape[size_t(d)];
  for (size_t d = size_t(dim) + 1; d < shape.size(); ++d) inner *= shape[d];
  std::vector<double> y(x.size());
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t i = 0; i < inner; ++i) {
      auto at = [&](int64_t k) { return size_t((o * n + k) * inner + i); };
      double m = -INFINITY, s = 0.0;
      for (int64_t k = 0; k < n; ++k) m = std::max(m, x[at(k)]);
      for (int64_t k = 0; k < n; ++k) s += std::exp(x[at(k)] - m);
      for (int64_t k = 0; k < n; ++k) y[at(k)] = log ? x[at(k)] - m - std::log(s) : std::exp(x[at(k)] - m) / s;
    }
  return y;
}

// LayerNorm (rms = false) or RMSNorm (rms = true) of rows of length d, optional weight / bias.
std::vector<double> norm_reference(const std::vector<double>& x, int64_t d, const std::vector<double>& w,
                                   const std::vector<double>& b, double eps, bool rms) {
  std::vector<double> y(x.size());
  for (size_t r = 0; r < x.size() / size_t(d); ++r) {
    const double* row = x.data() + r * size_t(d);
    double mean = 0.0, var = 0.0;
    if (!rms) {
      for (int64_t j = 0; j < d; ++j) mean += row[j];
      mean /= double(d);
    }
    for (int64_t j = 0; j < d; ++j) var += (row[j] - mean) * (row[j] - mean);
    var /= double(d);
    for (int64_t j = 0; j < d; ++j) {
      double v = (row[j] - mean) / std::sqrt(var + eps);
      if (!w.empty()) v *= w[size_t(j)];
      if (!b.empty()) v += b[size_t(j)];
      y[r * size_t(d) + size_t(j)] = v;
    }
  }
  return y;
}

// ---- softmax ----------------------------------------------------------------------------------

TEST(Softmax, HandCheckedValues) {
  Tensor x = from_vector({1, 2, 3}, {3}, DType::F64);
  EXPECT_TRUE(values_are(softmax(x, 0), {0.0900305731703805, 0.2447284710547976, 0.6652409557748219}, 1e-12));
  EXPECT_TRUE(values_are(log_softmax(x, -1), {-2.4076059644443806, -1.4076059644443806, -0.4076059644443806},
                         1e-12));
  // Max-subtracted: huge logits neither overflow nor lose the difference between them.
  Tensor big = from_vector({1000, 1001, -1000}, {3}, DType::F32);
  EXPECT_TRUE(values_are(softmax(big, 0), {0.2689414213699951, 0.7310585786300049, 0}, 1e-6));
  EXPECT_TRUE(values_are(log_softmax(big, 0), {-1.3132616875182228, -0.3132616875182228, -2001.3132616875182},
                         1e-3));
}

TEST(Softmax, MatchesReferenceOverEveryDim) {
  const Shape shape = {3, 4, 70};  // 70 > one 64-wide block of the strided kernel
  for (DType dt : {DType::F64, DType::F32}) {
    Tensor x = mul(rand_input(shape, 3, dt, false), 4.0);
    std::vector<double> xv = to_vector(x);
    for (int64_t dim : {0, 1, 2, -1, -2}) {
      for (bool log : {false, true}) {
        SCOPED_TRACE(testing::Message() << dt << " dim " << dim << (log ? " log" : ""));
        Tensor y = log ? log_softmax(x, dim) : softmax(x, dim);
        EXPECT_EQ(y.dtype(), dt);
        Tensor ref = from_vector(softmax_reference(xv, shape, x.wrap_dim(dim), log), shape, DType::F64);
        EXPECT_TRUE(all_close(y, ref, dt == DType::F64 ? 1e-12 : 1e-5, dt == DType::F64 ? 1e-14 : 1e-6));
      }
    }
  }
}

TEST(Softmax, NonContiguousAndLowPrecisionInputs) {
  // Over the middle dim of a permuted tensor: the same as over that dim of a contiguous copy.
  Tensor base = rand_input({4, 3, 5}, 7, DType::F64, false);
  Tensor p = permute(base, {2, 0, 1});  // [5, 4, 3]
  Tensor ref = from_vector(softmax_reference(to_vector(p), {5, 4, 3}, 1, false), {5, 4, 3}, DType::F64);
  EXPECT_TRUE(all_close(softmax(p, 1), ref, 1e-12, 1e-14));
  // BF16 in, BF16 out, computed in F32.
  Tensor x16 = to(rand_input({2, 8}, 8, DType::F32, false), DType::BF16);
  Tensor y16 = softmax(x16, -1);
  EXPECT_EQ(y16.dtype(), DType::BF16);
  Tensor ref16 = from_vector(softmax_reference(to_vector(x16), {2, 8}, 1, false), {2, 8}, DType::F64);
  EXPECT_TRUE(all_close(y16, ref16, 1e-2, 1e-3));
  // F16 likewise, with a gradient that comes back in F16.
  Tensor xh = to(rand_input({3, 5}, 9, DType::F32, false), DType::F16).set_requires_grad();
  Tensor yh = log_softmax(xh, 0);
  EXPECT_EQ(yh.dtype(), DType::F16);
  EXPECT_TRUE(all_close(yh, from_vector(softmax_reference(to_vector(xh), {3, 5}, 0, true), {3, 5}), 1e-2, 1e-2));
  backward(sum(yh));
  EXPECT_EQ(xh.grad().dtype(), DType::F16);
}

TEST(Softmax, Gradcheck) {
  // Over the middle dim of a permuted tensor, the last dim of a sliced one, the first dim, a wide
  // strided case (inner > 64) and a 1-D tensor.
  for (bool log : {false, true}) {
    SCOPED_TRACE(log ? "log_softmax" : "softmax");
    auto op = [log](const Tensor& x, int64_t dim) { return log ? log_softmax(x, dim) : softmax(x, dim); };
    EXPECT_EQ(gradcheck([&](auto& in) { return op(permute(in[0], {2, 0, 1}), 1); }, {rand_input({4, 3, 5}, 11)}), "");
    EXPECT_EQ(gradcheck([&](auto& in) { return op(narrow(in[0], 1, 1, 4), -1); }, {rand_input({3, 6}, 12)}), "");
    EXPECT_EQ(gradcheck([&](auto& in) { return op(in[0], 0); }, {rand_input({4, 2, 3}, 13)}), "");
    EXPECT_EQ(gradcheck([&](auto& in) { return op(transpose(in[0], 0, 1), 0); }, {rand_input({66, 3}, 14)}), "");
    EXPECT_EQ(gradcheck([&](auto& in) { return op(in[0], 0); }, {rand_input({5}, 15)}), "");
  }
}

TEST(Softmax, SavesOnlyItsOutputAndChecksOperands) {
  Tensor x = rand_input({4, 6}, 21);
  Tensor y = softmax(x, 1);
  EXPECT_EQ(saved_tensor_bytes(y), 4 * 6 * 8);
  EXPECT_NE(error_of([] { softmax(zeros({2, 3}, DType::I64), 1); }).find("softmax"), std::string::npos);
  EXPECT_THROW(log_softmax(x, 2), Error);
  EXPECT_TRUE(values_are(softmax(from_vector({5}, {}, DType::F64), 0), {1.0}));
}

// ---- layer_norm / rms_norm ----------------------------------------------------------------------

TEST(LayerNorm, HandCheckedValues) {
  Tensor x = from_vector({1, 2, 3, 4}, {1, 4}, DType::F64);
  // mean 2.5, population variance 1.25, rstd 1/sqrt(1.25) = 0.894427191.
  EXPECT_TRUE(values_are(layer_norm(x, Tensor(), Tensor(), 0.0),
                         {-1.3416407864998738, -0.4472135954999579, 0.4472135954999579, 1.3416407864998738}, 1e-12));
  Tensor w = from_vector({1, 2, 0.5, -1}, {4}, DType::F64), b = from_vector({0, 1, 0, 1}, {4}, DType::F64);
  // eps inside the sqrt: rstd = 1/sqrt(1.25 + 0.75) = 1/sqrt(2).
  EXPECT_TRUE(values_are(layer_norm(x, w, b, 0.75), {-1.0606601717798212, 0.2928932188134524, 0.1767766952966369,
                                                     -0.0606601717798212},
                         1e-12));
  // RMSNorm: mean(x^2) = 7.5.
  EXPECT_TRUE(values_are(rms_norm(x, Tensor(), 0.0),
                         {0.3651483716701107, 0.7302967433402214, 1.0954451150103321, 1.4605934866804429}, 1e-12));
  EXPECT_TRUE(values_are(rms_norm(x, w, 0.5), {0.3535533905932738, 1.4142135623730951, 0.5303300858899107,
                                               -1.4142135623730951},
                         1e-12));
}

TEST(LayerNorm, MatchesReference) {
  for (DType dt : {DType::F64, DType::F32}) {
    SCOPED_TRACE(testing::Message() << dt);
    const double rtol = dt == DType::F64 ? 1e-12 : 1e-5, atol = dt == DType::F64 ? 1e-12 : 1e-5;
    Tensor x = add(mul(rand_input({3, 5, 70}, 31, dt, false), 3.0), 0.5);
    Tensor w = rand_input({70}, 32, dt, false), b = rand_input({70}, 33, dt, false);
    std::vector<double> xv = to_vector(x), wv = to_vector(w), bv = to_vector(b);
    EXPECT_TRUE(all_close(layer_norm(x, w, b, 1e-5), from_vector(norm_reference(xv, 70, wv, bv, 1e-5, false),
                                                                 x.shape(), DType::F64), rtol, atol));
    EXPECT_TRUE(all_close(layer_norm(x, Tensor(), b, 1e-5), from_vector(norm_reference(xv, 70, {}, bv, 1e-5, false),
                                                                        x.shape(), DType::F64), rtol, atol));
    EXPECT_TRUE(all_close(rms_norm(x, w, 1e-6), from_vector(norm_reference(xv, 70, wv, {}, 1e-6, true), x.shape(),
                                                            DType::F64), rtol, atol));
    EXPECT_TRUE(all_close(rms_norm(x, Tensor(), 1e-6), from_vector(norm_reference(xv, 70, {}, {}, 1e-6, true),
                                                                   x.shape(), DType::F64), rtol, atol));
  }
  // BF16 in, BF16 out.
  Tensor x16 = to(rand_input({4, 16}, 34, DType::F32, false), DType::BF16);
  Tensor y16 = layer_norm(x16, Tensor(), Tensor(), 1e-5);
  EXPECT_EQ(y16.dtype(), DType::BF16);
  EXPECT_TRUE(all_close(y16, from_vector(norm_reference(to_vector(x16), 16, {}, {}, 1e-5, false), {4, 16}), 1e-2,
                        1e-2));
}

TEST(LayerNorm, AccurateForRowsWithAHugeMean) {
  // Rows 1e4 + noise of std 0.01 in F32. One-pass E[x^2] - E[x]^2 in float loses everything here
  // (1e8 with 24-bit mantissa); two passes in double match the double reference on the same floats.
  Generator gen(41);
  Tensor noise = randn({8, 256}, &gen, DType::F32);
  Tensor x = add(mul(noise, 0.01), 1e4);
  std::vector<double> xv = to_vector(x);
  Tensor ref = from_vector(norm_reference(xv, 256, {}, {}, 1e-5, false), {8, 256}, DType::F64);
  EXPECT_TRUE(all_close(layer_norm(x, Tensor(), Tensor(), 1e-5), ref, 1e-4, 1e-4));
  // The gradient too: F32 against the same computation in F64.
  Tensor x32 = x.detach().set_requires_grad(), x64 = to(x, DType::F64).detach().set_requires_grad();
  Tensor w = rand_input({8, 256}, 42, DType::F64, false);
  backward(sum(mul(layer_norm(x32, Tensor(), Tensor(), 1e-5), to(w, DType::F32))));
  backward(sum(mul(layer_norm(x64, Tensor(), Tensor(), 1e-5), w)));
  EXPECT_TRUE(all_close(x32.grad(), x64.grad(), 1e-3, 1e-2));
}

TEST(LayerNorm, Gradcheck) {
  // Sliced input (rows not contiguous), with and without weight / bias; strided weight and bias.
  auto sliced = [](const Tensor& x) { return narrow(x, 2, 1, 5); };  // [2, 3, 7] -> [2, 3, 5]
  EXPECT_EQ(gradcheck([&](auto& in) { return layer_norm(sliced(in[0]), in[1], in[2], 1e-5); },
                      {rand_input({2, 3, 7}, 51), rand_input({5}, 52), rand_input({5}, 53)}),
            "");
  EXPECT_EQ(gradcheck([&](auto& in) { return layer_norm(sliced(in[0]), Tensor(), Tensor(), 1e-5); },
                      {rand_input({2, 3, 7}, 54)}),
            "");
  EXPECT_EQ(gradcheck([&](auto& in) { return layer_norm(sliced(in[0]), in[1], Tensor(), 1e-5); },
                      {rand_input({2, 3, 7}, 55), rand_input({5}, 56)}),
            "");
  EXPECT_EQ(gradcheck([&](auto& in) { return layer_norm(sliced(in[0]), Tensor(), in[1], 1e-5); },
                      {rand_input({2, 3, 7}, 57), rand_input({5}, 58)}),
            "");
  // Permuted input; weight and bias are columns of [6, 2] matrices (stride 2).
  EXPECT_EQ(gradcheck([&](auto& in) {
                        return layer_norm(permute(in[0], {1, 0}), select(in[1], 1, 0), select(in[2], 1, 1), 0.1);
                      },
                      {rand_input({6, 4}, 59), rand_input({6, 2}, 60), rand_input({6, 2}, 61)}),
            "");
  // Only some inputs trainable: a frozen input with trainable affine parameters, bias alone.
  EXPECT_EQ(gradcheck([&](auto& in) { return layer_norm(in[0], in[1], in[2], 1e-5); },
                      {rand_input({3, 4}, 62, DType::F64, false), rand_input({4}, 63), rand_input({4}, 64)}),
            "");
  EXPECT_EQ(gradcheck([&](auto& in) { return layer_norm(in[0], in[1], in[2], 1e-5); },
                      {rand_input({3, 4}, 65, DType::F64, false), rand_input({4}, 66, DType::F64, false),
                       rand_input({4}, 67)}),
            "");
}

TEST(RmsNorm, Gradcheck) {
  EXPECT_EQ(gradcheck([&](auto& in) { return rms_norm(narrow(in[0], 1, 2, 5), in[1], 1e-6); },
                      {rand_input({3, 8}, 71), rand_input({5}, 72)}),
            "");
  EXPECT_EQ(gradcheck([&](auto& in) { return rms_norm(permute(in[0], {2, 0, 1}), Tensor(), 1e-6); },
                      {rand_input({2, 3, 4}, 73)}),
            "");
  EXPECT_EQ(gradcheck([&](auto& in) { return rms_norm(in[0], select(in[1], 1, 1), 0.01); },
                      {rand_input({4, 6}, 74, DType::F64, false), rand_input({6, 3}, 75)}),
            "");
}

TEST(LayerNorm, SavesOnlyWhatBackwardNeeds) {
  const int64_t rows = 6, d = 10;
  Tensor w = rand_input({d}, 81), b = rand_input({d}, 82);
  // Frozen input, trainable bias only: dbeta = sum(dy) needs nothing.
  Tensor x = rand_input({rows, d}, 83, DType::F64, false);
  EXPECT_EQ(saved_tensor_bytes(layer_norm(x, w.detach(), b, 1e-5)), 0);
  // dgamma needs x and the per-row mean and rstd (F64), not a recomputation from x.
  EXPECT_EQ(saved_tensor_bytes(layer_norm(x, w, b, 1e-5), {w, b}), rows * d * 8 + 2 * rows * 8);
  // RMSNorm: x and rstd.
  EXPECT_EQ(saved_tensor_bytes(rms_norm(x, w, 1e-6), {w}), rows * d * 8 + rows * 8);
}

TEST(LayerNorm, ParameterGradientsDoNotDependOnThreads) {
  Tensor x = rand_input({512, 96}, 91, DType::F32, false);
  Tensor dy = rand_input({512, 96}, 92, DType::F32, false);
  auto grads = [&](int threads) {
    omp_set_num_threads(threads);
    Tensor w = rand_input({96}, 93, DType::F32), b = rand_input({96}, 94, DType::F32);
    Tensor xr = x.detach().set_requires_grad();
    backward(layer_norm(xr, w, b, 1e-5), dy);
    return std::vector<Tensor>{xr.grad(), w.grad(), b.grad()};
  };
  const int saved = omp_get_max_threads();
  std::vector<Tensor> one = grads(1), four = grads(4);
  omp_set_num_threads(saved);
  for (size_t i = 0; i < one.size(); ++i)
    EXPECT_EQ(std::memcmp(one[i].data_ptr(), four[i].data_ptr(), size_t(one[i].numel()) * 4), 0) << "gradient " << i;
}

TEST(LayerNorm, ChecksOperands) {
  Tensor x = rand_input({2, 4}, 95, DType::F64, false);
  EXPECT_NE(error_of([&] { layer_norm(x, ones({3}, DType::F64), Tensor(), 1e-5); }).find("layer_norm: weight"),
            std::string::npos);
  EXPECT_NE(error_of([&] { rms_norm(x, ones({4}, DType::F32), 1e-5); }).find("rms_norm"), std::string::npos);
  EXPECT_NE(error_of([&] { layer_norm(zeros({2, 4}, DType::I32), Tensor(), Tensor(), 1e-5); }).find("layer_norm"),
            std::string::npos);
  EXPECT_THROW(layer_norm(x, Tensor(), Tensor(), -1.0), Error);
}

// ---- embedding ---------------------------------------------------------------------------------

TEST(Embedding, GathersRowsForAnyIdShapeAndDtype) {
  Tensor w = from_vector({0, 1, 2, 10, 11, 12, 20, 21, 22, 30, 31, 32}, {4, 3}, DType::F32);
  Tensor ids32 = from_data<int32_t>({3, 1, 1, 0}, {2, 2});
  Tensor y = embedding(w, ids32);
  EXPECT_EQ(y.shape(), (Shape{2, 2, 3}));
  EXPECT_TRUE(values_are(y, {30, 31, 32, 10, 11, 12, 10, 11, 12, 0, 1, 2}));
  EXPECT_TRUE(values_are(embedding(w, from_data<int64_t>({2}, {})), {20, 21, 22}));  // 0-dim ids -> [D]
  // A BF16 table is gathered as it is; a transposed (non-contiguous) table works too.
  Tensor w16 = to(w, DType::BF16);
  Tensor y16 = embedding(w16, from_data<int64_t>({2, 0}, {2}));
  EXPECT_EQ(y16.dtype(), DType::BF16);
  EXPECT_TRUE(values_are(y16, {20, 21, 22, 0, 1, 2}));
  Tensor wt = transpose(contiguous(transpose(w, 0, 1)), 0, 1);
  ASSERT_FALSE(wt.is_contiguous());
  EXPECT_TRUE(values_are(embedding(wt, from_data<int64_t>({1}, {1})), {10, 11, 12}));
}

TEST(Embedding, BackwardSumsRepeatedIds) {
  Tensor w = zeros({4, 2}, DType::F64).set_requires_grad();
  Tensor ids = from_data<int64_t>({1, 3, 1, 1}, {4});
  Tensor g = from_vector({1, 2, 10, 20, 100, 200, 1000, 2000}, {4, 2}, DType::F64);
  backward(embedding(w, ids), g);
  EXPECT_TRUE(values_are(w.grad(), {0, 0, 1101, 2202, 0, 0, 10, 20}));
}

TEST(Embedding, Gradcheck) {
  // Repeated ids in a 2-D I32 id tensor; a transposed table; a strided gradient through a permute.
  Tensor ids = from_data<int32_t>({0, 2, 2, 4, 2, 0}, {2, 3});
  EXPECT_EQ(gradcheck([&](auto& in) { return embedding(in[0], ids); }, {rand_input({5, 3}, 101)}), "");
  EXPECT_EQ(gradcheck([&](auto& in) { return permute(embedding(transpose(in[0], 0, 1), ids), {2, 0, 1}); },
                      {rand_input({3, 5}, 102)}),
            "");
  EXPECT_EQ(gradcheck([&](auto& in) { return mul(embedding(in[0], from_data<int64_t>({1, 1, 1}, {3})), 2.0); },
                      {rand_input({2, 4}, 103)}),
            "");
}

TEST(Embedding, SavesOnlyTheIds) {
  Tensor w = rand_input({50, 16}, 111);
  Tensor ids = from_data<int64_t>({1, 2, 3, 4, 5, 6}, {2, 3});
  EXPECT_EQ(saved_tensor_bytes(embedding(w, ids)), 6 * 8);  // the table is not among them
}

TEST(Embedding, OutOfRangeIdsNameIdPositionAndSize) {
  Tensor w = zeros({5, 2});
  std::string msg = error_of([&] { embedding(w, from_data<int64_t>({0, 1, 2, 7}, {2, 2})); });
  EXPECT_NE(msg.find("embedding"), std::string::npos) << msg;
  EXPECT_NE(msg.find("id 7"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[1, 1]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[0, 5)"), std::string::npos) << msg;
  msg = error_of([&] { embedding(w, from_data<int32_t>({-1}, {1})); });
  EXPECT_NE(msg.find("id -1"), std::string::npos) << msg;
  EXPECT_THROW(embedding(w, from_vector({1}, {1})), Error);       // F32 ids
  EXPECT_THROW(embedding(zeros({5}), from_data<int64_t>({1}, {1})), Error);  // 1-D table
}

TEST(Embedding, BackwardIsDeterministicAcrossThreadCounts) {
  const int64_t vocab = 300, d = 256, n = 6000;
  Generator gen(121);
  Tensor r = rand({n}, &gen);
  std::vector<int64_t> ids(static_cast<size_t>(n));
  std::vector<double> rv = to_vector(r);
  for (int64_t i = 0; i < n; ++i) ids[size_t(i)] = int64_t(rv[size_t(i)] * rv[size_t(i)] * vocab);  // skewed
  Tensor id_t = from_data<int64_t>(ids, {n});
  Tensor dy = rand_input({n, d}, 122, DType::F32, false);
  auto grad = [&](int threads) {
    omp_set_num_threads(threads);
    Tensor w = zeros({vocab, d}).set_requires_grad();
    backward(embedding(w, id_t), dy);
    return w.grad();
  };
  const int saved = omp_get_max_threads();
  Tensor g1 = grad(1), g4 = grad(4), g4b = grad(4);
  omp_set_num_threads(saved);
  EXPECT_EQ(std::memcmp(g1.data_ptr(), g4.data_ptr(), size_t(vocab * d) * 4), 0);
  EXPECT_EQ(std::memcmp(g4.data_ptr(), g4b.data_ptr(), size_t(vocab * d) * 4), 0);
  // And the sums are right: row v of dW is the sum of dy rows with id v (checked in double).
  std::vector<double> ref(size_t(vocab * d), 0.0), dyv = to_vector(dy);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < d; ++j) ref[size_t(ids[size_t(i)] * d + j)] += dyv[size_t(i * d + j)];
  EXPECT_TRUE(all_close(g1, from_vector(ref, {vocab, d}, DType::F64), 1e-5, 1e-5));
}

// ---- dropout -----------------------------------------------------------------------------------

TEST(Dropout, SameSeedAndOffsetGiveTheSameMask) {
  Tensor x = ones({1000});
  Generator a(7), b(7);
  Tensor ya = dropout(x, 0.5, true, &a), yb = dropout(x, 0.5, true, &b);
  EXPECT_TRUE(all_close(ya, yb, 0, 0));
  EXPECT_EQ(a.offset, 250u);  // 1000 values = 250 Philox blocks taken
  // The next draw from the same generator starts at a new offset: a different mask.
  Tensor yc = dropout(x, 0.5, true, &a);
  EXPECT_FALSE(all_close(ya, yc, 0, 0));
  // The default generator is used when none is passed, and advances.
  manual_seed(7);
  Tensor yd = dropout(x, 0.5);
  EXPECT_TRUE(all_close(yd, ya, 0, 0));
  EXPECT_EQ(default_generator().offset, 250u);
}

TEST(Dropout, KeptFractionAndScale) {
  const int64_t n = 100000;
  for (double p : {0.1, 0.3, 0.7}) {
    SCOPED_TRACE(p);
    Tensor x = add(rand_input({n}, 131, DType::F32, false), 2.0);  // in [1, 3): never zero
    Generator gen(132);
    Tensor y = dropout(x, p, true, &gen);
    std::vector<double> xv = to_vector(x), yv = to_vector(y);
    int64_t kept = 0;
    bool scaled = true;
    for (int64_t i = 0; i < n; ++i) {
      if (yv[size_t(i)] == 0.0) continue;
      ++kept;
      scaled = scaled && yv[size_t(i)] == double(float(xv[size_t(i)] * float(1.0 / (1.0 - p))));
    }
    EXPECT_NEAR(double(kept) / double(n), 1.0 - p, 0.01);
    EXPECT_TRUE(scaled);
  }
}

TEST(Dropout, BackwardRegeneratesTheForwardMaskAndSavesNothing) {
  const double p = 0.4;
  Tensor x = add(rand_input({64, 33}, 141, DType::F32, false), 2.0).set_requires_grad();
  Generator gen(142);
  Tensor y = dropout(x, p, true, &gen);
  EXPECT_EQ(saved_tensor_bytes(y), 0);
  backward(y, ones(y.shape()));
  std::vector<double> yv = to_vector(y), gv = to_vector(x.grad());
  const double scale = double(float(1.0 / (1.0 - p)));
  for (size_t i = 0; i < yv.size(); ++i) ASSERT_EQ(gv[i], yv[i] == 0.0 ? 0.0 : scale) << "element " << i;
}

TEST(Dropout, NonContiguousInputsAndGradcheck) {
  // A transposed input is masked in its row-major (logical) order: the same as its contiguous copy.
  Tensor base = add(rand_input({5, 7}, 151, DType::F64, false), 2.0);
  Tensor t = transpose(base, 0, 1);
  Generator g1(9), g2(9);
  EXPECT_TRUE(all_close(dropout(t, 0.5, true, &g1), dropout(contiguous(t), 0.5, true, &g2), 0, 0));
  // Each evaluation uses a fresh generator with the same seed, so the mask is fixed.
  EXPECT_EQ(gradcheck([](auto& in) {
                        Generator gen(11);
                        return dropout(permute(in[0], {1, 0}), 0.3, true, &gen);
                      },
                      {rand_input({6, 9}, 152)}),
            "");
  // BF16 in, BF16 out.
  Generator g3(12);
  Tensor y16 = dropout(to(ones({8, 8}), DType::BF16), 0.5, true, &g3);
  EXPECT_EQ(y16.dtype(), DType::BF16);
  for (double v : to_vector(y16)) EXPECT_TRUE(v == 0.0 || v == 2.0);
}

TEST(Dropout, IdentityWhenNotTrainingOrPZeroAndRejectsBadP) {
  Tensor x = rand_input({3, 4}, 161);
  Generator gen(1);
  EXPECT_EQ(dropout(x, 0.5, false, &gen).storage(), x.storage());
  EXPECT_EQ(dropout(x, 0.0, true, &gen).storage(), x.storage());
  EXPECT_EQ(gen.offset, 0u);  // nothing drawn
  std::string msg = error_of([&] { dropout(x, 1.0, true, &gen); });
  EXPECT_NE(msg.find("dropout: p must be in [0, 1)"), std::string::npos) << msg;
  EXPECT_THROW(dropout(x, -0.1, true, &gen), Error);
  EXPECT_THROW(dropout(x, 1.0, false, &gen), Error);  // checked in eval mode too
}

}  // namespace
}  // namespace vlp
