#include "data/sampling.h"

#include "kernels/philox.h"
#include "runtime/error.h"

namespace vlp::data {

namespace {
uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}
}  // namespace

uint64_t derive_seed(uint64_t base, std::initializer_list<uint64_t> parts) {
  uint64_t h = splitmix64(base);
  for (uint64_t p : parts) h = splitmix64(h ^ splitmix64(p + 0x632BE59BD9B4E019ull));
  return h;
}

uint64_t draw_u64(Generator& gen) {
  uint64_t offset = gen.take(4);
  Philox4 r = philox_block(gen.seed, offset, 0);
  return (uint64_t(r.x[0]) << 32) | r.x[1];
}

double draw_unit(Generator& gen) { return double(draw_u64(gen) >> 11) * (1.0 / 9007199254740992.0); }

uint64_t draw_below(Generator& gen, uint64_t n) {
  VLP_CHECK(n >= 1, "draw_below: n must be at least 1");
  // Rejection sampling: accept values below the largest multiple of n.
  uint64_t limit = UINT64_MAX - (UINT64_MAX % n + 1) % n;
  for (;;) {
    uint64_t v = draw_u64(gen);
    if (v <= limit) return v % n;
  }
}

int64_t draw_between(Generator& gen, int64_t lo, int64_t hi) {
  VLP_CHECK(lo <= hi, "draw_between: empty range [", lo, ", ", hi, "]");
  return lo + int64_t(draw_below(gen, uint64_t(hi - lo) + 1));
}

int64_t draw_weighted(Generator& gen, const std::vector<double>& weights) {
  double total = 0;
  for (double w : weights) {
    VLP_CHECK(w >= 0, "draw_weighted: negative weight ", w);
    total += w;
  }
  VLP_CHECK(total > 0, "draw_weighted: weights sum to zero");
  double u = draw_unit(gen) * total;
  double acc = 0;
  int64_t last_positive = 0;
  for (size_t i = 0; i < weights.size(); ++i) {
    if (weights[i] <= 0) continue;
    acc += weights[i];
    last_positive = int64_t(i);
    if (u < acc) return int64_t(i);
  }
  return last_positive;  // rounding left u at the very top: the last positive weight
}

std::vector<int64_t> random_permutation(int64_t n, Generator& gen) {
  std::vector<int64_t> p(size_t(n < 0 ? 0 : n));
  for (int64_t i = 0; i < n; ++i) p[size_t(i)] = i;
  shuffle_in_place(p, gen);
  return p;
}

}  // namespace vlp::data
