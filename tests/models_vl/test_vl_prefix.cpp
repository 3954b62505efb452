// GPT-2 with a visual prefix and the VL encoder classifier: equivalence with the backbone run on the
// concatenated embeddings, loss values computed directly, gradients reaching the trainable parts, generation.
#include <gtest/gtest.h>

#include <cmath>

#include "autograd/ops.h"
#include "models/vl/vl_prefix.h"
#include "runtime/rng.h"
#include "tests/common/test_util.h"

using namespace vlp;
using namespace vlp::test;

namespace {

GPT2Config tiny_gpt2() {
  GPT2Config c;
  c.vocab_size = 40; c.n_positions = 32; c.n_embd = 16; c.n_layer = 2; c.n_head = 2;
  c.resid_pdrop = c.embd_pdrop = c.attn_pdrop = 0.0;
  c.tokens.eos_token_id = {0};
  c.tokens.bos_token_id = 0;
  return c;
}

VLSeq2SeqConfig tiny_enc(const std::string& backbone, int64_t feat_dim) {
  VLSeq2SeqConfig c;
  c.backbone = backbone;
  c.feat_dim = feat_dim;
  c.t5.vocab_size = 40; c.t5.d_model = 16; c.t5.d_kv = 4; c.t5.num_heads = 4; c.t5.d_ff = 24; c.t5.num_layers = 1;
  c.t5.dropout_rate = 0.0; c.t5.dense_act_fn = "relu"; c.t5.relative_attention_num_buckets = 8;
  c.t5.relative_attention_max_distance = 16;
  c.t5.tokens.pad_token_id = 0; c.t5.tokens.eos_token_id = {1}; c.t5.tokens.decoder_start_token_id = 0;
  c.bart.vocab_size = 40; c.bart.d_model = 16; c.bart.max_position_embeddings = 32; c.bart.encoder_layers = 1;
  c.bart.decoder_layers = 1; c.bart.encoder_attention_heads = 2; c.bart.decoder_attention_heads = 2;
  c.bart.encoder_ffn_dim = 24; c.bart.decoder_ffn_dim = 24; c.bart.dropout = 0.0;
  c.bart.tokens.pad_token_id = 1; c.bart.tokens.eos_token_id = {2}; c.bart.tokens.decoder_start_token_id = 2;
  return c;
}

Tensor ids(const std::vector<int64_t>& v, int64_t B, int64_t T) { return from_data<int64_t>(v, {B, T}); }

}  // namespace

TEST(GPT2VisualPrefix, EqualsGPT2OnConcatenatedEmbeddingsAndLossSkipsTheVisualToken) {
  for (int64_t vdim : {16, 10}) {
    manual_seed(1);
    GPT2WithVisualPrefix m(tiny_gpt2(), vdim);
    EXPECT_EQ(bool(m.visual_projection), vdim != 16);
    Generator g(2);
    Tensor pooled = randn({2, vdim}, &g);
    Tensor text = ids({5, 6, 7, 8, 9, 10}, 2, 3);
    Tensor labels = ids({5, 6, 7, 8, -100, 10}, 2, 3);
    CausalLMOutput out = m.forward(pooled, text, Tensor(), labels);
    ASSERT_EQ(out.logits.shape(), (Shape{2, 4, 40}));
    // Direct: position t (0 = visual) predicts text token t; label -100 skipped.
    GPT2Input in;
    in.inputs_embeds = concat({m.visual_token(pooled), m.gpt2->transformer.wte.forward(text)}, 1);
    CausalLMOutput ref = m.gpt2->forward(in);
    EXPECT_TRUE(all_close(out.logits, ref.logits, 1e-6, 1e-6));
    Tensor lp = contiguous(log_softmax(out.logits, -1));
    const float* p = lp.data<float>();
    const std::vector<int64_t> lab = {5, 6, 7, 8, -100, 10};
    double total = 0;
    int n = 0;
    for (int b = 0; b < 2; ++b)
      for (int t = 0; t < 3; ++t) {
        const int64_t y = lab[size_t(b * 3 + t)];
        if (y < 0) continue;
        total -= p[(b * 4 + t) * 40 + y];
        ++n;
      }
    EXPECT_NEAR(out.loss.item(), total / n, 1e-5);
  }
}

TEST(GPT2VisualPrefix, GradientsReachTheProjectionAndGenerationRuns) {
  manual_seed(3);
  GPT2WithVisualPrefix m(tiny_gpt2(), 10);
  m.set_requires_grad(false);
  m.visual_projection->set_requires_grad(true);
  Generator g(4);
  Tensor pooled = randn({2, 10}, &g);
  CausalLMOutput out = m.forward(pooled, ids({5, 6, 7, 8, 9, 10}, 2, 3), Tensor(), ids({5, 6, 7, 8, 9, 10}, 2, 3));
  backward(out.loss);
  ASSERT_TRUE(m.visual_projection->weight.grad().defined());
  EXPECT_GT(sum(abs(m.visual_projection->weight.grad())).item(), 0.0);
  GenerationOptions opt;
  opt.max_new_tokens = 4;
  GenerationOutput gen = m.generate(pooled, Tensor(), opt);
  ASSERT_EQ(gen.sequences.size(0), 2);
  EXPECT_LE(gen.sequences.size(1), 4);
  // The first generated token is the argmax after the visual token alone.
  GPT2Input in;
  in.inputs_embeds = m.visual_token(pooled);
  Tensor first = argmax(select(m.gpt2->forward(in).logits, 1, 0), -1);
  EXPECT_TRUE(all_close(to(first, DType::F64), to(select(gen.sequences, 1, 0), DType::F64), 0, 0));
}

TEST(VLEncoderClassifier, PooledPositionZeroThroughHeadAndSoftScoreBCE) {
  for (const char* bb : {"t5", "bart"}) {
    manual_seed(5);
    VLEncoderClassifier m(tiny_enc(bb, 12), 7);
    Generator g(6);
    Tensor visual = randn({2, 12}, &g);
    Tensor text = ids({5, 6, 7, 8, 9, 3}, 2, 3);
    Tensor mask = ids({1, 1, 1, 1, 1, 0}, 2, 3);
    EncoderOutput enc = m.encode(visual, text, mask);
    ASSERT_EQ(enc.hidden.shape(), (Shape{2, 4, 16})) << bb;
    Tensor logits = m.forward(visual, text, mask);
    ASSERT_EQ(logits.shape(), (Shape{2, 7}));
    EXPECT_TRUE(all_close(logits, m.head(select(enc.hidden, 1, 0)), 1e-6, 1e-6));
    // The visual vector matters (it is position 0, not ignored).
    Tensor other = m.forward(mul(visual, 2.0), text, mask);
    EXPECT_FALSE(all_close(logits, other, 1e-4, 1e-4));
    // BCE against soft scores, directly.
    Tensor scores = from_vector({0, 0.3, 1, 0, 0, 0.6, 0, 1, 0, 0, 0.9, 0, 0, 0}, {2, 7});
    auto lv = contiguous(to(logits, DType::F64));
    auto sv = contiguous(to(scores, DType::F64));
    double total = 0;
    for (int i = 0; i < 14; ++i) {
      const double x = lv.data<double>()[i], y = sv.data<double>()[i];
      total += std::max(x, 0.0) - x * y + std::log1p(std::exp(-std::abs(x)));
    }
    EXPECT_NEAR(soft_score_bce(logits, scores).item(), total / 14, 1e-5) << bb;
  }
}
