#include "runtime/storage.h"

#include <atomic>
#include <cstdlib>

#include "runtime/device_copy.h"
#include "runtime/error.h"

namespace vlp {

namespace {

// 64-byte aligned host memory (one cache line; also the alignment AVX-512 loads like).
struct CpuAllocator final : Allocator {
  void* allocate(size_t nbytes) override {
    size_t rounded = (nbytes + 63) / 64 * 64;
    void* p = std::aligned_alloc(64, rounded == 0 ? 64 : rounded);
    VLP_CHECK(p != nullptr, "out of host memory allocating ", nbytes, " bytes");
    return p;
  }
  void deallocate(void* ptr, size_t) override { std::free(ptr); }
};

constexpr int kMaxDevices = 16;

struct DeviceState {
  Allocator* allocator = nullptr;
  std::atomic<int64_t> current{0}, peak{0}, count{0};
};

DeviceState& state(Device d) {
  static CpuAllocator cpu;
  static DeviceState cpu_state{&cpu};
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
  return {s.current.load(), s.peak.load(), s.count.load()};
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
