// Modules: named parameters and child modules whose dotted names follow Hugging Face state-dict keys
// ("model.encoder.layers.0.self_attn.q_proj.weight"), so checkpoints load by name and PEFT configs
// select targets by name. A module registers its member tensors and children in its constructor;
// modules are neither copied nor moved (the registry points at members), so hold them by value inside
// their parent or by unique_ptr.
//
// The layers here carry the adaptation sites of models/site.h: every Linear can hold PEFT modules
// (LoRA, IA3, ...), which is the single mechanism through which every method is injected.
#pragma once
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "autograd/ops.h"

namespace vlp {

// Per-batch information that modules and PEFT modules may read during forward.
struct ForwardContext {
  bool training = false;
  Generator* generator = nullptr;  // dropout; default_generator() when null
  int task = 0;                    // index of the batch's task (multi-task PEFT: one module per task)
  // Per-example task indices (Poly routes each example by its own task); empty = every example uses `task`.
  std::vector<int64_t> task_ids;
  // Mixed-adapter batches: the adapter name each example uses ("" = base model). Empty = all active.
  std::vector<std::string> sample_adapters;
  Tensor visual;                   // visual representation x_R [B, N_v, d] for routing functions
};

struct Module {
  Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;
  virtual ~Module() = default;

  // Registration, in the order state dicts list them. Returns the registered object for chaining.
  Tensor& register_parameter(const std::string& name, Tensor* tensor);
  template <class M>
  M& register_module(const std::string& name, M* module) {
    children_.push_back({name, module});
    return *module;
  }
  // A child created here and owned by this module.
  template <class M, class... Args>
  M& add_module(const std::string& name, Args&&... args) {
    owned_.push_back(std::make_unique<M>(std::forward<Args>(args)...));
    return register_module(name, static_cast<M*>(owned_.back().get()));
  }
  // Removes (and destroys, when owned) a child; used when PEFT modules are deleted.
  void remove_module(const std::string& name);

  // Buffers: state a checkpoint carries but no optimizer sees (BART's final_logits_bias). They are loaded and
  // saved with the parameters and left out of named_parameters() and num_parameters(), as in PyTorch.
  Tensor& register_buffer(const std::string& name, Tensor* tensor);

  // Every parameter below this module with its full dotted name (prefix + "." + ...).
  std::vector<std::pair<std::string, Tensor>> named_parameters(const std::string& prefix = "") const;
  std::vector<std::pair<std::string, Tensor>> named_buffers(const std::string& prefix = "") const;
  // Parameters, then buffers: what a checkpoint holds.
  std::vector<std::pair<std::string, Tensor>> state_dict(const std::string& prefix = "") const;
  std::vector<std::pair<std::string, Module*>> named_modules(const std::string& prefix = "");
  const std::vector<std::pair<std::string, Module*>>& children() const { return children_; }
  std::vector<Tensor> parameters() const;
  Module* find_module(const std::string& dotted_name);

  void train(bool on = true);  // recursive
  bool training() const { return training_; }
  void set_requires_grad(bool on);  // every parameter below
  int64_t num_parameters(bool trainable_only = false) const;
  // Moves every parameter and buffer below to `device`, floating ones converted to `float_dtype` when given
  // (e.g. BF16). Tensors that shared storage (tied weights) still share it afterwards; requires_grad is kept,
  // gradients are dropped. Tensors a module keeps outside registration stay where they are.
  void to_device(Device device, std::optional<DType> float_dtype = std::nullopt);

  // A short type name for matching and reports ("Linear", "LayerNorm", ...).
  virtual const char* type_name() const { return "Module"; }

 private:
  std::vector<std::pair<std::string, Tensor*>> params_, buffers_;
  std::vector<std::pair<std::string, Module*>> children_;
  std::vector<std::unique_ptr<Module>> owned_;
  bool training_ = true;
};

struct LinearAdapter;

// y = x W^T + b. GPT-2's Conv1D stores W transposed ([in, out], fan_in_fan_out = true); both layouts
// compute the same y, the transposed one through a transposed view (no copy). PEFT modules attached to
// `adapters` act on every forward (see models/site.h).
struct Linear : Module {
  Tensor weight;  // [out, in], or [in, out] when fan_in_fan_out
  Tensor bias;    // [out] or undefined
  bool fan_in_fan_out = false;
  std::vector<std::pair<std::string, std::shared_ptr<LinearAdapter>>> adapters;  // by adapter name

  Linear(int64_t in_features, int64_t out_features, bool with_bias = true, bool fan_in_fan_out = false);
  int64_t in_features() const { return fan_in_fan_out ? weight.size(0) : weight.size(1); }
  int64_t out_features() const { return fan_in_fan_out ? weight.size(1) : weight.size(0); }
  Tensor weight_out_in() const;  // W as [out, in] (a view when fan_in_fan_out)
  Tensor base_forward(const Tensor& x) const;  // the frozen layer alone
  Tensor forward(const Tensor& x, const ForwardContext& ctx = {}) const;
  const char* type_name() const override { return fan_in_fan_out ? "Conv1D" : "Linear"; }
};

struct LayerNorm : Module {
  Tensor weight, bias;  // either may be undefined (elementwise_affine / bias off)
  double eps;
  LayerNorm(int64_t dim, double eps = 1e-5, bool affine = true, bool with_bias = true);
  Tensor forward(const Tensor& x) const { return layer_norm(x, weight, bias, eps); }
  const char* type_name() const override { return "LayerNorm"; }
};

// T5's norm: x / rms(x) * weight, no mean subtraction, no bias.
struct RMSNorm : Module {
  Tensor weight;
  double eps;
  explicit RMSNorm(int64_t dim, double eps = 1e-6);
  Tensor forward(const Tensor& x) const { return rms_norm(x, weight, eps); }
  const char* type_name() const override { return "RMSNorm"; }
};

struct Embedding : Module {
  Tensor weight;  // [num_embeddings, dim]
  Embedding(int64_t num_embeddings, int64_t dim);
  Tensor forward(const Tensor& ids) const { return embedding(weight, ids); }
  const char* type_name() const override { return "Embedding"; }
};

// ---- state dicts ----

// What load_state_dict found wrong; empty when the checkpoint matched the model exactly.
struct StateDictReport {
  std::vector<std::string> missing;     // model parameters with no tensor in the checkpoint
  std::vector<std::string> unexpected;  // checkpoint tensors the model has no parameter for
  std::vector<std::string> mismatched;  // "name: checkpoint [a, b] vs model [c, d]" (shape or dtype)
  bool ok() const { return missing.empty() && unexpected.empty() && mismatched.empty(); }
  std::string describe() const;  // every problem, one per line
};

// Copies tensors into the model's parameters by name (converting dtype when allow_dtype_conversion).
// With strict, any problem throws an Error listing all of them; otherwise the report is returned.
StateDictReport load_state_dict(Module& model, const std::vector<std::pair<std::string, Tensor>>& tensors,
                                bool strict = true, bool allow_dtype_conversion = true);

}  // namespace vlp
