// Optimizers, gradient clipping and schedules over kernels/cpu/optim. Each parameter is updated through
// a contiguous working copy in its compute dtype, which is the parameter itself in the usual case
// (contiguous F32/F64) and a temporary copied back otherwise (BF16/F16, non-contiguous views). CUDA
// parameters go through the kernel-call layer: AdamW batches every parameter of a group with the same
// device, dtype and step count into one cuda::adamw_multi_tensor launch (fp32 state, fp32 master
// weights for BF16), SGD composes the CPU formula from elementwise kernels in F32, and clipping sums
// squares with the deterministic multi-tensor kernel.
#include "autograd/optim.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <numbers>
#include <set>
#include <tuple>

#include "autograd/dispatch.h"
#include "autograd/graph.h"
#include "autograd/kernel_calls.h"
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

Tensor checked_grad(const char* what, const std::string& name, const Tensor& p) {
  Tensor g = p.grad();
  VLP_CHECK(g.device() == p.device() && g.shape() == p.shape(), what, ": gradient of '", name, "' (",
            shape_str(g.shape()), " on ", g.device(), ") does not match the parameter (", shape_str(p.shape()),
            " on ", p.device(), ")");
  if (!p.is_cpu())
    VLP_CHECK(p.dtype() == DType::F32 || p.dtype() == DType::BF16, what, ": parameter '", name, "' on ", p.device(),
              " has dtype ", p.dtype(), "; optimizer steps on CUDA take F32 or BF16 parameters");
  return g;
}

// After an update of work (a contiguous copy of p, or p itself): write it back or mark p as changed.
void write_back(const Tensor& p, const Tensor& work) {
  if (work.storage() != p.storage()) copy_(p, work);
  else p.storage()->version++;  // written in place: saved-tensor checks must see the change
}

// A 1-D view of a contiguous tensor (the elementwise kernels then see one plain array).
Tensor flat(const Tensor& t) { return Tensor(t.storage(), {t.numel()}, {1}, t.offset(), t.dtype()); }

// Calls update(work, grad) with the parameter and its gradient as contiguous tensors of the compute
// dtype, then writes the result back into the parameter when work is a temporary.
template <class Update>
void update_param(const char* what, const std::string& name, const Tensor& p, Update&& update) {
  Tensor g = checked_grad(what, name, p);
  const DType dt = state_dtype(p);
  Tensor work = working_copy(p, dt);
  Tensor grad = working_copy(g, dt);
  update(work, grad);
  write_back(p, work);
}

cpu::AdamWScalars adamw_scalars(const ParamGroup& group, int64_t step) {
  cpu::AdamWScalars s;
  s.lr = group.lr;
  s.beta1 = group.beta1;
  s.beta2 = group.beta2;
  s.eps = group.eps;
  s.weight_decay = group.weight_decay;
  s.bias_correction1 = 1.0 - std::pow(group.beta1, double(step));
  s.bias_correction2 = 1.0 - std::pow(group.beta2, double(step));
  return s;
}

