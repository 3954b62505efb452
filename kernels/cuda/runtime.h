// CUDA device basics for the kernels and the runtime: device discovery that never aborts (a build with
// the CUDA backend must run on a machine without a GPU), one non-blocking stream per device with a
// per-thread override, events for timing and ordering, pinned host buffers, and error checking that
// throws std::runtime_error naming the call (the runtime turns it into vlp::Error messages).
#pragma once
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace vlp::cuda {

// Number of visible GPUs; 0 when there is no driver, no device or CUDA fails to initialise. Never throws.
int device_count();
// Why device_count() is 0 (the CUDA error string), or "" when a device is present.
const char* unavailable_reason();

// Throws std::runtime_error("<what>: <cuda error string>") when status is not cudaSuccess.
void check(cudaError_t status, const char* what);
// Checks the last kernel launch (cudaGetLastError).
void check_launch(const char* kernel);

int current_device();
void set_device(int device);

// The stream kernels on `device` are launched on: the per-thread override (StreamGuard) if any, else the
// device's own non-blocking stream, created on first use.
cudaStream_t current_stream(int device);
inline cudaStream_t current_stream() { return current_stream(current_device()); }
void synchronize(int device);  // waits for every stream of the device

// Makes `stream` the current stream of its device for this thread while the guard lives.
struct StreamGuard {
  StreamGuard(int device, cudaStream_t stream);
  ~StreamGuard();
  StreamGuard(const StreamGuard&) = delete;
  StreamGuard& operator=(const StreamGuard&) = delete;
  int device;
  cudaStream_t previous;
};

// An event with timing enabled; record() on a stream, then wait or measure.
struct Event {
  Event();
  ~Event();
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  void record(cudaStream_t stream);
  void synchronize();
  void make_wait(cudaStream_t stream);     // stream waits for this event
  float elapsed_ms(const Event& start);    // time from start to this event
  cudaEvent_t event = nullptr;
};

// Page-locked host memory for asynchronous copies, from a cache (sizes rounded up to powers of two from
// 4 KiB, up to 256 MiB of freed blocks kept for reuse): a freed block may be handed out again at once, so
// finish (synchronise) copies from a block before freeing it.
void* pinned_alloc(size_t nbytes);
void pinned_free(void* ptr);
// Copies on the current stream of `device`; async ones return before completion (pinned host memory).
void memcpy_h2d_async(void* dst, const void* src, size_t nbytes, int device);
void memcpy_d2h_async(void* dst, const void* src, size_t nbytes, int device);
void memcpy_d2d_async(void* dst, const void* src, size_t nbytes, int device);

// 1-D launch helpers.
inline unsigned grid_for(int64_t n, int block) {
  int64_t g = (n + block - 1) / block;
  return unsigned(g < 1 ? 1 : (g > 65535 * 16 ? 65535 * 16 : g));
}

}  // namespace vlp::cuda
