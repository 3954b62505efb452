// Optimizers against references computed here in double with the torch.optim formulas (AdamW with
// decoupled weight decay and bias correction, SGD with momentum/dampening/nesterov), parameter
// groups, skipped parameters, gradient clipping, lr schedules, and state export/import through
// safetensors giving bit-identical continued training.
#include <omp.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <numbers>

#include "autograd/optim.h"
#include "common/test_util.h"

namespace vlp {
namespace {

namespace fs = std::filesystem;

// A deterministic gradient for parameter `which` at `step`.
std::vector<double> grad_values(int64_t n, int which, int step) {
  std::vector<double> g(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) g[size_t(i)] = std::sin(0.7 * double(i) + 1.3 * step + 2.1 * which) * (1.0 + which);
  return g;
}

Tensor param(const std::vector<double>& values, const Shape& shape, DType dtype) {
  Tensor t = from_vector(values, shape, dtype);
  t.set_requires_grad(true);
  return t;
}

std::vector<double> linspace_values(int64_t n, double lo, double hi) {
  std::vector<double> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[size_t(i)] = lo + (hi - lo) * double(i) / double(std::max<int64_t>(1, n - 1));
  return v;
}

// ---- references, written from the torch.optim documentation's formulas ----

struct RefAdamW {
  std::vector<double> p, m, v;
  int t = 0;
  explicit RefAdamW(std::vector<double> init) : p(std::move(init)), m(p.size(), 0.0), v(p.size(), 0.0) {}
  void step(const std::vector<double>& g, double lr, double b1, double b2, double eps, double wd) {
    ++t;
    for (size_t i = 0; i < p.size(); ++i) {
      p[i] -= lr * wd * p[i];  // decoupled weight decay
      m[i] = b1 * m[i] + (1 - b1) * g[i];
      v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i];
      double m_hat = m[i] / (1 - std::pow(b1, t));
      double v_hat = v[i] / (1 - std::pow(b2, t));
      p[i] -= lr * m_hat / (std::sqrt(v_hat) + eps);
    }
  }
};

struct RefSGD {
  std::vector<double> p, buf;
  bool has_buf = false;
  explicit RefSGD(std::vector<double> init) : p(std::move(init)) {}
  void step(const std::vector<double>& g, double lr, double momentum, double dampening, double wd, bool nesterov) {
    std::vector<double> d(p.size());
    for (size_t i = 0; i < p.size(); ++i) d[i] = g[i] + wd * p[i];
    if (momentum != 0) {
      if (!has_buf) buf = d, has_buf = true;
      else
        for (size_t i = 0; i < p.size(); ++i) buf[i] = momentum * buf[i] + (1 - dampening) * d[i];
      for (size_t i = 0; i < p.size(); ++i) d[i] = nesterov ? d[i] + momentum * buf[i] : buf[i];
    }
    for (size_t i = 0; i < p.size(); ++i) p[i] -= lr * d[i];
  }
};

// A parameter group; the tests change further fields on the result.
ParamGroup group(std::vector<Tensor> params, double lr, double weight_decay, std::vector<std::string> names = {}) {
  ParamGroup g;
  g.params = std::move(params);
  g.names = std::move(names);
  g.lr = lr;
  g.weight_decay = weight_decay;
  return g;
}

void set_grad_values(const Tensor& p, const std::vector<double>& g) {
  p.set_grad(from_vector(g, p.shape(), p.dtype()));
}

// The values p holds in F32/BF16 are what the reference must start from and be fed.
std::vector<double> rounded(const std::vector<double>& v, DType dt) {
  return to_vector(from_vector(v, {int64_t(v.size())}, dt));
}

TEST(AdamW, MatchesReferenceWithWeightDecayAndBiasCorrection) {
  for (DType dt : {DType::F64, DType::F32}) {
    SCOPED_TRACE(std::string(dtype_name(dt)));
    const double lr = 0.01, wd = 0.1, b1 = 0.9, b2 = 0.999, eps = 1e-8;
    Tensor w = param(rounded(linspace_values(12, -1, 1), dt), {3, 4}, dt);
    Tensor b = param(rounded(linspace_values(4, 0.5, 2), dt), {4}, dt);
    RefAdamW rw(to_vector(w)), rb(to_vector(b));
    Optimizer opt = make_adamw({w, b}, lr, wd, b1, b2, eps);
    for (int s = 0; s < 6; ++s) {
      std::vector<double> gw = rounded(grad_values(12, 0, s), dt), gb = rounded(grad_values(4, 1, s), dt);
      set_grad_values(w, gw);
      set_grad_values(b, gb);
      step(opt);
      rw.step(gw, lr, b1, b2, eps, wd);
      rb.step(gb, lr, b1, b2, eps, wd);
      double tol = dt == DType::F64 ? 1e-13 : 2e-6;
      ASSERT_TRUE(test::values_are(w, rw.p, tol)) << "step " << s;
      ASSERT_TRUE(test::values_are(b, rb.p, tol)) << "step " << s;
      EXPECT_TRUE(test::values_are(opt.state[0][0].exp_avg, rw.m, tol * 10));
      EXPECT_TRUE(test::values_are(opt.state[0][0].exp_avg_sq, rw.v, tol * 10));
    }
    EXPECT_EQ(opt.step_count, 6);
    EXPECT_EQ(opt.state[0][0].step, 6);
    EXPECT_EQ(opt.state[0][0].exp_avg.dtype(), dt);
  }
}

TEST(AdamW, FirstStepMovesEachWeightByAboutLr) {
  // With bias correction, step 1 is p - lr * g / (|g| + eps): a move of lr against the gradient's sign.
  Tensor w = param({1.0, -2.0, 3.0}, {3}, DType::F64);
  Optimizer opt = make_adamw({w}, 0.1, 0.0);
  set_grad_values(w, {0.5, -4.0, 1e-3});
  step(opt);
  EXPECT_TRUE(test::values_are(w, {0.9, -1.9, 2.9}, 2e-6));
}

TEST(AdamW, ParamGroupsUseTheirOwnHyperparameters) {
  const DType dt = DType::F64;
  Tensor a = param(linspace_values(6, -1, 1), {2, 3}, dt);
  Tensor b = param(linspace_values(5, 1, 2), {5}, dt);
  Tensor c = param(linspace_values(3, -3, 3), {3}, dt);
  ParamGroup g0 = group({a, b}, 0.01, 0.1, {"a", "b"});
  ParamGroup g1 = group({c}, 0.002, 0.0, {"c"});
  g1.beta1 = 0.8;
  g1.beta2 = 0.99;
  g1.eps = 1e-6;
  Optimizer opt = make_adamw({g0, g1});
  RefAdamW ra(to_vector(a)), rb(to_vector(b)), rc(to_vector(c));
  for (int s = 0; s < 4; ++s) {
    auto ga = grad_values(6, 0, s), gb = grad_values(5, 1, s), gc = grad_values(3, 2, s);
    set_grad_values(a, ga);
    set_grad_values(b, gb);
    set_grad_values(c, gc);
    step(opt);
    ra.step(ga, 0.01, 0.9, 0.999, 1e-8, 0.1);
    rb.step(gb, 0.01, 0.9, 0.999, 1e-8, 0.1);
    rc.step(gc, 0.002, 0.8, 0.99, 1e-6, 0.0);
  }
  EXPECT_TRUE(test::values_are(a, ra.p, 1e-13));
  EXPECT_TRUE(test::values_are(b, rb.p, 1e-13));
  EXPECT_TRUE(test::values_are(c, rc.p, 1e-13));
  // Schedules scale each group's own initial lr.
  set_lr_factor(opt, 0.5);
  EXPECT_DOUBLE_EQ(opt.groups[0].lr, 0.005);
  EXPECT_DOUBLE_EQ(opt.groups[1].lr, 0.001);
  EXPECT_DOUBLE_EQ(opt.groups[1].initial_lr, 0.002);
}

TEST(AdamW, ParametersWithoutGradientAreSkipped) {
  const DType dt = DType::F64;
  Tensor a = param(linspace_values(4, -1, 1), {4}, dt);
  Tensor rare = param(linspace_values(3, 1, 2), {3}, dt);   // a gradient only on even steps
  Tensor frozen = param(linspace_values(2, 5, 6), {2}, dt);  // never a gradient
  frozen.set_requires_grad(false);
  Optimizer opt = make_adamw({a, rare, frozen}, 0.01, 0.05);
  RefAdamW ra(to_vector(a)), rr(to_vector(rare));
  std::vector<double> frozen_before = to_vector(frozen);
  for (int s = 0; s < 5; ++s) {
    auto ga = grad_values(4, 0, s);
    set_grad_values(a, ga);
    ra.step(ga, 0.01, 0.9, 0.999, 1e-8, 0.05);
    if (s % 2 == 0) {
      auto gr = grad_values(3, 1, s);
      set_grad_values(rare, gr);
      rr.step(gr, 0.01, 0.9, 0.999, 1e-8, 0.05);  // its own step count drives its bias correction
    }
    step(opt);
    zero_grad(opt);
    EXPECT_FALSE(a.grad().defined());
    EXPECT_FALSE(rare.grad().defined());
  }
  EXPECT_TRUE(test::values_are(a, ra.p, 1e-13));
  EXPECT_TRUE(test::values_are(rare, rr.p, 1e-13));
  EXPECT_EQ(to_vector(frozen), frozen_before);  // no weight decay without a gradient either
  EXPECT_EQ(opt.state[0][0].step, 5);
  EXPECT_EQ(opt.state[0][1].step, 3);
  EXPECT_FALSE(opt.state[0][2].exp_avg.defined());  // no state for a frozen parameter
  EXPECT_EQ(opt.step_count, 5);
}

TEST(AdamW, LowPrecisionAndNonContiguousParameters) {
  // BF16: state in F32, the update computed in F32 and rounded once into the parameter.
  std::vector<double> init = rounded(linspace_values(8, -1, 1), DType::BF16);
  std::vector<double> g = rounded(grad_values(8, 0, 0), DType::BF16);
  Tensor p16 = param(init, {8}, DType::BF16);
  Tensor p32 = param(init, {8}, DType::F32);
  Optimizer o16 = make_adamw({p16}, 0.01, 0.1), o32 = make_adamw({p32}, 0.01, 0.1);
  set_grad_values(p16, g);
  set_grad_values(p32, g);
  step(o16);
  step(o32);
  EXPECT_EQ(o16.state[0][0].exp_avg.dtype(), DType::F32);
  Tensor expected = convert(p32, DType::BF16);
  EXPECT_EQ(std::memcmp(p16.data_ptr(), expected.data_ptr(), 16), 0);

  // A parameter that is a transposed view: updated through its own layout.
  Tensor storage = from_vector(linspace_values(6, -1, 1), {2, 3}, DType::F64);
  Tensor view = as_strided(storage, {3, 2}, {1, 3}, 0);
  view.set_requires_grad(true);
  RefAdamW ref(to_vector(view));
  Optimizer ov = make_adamw({view}, 0.01, 0.1);
  uint64_t version = storage.storage()->version;
  for (int s = 0; s < 3; ++s) {
    auto gv = grad_values(6, 0, s);
    set_grad_values(view, gv);
    step(ov);
    ref.step(gv, 0.01, 0.9, 0.999, 1e-8, 0.1);
  }
  EXPECT_TRUE(test::values_are(view, ref.p, 1e-13));
  EXPECT_GT(storage.storage()->version, version);  // in-place writes are visible to autograd's checks
}

TEST(SGD, MatchesReferenceForMomentumDampeningNesterovAndWeightDecay) {
  struct Config {
    double momentum, dampening, wd;
    bool nesterov;
  };
  for (Config c : {Config{0, 0, 0, false}, Config{0, 0, 0.01, false}, Config{0.9, 0.1, 0.01, false},
                   Config{0.9, 0, 0.05, true}}) {
    for (DType dt : {DType::F64, DType::F32}) {
      SCOPED_TRACE(str(dtype_name(dt), " momentum ", c.momentum, " dampening ", c.dampening, " wd ", c.wd,
                       " nesterov ", c.nesterov));
      Tensor w = param(rounded(linspace_values(10, -1, 1), dt), {2, 5}, dt);
      RefSGD ref(to_vector(w));
      ParamGroup g = group({w}, 0.05, c.wd);
      g.momentum = c.momentum;
      g.dampening = c.dampening;
      g.nesterov = c.nesterov;
      Optimizer opt = make_sgd({g});
      for (int s = 0; s < 5; ++s) {
        auto g = rounded(grad_values(10, 0, s), dt);
        set_grad_values(w, g);
        step(opt);
        ref.step(g, 0.05, c.momentum, c.dampening, c.wd, c.nesterov);
        ASSERT_TRUE(test::values_are(w, ref.p, dt == DType::F64 ? 1e-14 : 1e-6)) << "step " << s;
      }
      EXPECT_EQ(opt.state[0][0].momentum_buffer.defined(), c.momentum != 0);
    }
  }
}

TEST(Optimizer, RefusesBadConfigurations) {
  Tensor w = param({1, 2}, {2}, DType::F32);
  ParamGroup nesterov = group({w}, 0.1, 0.0);
  nesterov.nesterov = true;
  EXPECT_THROW(make_sgd({nesterov}), Error);  // needs momentum
  nesterov.momentum = 0.9;
  nesterov.dampening = 0.1;
  EXPECT_THROW(make_sgd({nesterov}), Error);  // and no dampening
  nesterov.dampening = 0.0;
  EXPECT_NO_THROW(make_sgd({nesterov}));
  ParamGroup beta = group({w}, 0.1, 0.0);
  beta.beta1 = 1.0;
  EXPECT_THROW(make_adamw({beta}), Error);
  EXPECT_THROW(make_adamw({group({w}, -1.0, 0.0)}), Error);
  EXPECT_THROW(make_adamw({group({w}, 1.0, -0.1)}), Error);
  EXPECT_THROW(make_adamw({w, w}), Error);  // the same tensor twice
  EXPECT_THROW(make_adamw({from_vector({1}, {1}, DType::I64)}), Error);
  EXPECT_THROW(make_adamw({group({w}, 0.1, 0.0, {"a", "b"})}), Error);
  Tensor v = param({3}, {1}, DType::F32);
  EXPECT_THROW(make_adamw({group({w}, 0.1, 0.0, {"x"}), group({v}, 0.1, 0.0, {"x"})}), Error);
  // A gradient of the wrong shape is named.
  Optimizer opt = make_adamw({group({w}, 0.1, 0.0, {"layer.weight"})});
  w.set_grad(zeros({3}));
  try {
    step(opt);
    ADD_FAILURE() << "accepted a gradient of the wrong shape";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("layer.weight"), std::string::npos) << e.what();
  }
}

