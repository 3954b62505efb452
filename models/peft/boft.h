// BOFT (Liu et al. 2024; spec/peft.md §4.6): orthogonal fine-tuning with a butterfly-factorised rotation.
// m factors, each M_k = P_k D_k P_kᵀ with D_k block-diagonal (nb blocks R = (I − S)(I + S)^-1, S = ½(K − Kᵀ),
// K = boft_R[k, block]) and P_k a fixed butterfly permutation; M = M_{m-1} ··· M_0 and
// h = boft_s ⊙ (W0 Mᵀ x) + b (the scale leaves the bias alone). The forward permutes and rotates x itself
// (index gathers and per-block products), never forming M. Mergeable: W ← (W Mᵀ) ⊙ boft_s row-wise.
//
// HF PEFT builds factors beyond the first only with its CUDA extension and silently uses one factor without
// it; vlpeft always honours boft_n_butterfly_factor (parity for m > 1 is checked against HF with a pure
// torch stand-in for that extension).
#pragma once
#include <vector>

#include "models/peft/peft.h"

namespace vlp::peft {

struct BoftOptions {
  int block_size = 4;  // exactly one of block_size and block_num is non-zero
  int block_num = 0;
  int n_butterfly_factor = 1;
  double dropout = 0.0;      // training: blocks of one random factor replaced by the identity
  bool init_weights = true;  // true: boft_R = 0, boft_s = 1 (no-op); false: N(0, 0.1) and N(1, 0.1)
};

// HF's block_butterfly_perm(n, b, r, factor): permutation indices p, (P v)[i] = v[p[i]].
std::vector<int64_t> boft_butterfly_perm(int64_t n, int64_t b, int64_t r, int64_t n_butterfly_factor);

struct BoftAdapter : LinearAdapter {
  Tensor boft_R;  // [m, nb, b, b]
  Tensor boft_s;  // [out, 1]
  BoftOptions options;
  int64_t in_features, out_features, block_size, block_num, factors;
  std::vector<std::vector<int64_t>> perms;  // per factor

  BoftAdapter(int64_t in_features, int64_t out_features, const BoftOptions& options, Generator& gen);
  Tensor rotation_blocks(const ForwardContext& ctx) const;  // [m, nb, b, b], Cayley of each block
  Tensor rotate(const Tensor& x, const Tensor& blocks) const;  // rows x -> x M
  Tensor forward(const Linear& layer, const Tensor& x, const Tensor& y, const ForwardContext& ctx) override;
  bool replaces_base() const override { return true; }
  bool mergeable() const override { return true; }
  void merge(Linear& layer) override;
  void unmerge(Linear& layer) override;
  const char* type_name() const override { return "BOFT"; }
};

// Reads boft_block_size, boft_block_num, boft_n_butterfly_factor, boft_dropout, init_weights.
void attach_boft(AttachContext& ctx);

}  // namespace vlp::peft
