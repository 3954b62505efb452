// VL-T5 / VL-BART: the visual embedding against a direct loop computation, encoder shapes and masks, the
// zero T5 relative bias for visual pairs, loss values, a finite-difference gradient check and generation.
#include <gtest/gtest.h>

#include <cmath>

#include "autograd/ops.h"
#include "models/vl/vl_seq2seq.h"
#include "runtime/rng.h"
#include "tests/common/test_util.h"

using namespace vlp;
using namespace vlp::test;

namespace {

VLSeq2SeqConfig tiny(const std::string& backbone) {
  VLSeq2SeqConfig c;
  c.backbone = backbone;
  c.feat_dim = 6;
  c.t5.vocab_size = 48; c.t5.d_model = 16; c.t5.d_kv = 4; c.t5.num_heads = 4; c.t5.d_ff = 24;
  c.t5.num_layers = 2; c.t5.dropout_rate = 0.0; c.t5.relative_attention_num_buckets = 8;
  c.t5.relative_attention_max_distance = 16; c.t5.dense_act_fn = "relu";
  c.t5.tokens.pad_token_id = 0; c.t5.tokens.eos_token_id = {1}; c.t5.tokens.decoder_start_token_id = 0;
  c.bart.vocab_size = 48; c.bart.d_model = 16; c.bart.max_position_embeddings = 32;
  c.bart.encoder_layers = 1; c.bart.decoder_layers = 1; c.bart.encoder_attention_heads = 2;
  c.bart.decoder_attention_heads = 2; c.bart.encoder_ffn_dim = 24; c.bart.decoder_ffn_dim = 24;
  c.bart.dropout = 0.0;
  c.bart.tokens.pad_token_id = 1; c.bart.tokens.bos_token_id = 0; c.bart.tokens.eos_token_id = {2};
  c.bart.tokens.decoder_start_token_id = 2; c.bart.tokens.forced_eos_token_id = {2};
  return c;
}

Tensor ids(const std::vector<int64_t>& v, int64_t B, int64_t T) { return from_data<int64_t>(v, {B, T}); }

std::vector<double> values(const Tensor& t) {
  Tensor c = contiguous(to(t, DType::F64));
  const double* p = c.data<double>();
  return std::vector<double>(p, p + c.numel());
}

// e_i computed with plain loops from the raw parameters.
std::vector<double> direct_visual(const VLSeq2Seq& m, const std::vector<double>& feats,
                                  const std::vector<double>& boxes, const std::vector<int64_t>& img,
                                  const std::vector<int64_t>& obj, int64_t n_tokens) {
  const VisualEmbedding& ve = *m.visual_embedding;
  const int64_t d = m.d_model(), F = m.config.feat_dim, V = m.vocab_size();
  auto Wf = values(ve.feat_proj.weight), cf = values(ve.feat_proj.bias);
  auto Wp = values(ve.pos_proj.weight), cp = values(ve.pos_proj.bias);
  auto E_img = values(ve.img_order_embedding.weight), E_tok = values(m.shared().weight);
  const bool rms = ve.rms;
  auto gf = values(rms ? ve.feat_rms->weight : ve.feat_ln->weight);
  auto gp = values(rms ? ve.pos_rms->weight : ve.pos_ln->weight);
  std::vector<double> bf(size_t(d), 0.0), bp(size_t(d), 0.0);
  if (!rms) { bf = values(ve.feat_ln->bias); bp = values(ve.pos_ln->bias); }
  const double eps = rms ? ve.feat_rms->eps : ve.feat_ln->eps;
  auto norm = [&](std::vector<double> x, const std::vector<double>& g, const std::vector<double>& b) {
    double mu = 0, ms = 0;
    if (!rms) { for (double v : x) mu += v; mu /= double(d); }
    for (double v : x) ms += (v - mu) * (v - mu);
    ms /= double(d);
    for (int64_t j = 0; j < d; ++j) x[size_t(j)] = (x[size_t(j)] - mu) / std::sqrt(ms + eps) * g[size_t(j)] + b[size_t(j)];
    return x;
  };
  std::vector<double> out;
  for (int64_t i = 0; i < n_tokens; ++i) {
    std::vector<double> f(static_cast<size_t>(d), 0.0), p(static_cast<size_t>(d), 0.0);
    const double* bx = &boxes[size_t(i * 4)];
    const double pin[5] = {bx[0], bx[1], bx[2], bx[3], (bx[1] - bx[0]) * (bx[3] - bx[2])};
    for (int64_t j = 0; j < d; ++j) {
      double s = cf[size_t(j)];
      for (int64_t k = 0; k < F; ++k) s += Wf[size_t(j * F + k)] * feats[size_t(i * F + k)];
      f[size_t(j)] = s;
      double t = cp[size_t(j)];
      for (int k = 0; k < 5; ++k) t += Wp[size_t(j * 5 + k)] * pin[k];
      p[size_t(j)] = t;
    }
    f = norm(f, gf, bf);
    p = norm(p, gp, bp);
    for (int64_t j = 0; j < d; ++j)
      out.push_back(f[size_t(j)] + p[size_t(j)] + E_img[size_t(img[size_t(i)] * d + j)] +
                    E_tok[size_t((V - 1 - obj[size_t(i)]) * d + j)]);
  }
  return out;
}

void check_visual_formula(const std::string& backbone) {
  manual_seed(3);
  VLSeq2Seq m(tiny(backbone));
  // Non-trivial norm affine parameters so the check sees them.
  for (auto& [name, p] : m.visual_embedding->named_parameters()) normal_(p, 0.3, 0.5);
  const int64_t B = 2, N = 6;
  Generator g(11);
  Tensor feats = randn({B, N, 6}, &g);
  Tensor boxes = rand({B, N, 4}, &g);
  Tensor img = ids({0, 0, 0, 1, 1, 1, 1, 0, 1, 0, 1, 0}, B, N);
  Tensor obj = ids({0, 1, 2, 0, 1, 2, 5, 4, 3, 2, 1, 0}, B, N);
  VisualInput vi{feats, boxes, img, obj, Tensor(), 1, Tensor()};
  Tensor e = m.visual_embedding->forward(vi);
  ASSERT_EQ(e.shape(), (Shape{B, N, 16}));
  auto expected = direct_visual(m, values(feats), values(boxes), [&] {
    auto v = values(img); return std::vector<int64_t>(v.begin(), v.end()); }(), [&] {
    auto v = values(obj); return std::vector<int64_t>(v.begin(), v.end()); }(), B * N);
  EXPECT_TRUE(values_are(e, expected, 2e-5));
}

}  // namespace

