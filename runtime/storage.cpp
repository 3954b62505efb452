#include "runtime/storage.h"

#include <atomic>
#include <bit>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "runtime/device_copy.h"
#include "runtime/error.h"

namespace vlp {

namespace {

// 64-byte aligned host memory (one cache line; also the alignment AVX-512 loads like).
void* aligned_host_alloc(size_t nbytes) {
  size_t rounded = (nbytes + 63) / 64 * 64;
  void* p = std::aligned_alloc(64, rounded == 0 ? 64 : rounded);
  VLP_CHECK(p != nullptr, "out of host memory allocating ", nbytes, " bytes");
  return p;
}

struct CpuAllocator final : Allocator {
  void* allocate(size_t nbytes) override { return aligned_host_alloc(nbytes); }
  void deallocate(void* ptr, size_t) override { std::free(ptr); }
};

// The block size serving a request: multiples of 64 bytes up to 1 KiB, then 8 classes per power of two
// (at most 12.5% more than asked), so a size seen again finds a block of its class.
size_t size_class(size_t nbytes) {
  if (nbytes <= 1024) return nbytes == 0 ? 64 : (nbytes + 63) / 64 * 64;
  size_t step = size_t(1) << (std::bit_width(nbytes - 1) - 4);
  return (nbytes + step - 1) / step * step;
}

// Free lists per size class behind one mutex (allocations are per tensor, not per element, so the lock
// is cheap next to the work done on the memory). Cached bytes are capped at the high-water mark of the
// bytes handed out, so a run holds at most about twice its peak; blocks beyond the cap are freed.
struct CachingCpuAllocator final : Allocator {
  std::mutex mutex;
  std::unordered_map<size_t, std::vector<void*>> free_blocks;
  int64_t cached = 0, in_use = 0, in_use_peak = 0, hits = 0;

  void* allocate(size_t nbytes) override {
    size_t size = size_class(nbytes);
    {
      std::lock_guard<std::mutex> lock(mutex);
      in_use += int64_t(size);
      if (in_use > in_use_peak) in_use_peak = in_use;
      auto it = free_blocks.find(size);
      if (it != free_blocks.end() && !it->second.empty()) {
        void* p = it->second.back();
        it->second.pop_back();
        cached -= int64_t(size);
        ++hits;
        return p;
      }
    }
    void* p = std::aligned_alloc(64, size);
    if (p == nullptr) {  // give the cache back to the system and try once more
      release();
      p = std::aligned_alloc(64, size);
    }
    if (p == nullptr) {
      std::lock_guard<std::mutex> lock(mutex);
      in_use -= int64_t(size);
    }
    VLP_CHECK(p != nullptr, "out of host memory allocating ", nbytes, " bytes");
    return p;
  }

  void deallocate(void* ptr, size_t nbytes) override {
    size_t size = size_class(nbytes);
    {
      std::lock_guard<std::mutex> lock(mutex);
      in_use -= int64_t(size);
      if (cached + int64_t(size) <= in_use_peak) {
        free_blocks[size].push_back(ptr);
        cached += int64_t(size);
        return;
      }
    }
    std::free(ptr);
  }

  void release() {
    std::unordered_map<size_t, std::vector<void*>> blocks;
    {
      std::lock_guard<std::mutex> lock(mutex);
      blocks.swap(free_blocks);
      cached = 0;
    }
    for (auto& [size, list] : blocks)
      for (void* p : list) std::free(p);
  }
};

// The host allocator chosen by VLP_CPU_ALLOCATOR ("plain" or unset/"caching"). Never destroyed: storages
// held by static objects may be released after every function-local static is gone.
CachingCpuAllocator* caching_cpu_allocator() {
  static CachingCpuAllocator* caching = [] {
    const char* env = std::getenv("VLP_CPU_ALLOCATOR");
    if (env != nullptr && std::strcmp(env, "plain") == 0) return static_cast<CachingCpuAllocator*>(nullptr);
    VLP_CHECK(env == nullptr || *env == 0 || std::strcmp(env, "caching") == 0,
              "VLP_CPU_ALLOCATOR must be 'caching' or 'plain', got '", env, "'");
    return new CachingCpuAllocator();
  }();
  return caching;
}

Allocator* default_cpu_allocator() {
  static CpuAllocator plain;
  CachingCpuAllocator* caching = caching_cpu_allocator();
  return caching != nullptr ? static_cast<Allocator*>(caching) : &plain;
}

constexpr int kMaxDevices = 16;

struct DeviceState {
  Allocator* allocator = nullptr;
  std::atomic<int64_t> current{0}, peak{0}, count{0};
};

DeviceState& state(Device d) {
  static DeviceState cpu_state{default_cpu_allocator()};
  static DeviceState cuda_states[kMaxDevices];
  if (d.is_cpu()) return cpu_state;
  VLP_CHECK(d.index >= 0 && d.index < kMaxDevices, "device index out of range: ", d);
  return cuda_states[d.index];
}

void account(Device d, int64_t delta) {
  DeviceState& s = state(d);
  int64_t now = s.current.fetch_add(delta) + delta;
  int64_t peak = s.peak.load();
  while (now > peak && !s.peak.compare_exchange_weak(peak, now)) {
  }
  if (delta > 0) s.count.fetch_add(1);
}

}  // namespace

Allocator* get_allocator(Device device) {
  DeviceState& s = state(device);
  // A GPU gets the CUDA backend's allocator on first use (nullptr without the backend or the device).
  if (!s.allocator && device.is_cuda()) s.allocator = cuda_default_allocator(device.index);
  return s.allocator;
}
void set_allocator(Device device, Allocator* allocator) { state(device).allocator = allocator; }

MemoryStats memory_stats(Device device) {
  DeviceState& s = state(device);
  MemoryStats stats{s.current.load(), s.peak.load(), s.count.load()};
  CachingCpuAllocator* caching = caching_cpu_allocator();
  if (device.is_cpu() && caching != nullptr && s.allocator == caching) {
    std::lock_guard<std::mutex> lock(caching->mutex);
    stats.cached_bytes = caching->cached;
    stats.num_cache_hits = caching->hits;
  }
  return stats;
}

void release_cached_memory(Device device) {
  CachingCpuAllocator* caching = caching_cpu_allocator();
  if (device.is_cpu() && caching != nullptr) caching->release();
}

void reset_peak_memory(Device device) {
  DeviceState& s = state(device);
  s.peak.store(s.current.load());
}

std::shared_ptr<Storage> allocate_storage(size_t nbytes, Device device) {
  Allocator* alloc = get_allocator(device);
  VLP_CHECK(alloc != nullptr, "no allocator for device ", device,
            device.is_cuda() ? ": this vlpeft was built without the CUDA backend or no GPU is present" : "");
  auto storage = std::make_shared<Storage>();
  storage->data = alloc->allocate(nbytes);
  storage->nbytes = nbytes;
  storage->device = device;
  account(device, int64_t(nbytes));
  storage->owner = std::shared_ptr<void>(storage->data, [alloc, nbytes, device](void* p) {
    alloc->deallocate(p, nbytes);
    account(device, -int64_t(nbytes));
  });
  return storage;
}

std::shared_ptr<Storage> wrap_storage(void* data, size_t nbytes, Device device, std::shared_ptr<void> owner) {
  auto storage = std::make_shared<Storage>();
  storage->data = data;
  storage->nbytes = nbytes;
  storage->device = device;
  storage->owner = std::move(owner);
  return storage;
}

}  // namespace vlp