TEST(Optimizer, TrainsThroughAutograd) {
  // Minimise sum((w - target)^2) with the gradient from backward.
  Tensor target = from_vector({1, -2, 3}, {3}, DType::F64);
  Tensor w = param({0, 0, 0}, {3}, DType::F64);
  Optimizer opt = make_adamw({w}, 0.1, 0.0);
  for (int s = 0; s < 300; ++s) {
    Tensor d = sub(w, target);
    backward(sum(mul(d, d)));
    step(opt);
    zero_grad(opt);
  }
  EXPECT_TRUE(test::values_are(w, {1, -2, 3}, 1e-2));
  EXPECT_TRUE(w.requires_grad() && w.is_leaf());
}

// ---- against torch.optim itself (tools/reference/gen_optim_fixture.py) ----

SafetensorsFile torch_fixture() {
  fs::path p = fs::path(VLP_SOURCE_DIR) / "tests" / "fixtures" / "autograd" / "optim_torch.safetensors";
  return load_safetensors(p.string());
}

// Max distance in units in the last place between two F32 tensors.
int64_t max_ulps(const Tensor& a, const Tensor& b) {
  const Tensor ca = contiguous_raw(a), cb = contiguous_raw(b);
  int64_t worst = 0;
  for (int64_t i = 0; i < a.numel(); ++i) {
    int32_t x = std::bit_cast<int32_t>(ca.data<float>()[i]), y = std::bit_cast<int32_t>(cb.data<float>()[i]);
    if (x < 0) x = INT32_MIN - x;  // order the bit patterns like the values
    if (y < 0) y = INT32_MIN - y;
    worst = std::max(worst, std::abs(int64_t(x) - int64_t(y)));
  }
  return worst;
}