void adamw_step_param(const ParamGroup& group, const std::string& name, const Tensor& p, ParamState& st) {
  update_param("AdamW", name, p, [&](const Tensor& work, const Tensor& grad) {
    if (!st.exp_avg.defined()) {
      st.exp_avg = zeros(p.shape(), work.dtype());
      st.exp_avg_sq = zeros(p.shape(), work.dtype());
    }
    st.step += 1;
    const cpu::AdamWScalars s = adamw_scalars(group, st.step);
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

// One multi-tensor AdamW launch: parameters of one group with the same device, dtype and step count.
struct CudaAdamWBatch {
  std::vector<AdamWParamRef> refs;
  std::vector<Tensor> params;  // refs[i].param is params[i] or a contiguous copy written back after
};
using CudaAdamWKey = std::tuple<int, DType, int64_t>;  // device index, dtype, step count after this step

// Prepares a CUDA parameter's state and adds it to its batch (the update itself runs in step()).
void add_cuda_adamw_param(const std::string& name, const Tensor& p, ParamState& st,
                          std::map<CudaAdamWKey, CudaAdamWBatch>& batches) {
  Tensor g = checked_grad("AdamW", name, p);
  if (!st.exp_avg.defined()) {
    st.exp_avg = zeros(p.shape(), DType::F32, p.device());
    st.exp_avg_sq = zeros(p.shape(), DType::F32, p.device());
  }
  if (p.dtype() == DType::BF16 && !st.master.defined()) st.master = convert(p, DType::F32, p.device());
  st.step += 1;
  AdamWParamRef r;
  r.param = working_copy(p, p.dtype());
  r.grad = working_copy(g, p.dtype());
  r.exp_avg = st.exp_avg;
  r.exp_avg_sq = st.exp_avg_sq;
  if (p.dtype() == DType::BF16) r.master = st.master;
  CudaAdamWBatch& b = batches[{p.device().index, p.dtype(), st.step}];
  b.refs.push_back(r);
  b.params.push_back(p);
}

// torch.optim.SGD on a CUDA parameter: the kernels/cpu/optim.h formula, step by step with the elementwise
// kernels in F32 (the momentum buffer is F32 on the parameter's GPU).
void sgd_step_cuda(const ParamGroup& group, const std::string& name, const Tensor& p, ParamState& st) {
  const char* op = "SGD";
  Tensor g = checked_grad(op, name, p);
  Tensor work = flat(working_copy(p, DType::F32));
  Tensor d = empty(p.shape(), DType::F32, p.device());  // a fresh copy: p.grad itself is never written
  copy_(d, g);
  d = flat(d);
  const Shape shape{work.numel()}, unit{1};
  if (group.weight_decay != 0.0) call_binary(op, cpu::Binary::Axpy, shape, d, d, unit, work, unit, group.weight_decay);
  if (group.momentum != 0.0) {
    if (!st.momentum_buffer.defined()) {
      st.momentum_buffer = empty(p.shape(), DType::F32, p.device());
      copy_(flat(st.momentum_buffer), d);
    } else {
      Tensor buf = flat(st.momentum_buffer);
      call_unary_forward(op, cpu::Unary::MulScalar, buf, buf, group.momentum, 0.0);
      call_binary(op, cpu::Binary::Axpy, shape, buf, buf, unit, d, unit, 1.0 - group.dampening);
    }
    Tensor buf = flat(st.momentum_buffer);
    if (group.nesterov) call_binary(op, cpu::Binary::Axpy, shape, d, d, unit, buf, unit, group.momentum);
    else d = buf;
  }
  st.step += 1;
  call_binary(op, cpu::Binary::Axpy, shape, work, work, unit, d, unit, -group.lr);
  write_back(p, work);
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
    std::map<CudaAdamWKey, CudaAdamWBatch> cuda_batches;
    for (size_t i = 0; i < group.params.size(); ++i) {
      const Tensor& p = group.params[i];
      if (!p.grad().defined()) continue;
      ParamState& st = opt.state[g][i];
      if (opt.kind == OptimizerKind::AdamW) {
        if (p.is_cpu()) adamw_step_param(group, group.names[i], p, st);
        else add_cuda_adamw_param(group.names[i], p, st, cuda_batches);
      } else {
        if (p.is_cpu()) sgd_step_param(group, group.names[i], p, st);
        else sgd_step_cuda(group, group.names[i], p, st);
      }
    }
    for (auto& [key, batch] : cuda_batches) {
      call_adamw_multi_tensor("AdamW", batch.refs, adamw_scalars(group, std::get<2>(key)));
      for (size_t i = 0; i < batch.refs.size(); ++i) write_back(batch.params[i], batch.refs[i].param);
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
      if (st.master.defined()) out.emplace_back(prefix + "master", st.master);
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
        Tensor copy = empty(p.shape(), state_dtype(p), p.device());
        copy_(copy, *t);
        return copy;
      };
      const Tensor* step_t = take(prefix + "step");
      if (opt.kind == OptimizerKind::AdamW) {
        st.exp_avg = load("exp_avg");
        st.exp_avg_sq = load("exp_avg_sq");
        VLP_CHECK(st.exp_avg.defined() == st.exp_avg_sq.defined(), what, ": parameter '", opt.groups[g].names[i],
                  "' has only one of exp_avg and exp_avg_sq");
        // fp32 master weights: kept for a BF16 parameter on CUDA; the CPU update has none.
        Tensor master = load("master");
        if (!p.is_cpu() && p.dtype() == DType::BF16) st.master = master;
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
    VLP_CHECK(is_floating(g.dtype()), "clip_grad_norm_: gradient of dtype ", g.dtype());
    grads.push_back(g);
  }
  // CUDA computes in F32 or BF16 (F16/F64 gradients are summed and scaled through an F32 copy).
  auto work_dtype = [](const Tensor& g) {
    if (g.is_cpu()) return compute_dtype(g.dtype());
    return g.dtype() == DType::BF16 ? DType::BF16 : DType::F32;
  };
  double sum = 0.0;
  std::map<std::pair<int, DType>, std::vector<Tensor>> on_gpu;  // (device index, dtype) -> contiguous copies
  for (const Tensor& g : grads) {
    Tensor w = working_copy(g, work_dtype(g));
    if (!g.is_cpu()) {
      on_gpu[{g.device().index, w.dtype()}].push_back(w);
      continue;
    }
    dispatch_float("clip_grad_norm_", w.dtype(), [&](auto t) {
      using T = decltype(t);
      sum += cpu::sum_of_squares<T>(w.data<T>(), w.numel());
    });
  }
  for (const auto& [key, ws] : on_gpu) sum += call_sum_of_squares("clip_grad_norm_", ws);
  const double norm = std::sqrt(sum);
  const double coef = max_norm / (norm + 1e-6);
  if (!(coef >= 1.0)) {  // also when the norm is NaN, which then spreads to the gradients as in torch
    for (const Tensor& g : grads) {
      Tensor w = working_copy(g, work_dtype(g));
      if (!g.is_cpu()) {
        call_unary_forward("clip_grad_norm_", cpu::Unary::MulScalar, w, w, coef, 0.0);
        write_back(g, w);
        continue;
      }
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
