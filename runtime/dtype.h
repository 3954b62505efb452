// Element types and devices. DType names follow safetensors ("F32", "BF16", ...).
#pragma once
#include <cstddef>
#include <cstdint>
#include <ostream>
#include <string>
#include <string_view>

#include "kernels/cpu/half.h"

namespace vlp {

enum class DType : uint8_t { F32, F64, BF16, F16, I32, I64, U8, Bool };

size_t dtype_size(DType dt);
std::string_view dtype_name(DType dt);  // "F32", "BF16", ... as in safetensors headers
bool dtype_from_name(std::string_view name, DType* out);
inline bool is_floating(DType dt) {
  return dt == DType::F32 || dt == DType::F64 || dt == DType::BF16 || dt == DType::F16;
}
inline std::ostream& operator<<(std::ostream& os, DType dt) { return os << dtype_name(dt); }

// The C++ type stored for each DType, and back.
template <class T> constexpr DType dtype_of();
template <> constexpr DType dtype_of<float>() { return DType::F32; }
template <> constexpr DType dtype_of<double>() { return DType::F64; }
template <> constexpr DType dtype_of<bf16>() { return DType::BF16; }
template <> constexpr DType dtype_of<f16>() { return DType::F16; }
template <> constexpr DType dtype_of<int32_t>() { return DType::I32; }
template <> constexpr DType dtype_of<int64_t>() { return DType::I64; }
template <> constexpr DType dtype_of<uint8_t>() { return DType::U8; }
template <> constexpr DType dtype_of<bool>() { return DType::Bool; }

enum class DeviceType : uint8_t { CPU, CUDA };

struct Device {
  DeviceType type = DeviceType::CPU;
  int index = 0;
  bool is_cpu() const { return type == DeviceType::CPU; }
  bool is_cuda() const { return type == DeviceType::CUDA; }
  bool operator==(const Device&) const = default;
  static Device cpu() { return {}; }
  static Device cuda(int index = 0) { return {DeviceType::CUDA, index}; }
};
std::string to_string(Device d);  // "cpu", "cuda:0"
Device parse_device(std::string_view text);  // "cpu", "cuda", "cuda:1"; throws on anything else
inline std::ostream& operator<<(std::ostream& os, Device d) { return os << to_string(d); }

// Calls fn(T{}) with T the C++ type of dt, for every dtype (dispatch_all) or floating ones only.
template <class Fn>
decltype(auto) dispatch_all(DType dt, Fn&& fn) {
  switch (dt) {
    case DType::F32: return fn(float{});
    case DType::F64: return fn(double{});
    case DType::BF16: return fn(bf16{});
    case DType::F16: return fn(f16{});
    case DType::I32: return fn(int32_t{});
    case DType::I64: return fn(int64_t{});
    case DType::U8: return fn(uint8_t{});
    case DType::Bool: return fn(bool{});
  }
  return fn(float{});
}

}  // namespace vlp
