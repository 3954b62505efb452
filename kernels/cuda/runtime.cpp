// CUDA device basics: discovery, streams, events, pinned memory (see runtime.h).
#include "kernels/cuda/runtime.h"

#include <map>
#include <mutex>
#include <stdexcept>
#include <string>

namespace vlp::cuda {

namespace {

constexpr int kMaxDevices = 16;

struct Discovery {
  int count = 0;
  const char* reason = "";
};

const Discovery& discovery() {
  static const Discovery d = [] {
    Discovery r;
    int n = 0;
    cudaError_t st = cudaGetDeviceCount(&n);
    if (st != cudaSuccess) {
      r.reason = cudaGetErrorString(st);
      cudaGetLastError();  // clear the sticky-free error so later calls start clean
      return r;
    }
    r.count = n < kMaxDevices ? n : kMaxDevices;
    if (r.count == 0) r.reason = "no CUDA device";
    return r;
  }();
  return d;
}

cudaStream_t device_streams[kMaxDevices] = {};
std::once_flag stream_once[kMaxDevices];
thread_local cudaStream_t stream_override[kMaxDevices] = {};
thread_local bool has_override[kMaxDevices] = {};

void check_index(int device) {
  if (device < 0 || device >= device_count())
    throw std::runtime_error("CUDA device " + std::to_string(device) + " does not exist (" +
                             std::to_string(device_count()) + " visible)");
}

}  // namespace

int device_count() { return discovery().count; }
const char* unavailable_reason() { return discovery().reason; }

void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(status));
}

void check_launch(const char* kernel) { check(cudaGetLastError(), kernel); }

int current_device() {
  int d = 0;
  check(cudaGetDevice(&d), "cudaGetDevice");
  return d;
}

void set_device(int device) {
  check_index(device);
  check(cudaSetDevice(device), "cudaSetDevice");
}

cudaStream_t current_stream(int device) {
  check_index(device);
  if (has_override[device]) return stream_override[device];
  std::call_once(stream_once[device], [device] {
    int prev = current_device();
    check(cudaSetDevice(device), "cudaSetDevice");
    check(cudaStreamCreateWithFlags(&device_streams[device], cudaStreamNonBlocking), "cudaStreamCreate");
    check(cudaSetDevice(prev), "cudaSetDevice");
  });
  return device_streams[device];
}

void synchronize(int device) {
  check_index(device);
  int prev = current_device();
  check(cudaSetDevice(device), "cudaSetDevice");
  check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
  check(cudaSetDevice(prev), "cudaSetDevice");
}

StreamGuard::StreamGuard(int dev, cudaStream_t stream) : device(dev), previous(nullptr) {
  check_index(dev);
  previous = has_override[dev] ? stream_override[dev] : nullptr;
  stream_override[dev] = stream;
  has_override[dev] = true;
}

StreamGuard::~StreamGuard() {
  stream_override[device] = previous;
  has_override[device] = previous != nullptr;
}

Event::Event() { check(cudaEventCreate(&event), "cudaEventCreate"); }
Event::~Event() {
  if (event) cudaEventDestroy(event);
}
void Event::record(cudaStream_t stream) { check(cudaEventRecord(event, stream), "cudaEventRecord"); }
void Event::synchronize() { check(cudaEventSynchronize(event), "cudaEventSynchronize"); }
void Event::make_wait(cudaStream_t stream) { check(cudaStreamWaitEvent(stream, event, 0), "cudaStreamWaitEvent"); }
float Event::elapsed_ms(const Event& start) {
  float ms = 0.f;
  check(cudaEventElapsedTime(&ms, start.event, event), "cudaEventElapsedTime");
  return ms;
}

// Pinned blocks are cached: the data loader pins every batch tensor, and cudaMallocHost (page locking) is
// slow while cudaFreeHost waits for the whole device, which would stall the GPU every step. Sizes round up
// to powers of two from 4 KiB; a freed block waits in its size's list, up to kPinnedCacheBytes in all
// (beyond that it is really freed). Reuse is safe because nothing reads a pinned block asynchronously
// after its tensor is gone: every upload from host memory has completed when host_to_device returns.
namespace {
constexpr size_t kPinnedCacheBytes = size_t(256) << 20;
struct PinnedCache {
  std::mutex mu;
  std::map<void*, size_t> size_of;              // every live or cached block
  std::multimap<size_t, void*> free_by_size;    // cached blocks
  size_t cached = 0;
};
PinnedCache& pinned_cache() {
  static PinnedCache* c = new PinnedCache;  // never destroyed: blocks may be freed during static teardown
  return *c;
}
size_t pinned_size_class(size_t n) {
  size_t s = 4096;
  while (s < n) s <<= 1;
  return s;
}
}  // namespace

void* pinned_alloc(size_t nbytes) {
  PinnedCache& c = pinned_cache();
  const size_t size = pinned_size_class(nbytes);
  {
    std::lock_guard<std::mutex> lock(c.mu);
    auto it = c.free_by_size.find(size);
    if (it != c.free_by_size.end()) {
      void* p = it->second;
      c.free_by_size.erase(it);
      c.cached -= size;
      return p;
    }
  }
  void* p = nullptr;
  check(cudaMallocHost(&p, size), "cudaMallocHost");
  std::lock_guard<std::mutex> lock(c.mu);
  c.size_of[p] = size;
  return p;
}

void pinned_free(void* ptr) {
  if (!ptr) return;
  PinnedCache& c = pinned_cache();
  {
    std::lock_guard<std::mutex> lock(c.mu);
    auto it = c.size_of.find(ptr);
    if (it == c.size_of.end()) throw std::runtime_error("pinned_free: not a block of pinned_alloc");
    if (c.cached + it->second <= kPinnedCacheBytes) {
      c.free_by_size.emplace(it->second, ptr);
      c.cached += it->second;
      return;
    }
    c.size_of.erase(it);
  }
  check(cudaFreeHost(ptr), "cudaFreeHost");
}

void memcpy_h2d_async(void* dst, const void* src, size_t nbytes, int device) {
  check(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyHostToDevice, current_stream(device)), "cudaMemcpyAsync H2D");
}
void memcpy_d2h_async(void* dst, const void* src, size_t nbytes, int device) {
  check(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyDeviceToHost, current_stream(device)), "cudaMemcpyAsync D2H");
}
void memcpy_d2d_async(void* dst, const void* src, size_t nbytes, int device) {
  check(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyDeviceToDevice, current_stream(device)), "cudaMemcpyAsync D2D");
}

}  // namespace vlp::cuda
