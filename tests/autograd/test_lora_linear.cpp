// The fused LoRA linear (autograd/lora.h): gradchecks on random shapes with contiguous, permuted and
// sliced inputs, a transposed (Conv1D-like) weight, with and without bias, with and without dropout; and
// bit-for-bit equality in F32 with the composed ops it replaces (linear + dropout + two linears + scaled
// add), forward and every gradient, with the same generator state giving the same mask as vlp::dropout.
#include "autograd/lora.h"

#include "autograd/autocast.h"

#include "common/test_util.h"

namespace vlp {
namespace {

using test::all_close;
using test::rand_input;

// The composed reference: linear(x, W, b) + scale * linear(linear(dropout(x), A), B).
Tensor composed(const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& a, const Tensor& bm, double scale,
                double p, Generator* gen) {
  Tensor xd = p > 0 ? dropout(x, p, true, gen) : x;
  return add(linear(x, w, b), mul(linear(linear(xd, a), bm), scale));
}

struct Case {
  const char* name;
  Shape x_shape;           // the shape of the tensor handed to the op (after the view)
  int view;                // 0 contiguous, 1 permuted, 2 sliced
  bool bias, weight_transposed;
  int64_t out, r;
  double p;
};

// x with the requested layout: a permuted view of a [.., in, ..] tensor, or a slice of a wider one.
Tensor make_x(const Tensor& storage, int view) {
  if (view == 1) return permute(storage, {1, 2, 0});
  if (view == 2) return narrow(storage, -1, 1, storage.size(-1) - 2);
  return storage;
}
Shape storage_shape(const Shape& x_shape, int view) {
  if (view == 1) return {x_shape[2], x_shape[0], x_shape[1]};
  if (view == 2) return {x_shape[0], x_shape[1], x_shape[2] + 2};
  return x_shape;
}

const Case kCases[] = {
    {"contiguous_bias_p0", {2, 3, 5}, 0, true, false, 4, 3, 0.0},
    {"contiguous_nobias_dropout", {3, 4, 6}, 0, false, false, 5, 2, 0.3},
    {"permuted_bias_dropout", {2, 3, 7}, 1, true, false, 3, 4, 0.5},
    {"sliced_nobias_p0", {3, 2, 5}, 2, false, true, 6, 1, 0.0},
    {"sliced_bias_dropout_transposed_w", {1, 5, 4}, 2, true, true, 3, 2, 0.25},
};

TEST(LoraLinear, GradcheckF64) {
  uint64_t seed = 100;
  for (const Case& c : kCases) {
    SCOPED_TRACE(c.name);
    const int64_t in = c.x_shape.back();
    Tensor xs = rand_input(storage_shape(c.x_shape, c.view), ++seed);
    Tensor w = rand_input(c.weight_transposed ? Shape{in, c.out} : Shape{c.out, in}, ++seed);
    Tensor b = c.bias ? rand_input({c.out}, ++seed) : Tensor();
    Tensor a = rand_input({c.r, in}, ++seed), bm = rand_input({c.out, c.r}, ++seed);
    const double scale = 1.75, p = c.p;
    const bool wt = c.weight_transposed;
    const int view = c.view;
    std::vector<Tensor> inputs = {xs, w, a, bm};
    if (b.defined()) inputs.push_back(b);
    auto f = [&](const std::vector<Tensor>& in) {
      Generator gen(7);  // a fresh generator per evaluation: the same mask every time
      Tensor x = make_x(in[0], view);
      EXPECT_EQ(x.shape(), c.x_shape);
      Tensor wv = wt ? transpose(in[1], 0, 1) : in[1];
      return lora_linear(x, wv, in.size() > 4 ? in[4] : Tensor(), in[2], in[3], scale, p, true, &gen);
    };
    EXPECT_EQ(gradcheck(f, inputs), "");
  }
}

TEST(LoraLinear, EqualsTheComposedOpsBitForBitInF32) {
  uint64_t seed = 200;
  for (const Case& c : kCases) {
    SCOPED_TRACE(c.name);
    const int64_t in = c.x_shape.back();
    auto fresh = [&](const Shape& s, uint64_t sd) { return rand_input(s, sd, DType::F32); };
    seed += 10;
    Tensor xs1 = fresh(storage_shape(c.x_shape, c.view), seed), xs2 = fresh(storage_shape(c.x_shape, c.view), seed);
    Shape ws = c.weight_transposed ? Shape{in, c.out} : Shape{c.out, in};
    Tensor w1 = fresh(ws, seed + 1), w2 = fresh(ws, seed + 1);
    Tensor b1 = c.bias ? fresh({c.out}, seed + 2) : Tensor(), b2 = c.bias ? fresh({c.out}, seed + 2) : Tensor();
    Tensor a1 = fresh({c.r, in}, seed + 3), a2 = fresh({c.r, in}, seed + 3);
    Tensor m1 = fresh({c.out, c.r}, seed + 4), m2 = fresh({c.out, c.r}, seed + 4);
    auto wview = [&](const Tensor& w) { return c.weight_transposed ? transpose(w, 0, 1) : w; };
    const double scale = 0.625;
    Generator g1(31), g2(31);
    g1.take(5), g2.take(5);  // a nonzero starting offset
    Tensor y1 = lora_linear(make_x(xs1, c.view), wview(w1), b1, a1, m1, scale, c.p, true, &g1);
    Tensor y2 = composed(make_x(xs2, c.view), wview(w2), b2, a2, m2, scale, c.p, &g2);
    EXPECT_EQ(g1.offset, g2.offset);  // the same values drawn as vlp::dropout
    ASSERT_TRUE(all_close(y1, y2, 0, 0));
    Tensor dy = fresh(y1.shape(), seed + 5);
    dy.set_requires_grad(false);
    backward(y1, dy);
    backward(y2, dy);
    EXPECT_TRUE(all_close(xs1.grad(), xs2.grad(), 0, 0)) << "dx";
    EXPECT_TRUE(all_close(w1.grad(), w2.grad(), 0, 0)) << "dW";
    if (c.bias) {
      EXPECT_TRUE(all_close(b1.grad(), b2.grad(), 0, 0)) << "db";
    }
    EXPECT_TRUE(all_close(a1.grad(), a2.grad(), 0, 0)) << "dA";
    EXPECT_TRUE(all_close(m1.grad(), m2.grad(), 0, 0)) << "dB";
  }
}

// Under autocast the op reads bf16 copies of its F32 operands and returns F32: the same numbers as the
// op on explicitly rounded operands, gradients back in F32, and close to the F32 result.
TEST(LoraLinear, AutocastRunsOnBf16CopiesAndReturnsF32) {
  const int64_t in = 6, out = 5, r = 3;
  auto leaf = [](const Shape& s, uint64_t sd) { return rand_input(s, sd, DType::F32); };
  Tensor x = leaf({2, 3, in}, 401), w = leaf({out, in}, 402), b = leaf({out}, 403), a = leaf({r, in}, 404),
         m = leaf({out, r}, 405);
  Tensor y;
  {
    AutocastScope autocast(true);
    y = lora_linear(x, w, b, a, m, 0.75, 0.0);
  }
  EXPECT_EQ(y.dtype(), DType::F32);
  // The reference: the op on bf16 operands (no autocast), converted back.
  auto lp = [](const Tensor& t) { return convert(t.detach(), DType::BF16); };
  Tensor ref = convert(lora_linear(lp(x), lp(w), lp(b), lp(a), lp(m), 0.75, 0.0), DType::F32);
  EXPECT_TRUE(all_close(y, ref, 0, 0));
  Tensor full = lora_linear(x.detach(), w.detach(), b.detach(), a.detach(), m.detach(), 0.75, 0.0);
  EXPECT_FALSE(all_close(y, full, 0, 0));
  EXPECT_TRUE(all_close(y, full, 2e-2, 2e-2));
  backward(sum(y));
  for (const Tensor* t : {&x, &w, &b, &a, &m}) {
    ASSERT_TRUE(t->grad().defined());
    EXPECT_EQ(t->grad().dtype(), DType::F32);
  }
}

TEST(LoraLinear, DropoutMaskIsVlpDropouts) {
  // With W = 0, no bias, A = I and B = I (r = in = out), y = scale * dropout(x): the op's mask is exactly
  // the one vlp::dropout draws from the same generator state.
  const int64_t n = 8;
  Tensor x = rand_input({4, 5, n}, 301, DType::F32, false);
  Tensor eye = zeros({n, n});
  for (int64_t i = 0; i < n; ++i) copy_(narrow(narrow(eye, 0, i, 1), 1, i, 1), ones({1, 1}));
  Generator g1(5), g2(5);
  Tensor y = lora_linear(x, zeros({n, n}), Tensor(), eye, eye, 1.0, 0.4, true, &g1);
  Tensor ref = dropout(x, 0.4, true, &g2);
  EXPECT_TRUE(all_close(y, ref, 0, 0));
  EXPECT_EQ(g1.offset, g2.offset);
  // Not training: no dropout and nothing drawn.
  Generator g3(5);
  Tensor y_eval = lora_linear(x, zeros({n, n}), Tensor(), eye, eye, 1.0, 0.4, false, &g3);
  EXPECT_TRUE(all_close(y_eval, x, 0, 0));
  EXPECT_EQ(g3.offset, 0u);
}

TEST(LoraLinear, SavesOnlyHBesidesItsInputs) {
  // Trainable A and B, frozen W, x requiring grad: the node keeps views of its inputs and h [rows, r];
  // the composed ops also keep the dropped activations [rows, in].
  const int64_t rows = 12, in = 32, out = 24, r = 4;
  Tensor x = rand_input({3, 4, in}, 401, DType::F32);
  Tensor w = rand_input({out, in}, 402, DType::F32, false), b = rand_input({out}, 403, DType::F32, false);
  Tensor a = rand_input({r, in}, 404, DType::F32), bm = rand_input({out, r}, 405, DType::F32);
  Generator g1(1), g2(1);
  Tensor y = lora_linear(x, w, b, a, bm, 2.0, 0.1, true, &g1);
  EXPECT_EQ(saved_tensor_bytes(y, {x, w, b, a, bm}), rows * r * 4);
  Tensor yc = composed(x, w, b, a, bm, 2.0, 0.1, &g2);
  EXPECT_GE(saved_tensor_bytes(yc, {x, w, b, a, bm}), rows * in * 4);
  // Nothing requiring grad: no node.
  Tensor y_frozen = lora_linear(x.detach(), w, b, a.detach(), bm.detach(), 2.0, 0.0);
  EXPECT_FALSE(y_frozen.requires_grad());
}

TEST(LoraLinear, ErrorsNameTheOperand) {
  Tensor x = zeros({2, 4}), w = zeros({3, 4}), a = zeros({2, 4}), b = zeros({3, 2});
  EXPECT_NE(test::error_of([&] { lora_linear(x, w, Tensor(), zeros({2, 5}), b, 1.0, 0.0); }).find("lora_a"),
            std::string::npos);
  EXPECT_NE(test::error_of([&] { lora_linear(x, w, Tensor(), a, zeros({3, 3}), 1.0, 0.0); }).find("lora_b"),
            std::string::npos);
  EXPECT_NE(test::error_of([&] { lora_linear(x, w, zeros({4}), a, b, 1.0, 0.0); }).find("bias"), std::string::npos);
  EXPECT_NE(test::error_of([&] { lora_linear(zeros({2, 5}), w, Tensor(), a, b, 1.0, 0.0); }).find("in_features"),
            std::string::npos);
  EXPECT_NE(test::error_of([&] { lora_linear(x, w, Tensor(), a, b, 1.0, 1.0); }).find("dropout_p"), std::string::npos);
  EXPECT_NE(test::error_of([&] { lora_linear(x, w, Tensor(), convert(a, DType::F64), b, 1.0, 0.0); }).find("lora_linear"),
            std::string::npos);
}

}  // namespace
}  // namespace vlp
