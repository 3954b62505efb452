// OFT (Qiu et al. 2023; spec/peft.md §4.5): the layer input is rotated block-wise before the frozen layer,
// h = W0 (R_bdᵀ x) + b, R_bd block-diagonal with nb blocks R_i = Cayley(Q_i) of skew-symmetric Q_i stored
// as their strict upper triangles (oft_R.weight [nb, b(b-1)/2]; one shared block with block_share).
// Cayley: exact (I - Q)(I + Q)^-1, or the truncated Neumann series I + 2Q + 2Q² + ... + Q^(k-1) (HF's
// default, k = 5 terms). COFT projects each Q into a Frobenius ball before use. Mergeable: W ← W R_bdᵀ.
#pragma once
#include "models/peft/peft.h"

namespace vlp::peft {

struct OftOptions {
  int r = 0;                 // number of blocks; 0 = derive from block_size
  int block_size = 32;       // 0 = derive from r (exactly one of the two is non-zero)
  bool block_share = false;
  bool coft = false;
  double eps = 6e-5;
  bool use_cayley_neumann = true;
  int num_cayley_neumann_terms = 5;
  bool init_weights = true;  // true: Q = 0 (no-op); false: N(0, 0.1)
};

// HF's adjustment of an r or block size that does not divide in_features: the nearest divisor (lower on ties).
int64_t oft_adjust(int64_t in_features, int64_t value);

struct OftRotation : Module {
  Tensor weight;  // [nb or 1, b(b-1)/2]
  const char* type_name() const override { return "OFTRotation"; }
};

struct OftAdapter : LinearAdapter {
  OftRotation oft_R;
  OftOptions options;
  int64_t num_blocks = 0, block_size = 0, in_features = 0;

  OftAdapter(int64_t in_features, const OftOptions& options, Generator& gen);
  Tensor rotation_blocks();  // [nb, b, b] (the shared block repeated with block_share); COFT projects first
  Tensor rotate_input(const Tensor& x);
  Tensor forward(const Linear& layer, const Tensor& x, const Tensor& y, const ForwardContext& ctx) override;
  bool replaces_base() const override { return true; }
  bool mergeable() const override { return true; }
  void merge(Linear& layer) override;
  void unmerge(Linear& layer) override;
  const char* type_name() const override { return "OFT"; }
};

// Reads r, oft_block_size, block_share, coft, eps, use_cayley_neumann, num_cayley_neumann_terms,
// init_weights (module_dropout is accepted; HF's Linear forward does not apply it either).
void attach_oft(AttachContext& ctx);

}  // namespace vlp::peft
