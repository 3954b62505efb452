// bf16 and f16 storage types for the CPU kernels: 16-bit containers converted to and from float with
// round-to-nearest-even. The CPU backend computes in float; these exist so that bf16/f16 tensors can
// be stored, loaded from checkpoints and compared against the CUDA backend.
#pragma once
#include <bit>
#include <cmath>
#include <cstdint>

namespace vlp {

struct bf16 {
  uint16_t bits = 0;
};
struct f16 {
  uint16_t bits = 0;
};

inline float bf16_to_float(bf16 h) { return std::bit_cast<float>(uint32_t(h.bits) << 16); }

inline bf16 float_to_bf16(float f) {
  uint32_t x = std::bit_cast<uint32_t>(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return bf16{uint16_t((x >> 16) | 0x40)};  // quiet NaN
  x += 0x7fffu + ((x >> 16) & 1u);                                                // ties to even
  return bf16{uint16_t(x >> 16)};
}

inline float f16_to_float(f16 h) {
  uint32_t sign = uint32_t(h.bits & 0x8000u) << 16;
  uint32_t exp = (h.bits >> 10) & 0x1fu, mant = h.bits & 0x3ffu;
  if (exp == 0) {  // zero or subnormal: mant * 2^-24
    float v = float(mant) * 5.9604644775390625e-08f;
    return std::bit_cast<float>(std::bit_cast<uint32_t>(v) | sign);
  }
  if (exp == 31) return std::bit_cast<float>(sign | 0x7f800000u | (mant << 13));
  return std::bit_cast<float>(sign | ((exp + 112u) << 23) | (mant << 13));
}

inline f16 float_to_f16(float f) {
  uint32_t x = std::bit_cast<uint32_t>(f);
  uint16_t sign = uint16_t((x >> 16) & 0x8000u);
  uint32_t ax = x & 0x7fffffffu;
  if (ax >= 0x7f800000u) return f16{uint16_t(sign | 0x7c00u | (ax > 0x7f800000u ? 0x200u : 0u))};
  if (ax >= 0x47800000u) return f16{uint16_t(sign | 0x7c00u)};  // >= 65536: infinity
  if (ax < 0x38800000u) {  // below 2^-14: f16 subnormal, m * 2^-24 with m rounded to even
    float scaled = std::bit_cast<float>(ax) * 16777216.0f;  // exact power-of-two scaling
    return f16{uint16_t(sign | uint16_t(std::nearbyint(scaled)))};
  }
  uint32_t h = ((((ax >> 23) - 112u) << 10) | ((ax & 0x7fffffu) >> 13));
  uint32_t rest = ax & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) h++;  // a carry into the exponent is correct
  return f16{uint16_t(sign | h)};
}

// Scalar conversion used by the copy kernels: any storage type to any other, through float/double.
template <class T> inline double to_double(T v) { return double(v); }
template <> inline double to_double(bf16 v) { return bf16_to_float(v); }
template <> inline double to_double(f16 v) { return f16_to_float(v); }
template <class T> inline T from_double(double v) { return T(v); }
template <> inline bf16 from_double(double v) { return float_to_bf16(float(v)); }
template <> inline f16 from_double(double v) { return float_to_f16(float(v)); }
template <> inline bool from_double(double v) { return v != 0.0; }

}  // namespace vlp
