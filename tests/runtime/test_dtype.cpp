// Dtype conversion edge cases (bf16/f16 rounding ties, subnormals, inf, NaN, overflow, -0; integer
// and bool conversions) and copy_/convert across dtypes and layouts.
#include <bit>
#include <cstring>

#include "common/test_util.h"

namespace vlp {
namespace {

float f(uint32_t bits) { return std::bit_cast<float>(bits); }

// Converts through a tensor copy (the path every op takes), returning the 16-bit patterns.
template <class H>
std::vector<uint16_t> to_half_bits(const std::vector<float>& values) {
  Tensor src = empty({int64_t(values.size())});
  std::memcpy(src.data_ptr(), values.data(), values.size() * 4);
  Tensor dst = convert(src, dtype_of<H>());
  std::vector<uint16_t> out(values.size());
  for (size_t i = 0; i < values.size(); ++i) out[i] = dst.data<H>()[i].bits;
  return out;
}

TEST(Conversion, BF16RoundToNearestEven) {
  // bf16 keeps 7 mantissa bits: ulp(1) = 2^-7.
  std::vector<float> in = {
      1.0f,
      1.0f + 0x1p-8f,         // tie between 1 and 1 + 2^-7: to even (1)
      1.0f + 3 * 0x1p-8f,     // tie between 1 + 2^-7 and 1 + 2^-6: to even (1 + 2^-6)
      1.0f + 0x1p-8f + 0x1p-20f,  // just above the tie: up
      -1.0f - 0x1p-8f,        // negative tie: to even
      -0.0f,
      INFINITY,
      -INFINITY,
      f(0x7f7fffffu),         // FLT_MAX rounds past bf16's largest finite: inf
      f(0x7f7f7fffu),         // just below the tie with the largest finite: stays finite
      f(0x00008000u),         // subnormal tie between 0 and the smallest bf16 subnormal: to even (0)
      f(0x00018000u),         // subnormal tie between 1 and 2 ulps: to even (2)
      f(0x00010001u),         // subnormal, below the tie: down to 1 ulp
  };
  std::vector<uint16_t> expected = {0x3f80, 0x3f80, 0x3f82, 0x3f81, 0xbf80, 0x8000, 0x7f80,
                                    0xff80, 0x7f80, 0x7f7f, 0x0000, 0x0002, 0x0001};
  EXPECT_EQ(to_half_bits<bf16>(in), expected);
  // NaN stays NaN (quiet), whatever its payload, and keeps its sign.
  std::vector<uint16_t> nans = to_half_bits<bf16>({f(0x7fc00000u), f(0x7f800001u), f(0xffc00000u)});
  for (uint16_t b : nans) EXPECT_TRUE((b & 0x7f80) == 0x7f80 && (b & 0x7f) != 0) << std::hex << b;
  EXPECT_EQ(nans[2] & 0x8000, 0x8000);
  // bf16 -> f32 is exact (a shift).
  EXPECT_EQ(bf16_to_float(bf16{0x3f81}), 1.0f + 0x1p-7f);
  EXPECT_EQ(std::bit_cast<uint32_t>(bf16_to_float(bf16{0x0001})), 0x00010000u);
}

TEST(Conversion, F16RoundToNearestEvenSubnormalsAndOverflow) {
  // f16: 10 mantissa bits, ulp(1) = 2^-10; smallest subnormal 2^-24; largest finite 65504.
  std::vector<float> in = {
      1.0f,
      1.0f + 0x1p-11f,       // tie: to even (1)
      1.0f + 3 * 0x1p-11f,   // tie: to even (1 + 2^-9)
      -2.0f - 0x1p-10f,      // tie at exponent 1 with sign: to even
      0x1p-24f,              // smallest subnormal
      0x1p-25f,              // tie between 0 and the smallest subnormal: 0
      3 * 0x1p-25f,          // tie between 1 and 2 subnormal ulps: 2
      1023 * 0x1p-24f,       // largest subnormal
      0x1p-14f,              // smallest normal
      0x1p-14f - 0x1p-25f,   // tie between the largest subnormal and the smallest normal: to even (normal)
      65504.0f,              // largest finite
      65519.0f,              // below the tie with 65536: stays 65504
      65520.0f,              // the tie: to even, which is infinity
      1e6f,                  // overflow: infinity
      -1e6f,
      -0.0f,
      INFINITY,
      -INFINITY,
      1e-10f,                // underflow to 0, sign kept below
      -1e-10f,
  };
  std::vector<uint16_t> expected = {0x3c00, 0x3c00, 0x3c02, 0xc000, 0x0001, 0x0000, 0x0002, 0x03ff, 0x0400, 0x0400,
                                    0x7bff, 0x7bff, 0x7c00, 0x7c00, 0xfc00, 0x8000, 0x7c00, 0xfc00, 0x0000, 0x8000};
  EXPECT_EQ(to_half_bits<f16>(in), expected);
  std::vector<uint16_t> nans = to_half_bits<f16>({f(0x7fc00000u), f(0x7f800001u)});
  for (uint16_t b : nans) EXPECT_TRUE((b & 0x7c00) == 0x7c00 && (b & 0x3ff) != 0) << std::hex << b;
  // f16 -> f32 is exact for every pattern, subnormals included.
  EXPECT_EQ(f16_to_float(f16{0x0001}), 0x1p-24f);
  EXPECT_EQ(f16_to_float(f16{0x03ff}), 1023 * 0x1p-24f);
  EXPECT_EQ(f16_to_float(f16{0x7bff}), 65504.0f);
  EXPECT_EQ(std::bit_cast<uint32_t>(f16_to_float(f16{0x8000})), 0x80000000u);
  EXPECT_TRUE(std::isinf(f16_to_float(f16{0xfc00})) && f16_to_float(f16{0xfc00}) < 0);
  EXPECT_TRUE(std::isnan(f16_to_float(f16{0x7e00})));
  // Every f16 survives f16 -> f32 -> f16.
  for (uint32_t b = 0; b < 0x10000; ++b) {
    f16 h{uint16_t(b)};
    if ((b & 0x7c00) == 0x7c00 && (b & 0x3ff)) continue;  // NaNs: checked above
    ASSERT_EQ(float_to_f16(f16_to_float(h)).bits, h.bits) << std::hex << b;
  }
}

TEST(Conversion, IntegersBoolAndDoubles) {
  Tensor x = from_vector({2.7, -2.7, 0.0, 1e9, 0.5}, {5}, DType::F64);
  // Float to integer truncates toward zero.
  EXPECT_TRUE(test::values_are(convert(x, DType::I32), {2, -2, 0, 1e9, 0}));
  EXPECT_TRUE(test::values_are(convert(x, DType::I64), {2, -2, 0, 1e9, 0}));
  // Bool: anything non-zero is true (NaN too); stored as 0/1 bytes.
  Tensor b = convert(from_vector({0.0, -0.0, 0.1, -3.0, NAN}, {5}), DType::Bool);
  EXPECT_TRUE(test::values_are(b, {0, 0, 1, 1, 1}));
  const uint8_t* raw = static_cast<const uint8_t*>(b.data_ptr());
  for (int i = 0; i < 5; ++i) EXPECT_LE(raw[i], 1);
  EXPECT_TRUE(test::values_are(convert(from_vector({0, 1, 200, 255}, {4}), DType::U8), {0, 1, 200, 255}));
  // Large int64 values survive an I64 -> I64 copy exactly (no trip through double).
  Tensor big = from_data<int64_t>({INT64_MAX, INT64_MIN + 1}, {2});
  Tensor big2 = empty({2}, DType::I64);
  copy_(big2, big);
  EXPECT_EQ(big2.data<int64_t>()[0], INT64_MAX);
  EXPECT_EQ(big2.data<int64_t>()[1], INT64_MIN + 1);
  // F64 -> F32 rounds to nearest; bf16 -> F64 widens exactly.
  EXPECT_EQ(convert(from_vector({1.0 + 0x1p-30}, {1}, DType::F64), DType::F32).data<float>()[0], 1.0f);
  EXPECT_EQ(to_vector(convert(from_vector({1.0 + 0x1p-7}, {1}, DType::BF16), DType::F64))[0], 1.0 + 0x1p-7);
}

TEST(Copy, SameDTypeCopiesAreBitExact) {
  // NaN payloads and -0 pass a same-dtype copy untouched, also through strided layouts.
  std::vector<uint32_t> bits = {0x7fc01234u, 0x80000000u, 0xff800000u, 0x00000001u, 0x7f800001u, 0x3f800000u};
  Tensor src = empty({2, 3});
  std::memcpy(src.data_ptr(), bits.data(), 24);
  Tensor dst = empty({3, 2});
  copy_(as_strided(dst, {2, 3}, {1, 2}, 0), src);  // write through a transposed view
  Tensor back = contiguous_raw(as_strided(dst, {2, 3}, {1, 2}, 0));
  std::vector<uint32_t> got(6);
  std::memcpy(got.data(), back.data_ptr(), 24);
  EXPECT_EQ(got, bits);
}

TEST(Copy, AcrossDTypesAndLayouts) {
  Tensor a = from_vector({1, 2, 3, 4, 5, 6}, {2, 3}, DType::F64);
  // Transposed source into a contiguous destination of another dtype.
  Tensor t = as_strided(a, {3, 2}, {1, 3}, 0);
  EXPECT_FALSE(t.is_contiguous());
  for (DType dt : {DType::F32, DType::BF16, DType::F16, DType::I32, DType::I64, DType::U8}) {
    SCOPED_TRACE(std::string(dtype_name(dt)));
    Tensor c = convert(t, dt);
    EXPECT_TRUE(c.is_contiguous());
    EXPECT_EQ(c.dtype(), dt);
    EXPECT_TRUE(test::values_are(c, {1, 4, 2, 5, 3, 6}));
    // ... and back into a strided destination (every other element of a larger buffer).
    Tensor wide = zeros({12}, DType::F64);
    copy_(as_strided(wide, {3, 2}, {4, 2}, 1), c);
    EXPECT_TRUE(test::values_are(wide, {0, 1, 0, 4, 0, 2, 0, 5, 0, 3, 0, 6}));
  }
  // Broadcasting source: a row into every row, a scalar everywhere.
  Tensor d = zeros({3, 2}, DType::F32);
  copy_(d, from_vector({7, 8}, {2}, DType::I64));
  EXPECT_TRUE(test::values_are(d, {7, 8, 7, 8, 7, 8}));
  copy_(d, scalar_tensor(-1.5, DType::F64));
  EXPECT_TRUE(test::values_are(d, {-1.5, -1.5, -1.5, -1.5, -1.5, -1.5}));
  EXPECT_THROW(copy_(d, zeros({4})), Error);  // does not broadcast
  // Copying bumps the destination's version (autograd's saved-tensor check relies on it).
  uint64_t v = d.storage()->version;
  copy_(d, ones({3, 2}));
  EXPECT_GT(d.storage()->version, v);
  // convert returns the same storage when nothing changes, a copy otherwise.
  Tensor same = convert(a, DType::F64);
  EXPECT_EQ(same.storage(), a.storage());
  EXPECT_NE(convert(a, DType::F32).storage(), a.storage());
  EXPECT_NE(contiguous_raw(t).storage(), a.storage());
  // Zero-size copies are no-ops; 0-dim tensors copy their one element.
  copy_(zeros({0, 3}), zeros({0, 3}, DType::I32));
  Tensor s = scalar_tensor(0.0, DType::BF16);
  copy_(s, scalar_tensor(2.5, DType::I64));  // the I64 scalar holds 2 (truncated)
  EXPECT_EQ(s.item(), 2.0);
}

}  // namespace
}  // namespace vlp
