// Which attention implementation cuda::attention_forward / attention_backward run (see attention.h): the
// VLP_ATTENTION environment variable read once, an override set by set_attention_impl, and the switch.
// Adding an implementation = one enum value, one name below, one case in each switch.
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

#include "kernels/cuda/attention.h"
#include "kernels/cuda/attention_cudnn.h"
#include "kernels/cuda/attention_tc.h"

namespace vlp::cuda {

namespace {

constexpr int kNoOverride = -1;
std::atomic<int> g_override{kNoOverride};

AttentionImpl impl_from_environment() {
  static const AttentionImpl from_env = parse_attention_impl(std::getenv("VLP_ATTENTION"));
  return from_env;
}

bool aligned(const void* p, uintptr_t bytes) { return p == nullptr || reinterpret_cast<uintptr_t>(p) % bytes == 0; }

// Auto: the tensor-core kernels wherever they take the call (BF16, head dims multiples of 8 up to 128,
// aligned rows and buffers), the row kernels otherwise (F32, other head dims, odd strides). Both write the
// same lse, so a forward and its backward may differ.
bool tensor_core_takes_forward(const AttentionArgs& a, const void* out) {
  return attention_tc_supported(a) && aligned(out, 4);
}
bool tensor_core_takes_backward(const AttentionArgs& a, const void* out, const void* dout, const void* dq,
                                const void* dk, const void* dv) {
  return attention_tc_supported(a) && aligned(out, 4) && aligned(dout, 16) && aligned(dq, 4) && aligned(dk, 4) &&
         aligned(dv, 4);
}

}  // namespace

AttentionImpl parse_attention_impl(const char* value) {
  if (value == nullptr || value[0] == '\0' || std::strcmp(value, "auto") == 0) return AttentionImpl::Auto;
  if (std::strcmp(value, "rows") == 0) return AttentionImpl::Rows;
  if (std::strcmp(value, "tensor_core") == 0) return AttentionImpl::TensorCore;
  if (std::strcmp(value, "cudnn") == 0) return AttentionImpl::Cudnn;
  throw std::runtime_error(std::string("VLP_ATTENTION: unknown attention implementation '") + value +
                           "'; allowed values: auto, rows, tensor_core, cudnn");
}

const char* attention_impl_name(AttentionImpl impl) {
  switch (impl) {
    case AttentionImpl::Auto: return "auto";
    case AttentionImpl::Rows: return "rows";
    case AttentionImpl::TensorCore: return "tensor_core";
    case AttentionImpl::Cudnn: return "cudnn";
  }
  return "?";
}

AttentionImpl attention_impl() {
  const int o = g_override.load();
  return o == kNoOverride ? impl_from_environment() : AttentionImpl(o);
}

void set_attention_impl(AttentionImpl impl) { g_override.store(int(impl)); }

void attention_forward(const AttentionArgs& a, void* out, float* lse, cudaStream_t stream) {
  switch (attention_impl()) {
    case AttentionImpl::Cudnn: cudnn_attention_forward(a, out, lse, stream); return;
    case AttentionImpl::TensorCore: attention_forward_tc(a, out, lse, stream); return;
    case AttentionImpl::Auto:
      if (tensor_core_takes_forward(a, out)) attention_forward_tc(a, out, lse, stream);
      else attention_forward_rows(a, out, lse, stream);
      return;
    case AttentionImpl::Rows: attention_forward_rows(a, out, lse, stream); return;
  }
}

void attention_backward(const AttentionArgs& a, const void* out, const float* lse, const void* dout, void* dq,
                        void* dk, void* dv, void* dbias, int64_t dbias_B, int64_t dbias_H, cudaStream_t stream) {
  switch (attention_impl()) {
    case AttentionImpl::Cudnn:
      cudnn_attention_backward(a, out, lse, dout, dq, dk, dv, dbias, dbias_B, dbias_H, stream);
      return;
    case AttentionImpl::TensorCore:
      attention_backward_tc(a, out, lse, dout, dq, dk, dv, dbias, dbias_B, dbias_H, stream);
      return;
    case AttentionImpl::Auto:
      if (tensor_core_takes_backward(a, out, dout, dq, dk, dv))
        attention_backward_tc(a, out, lse, dout, dq, dk, dv, dbias, dbias_B, dbias_H, stream);
      else
        attention_backward_rows(a, out, lse, dout, dq, dk, dv, dbias, dbias_B, dbias_H, stream);
      return;
    case AttentionImpl::Rows:
      attention_backward_rows(a, out, lse, dout, dq, dk, dv, dbias, dbias_B, dbias_H, stream);
      return;
  }
}

}  // namespace vlp::cuda
