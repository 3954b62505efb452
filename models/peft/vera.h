// VeRA (Kopiczko et al. 2024; spec/peft.md §4.8): frozen random projections shared by every adapted layer,
// A [r, d_in,max] and B [d_out,max, r], held once per adapter name by a model-level module registered as
// "peft_shared.<adapter>"; each layer trains two vectors and adds
// ΔW x = λ_b ⊙ (B_s (λ_d ⊙ (A_s x̃))), A_s = A[:, :d_in], B_s = B[:d_out, :]. Mergeable.
//
// The projections are generated as HF PEFT does (a torch CPU generator seeded with projection_prng_key,
// Kaiming-uniform with gain √2, A first): torch's mt19937 and its float uniform transform are reproduced,
// so adapters saved with save_projection = false load too. vlpeft always writes save_projection = true.
#pragma once
#include "models/peft/peft.h"

namespace vlp::peft {

// torch.Generator().manual_seed(seed) followed by tensor.uniform_(lo, hi) on each float32 tensor in turn.
struct TorchCpuUniform {
  explicit TorchCpuUniform(uint64_t seed);
  void fill(const Tensor& t, double lo, double hi);  // F32, contiguous
  uint32_t next();                                   // one 32-bit mt19937 draw
  struct State;
  std::shared_ptr<State> state;
};

// The shared projections of one adapter name (buffers: frozen, saved with the adapter).
struct VeraShared : Module {
  Tensor vera_A, vera_B;  // [r, in_max], [out_max, r]
  VeraShared(int r, int64_t in_max, int64_t out_max, uint64_t projection_prng_key);
  const char* type_name() const override { return "VeraShared"; }
};

struct VeraOptions {
  int r = 256;
  double vera_dropout = 0.0;
  double d_initial = 0.1;
  bool init_weights = true;  // true: λ_b = 0 (no-op), λ_d = d_initial; false: λ_b = 1, λ_d ~ N(0, 1) (as HF)
};

struct VeraAdapter : LinearAdapter {
  Tensor vera_lambda_b, vera_lambda_d;  // [out], [r]
  VeraShared* shared;                   // owned by the model
  VeraOptions options;
  int64_t in_features, out_features;

  VeraAdapter(int64_t in_features, int64_t out_features, VeraShared* shared, const VeraOptions& options,
              Generator& gen);
  Tensor delta_weight() const;  // [out, in]
  Tensor forward(const Linear& layer, const Tensor& x, const Tensor& y, const ForwardContext& ctx) override;
  bool mergeable() const override { return true; }
  void merge(Linear& layer) override;
  void unmerge(Linear& layer) override;
  const char* type_name() const override { return "VeRA"; }
};

// Reads r, vera_dropout, d_initial, init_weights, projection_prng_key; registers "peft_shared.<adapter>"
// sized to the largest target, then one VeraAdapter per target. The projections are buffers of that module,
// so the default key rule saves them as "base_model.vera_A" / "base_model.vera_B".
void attach_vera(AttachContext& ctx);
// save_adapter hook: the projections are always in the file, so the config says save_projection = true
// (spec §6.5), whatever the config the adapter was added with said.
void vera_prepare_save(Module& model, const std::string& adapter_name, nlohmann::json& config,
                       std::vector<std::pair<std::string, Tensor>>& tensors);

}  // namespace vlp::peft
