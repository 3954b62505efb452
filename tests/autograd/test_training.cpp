// End-to-end training through the ops, autograd and AdamW: a 2-layer MLP and a 1-layer pre-LN transformer
// block, each on a synthetic regression task a model of its shape can fit, must cut its loss by >= 90%.
#include <gtest/gtest.h>

#include "autograd/ops.h"
#include "autograd/optim.h"
#include "common/test_util.h"

namespace vlp {
namespace {

Tensor trainable(const Shape& shape, double scale, Generator& gen) {
  Tensor t = mul(randn(shape, &gen), scale);
  t.set_requires_grad(true);
  return t;
}

double mse(const Tensor& y, const Tensor& target) {
  Tensor d = sub(y, target);
  return mean(mul(d, d)).item();
}

TEST(Training, TwoLayerMlpCutsItsLossByNinetyPercent) {
  Generator gen(11);
  const int64_t n = 256, in = 8, hidden = 32;
  Tensor x = randn({n, in}, &gen);
  // target: a smooth nonlinear function of x that a 32-unit MLP can fit
  Tensor target = tanh(sum(mul(x, from_vector({0.5, -0.3, 0.8, 0.1, -0.6, 0.4, 0.2, -0.7}, {in})), {1}, true));
  Tensor w1 = trainable({hidden, in}, 0.3, gen), b1 = trainable({hidden}, 0.0, gen);
  Tensor w2 = trainable({1, hidden}, 0.3, gen), b2 = trainable({1}, 0.0, gen);
  auto forward = [&] { return linear(gelu(linear(x, w1, b1)), w2, b2); };
  const double first = mse(forward(), target);
  Optimizer opt = make_adamw({w1, b1, w2, b2}, 1e-2, 0.0);
  for (int s = 0; s < 300; ++s) {
    Tensor d = sub(forward(), target);
    backward(mean(mul(d, d)));
    step(opt);
    zero_grad(opt);
  }
  const double last = mse(forward(), target);
  EXPECT_LT(last, 0.1 * first) << "loss " << first << " -> " << last;
}

TEST(Training, OneTransformerBlockCutsItsLossByNinetyPercent) {
  Generator gen(12);
  const int64_t batch = 16, seq = 6, d = 16, heads = 2, hd = d / heads;
  Tensor x = randn({batch, seq, d}, &gen);
  // target: each position's output is the running mean of the tokens up to it (causal attention can do it)
  Tensor target = empty({batch, seq, d});
  {
    const Tensor cx = contiguous(x);
    const float* px = cx.data<float>();
    float* pt = target.data<float>();
    for (int64_t b = 0; b < batch; ++b)
      for (int64_t t = 0; t < seq; ++t)
        for (int64_t c = 0; c < d; ++c) {
          double acc = 0;
          for (int64_t u = 0; u <= t; ++u) acc += px[(b * seq + u) * d + c];
          pt[(b * seq + t) * d + c] = float(acc / double(t + 1));
        }
  }
  Tensor ln1_w = ones({d}), ln1_b = zeros({d}), ln2_w = ones({d}), ln2_b = zeros({d});
  for (Tensor* t : {&ln1_w, &ln1_b, &ln2_w, &ln2_b}) t->set_requires_grad(true);
  Tensor wqkv = trainable({3 * d, d}, 0.2, gen), bqkv = trainable({3 * d}, 0.0, gen);
  Tensor wo = trainable({d, d}, 0.2, gen), bo = trainable({d}, 0.0, gen);
  Tensor w1 = trainable({4 * d, d}, 0.2, gen), b1 = trainable({4 * d}, 0.0, gen);
  Tensor w2 = trainable({d, 4 * d}, 0.2, gen), b2 = trainable({d}, 0.0, gen);
  auto heads_of = [&](const Tensor& t) { return permute(reshape(t, {batch, seq, heads, hd}), {0, 2, 1, 3}); };
  auto forward = [&] {
    Tensor h = layer_norm(x, ln1_w, ln1_b, 1e-5);
    Tensor qkv = linear(h, wqkv, bqkv);
    AttentionOptions opt;
    opt.causal = true;
    Tensor a = scaled_dot_product_attention(heads_of(narrow(qkv, 2, 0, d)), heads_of(narrow(qkv, 2, d, d)),
                                            heads_of(narrow(qkv, 2, 2 * d, d)), opt);
    a = reshape(permute(a, {0, 2, 1, 3}), {batch, seq, d});
    Tensor r = add(x, linear(a, wo, bo));
    Tensor f = linear(gelu_tanh(linear(layer_norm(r, ln2_w, ln2_b, 1e-5), w1, b1)), w2, b2);
    return add(r, f);
  };
  const double first = mse(forward(), target);
  Optimizer opt = make_adamw({ln1_w, ln1_b, ln2_w, ln2_b, wqkv, bqkv, wo, bo, w1, b1, w2, b2}, 3e-3, 0.0);
  for (int s = 0; s < 400; ++s) {
    Tensor diff = sub(forward(), target);
    backward(mean(mul(diff, diff)));
    step(opt);
    zero_grad(opt);
  }
  const double last = mse(forward(), target);
  EXPECT_LT(last, 0.1 * first) << "loss " << first << " -> " << last;
}

}  // namespace
}  // namespace vlp
