// What every op file uses to pick and call a kernel: operand checks that name the op, and dtype dispatch
// to the CPU kernels (instantiated for float and double). Ops whose family is wired in the kernel-call
// layer (autograd/kernel_calls.h) also run on CUDA: they pass cuda_ok and use compute_dtype(dt, device).
#pragma once
#include <initializer_list>

#include "runtime/tensor.h"

namespace vlp {

// All defined tensors on one device (with one dtype when same_dtype), on a device this op supports: the
// CPU, or also a GPU when cuda_ok (the op's kernels go through autograd/kernel_calls.h).
void check_operands(const char* op, std::initializer_list<Tensor> tensors, bool same_dtype = true,
                    bool cuda_ok = false);

// Calls fn(float{}) or fn(double{}) for F32 / F64; any other dtype is a clear error naming the op.
template <class Fn>
void dispatch_float(const char* op, DType dt, Fn&& fn) {
  if (dt == DType::F32) fn(float{});
  else if (dt == DType::F64) fn(double{});
  else VLP_FAIL(op, ": CPU kernels compute in F32 or F64, got ", dt, "; convert first with vlp::to(x, DType::F32)");
}

// A dtype in which the CPU kernels can compute x: F16 and BF16 are computed in F32.
inline DType compute_dtype(DType dt) { return dt == DType::F64 ? DType::F64 : DType::F32; }
// The same for a device: the CUDA kernels compute BF16 as it is (float math inside) and F16 in F32; F64
// stays F64 (and is refused by the CUDA kernels with a message naming the op).
inline DType compute_dtype(DType dt, Device device) {
  if (device.is_cpu()) return compute_dtype(dt);
  return dt == DType::BF16 || dt == DType::F64 ? dt : DType::F32;
}

// Index tensors (I32 or I64) converted to a contiguous I64 CPU tensor.
Tensor index_as_i64(const char* op, const Tensor& index);

}  // namespace vlp
