#include "models/module.h"

#include <algorithm>
#include <sstream>

#include "models/site.h"
#include "runtime/trace.h"

namespace vlp {

namespace {
std::string join(const std::string& prefix, const std::string& name) {
  return prefix.empty() ? name : prefix + "." + name;
}
}  // namespace

Tensor& Module::register_parameter(const std::string& name, Tensor* tensor) {
  for (const auto& p : params_) VLP_CHECK(p.first != name, "parameter '", name, "' registered twice");
  params_.push_back({name, tensor});
  return *tensor;
}

Tensor& Module::register_buffer(const std::string& name, Tensor* tensor) {
  for (const auto& p : params_) VLP_CHECK(p.first != name, "buffer '", name, "' has the name of a parameter");
  for (const auto& b : buffers_) VLP_CHECK(b.first != name, "buffer '", name, "' registered twice");
  buffers_.push_back({name, tensor});
  return *tensor;
}

void Module::remove_module(const std::string& name) {
  auto it = std::find_if(children_.begin(), children_.end(), [&](const auto& c) { return c.first == name; });
  VLP_CHECK(it != children_.end(), "no child module '", name, "'");
  Module* m = it->second;
  children_.erase(it);
  owned_.erase(std::remove_if(owned_.begin(), owned_.end(), [&](const auto& o) { return o.get() == m; }),
               owned_.end());
}

std::vector<std::pair<std::string, Tensor>> Module::named_parameters(const std::string& prefix) const {
  std::vector<std::pair<std::string, Tensor>> out;
  for (const auto& [name, t] : params_)
    if (t->defined()) out.push_back({join(prefix, name), *t});
  for (const auto& [name, child] : children_) {
    auto sub = child->named_parameters(join(prefix, name));
    out.insert(out.end(), sub.begin(), sub.end());
  }
  return out;
}

std::vector<std::pair<std::string, Tensor>> Module::named_buffers(const std::string& prefix) const {
  std::vector<std::pair<std::string, Tensor>> out;
  for (const auto& [name, t] : buffers_)
    if (t->defined()) out.push_back({join(prefix, name), *t});
  for (const auto& [name, child] : children_) {
    auto sub = child->named_buffers(join(prefix, name));
    out.insert(out.end(), sub.begin(), sub.end());
  }
  return out;
}

std::vector<std::pair<std::string, Tensor>> Module::state_dict(const std::string& prefix) const {
  auto out = named_parameters(prefix);
  auto buffers = named_buffers(prefix);
  out.insert(out.end(), buffers.begin(), buffers.end());
  return out;
}

std::vector<std::pair<std::string, Module*>> Module::named_modules(const std::string& prefix) {
  std::vector<std::pair<std::string, Module*>> out{{prefix, this}};
  for (const auto& [name, child] : children_) {
    auto sub = child->named_modules(join(prefix, name));
    out.insert(out.end(), sub.begin(), sub.end());
  }
  return out;
}

std::vector<Tensor> Module::parameters() const {
  std::vector<Tensor> out;
  for (auto& [name, t] : named_parameters()) out.push_back(t);
  return out;
}

Module* Module::find_module(const std::string& dotted_name) {
  for (auto& [name, m] : named_modules())
    if (name == dotted_name) return m;
  return nullptr;
}

void Module::train(bool on) {
  training_ = on;
  for (auto& [name, child] : children_) child->train(on);
}

void Module::set_requires_grad(bool on) {
  for (auto& [name, t] : params_)
    if (t->defined()) t->set_requires_grad(on);
  for (auto& [name, child] : children_) child->set_requires_grad(on);
}

int64_t Module::num_parameters(bool trainable_only) const {
  int64_t n = 0;
  for (const auto& [name, t] : named_parameters())
    if (!trainable_only || t.requires_grad()) n += t.numel();
  return n;
}

void Module::to_device(Device device, std::optional<DType> float_dtype) {
  // One new storage per old one, so views of a shared storage (tied weights) stay views of one storage.
  std::map<const Storage*, Tensor> moved;  // old storage -> its whole contents, moved
  auto move = [&](Tensor* t) {
    if (!t->defined()) return;
    const DType dt = float_dtype && is_floating(t->dtype()) ? *float_dtype : t->dtype();
    if (t->device() == device && dt == t->dtype()) return;
    const bool grad = t->requires_grad();
    auto it = moved.find(t->storage().get());
    if (it == moved.end()) {
      const int64_t n = int64_t(t->storage()->nbytes / t->element_size());
      Tensor whole(t->storage(), {n}, {1}, 0, t->dtype());
      it = moved.emplace(t->storage().get(), convert(whole, dt, device)).first;
    }
    *t = Tensor(it->second.storage(), t->shape(), t->strides(), t->offset(), dt);
    if (grad) t->set_requires_grad(true);
  };
  std::vector<Module*> stack{this};
  while (!stack.empty()) {
    Module* m = stack.back();
    stack.pop_back();
    for (auto& [name, t] : m->params_) move(t);
    for (auto& [name, t] : m->buffers_) move(t);
    for (auto& [name, child] : m->children_) stack.push_back(child);
  }
}

// ---- layers ----

Linear::Linear(int64_t in_features, int64_t out_features, bool with_bias, bool fan_in_fan_out_)
    : fan_in_fan_out(fan_in_fan_out_) {
  weight = fan_in_fan_out ? empty({in_features, out_features}) : empty({out_features, in_features});
  kaiming_uniform_(weight_out_in());
  register_parameter("weight", &weight);
  if (with_bias) {
    bias = empty({out_features});
    double bound = 1.0 / std::sqrt(double(std::max<int64_t>(in_features, 1)));
    uniform_(bias, -bound, bound);
    register_parameter("bias", &bias);
  }
}

Tensor Linear::weight_out_in() const { return fan_in_fan_out ? transpose(weight, 0, 1) : weight; }

Tensor Linear::base_forward(const Tensor& x) const { return linear(x, weight_out_in(), bias); }

Tensor Linear::forward(const Tensor& x, const ForwardContext& ctx) const {
  TraceRange range("linear");
  Tensor y;
  bool any = false;
  for (const auto& [name, a] : adapters) {
    if (!a->active || a->merged) continue;
    if (!any && !a->replaces_base()) y = base_forward(x);
    y = a->forward(*this, x, y, ctx);
    any = true;
  }
  return any ? y : base_forward(x);
}

LayerNorm::LayerNorm(int64_t dim, double eps_, bool affine, bool with_bias) : eps(eps_) {
  if (affine) {
    weight = ones({dim});
    register_parameter("weight", &weight);
    if (with_bias) {
      bias = zeros({dim});
      register_parameter("bias", &bias);
    }
  }
}

RMSNorm::RMSNorm(int64_t dim, double eps_) : eps(eps_) {
  weight = ones({dim});
  register_parameter("weight", &weight);
}

Embedding::Embedding(int64_t num_embeddings, int64_t dim) {
  weight = empty({num_embeddings, dim});
  normal_(weight, 0.0, 1.0);
  register_parameter("weight", &weight);
}

// ---- state dicts ----

std::string StateDictReport::describe() const {
  std::ostringstream os;
  for (const auto& n : missing) os << "missing: " << n << "\n";
  for (const auto& n : unexpected) os << "unexpected: " << n << "\n";
  for (const auto& n : mismatched) os << "mismatched: " << n << "\n";
  return os.str();
}

StateDictReport load_state_dict(Module& model, const std::vector<std::pair<std::string, Tensor>>& tensors,
                                bool strict, bool allow_dtype_conversion) {
  StateDictReport report;
  auto params = model.state_dict();
  std::vector<bool> used(tensors.size(), false);
  std::vector<std::pair<Tensor, const Tensor*>> copies;
  for (const auto& [name, param] : params) {
    auto it = std::find_if(tensors.begin(), tensors.end(), [&](const auto& t) { return t.first == name; });
    if (it == tensors.end()) {
      report.missing.push_back(name);
      continue;
    }
    used[size_t(it - tensors.begin())] = true;
    const Tensor& src = it->second;
    bool dtype_ok = src.dtype() == param.dtype() ||
                    (allow_dtype_conversion && is_floating(src.dtype()) && is_floating(param.dtype()));
    if (src.shape() != param.shape() || !dtype_ok) {
      report.mismatched.push_back(str(name, ": checkpoint ", src.dtype(), " ", shape_str(src.shape()), " vs model ",
                                      param.dtype(), " ", shape_str(param.shape())));
      continue;
    }
    copies.push_back({param, &src});
  }
  for (size_t i = 0; i < tensors.size(); ++i)
    if (!used[i]) report.unexpected.push_back(tensors[i].first);
  VLP_CHECK(!strict || report.ok(), "checkpoint does not match the model:\n", report.describe());
  NoGradGuard no_grad;
  for (auto& [param, src] : copies) copy_(param, *src);
  return report;
}

}  // namespace vlp
