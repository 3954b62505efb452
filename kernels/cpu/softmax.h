// Softmax and log-softmax along the middle dim of a contiguous [outer, n, inner] array (softmax over any
// dim of a contiguous tensor has this shape). Forward and backward each take one pass per row for the
// reductions and one for the outputs; backward reads only the saved output y, never x.
#pragma once
#include <cstdint>

namespace vlp::cpu {

// y = softmax(x) (log = false) or log_softmax(x) (log = true) along n.
template <class T> void softmax_forward(const T* x, T* y, int64_t outer, int64_t n, int64_t inner, bool log);
// From the forward output y:
//   softmax:     dx = y * (dy - sum(dy * y))
//   log_softmax: dx = dy - exp(y) * sum(dy)
template <class T>
void softmax_backward(const T* y, const T* dy, T* dx, int64_t outer, int64_t n, int64_t inner, bool log);

}  // namespace vlp::cpu
