#include "runtime/device_copy.h"

namespace vlp {

#ifndef VLP_HAVE_CUDA
void copy_across_devices(const Tensor& dst, const Tensor& src, const Shape&) {
  VLP_FAIL("copy from ", src.device(), " to ", dst.device(),
           ": this vlpeft was built without the CUDA backend (configure with -DVLP_CUDA=ON)");
}
bool cuda_available() { return false; }
int cuda_device_count() { return 0; }
#endif

}  // namespace vlp
