#include "autograd/dispatch.h"

namespace vlp {

void check_operands(const char* op, std::initializer_list<Tensor> tensors, bool same_dtype, bool cuda_ok) {
  const Tensor* first = nullptr;
  for (const Tensor& t : tensors) {
    if (!t.defined()) continue;
    if (!first) {
      first = &t;
      continue;
    }
    VLP_CHECK(t.device() == first->device(), op, ": operands on different devices (", first->device(), " and ",
              t.device(), ")");
    VLP_CHECK(!same_dtype || t.dtype() == first->dtype(), op, ": operands of different dtypes (",
              first->dtype(), " and ", t.dtype(), "); convert one with vlp::to");
  }
  VLP_CHECK(first != nullptr, op, ": no defined operand");
  VLP_CHECK(first->is_cpu() || cuda_ok, op, " has no kernel for ", first->device(), " yet");
}

Tensor index_as_i64(const char* op, const Tensor& index) {
  VLP_CHECK(index.defined(), op, ": index tensor is undefined");
  VLP_CHECK(index.dtype() == DType::I64 || index.dtype() == DType::I32, op,
            ": index tensor must be I64 or I32, got ", index.dtype());
  return convert(index, DType::I64, Device::cpu());
}

}  // namespace vlp
