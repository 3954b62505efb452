// FourierFT (Gao et al. 2024; spec/peft.md §4.9): n trainable spectral coefficients at fixed random
// locations of a d_out × d_in spectrum; ΔW = Re(ifft2(S)) · scaling, h = W0 x + b + ΔW x. Mergeable.
//
// Locations: torch.randperm(d_out·d_in, torch.Generator().manual_seed(random_loc_seed))[:n], reproduced
// bit-exactly (torch's CPU randperm is a forward Fisher-Yates shuffle drawing mt19937 32-bit values, one per
// position, for sizes below 2^32/20), so nothing but the spectrum is stored, as in HF PEFT; checked against
// torch-generated fixtures.
//
// ΔW without an FFT: with S sparse, Re(ifft2(S))[p, q] = (1/(d_out d_in)) Σ_k s_k cos(2π(r_k p/d_out + c_k q/d_in));
// splitting cos(α + β) gives two matrix products, ΔW ∝ Cr diag(s) Ccᵀ − Sr diag(s) Scᵀ with Cr[p, k] =
// cos(2π (r_k p mod d_out)/d_out) etc., read from a table of d_out (d_in) angles.
#pragma once
#include <cstdint>
#include <vector>

#include "models/peft/peft.h"

namespace vlp::peft {

// The first `count` entries of torch.randperm(n, generator seeded with `seed`) on the CPU.
std::vector<int64_t> torch_randperm_prefix(int64_t n, int64_t count, uint64_t seed);

struct FourierftOptions {
  int n_frequency = 1000;
  double scaling = 150.0;
  int64_t random_loc_seed = 777;
  bool init_weights = false;  // false (HF's default): spectrum ~ N(0, 1), not a no-op; true: zeros (no-op)
};

struct FourierftAdapter : LinearAdapter {
  Tensor fourierft_spectrum;  // [n]
  std::vector<int64_t> rows, cols;  // the n locations
  FourierftOptions options;
  int64_t in_features, out_features;
  // The cos/sin tables of the locations, [out, n] and [in, n] each, built on first use in the compute
  // dtype on the spectrum's device and kept (they depend only on the locations): rebuilding them each
  // forward cost a host pass over 2n(out+in) doubles and, on a GPU, their upload.
  struct DftTables {
    DType dtype = DType::F32;
    Device device;
    Tensor cos_rows, sin_rows, cos_cols, sin_cols;
  };
  mutable DftTables tables;

  FourierftAdapter(int64_t in_features, int64_t out_features, const FourierftOptions& options, Generator& gen);
  Tensor delta_weight() const;  // [out, in], in the spectrum's dtype
  Tensor forward(const Linear& layer, const Tensor& x, const Tensor& y, const ForwardContext& ctx) override;
  bool mergeable() const override { return true; }
  void merge(Linear& layer) override;
  void unmerge(Linear& layer) override;
  const char* type_name() const override { return "FourierFT"; }
};

// Reads n_frequency (+ n_frequency_pattern), scaling, random_loc_seed, init_weights. Default target on
// GPT-2: mlp.c_proj.
void attach_fourierft(AttachContext& ctx);

}  // namespace vlp::peft
