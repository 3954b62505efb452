// patch_embed against a hand-written strided convolution; adaptive_max_pool_grid against hand-computed
// windows (7x7 -> 6x6 is a 2x2 max with stride 1), its first-maximum and overlap rules; gradchecks on
// non-contiguous inputs.
#include "common/test_util.h"

namespace vlp {
namespace {

using test::rand_input;

TEST(PatchEmbed, MatchesConvolutionWithStrideEqualToKernel) {
  const int64_t b_ = 2, c_ = 3, h_ = 4, w_ = 6, p_ = 2, d_ = 5;
  Tensor img = rand_input({b_, c_, h_, w_}, 1, DType::F64, false);
  Tensor w = rand_input({d_, c_, p_, p_}, 2, DType::F64, false), bias = rand_input({d_}, 3, DType::F64, false);
  Tensor y = patch_embed(img, w, bias);
  const int64_t gh = h_ / p_, gw = w_ / p_;
  ASSERT_EQ(y.shape(), (Shape{b_, gh * gw, d_}));
  std::vector<double> iv = to_vector(img), wv = to_vector(w), bv = to_vector(bias), expected;
  for (int64_t b = 0; b < b_; ++b)
    for (int64_t r = 0; r < gh; ++r)
      for (int64_t c = 0; c < gw; ++c)
        for (int64_t d = 0; d < d_; ++d) {
          double acc = bv[size_t(d)];
          for (int64_t ch = 0; ch < c_; ++ch)
            for (int64_t u = 0; u < p_; ++u)
              for (int64_t s = 0; s < p_; ++s)
                acc += wv[size_t(((d * c_ + ch) * p_ + u) * p_ + s)] *
                       iv[size_t(((b * c_ + ch) * h_ + r * p_ + u) * w_ + c * p_ + s)];
          expected.push_back(acc);
        }
  EXPECT_TRUE(test::values_are(y, expected, 1e-12));
  EXPECT_TRUE(test::values_are(patch_embed(img, w, Tensor()), [&] {
    std::vector<double> e = expected;
    for (size_t i = 0; i < e.size(); ++i) e[i] -= bv[i % size_t(d_)];
    return e;
  }(), 1e-12));
}

TEST(PatchEmbed, GradcheckAndErrors) {
  // Channels-last images permuted to [B, C, H, W] (non-contiguous), with and without a bias.
  EXPECT_EQ(gradcheck([](auto& in) { return patch_embed(permute(in[0], {0, 3, 1, 2}), in[1], in[2]); },
                      {rand_input({2, 4, 6, 2}, 4), rand_input({3, 2, 2, 2}, 5), rand_input({3}, 6)}),
            "");
  EXPECT_EQ(gradcheck([](auto& in) { return patch_embed(in[0], in[1], Tensor()); },
                      {rand_input({1, 1, 3, 6}, 7), rand_input({2, 1, 3, 3}, 8)}),
            "");
  Tensor w = zeros({3, 2, 2, 2});
  try {
    patch_embed(zeros({1, 2, 5, 4}), w, Tensor());
    ADD_FAILURE() << "no error for H = 5, P = 2";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("not divisible by the patch size 2"), std::string::npos) << e.what();
  }
  EXPECT_THROW(patch_embed(zeros({1, 3, 4, 4}), w, Tensor()), Error);     // channels differ
  EXPECT_THROW(patch_embed(zeros({1, 2, 4, 4}), w, zeros({2})), Error);   // bias size
  EXPECT_THROW(patch_embed(zeros({2, 4, 4}), w, Tensor()), Error);        // not 4-D
}

TEST(AdaptiveMaxPool, SevenToSixIsTwoByTwoStrideOne) {
  const int64_t b_ = 2, n = 7, c_ = 3;
  Tensor x = rand_input({b_, n, n, c_}, 9, DType::F64, false);
  Tensor y = adaptive_max_pool_grid(x, 6, 6);
  ASSERT_EQ(y.shape(), (Shape{b_, 6, 6, c_}));
  std::vector<double> xv = to_vector(x), expected;
  auto at = [&](int64_t b, int64_t r, int64_t s, int64_t c) { return xv[size_t(((b * n + r) * n + s) * c_ + c)]; };
  for (int64_t b = 0; b < b_; ++b)
    for (int64_t i = 0; i < 6; ++i)
      for (int64_t j = 0; j < 6; ++j)
        for (int64_t c = 0; c < c_; ++c)
          expected.push_back(std::max({at(b, i, j, c), at(b, i + 1, j, c), at(b, i, j + 1, c), at(b, i + 1, j + 1, c)}));
  EXPECT_TRUE(test::values_are(y, expected, 0.0));
}

TEST(AdaptiveMaxPool, WindowRuleAndIdentity) {
  // 5 -> 3 rows: windows [0, 2), [1, 4), [3, 5); 4 -> 2 columns: [0, 2), [2, 4).
  std::vector<double> v(20);
  for (size_t i = 0; i < v.size(); ++i) v[i] = double((i * 7) % 20);
  Tensor x = from_vector(v, {1, 5, 4, 1}, DType::F64);
  std::vector<double> expected;
  for (auto [r0, r1] : {std::pair{0, 2}, std::pair{1, 4}, std::pair{3, 5}})
    for (auto [c0, c1] : {std::pair{0, 2}, std::pair{2, 4}}) {
      double m = -1;
      for (int r = r0; r < r1; ++r)
        for (int c = c0; c < c1; ++c) m = std::max(m, v[size_t(r * 4 + c)]);
      expected.push_back(m);
    }
  EXPECT_TRUE(test::values_are(adaptive_max_pool_grid(x, 3, 2), expected, 0.0));
  EXPECT_TRUE(test::values_are(adaptive_max_pool_grid(x, 5, 4), v, 0.0));  // same size: identity
  EXPECT_THROW(adaptive_max_pool_grid(x, 0, 2), Error);
  EXPECT_THROW(adaptive_max_pool_grid(zeros({5, 4, 1}), 2, 2), Error);
}

TEST(AdaptiveMaxPool, GradientGoesToFirstMaximumAndOverlapsAdd) {
  // A constant grid: every window's first element (its top-left) takes the gradient. 3 -> 2 gives
  // windows [0, 2) and [1, 3) per axis, so cell (i, j) sends its gradient to (i, j).
  Tensor x = full({1, 3, 3, 1}, 2.0, DType::F64).set_requires_grad();
  backward(adaptive_max_pool_grid(x, 2, 2), from_vector({1, 2, 3, 4}, {1, 2, 2, 1}, DType::F64));
  EXPECT_TRUE(test::values_are(x.grad(), {1, 2, 0, 3, 4, 0, 0, 0, 0}));
  // A single peak in the middle of a 3x3 grid is the maximum of all four overlapping 2x2 windows.
  Tensor peak = from_vector({0, 0, 0, 0, 5, 0, 0, 0, 0}, {1, 3, 3, 1}, DType::F64).set_requires_grad();
  backward(sum(adaptive_max_pool_grid(peak, 2, 2)));
  EXPECT_TRUE(test::values_are(peak.grad(), {0, 0, 0, 0, 4, 0, 0, 0, 0}));
}

TEST(AdaptiveMaxPool, Gradcheck) {
  // A channels-first input permuted to [B, H, W, C]; random values are distinct, so no ties.
  EXPECT_EQ(gradcheck([](auto& in) { return adaptive_max_pool_grid(permute(in[0], {0, 2, 3, 1}), 6, 6); },
                      {rand_input({2, 3, 7, 7}, 10)}),
            "");
  EXPECT_EQ(gradcheck([](auto& in) { return adaptive_max_pool_grid(in[0], 2, 3); }, {rand_input({1, 5, 4, 2}, 11)}),
            "");
}

TEST(AdaptiveMaxPool, Float32MatchesFloat64) {
  Tensor x = rand_input({2, 7, 7, 4}, 12, DType::F64, false);
  Tensor y32 = adaptive_max_pool_grid(to(x, DType::F32), 6, 6);
  EXPECT_EQ(y32.dtype(), DType::F32);
  EXPECT_TRUE(test::all_close(y32, adaptive_max_pool_grid(x, 6, 6), 1e-6, 1e-7));
}

}  // namespace
}  // namespace vlp
