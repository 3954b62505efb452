#include "runtime/dtype.h"

#include "runtime/error.h"

namespace vlp {

namespace {
struct DTypeInfo {
  DType dt;
  size_t size;
  std::string_view name;
};
constexpr DTypeInfo kDTypes[] = {
    {DType::F32, 4, "F32"}, {DType::F64, 8, "F64"}, {DType::BF16, 2, "BF16"}, {DType::F16, 2, "F16"},
    {DType::I32, 4, "I32"}, {DType::I64, 8, "I64"}, {DType::U8, 1, "U8"},     {DType::Bool, 1, "BOOL"},
};
}  // namespace

size_t dtype_size(DType dt) { return kDTypes[int(dt)].size; }
std::string_view dtype_name(DType dt) { return kDTypes[int(dt)].name; }

bool dtype_from_name(std::string_view name, DType* out) {
  for (const auto& info : kDTypes) {
    if (info.name == name) {
      *out = info.dt;
      return true;
    }
  }
  return false;
}

std::string to_string(Device d) { return d.is_cpu() ? "cpu" : str("cuda:", d.index); }

Device parse_device(std::string_view text) {
  if (text == "cpu") return Device::cpu();
  if (text == "cuda") return Device::cuda(0);
  if (text.substr(0, 5) == "cuda:" && text.size() > 5) {
    int index = 0;
    for (char c : text.substr(5)) {
      VLP_CHECK(c >= '0' && c <= '9', "invalid device '", text, "': expected cpu, cuda or cuda:N");
      index = index * 10 + (c - '0');
    }
    return Device::cuda(index);
  }
  VLP_FAIL("invalid device '", text, "': expected cpu, cuda or cuda:N");
}

}  // namespace vlp
