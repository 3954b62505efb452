// Copies that involve a device other than the CPU, and the CUDA device queries the runtime exposes. The
// CUDA backend (runtime/cuda_backend.cpp, built when kernels/cuda has sources) implements them; a
// CPU-only build refuses copies with a clear message and reports no device.
#pragma once
#include "runtime/tensor.h"

namespace vlp {

// dst[i] = src[i] where dst or src lives on a GPU; src_strides are src's strides broadcast to dst's shape.
void copy_across_devices(const Tensor& dst, const Tensor& src, const Shape& src_strides);

// True when this build has the CUDA backend and at least one GPU is visible. Never throws or aborts.
bool cuda_available();
int cuda_device_count();
// Why cuda_available() is false ("built without the CUDA backend", "no CUDA device", the driver's
// error), or "" when it is true.
std::string cuda_unavailable_reason();

// The allocator storage.cpp installs for a GPU on first use: the caching allocator of the CUDA
// backend (VLP_CUDA_MALLOC=plain for plain cudaMalloc/cudaFree), or nullptr when the device does not exist.
Allocator* cuda_default_allocator(int index);

// Waits for all work queued on a GPU.
void cuda_synchronize(int index = 0);
// Returns the caching allocator's free blocks of a GPU to CUDA.
void cuda_empty_cache(int index = 0);

// The caching allocator's view of a GPU (memory_stats(Device) counts live tensor bytes instead).
struct CudaMemoryStats {
  int64_t allocated_bytes = 0, reserved_bytes = 0, peak_allocated_bytes = 0, peak_reserved_bytes = 0;
  int64_t num_device_mallocs = 0, num_cache_hits = 0, num_frees_to_device = 0;
  bool plain_malloc = false;  // VLP_CUDA_MALLOC=plain
};
CudaMemoryStats cuda_memory_stats(int index = 0);
void cuda_reset_peak_memory(int index = 0);

// A contiguous CPU copy of t in page-locked (pinned) host memory, which the GPU reads directly: an upload
// from it skips the pageable staging copy. Without a usable GPU (or in a CPU-only build) pinning is
// impossible and this returns an ordinary contiguous CPU copy, so data pipelines can ask for pinned
// batches unconditionally. The data loader does this with LoaderOptions::pin_memory.
Tensor pin_memory(const Tensor& t);
// True when t's storage is page-locked host memory.
bool is_pinned(const Tensor& t);

}  // namespace vlp
