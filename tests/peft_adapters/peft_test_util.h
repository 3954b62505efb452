// Helpers for the adapter-family tests: plain double-precision evaluations of the formulas (loops over
// std::vector, no library ops), random fills of a module's parameters, tiny models.
#pragma once
#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "common/test_util.h"
#include "models/bart.h"
#include "models/checkpoint.h"
#include "models/t5.h"

namespace vlp::test {

using Vec = std::vector<double>;

// Row-major matrix helpers over std::vector.
struct Mat {
  int64_t rows = 0, cols = 0;
  Vec v;
  double operator()(int64_t r, int64_t c) const { return v[size_t(r * cols + c)]; }
};
inline Mat mat_of(const Tensor& t) {
  Tensor c = t.dim() == 1 ? unsqueeze(t, 0) : t;
  return Mat{c.size(0), c.size(1), to_vector(c)};
}

// y = W x + b for W [out, in].
inline Vec affine(const Mat& W, const Vec& b, const Vec& x) {
  Vec y(size_t(W.rows), 0.0);
  for (int64_t o = 0; o < W.rows; ++o) {
    double s = b.empty() ? 0.0 : b[size_t(o)];
    for (int64_t i = 0; i < W.cols; ++i) s += W(o, i) * x[size_t(i)];
    y[size_t(o)] = s;
  }
  return y;
}

inline double ref_act(const std::string& name, double x) {
  if (name == "relu") return x > 0 ? x : 0.0;
  if (name == "gelu_new") return 0.5 * x * (1.0 + std::tanh(std::sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
  if (name == "gelu") return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0)));
  if (name == "swish" || name == "silu") return x / (1.0 + std::exp(-x));
  ADD_FAILURE() << "no reference activation " << name;
  return 0.0;
}

inline Vec layer_norm_ref(const Vec& x, const Vec& w, const Vec& b, double eps) {
  double mean = 0, var = 0;
  for (double v : x) mean += v;
  mean /= double(x.size());
  for (double v : x) var += (v - mean) * (v - mean);
  var /= double(x.size());
  Vec y(x.size());
  for (size_t i = 0; i < x.size(); ++i) y[i] = (x[i] - mean) / std::sqrt(var + eps) * w[i] + b[i];
  return y;
}

// Token t of a [B, T, D] tensor's values.
inline Vec row(const Vec& all, int64_t t, int64_t D) { return Vec(all.begin() + t * D, all.begin() + (t + 1) * D); }

// Every parameter of a module to U(-scale, scale) (F64 modules for float64 checks), from one seed.
inline void randomize(Module& m, uint64_t seed, double scale = 0.5) {
  Generator g(seed);
  for (auto& [n, p] : m.named_parameters()) uniform_(p, -scale, scale, &g);
}

inline void set_requires_grad(Module& m) { m.set_requires_grad(true); }

inline std::string fixture_dir(const std::string& name) {
  return std::string(VLP_SOURCE_DIR) + "/tests/fixtures/models/" + name;
}

inline std::unique_ptr<T5ForConditionalGeneration> tiny_t5() {
  auto m = std::make_unique<T5ForConditionalGeneration>(read_t5_config(fixture_dir("t5") + "/config.json"));
  load_checkpoint(*m, fixture_dir("t5"));
  return m;
}
inline std::unique_ptr<BartForConditionalGeneration> tiny_bart() {
  auto m = std::make_unique<BartForConditionalGeneration>(read_bart_config(fixture_dir("bart") + "/config.json"));
  load_checkpoint(*m, fixture_dir("bart"));
  return m;
}

// A small deterministic batch for a tiny seq2seq model (ids in [3, vocab)).
inline Seq2SeqInput tiny_batch(int64_t vocab, int64_t B = 2, int64_t T = 5, int64_t L = 4, uint64_t seed = 7) {
  Generator g(seed);
  Tensor r = rand({B, T + L}, &g, DType::F64);
  std::vector<int64_t> ids, labels;
  auto v = to_vector(r);
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t t = 0; t < T; ++t) ids.push_back(3 + int64_t(v[size_t(b * (T + L) + t)] * double(vocab - 4)));
    for (int64_t t = 0; t < L; ++t) labels.push_back(3 + int64_t(v[size_t(b * (T + L) + T + t)] * double(vocab - 4)));
  }
  Seq2SeqInput in;
  in.encoder.input_ids = from_data<int64_t>(ids, {B, T});
  in.labels = from_data<int64_t>(labels, {B, L});
  return in;
}

}  // namespace vlp::test