// AdamW's elementwise chain matches torch's to 2 ulps. torch computes SGD's `a + alpha * b` steps with a
// fused multiply-add on AVX2 CPUs, which a portable build does not, so SGD is compared with a tolerance.
void replay(const SafetensorsFile& f, const std::string& prefix, Optimizer& opt, const std::vector<Tensor>& params) {
  for (int s = 0; s < 4; ++s) {
    for (size_t i = 0; i < params.size(); ++i) params[i].set_grad(f.at(str(prefix, ".p", i, ".grad", s)));
    step(opt);
    for (size_t i = 0; i < params.size(); ++i) {
      const Tensor& expected = f.at(str(prefix, ".p", i, ".step", s));
      SCOPED_TRACE(str(prefix, " param ", i, " step ", s));
      if (opt.kind == OptimizerKind::AdamW) {
        EXPECT_LE(max_ulps(params[i], expected), 2);
      } else {
        EXPECT_TRUE(test::all_close(params[i], expected, 1e-6, 1e-7));
      }
    }
  }
}

std::vector<Tensor> fixture_params(const SafetensorsFile& f, const std::string& prefix) {
  std::vector<Tensor> ps;
  for (int i = 0; i < 2; ++i) {
    Tensor p = contiguous_raw(f.at(str(prefix, ".p", i, ".init")));
    Tensor own = empty(p.shape());
    copy_(own, p);
    own.set_requires_grad(true);
    ps.push_back(own);
  }
  return ps;
}

