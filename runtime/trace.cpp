// TraceRange (see trace.h): NVTX push/pop with the CUDA backend, nothing without it.
#include "runtime/trace.h"

#ifdef VLP_HAVE_CUDA
#include <nvtx3/nvToolsExt.h>
#endif

namespace vlp {

#ifdef VLP_HAVE_CUDA
TraceRange::TraceRange(const char* name) { nvtxRangePushA(name); }
TraceRange::~TraceRange() { nvtxRangePop(); }
#else
TraceRange::TraceRange(const char*) {}
TraceRange::~TraceRange() {}
#endif

}  // namespace vlp
