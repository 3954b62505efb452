// NVTX ranges for Nsight Systems: NvtxRange r("name") marks the host code (and, on the timeline, the
// launches) of a scope. NVTX v3 is header-only and costs a branch when no profiler is attached. The CUDA
// kernel entry points each open one; layers and op backwards use runtime/trace.h (the same NVTX calls,
// and nothing in a build without CUDA).
#pragma once
#include <nvtx3/nvToolsExt.h>

namespace vlp::cuda {

struct NvtxRange {
  explicit NvtxRange(const char* name) { nvtxRangePushA(name); }
  ~NvtxRange() { nvtxRangePop(); }
  NvtxRange(const NvtxRange&) = delete;
  NvtxRange& operator=(const NvtxRange&) = delete;
};

}  // namespace vlp::cuda
