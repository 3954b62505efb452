// Philox4x32-10 known answers, the (seed, offset) stream contract, and initialiser bounds and statistics.
#include <cmath>
#include <cstring>
#include <set>

#include "common/test_util.h"
#include "kernels/philox.h"

namespace vlp {
namespace {

void expect_block(Philox4 got, std::array<uint32_t, 4> expected) {
  for (int i = 0; i < 4; ++i) EXPECT_EQ(got.x[i], expected[size_t(i)]) << "word " << i;
}

TEST(Philox, KnownAnswerVectors) {
  // The Random123 known-answer tests for philox4x32 with 10 rounds.
  expect_block(philox4x32_10({{0, 0, 0, 0}}, 0, 0), {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8});
  expect_block(philox4x32_10({{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}}, 0xffffffff, 0xffffffff),
               {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd});
  expect_block(philox4x32_10({{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}}, 0xa4093822, 0x299f31d0),
               {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1});
}

TEST(Philox, StreamLayout) {
  // Block b of stream (seed, offset) is the counter offset + b, with the seed as the key.
  uint64_t seed = 0x0123456789abcdefull;
  Philox4 direct = philox4x32_10({{7, 0, 0, 0}}, uint32_t(seed), uint32_t(seed >> 32));
  Philox4 via = philox_block(seed, 5, 2);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(direct.x[i], via.x[i]);
  // 64-bit counters carry into the high word.
  Philox4 high = philox_block(1, 0xffffffffull, 1);
  Philox4 expect = philox4x32_10({{0, 1, 0, 0}}, 1, 0);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(high.x[i], expect.x[i]);
  // Uniform floats are (u >> 8) 2^-24: 0 and the largest value below 1.
  EXPECT_EQ(philox_uniform(0u), 0.0f);
  EXPECT_EQ(philox_uniform(0xffffffffu), 1.0f - 1.0f / 16777216.0f);
}

std::vector<uint32_t> float_bits(const Tensor& t) {
  std::vector<uint32_t> out(size_t(t.numel()));
  std::memcpy(out.data(), t.data_ptr(), out.size() * 4);
  return out;
}

TEST(Generator, SameSeedSameBitsDifferentOffsetsDifferentStreams) {
  Generator a(1234), b(1234), c(1235);
  Tensor ra = rand({1000}, &a), rb = rand({1000}, &b), rc = rand({1000}, &c);
  EXPECT_EQ(float_bits(ra), float_bits(rb));
  EXPECT_NE(float_bits(ra), float_bits(rc));
  // The offset advanced by ceil(n / 4) blocks; the next draw continues the stream instead of repeating.
  EXPECT_EQ(a.offset, 250u);
  Tensor next = rand({1000}, &a);
  EXPECT_NE(float_bits(next), float_bits(ra));
  // Drawing 1000 then 1000 equals drawing 2000 at once (offsets are in whole blocks; 1000 = 250 blocks).
  Generator d(1234);
  std::vector<uint32_t> both = float_bits(rand({2000}, &d));
  std::vector<uint32_t> joined = float_bits(ra);
  for (uint32_t v : float_bits(next)) joined.push_back(v);
  EXPECT_EQ(both, joined);
  // Odd counts round the offset up to whole blocks, so streams never overlap.
  Generator e(9);
  EXPECT_EQ(e.take(5), 0u);
  EXPECT_EQ(e.take(1), 2u);
  EXPECT_EQ(e.offset, 3u);
  // A saved (seed, offset) resumes exactly.
  Generator resumed(1234);
  resumed.offset = 250;
  EXPECT_EQ(float_bits(rand({1000}, &resumed)), float_bits(next));
  // The default generator follows manual_seed.
  manual_seed(1234);
  EXPECT_EQ(float_bits(rand({1000})), float_bits(ra));
  // The same draw in F64 sees the same uniform values (drawn in float, then widened).
  Generator f(1234);
  Tensor r64 = rand({1000}, &f, DType::F64);
  EXPECT_TRUE(test::all_close(r64, ra, 0, 0));
}

TEST(Generator, UniformAndNormalStatistics) {
  Generator gen(7);
  const int64_t n = 200000;
  std::vector<double> u = to_vector(rand({n}, &gen));
  double mean = 0, var = 0, lo = 1, hi = 0;
  for (double x : u) mean += x, lo = std::min(lo, x), hi = std::max(hi, x);
  mean /= double(n);
  for (double x : u) var += (x - mean) * (x - mean);
  var /= double(n);
  EXPECT_GE(lo, 0.0);
  EXPECT_LT(hi, 1.0);
  EXPECT_NEAR(mean, 0.5, 0.005);
  EXPECT_NEAR(var, 1.0 / 12.0, 0.002);

  Tensor z = empty({n});
  normal_(z, 2.0, 3.0, &gen);
  std::vector<double> v = to_vector(z);
  mean = 0, var = 0;
  for (double x : v) mean += x;
  mean /= double(n);
  for (double x : v) var += (x - mean) * (x - mean);
  var /= double(n);
  EXPECT_NEAR(mean, 2.0, 0.03);
  EXPECT_NEAR(std::sqrt(var), 3.0, 0.03);
  for (double x : v) ASSERT_TRUE(std::isfinite(x));
}

struct Stats {
  double lo = INFINITY, hi = -INFINITY, mean = 0, std = 0;
};
Stats stats(const Tensor& t) {
  std::vector<double> v = to_vector(t);
  Stats s;
  for (double x : v) s.lo = std::min(s.lo, x), s.hi = std::max(s.hi, x), s.mean += x;
  s.mean /= double(v.size());
  for (double x : v) s.std += (x - s.mean) * (x - s.mean);
  s.std = std::sqrt(s.std / double(v.size()));
  return s;
}

TEST(Initialisers, KaimingAndXavierBoundsAndStatistics) {
  Generator gen(3);
  // nn.Linear default: kaiming_uniform with a = sqrt(5) gives U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
  Tensor w = empty({256, 400});
  EXPECT_EQ(fan_in(w), 400);
  EXPECT_EQ(fan_out(w), 256);
  kaiming_uniform_(w, std::sqrt(5.0), &gen);
  double bound = 1.0 / std::sqrt(400.0);
  Stats s = stats(w);
  EXPECT_GE(s.lo, -bound);
  EXPECT_LE(s.hi, bound);
  EXPECT_GT(s.hi, 0.99 * bound);  // the range is used up to the bound
  EXPECT_LT(s.lo, -0.99 * bound);
  EXPECT_NEAR(s.std, bound / std::sqrt(3.0), 0.01 * bound);

  // Conv weights: fan_in = in_channels * receptive field.
  Tensor conv = empty({16, 8, 3, 3});
  EXPECT_EQ(fan_in(conv), 72);
  EXPECT_EQ(fan_out(conv), 144);
  kaiming_uniform_(conv, 0.0, &gen);  // a = 0: bound sqrt(6 / fan_in)
  s = stats(conv);
  EXPECT_LE(s.hi, std::sqrt(6.0 / 72));
  EXPECT_GE(s.lo, -std::sqrt(6.0 / 72));

  // xavier_uniform: U(-b, b), b = gain sqrt(6 / (fan_in + fan_out)).
  Tensor x = empty({300, 500});
  xavier_uniform_(x, 2.0, &gen);
  double xb = 2.0 * std::sqrt(6.0 / 800.0);
  s = stats(x);
  EXPECT_GE(s.lo, -xb);
  EXPECT_LE(s.hi, xb);
  EXPECT_NEAR(s.std, xb / std::sqrt(3.0), 0.01 * xb);
  EXPECT_NEAR(s.mean, 0.0, 0.01 * xb);

  // xavier_normal: N(0, gain sqrt(2 / (fan_in + fan_out))).
  xavier_normal_(x, 1.0, &gen);
  s = stats(x);
  EXPECT_NEAR(s.std, std::sqrt(2.0 / 800.0), 0.01 * std::sqrt(2.0 / 800.0));
  EXPECT_NEAR(s.mean, 0.0, 0.01 * std::sqrt(2.0 / 800.0));

  // Initialisers need a floating tensor with at least 2 dims for fans.
  EXPECT_THROW(kaiming_uniform_(empty({5}), std::sqrt(5.0), &gen), Error);
  EXPECT_THROW(uniform_(empty({5}, DType::I32), 0, 1, &gen), Error);
  // Low-precision and non-contiguous tensors get the same values as F32 ones (then rounded).
  Generator g1(11), g2(11);
  Tensor a = empty({4, 6});
  uniform_(a, -1, 1, &g1);
  Tensor b16 = empty({4, 6}, DType::BF16);
  uniform_(b16, -1, 1, &g2);
  EXPECT_TRUE(test::all_close(b16, a, 1.0 / 128, 0));
}

}  // namespace
}  // namespace vlp
