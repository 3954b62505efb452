// Random fills and dropout from the Philox stream (kernels/philox.h).
#pragma once
#include <cstdint>

namespace vlp::cpu {

// out[i] = lo + (hi - lo) * uniform(i) for the stream (seed, offset).
template <class T> void random_uniform(T* out, int64_t n, uint64_t seed, uint64_t offset, double lo, double hi);
// out[i] = mean + std * z(i); z from Box-Muller on values (2*(i/2), 2*(i/2)+1): cos for even i, sin for odd.
template <class T> void random_normal(T* out, int64_t n, uint64_t seed, uint64_t offset, double mean, double std);
// y[i] = uniform(i) < p ? 0 : x[i] / (1 - p). The same function is dropout's backward (x = dy).
template <class T> void dropout(const T* x, T* y, int64_t n, double p, uint64_t seed, uint64_t offset);

// Number of Philox blocks (counter steps) that n values consume.
inline uint64_t philox_blocks(int64_t n) { return uint64_t(n + 3) / 4; }

}  // namespace vlp::cpu
