// BART against transformers' BartForConditionalGeneration on the tiny reference model
// (tests/fixtures/models/bart: scale_embedding on, gelu, final_logits_bias non-zero): logits within 1e-5 of
// max |logit|, loss within 1e-5 relative, every gradient within 1e-4 of its norm (+ 1e-6 RMS floor; the pad row of the shared
// embedding included: lookups of the pad id pass no gradient); decoder cache; sites.
#include "tests/models/text_fixture.h"

namespace vlp {
namespace {

using test::close_to_scale;

struct BartFixture : ::testing::Test {
  BartConfig config = read_bart_config(test::model_fixture_dir("bart"));
  std::unique_ptr<BartForConditionalGeneration> model = std::make_unique<BartForConditionalGeneration>(config);
  std::map<std::string, Tensor> fx = test::read_fixture("bart");
  void SetUp() override { load_checkpoint(*model, test::model_fixture_dir("bart")); }
  Seq2SeqInput batch() const {
    Seq2SeqInput in;
    in.encoder.input_ids = fx.at("input_ids");
    in.encoder.attention_mask = fx.at("attention_mask");
    in.labels = fx.at("labels");
    return in;
  }
};

TEST_F(BartFixture, LogitsLossAndGradientsMatchTransformers) {
  model->set_requires_grad(true);
  Seq2SeqOutput out = model->forward(batch());
  EXPECT_TRUE(close_to_scale(out.logits, fx.at("logits"), 1e-5));
  EXPECT_NEAR(out.loss.item(), fx.at("loss").item(), 1e-5 * std::abs(fx.at("loss").item()));
  backward(out.loss);
  test::expect_gradients_match(*model, fx, 1e-4);
  EXPECT_FALSE(model->final_logits_bias.grad().defined()) << "a buffer, not a parameter";
}

// nn.Embedding(padding_idx = pad): lookups of the pad id pass no gradient to the shared table, even where
// the pad token is attended to.
TEST_F(BartFixture, PadLookupsPassNoGradient) {
  model->set_requires_grad(true);
  const int64_t pad = *config.tokens.pad_token_id;
  EncoderInput in;
  in.input_ids = from_data(std::vector<int64_t>{5, pad, 7, pad, 9}, {1, 5});  // no mask: pads are attended
  backward(sum(model->encode(in).hidden));
  Tensor grad = model->model.shared.weight.grad();
  ASSERT_TRUE(grad.defined());
  auto row_norm = [&](int64_t r) {
    double s = 0;
    for (double v : to_vector(select(grad, 0, r))) s += v * v;
    return s;
  };
  EXPECT_EQ(row_norm(pad), 0.0);
  EXPECT_GT(row_norm(5), 0.0);
  EXPECT_GT(row_norm(7), 0.0);
}

TEST_F(BartFixture, DecoderInputsFromLabels) {
  Tensor shifted = shift_tokens_right(fx.at("labels"), *config.tokens.pad_token_id, model->decoder_start_token_id());
  EXPECT_EQ(test::ids_of(shifted), test::ids_of(fx.at("decoder_input_ids")));
  // -100 in the labels becomes the pad id in the decoder inputs.
  std::vector<int64_t> row1 = test::ids_of(narrow(shifted, 0, 1, 1));
  EXPECT_EQ(row1[0], 2);
  EXPECT_EQ(row1[5], 1);
}

TEST_F(BartFixture, NamesBufferAndParameterCount) {
  auto buffers = model->named_buffers();
  ASSERT_EQ(buffers.size(), 1u);
  EXPECT_EQ(buffers[0].first, "final_logits_bias");
  EXPECT_EQ(buffers[0].second.shape(), (Shape{1, config.vocab_size}));
  EXPECT_EQ(model->num_parameters(), num_parameters(config));
  EXPECT_EQ(model->state_dict().size(), model->named_parameters().size() + 1);
  EXPECT_NE(model->find_module("model.encoder.layers.1.self_attn.out_proj"), nullptr);
  EXPECT_NE(model->find_module("model.decoder.layers.0.encoder_attn_layer_norm"), nullptr);
  EXPECT_EQ(model->find_module("model.encoder.layers.0.encoder_attn"), nullptr);
  EXPECT_EQ(model->model.encoder.embed_positions.weight.size(0), config.max_position_embeddings + 2);
}

TEST_F(BartFixture, SitesAreNamedPredictably) {
  for (const std::string stack : {"model.encoder", "model.decoder"}) {
    EXPECT_STREQ(model->find_module(stack + ".input_site")->type_name(), "InputSite");
    for (int i = 0; i < 2; ++i) {
      const std::string layer = stack + ".layers." + std::to_string(i);
      EXPECT_STREQ(model->find_module(layer + ".sa_site")->type_name(), "SublayerSite");
      EXPECT_STREQ(model->find_module(layer + ".ff_site")->type_name(), "SublayerSite");
      EXPECT_STREQ(model->find_module(layer + ".self_attn.attn_site")->type_name(), "AttentionSite");
    }
  }
  EXPECT_STREQ(model->find_module("model.decoder.layers.0.ca_site")->type_name(), "SublayerSite");
  EXPECT_STREQ(model->find_module("model.decoder.layers.0.encoder_attn.attn_site")->type_name(), "AttentionSite");
}

TEST_F(BartFixture, IncrementalDecodingWithCacheMatchesFullDecoder) {
  NoGradGuard no_grad;
  EncoderOutput enc = model->encode(batch().encoder);
  Tensor dec = fx.at("decoder_input_ids");
  Tensor ref = model->lm_logits(model->decode(dec, Tensor(), enc, nullptr, {}));
  EXPECT_TRUE(close_to_scale(ref, fx.at("logits"), 1e-5));
  DecoderCache cache;
  std::vector<Tensor> steps;
  steps.push_back(model->lm_logits(model->decode(narrow(dec, 1, 0, 2), Tensor(), enc, &cache, {})));
  for (int64_t t = 2; t < dec.size(1); ++t)
    steps.push_back(model->lm_logits(model->decode(narrow(dec, 1, t, 1), Tensor(), enc, &cache, {})));
  EXPECT_TRUE(close_to_scale(concat(steps, 1), ref, 1e-5));
}

TEST_F(BartFixture, SublayerSitesInEveryLayerAndSublayer) {
  std::vector<std::shared_ptr<test::CountingSublayerAdapter>> counters;
  for (auto& [name, m] : model->named_modules())
    if (auto* site = dynamic_cast<SublayerSite*>(m)) {
      counters.push_back(std::make_shared<test::CountingSublayerAdapter>());
      attach_adapter(*site, "count", counters.back());
    }
  EXPECT_EQ(counters.size(), size_t(2 * config.encoder_layers + 3 * config.decoder_layers));
  NoGradGuard no_grad;
  Seq2SeqOutput out = model->forward(batch());
  EXPECT_TRUE(close_to_scale(out.logits, fx.at("logits"), 1e-5));
  for (const auto& c : counters) EXPECT_EQ(c->calls, 1);
  EXPECT_TRUE(model->state_dict().size() == model->named_parameters().size() + 1) << "sites hold no parameters";
}

// before_dropout moves the site before the sublayer's dropout: with a site that adds 1 the placements agree
// in eval and differ in training (Drop(out + 1) != Drop(out) + 1).
TEST_F(BartFixture, SublayerSiteDropoutPlacement) {
  struct AddOne : SublayerAdapter {
    Tensor forward(const Tensor&, const Tensor& out, const ForwardContext&) override { return out + 1.0; }
  };
  auto* site = dynamic_cast<SublayerSite*>(model->find_module("model.encoder.layers.0.ff_site"));
  ASSERT_NE(site, nullptr);
  attach_adapter(*site, "add", std::make_shared<AddOne>());
  NoGradGuard no_grad;
  EncoderInput in = batch().encoder;
  auto run = [&](bool before, bool training) {
    site->before_dropout = before;
    Generator g(3);
    ForwardContext ctx;
    ctx.training = training;
    ctx.generator = &g;
    return model->encode(in, ctx).hidden;
  };
  EXPECT_TRUE(close_to_scale(run(true, false), run(false, false), 1e-6));
  EXPECT_FALSE(close_to_scale(run(true, true), run(false, true), 1e-3));
}

// VL-BART's input: appended (visual) embeddings come after layernorm_embedding, prompts before it without
// positions; the output covers [prompt; text; appended] with a matching mask.
TEST_F(BartFixture, PromptAndAppendedPositions) {
  NoGradGuard no_grad;
  EncoderInput in = batch().encoder;
  const int64_t B = 2, T = in.input_ids.size(1), P = 2, N = 3, D = config.d_model;
  auto prompt = std::make_shared<test::FixedPromptAdapter>();
  prompt->prompt = randn({B, P, D});
  attach_adapter(model->model.encoder.input_site, "prompt", prompt);
  in.appended_embeds = randn({B, N, D});
  EncoderOutput out = model->encode(in);
  EXPECT_EQ(out.hidden.shape(), (Shape{B, P + T + N, D}));
  std::vector<int64_t> mask = test::ids_of(out.mask);
  ASSERT_EQ(mask.size(), size_t(B * (P + T + N)));
  for (int64_t b = 0; b < B; ++b) {
    std::vector<int64_t> mine(mask.begin() + b * (P + T + N), mask.begin() + (b + 1) * (P + T + N));
    std::vector<int64_t> text = test::ids_of(narrow(in.attention_mask, 0, b, 1));
    std::vector<int64_t> expect(size_t(P), 1);
    expect.insert(expect.end(), text.begin(), text.end());
    expect.insert(expect.end(), size_t(N), 1);
    EXPECT_EQ(mine, expect);
  }
}

}  // namespace
}  // namespace vlp
