// The kernel-call layer: where an op's kernel is chosen by device. Autograd op files check operands,
// pick the compute dtype (compute_dtype(dt, device)), allocate outputs on the inputs' device and call
// these functions with tensors already in the compute dtype; each calls the CPU kernel (F32/F64) or the
// CUDA kernel (F32/BF16, on the tensor's GPU and its current stream). The autograd rules themselves do
// not change with the device. Families wired so far: elementwise (unary, binary), sum, and matmul/linear (gemm); the others
// still reject CUDA tensors in check_operands.
#pragma once
#include "kernels/cpu/elementwise.h"
#include "runtime/tensor.h"

namespace vlp {

// y = f(x), x and y contiguous, same dtype and device.
void call_unary_forward(const char* op, cpu::Unary kind, const Tensor& x, const Tensor& y, double a, double b);
// dx = dy * f'(.) from x or y (whichever cpu::unary_saves_output says; the other may be undefined).
void call_unary_backward(const char* op, cpu::Unary kind, const Tensor& x, const Tensor& y, const Tensor& dy,
                         const Tensor& dx, double a, double b);
// out = a (op) b over shape with the given element strides (out's own strides for out).
void call_binary(const char* op, cpu::Binary kind, const Shape& shape, const Tensor& out, const Tensor& a,
                 const Shape& a_strides, const Tensor& b, const Shape& b_strides, double alpha);
// y [outer, inner] = sum over the middle dim of contiguous x [outer, n, inner].
void call_sum_dim(const char* op, const Tensor& x, const Tensor& y, int64_t outer, int64_t n, int64_t inner);

// C = alpha op(A) op(B) + beta C, row-major as kernels/cpu/gemm.h, on matrices starting at the given
// element offsets from each tensor's data_ptr(); all three of one dtype and device. CUDA: cuBLASLt with
// exact fp32 math for F32 (no TF32) and fp32 accumulation for BF16.
void call_gemm(const char* op, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, double alpha,
               const Tensor& a, int64_t a_offset, int64_t lda, const Tensor& b, int64_t b_offset, int64_t ldb,
               double beta, const Tensor& c, int64_t c_offset, int64_t ldc);

}  // namespace vlp
