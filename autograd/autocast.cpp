#include "autograd/autocast.h"

#include <map>
#include <utility>

#include "autograd/graph.h"
#include "autograd/views.h"

namespace vlp {

namespace {

// A parameter's low-precision copy, valid while the parameter's storage keeps the version it had.
struct CachedCast {
  Tensor source;  // keeps the parameter (and so its AutogradMeta address) alive while cached
  Tensor cast;
  uint64_t version = 0;
};

struct AutocastState {
  bool enabled = false;
  DType dtype = DType::BF16;
  std::map<std::pair<const AutogradMeta*, DType>, CachedCast> cache;
};

thread_local AutocastState state;

bool same_view(const Tensor& a, const Tensor& b) {
  return a.storage() == b.storage() && a.offset() == b.offset() && a.shape() == b.shape() &&
         a.strides() == b.strides() && a.dtype() == b.dtype();
}

// A cached copy can be read again unless the graph now needs its cast recorded and it has none (made under
// NoGradGuard) or its node was already released by a backward pass.
bool usable_for_grad(const Tensor& cast) {
  if (!GradMode::enabled()) return true;
  return cast.requires_grad() && !cast.autograd()->grad_fn->released;
}

}  // namespace

AutocastScope::AutocastScope(bool enabled, DType dtype)
    : previous_enabled_(state.enabled), previous_dtype_(state.dtype) {
  VLP_CHECK(!enabled || dtype == DType::BF16 || dtype == DType::F16,
            "AutocastScope: the low-precision dtype must be BF16 or F16, got ", dtype);
  state.enabled = enabled;
  if (enabled) state.dtype = dtype;
}

AutocastScope::~AutocastScope() {
  state.enabled = previous_enabled_;
  state.dtype = previous_dtype_;
  if (!state.enabled) state.cache.clear();  // leaving the enabled region: the copies are not reused
}

bool autocast_enabled() { return state.enabled; }
DType autocast_dtype() { return state.dtype; }

bool autocast_applies(const Tensor& x) { return state.enabled && x.defined() && x.dtype() == DType::F32; }

Tensor autocast_input(const Tensor& x) {
  if (!autocast_applies(x)) return x;
  if (!x.is_leaf() || !x.requires_grad()) return to(x, state.dtype);  // activations: cast each time
  const std::pair<const AutogradMeta*, DType> key{x.autograd().get(), state.dtype};
  auto it = state.cache.find(key);
  if (it != state.cache.end() && same_view(it->second.source, x) && it->second.version == x.storage()->version &&
      usable_for_grad(it->second.cast))
    return it->second.cast;
  Tensor cast = to(x, state.dtype);
  state.cache[key] = {x, cast, x.storage()->version};
  return cast;
}

int64_t autocast_cache_size() { return int64_t(state.cache.size()); }

}  // namespace vlp
