// Device data movement: a strided copy with dtype conversion between two views on one GPU (the device
// half of contiguous(), casts and broadcasting), and a fill. Element type codes follow vlp::DType:
// F32, F64, BF16, F16, I32, I64, U8, Bool. Up to 8 dims (size-1 dims do not count).
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>
#include <vector>

namespace vlp::cuda {

constexpr int kMaxCopyDims = 8;

// dst[i] = convert(src[i]) over `shape` with per-view strides in elements (stride 0 broadcasts). Same
// dtypes copy bits; integer to integer goes through int64; anything else through double (float to
// BF16/F16 rounds to nearest even, as the CPU does). Contiguous same-dtype views use cudaMemcpyAsync.
void copy_strided(int dst_dtype, void* dst, const int64_t* dst_strides, int src_dtype, const void* src,
                  const int64_t* src_strides, const std::vector<int64_t>& shape, cudaStream_t stream);

// Every element of the strided view set to value converted to the dtype.
void fill_strided(int dtype, void* dst, const int64_t* strides, const std::vector<int64_t>& shape, double value,
                  cudaStream_t stream);
// The same with the element given as its bytes (the low elem_size bytes of `bits`): exact for every dtype
// (I64 beyond 2^53 included). The value travels as a kernel argument, so the host never waits.
void fill_strided_bits(int dtype, void* dst, const int64_t* strides, const std::vector<int64_t>& shape,
                       uint64_t bits, cudaStream_t stream);

}  // namespace vlp::cuda