TEST(TorchReference, AdamWGroupsSGDNesterovAndClipping) {
  SafetensorsFile f = torch_fixture();
  {
    std::vector<Tensor> ps = fixture_params(f, "adamw");
    ParamGroup g1 = group({ps[1]}, 3e-3, 0.0);
    g1.beta1 = 0.8;
    g1.beta2 = 0.99;
    g1.eps = 1e-6;
    Optimizer opt = make_adamw({group({ps[0]}, 1e-2, 0.1), g1});
    replay(f, "adamw", opt, ps);
  }
  {
    std::vector<Tensor> ps = fixture_params(f, "sgd");
    ParamGroup g = group(ps, 0.05, 0.01);
    g.momentum = 0.9;
    g.dampening = 0.1;
    Optimizer opt = make_sgd({g});
    replay(f, "sgd", opt, ps);
  }
  {
    std::vector<Tensor> ps = fixture_params(f, "nesterov");
    ParamGroup g = group(ps, 0.05, 0.01);
    g.momentum = 0.9;
    g.nesterov = true;
    Optimizer opt = make_sgd({g});
    replay(f, "nesterov", opt, ps);
  }
  {
    std::vector<Tensor> ps = {zeros({4, 5}).set_requires_grad(), zeros({7}).set_requires_grad()};
    for (int i = 0; i < 2; ++i) ps[size_t(i)].set_grad(convert(f.at(str("clip.p", i, ".grad")), DType::F32));
    // Ours accumulates in double, torch in float: equal to float precision.
    EXPECT_NEAR(clip_grad_norm_(ps, 1.0), f.at("clip.norm").item(), 1e-6 * f.at("clip.norm").item());
    for (int i = 0; i < 2; ++i) EXPECT_LE(max_ulps(ps[size_t(i)].grad(), f.at(str("clip.p", i, ".clipped"))), 2);
  }
}

