#include "runtime/device_copy.h"

namespace vlp {

bool is_pinned(const Tensor& t) { return t.defined() && t.storage()->pinned; }

#ifndef VLP_HAVE_CUDA
namespace {
[[noreturn]] void no_cuda(const char* what) {
  VLP_FAIL(what, ": this vlpeft was built without the CUDA backend (configure with -DVLP_CUDA=ON)");
}
}  // namespace

void copy_across_devices(const Tensor& dst, const Tensor& src, const Shape&) {
  VLP_FAIL("copy from ", src.device(), " to ", dst.device(),
           ": this vlpeft was built without the CUDA backend (configure with -DVLP_CUDA=ON)");
}
bool cuda_available() { return false; }
int cuda_device_count() { return 0; }
std::string cuda_unavailable_reason() { return "this vlpeft was built without the CUDA backend"; }
Allocator* cuda_default_allocator(int) { return nullptr; }
void cuda_synchronize(int) { no_cuda("cuda_synchronize"); }
void cuda_empty_cache(int) { no_cuda("cuda_empty_cache"); }
CudaMemoryStats cuda_memory_stats(int) { no_cuda("cuda_memory_stats"); }
void cuda_reset_peak_memory(int) { no_cuda("cuda_reset_peak_memory"); }
Tensor pin_memory(const Tensor& t) {
  VLP_CHECK(t.device().is_cpu(), "pin_memory: the tensor is on ", t.device(), "; only host tensors can be pinned");
  Tensor out = empty(t.shape(), t.dtype(), Device::cpu());
  copy_(out, t);
  return out;
}
#endif

}  // namespace vlp
