// LoRA (spec/peft.md §4.1) as a LinearAdapter: h = W0 x + b + s · B A dropout(x), s = α/r or α/√r
// (rsLoRA); initialisations true (Kaiming-uniform A, B = 0), "gaussian", "pissa", "olora"; lora_bias; DoRA
// (magnitude vector, weight norm detached as in PEFT); GPT-2 Conv1D (A, B keep linear orientation, only the
// merge transposes); mixed-adapter batches (ForwardContext::sample_adapters: each example names one of the
// active adapters, or "" for the base model; not with DoRA); weighted combination.
//
// Config fields read: r (8), lora_alpha (8), lora_dropout (0), use_rslora, use_dora, lora_bias,
// init_lora_weights (true | false | "gaussian" | "pissa" | "olora"), rank_pattern / alpha_pattern (keys
// matched as "(.*\.)?key" over the full layer name, first match wins); use_gating (a vlpeft field, set by
// UniPELT, combinations.h): the update is multiplied by a token-mean gate of the layer input (gate.h)
// instead of α/r, parameters "gate.weight" / "gate.bias"; input-dependent, so not mergeable.
//
// Plain LoRA on a layer's unmodified base runs as one fused op, vlp::lora_linear (autograd/lora.h), on every
// device: on the CPU the same numbers as the composed ops (base linear, dropout, two linears, scaled add);
// on CUDA dropout + down-projection in one kernel and the up-projection accumulated into the base GEMM.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "models/peft/gate.h"
#include "models/peft/peft.h"

namespace vlp::peft {

struct LoraLayer : LinearAdapter {
  std::string adapter_name;  // the name mixed-adapter batches select by
  int64_t r = 0;
  double alpha = 0, scaling = 0, dropout = 0;
  bool use_dora = false;
  Tensor lora_A;     // [r, d_in]      "lora_A.weight"
  Tensor lora_B;     // [d_out, r]     "lora_B.weight"
  Tensor lora_B_bias;  // [d_out]      "lora_B.bias" when lora_bias
  Tensor magnitude;  // [d_out]        "lora_magnitude_vector" (DoRA)
  Tensor merged_dora_scale;  // g cached at merge for unmerge
  Tensor init_A, init_B;     // PiSSA / OLoRA: the initial factors whose product left the base
  std::unique_ptr<TokenGate> gate;  // use_gating: g(x) replaces the scaling

  LoraLayer(const Linear& layer, const std::string& adapter_name, int64_t r, double alpha, bool use_rslora,
            double dropout, bool lora_bias, bool use_dora);
  Tensor forward(const Linear& layer, const Tensor& x, const Tensor& y, const ForwardContext& ctx) override;
  // Plain LoRA computes its layer itself when it is the first active adapter: the fused op
  // (autograd/lora.h) when it applies (fused_applies), else the base product and the composed ops.
  bool replaces_base() const override { return !use_dora; }
  // True when forward(layer, x, <no base yet>, ctx) goes through vlp::lora_linear: no DoRA, no lora_bias,
  // no mixed-adapter batch, and x, W, bias, A and B of one dtype on one device.
  bool fused_applies(const Linear& layer, const Tensor& x, const ForwardContext& ctx) const;
  // Adds the UniPELT gate (W_g ~ N(0, 0.02), nn.Linear's bias init) on the layer's input width.
  void add_gate(int64_t in_features, Generator& gen);
  bool mergeable() const override { return gate == nullptr; }
  void merge(Linear& layer) override;
  void unmerge(Linear& layer) override;
  Tensor delta_weight() const;  // s · B A as [d_out, d_in], no grad
  // DoRA's g = m / ||W0 + s B A||_row (detached), [d_out].
  Tensor dora_scale(const Linear& layer) const;
  const char* type_name() const override { return use_dora ? "DoRA" : "LoRA"; }
};

void attach_lora(AttachContext& ctx);

// PEFT's add_weighted_adapter for LoRA: a new adapter `new_name` on every layer holding any of `adapters`.
//   "linear": equal ranks; A = Σ sign(w_i s_i) √|w_i s_i| A_i, B = Σ √|w_i s_i| B_i.
//   "cat":    exact; A = [w_1 s_1 A_1; ...], B = [B_1, ...] (rank Σ r_i).
//   "svd":    ΔW = Σ w_i s_i B_i A_i, truncated SVD at svd_rank (0 = the largest r_i): B = U_r S_r, A = V_rᵀ.
// The new adapter's config is the first one's with r = lora_alpha = the new rank (so s = 1 without rsLoRA);
// it is added inactive, like any later adapter.
void add_weighted_adapter(Module& model, const std::vector<std::string>& adapters, const std::vector<double>& weights,
                          const std::string& new_name, const std::string& combination_type, int svd_rank = 0);

// Writes a PiSSA / OLoRA adapter as the equivalent plain LoRA on the original base (spec §4.1): rank 2r,
// A = [A; A_init], B = [B, −B_init], lora_alpha doubled (× √2 with rsLoRA), init_lora_weights true, so it
// loads here and in PEFT without the rewritten base. Other LoRA adapters are written unchanged.
void save_adapter_as_plain_lora(Module& model, const std::string& adapter_name, const std::string& dir);

// Small dense decompositions in float64 (row-major), used by PiSSA, OLoRA and SVD combination.
// Thin SVD of an m×n matrix: U [m, k], S [k] descending, Vt [k, n], k = min(m, n) (one-sided Jacobi).
void svd_thin(const std::vector<double>& a, int64_t m, int64_t n, std::vector<double>& u, std::vector<double>& s,
              std::vector<double>& vt);
// Reduced QR of an m×n matrix: Q [m, k] orthonormal columns, R [k, n] upper triangular, k = min(m, n).
void qr_reduced(const std::vector<double>& a, int64_t m, int64_t n, std::vector<double>& q, std::vector<double>& r);

}  // namespace vlp::peft
