// The gate UniPELT puts on each of its parts (spec/peft.md §4.23; adapter-hub/adapters' use_gating):
//   g = mean over tokens of σ(x W_gᵀ + b_g),   x [B, T, d] -> g [B, k]
// one value per example (per gate output), by which a part's contribution is multiplied, so the model
// learns from the input how much of each method to use. Gated LoRA uses g instead of α/r; a gated
// bottleneck adapter multiplies A(z) by g; a gated prefix multiplies its keys and values by g. The mean
// runs over every token of the call (padding included, as adapters does); when decoding with a cache, over
// the new tokens only. Inits: W_g ~ N(0, 0.02); b_g zero (adapters' "bert" init, used for bottleneck
// adapters) or nn.Linear's U(±1/√d) (its LoRA and prefix gates).
#pragma once
#include "models/module.h"

namespace vlp::peft {

struct TokenGate : Module {
  Tensor weight;  // [k, d]
  Tensor bias;    // [k]
  TokenGate(int64_t d, int64_t outputs, DType dtype, Device device, bool zero_bias, Generator& gen);
  Tensor forward(const Tensor& x) const;  // [B, T, d] -> [B, k]
  const char* type_name() const override { return "TokenGate"; }
};

// g [B, k] column `i` shaped to broadcast against a [B, ...] tensor of `dims` dims: [B, 1, ..., 1].
Tensor gate_column(const Tensor& g, int64_t i, int64_t dims);

}  // namespace vlp::peft