// ---- clipping ----

TEST(ClipGradNorm, ScalesByMaxNormOverNormWhenAbove) {
  Tensor a = param(linspace_values(12, 0, 1), {3, 4}, DType::F64);
  Tensor b = param(linspace_values(5, 0, 1), {5}, DType::F32);
  Tensor none = param({1, 2}, {2}, DType::F64);  // no gradient: ignored
  auto ga = grad_values(12, 0, 0), gb = rounded(grad_values(5, 1, 0), DType::F32);
  double sq = 0;
  for (double x : ga) sq += x * x;
  for (double x : gb) sq += x * x;
  const double norm = std::sqrt(sq);

  set_grad_values(a, ga);
  set_grad_values(b, gb);
  // Below the threshold: returned, gradients untouched.
  EXPECT_NEAR(clip_grad_norm_({a, b, none}, norm * 2), norm, 1e-12 * norm);
  EXPECT_EQ(to_vector(a.grad()), ga);
  EXPECT_EQ(to_vector(b.grad()), gb);
  // Above: every gradient times max_norm / (norm + 1e-6).
  const double max_norm = norm / 4;
  EXPECT_NEAR(clip_grad_norm_({a, b, none}, max_norm), norm, 1e-12 * norm);
  const double coef = max_norm / (norm + 1e-6);
  std::vector<double> ea(ga), eb(gb);
  for (double& x : ea) x *= coef;
  for (double& x : eb) x *= coef;
  EXPECT_TRUE(test::values_are(a.grad(), ea, 1e-14));
  EXPECT_TRUE(test::values_are(b.grad(), eb, 1e-6));
  EXPECT_FALSE(none.grad().defined());
  // The clipped norm is max_norm (up to the 1e-6 guard).
  EXPECT_NEAR(clip_grad_norm_({a, b}, 1e9), max_norm, 1e-6);
  // No gradients at all: norm 0.
  EXPECT_EQ(clip_grad_norm_({none}, 1.0), 0.0);
}

