// Device memory for the CUDA backend: a caching allocator per device, or plain cudaMalloc/cudaFree when
// the environment sets VLP_CUDA_MALLOC=plain (for compute-sanitizer and debugging: every block is then
// its own allocation, so out-of-bounds accesses are caught at the block's edge).
//
// Caching: a request is rounded up to its size class (512 B multiples up to 1 MiB, 2 MiB multiples
// above), served from the free blocks of the same class on the same stream, else from cudaMalloc. Freed
// blocks go back to the free list of the stream they were allocated on, so a block is only reused by
// work ordered after its last use on that stream (no cross-stream reuse, no record_stream yet). When
// cudaMalloc fails, every cached free block of the device is released and the malloc is retried once.
#pragma once
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace vlp::cuda {

struct AllocatorStats {
  int64_t allocated_bytes = 0;       // in blocks handed out (size classes, so >= what was asked)
  int64_t reserved_bytes = 0;        // obtained from cudaMalloc and not yet released
  int64_t peak_allocated_bytes = 0;  // since start or reset_peak
  int64_t peak_reserved_bytes = 0;
  int64_t num_device_mallocs = 0;    // cudaMalloc calls
  int64_t num_cache_hits = 0;        // requests served from a free block
  int64_t num_frees_to_device = 0;   // cudaFree calls (plain mode, empty_cache, OOM retries)
};

// True when VLP_CUDA_MALLOC=plain was set when the allocator was first used.
bool plain_malloc_mode();

// Memory on `device` for use on `stream` (the device's current stream when null). Throws on failure.
void* device_alloc(size_t nbytes, int device, cudaStream_t stream = nullptr);
// Returns a block from device_alloc (to the cache, or to CUDA in plain mode).
void device_free(void* ptr, int device);
// Releases every cached free block of the device to CUDA.
void empty_cache(int device);
AllocatorStats allocator_stats(int device);
void reset_peak_stats(int device);
// The size class a request of nbytes is rounded up to.
size_t size_class(size_t nbytes);

// A scratch buffer from device_alloc, returned when the object dies (kernel workspaces). Allocate it for
// the stream the kernels using it run on (null: the device's current stream).
struct DeviceBuffer {
  DeviceBuffer(size_t nbytes, int device, cudaStream_t stream = nullptr);
  ~DeviceBuffer();
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  void* ptr = nullptr;
  int device = 0;
};

}  // namespace vlp::cuda
