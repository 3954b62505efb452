// Elementwise kernels on the GPU, the counterparts of kernels/cpu/elementwise.h (same op enums and
// formulas), for F32 and BF16 storage computed in float. Contiguous arrays use 16-byte vector accesses
// when every pointer is 16-byte aligned; binary ops take per-operand strides (0 broadcasts, up to 8
// dims after merging) for broadcasting; where selects between two operands by a Bool condition.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>
#include <vector>

#include "kernels/cpu/elementwise.h"

namespace vlp::cuda {

enum class EwDType { F32, BF16 };

// y[i] = f(x[i]).
void unary_forward(EwDType dt, cpu::Unary op, const void* x, void* y, int64_t n, double a, double b,
                   cudaStream_t stream);
// dx[i] = dy[i] * f'(.) from x or y as cpu::unary_saves_output says (the other may be null).
void unary_backward(EwDType dt, cpu::Unary op, const void* x, const void* y, const void* dy, void* dx, int64_t n,
                    double a, double b, cudaStream_t stream);
// out = a (op) b over shape with element strides per operand; out may alias a.
void binary(EwDType dt, cpu::Binary op, const std::vector<int64_t>& shape, void* out, const int64_t* out_strides,
            const void* a, const int64_t* a_strides, const void* b, const int64_t* b_strides, double alpha,
            cudaStream_t stream);

// out = cond ? a : b over shape with element strides per operand (0 broadcasts, at most 8 dims of size
// > 1); cond is Bool (one byte per element, nonzero = true). The values are moved, not recomputed, so
// infinities and NaN in the unselected operand never leak (unlike b + cond * (a - b)).
void where(EwDType dt, const std::vector<int64_t>& shape, void* out, const int64_t* out_strides, const bool* cond,
           const int64_t* cond_strides, const void* a, const int64_t* a_strides, const void* b,
           const int64_t* b_strides, cudaStream_t stream);

}  // namespace vlp::cuda