TEST(ClipGradNorm, DeterministicForAnyThreadCount) {
  Tensor big = param(std::vector<double>(300001, 0.0), {300001}, DType::F32);
  Generator gen(5);
  Tensor g = empty({300001});
  uniform_(g, -1, 1, &gen);
  big.set_grad(g);
  int threads = omp_get_max_threads();
  omp_set_num_threads(1);
  double one = clip_grad_norm_({big}, 1e9);
  omp_set_num_threads(2);
  double two = clip_grad_norm_({big}, 1e9);
  omp_set_num_threads(threads);
  EXPECT_EQ(std::memcmp(&one, &two, sizeof(double)), 0);
  // Accumulated in double: matches a plain double sum closely.
  double sq = 0;
  for (double x : to_vector(g)) sq += x * x;
  EXPECT_NEAR(one, std::sqrt(sq), 1e-12 * one);
}

// ---- schedules ----

TEST(Schedules, WarmupPeakAndEnd) {
  EXPECT_EQ(constant_schedule(0), 1.0);
  EXPECT_EQ(constant_schedule(12345), 1.0);
  EXPECT_EQ(constant_schedule_with_warmup(5, 10), 0.5);
  EXPECT_EQ(constant_schedule_with_warmup(50, 10), 1.0);

  // linear: warmup 10 of 110 steps.
  EXPECT_EQ(linear_schedule_with_warmup(0, 10, 110), 0.0);
  EXPECT_EQ(linear_schedule_with_warmup(5, 10, 110), 0.5);
  EXPECT_EQ(linear_schedule_with_warmup(10, 10, 110), 1.0);  // peak
  EXPECT_DOUBLE_EQ(linear_schedule_with_warmup(60, 10, 110), 0.5);
  EXPECT_DOUBLE_EQ(linear_schedule_with_warmup(109, 10, 110), 0.01);
  EXPECT_EQ(linear_schedule_with_warmup(110, 10, 110), 0.0);  // end
  EXPECT_EQ(linear_schedule_with_warmup(200, 10, 110), 0.0);  // past the end: clamped
  EXPECT_EQ(linear_schedule_with_warmup(0, 0, 100), 1.0);     // no warmup

  // cosine: warmup 10 of 110, half a cycle from 1 to 0.
  EXPECT_EQ(cosine_schedule_with_warmup(0, 10, 110), 0.0);
  EXPECT_EQ(cosine_schedule_with_warmup(3, 10, 110), 0.3);
  EXPECT_EQ(cosine_schedule_with_warmup(10, 10, 110), 1.0);
  EXPECT_NEAR(cosine_schedule_with_warmup(35, 10, 110), 0.5 * (1 + std::cos(std::numbers::pi * 0.25)), 1e-15);
  EXPECT_NEAR(cosine_schedule_with_warmup(60, 10, 110), 0.5, 1e-15);
  EXPECT_NEAR(cosine_schedule_with_warmup(110, 10, 110), 0.0, 1e-15);
  // A full cycle goes down to 0 halfway and climbs back to 1 at the end.
  EXPECT_NEAR(cosine_schedule_with_warmup(60, 10, 110, 1.0), 0.0, 1e-15);
  EXPECT_NEAR(cosine_schedule_with_warmup(110, 10, 110, 1.0), 1.0, 1e-15);

  EXPECT_EQ(schedule_factor("linear", 60, 10, 110), linear_schedule_with_warmup(60, 10, 110));
  EXPECT_EQ(schedule_factor("cosine", 60, 10, 110), cosine_schedule_with_warmup(60, 10, 110));
  EXPECT_EQ(schedule_factor("constant", 60, 10, 110), 1.0);
  EXPECT_THROW(schedule_factor("polynomial", 0, 0, 1), Error);
}

