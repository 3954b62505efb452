// Strided copy with dtype conversion and fill on the GPU. One kernel for every (dst, src) dtype pair:
// the dtypes are kernel arguments switched on per element (uniform across the grid, so no divergence),
// which keeps this file to a single instantiation instead of 64.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstring>
#include <stdexcept>

#include "kernels/cuda/copy.h"
#include "kernels/cuda/runtime.h"

namespace vlp::cuda {

namespace {

enum : int { F32, F64, BF16, F16, I32, I64, U8, Bool };

int elem_size(int dt) {
  switch (dt) {
    case F32: case I32: return 4;
    case F64: case I64: return 8;
    case BF16: case F16: return 2;
    default: return 1;
  }
}
bool is_int(int dt) { return dt == I32 || dt == I64 || dt == U8 || dt == Bool; }

struct Layout {
  int ndim;
  int64_t size[kMaxCopyDims];
  int64_t dst_stride[kMaxCopyDims];
  int64_t src_stride[kMaxCopyDims];
};

__device__ double load_double(int dt, const char* p) {
  switch (dt) {
    case F32: return *reinterpret_cast<const float*>(p);
    case F64: return *reinterpret_cast<const double*>(p);
    case BF16: return __bfloat162float(*reinterpret_cast<const __nv_bfloat16*>(p));
    case F16: return __half2float(*reinterpret_cast<const __half*>(p));
    case I32: return *reinterpret_cast<const int32_t*>(p);
    case I64: return double(*reinterpret_cast<const int64_t*>(p));
    case U8: return *reinterpret_cast<const uint8_t*>(p);
    default: return *reinterpret_cast<const uint8_t*>(p) != 0 ? 1.0 : 0.0;
  }
}

__device__ int64_t load_int(int dt, const char* p) {
  switch (dt) {
    case I32: return *reinterpret_cast<const int32_t*>(p);
    case I64: return *reinterpret_cast<const int64_t*>(p);
    case U8: return *reinterpret_cast<const uint8_t*>(p);
    default: return *reinterpret_cast<const uint8_t*>(p) != 0 ? 1 : 0;
  }
}

__device__ void store_double(int dt, char* p, double v) {
  switch (dt) {
    case F32: *reinterpret_cast<float*>(p) = float(v); break;
    case F64: *reinterpret_cast<double*>(p) = v; break;
    // Through float first, as the CPU converts (double -> float -> 16 bits).
    case BF16: *reinterpret_cast<__nv_bfloat16*>(p) = __float2bfloat16_rn(float(v)); break;
    case F16: *reinterpret_cast<__half*>(p) = __float2half_rn(float(v)); break;
    case I32: *reinterpret_cast<int32_t*>(p) = int32_t(v); break;
    case I64: *reinterpret_cast<int64_t*>(p) = int64_t(v); break;
    case U8: *reinterpret_cast<uint8_t*>(p) = uint8_t(v); break;
    default: *reinterpret_cast<uint8_t*>(p) = v != 0.0 ? 1 : 0; break;
  }
}

__device__ void store_int(int dt, char* p, int64_t v) {
  switch (dt) {
    case I32: *reinterpret_cast<int32_t*>(p) = int32_t(v); break;
    case I64: *reinterpret_cast<int64_t*>(p) = v; break;
    case U8: *reinterpret_cast<uint8_t*>(p) = uint8_t(v); break;
    default: *reinterpret_cast<uint8_t*>(p) = v != 0 ? 1 : 0; break;
  }
}

// mode 0: same dtype (copy elem_size bytes); 1: integer to integer; 2: through double.
__global__ void copy_kernel(Layout L, int mode, int dst_dt, char* dst, int dst_es, int src_dt, const char* src,
                            int src_es, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t rest = i, doff = 0, soff = 0;
    for (int d = L.ndim - 1; d >= 0; --d) {
      int64_t idx = rest % L.size[d];
      rest /= L.size[d];
      doff += idx * L.dst_stride[d];
      soff += idx * L.src_stride[d];
    }
    char* dp = dst + doff * dst_es;
    const char* sp = src + soff * src_es;
    if (mode == 0) {
      switch (dst_es) {
        case 1: *dp = *sp; break;
        case 2: *reinterpret_cast<uint16_t*>(dp) = *reinterpret_cast<const uint16_t*>(sp); break;
        case 4: *reinterpret_cast<uint32_t*>(dp) = *reinterpret_cast<const uint32_t*>(sp); break;
        default: *reinterpret_cast<uint64_t*>(dp) = *reinterpret_cast<const uint64_t*>(sp); break;
      }
    } else if (mode == 1) {
      store_int(dst_dt, dp, load_int(src_dt, sp));
    } else {
      store_double(dst_dt, dp, load_double(src_dt, sp));
    }
  }
}

// Element i (row-major over the layout's sizes) of the destination view, in elements.
__device__ int64_t dst_offset(const Layout& L, int64_t i) {
  int64_t off = 0;
  for (int d = L.ndim - 1; d >= 0; --d) {
    off += (i % L.size[d]) * L.dst_stride[d];
    i /= L.size[d];
  }
  return off;
}

__global__ void fill_kernel(Layout L, int dt, char* dst, int es, double value, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    store_double(dt, dst + dst_offset(L, i) * es, value);
}

// The element's bytes as given (es of them, little-endian in `bits`): an exact fill for every dtype.
__global__ void fill_bits_kernel(Layout L, char* dst, int es, uint64_t bits, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    char* p = dst + dst_offset(L, i) * es;
    switch (es) {
      case 1: *reinterpret_cast<uint8_t*>(p) = uint8_t(bits); break;
      case 2: *reinterpret_cast<uint16_t*>(p) = uint16_t(bits); break;
      case 4: *reinterpret_cast<uint32_t*>(p) = uint32_t(bits); break;
      default: *reinterpret_cast<uint64_t*>(p) = bits; break;
    }
  }
}

