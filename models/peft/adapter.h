// Bottleneck adapters at the sublayer sites (spec/peft.md §2.5, §4.18): VL-Adapter's adapter, Houlsby,
// Pfeiffer, parallel and scaled parallel, in single, multiple (one per task) and half-shared (shared
// up-projection, per-task down-projection) modes. The same module runs Compacter (PHM projections,
// compacter.h) and routed adapters (a routing function on the bottleneck, routing.h).
//
// At a site with block input x and sublayer output o (models/site.h), with
//   A(z) = s · (W_up f(W_down z + c_d) + c_u)       (f on f(x_t, x_v) for routed adapters)
// the site's result is (the backbone then adds the block residual x and, post-LN, its norm):
//   houlsby  : o + A(o)                 VL-Adapter (before dropout: x + Drop(A(o) + o)), Houlsby
//   pfeiffer : o + A(LN(o + x))         LN the block's own norm (post-LN BART); pre-LN stacks: o + A(o + x)
//   parallel : o + A(x)                 s = 4 by default; scaled parallel: s learned (init 1)
// and A(...) alone when `skip` is false (routed adapters on an encoder, spec §3.5). x is what the block's
// residual adds: in post-LN stacks the sublayer input, in pre-LN stacks (T5, GPT-2, ViT, CLIP) the stream
// before the sublayer's norm (the site's `residual`), not the normed value the sublayer read, as in
// adapter-hub/adapters (its residual_input). These conventions match adapters 1.3.0 to F32 rounding on BART
// and T5 (tests/peft_adapters/test_adapterhub_parity.cpp; its header gives the config correspondence).
//
// Config fields of peft_type VLPEFT_ADAPTER (adapter_config.json):
//   placement        "vl_adapter" (default) | "houlsby" | "pfeiffer" | "parallel" | "scaled_parallel"
//   reduction_factor d / bottleneck (default 8 for vl_adapter, 16 houlsby/pfeiffer, 2 parallel)
//   bottleneck_dim   explicit bottleneck width (overrides reduction_factor)
//   non_linearity    activation name (default gelu_new; swish houlsby; relu pfeiffer/parallel)
//   scaling          s (default 1; 4 for parallel); scaled_parallel learns s (parameter "scale", init 1)
//   skip             internal residual (default true)
//   before_dropout   call the site before the sublayer dropout (default true for vl_adapter, else false)
//   init_weights     "vl_adapter" (BART N(0, 0.02), zero biases; other backbones nn.Linear's default),
//                    "bert" N(0, 0.02), zero biases, "mam_adapter" (Kaiming-uniform down, zero up, zero
//                    biases), "houlsby" (weights normal 0.01 truncated to ±0.02, zero biases), "zero_up"
//                    (vl_adapter with W_up = 0, c_u = 0). Default by placement, as adapter-hub/adapters'
//                    configs: vl_adapter "vl_adapter"; houlsby, pfeiffer "bert"; (scaled) parallel "mam_adapter"
//   use_gating       multiply A(z) by a token-mean gate of z (gate.h; UniPELT, combinations.h): parameters
//                    "gate.weight" [1, d] ~ N(0, 0.02), "gate.bias" 0 (default false)
//   sharing          "single" (default) | "multiple" | "half_shared"
//   tasks            task names, indexed by ForwardContext::task (required for multiple / half_shared)
//   target_modules   site names or suffixes (default sa_site, ca_site, ff_site for vl_adapter; sa_site,
//                    ff_site for houlsby (adapters' DoubleSeqBnConfig has no cross-attention adapter: add
//                    "ca_site" for its cross_adapter=True); ff_site for pfeiffer and the parallel adapters)
// Parameter names: "<site>.adapters.<name>.down.weight", ".down.bias", ".up.weight", ".up.bias"; per task
// "<site>.adapters.<name>.<task>.down.weight" (half-shared: shared "up", per-task "<task>.down").
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "models/config.h"
#include "models/peft/gate.h"
#include "models/peft/peft.h"
#include "models/site.h"