// ---- checkpointing the state ----

struct Run {
  std::vector<Tensor> params;
  Optimizer opt;
};

std::vector<Tensor> make_params() {
  return {param(linspace_values(12, -1, 1), {3, 4}, DType::F32), param(linspace_values(4, 0, 1), {4}, DType::F32),
          param(linspace_values(3, 2, 3), {3}, DType::F32)};
}

std::vector<ParamGroup> groups_for(const std::vector<Tensor>& p, bool sgd) {
  ParamGroup g0 = group({p[0], p[1]}, 0.01, 0.1, {"layer.weight", "layer.bias"});
  ParamGroup g1 = group({p[2]}, 0.003, 0.0, {"never.trained"});
  if (sgd) g0.momentum = g1.momentum = 0.9;
  return {g0, g1};
}

void train(std::vector<Tensor>& params, Optimizer& opt, int from, int to) {
  for (int s = from; s < to; ++s) {
    set_lr_factor(opt, linear_schedule_with_warmup(s, 2, 10));
    set_grad_values(params[0], grad_values(12, 0, s));
    set_grad_values(params[1], grad_values(4, 1, s));  // params[2] never gets a gradient
    clip_grad_norm_(params, 1.0);
    step(opt);
    zero_grad(opt);
  }
}

TEST(OptimizerState, ExportImportThroughSafetensorsResumesBitExactly) {
  for (bool sgd : {false, true}) {
    SCOPED_TRACE(sgd ? "SGD" : "AdamW");
    // Uninterrupted run of 6 steps.
    std::vector<Tensor> p1 = make_params();
    Optimizer o1 = sgd ? make_sgd(groups_for(p1, sgd)) : make_adamw(groups_for(p1, sgd));
    train(p1, o1, 0, 6);

    // Interrupted run: 3 steps, checkpoint parameters and state, resume in fresh objects.
    fs::path dir = test::temp_dir(sgd ? "optim_sgd" : "optim_adamw");
    {
      std::vector<Tensor> p2 = make_params();
      Optimizer o2 = sgd ? make_sgd(groups_for(p2, sgd)) : make_adamw(groups_for(p2, sgd));
      train(p2, o2, 0, 3);
      save_safetensors((dir / "params.safetensors").string(), {{"w", p2[0]}, {"b", p2[1]}, {"c", p2[2]}});
      save_safetensors((dir / "optimizer.safetensors").string(), export_optimizer_state(o2));
    }
    std::vector<Tensor> p3 = make_params();
    SafetensorsFile saved = load_safetensors((dir / "params.safetensors").string());
    copy_(p3[0], saved.at("w"));
    copy_(p3[1], saved.at("b"));
    copy_(p3[2], saved.at("c"));
    Optimizer o3 = sgd ? make_sgd(groups_for(p3, sgd)) : make_adamw(groups_for(p3, sgd));
    import_optimizer_state(o3, load_safetensors((dir / "optimizer.safetensors").string()).tensors);
    EXPECT_EQ(o3.step_count, 3);
    EXPECT_FALSE(o3.state[1][0].exp_avg.defined() || o3.state[1][0].momentum_buffer.defined());
    train(p3, o3, 3, 6);

    for (size_t i = 0; i < p1.size(); ++i)
      EXPECT_EQ(std::memcmp(p1[i].data_ptr(), p3[i].data_ptr(), size_t(p1[i].numel()) * 4), 0) << "param " << i;
    EXPECT_EQ(o1.step_count, o3.step_count);
    EXPECT_EQ(o1.groups[0].lr, o3.groups[0].lr);
    fs::remove_all(dir);
  }
}

