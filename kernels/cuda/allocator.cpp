// Caching device allocator (see allocator.h for the policy).
#include "kernels/cuda/allocator.h"

#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <unordered_map>

#include "kernels/cuda/runtime.h"

namespace vlp::cuda {

namespace {

constexpr int kMaxDevices = 16;
constexpr size_t kSmallLimit = size_t(1) << 20;  // 1 MiB
constexpr size_t kSmallRound = 512;
constexpr size_t kLargeRound = size_t(2) << 20;  // 2 MiB

struct Block {
  size_t size = 0;
  cudaStream_t stream = nullptr;
};

struct DevicePool {
  std::mutex mutex;
  // Free blocks keyed by (stream, size class); a multimap so blocks of one class coexist.
  std::multimap<std::pair<cudaStream_t, size_t>, void*> free_blocks;
  std::unordered_map<void*, Block> live;    // handed out
  std::unordered_map<void*, Block> cached;  // free, kept
  AllocatorStats stats;
};

DevicePool& pool(int device) {
  static DevicePool* pools = new DevicePool[kMaxDevices];  // never destroyed: tensors may outlive statics
  if (device < 0 || device >= kMaxDevices) throw std::runtime_error("CUDA device index out of range");
  return pools[device];
}

bool read_plain_mode() {
  const char* v = std::getenv("VLP_CUDA_MALLOC");
  return v != nullptr && std::strcmp(v, "plain") == 0;
}

void bump_peaks(AllocatorStats& s) {
  if (s.allocated_bytes > s.peak_allocated_bytes) s.peak_allocated_bytes = s.allocated_bytes;
  if (s.reserved_bytes > s.peak_reserved_bytes) s.peak_reserved_bytes = s.reserved_bytes;
}

// Releases all cached blocks; the caller holds the pool's mutex.
void release_cached(DevicePool& p) {
  for (auto& [ptr, block] : p.cached) {
    cudaFree(ptr);
    p.stats.reserved_bytes -= int64_t(block.size);
    p.stats.num_frees_to_device++;
  }
  p.cached.clear();
  p.free_blocks.clear();
}

struct DeviceScope {  // makes `device` current for the duration of a call
  explicit DeviceScope(int device) {
    cudaGetDevice(&previous);
    if (previous != device) check(cudaSetDevice(device), "cudaSetDevice");
  }
  ~DeviceScope() { cudaSetDevice(previous); }
  int previous = 0;
};

}  // namespace

bool plain_malloc_mode() {
  static const bool plain = read_plain_mode();
  return plain;
}

size_t size_class(size_t nbytes) {
  if (nbytes == 0) nbytes = 1;
  if (nbytes <= kSmallLimit) return (nbytes + kSmallRound - 1) / kSmallRound * kSmallRound;
  return (nbytes + kLargeRound - 1) / kLargeRound * kLargeRound;
}

void* device_alloc(size_t nbytes, int device, cudaStream_t stream) {
  if (!stream) stream = current_stream(device);
  DevicePool& p = pool(device);
  const size_t size = size_class(nbytes);
  std::lock_guard<std::mutex> lock(p.mutex);
  auto it = plain_malloc_mode() ? p.free_blocks.end() : p.free_blocks.find({stream, size});
  if (it != p.free_blocks.end()) {
    void* ptr = it->second;
    p.free_blocks.erase(it);
    p.cached.erase(ptr);
    p.live[ptr] = Block{size, stream};
    p.stats.allocated_bytes += int64_t(size);
    p.stats.num_cache_hits++;
    bump_peaks(p.stats);
    return ptr;
  }
  DeviceScope scope(device);
  void* ptr = nullptr;
  cudaError_t st = cudaMalloc(&ptr, size);
  if (st == cudaErrorMemoryAllocation && !p.cached.empty()) {
    cudaGetLastError();
    // Blocks may still be in use by queued kernels on their streams: wait before releasing them.
    check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
    release_cached(p);
    st = cudaMalloc(&ptr, size);
  }
  if (st != cudaSuccess) {
    cudaGetLastError();
    throw std::runtime_error("CUDA out of memory allocating " + std::to_string(nbytes) + " bytes on cuda:" +
                             std::to_string(device) + " (" + cudaGetErrorString(st) + "; " +
                             std::to_string(p.stats.allocated_bytes) + " bytes allocated, " +
                             std::to_string(p.stats.reserved_bytes) + " reserved)");
  }
  p.live[ptr] = Block{size, stream};
  p.stats.num_device_mallocs++;
  p.stats.allocated_bytes += int64_t(size);
  p.stats.reserved_bytes += int64_t(size);
  bump_peaks(p.stats);
  return ptr;
}

void device_free(void* ptr, int device) {
  if (!ptr) return;
  DevicePool& p = pool(device);
  std::lock_guard<std::mutex> lock(p.mutex);
  auto it = p.live.find(ptr);
  if (it == p.live.end()) throw std::runtime_error("device_free: pointer not allocated by the CUDA allocator");
  Block block = it->second;
  p.live.erase(it);
  p.stats.allocated_bytes -= int64_t(block.size);
  if (plain_malloc_mode()) {
    DeviceScope scope(device);
    cudaFree(ptr);  // synchronises the device: no pending kernel can still use the block
    p.stats.reserved_bytes -= int64_t(block.size);
    p.stats.num_frees_to_device++;
    return;
  }
  p.cached[ptr] = block;
  p.free_blocks.insert({{block.stream, block.size}, ptr});
}

void empty_cache(int device) {
  DevicePool& p = pool(device);
  std::lock_guard<std::mutex> lock(p.mutex);
  if (p.cached.empty()) return;
  DeviceScope scope(device);
  check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
  release_cached(p);
}

AllocatorStats allocator_stats(int device) {
  DevicePool& p = pool(device);
  std::lock_guard<std::mutex> lock(p.mutex);
  return p.stats;
}

void reset_peak_stats(int device) {
  DevicePool& p = pool(device);
  std::lock_guard<std::mutex> lock(p.mutex);
  p.stats.peak_allocated_bytes = p.stats.allocated_bytes;
  p.stats.peak_reserved_bytes = p.stats.reserved_bytes;
}

DeviceBuffer::DeviceBuffer(size_t nbytes, int dev, cudaStream_t stream)
    : ptr(device_alloc(nbytes, dev, stream)), device(dev) {}
DeviceBuffer::~DeviceBuffer() {
  try {
    device_free(ptr, device);
  } catch (...) {
  }
}

}  // namespace vlp::cuda