TEST(VisualEmbedding, MatchesFormulaT5RMSNorm) { check_visual_formula("t5"); }
TEST(VisualEmbedding, MatchesFormulaBartLayerNorm) { check_visual_formula("bart"); }

TEST(VisualEmbedding, DefaultIdsForTwoImages) {
  EXPECT_TRUE(values_are(default_img_ids(1, 8, 2), {0, 0, 0, 0, 1, 1, 1, 1}, 0));
  EXPECT_TRUE(values_are(default_obj_ids(1, 8, 2), {0, 1, 2, 3, 0, 1, 2, 3}, 0));
  EXPECT_THROW(default_obj_ids(1, 7, 2), Error);
}

TEST(VisualEmbedding, ParameterNames) {
  VLSeq2Seq m(tiny("t5"));
  std::vector<std::string> names;
  for (auto& [n, p] : m.named_parameters()) names.push_back(n);
  auto has = [&](const std::string& s) { return std::find(names.begin(), names.end(), s) != names.end(); };
  EXPECT_TRUE(has("shared.weight"));
  EXPECT_TRUE(has("encoder.block.0.layer.0.SelfAttention.q.weight"));
  EXPECT_TRUE(has("visual_embedding.feat_embedding.0.weight"));
  EXPECT_TRUE(has("visual_embedding.feat_embedding.1.weight"));
  EXPECT_TRUE(has("visual_embedding.absolute_vis_pos_embedding.0.bias"));
  EXPECT_TRUE(has("visual_embedding.img_order_embedding.weight"));
  VLSeq2Seq b(tiny("bart"));
  int found = 0;
  for (auto& [n, p] : b.named_buffers()) found += n == "final_logits_bias";
  EXPECT_EQ(found, 1);
  EXPECT_THROW(VLSeq2Seq([] { auto c = tiny("t5"); c.backbone = "gpt"; return c; }()), Error);
}

