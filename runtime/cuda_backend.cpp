// The runtime side of the CUDA backend: device queries, the caching allocator behind Storage, and copies
// between host and GPU or between GPUs (with dtype conversion and broadcasting). Compiled only when the
// build has the CUDA backend; runtime/device_copy.cpp holds the CPU-only stubs.
#ifdef VLP_HAVE_CUDA
#include <cstring>
#include <exception>

#include "kernels/cpu/copy.h"
#include "kernels/cuda/allocator.h"
#include "kernels/cuda/copy.h"
#include "kernels/cuda/runtime.h"
#include "runtime/device_copy.h"

namespace vlp {

namespace {

constexpr int kMaxDevices = 16;

struct CudaAllocator final : Allocator {
  int device = 0;
  void* allocate(size_t nbytes) override {
    try {
      return cuda::device_alloc(nbytes, device);
    } catch (const std::exception& e) {
      VLP_FAIL("allocating ", nbytes, " bytes on cuda:", device, ": ", e.what());
    }
  }
  void deallocate(void* ptr, size_t) override {
    try {
      cuda::device_free(ptr, device);
    } catch (...) {  // at exit the context may be gone; nothing sensible to do
    }
  }
};

// Makes a device current for one copy and restores the previous one.
struct DeviceGuard {
  explicit DeviceGuard(int device) {
    cudaGetDevice(&previous);
    cuda::set_device(device);
  }
  ~DeviceGuard() { cudaSetDevice(previous); }
  int previous = 0;
};

void require_device(Device d) {
  VLP_CHECK(d.is_cpu() || (d.index >= 0 && d.index < cuda_device_count()), "device ", d, " is not available (",
            cuda_available() ? std::to_string(cuda_device_count()) + " CUDA devices visible" : cuda_unavailable_reason(),
            ")");
}

bool all_zero(const Shape& s) {
  for (int64_t v : s)
    if (v != 0) return false;
  return true;
}

// Host to device: the source is laid out on the host as dst's dtype and shape, uploaded, and written into
// dst's strides on the device. A broadcast scalar (fill_, zeros, ones) is converted to dst's dtype on the
// host and written by a fill kernel that takes the element's bytes as an argument: no transfer, and no
// wait (a pageable upload would synchronise the stream, and zeros() runs many times a step).
void host_to_device(const Tensor& dst, const Tensor& src, const Shape& sstrides) {
  const int dev = dst.device().index;
  DeviceGuard guard(dev);
  cudaStream_t stream = cuda::current_stream(dev);
  if (all_zero(sstrides)) {
    Tensor one = empty({}, dst.dtype(), Device::cpu());
    cpu::copy_strided(int(one.dtype()), one.data_ptr(), nullptr, int(src.dtype()), src.data_ptr(), nullptr, {});
    uint64_t bits = 0;
    std::memcpy(&bits, one.data_ptr(), one.element_size());
    cuda::fill_strided_bits(int(dst.dtype()), dst.data_ptr(), dst.strides().data(), dst.shape(), bits, stream);
    return;
  }
  // A pinned source already laid out as dst is uploaded as it is: no pageable staging copy.
  const bool src_ready = is_pinned(src) && src.dtype() == dst.dtype() && src.shape() == dst.shape() &&
                         sstrides == contiguous_strides(dst.shape());
  Tensor host = src_ready ? src : empty(dst.shape(), dst.dtype(), Device::cpu());
  if (!src_ready)
    cpu::copy_strided(int(host.dtype()), host.data_ptr(), host.strides().data(), int(src.dtype()), src.data_ptr(),
                      sstrides.data(), dst.shape());
  const size_t nbytes = size_t(host.numel()) * host.element_size();
  if (dst.is_contiguous()) {
    cuda::check(cudaMemcpyAsync(dst.data_ptr(), host.data_ptr(), nbytes, cudaMemcpyHostToDevice, stream), "upload");
  } else {
    cuda::DeviceBuffer tmp(nbytes, dev);
    cuda::check(cudaMemcpyAsync(tmp.ptr, host.data_ptr(), nbytes, cudaMemcpyHostToDevice, stream), "upload");
    cuda::copy_strided(int(dst.dtype()), dst.data_ptr(), dst.strides().data(), int(dst.dtype()), tmp.ptr,
                       host.strides().data(), dst.shape(), stream);
  }
  // The host staging buffer dies on return: wait until the transfer has read it.
  cuda::check(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
}

// Device to host: src is gathered on its device into a contiguous buffer of dst's shape (unless it already
// is one), downloaded, then converted into dst's dtype and strides on the host.
void device_to_host(const Tensor& dst, const Tensor& src, const Shape& sstrides) {
  const int dev = src.device().index;
  DeviceGuard guard(dev);
  cudaStream_t stream = cuda::current_stream(dev);
  const Shape cstrides = contiguous_strides(dst.shape());
  const bool src_dense = sstrides == cstrides || src.numel() == 1;
  Tensor host = empty(dst.shape(), src.dtype(), Device::cpu());
  const size_t nbytes = size_t(host.numel()) * host.element_size();
  if (src_dense && src.numel() == dst.numel()) {
    cuda::check(cudaMemcpyAsync(host.data_ptr(), src.data_ptr(), nbytes, cudaMemcpyDeviceToHost, stream), "download");
  } else {
    cuda::DeviceBuffer tmp(nbytes, dev);
    cuda::copy_strided(int(src.dtype()), tmp.ptr, cstrides.data(), int(src.dtype()), src.data_ptr(), sstrides.data(),
                       dst.shape(), stream);
    cuda::check(cudaMemcpyAsync(host.data_ptr(), tmp.ptr, nbytes, cudaMemcpyDeviceToHost, stream), "download");
  }
  cuda::check(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
  cpu::copy_strided(int(dst.dtype()), dst.data_ptr(), dst.strides().data(), int(src.dtype()), host.data_ptr(),
                    host.strides().data(), dst.shape());
}

// Between two GPUs: gathered contiguous on the source device, copied peer to peer, scattered into dst.
void device_to_device(const Tensor& dst, const Tensor& src, const Shape& sstrides) {
  const int sdev = src.device().index, ddev = dst.device().index;
  if (sdev == ddev) {
    DeviceGuard guard(ddev);
    cuda::copy_strided(int(dst.dtype()), dst.data_ptr(), dst.strides().data(), int(src.dtype()), src.data_ptr(),
                       sstrides.data(), dst.shape(), cuda::current_stream(ddev));
    return;
  }
  const Shape cstrides = contiguous_strides(dst.shape());
  const size_t nbytes = size_t(dst.numel()) * src.element_size();
  cuda::DeviceBuffer packed(nbytes, sdev), landed(nbytes, ddev);
  {
    DeviceGuard guard(sdev);
    cudaStream_t s = cuda::current_stream(sdev);
    cuda::copy_strided(int(src.dtype()), packed.ptr, cstrides.data(), int(src.dtype()), src.data_ptr(),
                       sstrides.data(), dst.shape(), s);
    cuda::check(cudaMemcpyPeerAsync(landed.ptr, ddev, packed.ptr, sdev, nbytes, s), "cudaMemcpyPeerAsync");
    cuda::check(cudaStreamSynchronize(s), "cudaStreamSynchronize");
  }
  DeviceGuard guard(ddev);
  cuda::copy_strided(int(dst.dtype()), dst.data_ptr(), dst.strides().data(), int(src.dtype()), landed.ptr,
                     cstrides.data(), dst.shape(), cuda::current_stream(ddev));
  cuda::check(cudaStreamSynchronize(cuda::current_stream(ddev)), "cudaStreamSynchronize");
}

}  // namespace

bool cuda_available() { return cuda::device_count() > 0; }
int cuda_device_count() { return cuda::device_count(); }
std::string cuda_unavailable_reason() { return cuda::unavailable_reason(); }

Allocator* cuda_default_allocator(int index) {
  if (index < 0 || index >= cuda::device_count()) return nullptr;
  static CudaAllocator* allocators = [] {
    auto* a = new CudaAllocator[kMaxDevices];  // never destroyed: storages may be freed during exit
    for (int i = 0; i < kMaxDevices; ++i) a[i].device = i;
    return a;
  }();
  return &allocators[index];
}

void copy_across_devices(const Tensor& dst, const Tensor& src, const Shape& sstrides) {
  require_device(dst.device());
  require_device(src.device());
  try {
    if (dst.is_cuda() && src.is_cuda()) device_to_device(dst, src, sstrides);
    else if (dst.is_cuda()) host_to_device(dst, src, sstrides);
    else device_to_host(dst, src, sstrides);
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    VLP_FAIL("copy from ", src.device(), " (", src.dtype(), ", ", shape_str(src.shape()), ") to ", dst.device(),
             " (", dst.dtype(), "): ", e.what());
  }
}

void cuda_synchronize(int index) {
  require_device(Device::cuda(index));
  try {
    cuda::synchronize(index);  // also where an earlier kernel's fault surfaces
  } catch (const std::exception& e) {
    VLP_FAIL("cuda_synchronize(", index, "): ", e.what());
  }
}

void cuda_empty_cache(int index) {
  require_device(Device::cuda(index));
  try {
    cuda::empty_cache(index);
  } catch (const std::exception& e) {
    VLP_FAIL("cuda_empty_cache(", index, "): ", e.what());
  }
}

CudaMemoryStats cuda_memory_stats(int index) {
  require_device(Device::cuda(index));
  cuda::AllocatorStats s = cuda::allocator_stats(index);
  return {s.allocated_bytes,    s.reserved_bytes, s.peak_allocated_bytes, s.peak_reserved_bytes,
          s.num_device_mallocs, s.num_cache_hits, s.num_frees_to_device,  cuda::plain_malloc_mode()};
}

void cuda_reset_peak_memory(int index) {
  require_device(Device::cuda(index));
  cuda::reset_peak_stats(index);
}

Tensor pin_memory(const Tensor& t) {
  VLP_CHECK(t.device().is_cpu(), "pin_memory: the tensor is on ", t.device(), "; only host tensors can be pinned");
  const size_t nbytes = size_t(t.numel()) * t.element_size();
  std::shared_ptr<Storage> storage;
  if (cuda_available()) {
    void* p = nullptr;
    try {
      p = cuda::pinned_alloc(nbytes);
    } catch (const std::exception& e) {
      VLP_FAIL("pin_memory: ", nbytes, " bytes of page-locked host memory: ", e.what());
    }
    storage = wrap_storage(p, nbytes, Device::cpu(), std::shared_ptr<void>(p, [](void* q) {
                             try {
                               cuda::pinned_free(q);
                             } catch (...) {  // at exit the context may be gone
                             }
                           }));
    storage->pinned = true;
  } else {
    storage = allocate_storage(nbytes, Device::cpu());
  }
  Tensor out(storage, t.shape(), contiguous_strides(t.shape()), 0, t.dtype());
  copy_(out, t);
  return out;
}

}  // namespace vlp
#endif  // VLP_HAVE_CUDA
