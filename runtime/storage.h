// Storage: one block of device memory shared by every tensor that views it. Blocks come from a
// per-device Allocator (pluggable: the CUDA backend installs a caching allocator) or wrap memory the
// runtime does not own (a memory-mapped safetensors file), kept alive by `owner`.
//
// Host memory comes from a caching allocator: freed blocks go to per-size-class free lists and are
// handed out again, so a training loop that allocates the same shapes every step stops calling
// malloc/free for its large tensors (each of which glibc would mmap, fault in page by page, and
// munmap again). Cached free bytes are capped at the peak of live bytes; release_cached_memory()
// returns them to the system. VLP_CPU_ALLOCATOR=plain (read once, at first use) switches to plain
// aligned_alloc/free, e.g. for memory checkers.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>

#include "runtime/dtype.h"

namespace vlp {

struct Allocator {
  virtual ~Allocator() = default;
  virtual void* allocate(size_t nbytes) = 0;
  virtual void deallocate(void* ptr, size_t nbytes) = 0;
};

// The allocator used for new storage on a device; nullptr where none is installed (CUDA in a build
// without the CUDA backend). set_allocator replaces it; the previous one must outlive its blocks.
Allocator* get_allocator(Device device);
void set_allocator(Device device, Allocator* allocator);

// Bytes held by live storages allocated on a device, and the high-water mark since the last reset.
// Memory the runtime only wraps (mmapped files) is not counted.
struct MemoryStats {
  int64_t current_bytes = 0;
  int64_t peak_bytes = 0;
  int64_t num_allocations = 0;  // allocations since start (never reset)
  // Host caching allocator only (0 elsewhere): bytes of freed blocks held for reuse, and how many
  // allocations were served from them (since start).
  int64_t cached_bytes = 0;
  int64_t num_cache_hits = 0;
};
MemoryStats memory_stats(Device device);
void reset_peak_memory(Device device);
// Frees the blocks the host caching allocator holds for reuse (no effect with VLP_CPU_ALLOCATOR=plain
// or another allocator installed).
void release_cached_memory(Device device);

struct Storage {
  void* data = nullptr;
  size_t nbytes = 0;
  Device device;
  std::shared_ptr<void> owner;  // releases the memory when the last tensor viewing it is gone
  // Bumped by every in-place write through the runtime, so autograd can tell when a tensor it saved
  // for backward was modified afterwards.
  uint64_t version = 0;
  // Host memory that is page-locked for fast, truly asynchronous uploads to a GPU (pin_memory()).
  bool pinned = false;
};

std::shared_ptr<Storage> allocate_storage(size_t nbytes, Device device);
std::shared_ptr<Storage> wrap_storage(void* data, size_t nbytes, Device device, std::shared_ptr<void> owner);

}  // namespace vlp