TEST(VLSeq2Seq, EncoderShapesAndMasks) {
  for (const char* bb : {"t5", "bart"}) {
    manual_seed(1);
    VLSeq2Seq m(tiny(bb));
    Generator g(2);
    Tensor text = ids({5, 6, 7, 1, 8, 9, 1, 0}, 2, 4);
    Tensor mask = ids({1, 1, 1, 1, 1, 1, 1, 0}, 2, 4);
    VisualInput vi;
    vi.feats = randn({2, 8, 6}, &g);
    vi.n_images = 2;
    EncoderOutput out = m.encode(text, mask, vi);
    EXPECT_EQ(out.hidden.shape(), (Shape{2, 12, 16})) << bb;
    ASSERT_TRUE(out.mask.defined());
    EXPECT_TRUE(values_are(out.mask, {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1}, 0));
  }
}

// If any pair involving a visual token got a position-dependent bias, permuting the visual tokens (with
// their ids) would change the text states. With bias 0 the encoder is permutation-equivariant over them.
TEST(VLSeq2Seq, T5VisualPairsGetNoRelativeBias) {
  manual_seed(4);
  VLSeq2Seq m(tiny("t5"));
  // Make the relative bias large so a leak would show.
  normal_(m.t5->encoder.blocks[0]->self_attention.SelfAttention.relative_attention_bias->weight, 0.0, 3.0);
  Generator g(5);
  const int64_t N = 5;
  Tensor feats = randn({1, N, 6}, &g);
  Tensor obj = ids({0, 1, 2, 3, 4}, 1, N);
  Tensor text = ids({5, 6, 7}, 1, 3);
  EncoderOutput a = m.encode(text, Tensor(), VisualInput{feats, Tensor(), Tensor(), obj, Tensor(), 1, Tensor()});
  const std::vector<int64_t> perm = {3, 0, 4, 2, 1};
  Tensor pidx = from_data<int64_t>(perm, {N});
  EncoderOutput b = m.encode(text, Tensor(), VisualInput{index_select(feats, 1, pidx), Tensor(), Tensor(),
                                                         index_select(obj, 1, pidx), Tensor(), 1, Tensor()});
  EXPECT_TRUE(all_close(narrow(a.hidden, 1, 0, 3), narrow(b.hidden, 1, 0, 3), 1e-5, 1e-5));
  EXPECT_TRUE(all_close(index_select(narrow(a.hidden, 1, 3, N), 1, pidx), narrow(b.hidden, 1, 3, N), 1e-5, 1e-5));
  // Control: the text tokens do see relative positions (swapping two text tokens is not equivariant).
  EncoderOutput c = m.encode(ids({6, 5, 7}, 1, 3), Tensor(), VisualInput{feats, Tensor(), Tensor(), obj, Tensor(), 1, Tensor()});
  EXPECT_FALSE(all_close(select(a.hidden, 1, 2), select(c.hidden, 1, 2), 1e-4, 1e-4));
}

