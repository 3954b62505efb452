// The HF PEFT parity harness of the Linear-site methods: the two-layer chain of
// tools/reference/make_peft_linear_fixtures.py, its fixture files, and the checks every method runs
// (adapted output, adapter gradients, merged output, unmerge, disabled adapters).
#pragma once
#include <fstream>
#include <functional>
#include <string>

#include "common/test_util.h"
#include "models/peft/peft.h"
#include "runtime/safetensors.h"

namespace vlp::test {

constexpr int64_t kIn = 16, kMid = 12, kOut = 8;

// y = lin2(tanh(lin1(x))), as the fixture script's Chain.
struct Chain : Module {
  Linear lin1, lin2;
  explicit Chain(bool conv1d) : lin1(kIn, kMid, true, conv1d), lin2(kMid, kOut, true, conv1d) {
    register_module("lin1", &lin1);
    register_module("lin2", &lin2);
  }
  Tensor forward(const Tensor& x, const ForwardContext& ctx = {}) const {
    return lin2.forward(tanh(lin1.forward(x, ctx)), ctx);
  }
};

inline std::string fixture_path(const std::string& file) {
  return std::string(VLP_SOURCE_DIR) + "/tests/fixtures/peft_linear/" + file;
}

inline peft::PeftConfig fixture_config(const std::string& name) {
  std::ifstream in(fixture_path(name + ".json"));
  return peft::parse_peft_config(nlohmann::json::parse(in), name + ".json");
}

// A model parameter's key in adapter_model.safetensors (spec §6.4 default rule, or a method's own rule).
using FileKey = std::function<std::string(const std::string& param_name)>;
inline std::string default_file_key(const std::string& param) {
  if (param.rfind("peft_shared.default.", 0) == 0) return "base_model." + param.substr(20);
  std::string p = param;
  const std::string tag = ".adapters.default";
  if (auto at = p.find(tag); at != std::string::npos) p.erase(at, tag.size());
  return "base_model.model." + p;
}

// Builds the chain with the fixture's base weights, attaches the adapter through `attach` with the fixture's
// adapter_config.json, and loads every adapter tensor; every fixture tensor must find its parameter.
struct ParityCase {
  SafetensorsFile file;
  peft::PeftConfig config;
  std::unique_ptr<Chain> chain;
  Generator gen{7};

  ParityCase(const std::string& name, bool conv1d, void (*attach)(peft::AttachContext&),
             const FileKey& key = default_file_key)
      : file(load_safetensors(fixture_path(name + ".safetensors"))), config(fixture_config(name)) {
    chain = std::make_unique<Chain>(conv1d);
    for (auto [pname, t] : chain->named_parameters()) copy_(t, file.at("base." + pname));
    peft::AttachContext ctx{*chain, config, "default", gen, ""};
    attach(ctx);
    size_t loaded = 0;
    for (auto [pname, t] : chain->state_dict()) {
      if (pname.find(".adapters.") == std::string::npos && pname.rfind("peft_shared.", 0) != 0) continue;
      const Tensor* src = file.find("adapter." + key(pname));
      if (!src) ADD_FAILURE() << name << ": no fixture tensor for parameter " << pname << " (key " << key(pname) << ")";
      if (!src) continue;
      EXPECT_EQ(src->shape(), t.shape()) << pname;
      copy_(t, *src);
      ++loaded;
    }
    size_t in_file = 0;
    for (auto& [k, t] : file.tensors) in_file += k.rfind("adapter.", 0) == 0;
    EXPECT_EQ(loaded, in_file) << name << ": fixture adapter tensors not all loaded";
    chain->set_requires_grad(false);
    for (auto& [n, a] : adapters()) a->set_requires_grad(true);
  }

  std::vector<std::pair<std::string, LinearAdapter*>> adapters() {
    std::vector<std::pair<std::string, LinearAdapter*>> out;
    for (Linear* l : {&chain->lin1, &chain->lin2})
      for (auto& [n, a] : l->adapters) out.push_back({n, a.get()});
    return out;
  }

  // Output and adapter gradients against HF PEFT.
  void check_forward_backward(const FileKey& key = default_file_key, double out_tol = 1e-5, double grad_tol = 1e-4) {
    Tensor y = chain->forward(file.at("x"));
    EXPECT_TRUE(all_close(y, file.at("y"), 0.0, out_tol)) << "output vs HF PEFT";
    EXPECT_FALSE(all_close(y, file.at("y_base"), 0.0, 1e-3)) << "fixture adapter is a no-op";
    backward(sum(mul(y, file.at("probe"))));
    int checked = 0;
    for (auto [pname, t] : chain->named_parameters()) {
      if (!t.requires_grad()) continue;
      const Tensor* g = file.find("grad." + key(pname));
      if (!g) continue;
      ASSERT_TRUE(t.grad().defined()) << pname;
      EXPECT_TRUE(all_close(t.grad(), *g, 0.0, grad_tol)) << "gradient of " << pname;
      ++checked;
    }
    EXPECT_GT(checked, 0) << "no gradient compared";
  }

  // Merged output equals HF's merged output and the unmerged one; unmerge restores the base weights.
  void check_merge(double tol = 1e-5) {
    NoGradGuard no_grad;
    Tensor w1 = clone(chain->lin1.weight), w2 = clone(chain->lin2.weight);
    Tensor y = chain->forward(file.at("x"));
    for (Linear* l : {&chain->lin1, &chain->lin2})
      for (auto& [n, a] : l->adapters) {
        ASSERT_TRUE(a->mergeable());
        a->merge(*l);
        a->merged = true;
      }
    Tensor ym = chain->forward(file.at("x"));
    EXPECT_TRUE(all_close(ym, y, 0.0, tol)) << "merged vs unmerged";
    if (const Tensor* ref = file.find("y_merged")) {
      EXPECT_TRUE(all_close(ym, *ref, 0.0, tol)) << "merged vs HF";
    }
    for (Linear* l : {&chain->lin1, &chain->lin2})
      for (auto& [n, a] : l->adapters) {
        a->unmerge(*l);
        a->merged = false;
      }
    EXPECT_TRUE(all_close(chain->lin1.weight, w1, 0.0, tol)) << "unmerge lin1";
    EXPECT_TRUE(all_close(chain->lin2.weight, w2, 0.0, tol)) << "unmerge lin2";
    EXPECT_TRUE(all_close(chain->forward(file.at("x")), y, 0.0, tol)) << "after unmerge";
  }

  // Inactive adapters: the base output.
  void check_disabled() {
    NoGradGuard no_grad;
    for (auto& [n, a] : adapters()) a->active = false;
    EXPECT_TRUE(all_close(chain->forward(file.at("x")), file.at("y_base"), 0.0, 1e-6));
    for (auto& [n, a] : adapters()) a->active = true;
  }
};

// Default initialisation leaves the layer's output bit-identical to the base layer.
inline void expect_noop_init(void (*attach)(peft::AttachContext&), const nlohmann::json& config_json,
                             bool conv1d = false) {
  Chain chain(conv1d);
  Tensor x = rand_input({2, 3, kIn}, 5, DType::F32, false);
  Tensor base = chain.forward(x);
  peft::PeftConfig config = peft::parse_peft_config(config_json);
  Generator gen(11);
  peft::AttachContext ctx{chain, config, "default", gen, ""};
  attach(ctx);
  ASSERT_FALSE(chain.lin1.adapters.empty());
  Tensor y = chain.forward(x);
  std::vector<double> a = to_vector(y), b = to_vector(base);
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) ASSERT_EQ(a[i], b[i]) << "element " << i << " differs from the base";
}

}  // namespace vlp::test
