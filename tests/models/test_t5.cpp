// T5 v1.0 (relu, tied, rescaled) and v1.1 (gated gelu_new, untied) against transformers'
// T5ForConditionalGeneration on the tiny reference models (tests/fixtures/models/t5, t5v11): logits within
// 1e-5 of max |logit|, loss within 1e-5 relative, every gradient within 1e-4 of its norm (+ 1e-6 RMS floor); relative position
// buckets; decoder cache; the sites.
#include "tests/models/text_fixture.h"

namespace vlp {
namespace {

using test::close_to_scale;

class T5Reference : public ::testing::TestWithParam<std::string> {};

TEST_P(T5Reference, LogitsLossAndGradientsMatchTransformers) {
  const std::string dir = test::model_fixture_dir(GetParam());
  T5ForConditionalGeneration model(read_t5_config(dir));
  load_checkpoint(model, dir);
  model.set_requires_grad(true);
  auto fx = test::read_fixture(GetParam());
  Seq2SeqInput in;
  in.encoder.input_ids = fx.at("input_ids");
  in.encoder.attention_mask = fx.at("attention_mask");
  in.labels = fx.at("labels");
  Seq2SeqOutput out = model.forward(in);
  EXPECT_TRUE(close_to_scale(out.logits, fx.at("logits"), 1e-5));
  EXPECT_NEAR(out.loss.item(), fx.at("loss").item(), 1e-5 * std::abs(fx.at("loss").item()));
  backward(out.loss);
  test::expect_gradients_match(model, fx, 1e-4);
  EXPECT_EQ(test::ids_of(shift_tokens_right(in.labels, 0, model.decoder_start_token_id())),
            test::ids_of(fx.at("decoder_input_ids")));
  EXPECT_EQ(model.num_parameters(), num_parameters(model.config));
}

INSTANTIATE_TEST_SUITE_P(Versions, T5Reference, ::testing::Values("t5", "t5v11"));

// Training mode: dropout (hidden, attention, feed-forward) from ctx.generator, reproducible, gradients flow
// through the attention dropout and into the bias table.
TEST(T5, TrainingModeDropout) {
  const std::string dir = test::model_fixture_dir("t5v11");
  T5ForConditionalGeneration model(read_t5_config(dir));
  load_checkpoint(model, dir);
  model.set_requires_grad(true);
  auto fx = test::read_fixture("t5v11");
  Seq2SeqInput in;
  in.encoder.input_ids = fx.at("input_ids");
  in.encoder.attention_mask = fx.at("attention_mask");
  in.labels = fx.at("labels");
  auto loss = [&](uint64_t seed) {
    Generator g(seed);
    ForwardContext ctx;
    ctx.training = true;
    ctx.generator = &g;
    return model.forward(in, ctx).loss;
  };
  Tensor a = loss(1);
  EXPECT_EQ(a.item(), loss(1).item());
  EXPECT_NE(a.item(), loss(2).item());
  EXPECT_NE(a.item(), fx.at("loss").item());
  backward(a);
  Tensor table = model.encoder.blocks[0]->self_attention.SelfAttention.relative_attention_bias->weight;
  ASSERT_TRUE(table.grad().defined());
  EXPECT_TRUE(std::isfinite(to_vector(table.grad())[0]));
}

TEST(T5, VersionDifferencesComeFromTheConfig) {
  T5Config v10 = read_t5_config(test::model_fixture_dir("t5"));
  T5Config v11 = read_t5_config(test::model_fixture_dir("t5v11"));
  EXPECT_FALSE(v10.is_gated_act);
  EXPECT_EQ(v10.dense_act_fn, "relu");
  EXPECT_TRUE(v10.tie_word_embeddings && v10.scale_decoder_outputs);
  EXPECT_TRUE(v11.is_gated_act);
  EXPECT_EQ(v11.dense_act_fn, "gelu_new");
  EXPECT_FALSE(v11.tie_word_embeddings || v11.scale_decoder_outputs);
  T5ForConditionalGeneration m10(v10), m11(v11);
  EXPECT_EQ(m10.find_module("lm_head"), nullptr);
  EXPECT_NE(m11.find_module("lm_head"), nullptr);
  EXPECT_NE(m10.find_module("encoder.block.0.layer.1.DenseReluDense.wi"), nullptr);
  EXPECT_NE(m11.find_module("encoder.block.0.layer.1.DenseReluDense.wi_0"), nullptr);
  EXPECT_NE(m11.find_module("decoder.block.1.layer.2.DenseReluDense.wi_1"), nullptr);
  // Only block 0 of each stack has the bias table; cross-attention never has one.
  EXPECT_NE(m10.find_module("encoder.block.0.layer.0.SelfAttention.relative_attention_bias"), nullptr);
  EXPECT_EQ(m10.find_module("encoder.block.1.layer.0.SelfAttention.relative_attention_bias"), nullptr);
  EXPECT_EQ(m10.find_module("decoder.block.0.layer.1.EncDecAttention.relative_attention_bias"), nullptr);
}

// Bucket values worked out by hand from the T5 formula (32 buckets, max distance 128).
TEST(T5, RelativePositionBuckets) {
  auto bi = [](int64_t rel) { return t5_relative_position_bucket(rel, true, 32, 128); };
  auto causal = [](int64_t rel) { return t5_relative_position_bucket(rel, false, 32, 128); };
  // Bidirectional: 16 buckets per direction, 8 exact; keys after the query use buckets 16..31.
  EXPECT_EQ(bi(0), 0);
  EXPECT_EQ(bi(-1), 1);
  EXPECT_EQ(bi(-7), 7);
  EXPECT_EQ(bi(-8), 8);    // 8 + floor(log(1) / log(16) * 8)
  EXPECT_EQ(bi(-16), 10);  // 8 + floor(log(2) / log(16) * 8) = 8 + 2
  EXPECT_EQ(bi(-32), 12);
  EXPECT_EQ(bi(-127), 15);
  EXPECT_EQ(bi(-1000), 15);
  EXPECT_EQ(bi(1), 17);
  EXPECT_EQ(bi(16), 26);
  EXPECT_EQ(bi(1000), 31);
  // Causal: future keys all in bucket 0; 16 exact buckets for the past, then logarithmic up to 31.
  EXPECT_EQ(causal(5), 0);
  EXPECT_EQ(causal(0), 0);
  EXPECT_EQ(causal(-1), 1);
  EXPECT_EQ(causal(-15), 15);
  EXPECT_EQ(causal(-16), 16);
  EXPECT_EQ(causal(-32), 21);   // 16 + floor(log(2) / log(8) * 16) = 16 + 5
  EXPECT_EQ(causal(-64), 26);   // 16 + floor(2/3 * 16)
  EXPECT_EQ(causal(-127), 31);  // 16 + floor(log(127/16) / log(8) * 16) = 16 + 15
  EXPECT_EQ(causal(-500), 31);
}

TEST(T5, PositionBiasReadsTheTable) {
  // A table whose entry for bucket b, head h is 100 h + b makes the bias spell out the buckets.
  const int64_t buckets = 8, heads = 2;
  std::vector<double> table;
  for (int64_t b = 0; b < buckets; ++b)
    for (int64_t h = 0; h < heads; ++h) table.push_back(100.0 * h + b);
  Tensor t = from_vector(table, {buckets, heads});
  Tensor bias = t5_position_bias(t, 3, 5, 2, false, buckets, 8);  // queries at positions 2, 3, 4
  ASSERT_EQ(bias.shape(), (Shape{1, heads, 3, 5}));
  std::vector<double> v = to_vector(bias);
  for (int64_t h = 0; h < heads; ++h)
    for (int64_t i = 0; i < 3; ++i)
      for (int64_t j = 0; j < 5; ++j)
        EXPECT_EQ(v[size_t((h * 3 + i) * 5 + j)], 100.0 * h + t5_relative_position_bucket(j - (i + 2), false, buckets, 8));
}

TEST(T5, IncrementalDecodingWithCacheMatchesFullDecoder) {
  NoGradGuard no_grad;
  for (const std::string name : {"t5", "t5v11"}) {
    const std::string dir = test::model_fixture_dir(name);
    T5ForConditionalGeneration model(read_t5_config(dir));
    load_checkpoint(model, dir);
    auto fx = test::read_fixture(name);
    EncoderInput enc_in;
    enc_in.input_ids = fx.at("input_ids");
    enc_in.attention_mask = fx.at("attention_mask");
    EncoderOutput enc = model.encode(enc_in);
    Tensor dec = fx.at("decoder_input_ids");
    Tensor ref = model.lm_logits(model.decode(dec, Tensor(), enc, nullptr, {}));
    DecoderCache cache;
    std::vector<Tensor> steps;
    for (int64_t t = 0; t < dec.size(1); ++t)
      steps.push_back(model.lm_logits(model.decode(narrow(dec, 1, t, 1), Tensor(), enc, &cache, {})));
    EXPECT_TRUE(close_to_scale(concat(steps, 1), ref, 1e-5)) << name;
    EXPECT_TRUE(close_to_scale(ref, fx.at("logits"), 1e-5)) << name;
  }
}

TEST(T5, SitesAreNamedPredictably) {
  T5ForConditionalGeneration model(read_t5_config(test::model_fixture_dir("t5")));
  for (const std::string stack : {"encoder", "decoder"}) {
    EXPECT_STREQ(model.find_module(stack + ".input_site")->type_name(), "InputSite");
    for (int i = 0; i < 2; ++i) {
      const std::string block = stack + ".block." + std::to_string(i);
      EXPECT_STREQ(model.find_module(block + ".sa_site")->type_name(), "SublayerSite");
      EXPECT_STREQ(model.find_module(block + ".ff_site")->type_name(), "SublayerSite");
      EXPECT_STREQ(model.find_module(block + ".layer.0.SelfAttention.attn_site")->type_name(), "AttentionSite");
    }
  }
  EXPECT_STREQ(model.find_module("decoder.block.1.ca_site")->type_name(), "SublayerSite");
  EXPECT_STREQ(model.find_module("decoder.block.1.layer.1.EncDecAttention.attn_site")->type_name(), "AttentionSite");
  EXPECT_EQ(model.find_module("encoder.block.0.ca_site"), nullptr);
}

// Prefix tuning on the decoder's self-attention equals decoding after cached steps, T5's relative positions
// included (the queries sit after the prefix).
TEST(T5, DecoderPrefixThroughSitesEqualsCachedSteps) {
  NoGradGuard no_grad;
  const std::string dir = test::model_fixture_dir("t5v11");
  T5ForConditionalGeneration model(read_t5_config(dir));
  load_checkpoint(model, dir);
  auto fx = test::read_fixture("t5v11");
  EncoderInput enc_in;
  enc_in.input_ids = fx.at("input_ids");
  enc_in.attention_mask = fx.at("attention_mask");
  EncoderOutput enc = model.encode(enc_in);
  Tensor dec = fx.at("decoder_input_ids");
  const int64_t P = 2, L = dec.size(1);
  Tensor ref = narrow(model.lm_logits(model.decode(dec, Tensor(), enc, nullptr, {})), 1, P, L - P);
  DecoderCache cache;
  model.decode(narrow(dec, 1, 0, P), Tensor(), enc, &cache, {});
  for (size_t i = 0; i < model.decoder.blocks.size(); ++i) {
    auto adapter = std::make_shared<test::FixedPrefixAdapter>();
    std::tie(adapter->k, adapter->v) = cache.self_attn[i].get();
    attach_adapter(model.decoder.blocks[i]->self_attention.SelfAttention.attn_site, "prefix", adapter);
  }
  Tensor out = model.lm_logits(model.decode(narrow(dec, 1, P, L - P), Tensor(), enc, nullptr, {}));
  EXPECT_TRUE(close_to_scale(out, ref, 1e-5));
}

// Appended (visual) positions: text-to-text pairs keep their relative bias, every pair involving an
// appended position gets bias 0.
TEST(T5, AppendedPositionsGetZeroBias) {
  NoGradGuard no_grad;
  const std::string dir = test::model_fixture_dir("t5");
  T5ForConditionalGeneration model(read_t5_config(dir));
  load_checkpoint(model, dir);
  auto fx = test::read_fixture("t5");
  Tensor ids = narrow(fx.at("input_ids"), 0, 0, 1);
  const int64_t T = ids.size(1), N = 3;
  Tensor extra = model.shared.forward(narrow(ids, 1, 0, N)) * 0.5;  // three "visual" vectors
  EncoderInput text;
  text.input_ids = ids;
  EncoderOutput alone = model.encode(text);
  // 1. Appended positions masked out: the text positions are exactly the text-only encoder's.
  EncoderInput masked = text;
  masked.appended_embeds = extra;
  masked.appended_mask = zeros({1, N}, DType::I64);
  EncoderOutput a = model.encode(masked);
  ASSERT_EQ(a.hidden.shape(), (Shape{1, T + N, model.config.d_model}));
  EXPECT_EQ(test::ids_of(a.mask), (std::vector<int64_t>{1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0}));
  EXPECT_TRUE(close_to_scale(narrow(a.hidden, 1, 0, T), alone.hidden, 1e-6));
  // 2. Text masked out: the appended positions attend only to each other with bias 0, so the bias table
  //    does not matter to them.
  EncoderInput visual_only = text;
  visual_only.attention_mask = zeros({1, T}, DType::I64);
  visual_only.appended_embeds = extra;
  Tensor before = narrow(model.encode(visual_only).hidden, 1, T, N);
  Tensor table = model.encoder.blocks[0]->self_attention.SelfAttention.relative_attention_bias->weight;
  mul_(table, 5.0);
  Tensor after = narrow(model.encode(visual_only).hidden, 1, T, N);
  EXPECT_TRUE(close_to_scale(after, before, 1e-6));
  EXPECT_FALSE(close_to_scale(model.encode(text).hidden, alone.hidden, 1e-3)) << "the table does matter to text";
}

}  // namespace
}  // namespace vlp
