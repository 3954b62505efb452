// Named ranges on the profiler timeline: `TraceRange range("t5.block");` marks the enclosing scope, and
// Nsight Systems shows it (NVTX v3, header-only, a branch when no profiler is attached). Without the CUDA
// backend it does nothing. Three levels carry ranges, so a timeline reads layer -> op -> kernel:
//   layers   every block of the backbones (models/: "t5.block", "bart.layer", "gpt2.block", "vit.layer", ...)
//   ops      every op's device work, forward and backward: autograd/kernel_calls.cpp opens a range named
//            after the op around each CUDA call; autograd/graph.cpp also runs each node's backward inside
//            a range named after the op (so an op backward's kernels sit inside both)
//   kernels  every CUDA kernel entry point (kernels/cuda/nvtx.h)
#pragma once

namespace vlp {

struct TraceRange {
  explicit TraceRange(const char* name);
  ~TraceRange();
  TraceRange(const TraceRange&) = delete;
  TraceRange& operator=(const TraceRange&) = delete;
};

}  // namespace vlp
