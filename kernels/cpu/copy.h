// Strided copy with dtype conversion: the one data-movement kernel the runtime needs (contiguous(),
// dtype casts, broadcasting into a buffer). Operates on raw pointers; the caller validates shapes.
#pragma once
#include <cstdint>
#include <vector>

namespace vlp::cpu {

// Element type codes match vlp::DType's order: F32, F64, BF16, F16, I32, I64, U8, Bool.
void copy_strided(int dst_dtype, void* dst, const int64_t* dst_strides, int src_dtype, const void* src,
                  const int64_t* src_strides, const std::vector<int64_t>& shape);

// Sets every element of a strided view to value (converted to the element type).
void fill_strided(int dtype, void* dst, const int64_t* strides, const std::vector<int64_t>& shape, double value);

}  // namespace vlp::cpu
