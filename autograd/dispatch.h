// What every op file uses to pick and call a kernel: operand checks that name the op, and dtype dispatch
// to the CPU kernels (instantiated for float and double). The CUDA backend adds its branch per op.
#pragma once
#include <initializer_list>

#include "runtime/tensor.h"

namespace vlp {

// All defined tensors on one device (with one dtype when same_dtype), on a device this op supports.
void check_operands(const char* op, std::initializer_list<Tensor> tensors, bool same_dtype = true);

// Calls fn(float{}) or fn(double{}) for F32 / F64; any other dtype is a clear error naming the op.
template <class Fn>
void dispatch_float(const char* op, DType dt, Fn&& fn) {
  if (dt == DType::F32) fn(float{});
  else if (dt == DType::F64) fn(double{});
  else VLP_FAIL(op, ": CPU kernels compute in F32 or F64, got ", dt, "; convert first with vlp::to(x, DType::F32)");
}

// A dtype in which the CPU kernels can compute x: F16 and BF16 are computed in F32.
inline DType compute_dtype(DType dt) { return dt == DType::F64 ? DType::F64 : DType::F32; }

// Index tensors (I32 or I64) converted to a contiguous I64 CPU tensor.
Tensor index_as_i64(const char* op, const Tensor& index);

}  // namespace vlp
