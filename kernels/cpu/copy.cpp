// copy_strided: dst[i] = convert(src[i]) over any two layouts of one shape. The conversion goes through
// double only for mixed types; same-type copies move the bytes as they are (so NaN payloads and -0
// survive, and bf16 -> bf16 is exact).
#include "kernels/cpu/copy.h"

#include <cstring>

#include "kernels/cpu/half.h"
#include "kernels/cpu/strided.h"

namespace vlp::cpu {

namespace {

template <class Fn>
void with_type(int code, Fn&& fn) {
  switch (code) {
    case 0: fn(float{}); break;
    case 1: fn(double{}); break;
    case 2: fn(bf16{}); break;
    case 3: fn(f16{}); break;
    case 4: fn(int32_t{}); break;
    case 5: fn(int64_t{}); break;
    case 6: fn(uint8_t{}); break;
    default: fn(bool{}); break;
  }
}

template <class D, class S>
D convert_one(S v) {
  if constexpr (std::is_same_v<D, S>) return v;
  else if constexpr (std::is_same_v<S, float> && std::is_same_v<D, bf16>) return float_to_bf16(v);
  else if constexpr (std::is_same_v<S, bf16> && std::is_same_v<D, float>) return bf16_to_float(v);
  else if constexpr (std::is_same_v<S, float> && std::is_same_v<D, f16>) return float_to_f16(v);
  else if constexpr (std::is_same_v<S, f16> && std::is_same_v<D, float>) return f16_to_float(v);
  else return from_double<D>(to_double(v));
}

}  // namespace

void copy_strided(int dst_dtype, void* dst, const int64_t* dst_strides, int src_dtype, const void* src,
                  const int64_t* src_strides, const std::vector<int64_t>& shape) {
  StridedLoop<2> loop(shape, {dst_strides, src_strides});
  with_type(dst_dtype, [&](auto d0) {
    using D = decltype(d0);
    with_type(src_dtype, [&](auto s0) {
      using S = decltype(s0);
      D* out = static_cast<D*>(dst);
      const S* in = static_cast<const S*>(src);
      loop.run([&](std::array<int64_t, 2> off, std::array<int64_t, 2> step, int64_t n) {
        D* o = out + off[0];
        const S* x = in + off[1];
        if constexpr (std::is_same_v<D, S>) {
          if (step[0] == 1 && step[1] == 1) {
            std::memcpy(o, x, size_t(n) * sizeof(D));
            return;
          }
        }
        for (int64_t i = 0; i < n; ++i) o[i * step[0]] = convert_one<D>(x[i * step[1]]);
      });
    });
  });
}

void fill_strided(int dtype, void* dst, const int64_t* strides, const std::vector<int64_t>& shape, double value) {
  StridedLoop<1> loop(shape, {strides});
  with_type(dtype, [&](auto t0) {
    using T = decltype(t0);
    const T v = from_double<T>(value);
    T* out = static_cast<T*>(dst);
    loop.run([&](std::array<int64_t, 1> off, std::array<int64_t, 1> step, int64_t n) {
      for (int64_t i = 0; i < n; ++i) out[off[0] + i * step[0]] = v;
    });
  });
}

}  // namespace vlp::cpu