TEST(VLSeq2Seq, LossValues) {
  for (const char* bb : {"t5", "bart"}) {
    manual_seed(6);
    VLSeq2Seq m(tiny(bb));
    Generator g(7);
    VisualInput vi;
    vi.feats = randn({2, 4, 6}, &g);
    Tensor text = ids({5, 6, 7, 8, 9, 10}, 2, 3);
    Tensor labels = ids({11, 12, -100, 13, 14, -100}, 2, 3);
    Seq2SeqOutput out = m.forward(text, Tensor(), vi, labels);
    ASSERT_EQ(out.logits.shape(), (Shape{2, 3, 48}));
    // Direct: mean over labelled tokens of -log_softmax at the label.
    auto logits = values(out.logits);
    const std::vector<int64_t> lab = {11, 12, -100, 13, 14, -100};
    double total = 0; int n = 0;
    std::vector<double> per_row(2, 0.0);
    for (int t = 0; t < 6; ++t) {
      if (lab[size_t(t)] < 0) continue;
      double mx = -1e30, s = 0;
      for (int v = 0; v < 48; ++v) mx = std::max(mx, logits[size_t(t * 48 + v)]);
      for (int v = 0; v < 48; ++v) s += std::exp(logits[size_t(t * 48 + v)] - mx);
      const double ce = std::log(s) + mx - logits[size_t(t * 48 + lab[size_t(t)])];
      total += ce; ++n;
      per_row[size_t(t / 3)] += ce / 2.0;
    }
    EXPECT_NEAR(out.loss.item(), total / n, 1e-5) << bb;
    Tensor w = from_vector({0.3, 1.0}, {2});
    EXPECT_NEAR(weighted_seq2seq_loss(out.logits, labels, w).item(), (0.3 * per_row[0] + per_row[1]) / 2.0, 1e-5);
  }
}

// Finite differences on the visual projection (the part this file adds) against backward.
TEST(VLSeq2Seq, VisualGradientMatchesFiniteDifferences) {
  for (const char* bb : {"t5", "bart"}) {
    manual_seed(8);
    VLSeq2Seq m(tiny(bb));
    m.set_requires_grad(true);
    Generator g(9);
    VisualInput vi;
    vi.feats = randn({2, 4, 6}, &g);
    vi.boxes = rand({2, 4, 4}, &g);
    Tensor text = ids({5, 6, 7, 8, 9, 10}, 2, 3);
    Tensor labels = ids({11, 12, 13, 13, 14, 15}, 2, 3);
    auto loss_of = [&] { return m.forward(text, Tensor(), vi, labels).loss; };
    Tensor loss = loss_of();
    backward(loss);
    for (Tensor* p : {&m.visual_embedding->feat_proj.weight, &m.visual_embedding->pos_proj.weight,
                      &m.visual_embedding->img_order_embedding.weight}) {
      ASSERT_TRUE(p->grad().defined()) << bb;
      auto grad = values(p->grad());
      for (int64_t idx : {int64_t(0), int64_t(7)}) {
        const double fd = test::central_difference(*p, idx, 1e-2, [&] { return loss_of().item(); });
        EXPECT_NEAR(grad[size_t(idx)], fd, 2e-3 + 0.05 * std::abs(fd)) << bb << " index " << idx;
      }
    }
  }
}

TEST(VLSeq2Seq, GenerationRunsGreedyAndBeam) {
  for (const char* bb : {"t5", "bart"}) {
    manual_seed(10);
    VLSeq2Seq m(tiny(bb));
    Generator g(11);
    VisualInput vi;
    vi.feats = randn({2, 4, 6}, &g);
    Tensor text = ids({5, 6, 7, 8, 9, 10}, 2, 3);
    GenerationOptions opt;
    opt.max_new_tokens = 4;
    GenerationOutput greedy = m.generate(text, Tensor(), vi, opt);
    ASSERT_EQ(greedy.sequences.size(0), 2);
    EXPECT_LE(greedy.sequences.size(1), 5);
    const int64_t start = bb == std::string("t5") ? 0 : 2;
    EXPECT_EQ(values(greedy.sequences)[0], double(start));
    // Greedy = argmax of the teacher-forced logits on its own output (visual tokens included both ways).
    Tensor seq = greedy.sequences;
    const int64_t L = seq.size(1);
    if (L > 1) {
      Seq2SeqInput in;
      in.encoder_output = m.encode(text, Tensor(), vi);
      in.decoder_input_ids = narrow(seq, 1, 0, L - 1);
      Seq2SeqOutput out = m.t5 ? m.t5->forward(in) : m.bart->forward(in);
      auto am = values(argmax(select(out.logits, 1, 0), -1));
      auto s = values(seq);
      EXPECT_EQ(am[0], s[1]);
      EXPECT_EQ(am[1], s[size_t(L + 1)]);
    }
    opt.num_beams = 3;
    GenerationOutput beam = m.generate(text, Tensor(), vi, opt);
    EXPECT_EQ(beam.sequences.size(0), 2);
  }
}
