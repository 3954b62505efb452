// Random numbers: a Generator is a (seed, offset) pair over the Philox4x32-10 stream (kernels/philox.h).
// Every draw takes the values at the current offset and advances it, so the same seed gives the same
// numbers on every device and a saved (seed, offset) resumes a run exactly.
#pragma once
#include <cstdint>

#include "runtime/tensor.h"

namespace vlp {

struct Generator {
  uint64_t seed = 0;
  uint64_t offset = 0;  // in Philox blocks of four 32-bit values

  explicit Generator(uint64_t s = 0) : seed(s) {}
  // Reserves n values and returns the offset they start at.
  uint64_t take(int64_t n) {
    uint64_t start = offset;
    offset += uint64_t(n + 3) / 4;
    return start;
  }
};

// The process-wide generator used when none is passed (seeded 0 until manual_seed).
Generator& default_generator();
void manual_seed(uint64_t seed);

// In-place initialisers for floating tensors (any layout, any device). They record no gradient.
void uniform_(const Tensor& t, double lo, double hi, Generator* gen = nullptr);
void normal_(const Tensor& t, double mean, double std, Generator* gen = nullptr);
// fan_in / fan_out as PyTorch computes them: dims 1 and 0 times the product of the remaining dims.
int64_t fan_in(const Tensor& t);
int64_t fan_out(const Tensor& t);
// nn.Linear's default: U(-b, b), b = gain * sqrt(3 / fan_in), gain = sqrt(2 / (1 + a^2)); a = sqrt(5)
// gives b = 1 / sqrt(fan_in).
void kaiming_uniform_(const Tensor& t, double a = 2.23606797749979, Generator* gen = nullptr);
void xavier_uniform_(const Tensor& t, double gain = 1.0, Generator* gen = nullptr);
void xavier_normal_(const Tensor& t, double gain = 1.0, Generator* gen = nullptr);
inline void zeros_(const Tensor& t) { fill_(t, 0.0); }
inline void ones_(const Tensor& t) { fill_(t, 1.0); }

// New tensors filled from gen.
Tensor rand(const Shape& shape, Generator* gen = nullptr, DType dtype = DType::F32, Device device = Device::cpu());
Tensor randn(const Shape& shape, Generator* gen = nullptr, DType dtype = DType::F32, Device device = Device::cpu());

}  // namespace vlp