TEST(OptimizerState, ExportedKeysAndRefusedImports) {
  std::vector<Tensor> p = make_params();
  Optimizer opt = make_adamw(groups_for(p, false));
  train(p, opt, 0, 2);
  NamedTensors state = export_optimizer_state(opt);
  std::vector<std::string> keys;
  for (const auto& [k, t] : state) keys.push_back(k);
  EXPECT_EQ(keys, (std::vector<std::string>{"optimizer.step_count", "param_groups.0.lr", "param_groups.1.lr",
                                            "state.layer.weight.step", "state.layer.weight.exp_avg",
                                            "state.layer.weight.exp_avg_sq", "state.layer.bias.step",
                                            "state.layer.bias.exp_avg", "state.layer.bias.exp_avg_sq"}));

  auto refused = [&](NamedTensors s, const std::string& expected) {
    Optimizer fresh = make_adamw(groups_for(make_params(), false));
    try {
      import_optimizer_state(fresh, s);
      ADD_FAILURE() << "accepted; expected " << expected;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(expected), std::string::npos) << e.what();
    }
    EXPECT_EQ(fresh.step_count, 0);  // a refused import changes nothing
  };
  NamedTensors extra = state;
  extra.emplace_back("state.other.exp_avg", zeros({3}));
  refused(extra, "unexpected key 'state.other.exp_avg'");
  NamedTensors wrong_shape = state;
  wrong_shape[4].second = zeros({4, 3});
  refused(wrong_shape, "state.layer.weight.exp_avg");
  NamedTensors wrong_dtype = state;
  wrong_dtype[4].second = zeros({3, 4}, DType::F64);
  refused(wrong_dtype, "state.layer.weight.exp_avg");
  NamedTensors no_count(state.begin() + 1, state.end());
  refused(no_count, "optimizer.step_count");
  NamedTensors half = state;
  half.erase(half.begin() + 5);  // exp_avg_sq of layer.weight
  refused(half, "only one of exp_avg and exp_avg_sq");
  NamedTensors no_step = state;
  no_step.erase(no_step.begin() + 3);
  refused(no_step, "has state but no 'state.layer.weight.step'");
  // An SGD state does not load into AdamW.
  std::vector<Tensor> q = make_params();
  Optimizer sgd = make_sgd(groups_for(q, true));
  train(q, sgd, 0, 1);
  refused(export_optimizer_state(sgd), "momentum_buffer");
}

}  // namespace
}  // namespace vlp
