// Adaptation sites: the one mechanism through which every PEFT method acts on a backbone.
//
// A backbone exposes four kinds of site, each named by its dotted module path:
//   - every Linear (models/module.h) holds LinearAdapters: LoRA and its variants, IA3, OFT, VeRA, ...;
//   - a SublayerSite after each attention / cross-attention / feed-forward sublayer holds
//     SublayerAdapters: bottleneck adapters (Houlsby, Pfeiffer, parallel, VL-Adapter), Compacter,
//     Hyperformer, routed adapters, AdapterFusion;
//   - an AttentionSite inside each attention block holds AttentionAdapters: prefix tuning, adaption
//     prompt;
//   - an InputSite where the token (or patch) embeddings enter a stack holds InputAdapters: prompt tuning,
//     P-tuning, VPT.
// models/peft/ walks the named sites of a model, matches them against a PEFT config and attaches one
// adapter module per matched site; the backbone code never changes per method. Adapters are Modules,
// registered under their site, so their parameters appear in named_parameters() and optimizers see them.
// An adapter acts only while `active` is true (PEFT's set_adapter / disable_adapters).
#pragma once
#include <string>

#include "models/module.h"

namespace vlp {

struct LinearAdapter : Module {
  bool active = true;
  // The layer's output for input x. `y` is the output so far: the frozen layer's x W^T + b for the first
  // active adapter (undefined when replaces_base()), else the previous adapter's result.
  virtual Tensor forward(const Linear& layer, const Tensor& x, const Tensor& y, const ForwardContext& ctx) = 0;
  // True for methods that compute the whole layer themselves (input scaling, weight rotation, DoRA), so
  // the base product is not computed and thrown away.
  virtual bool replaces_base() const { return false; }
  // Merging into the frozen weight (W as [out, in]); false when the method cannot merge.
  virtual bool mergeable() const { return false; }
  virtual void merge(Linear& layer) { VLP_FAIL(type_name(), " cannot be merged"); }
  virtual void unmerge(Linear& layer) { VLP_FAIL(type_name(), " cannot be unmerged"); }
  bool merged = false;
};

// Acts on a sublayer's result. `input` is the sublayer input (what the sublayer read: in pre-LN stacks the
// normed stream), `output` the sublayer output after its dropout and before the residual add. Returns the
// new sublayer output.
struct SublayerAdapter : Module {
  bool active = true;
  virtual Tensor forward(const Tensor& input, const Tensor& output, const ForwardContext& ctx) = 0;
  // Pre-LN stacks also hand the site `residual`, the stream entering the block before its norm (what the
  // block's residual connection adds). Adapters that read the block input as adapter-hub/adapters does
  // (Pfeiffer, parallel: its residual_input) override this; the default ignores it.
  virtual Tensor forward_with_residual(const Tensor& input, const Tensor& residual, const Tensor& output,
                                       const ForwardContext& ctx) {
    return forward(input, output, ctx);
  }
};

struct SublayerSite : Module {
  std::vector<std::pair<std::string, std::shared_ptr<SublayerAdapter>>> adapters;
  // Where the backbone calls the site: after the sublayer's dropout (the default, as documented above), or
  // before it when true (`output` is then the undropped sublayer output and the dropout applies to the
  // site's result), as VL-Adapter places its adapters in T5 and BART: x + Drop(A(Sublayer(x))).
  bool before_dropout = false;
  // `residual`: the block's pre-norm input in pre-LN stacks, undefined in post-LN ones (there `input` is it).
  Tensor forward(const Tensor& input, const Tensor& output, const ForwardContext& ctx,
                 const Tensor& residual = Tensor()) const {
    Tensor h = output;
    for (const auto& [name, a] : adapters)
      if (a->active)
        h = residual.defined() ? a->forward_with_residual(input, residual, h, ctx) : a->forward(input, h, ctx);
    return h;
  }
  const char* type_name() const override { return "SublayerSite"; }
};

// Keys and values of one attention call, [B, H, T, D], with the key padding mask [B, Tk] (undefined =
// all keys valid), and the call's input. An AttentionAdapter may prepend keys/values (prefix tuning) before
// attention, and add to the attention output (adaption prompt) after it.
struct AttentionState {
  Tensor q, k, v, key_padding_mask;
  Tensor input;  // the attention's input x [B, T, d] (what gated prefixes read), set by models/attention.cpp
};

struct AttentionAdapter : Module {
  bool active = true;
  virtual void before(AttentionState& state, const ForwardContext& ctx) {}
  // `out` is the attention output [B, T, H*D] before the output projection; `x` the block input.
  virtual Tensor after(const Tensor& x, const AttentionState& state, const Tensor& out, const ForwardContext& ctx) {
    return out;
  }
  // Keys this adapter prepends that count as past positions (prefix tuning): the backbone starts the real
  // tokens' positions after them, as transformers does with a prefilled cache.
  virtual int64_t prefix_length() const { return 0; }
};

struct AttentionSite : Module {
  std::vector<std::pair<std::string, std::shared_ptr<AttentionAdapter>>> adapters;
  void before(AttentionState& state, const ForwardContext& ctx) const {
    for (const auto& [name, a] : adapters)
      if (a->active) a->before(state, ctx);
  }
  Tensor after(const Tensor& x, const AttentionState& state, const Tensor& out, const ForwardContext& ctx) const {
    Tensor h = out;
    for (const auto& [name, a] : adapters)
      if (a->active) h = a->after(x, state, h, ctx);
    return h;
  }
  int64_t prefix_length() const {
    int64_t n = 0;
    for (const auto& [name, a] : adapters)
      if (a->active) n += a->prefix_length();
    return n;
  }
  const char* type_name() const override { return "AttentionSite"; }
};

// Embeddings entering a stack: [B, T, D] with the attention mask [B, T] (1 = attend). Input adapters
// may insert positions (prompts), returning the new embeddings and updating the mask to match.
struct InputAdapter : Module {
  bool active = true;
  virtual Tensor forward(const Tensor& embeds, Tensor& mask, const ForwardContext& ctx) = 0;
};

struct InputSite : Module {
  std::vector<std::pair<std::string, std::shared_ptr<InputAdapter>>> adapters;
  Tensor forward(const Tensor& embeds, Tensor& mask, const ForwardContext& ctx) const {
    Tensor h = embeds;
    for (const auto& [name, a] : adapters)
      if (a->active) h = a->forward(h, mask, ctx);
    return h;
  }
  const char* type_name() const override { return "InputSite"; }
};

// Attaches a PEFT module to a site under an adapter name, registering it as the child
// "adapters.<name>" so its parameters are named "<site>.adapters.<name>.<param>". detach_adapter undoes it.
template <class Site, class Adapter>
void attach_adapter(Site& site, const std::string& name, std::shared_ptr<Adapter> adapter) {
  for (const auto& entry : site.adapters)
    VLP_CHECK(entry.first != name, "adapter '", name, "' is already attached to this ", site.type_name());
  site.register_module("adapters." + name, adapter.get());
  site.adapters.push_back({name, std::move(adapter)});
}

template <class Site>
void detach_adapter(Site& site, const std::string& name) {
  for (size_t i = 0; i < site.adapters.size(); ++i) {
    if (site.adapters[i].first != name) continue;
    site.remove_module("adapters." + name);
    site.adapters.erase(site.adapters.begin() + long(i));
    return;
  }
  VLP_FAIL("no adapter '", name, "' on this ", site.type_name());
}

}  // namespace vlp
