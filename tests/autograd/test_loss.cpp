// Losses: cross_entropy (ignore_index, label smoothing, sample weights, every reduction) and
// binary_cross_entropy_with_logits. Values and gradients against references computed here with plain
// double loops, hand-checked numbers, gradchecks on non-contiguous inputs, and the error messages.
#include <cmath>

#include "common/test_util.h"

namespace vlp {
namespace {

using test::all_close;
using test::rand_input;
using test::values_are;

using ::vlp::test::error_of;

// One cross-entropy problem in plain values, with the reference loss and logits gradient.
struct CeProblem {
  int64_t n = 0, c = 0;
  std::vector<double> logits;      // [n, c] row-major
  std::vector<int64_t> target;     // [n]
  std::vector<double> weight;      // [n] or empty
  int64_t ignore_index = -100;
  double eps = 0.0;

  double row_loss(int64_t i) const {  // unweighted; 0 for ignored rows
    if (target[size_t(i)] == ignore_index) return 0.0;
    const double* x = logits.data() + i * c;
    double m = -INFINITY, s = 0.0, sum_logp = 0.0;
    for (int64_t k = 0; k < c; ++k) m = std::max(m, x[k]);
    for (int64_t k = 0; k < c; ++k) s += std::exp(x[k] - m);
    const double lse = m + std::log(s);
    for (int64_t k = 0; k < c; ++k) sum_logp += x[k] - lse;
    return (1.0 - eps) * -(x[target[size_t(i)]] - lse) + eps * -(sum_logp / double(c));
  }
  double w(int64_t i) const { return weight.empty() ? 1.0 : weight[size_t(i)]; }
  int64_t count() const {
    int64_t k = 0;
    for (int64_t t : target) k += t != ignore_index;
    return k;
  }
  std::vector<double> reference(Reduction r) const {
    std::vector<double> rows(static_cast<size_t>(n));
    double total = 0.0;
    for (int64_t i = 0; i < n; ++i) total += rows[size_t(i)] = w(i) * row_loss(i);
    if (r == Reduction::None) return rows;
    return {r == Reduction::Sum ? total : total / double(count())};
  }
  // d(loss)/d(logits) for a reduced loss (gradient 1 on the output).
  std::vector<double> reference_grad(Reduction r) const {
    std::vector<double> g(size_t(n * c), 0.0);
    const double scale = r == Reduction::Mean ? 1.0 / double(count()) : 1.0;
    for (int64_t i = 0; i < n; ++i) {
      if (target[size_t(i)] == ignore_index) continue;
      const double* x = logits.data() + i * c;
      double m = -INFINITY, s = 0.0;
      for (int64_t k = 0; k < c; ++k) m = std::max(m, x[k]);
      for (int64_t k = 0; k < c; ++k) s += std::exp(x[k] - m);
      for (int64_t k = 0; k < c; ++k) {
        double smoothed = eps / double(c) + (k == target[size_t(i)] ? 1.0 - eps : 0.0);
        g[size_t(i * c + k)] = scale * w(i) * (std::exp(x[k] - m) / s - smoothed);
      }
    }
    return g;
  }
};

CeProblem random_problem(int64_t n, int64_t c, uint64_t seed, bool weights, double eps) {
  CeProblem p;
  p.n = n, p.c = c, p.eps = eps;
  p.logits = to_vector(mul(rand_input({n, c}, seed, DType::F64, false), 3.0));
  for (int64_t i = 0; i < n; ++i) p.target.push_back(i % 4 == 1 ? -100 : (i * 7 + 3) % c);  // every 4th ignored
  if (weights) p.weight = to_vector(add(rand_input({n}, seed + 1, DType::F64, false), 1.5));
  return p;
}

// ---- cross_entropy -------------------------------------------------------------------------------

TEST(CrossEntropy, HandCheckedValues) {
  Tensor logits = from_vector({1, 2, 3, 1, 1, 1}, {2, 3}, DType::F64);
  Tensor target = from_data<int64_t>({2, 0}, {2});
  // -log softmax([1,2,3])[2] = 0.4076059644, -log(1/3) = 1.0986122887.
  EXPECT_TRUE(values_are(cross_entropy(logits, target, -100, 0.0, Tensor(), Reduction::None),
                         {0.4076059644443806, 1.0986122886681098}, 1e-12));
  EXPECT_NEAR(cross_entropy(logits, target).item(), 0.7531091265562452, 1e-12);
  EXPECT_NEAR(cross_entropy(logits, target, -100, 0.0, Tensor(), Reduction::Sum).item(), 1.5062182531124904, 1e-12);
  // Label smoothing 0.2 on row 0: 0.8 * 0.4076 + 0.2 * mean(2.4076, 1.4076, 0.4076) = 0.4076 + 0.2.
  EXPECT_NEAR(cross_entropy(narrow(logits, 0, 0, 1), narrow(target, 0, 0, 1), -100, 0.2).item(),
              0.6076059644443806, 1e-12);
  // Ignored row 1 does not count in the mean; sample weight 3 multiplies row 0.
  Tensor ignored = from_data<int32_t>({2, -100}, {2});
  EXPECT_NEAR(cross_entropy(logits, ignored).item(), 0.4076059644443806, 1e-12);
  EXPECT_NEAR(cross_entropy(logits, ignored, -100, 0.0, from_vector({3, 5}, {2}, DType::F64)).item(),
              3 * 0.4076059644443806, 1e-12);
  // Huge logits: no overflow.
  EXPECT_NEAR(cross_entropy(from_vector({1000, 0}, {1, 2}), from_data<int64_t>({1}, {1})).item(), 1000.0, 1e-3);
  // Gradient of one row: softmax - one_hot.
  Tensor x = from_vector({1, 2, 3}, {1, 3}, DType::F64).set_requires_grad();
  backward(cross_entropy(x, from_data<int64_t>({2}, {1})));
  EXPECT_TRUE(values_are(x.grad(), {0.0900305731703805, 0.2447284710547976, 0.6652409557748219 - 1}, 1e-12));
}

TEST(CrossEntropy, MatchesReferenceForEveryOption) {
  for (DType dt : {DType::F64, DType::F32}) {
    for (bool weights : {false, true}) {
      for (double eps : {0.0, 0.1}) {
        for (Reduction r : {Reduction::Mean, Reduction::Sum, Reduction::None}) {
          SCOPED_TRACE(testing::Message() << dt << " weights " << weights << " eps " << eps << " reduction "
                                          << int(r));
          CeProblem p = random_problem(9, 5, 201, weights, eps);
          const double tol = dt == DType::F64 ? 1e-12 : 1e-5;
          Tensor logits = from_vector(p.logits, {p.n, p.c}, dt).set_requires_grad();
          Tensor w = weights ? from_vector(p.weight, {p.n}, dt) : Tensor();
          Tensor loss = cross_entropy(logits, from_data(p.target, {p.n}), -100, eps, w, r);
          EXPECT_EQ(loss.dtype(), dt);
          EXPECT_EQ(loss.shape(), r == Reduction::None ? Shape{p.n} : Shape{});
          EXPECT_TRUE(values_are(loss, p.reference(r), tol));
          if (r == Reduction::None) continue;
          backward(loss);
          EXPECT_TRUE(all_close(logits.grad(), from_vector(p.reference_grad(r), {p.n, p.c}, DType::F64), tol, tol));
        }
      }
    }
  }
}

TEST(CrossEntropy, Gradcheck) {
  // Non-contiguous logits (a transposed [C, N] tensor), ignored rows, label smoothing, trainable
  // sample weights taken from a strided view, every reduction.
  const int64_t n = 7, c = 4;
  Tensor target = from_data<int64_t>({0, -1, 3, 2, -1, 1, 3}, {n});
  for (Reduction r : {Reduction::Mean, Reduction::Sum, Reduction::None}) {
    for (double eps : {0.0, 0.15}) {
      SCOPED_TRACE(testing::Message() << "reduction " << int(r) << " eps " << eps);
      EXPECT_EQ(gradcheck([&](auto& in) {
                            return cross_entropy(transpose(in[0], 0, 1), target, -1, eps, select(in[1], 1, 1), r);
                          },
                          {rand_input({c, n}, 211), rand_input({n, 2}, 212)}),
                "");
      EXPECT_EQ(gradcheck([&](auto& in) { return cross_entropy(narrow(in[0], 1, 1, c), target, -1, eps, Tensor(), r); },
                          {rand_input({n, c + 2}, 213)}),
                "");
    }
  }
}

TEST(CrossEntropy, KeepsNoProbabilityTensor) {
  const int64_t n = 16, c = 1000;
  Tensor logits = rand_input({n, c}, 221);
  std::vector<int64_t> t(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) t[size_t(i)] = (i * 37) % c;
  Tensor loss = cross_entropy(logits, from_data(t, {n}));
  // Besides the logits themselves: the per-row logsumexp (F64) and the I64 targets.
  EXPECT_EQ(saved_tensor_bytes(loss, {logits}), n * 8 + n * 8);
  // A frozen-logits, trainable-weights loss keeps only the targets and the per-row losses.
  Tensor w = ones({n}, DType::F64).set_requires_grad();
  EXPECT_EQ(saved_tensor_bytes(cross_entropy(logits.detach(), from_data(t, {n}), -100, 0.0, w)), n * 8 + n * 8);
}

TEST(CrossEntropy, AllRowsIgnoredGiveZero) {
  Tensor logits = rand_input({3, 4}, 231);
  Tensor target = full({3}, -100, DType::I64);
  Tensor loss = cross_entropy(logits, target);
  EXPECT_EQ(loss.item(), 0.0);
  backward(loss);
  EXPECT_TRUE(values_are(logits.grad(), std::vector<double>(12, 0.0), 0.0));
}

TEST(CrossEntropy, ErrorsNameTheProblem) {
  Tensor logits = rand_input({3, 4}, 241, DType::F64, false);
  std::string msg = error_of([&] { cross_entropy(logits, from_data<int64_t>({0, 4, 1}, {3})); });
  EXPECT_NE(msg.find("cross_entropy: target 4 at row 1"), std::string::npos) << msg;
  msg = error_of([&] { cross_entropy(logits, from_data<int64_t>({0, 1, -1}, {3})); });
  EXPECT_NE(msg.find("target -1 at row 2"), std::string::npos) << msg;
  EXPECT_NE(error_of([&] { cross_entropy(logits, from_data<int64_t>({0, 1}, {2})); }).find("cross_entropy: target"),
            std::string::npos);
  EXPECT_NE(error_of([&] { cross_entropy(reshape(logits, {3, 2, 2}), from_data<int64_t>({0, 1, 1}, {3})); })
                .find("[N, C]"),
            std::string::npos);
  EXPECT_THROW(cross_entropy(logits, from_vector({0, 1, 1}, {3})), Error);  // float targets
  EXPECT_THROW(cross_entropy(logits, from_data<int64_t>({0, 1, 1}, {3}), -100, 0.0, ones({2}, DType::F64)), Error);
  EXPECT_THROW(cross_entropy(logits, from_data<int64_t>({0, 1, 1}, {3}), -100, 1.5), Error);
  EXPECT_THROW(cross_entropy(from_data<int64_t>({0, 1}, {1, 2}), from_data<int64_t>({0}, {1})), Error);
}

TEST(CrossEntropy, LowPrecisionLogits) {
  CeProblem p = random_problem(6, 5, 251, true, 0.1);
  Tensor logits = to(from_vector(p.logits, {p.n, p.c}), DType::BF16);
  p.logits = to_vector(logits);  // the reference sees the rounded logits
  Tensor loss = cross_entropy(logits, from_data(p.target, {p.n}), -100, 0.1, from_vector(p.weight, {p.n}));
  EXPECT_EQ(loss.dtype(), DType::BF16);
  EXPECT_NEAR(loss.item(), p.reference(Reduction::Mean)[0], 2e-2);
}

// ---- binary_cross_entropy_with_logits ----------------------------------------------------------

// max(x, 0) - x t + log(1 + exp(-|x|)) per element, in double.
std::vector<double> bce_reference(const std::vector<double>& x, const std::vector<double>& t) {
  std::vector<double> out(x.size());
  for (size_t i = 0; i < x.size(); ++i) out[i] = std::max(x[i], 0.0) - x[i] * t[i] + std::log1p(std::exp(-std::abs(x[i])));
  return out;
}

TEST(BinaryCrossEntropy, HandCheckedValues) {
  Tensor x = from_vector({0, 2, -3, 100, -100}, {5}, DType::F64).set_requires_grad();
  Tensor t = from_vector({0.5, 1, 0, 0, 1}, {5}, DType::F64);
  // log 2, log(1 + e^-2), log(1 + e^-3), and 100 twice without overflow.
  EXPECT_TRUE(values_are(binary_cross_entropy_with_logits(x, t, Reduction::None),
                         {0.6931471805599453, 0.1269280110429725, 0.0485873515737421, 100, 100}, 1e-12));
  Tensor mean = binary_cross_entropy_with_logits(x, t);
  EXPECT_NEAR(mean.item(), (0.6931471805599453 + 0.1269280110429725 + 0.0485873515737421 + 200) / 5, 1e-12);
  backward(mean);
  // (sigmoid(x) - t) / 5.
  EXPECT_TRUE(values_are(x.grad(), {0, (0.8807970779778823 - 1) / 5, 0.04742587317756678 / 5, 0.2, -0.2}, 1e-12));
}

TEST(BinaryCrossEntropy, MatchesReference) {
  for (DType dt : {DType::F64, DType::F32}) {
    SCOPED_TRACE(testing::Message() << dt);
    Tensor x = mul(rand_input({5, 300}, 261, dt, false), 8.0);
    Tensor t = add(mul(rand_input({5, 300}, 262, dt, false), 0.5), 0.5);
    std::vector<double> ref = bce_reference(to_vector(x), to_vector(t));
    double total = 0.0;
    for (double v : ref) total += v;
    const double tol = dt == DType::F64 ? 1e-12 : 1e-5;
    EXPECT_TRUE(all_close(binary_cross_entropy_with_logits(x, t, Reduction::None), from_vector(ref, {5, 300}, DType::F64),
                          tol, tol));
    EXPECT_NEAR(binary_cross_entropy_with_logits(x, t, Reduction::Sum).item(), total, tol * total);
    EXPECT_NEAR(binary_cross_entropy_with_logits(x, t, Reduction::Mean).item(), total / 1500, tol);
  }
  // Many chunks of the parallel sum (20000 elements > 4096 per chunk).
  Tensor x = mul(rand_input({20000}, 263, DType::F64, false), 5.0), t = rand_input({20000}, 264, DType::F64, false);
  std::vector<double> ref = bce_reference(to_vector(x), to_vector(t));
  double total = 0.0;
  for (double v : ref) total += v;
  EXPECT_NEAR(binary_cross_entropy_with_logits(x, t, Reduction::Sum).item(), total, 1e-9 * total);
}

TEST(BinaryCrossEntropy, Gradcheck) {
  // Permuted logits, sliced soft targets; gradients for both.
  for (Reduction r : {Reduction::Mean, Reduction::Sum, Reduction::None}) {
    SCOPED_TRACE(int(r));
    EXPECT_EQ(gradcheck([&](auto& in) {
                          return binary_cross_entropy_with_logits(mul(permute(in[0], {1, 0}), 3.0),
                                                                  narrow(in[1], 1, 1, 4), r);
                        },
                        {rand_input({4, 3}, 271), rand_input({3, 6}, 272)}),
              "");
  }
  // Frozen targets: only the logits get a gradient.
  EXPECT_EQ(gradcheck([](auto& in) { return binary_cross_entropy_with_logits(in[0], in[1]); },
                      {rand_input({2, 5}, 273), rand_input({2, 5}, 274, DType::F64, false)}),
            "");
}

TEST(BinaryCrossEntropy, ChecksOperands) {
  Tensor x = rand_input({2, 3}, 281, DType::F64, false);
  std::string msg = error_of([&] { binary_cross_entropy_with_logits(x, rand_input({3, 2}, 282, DType::F64, false)); });
  EXPECT_NE(msg.find("binary_cross_entropy_with_logits: target of shape [3, 2]"), std::string::npos) << msg;
  EXPECT_THROW(binary_cross_entropy_with_logits(x, to(x, DType::F32)), Error);
  EXPECT_THROW(binary_cross_entropy_with_logits(zeros({2}, DType::I32), zeros({2}, DType::I32)), Error);
}

}  // namespace
}  // namespace vlp
