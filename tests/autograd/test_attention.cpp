// scaled_dot_product_attention against a composite reference built from existing differentiable ops
// (matmul, exp/sum softmax, masked_fill, a dropout mask drawn from the same Philox stream), in F64, for
// every combination of bias, key padding, causal masking and dropout; gradchecks; fully masked rows;
// and the memory claim: the graph saves O(T) per head, not the [Tq, Tk] probabilities.
#include "common/test_util.h"

namespace vlp {
namespace {

using test::rand_input;

constexpr int64_t B = 2, H = 2, Tq = 3, Tk = 5, D = 4, Dv = 3;

// The reference: softmax(scale q k^T + bias, masked -> -inf) with the dropout multiplier of flat element
// e of [B, H, Tq, Tk] equal to 0 when uniform(seed, offset 0, e) < p, else 1 / (1 - p).
Tensor reference_attention(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionOptions& o) {
  const int64_t b_ = q.size(0), h_ = q.size(1), tq = q.size(2), tk = k.size(2);
  const double scale = o.scale < 0 ? 1.0 / std::sqrt(double(q.size(3))) : o.scale;
  Tensor s = mul(matmul(q, transpose(k, -1, -2)), scale);
  if (o.bias.defined()) s = add(s, o.bias);
  std::vector<double> keep_key = o.key_padding_mask.defined() ? to_vector(o.key_padding_mask)
                                                               : std::vector<double>(size_t(b_ * tk), 1.0);
  std::vector<double> masked(size_t(b_ * tq * tk));
  for (int64_t b = 0; b < b_; ++b)
    for (int64_t i = 0; i < tq; ++i)
      for (int64_t j = 0; j < tk; ++j)
        masked[size_t((b * tq + i) * tk + j)] = keep_key[size_t(b * tk + j)] == 0.0 || (o.causal && j > i + tk - tq);
  s = masked_fill(s, from_vector(masked, {b_, 1, tq, tk}, DType::U8), -INFINITY);
  Tensor e = exp(sub(s, max(s, -1, true).detach()));
  Tensor p = div(e, sum(e, {-1}, true));
  if (o.training && o.dropout_p > 0) {
    Generator gen(o.generator->seed);  // the stream the op draws from, at the offset it starts at
    gen.offset = 0;
    std::vector<double> u = to_vector(rand({b_, h_, tq, tk}, &gen, DType::F32)), mult;
    for (double x : u) mult.push_back(float(x) < float(o.dropout_p) ? 0.0 : 1.0 / (1.0 - o.dropout_p));
    p = mul(p, from_vector(mult, {b_, h_, tq, tk}, DType::F64));
  }
  return matmul(p, v);
}

Tensor bias_of_kind(int kind, uint64_t seed) {
  if (kind == 1) return rand_input({1, H, Tq, Tk}, seed);  // T5's trained relative-position bias
  if (kind == 2) return rand_input({B, 1, 1, Tk}, seed);   // a per-key additive bias
  return Tensor();
}

TEST(Attention, MatchesCompositeReferenceInEveryConfiguration) {
  // q is a permuted [B, Tq, H, D] leaf (read in place), v a transposed one (copied), k contiguous.
  Tensor q_leaf = rand_input({B, Tq, H, D}, 1), k = rand_input({B, H, Tk, D}, 2), v_leaf = rand_input({B, H, Dv, Tk}, 3);
  Tensor padding = from_vector({1, 1, 1, 1, 1, 1, 0, 1, 0, 0}, {B, Tk}, DType::I64);  // batch 1 drops keys 1, 3, 4
  Tensor upstream = rand_input({B, H, Tq, Dv}, 4, DType::F64, false);
  for (int bias_kind : {0, 1, 2})
    for (bool use_padding : {false, true})
      for (bool causal : {false, true})
        for (double p : {0.0, 0.3}) {
          SCOPED_TRACE(str("bias ", bias_kind, " padding ", use_padding, " causal ", causal, " p ", p));
          Tensor bias = bias_of_kind(bias_kind, 5);
          std::vector<Tensor> leaves = {q_leaf, k, v_leaf};
          if (bias.defined()) leaves.push_back(bias);
          Generator gen(77);
          AttentionOptions o;
          o.bias = bias;
          o.key_padding_mask = use_padding ? padding : Tensor();
          o.causal = causal;
          o.dropout_p = p;
          o.generator = &gen;
          auto run = [&](bool reference) {
            for (Tensor& t : leaves) t.set_grad(Tensor());
            Tensor q = permute(q_leaf, {0, 2, 1, 3}), v = transpose(v_leaf, 2, 3);
            Tensor out = reference ? reference_attention(q, k, v, o) : scaled_dot_product_attention(q, k, v, o);
            backward(out, upstream);
            std::vector<Tensor> result = {out.detach()};
            for (Tensor& t : leaves) result.push_back(t.grad());
            return result;
          };
          std::vector<Tensor> got = run(false), want = run(true);
          EXPECT_EQ(gen.offset, uint64_t(p > 0 ? (B * H * Tq * Tk + 3) / 4 : 0));
          const char* names[] = {"out", "dq", "dk", "dv", "dbias"};
          for (size_t i = 0; i < got.size(); ++i) {
            SCOPED_TRACE(names[i]);
            EXPECT_TRUE(test::all_close(got[i], want[i], 1e-9, 1e-11));
          }
        }
}

TEST(Attention, LargerHeadsMatchReference) {
  // Heads of a few hundred rows and keys (BLAS-sized products), Tq != Tk, dropout; a full per-head bias
  // and then a per-key one (every row summed into one dbias row).
  const int64_t tq = 150, tk = 230;
  Tensor q = rand_input({1, 2, tq, 8}, 30), k = rand_input({1, 2, tk, 8}, 31), v = rand_input({1, 2, tk, 6}, 32);
  Tensor upstream = rand_input({1, 2, tq, 6}, 33, DType::F64, false);
  Tensor padding = ones({1, tk}, DType::Bool);
  fill_(narrow(padding, 1, 200, 30), 0.0);
  for (Tensor bias : {rand_input({1, 2, tq, tk}, 34), rand_input({1, 1, 1, tk}, 35)}) {
    SCOPED_TRACE(shape_str(bias.shape()));
    std::vector<Tensor> leaves = {q, k, v, bias};
    Generator gen(5);
    AttentionOptions o;
    o.bias = bias;
    o.key_padding_mask = padding;
    o.causal = true;
    o.dropout_p = 0.2;
    o.generator = &gen;
    std::vector<std::vector<Tensor>> results;
    for (bool reference : {false, true}) {
      for (Tensor& t : leaves) t.set_grad(Tensor());
      Tensor out = reference ? reference_attention(q, k, v, o) : scaled_dot_product_attention(q, k, v, o);
      backward(out, upstream);
      results.push_back({out.detach(), q.grad(), k.grad(), v.grad(), bias.grad()});
    }
    for (size_t i = 0; i < results[0].size(); ++i) EXPECT_TRUE(test::all_close(results[0][i], results[1][i], 1e-9, 1e-11)) << i;
  }
}

TEST(Attention, DropoutMaskIsThePhiloxStreamOfTheFlatIndex) {
  // v = identity per key makes the output the dropped probabilities themselves: compare with dropout
  // applied elementwise to the softmax, uniform(e) < p -> 0, else p / (1 - p).
  Tensor q = rand_input({1, 2, 3, 4}, 6, DType::F64, false), k = rand_input({1, 2, 5, 4}, 7, DType::F64, false);
  Tensor eye = zeros({5, 5}, DType::F64);
  for (int64_t j = 0; j < 5; ++j) fill_(as_strided(eye, {}, {}, j * 6), 1.0);
  Tensor v = expand(reshape(eye, {1, 1, 5, 5}), {1, 2, 5, 5});
  Generator gen(123);
  gen.offset = 10;  // a generator that already drew: the op starts where it stands
  AttentionOptions o;
  o.dropout_p = 0.5;
  o.generator = &gen;
  std::vector<double> dropped = to_vector(scaled_dot_product_attention(q, k, v, o));
  o.dropout_p = 0.0;
  std::vector<double> probs = to_vector(scaled_dot_product_attention(q, k, v, o));
  Generator replay(123);
  replay.offset = 10;
  std::vector<double> u = to_vector(rand({1, 2, 3, 5}, &replay, DType::F32));
  int kept = 0;
  for (size_t e = 0; e < u.size(); ++e) {
    double expected = float(u[e]) < 0.5f ? 0.0 : probs[e] * 2.0;
    EXPECT_NEAR(dropped[e], expected, 1e-12) << "element " << e;
    kept += float(u[e]) >= 0.5f;
  }
  EXPECT_GT(kept, 0);
  EXPECT_LT(kept, int(u.size()));
  // training = false: no dropout and no draw.
  Generator idle(123);
  o.dropout_p = 0.5;
  o.training = false;
  o.generator = &idle;
  EXPECT_TRUE(test::all_close(scaled_dot_product_attention(q, k, v, o), from_vector(probs, {1, 2, 3, 5}, DType::F64)));
  EXPECT_EQ(idle.offset, 0u);
}

TEST(Attention, Gradcheck) {
  struct Case {
    int bias_kind;
    bool padding, causal;
    double p, scale;
  };
  Tensor padding = from_vector({1, 0, 1, 1, 1, 1, 1, 1, 1, 0}, {B, Tk}, DType::Bool);
  for (Case c : {Case{1, true, true, 0.3, -1.0}, Case{2, false, false, 0.0, 1.0}, Case{0, true, false, 0.5, 0.7},
                 Case{1, false, true, 0.0, -1.0}}) {
    SCOPED_TRACE(str("bias ", c.bias_kind, " padding ", c.padding, " causal ", c.causal, " p ", c.p));
    std::vector<Tensor> inputs = {rand_input({B, Tq, H, D}, 8), rand_input({B, H, Tk, D}, 9),
                                  rand_input({B, H, Tk, Dv}, 10)};
    if (c.bias_kind) inputs.push_back(bias_of_kind(c.bias_kind, 11));
    EXPECT_EQ(gradcheck(
                  [&](auto& in) {
                    Generator gen(99);  // the same dropout mask on every evaluation
                    AttentionOptions o;
                    o.bias = in.size() > 3 ? in[3] : Tensor();
                    o.key_padding_mask = c.padding ? padding : Tensor();
                    o.causal = c.causal;
                    o.dropout_p = c.p;
                    o.scale = c.scale;
                    o.generator = &gen;
                    return scaled_dot_product_attention(permute(in[0], {0, 2, 1, 3}), in[1], in[2], o);
                  },
                  inputs),
              "");
  }
  // A bias of rank 2 ([Tq, Tk], broadcast over B and H) and k shared across heads by expand.
  EXPECT_EQ(gradcheck(
                [](auto& in) {
                  AttentionOptions o;
                  o.bias = in[3];
                  return scaled_dot_product_attention(in[0], expand(in[1], {B, H, Tk, D}), in[2], o);
                },
                {rand_input({B, H, Tq, D}, 12), rand_input({B, 1, Tk, D}, 13), rand_input({B, H, Tk, Dv}, 14),
                 rand_input({Tq, Tk}, 15)}),
            "");
}

TEST(Attention, FullyMaskedRowsGiveZerosAndZeroGradient) {
  // Batch 1 masks every key; causal with Tq = 4 > Tk = 2 leaves rows 0 and 1 with no key at all.
  Tensor q = rand_input({2, 1, 4, 3}, 16), k = rand_input({2, 1, 2, 3}, 17), v = rand_input({2, 1, 2, 3}, 18);
  AttentionOptions o;
  o.key_padding_mask = from_vector({1, 1, 0, 0}, {2, 2}, DType::U8);
  o.causal = true;
  Tensor out = scaled_dot_product_attention(q, k, v, o);
  backward(sum(mul(out, out)));
  std::vector<double> y = to_vector(out), dq = to_vector(q.grad()), dk = to_vector(k.grad()), dv = to_vector(v.grad());
  for (int64_t b = 0; b < 2; ++b)
    for (int64_t i = 0; i < 4; ++i) {
      const bool empty_row = b == 1 || i < 2;
      for (int64_t c = 0; c < 3; ++c) {
        size_t e = size_t((b * 4 + i) * 3 + c);
        EXPECT_TRUE(std::isfinite(y[e]) && std::isfinite(dq[e]));
        if (empty_row) {
          EXPECT_EQ(y[e], 0.0) << "b " << b << " row " << i;
          EXPECT_EQ(dq[e], 0.0) << "b " << b << " row " << i;
        }
      }
    }
  for (size_t e = 6; e < 12; ++e) {  // batch 1's keys and values
    EXPECT_EQ(dk[e], 0.0);
    EXPECT_EQ(dv[e], 0.0);
  }
  // Row 2 of batch 0 sees only key 0: its output is v[0, 0, 0].
  EXPECT_TRUE(test::all_close(narrow(narrow(out, 0, 0, 1), 2, 2, 1).detach(),
                              reshape(narrow(narrow(v, 0, 0, 1), 2, 0, 1), {1, 1, 1, 3}).detach()));
}

TEST(Attention, Float32AgreesWithFloat64) {
  Tensor q = rand_input({2, 3, 7, 8}, 19), k = rand_input({2, 3, 9, 8}, 20), v = rand_input({2, 3, 9, 5}, 21);
  Tensor bias = rand_input({1, 3, 7, 9}, 22);
  AttentionOptions o;
  o.bias = bias;
  o.causal = true;
  Tensor y64 = scaled_dot_product_attention(q, k, v, o);
  backward(sum(y64));
  Tensor gq = q.grad(), gb = bias.grad();
  Tensor q32 = to(q.detach(), DType::F32).set_requires_grad(), b32 = to(bias.detach(), DType::F32).set_requires_grad();
  o.bias = b32;
  Tensor y32 = scaled_dot_product_attention(q32, to(k.detach(), DType::F32), to(v.detach(), DType::F32), o);
  backward(sum(y32));
  EXPECT_EQ(y32.dtype(), DType::F32);
  EXPECT_TRUE(test::all_close(y32, y64, 1e-4, 1e-5));
  EXPECT_TRUE(test::all_close(q32.grad(), gq, 1e-4, 1e-5));
  EXPECT_TRUE(test::all_close(b32.grad(), gb, 1e-4, 1e-5));
}

TEST(Attention, SavesNoProbabilities) {
  // T = 128 keys and queries, 4 heads: a materialised probability tensor would be 4*128*128 doubles.
  const int64_t t = 128, h = 4, d = 8;
  Tensor q = rand_input({1, h, t, d}, 23), k = rand_input({1, h, t, d}, 24), v = rand_input({1, h, t, d}, 25);
  Tensor bias = rand_input({1, h, t, t}, 26);  // a trained parameter, alive anyway
  Generator gen(1);
  AttentionOptions o;
  o.bias = bias;
  o.causal = true;
  o.dropout_p = 0.1;
  o.generator = &gen;
  const int64_t prob_bytes = h * t * t * int64_t(sizeof(double));
  Tensor y = scaled_dot_product_attention(q, k, v, o);
  int64_t saved = saved_tensor_bytes(y, {bias});
  // q, k, v, the output, lse: 4 * h*t*d + h*t doubles.
  EXPECT_LE(saved, (4 * h * t * d + h * t) * int64_t(sizeof(double)));
  EXPECT_LT(saved, prob_bytes / 3);
  // The composite reference keeps several [h, t, t] tensors.
  Tensor yr = reference_attention(q, k, v, o);
  EXPECT_GT(saved_tensor_bytes(yr, {bias}), prob_bytes);
  // Training only v keeps neither v nor the output.
  Tensor qf = q.detach(), kf = k.detach();
  o.bias = Tensor();
  EXPECT_LE(saved_tensor_bytes(scaled_dot_product_attention(qf, kf, v, o)), (2 * h * t * d + h * t) * 8);
}

TEST(Attention, ShapeErrors) {
  Tensor q = zeros({1, 2, 3, 4}, DType::F64), k = zeros({1, 2, 5, 4}, DType::F64), v = zeros({1, 2, 5, 6}, DType::F64);
  EXPECT_EQ(scaled_dot_product_attention(q, k, v).shape(), (Shape{1, 2, 3, 6}));
  EXPECT_THROW(scaled_dot_product_attention(q, zeros({1, 2, 5, 3}, DType::F64), v), Error);  // D differs
  EXPECT_THROW(scaled_dot_product_attention(q, k, zeros({1, 2, 4, 6}, DType::F64)), Error);  // Tk differs
  EXPECT_THROW(scaled_dot_product_attention(zeros({2, 3, 4}, DType::F64), k, v), Error);     // not 4-D
  AttentionOptions o;
  o.bias = zeros({3, 3, 5}, DType::F64);  // H = 2, not 3
  EXPECT_THROW(scaled_dot_product_attention(q, k, v, o), Error);
  o.bias = Tensor();
  o.key_padding_mask = ones({1, 3}, DType::Bool);
  EXPECT_THROW(scaled_dot_product_attention(q, k, v, o), Error);
  o.key_padding_mask = ones({1, 5}, DType::F32);
  EXPECT_THROW(scaled_dot_product_attention(q, k, v, o), Error);
  o.key_padding_mask = Tensor();
  o.dropout_p = 1.0;
  EXPECT_THROW(scaled_dot_product_attention(q, k, v, o), Error);
}

}  // namespace
}  // namespace vlp
