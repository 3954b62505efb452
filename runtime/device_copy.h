// Copies that involve a device other than the CPU. The CUDA backend implements them; a CPU-only
// build refuses with a clear message.
#pragma once
#include "runtime/tensor.h"

namespace vlp {

// dst[i] = src[i] where dst or src lives on a GPU; src_strides are src's strides broadcast to dst's shape.
void copy_across_devices(const Tensor& dst, const Tensor& src, const Shape& src_strides);

// True when this build has the CUDA backend and at least one GPU is visible.
bool cuda_available();
int cuda_device_count();

}  // namespace vlp
