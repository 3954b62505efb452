// Which attention implementation cuda::attention_forward / attention_backward run (see attention.h): the
// VLP_ATTENTION environment variable read once, an override set by set_attention_impl, and the switch.
// Adding an implementation = one enum value, one name below, one case in each switch.
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

#include "kernels/cuda/attention.h"
#include "kernels/cuda/attention_cudnn.h"

namespace vlp::cuda {

namespace {

constexpr int kNoOverride = -1;
std::atomic<int> g_override{kNoOverride};

AttentionImpl impl_from_environment() {
  static const AttentionImpl from_env = parse_attention_impl(std::getenv("VLP_ATTENTION"));
  return from_env;
}

}  // namespace

AttentionImpl parse_attention_impl(const char* value) {
  if (value == nullptr || value[0] == '\0' || std::strcmp(value, "auto") == 0) return AttentionImpl::Auto;
  if (std::strcmp(value, "rows") == 0) return AttentionImpl::Rows;
  if (std::strcmp(value, "cudnn") == 0) return AttentionImpl::Cudnn;
  throw std::runtime_error(std::string("VLP_ATTENTION: unknown attention implementation '") + value +
                           "'; allowed values: auto, rows, cudnn");
}

const char* attention_impl_name(AttentionImpl impl) {
  switch (impl) {
    case AttentionImpl::Auto: return "auto";
    case AttentionImpl::Rows: return "rows";
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
    case AttentionImpl::Auto:
    case AttentionImpl::Rows: attention_forward_rows(a, out, lse, stream); return;
  }
}

void attention_backward(const AttentionArgs& a, const void* out, const float* lse, const void* dout, void* dq,
                        void* dk, void* dv, void* dbias, int64_t dbias_B, int64_t dbias_H, cudaStream_t stream) {
  switch (attention_impl()) {
    case AttentionImpl::Cudnn:
      cudnn_attention_backward(a, out, lse, dout, dq, dk, dv, dbias, dbias_B, dbias_H, stream);
      return;
    case AttentionImpl::Auto:
    case AttentionImpl::Rows:
      attention_backward_rows(a, out, lse, dout, dq, dk, dv, dbias, dbias_B, dbias_H, stream);
      return;
  }
}

}  // namespace vlp::cuda
