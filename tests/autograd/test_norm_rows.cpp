// LayerNorm / RMSNorm with rows long enough to use the kernels' interleaved partial sums (d = 8k + r,
// with a tail): values against a plain double loop, and gradcheck of x, weight and bias.
#include "common/test_util.h"

namespace vlp {
namespace {
using namespace test;

TEST(NormRows, LayerNormMatchesPlainLoopAndGradchecks) {
  for (int64_t d : {5, 8, 37}) {
    Tensor x = rand_input({3, d}, 11 + d), w = rand_input({d}, 12 + d), b = rand_input({d}, 13 + d);
    Tensor y = layer_norm(x, w, b, 1e-5);
    const double* xp = x.data<double>();
    std::vector<double> expect(3 * d);
    for (int64_t r = 0; r < 3; ++r) {
      double mu = 0, var = 0;
      for (int64_t j = 0; j < d; ++j) mu += xp[r * d + j];
      mu /= double(d);
      for (int64_t j = 0; j < d; ++j) var += (xp[r * d + j] - mu) * (xp[r * d + j] - mu);
      var /= double(d);
      for (int64_t j = 0; j < d; ++j)
        expect[r * d + j] = (xp[r * d + j] - mu) / std::sqrt(var + 1e-5) * w.data<double>()[j] + b.data<double>()[j];
    }
    EXPECT_TRUE(values_are(y, expect, 1e-12));
    EXPECT_EQ(gradcheck([](const std::vector<Tensor>& in) { return layer_norm(in[0], in[1], in[2], 1e-5); },
                        {x, w, b}),
              "");
  }
}

TEST(NormRows, RmsNormMatchesPlainLoopAndGradchecks) {
  for (int64_t d : {5, 8, 37}) {
    Tensor x = rand_input({3, d}, 21 + d), w = rand_input({d}, 22 + d);
    Tensor y = rms_norm(x, w, 1e-6);
    const double* xp = x.data<double>();
    std::vector<double> expect(3 * d);
    for (int64_t r = 0; r < 3; ++r) {
      double ms = 0;
      for (int64_t j = 0; j < d; ++j) ms += xp[r * d + j] * xp[r * d + j];
      ms /= double(d);
      for (int64_t j = 0; j < d; ++j) expect[r * d + j] = xp[r * d + j] / std::sqrt(ms + 1e-6) * w.data<double>()[j];
    }
    EXPECT_TRUE(values_are(y, expect, 1e-12));
    EXPECT_EQ(gradcheck([](const std::vector<Tensor>& in) { return rms_norm(in[0], in[1], 1e-6); }, {x, w}), "");
  }
}

}  // namespace
}  // namespace vlp
