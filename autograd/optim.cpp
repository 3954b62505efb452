// Optimizers, gradient clipping and schedules over kernels/cpu/optim. Each parameter is updated through
// a contiguous working copy in its compute dtype, which is the parameter itself in the usual case
// (contiguous F32/F64) and a temporary copied back otherwise (BF16/F16, non-contiguous views).
#include "autograd/optim.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <numbers>
#include <set>
#include <tuple>

#include "autograd/dispatch.h"
#include "autograd/graph.h"
#include "kernels/cpu/optim.h"

namespace vlp {

namespace {

const char* kind_name(OptimizerKind k) { return k == OptimizerKind::SGD ? "SGD" : "AdamW"; }

void check_range(bool ok, const char* what, int g, const char* field, double value, const char* expected) {
  VLP_CHECK(ok, what, ": group ", g, " has ", field, " = ", value, ", expected ", expected);
}

Optimizer make_optimizer(OptimizerKind kind, std::vector<ParamGroup> groups) {
  const char* what = kind == OptimizerKind::SGD ? "make_sgd" : "make_adamw";
  std::set<std::tuple<const Storage*, int64_t, Shape, Shape>> seen_views;
  std::set<std::string> seen_names;
  for (size_t g = 0; g < groups.size(); ++g) {
    ParamGroup& group = groups[g];
    int gi = int(g);
    check_range(group.lr >= 0, what, gi, "lr", group.lr, ">= 0");
    check_range(group.weight_decay >= 0, what, gi, "weight_decay", group.weight_decay, ">= 0");
    if (kind == OptimizerKind::AdamW) {
      check_range(group.beta1 >= 0 && group.beta1 < 1, what, gi, "beta1", group.beta1, "in [0, 1)");
      check_range(group.beta2 >= 0 && group.beta2 < 1, what, gi, "beta2", group.beta2, "in [0, 1)");
      check_range(group.eps >= 0, what, gi, "eps", group.eps, ">= 0");
    } else {
      check_range(group.momentum >= 0, what, gi, "momentum", group.momentum, ">= 0");
      VLP_CHECK(!group.nesterov || (group.momentum > 0 && group.dampening == 0), what, ": group ", g,
                ": nesterov momentum needs momentum > 0 and dampening 0");
    }
    VLP_CHECK(group.names.empty() || group.names.size() == group.params.size(), what, ": group ", g, " has ",
              group.params.size(), " parameters but ", group.names.size(), " names");
    if (group.names.empty())
      for (size_t i = 0; i < group.params.size(); ++i) group.names.push_back(str("group", g, ".param", i));
    for (size_t i = 0; i < group.params.size(); ++i) {
      const Tensor& p = group.params[i];
      const std::string& name = group.names[i];
      VLP_CHECK(p.defined(), what, ": parameter '", name, "' is undefined");
      VLP_CHECK(is_floating(p.dtype()), what, ": parameter '", name, "' has dtype ", p.dtype(),
                "; only floating tensors can be optimized");
      VLP_CHECK(p.is_leaf(), what, ": parameter '", name, "' is not a leaf (an op's output); optimize leaves");
      VLP_CHECK(seen_names.insert(name).second, what, ": parameter name '", name, "' appears twice");
      // The same tensor twice would be updated twice per step.
      VLP_CHECK(seen_views.insert({p.storage().get(), p.offset(), p.shape(), p.strides()}).second, what,
                ": parameter '", name, "' is the same tensor as an earlier parameter (listed twice)");
    }
    group.initial_lr = group.lr;
  }
  Optimizer opt;
  opt.kind = kind;
  opt.state.resize(groups.size());
  for (size_t g = 0; g < groups.size(); ++g) opt.state[g].resize(groups[g].params.size());
  opt.groups = std::move(groups);
  return opt;
}

// State is kept in the compute dtype: the parameter's for F32/F64, F32 for BF16/F16.
DType state_dtype(const Tensor& p) { return compute_dtype(p.dtype()); }

// A contiguous tensor of dtype dt holding t's values: t itself when it already is one.
Tensor working_copy(const Tensor& t, DType dt) { return convert(t, dt, t.device()); }

// Calls update(work, grad) with the parameter and its gradient as contiguous tensors of the compute
// dtype, then writes the result back into the parameter when work is a temporary.
template <class Update>
void update_param(const char* what, const std::string& name, const Tensor& p, Update&& update) {
  Tensor g = p.grad();
  VLP_CHECK(p.is_cpu(), what, ": parameter '", name, "' is on ", p.device(),
            "; the optimizer kernels run on the CPU only in this build");
  VLP_CHECK(g.device() == p.device() && g.shape() == p.shape(), what, ": gradient of '", name, "' (",
            shape_str(g.shape()), " on ", g.device(), ") does not match the parameter (", shape_str(p.shape()),
            " on ", p.device(), ")");
  const DType dt = state_dtype(p);
  Tensor work = working_copy(p, dt);
  Tensor grad = working_copy(g, dt);
  update(work, grad);
  if (work.storage() != p.storage()) copy_(p, work);
  else p.storage()->version++;  // written in place: saved-tensor checks must see the change
}

void adamw_step_param(const ParamGroup& group, const std::string& name, const Tensor& p, ParamState& st) {
  update_param("AdamW", name, p, [&](const Tensor& work, const Tensor& grad) {
    if (!st.exp_avg.defined()) {
      st.exp_avg = zeros(p.shape(), work.dtype());
      st.exp_avg_sq = zeros(p.shape(), work.dtype());
    }
    st.step += 1;
    cpu::AdamWScalars s;
    s.lr = group.lr;
    s.beta1 = group.beta1;
    s.beta2 = group.beta2;
    s.eps = group.eps;
    s.weight_decay = group.weight_decay;
    s.bias_correction1 = 1.0 - std::pow(group.beta1, double(st.step));
    s.bias_correction2 = 1.0 - std::pow(group.beta2, double(st.step));
    dispatch_float("AdamW", work.dtype(), [&](auto t) {
      using T = decltype(t);
      cpu::adamw_step<T>(work.data<T>(), grad.data<T>(), st.exp_avg.data<T>(), st.exp_avg_sq.data<T>(),
                         work.numel(), s);
    });
  });
}

void sgd_step_param(const ParamGroup& group, const std::string& name, const Tensor& p, ParamState& st) {
  update_param("SGD", name, p, [&](const Tensor& work, const Tensor& grad) {
    const bool first = !st.momentum_buffer.defined();
    if (group.momentum != 0.0 && first) st.momentum_buffer = empty(p.shape(), work.dtype());
    st.step += 1;
    cpu::SGDScalars s;
    s.lr = group.lr;
    s.momentum = group.momentum;
    s.dampening = group.dampening;
    s.weight_decay = group.weight_decay;
    s.nesterov = group.nesterov;
    dispatch_float("SGD", work.dtype(), [&](auto t) {
      using T = decltype(t);
      T* buf = st.momentum_buffer.defined() ? st.momentum_buffer.data<T>() : nullptr;
      cpu::sgd_step<T>(work.data<T>(), grad.data<T>(), buf, first, work.numel(), s);
    });
  });
}

Tensor i64_scalar(int64_t v) {
  Tensor t = empty({}, DType::I64);
  *t.data<int64_t>() = v;
  return t;
}

int64_t read_i64_scalar(const std::string& key, const Tensor& t) {
  VLP_CHECK(t.dtype() == DType::I64 && t.numel() == 1, "import_optimizer_state: '", key,
            "' must be a one-element I64 tensor, got ", t.dtype(), " ", shape_str(t.shape()));
  return int64_t(convert(t, DType::I64, Device::cpu()).data<int64_t>()[0]);
}

}  // namespace

Optimizer make_sgd(std::vector<ParamGroup> groups) { return make_optimizer(OptimizerKind::SGD, std::move(groups)); }
Optimizer make_adamw(std::vector<ParamGroup> groups) {
  return make_optimizer(OptimizerKind::AdamW, std::move(groups));
}

Optimizer make_adamw(const std::vector<Tensor>& params, double lr, double weight_decay, double beta1, double beta2,
                     double eps) {
  ParamGroup g;
  g.params = params;
  g.lr = lr;
  g.weight_decay = weight_decay;
  g.beta1 = beta1;
  g.beta2 = beta2;
  g.eps = eps;
  return make_adamw(std::vector<ParamGroup>{g});
}

void step(Optimizer& opt) {
  NoGradGuard no_grad;
  for (size_t g = 0; g < opt.groups.size(); ++g) {
    const ParamGroup& group = opt.groups[g];
    for (size_t i = 0; i < group.params.size(); ++i) {
      const Tensor& p = group.params[i];
      if (!p.grad().defined()) continue;
      if (opt.kind == OptimizerKind::AdamW) adamw_step_param(group, group.names[i], p, opt.state[g][i]);
      else sgd_step_param(group, group.names[i], p, opt.state[g][i]);
    }
  }
  opt.step_count++;
}

void zero_grad(const std::vector<Tensor>& params) {
  for (const Tensor& p : params)
    if (p.defined() && p.autograd()) p.set_grad(Tensor());
}

void zero_grad(Optimizer& opt) {
  for (const ParamGroup& g : opt.groups) zero_grad(g.params);
}

void set_lr_factor(Optimizer& opt, double factor) {
  VLP_CHECK(factor >= 0 && std::isfinite(factor), "set_lr_factor: factor ", factor, " must be finite and >= 0");
  for (ParamGroup& g : opt.groups) g.lr = g.initial_lr * factor;
}

NamedTensors export_optimizer_state(const Optimizer& opt) {
  NamedTensors out;
  out.emplace_back("optimizer.step_count", i64_scalar(opt.step_count));
  for (size_t g = 0; g < opt.groups.size(); ++g)
    out.emplace_back(str("param_groups.", g, ".lr"), scalar_tensor(opt.groups[g].lr, DType::F64));
  for (size_t g = 0; g < opt.groups.size(); ++g) {
    for (size_t i = 0; i < opt.groups[g].params.size(); ++i) {
      const ParamState& st = opt.state[g][i];
      const std::string prefix = "state." + opt.groups[g].names[i] + ".";
      if (st.step == 0 && !st.exp_avg.defined() && !st.momentum_buffer.defined()) continue;
      out.emplace_back(prefix + "step", i64_scalar(st.step));
      if (st.exp_avg.defined()) {
        out.emplace_back(prefix + "exp_avg", st.exp_avg);
        out.emplace_back(prefix + "exp_avg_sq", st.exp_avg_sq);
      }
      if (st.momentum_buffer.defined()) out.emplace_back(prefix + "momentum_buffer", st.momentum_buffer);
    }
  }
  return out;
}

void import_optimizer_state(Optimizer& opt, const NamedTensors& state) {
  const char* what = "import_optimizer_state";
  std::map<std::string, const Tensor*> by_name;
  for (const auto& [name, t] : state) {
    VLP_CHECK(t.defined(), what, ": '", name, "' is undefined");
    VLP_CHECK(by_name.emplace(name, &t).second, what, ": '", name, "' appears twice");
  }
  std::set<std::string> used;
  auto take = [&](const std::string& key) -> const Tensor* {
    auto it = by_name.find(key);
    if (it == by_name.end()) return nullptr;
    used.insert(key);
    return it->second;
  };

  const Tensor* count = take("optimizer.step_count");
  VLP_CHECK(count != nullptr, what, ": no 'optimizer.step_count' (not an exported ", kind_name(opt.kind),
            " state?)");
  std::vector<double> lrs(opt.groups.size());
  for (size_t g = 0; g < opt.groups.size(); ++g) {
    std::string key = str("param_groups.", g, ".lr");
    const Tensor* lr = take(key);
    VLP_CHECK(lr != nullptr, what, ": no '", key, "' (the state has fewer parameter groups?)");
    VLP_CHECK(lr->numel() == 1 && is_floating(lr->dtype()), what, ": '", key, "' must be a one-element float tensor");
    lrs[g] = lr->item();
  }

  // Build the new state completely before touching opt, so a refused import changes nothing.
  std::vector<std::vector<ParamState>> fresh(opt.groups.size());
  for (size_t g = 0; g < opt.groups.size(); ++g) {
    fresh[g].resize(opt.groups[g].params.size());
    for (size_t i = 0; i < opt.groups[g].params.size(); ++i) {
      const Tensor& p = opt.groups[g].params[i];
      const std::string prefix = "state." + opt.groups[g].names[i] + ".";
      ParamState& st = fresh[g][i];
      auto load = [&](const std::string& field) {
        const Tensor* t = take(prefix + field);
        if (!t) return Tensor();
        VLP_CHECK(t->shape() == p.shape() && t->dtype() == state_dtype(p), what, ": '", prefix + field, "' is ",
                  t->dtype(), " ", shape_str(t->shape()), ", expected ", state_dtype(p), " ",
                  shape_str(p.shape()), " for parameter '", opt.groups[g].names[i], "'");
        Tensor copy = empty(p.shape(), state_dtype(p));
        copy_(copy, *t);
        return copy;
      };
      const Tensor* step_t = take(prefix + "step");
      if (opt.kind == OptimizerKind::AdamW) {
        st.exp_avg = load("exp_avg");
        st.exp_avg_sq = load("exp_avg_sq");
        VLP_CHECK(st.exp_avg.defined() == st.exp_avg_sq.defined(), what, ": parameter '", opt.groups[g].names[i],
                  "' has only one of exp_avg and exp_avg_sq");
      } else {
        st.momentum_buffer = load("momentum_buffer");
      }
      VLP_CHECK(step_t != nullptr || (!st.exp_avg.defined() && !st.momentum_buffer.defined()), what,
                ": parameter '", opt.groups[g].names[i], "' has state but no '", prefix, "step'");
      if (step_t) st.step = read_i64_scalar(prefix + "step", *step_t);
    }
  }
  for (const auto& [name, t] : by_name)
    VLP_CHECK(used.count(name), what, ": unexpected key '", name, "' (no such parameter or field for ",
              kind_name(opt.kind), ")");
  opt.step_count = read_i64_scalar("optimizer.step_count", *count);
  for (size_t g = 0; g < opt.groups.size(); ++g) opt.groups[g].lr = lrs[g];
  opt.state = std::move(fresh);
}

double clip_grad_norm_(const std::vector<Tensor>& params, double max_norm) {
  NoGradGuard no_grad;
  std::vector<Tensor> grads;
  for (const Tensor& p : params) {
    if (!p.defined() || !p.grad().defined()) continue;
    Tensor g = p.grad();
    VLP_CHECK(g.is_cpu(), "clip_grad_norm_: gradient on ", g.device(), "; only CPU gradients in this build");
    VLP_CHECK(is_floating(g.dtype()), "clip_grad_norm_: gradient of dtype ", g.dtype());
    grads.push_back(g);
  }
  double sum = 0.0;
  for (const Tensor& g : grads) {
    Tensor w = working_copy(g, compute_dtype(g.dtype()));
    dispatch_float("clip_grad_norm_", w.dtype(), [&](auto t) {
      using T = decltype(t);
      sum += cpu::sum_of_squares<T>(w.data<T>(), w.numel());
    });
  }
  const double norm = std::sqrt(sum);
  const double coef = max_norm / (norm + 1e-6);
  if (!(coef >= 1.0)) {  // also when the norm is NaN, which then spreads to the gradients as in torch
    for (const Tensor& g : grads) {
      Tensor w = working_copy(g, compute_dtype(g.dtype()));
      dispatch_float("clip_grad_norm_", w.dtype(), [&](auto t) {
        using T = decltype(t);
        cpu::scale_inplace<T>(w.data<T>(), w.numel(), coef);
      });
      if (w.storage() != g.storage()) copy_(g, w);
      else g.storage()->version++;
    }
  }
  return norm;
}

// ---- schedules ----

namespace {
double warmup_factor(int64_t step, int64_t warmup_steps) {
  return double(step) / double(std::max<int64_t>(1, warmup_steps));
}
}  // namespace

double constant_schedule(int64_t) { return 1.0; }

double constant_schedule_with_warmup(int64_t step, int64_t warmup_steps) {
  return step < warmup_steps ? warmup_factor(step, warmup_steps) : 1.0;
}

double linear_schedule_with_warmup(int64_t step, int64_t warmup_steps, int64_t total_steps) {
  if (step < warmup_steps) return warmup_factor(step, warmup_steps);
  return std::max(0.0, double(total_steps - step) / double(std::max<int64_t>(1, total_steps - warmup_steps)));
}

double cosine_schedule_with_warmup(int64_t step, int64_t warmup_steps, int64_t total_steps, double num_cycles) {
  if (step < warmup_steps) return warmup_factor(step, warmup_steps);
  double progress = double(step - warmup_steps) / double(std::max<int64_t>(1, total_steps - warmup_steps));
  return std::max(0.0, 0.5 * (1.0 + std::cos(std::numbers::pi * num_cycles * 2.0 * progress)));
}

double schedule_factor(const std::string& name, int64_t step, int64_t warmup_steps, int64_t total_steps) {
  if (name == "constant") return constant_schedule(step);
  if (name == "constant_with_warmup") return constant_schedule_with_warmup(step, warmup_steps);
  if (name == "linear") return linear_schedule_with_warmup(step, warmup_steps, total_steps);
  if (name == "cosine") return cosine_schedule_with_warmup(step, warmup_steps, total_steps);
  VLP_FAIL("unknown lr schedule '", name, "': expected constant, constant_with_warmup, linear or cosine");
}

}  // namespace vlp