// Drops size-1 dims and merges adjacent dims that are contiguous in both views.
Layout make_layout(const std::vector<int64_t>& shape, const int64_t* ds, const int64_t* ss, int64_t* numel) {
  int64_t size[64], dst[64], src[64];
  int n = 0;
  *numel = 1;
  for (size_t d = 0; d < shape.size(); ++d) {
    *numel *= shape[d];
    if (shape[d] == 1) continue;
    if (n > 0 && dst[n - 1] == ds[d] * shape[d] && src[n - 1] == ss[d] * shape[d]) {
      size[n - 1] *= shape[d];
      dst[n - 1] = ds[d];
      src[n - 1] = ss[d];
      continue;
    }
    if (n == 64) throw std::runtime_error("copy_strided: too many dims");
    size[n] = shape[d], dst[n] = ds[d], src[n] = ss[d];
    ++n;
  }
  if (n > kMaxCopyDims)
    throw std::runtime_error("CUDA copy_strided: a view with " + std::to_string(n) +
                             " non-mergeable dims; at most 8 are supported");
  Layout L{};
  L.ndim = n;
  for (int d = 0; d < n; ++d) L.size[d] = size[d], L.dst_stride[d] = dst[d], L.src_stride[d] = src[d];
  return L;
}

}  // namespace

void copy_strided(int dst_dtype, void* dst, const int64_t* dst_strides, int src_dtype, const void* src,
                  const int64_t* src_strides, const std::vector<int64_t>& shape, cudaStream_t stream) {
  int64_t n = 0;
  Layout L = make_layout(shape, dst_strides, src_strides, &n);
  if (n == 0) return;
  const int des = elem_size(dst_dtype), ses = elem_size(src_dtype);
  if (dst_dtype == src_dtype && (L.ndim == 0 || (L.ndim == 1 && L.dst_stride[0] == 1 && L.src_stride[0] == 1))) {
    check(cudaMemcpyAsync(dst, src, size_t(n) * des, cudaMemcpyDeviceToDevice, stream), "copy_strided memcpy");
    return;
  }
  int mode = dst_dtype == src_dtype ? 0 : (is_int(dst_dtype) && is_int(src_dtype) ? 1 : 2);
  copy_kernel<<<grid_for(n, 256), 256, 0, stream>>>(L, mode, dst_dtype, static_cast<char*>(dst), des, src_dtype,
                                                    static_cast<const char*>(src), ses, n);
  check_launch("copy_strided");
}

void fill_strided(int dtype, void* dst, const int64_t* strides, const std::vector<int64_t>& shape, double value,
                  cudaStream_t stream) {
  int64_t n = 0;
  Layout L = make_layout(shape, strides, strides, &n);
  if (n == 0) return;
  fill_kernel<<<grid_for(n, 256), 256, 0, stream>>>(L, dtype, static_cast<char*>(dst), elem_size(dtype), value, n);
  check_launch("fill_strided");
}

void fill_strided_bits(int dtype, void* dst, const int64_t* strides, const std::vector<int64_t>& shape,
                       uint64_t bits, cudaStream_t stream) {
  int64_t n = 0;
  Layout L = make_layout(shape, strides, strides, &n);
  if (n == 0) return;
  fill_bits_kernel<<<grid_for(n, 256), 256, 0, stream>>>(L, static_cast<char*>(dst), elem_size(dtype), bits, n);
  check_launch("fill_strided_bits");
}

}  // namespace vlp::cuda
