#include "models/peft/fourierft.h"

#include <cmath>
#include <random>
#include <tuple>
#include <unordered_map>

#include "models/peft/linear_common.h"

namespace vlp::peft {

std::vector<int64_t> torch_randperm_prefix(int64_t n, int64_t count, uint64_t seed) {
  VLP_CHECK(count >= 0 && count <= n, "randperm: ", count, " entries asked of a permutation of ", n);
  VLP_CHECK(n < int64_t(0xffffffffu / 20), "randperm: n = ", n, " is beyond the size whose torch draws are reproduced");
  std::mt19937 mt(uint32_t(seed & 0xffffffffu));
  // Sparse forward Fisher-Yates: position i is final after step i, so `count` steps suffice; only swapped
  // positions are stored.
  std::unordered_map<int64_t, int64_t> moved;
  auto at = [&](int64_t i) {
    auto it = moved.find(i);
    return it == moved.end() ? i : it->second;
  };
  std::vector<int64_t> out(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) {
    if (i < n - 1) {
      const int64_t z = int64_t(mt() % uint32_t(n - i)) + i;
      const int64_t vi = at(i), vz = at(z);
      moved[i] = vz;
      moved[z] = vi;
    }
    out[size_t(i)] = at(i);
  }
  return out;
}

FourierftAdapter::FourierftAdapter(int64_t in, int64_t out, const FourierftOptions& o, Generator& gen)
    : options(o), in_features(in), out_features(out) {
  VLP_CHECK(o.n_frequency > 0, "FourierFT: n_frequency must be positive, got ", o.n_frequency);
  VLP_CHECK(o.n_frequency <= in * out, "FourierFT: n_frequency ", o.n_frequency, " exceeds the ", out, " x ", in,
            " spectrum");
  std::vector<int64_t> idx = torch_randperm_prefix(in * out, o.n_frequency, uint64_t(o.random_loc_seed));
  for (int64_t i : idx) {
    rows.push_back(i / in);
    cols.push_back(i % in);
  }
  fourierft_spectrum = empty({o.n_frequency});
  if (o.init_weights)
    zeros_(fourierft_spectrum);
  else
    normal_(fourierft_spectrum, 0.0, 1.0, &gen);
  register_parameter("fourierft_spectrum", &fourierft_spectrum);
  set_requires_grad(true);  // trainable, as nn.Parameter; copies of this tensor share the flag
}

namespace {
// [size, n] tables cos(2π (f_k · p mod size)/size) and sin(...), p = 0..size-1, computed in double and
// stored in `dtype` on `device` (the spectrum's: one rounding from double, as a float64 table converted).
std::pair<Tensor, Tensor> dft_basis(const std::vector<int64_t>& freq, int64_t size, DType dtype, Device device) {
  const double two_pi = 6.283185307179586476925286766559;
  std::vector<double> c_table(static_cast<size_t>(size)), s_table(static_cast<size_t>(size));
  for (int64_t j = 0; j < size; ++j) {
    c_table[size_t(j)] = std::cos(two_pi * double(j) / double(size));
    s_table[size_t(j)] = std::sin(two_pi * double(j) / double(size));
  }
  const int64_t n = int64_t(freq.size());
  std::vector<double> c(static_cast<size_t>(size * n)), s(static_cast<size_t>(size * n));
  for (int64_t p = 0; p < size; ++p)
    for (int64_t k = 0; k < n; ++k) {
      const int64_t j = (freq[size_t(k)] * p) % size;
      c[size_t(p * n + k)] = c_table[size_t(j)];
      s[size_t(p * n + k)] = s_table[size_t(j)];
    }
  return {from_vector(c, {size, n}, dtype, device), from_vector(s, {size, n}, dtype, device)};
}
}  // namespace

Tensor FourierftAdapter::delta_weight() const {
  // The tables are exact in double; the products run in float32 as HF's FFT does (float64 for a float64
  // spectrum, as in gradcheck).
  const DType ct = fourierft_spectrum.dtype() == DType::F64 ? DType::F64 : DType::F32;
  const Device dev = fourierft_spectrum.device();
  DftTables& t = tables;
  if (!t.cos_rows.defined() || t.dtype != ct || t.device != dev) {
    t.dtype = ct, t.device = dev;
    std::tie(t.cos_rows, t.sin_rows) = dft_basis(rows, out_features, ct, dev);
    std::tie(t.cos_cols, t.sin_cols) = dft_basis(cols, in_features, ct, dev);
  }
  Tensor s = to(fourierft_spectrum, ct);
  Tensor re = sub(matmul(mul(t.cos_rows, s), transpose(t.cos_cols, 0, 1)),
                  matmul(mul(t.sin_rows, s), transpose(t.sin_cols, 0, 1)));
  const double scale = options.scaling / double(out_features * in_features);
  return to(mul(re, scale), fourierft_spectrum.dtype());
}

Tensor FourierftAdapter::forward(const Linear& layer, const Tensor& x, const Tensor& y, const ForwardContext& ctx) {
  return add(y, linear(x, to(delta_weight(), x.dtype())));
}

void FourierftAdapter::merge(Linear& layer) {
  add_delta_to_weight(layer, delta_weight(), 1.0);
  merged = true;
}

void FourierftAdapter::unmerge(Linear& layer) {
  add_delta_to_weight(layer, delta_weight(), -1.0);
  merged = false;
}

void attach_fourierft(AttachContext& ctx) {
  const PeftConfig& c = ctx.config;
  std::map<std::string, int> n_pattern;
  if (c.raw.contains("n_frequency_pattern") && c.raw["n_frequency_pattern"].is_object())
    for (auto& [k, v] : c.raw["n_frequency_pattern"].items()) {
      VLP_CHECK(v.is_number_integer(), c.source, ": n_frequency_pattern['", k, "'] must be an integer");
      n_pattern[k] = v.get<int>();
    }
  for (auto& [name, layer] : select_method_targets(ctx, "FOURIERFT")) {
    FourierftOptions o;
    o.n_frequency = pattern_int(n_pattern, name, c.get_int("n_frequency", 1000));
    o.scaling = c.get_double("scaling", 150.0);
    o.random_loc_seed = c.get_int("random_loc_seed", 777);
    o.init_weights = c.get_bool("init_weights", false);
    attach_adapter(*layer, ctx.adapter_name,
                   std::make_shared<FourierftAdapter>(layer->in_features(), layer->out_features(), o, ctx.generator));
  }
}

}  // namespace vlp::peft
