// Deterministic draws for the data pipeline (shuffles, target sampling, synthetic images), all taken from
// a vlp::Generator's Philox stream so they are identical on every machine and thread count.
//
// A stream is named by its (seed, offset); derive_seed mixes a base seed with small integers (epoch,
// task, purpose) into an independent seed, so "the permutation of task 2 in epoch 5" is a pure function
// of the run seed and never depends on how many numbers were drawn before it.
#pragma once
#include <cstdint>
#include <initializer_list>
#include <utility>
#include <vector>

#include "runtime/rng.h"

namespace vlp::data {

// SplitMix64 finaliser chained over the parts: a well-mixed 64-bit seed for (base, parts...).
uint64_t derive_seed(uint64_t base, std::initializer_list<uint64_t> parts);

// One 64-bit value from gen (consumes one Philox block).
uint64_t draw_u64(Generator& gen);
// Uniform in [0, 1) with 53 random bits.
double draw_unit(Generator& gen);
// Uniform integer in [0, n), n >= 1, without modulo bias.
uint64_t draw_below(Generator& gen, uint64_t n);
// Uniform integer in [lo, hi] (inclusive).
int64_t draw_between(Generator& gen, int64_t lo, int64_t hi);
// Index i drawn with probability weights[i] / sum(weights); weights >= 0 with a positive sum.
int64_t draw_weighted(Generator& gen, const std::vector<double>& weights);

// Fisher-Yates shuffle driven by gen.
template <class T>
void shuffle_in_place(std::vector<T>& v, Generator& gen) {
  for (size_t i = v.size(); i > 1; --i) {
    size_t j = size_t(draw_below(gen, uint64_t(i)));
    std::swap(v[i - 1], v[j]);
  }
}

// 0..n-1 in the order of a shuffle with gen.
std::vector<int64_t> random_permutation(int64_t n, Generator& gen);

}  // namespace vlp::data
