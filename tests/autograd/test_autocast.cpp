// The autocast policy (autograd/autocast.h) on the CPU, where BF16 operands are computed in F32 after
// rounding: linear, matmul and attention under the scope equal the same ops on inputs rounded to BF16
// (and differ from the F32 result), return F32, and send F32 gradients to F32 leaves equal to those of an
// explicitly cast graph; scopes nest and disable; parameter copies are cached and invalidated; without the
// scope (or for F64 / BF16 operands) nothing changes; tiny GPT-2 and T5 steps under autocast stay within
// BF16 tolerance of F32 with F32, finite gradients.
#include "common/test_util.h"
#include "models/config.h"
#include "models/gpt2.h"
#include "models/t5.h"

namespace vlp {
namespace {

using test::all_close;
using test::rand_input;

// t rounded to BF16 and back: the values autocast makes an F32 operand into. No graph.
Tensor round_bf16(const Tensor& t) { return convert(convert(t.detach(), DType::BF16), DType::F32); }

Tensor f32_leaf(const Shape& shape, uint64_t seed) { return rand_input(shape, seed, DType::F32); }
Tensor f32_value(const Shape& shape, uint64_t seed) { return rand_input(shape, seed, DType::F32, false); }

double max_abs_diff(const Tensor& a, const Tensor& b) {
  std::vector<double> va = to_vector(a), vb = to_vector(b);
  double m = 0;
  for (size_t i = 0; i < va.size(); ++i) m = std::max(m, std::abs(va[i] - vb[i]));
  return m;
}

// ||a - b|| / ||b|| over all elements.
double rel_error(const Tensor& a, const Tensor& b) {
  std::vector<double> va = to_vector(a), vb = to_vector(b);
  double num = 0, den = 0;
  for (size_t i = 0; i < va.size(); ++i) num += (va[i] - vb[i]) * (va[i] - vb[i]), den += vb[i] * vb[i];
  return std::sqrt(num / std::max(den, 1e-300));
}

// [b, t] I64 token ids in [lo, vocab), from a fixed seed.
Tensor token_ids(int64_t b, int64_t t, int64_t lo, int64_t vocab, uint64_t seed) {
  std::vector<double> v;
  uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
  for (int64_t i = 0; i < b * t; ++i) {
    s ^= s << 13, s ^= s >> 7, s ^= s << 17;
    v.push_back(double(lo + int64_t(s % uint64_t(vocab - lo))));
  }
  return from_vector(v, {b, t}, DType::I64);
}

void clear_grads(std::initializer_list<Tensor> ts) {
  for (const Tensor& t : ts) t.autograd()->grad = Tensor();
}

TEST(Autocast, ScopesNestRestoreAndDisable) {
  EXPECT_FALSE(autocast_enabled());
  {
    AutocastScope on(true);
    EXPECT_TRUE(autocast_enabled());
    EXPECT_EQ(autocast_dtype(), DType::BF16);
    {
      AutocastScope off(false);
      EXPECT_FALSE(autocast_enabled());
      EXPECT_FALSE(autocast_applies(f32_value({2}, 1)));
      {
        AutocastScope half(true, DType::F16);
        EXPECT_TRUE(autocast_enabled());
        EXPECT_EQ(autocast_dtype(), DType::F16);
      }
      EXPECT_FALSE(autocast_enabled());
    }
    EXPECT_TRUE(autocast_enabled());
    EXPECT_EQ(autocast_dtype(), DType::BF16);
    EXPECT_TRUE(autocast_applies(f32_value({2}, 1)));
    EXPECT_FALSE(autocast_applies(rand_input({2}, 1, DType::F64, false)));
    EXPECT_FALSE(autocast_applies(Tensor()));
  }
  EXPECT_FALSE(autocast_enabled());
  EXPECT_NE(test::error_of([] { AutocastScope bad(true, DType::F32); }).find("BF16 or F16"), std::string::npos);
  EXPECT_FALSE(autocast_enabled());
}

TEST(Autocast, LinearEqualsRoundedInputsAndSendsF32Gradients) {
  Tensor x = f32_leaf({3, 5, 16}, 1), w = f32_leaf({8, 16}, 2), b = f32_leaf({8}, 3);
  Tensor upstream = f32_value({3, 5, 8}, 4);
  Tensor y;
  {
    AutocastScope on(true);
    y = linear(x, w, b);
  }
  EXPECT_EQ(y.dtype(), DType::F32);
  Tensor expected = linear(round_bf16(x), round_bf16(w), b.detach());  // F32 GEMM on the rounded values
  EXPECT_TRUE(all_close(y, expected, 0, 0));
  EXPECT_GT(max_abs_diff(y, linear(x.detach(), w.detach(), b.detach())), 1e-4);  // it did round

  backward(y, upstream);
  ASSERT_TRUE(x.grad().defined() && w.grad().defined() && b.grad().defined());
  EXPECT_EQ(x.grad().dtype(), DType::F32);
  EXPECT_EQ(w.grad().dtype(), DType::F32);
  EXPECT_EQ(b.grad().dtype(), DType::F32);
  // The backward GEMMs read the upstream gradient rounded to BF16 and return BF16 gradients to the casts;
  // the bias sums the F32 gradient as it is.
  Tensor g = reshape(round_bf16(upstream), {15, 8});
  EXPECT_TRUE(all_close(x.grad(), round_bf16(reshape(matmul(g, round_bf16(w)), {3, 5, 16})), 0, 0));
  EXPECT_TRUE(all_close(w.grad(), round_bf16(matmul(transpose(g, 0, 1), reshape(round_bf16(x), {15, 16}))), 0, 0));
  EXPECT_TRUE(all_close(b.grad(), sum(reshape(upstream, {15, 8}), {0}), 1e-6, 1e-6));
}

TEST(Autocast, LinearWithStridedInputsAndNoBias) {
  Tensor x_leaf = f32_leaf({16, 6}, 5), w_leaf = f32_leaf({16, 7}, 6);
  Tensor x = transpose(x_leaf, 0, 1), w = transpose(w_leaf, 0, 1);  // [6, 16] and [7, 16], both transposed
  Tensor y;
  {
    AutocastScope on(true);
    y = linear(x, w);
  }
  EXPECT_TRUE(all_close(y, linear(round_bf16(x), round_bf16(w)), 1e-6, 1e-6));
  backward(sum(y));
  EXPECT_EQ(x_leaf.grad().dtype(), DType::F32);
  Tensor ones_g = ones({6, 7});
  EXPECT_TRUE(all_close(x_leaf.grad(), transpose(round_bf16(matmul(ones_g, round_bf16(w))), 0, 1), 1e-6, 1e-6));
  EXPECT_TRUE(all_close(w_leaf.grad(), transpose(round_bf16(matmul(transpose(ones_g, 0, 1), round_bf16(x))), 0, 1),
                        1e-6, 1e-6));
}

// The same graph built with explicit casts: to(BF16) on the operands, the op in BF16, to(F32) on the result.
// Its gradients are what autocast's must be; its output is the autocast output rounded to BF16.
TEST(Autocast, MatmulEqualsRoundedInputsAndExplicitCastGradients) {
  // a: a sliced, permuted view [3, 2, 3, 6]; b: a slice [1, 6, 5] broadcast over a's batch dims.
  Tensor a_leaf = f32_leaf({2, 4, 3, 6}, 7), b_leaf = f32_leaf({3, 6, 5}, 8);
  Tensor a = narrow(permute(a_leaf, {1, 0, 2, 3}), 0, 1, 3), b = narrow(b_leaf, 0, 0, 1);
  Tensor upstream = f32_value({3, 2, 3, 5}, 9);
  Tensor y;
  {
    AutocastScope on(true);
    y = matmul(a, b);
  }
  EXPECT_EQ(y.dtype(), DType::F32);
  EXPECT_TRUE(all_close(y, matmul(round_bf16(a), round_bf16(b)), 0, 0));
  EXPECT_GT(max_abs_diff(y, matmul(a.detach(), b.detach())), 1e-4);
  backward(y, upstream);
  ASSERT_TRUE(a_leaf.grad().defined() && b_leaf.grad().defined());
  EXPECT_EQ(a_leaf.grad().dtype(), DType::F32);
  EXPECT_EQ(b_leaf.grad().dtype(), DType::F32);

  Tensor a2 = f32_leaf({2, 4, 3, 6}, 7), b2_leaf = f32_leaf({3, 6, 5}, 8);
  Tensor a2v = narrow(permute(a2, {1, 0, 2, 3}), 0, 1, 3), b2 = narrow(b2_leaf, 0, 0, 1);
  Tensor y_ref = to(matmul(to(a2v, DType::BF16), to(b2, DType::BF16)), DType::F32);
  EXPECT_TRUE(all_close(y_ref, round_bf16(y), 0, 0));
  backward(y_ref, upstream);
  EXPECT_TRUE(all_close(a_leaf.grad(), a2.grad(), 0, 0));
  EXPECT_TRUE(all_close(b_leaf.grad(), b2_leaf.grad(), 0, 0));
}

TEST(Autocast, MatmulGradientOfBothOperandsAndBmm) {
  Tensor a = f32_leaf({4, 3, 8}, 10), b = f32_leaf({4, 8, 2}, 11);
  Tensor upstream = f32_value({4, 3, 2}, 12);
  Tensor y;
  {
    AutocastScope on(true);
    y = bmm(a, b);
  }
  EXPECT_TRUE(all_close(y, bmm(round_bf16(a), round_bf16(b)), 0, 0));
  backward(y, upstream);
  Tensor a2 = f32_leaf({4, 3, 8}, 10), b2 = f32_leaf({4, 8, 2}, 11);
  backward(to(bmm(to(a2, DType::BF16), to(b2, DType::BF16)), DType::F32), upstream);
  EXPECT_EQ(b.grad().dtype(), DType::F32);
  EXPECT_TRUE(all_close(a.grad(), a2.grad(), 0, 0));
  EXPECT_TRUE(all_close(b.grad(), b2.grad(), 0, 0));
}

TEST(Autocast, AttentionEqualsRoundedInputsAndExplicitCastGradients) {
  const Shape qs{2, 2, 4, 8}, ks{2, 2, 5, 8}, bs{1, 2, 4, 5};
  Tensor padding = from_vector({1, 1, 1, 1, 1, 1, 1, 0, 1, 0}, {2, 5}, DType::I64);
  auto options_with = [&](const Tensor& bias) {
    AttentionOptions o;
    o.bias = bias;
    o.key_padding_mask = padding;
    return o;
  };
  Tensor q = f32_leaf(qs, 13), k = f32_leaf(ks, 14), v = f32_leaf(ks, 15), bias = f32_leaf(bs, 16);
  Tensor upstream = f32_value({2, 2, 4, 8}, 17);
  Tensor y;
  {
    AutocastScope on(true);
    y = scaled_dot_product_attention(q, k, v, options_with(bias));
  }
  EXPECT_EQ(y.dtype(), DType::F32);
  // The kernel's output is rounded to BF16 (it writes its input dtype) before returning in F32.
  Tensor expected = round_bf16(scaled_dot_product_attention(round_bf16(q), round_bf16(k), round_bf16(v),
                                                            options_with(round_bf16(bias))));
  EXPECT_TRUE(all_close(y, expected, 0, 0));
  EXPECT_GT(max_abs_diff(y, scaled_dot_product_attention(q.detach(), k.detach(), v.detach(),
                                                         options_with(bias.detach()))),
            1e-4);
  backward(y, upstream);
  Tensor q2 = f32_leaf(qs, 13), k2 = f32_leaf(ks, 14), v2 = f32_leaf(ks, 15), bias2 = f32_leaf(bs, 16);
  auto bf = [](const Tensor& t) { return to(t, DType::BF16); };
  backward(to(scaled_dot_product_attention(bf(q2), bf(k2), bf(v2), options_with(bf(bias2))), DType::F32), upstream);
  for (auto [got, want] : {std::pair{q, q2}, {k, k2}, {v, v2}, {bias, bias2}}) {
    ASSERT_TRUE(got.grad().defined());
    EXPECT_EQ(got.grad().dtype(), DType::F32);
    EXPECT_TRUE(all_close(got.grad(), want.grad(), 0, 0));
  }
}

TEST(Autocast, OtherOpsStayF32) {
  Tensor x = f32_value({3, 8}, 18), gamma = f32_value({8}, 19);
  AutocastScope on(true);
  // Elementwise, norms, softmax and losses are not autocast: bit-identical to outside the scope.
  Tensor ln = layer_norm(x, gamma, Tensor(), 1e-5), sm = softmax(x, -1), s = add(x, x);
  AutocastScope off(false);
  EXPECT_TRUE(all_close(ln, layer_norm(x, gamma, Tensor(), 1e-5), 0, 0));
  EXPECT_TRUE(all_close(sm, softmax(x, -1), 0, 0));
  EXPECT_TRUE(all_close(s, add(x, x), 0, 0));
}

TEST(Autocast, WithoutScopeOrForOtherDtypesNothingChanges) {
  Tensor x = f32_leaf({4, 16}, 20), w = f32_leaf({8, 16}, 21);
  Tensor y_plain = linear(x, w);
  // The op records its node directly on the leaves: no cast in the graph.
  ASSERT_TRUE(y_plain.autograd() && y_plain.autograd()->grad_fn);
  EXPECT_EQ(y_plain.autograd()->grad_fn->inputs[0].leaf, x.autograd());
  EXPECT_EQ(y_plain.autograd()->grad_fn->inputs[1].leaf, w.autograd());
  Tensor y_disabled;
  {
    AutocastScope on(true);
    AutocastScope off(false);
    y_disabled = linear(x, w);
  }
  EXPECT_TRUE(all_close(y_disabled, y_plain, 0, 0));
  EXPECT_EQ(y_disabled.autograd()->grad_fn->inputs[0].leaf, x.autograd());

  // F64 (gradcheck) and BF16 operands are left alone inside an enabled scope.
  Tensor xd = rand_input({4, 16}, 22), wd = rand_input({8, 16}, 23);
  Tensor xb = convert(xd, DType::BF16), wb = convert(wd, DType::BF16);
  Tensor yd_plain = matmul(xd, transpose(wd, 0, 1)), yb_plain = linear(xb, wb);
  AutocastScope on(true);
  Tensor yd = matmul(xd, transpose(wd, 0, 1)), yb = linear(xb, wb);
  EXPECT_EQ(yd.dtype(), DType::F64);
  EXPECT_EQ(yb.dtype(), DType::BF16);
  EXPECT_TRUE(all_close(yd, yd_plain, 0, 0));
  EXPECT_TRUE(all_close(yb, yb_plain, 0, 0));
  EXPECT_EQ(gradcheck([](const std::vector<Tensor>& in) { return linear(in[0], in[1], in[2]); },
                        {rand_input({3, 4}, 24), rand_input({2, 4}, 25), rand_input({2}, 26)}),
            "");
}

TEST(Autocast, BackwardInsideTheScopeEqualsBackwardOutside) {
  Tensor x = f32_leaf({5, 16}, 27), w = f32_leaf({8, 16}, 28);
  Tensor x2 = f32_leaf({5, 16}, 27), w2 = f32_leaf({8, 16}, 28);
  {
    AutocastScope on(true);
    backward(sum(linear(x, w)));
    Tensor y2 = linear(x2, w2);
    AutocastScope off(false);
    backward(sum(y2));
  }
  EXPECT_TRUE(all_close(w.grad(), w2.grad(), 0, 0));
  EXPECT_TRUE(all_close(x.grad(), x2.grad(), 0, 0));
}

TEST(Autocast, ParameterCopiesAreCachedPerEnabledRegion) {
  Tensor w = f32_leaf({8, 16}, 29);
  Tensor x1 = f32_value({3, 16}, 30), x2 = f32_leaf({3, 16}, 31);
  Tensor upstream = f32_value({3, 8}, 32);
  {
    AutocastScope on(true);
    // One cached copy of w; mul(x2, 2) is an activation (not a leaf), cast at each use.
    Tensor y = add(linear(x1, w), linear(mul(x2, 2.0), w));
    EXPECT_EQ(autocast_cache_size(), 1);
    {
      AutocastScope on_again(true);
      linear(x1, w);
      EXPECT_EQ(autocast_cache_size(), 1);  // a nested enabled scope shares it
    }
    EXPECT_EQ(autocast_cache_size(), 1);
    {
      AutocastScope off(false);
      {
        AutocastScope on_again(true);
        linear(x1, w);
        EXPECT_EQ(autocast_cache_size(), 1);
      }
      EXPECT_EQ(autocast_cache_size(), 0);  // autocast turned off again: dropped
    }
    linear(x1, w);
    EXPECT_EQ(autocast_cache_size(), 1);
    backward(y, upstream);
  }
  EXPECT_EQ(autocast_cache_size(), 0);  // dropped when autocast turns off
  // Both uses accumulate into the one cast, as with an explicit shared cast.
  Tensor w_ref = f32_leaf({8, 16}, 29), x2_ref = f32_leaf({3, 16}, 31);
  Tensor wb = to(w_ref, DType::BF16);
  auto cast_linear = [&](const Tensor& x) { return to(linear(to(x, DType::BF16), wb), DType::F32); };
  Tensor y_ref = add(cast_linear(x1), cast_linear(mul(x2_ref, 2.0)));
  backward(y_ref, upstream);
  EXPECT_TRUE(all_close(w.grad(), w_ref.grad(), 0, 0));
  EXPECT_TRUE(all_close(x2.grad(), x2_ref.grad(), 0, 0));
}

TEST(Autocast, CachedCopyIsRenewedAfterInPlaceChangesNoGradAndBackward) {
  Tensor w = f32_leaf({4, 8}, 33), x = f32_value({2, 8}, 34);
  AutocastScope on(true);
  Tensor y0;
  {
    NoGradGuard no_grad;
    y0 = linear(x, w);  // cached without a recorded cast
  }
  Tensor y1 = linear(x, w);  // grad on: a recorded cast replaces it
  ASSERT_TRUE(y1.requires_grad());
  backward(sum(y1));
  ASSERT_TRUE(w.grad().defined());
  Tensor g1 = w.grad().detach();
  clear_grads({w});
  backward(sum(linear(x, w)));  // the cached cast's node was released by the first backward: recast
  EXPECT_TRUE(all_close(w.grad(), g1, 0, 0));
  {
    NoGradGuard no_grad;
    copy_(w, mul(w, 2.0));  // an optimizer-style in-place update
  }
  EXPECT_TRUE(all_close(linear(x, w), linear(round_bf16(x), round_bf16(w)), 0, 0));
  EXPECT_TRUE(all_close(y0, linear(round_bf16(x), round_bf16(mul(w, 0.5))), 0, 0));
}

// Forward + backward of a model under autocast against the same model in F32: the loss within BF16
// tolerance and different (the scope did something), every gradient F32, finite and close.
template <class LossFn>
void expect_autocast_step_close(Module& model, LossFn&& loss_fn) {
  model.set_requires_grad(true);
  Tensor loss_f32 = loss_fn();
  backward(loss_f32);
  std::vector<std::pair<std::string, Tensor>> grads_f32;
  for (auto& [name, p] : model.named_parameters()) {
    grads_f32.push_back({name, p.grad().detach()});
    p.autograd()->grad = Tensor();
  }
  Tensor loss_ac;
  {
    AutocastScope on(true);
    loss_ac = loss_fn();
  }
  backward(loss_ac);
  EXPECT_EQ(loss_ac.dtype(), DType::F32);
  const double l32 = loss_f32.item(), lac = loss_ac.item();
  EXPECT_NEAR(lac, l32, 1e-2 * std::abs(l32));
  EXPECT_NE(lac, l32);
  size_t i = 0;
  for (auto& [name, p] : model.named_parameters()) {
    SCOPED_TRACE(name);
    EXPECT_EQ(p.dtype(), DType::F32);
    ASSERT_TRUE(p.grad().defined());
    EXPECT_EQ(p.grad().dtype(), DType::F32);
    for (double g : to_vector(p.grad())) ASSERT_TRUE(std::isfinite(g));
    EXPECT_LT(rel_error(p.grad(), grads_f32[i++].second), 5e-2);
  }
}

TEST(Autocast, TinyGpt2StepStaysWithinBf16Tolerance) {
  GPT2Config c;
  c.vocab_size = 96, c.n_positions = 32, c.n_embd = 32, c.n_layer = 2, c.n_head = 4;
  GPT2LMHeadModel model(c);
  GPT2Input in;
  in.input_ids = token_ids(2, 12, 0, c.vocab_size, 35);
  in.labels = in.input_ids;
  expect_autocast_step_close(model, [&] { return model.forward(in).loss; });
}

TEST(Autocast, TinyT5StepStaysWithinBf16Tolerance) {
  T5Config c;
  c.vocab_size = 64, c.d_model = 32, c.d_kv = 8, c.d_ff = 64, c.num_layers = 2, c.num_heads = 4;
  c.relative_attention_num_buckets = 8, c.relative_attention_max_distance = 16;
  c.dense_act_fn = "relu";
  c.tokens.pad_token_id = 0, c.tokens.decoder_start_token_id = 0;
  T5ForConditionalGeneration model(c);
  Seq2SeqInput in;
  in.encoder.input_ids = token_ids(2, 10, 1, c.vocab_size, 36);
  in.labels = token_ids(2, 6, 1, c.vocab_size, 37);
  expect_autocast_step_close(model, [&] { return model.forward(in).loss; });
}

}  // namespace
}  // namespace vlp
