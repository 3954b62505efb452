#include "runtime/rng.h"

#include <cmath>

#include "kernels/cpu/random.h"

namespace vlp {

Generator& default_generator() {
  static Generator gen(0);
  return gen;
}
void manual_seed(uint64_t seed) { default_generator() = Generator(seed); }

namespace {

// Draws into a contiguous CPU buffer (F64 for F64 tensors, F32 otherwise) and copies into t, so every
// dtype and device sees the same values for the same (seed, offset).
template <class Draw>
void fill_random(const Tensor& t, Generator* gen, const char* what, Draw&& draw) {
  VLP_CHECK(t.defined() && is_floating(t.dtype()), what, " needs a floating tensor, got ",
            t.defined() ? dtype_name(t.dtype()) : "undefined");
  Generator& g = gen ? *gen : default_generator();
  int64_t n = t.numel();
  uint64_t offset = g.take(n);
  Tensor buf = empty(t.shape(), t.dtype() == DType::F64 ? DType::F64 : DType::F32);
  if (buf.dtype() == DType::F64) draw(buf.data<double>(), n, g.seed, offset);
  else draw(buf.data<float>(), n, g.seed, offset);
  copy_(t, buf);
}

}  // namespace

void uniform_(const Tensor& t, double lo, double hi, Generator* gen) {
  fill_random(t, gen, "uniform_", [&](auto* p, int64_t n, uint64_t seed, uint64_t off) {
    cpu::random_uniform(p, n, seed, off, lo, hi);
  });
}

void normal_(const Tensor& t, double mean, double std, Generator* gen) {
  fill_random(t, gen, "normal_", [&](auto* p, int64_t n, uint64_t seed, uint64_t off) {
    cpu::random_normal(p, n, seed, off, mean, std);
  });
}

int64_t fan_in(const Tensor& t) {
  VLP_CHECK(t.dim() >= 2, "fan_in needs a tensor of at least 2 dims, got shape ", shape_str(t.shape()));
  int64_t receptive = 1;
  for (int64_t d = 2; d < t.dim(); ++d) receptive *= t.size(d);
  return t.size(1) * receptive;
}

int64_t fan_out(const Tensor& t) {
  VLP_CHECK(t.dim() >= 2, "fan_out needs a tensor of at least 2 dims, got shape ", shape_str(t.shape()));
  int64_t receptive = 1;
  for (int64_t d = 2; d < t.dim(); ++d) receptive *= t.size(d);
  return t.size(0) * receptive;
}

void kaiming_uniform_(const Tensor& t, double a, Generator* gen) {
  double gain = std::sqrt(2.0 / (1.0 + a * a));
  double bound = gain * std::sqrt(3.0 / double(fan_in(t)));
  uniform_(t, -bound, bound, gen);
}

void xavier_uniform_(const Tensor& t, double gain, Generator* gen) {
  double bound = gain * std::sqrt(6.0 / double(fan_in(t) + fan_out(t)));
  uniform_(t, -bound, bound, gen);
}

void xavier_normal_(const Tensor& t, double gain, Generator* gen) {
  normal_(t, 0.0, gain * std::sqrt(2.0 / double(fan_in(t) + fan_out(t))), gen);
}

Tensor rand(const Shape& shape, Generator* gen, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  uniform_(t, 0.0, 1.0, gen);
  return t;
}

Tensor randn(const Shape& shape, Generator* gen, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  normal_(t, 0.0, 1.0, gen);
  return t;
}

}  // namespace vlp