namespace vlp::peft {

// A d_in -> d_out projection inside an adapter: dense here, PHM in compacter.h.
struct Projection : Module {
  virtual Tensor forward(const Tensor& x) const = 0;
  virtual int64_t in_features() const = 0;
  virtual int64_t out_features() const = 0;
};

// y = x W^T + c, W [out, in]. Zero-filled; the attach code initialises it.
struct DenseProjection : Projection {
  Tensor weight, bias;
  DenseProjection(int64_t in, int64_t out, bool with_bias = true, DType dtype = DType::F32);
  Tensor forward(const Tensor& x) const override { return linear(x, weight, bias); }
  int64_t in_features() const override { return weight.size(1); }
  int64_t out_features() const override { return weight.size(0); }
  const char* type_name() const override { return "DenseProjection"; }
};

// Makes the projection of one role ("down" d -> m, "up" m -> d) for one slot (task index, -1 = shared).
using ProjectionFactory = std::function<std::unique_ptr<Projection>(int64_t in, int64_t out, const std::string& role)>;
ProjectionFactory dense_projections(DType dtype = DType::F32);

struct BottleneckOptions {
  int64_t d_model = 0, bottleneck = 0;
  std::string non_linearity = "gelu_new";
  std::string placement = "houlsby";  // houlsby | pfeiffer | parallel (scaled parallel = parallel + learned)
  double scaling = 1.0;
  bool learned_scaling = false;
  bool skip = true;
  std::string sharing = "single";      // single | multiple | half_shared
  std::vector<std::string> tasks;      // slot names for multiple / half_shared
  // Routing (routing.h): 0 = none, 1..4 the functions of spec §3.2.
  int routing = 0;
  bool routing_reshape_compat = false;
  std::string visual_pool = "none";    // "none": ctx.visual as given; "mean": mean over its tokens
  bool use_gating = false;             // A(z) times a gate of z (add_gate)
};

struct BottleneckAdapter : SublayerAdapter {
  BottleneckOptions options;
  std::vector<Projection*> down, up;  // one per slot; up has one entry when shared (single, half_shared)
  Tensor scale;                        // [1], learned scaling only
  const LayerNorm* block_norm = nullptr;  // pfeiffer on post-LN stacks: the block's norm (not owned)
  ActivationFn act;
  std::unique_ptr<TokenGate> gate;        // use_gating

  BottleneckAdapter(const BottleneckOptions& options, const ProjectionFactory& make, DType dtype = DType::F32);
  // The UniPELT gate on the adapter's input width (made in `dtype`, on the CPU like the projections).
  void add_gate(DType dtype, Generator& gen);
  // The slot the batch uses: 0 in single mode, else ctx.task (checked against the task list).
  int slot(const ForwardContext& ctx) const;
  // A(z) for the placement's z: the value before the adapter's own residual. `residual` (pre-LN stacks:
  // the block's stream before its norm) replaces `input` as the block input x of the formulas.
  Tensor delta(const Tensor& input, const Tensor& output, const ForwardContext& ctx,
               const Tensor& residual = Tensor()) const;
  Tensor forward(const Tensor& input, const Tensor& output, const ForwardContext& ctx) override {
    return forward_with_residual(input, Tensor(), output, ctx);
  }
  Tensor forward_with_residual(const Tensor& input, const Tensor& residual, const Tensor& output,
                               const ForwardContext& ctx) override {
    Tensor d = delta(input, output, ctx, residual);
    return options.skip ? output + d : d;
  }
  const char* type_name() const override { return "BottleneckAdapter"; }

 private:
  std::vector<std::unique_ptr<Projection>> owned_;
};

// Initialisation schemes of the header comment, on every dense projection of the adapter.
void init_bottleneck(BottleneckAdapter& adapter, const std::string& scheme, const std::string& backbone,
                     Generator& gen);
// Normal(0, std) truncated to [lo, hi] by redrawing the elements outside.
void truncated_normal_(const Tensor& t, double std, double lo, double hi, Generator& gen);

// ---- shared by the sublayer-site methods (adapters, Compacter, Hyperformer, routed adapters, fusion) ----

// One matched sublayer site with what the methods need to know about it.
struct SublayerTarget {
  std::string name;            // "model.encoder.layers.3.sa_site"
  SublayerSite* site = nullptr;
  std::string stack;           // "encoder" | "decoder" | "" (decoder-only and vision stacks)
  int layer = 0;               // index within the stack
  std::string block;           // "sa" | "ca" | "ff"
  const LayerNorm* block_norm = nullptr;  // post-LN block norm applied after this site (BART), else null
  int64_t d_model = 0;         // width of the sublayer output
  DType dtype = DType::F32;    // the backbone's parameter dtype: the adapter's tensors are made in it
};
// The model's sublayer sites matched by the config (default targets when it names none).
std::vector<SublayerTarget> sublayer_targets(AttachContext& ctx, const std::vector<std::string>& default_targets);
// The task list of the config ("tasks"), required non-empty when `required`.
std::vector<std::string> config_tasks(const PeftConfig& config, bool required);

// Builds the adapter options from a config (the fields above) for one site width.
BottleneckOptions bottleneck_options(const PeftConfig& config, int64_t d_model);
void attach_bottleneck_adapter(AttachContext& ctx);
// What attach_bottleneck_adapter does, with the adapter made by `make` (for a site's options and dtype): the
// sites of the placement, before_dropout, Pfeiffer's block norm, the init_weights scheme. Returns the adapters
// attached, in site order (AdaMix builds its mixture-of-experts adapters through this).
using BottleneckMaker = std::function<std::shared_ptr<BottleneckAdapter>(const BottleneckOptions&, DType)>;
std::vector<std::shared_ptr<BottleneckAdapter>> attach_bottlenecks(AttachContext& ctx, const BottleneckMaker& make);

}  // namespace vlp::peft
