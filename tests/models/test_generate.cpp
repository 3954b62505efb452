// generate() against transformers' generate() on the tiny reference models, token-identical, for a batch of
// two prompts of different lengths (GPT-2 left-padded): greedy, greedy with no_repeat_ngram_size and
// min_new_tokens, and four beam-search cases (num_beams 3 with length_penalty 0.6 / 1.5 / 2.0 and
// early_stopping false / true / "never", min_new_tokens; num_beams 4 returning 2 hypotheses each with
// no_repeat_ngram_size), beam scores within 1e-5. Plus the length options, the cache-free path, generation
// from embeddings and through the input site, and per-example context surviving beam search.
#include "tests/models/text_fixture.h"

namespace vlp {
namespace {

using test::ids_of;

std::string show(const Tensor& t) {
  std::ostringstream os;
  os << shape_str(t.shape()) << " [";
  for (int64_t v : ids_of(t)) os << v << " ";
  return os.str() + "]";
}

struct Models {
  GPT2LMHeadModel gpt2{read_gpt2_config(test::model_fixture_dir("gpt2"))};
  T5ForConditionalGeneration t5{read_t5_config(test::model_fixture_dir("t5"))};
  T5ForConditionalGeneration t5v11{read_t5_config(test::model_fixture_dir("t5v11"))};
  BartForConditionalGeneration bart{read_bart_config(test::model_fixture_dir("bart"))};
  Models() {
    load_checkpoint(gpt2, test::model_fixture_dir("gpt2"));
    load_checkpoint(t5, test::model_fixture_dir("t5"));
    load_checkpoint(t5v11, test::model_fixture_dir("t5v11"));
    load_checkpoint(bart, test::model_fixture_dir("bart"));
  }
  GenerationOutput run(const std::string& name, const GenerationOptions& options, const ForwardContext& ctx = {}) {
    auto fx = test::read_fixture(name);
    EncoderInput in;
    in.input_ids = fx.at("gen.input_ids");
    in.attention_mask = fx.at("gen.attention_mask");
    if (name == "gpt2") return generate(gpt2, in.input_ids, in.attention_mask, options, ctx);
    if (name == "t5") return generate(t5, in, options, ctx);
    if (name == "t5v11") return generate(t5v11, in, options, ctx);
    return generate(bart, in, options, ctx);
  }
};

Models& models() {
  static Models m;
  return m;
}

class GenerateReference : public ::testing::TestWithParam<std::string> {};

TEST_P(GenerateReference, TokenIdenticalToTransformers) {
  auto fx = test::read_fixture(GetParam());
  for (const auto& [name, options] : test::fixture_generation_cases()) {
    Tensor expected = fx.at("gen." + name);
    Tensor got = models().run(GetParam(), options).sequences;
    EXPECT_EQ(got.shape(), expected.shape()) << name << ": got " << show(got) << ", expected " << show(expected);
    EXPECT_EQ(ids_of(got), ids_of(expected)) << name << ": got " << show(got) << ", expected " << show(expected);
    if (options.num_beams > 1) {
      Tensor scores = models().run(GetParam(), options).sequence_scores;
      EXPECT_TRUE(test::all_close(scores, fx.at("gen." + name + ".scores"), 1e-5, 1e-5)) << name << " scores";
    }
  }
}

TEST_P(GenerateReference, WithoutCacheSameTokens) {
  for (const auto& [name, options] : test::fixture_generation_cases()) {
    if (name != "greedy" && name != "beam" && name != "beam_two") continue;
    GenerationOptions no_cache = options;
    no_cache.use_cache = false;
    EXPECT_EQ(ids_of(models().run(GetParam(), no_cache).sequences), ids_of(models().run(GetParam(), options).sequences))
        << name;
  }
}

INSTANTIATE_TEST_SUITE_P(Models, GenerateReference, ::testing::Values("gpt2", "t5", "t5v11", "bart"));

// From embeddings (a visual prefix would enter this way) transformers returns only the new tokens: they
// equal the tail of the same prompt given as ids.
TEST(Generate, Gpt2FromEmbeddingsReturnsNewTokens) {
  auto fx = test::read_fixture("gpt2");
  GPT2Input prompt;
  prompt.inputs_embeds = models().gpt2.transformer.wte.forward(fx.at("gen.input_ids"));
  prompt.attention_mask = fx.at("gen.attention_mask");
  const int64_t P = fx.at("gen.input_ids").size(1);
  for (const auto& [name, options] : test::fixture_generation_cases()) {
    if (options.no_repeat_ngram_size > 0) continue;  // the n-gram history differs: it has no prompt ids here
    for (bool cache : {true, false}) {
      GenerationOptions o = options;
      o.use_cache = cache;
      Tensor got = generate(models().gpt2, prompt, o).sequences;
      Tensor expected = fx.at("gen." + name);
      expected = narrow(expected, 1, P, expected.size(1) - P);
      EXPECT_EQ(ids_of(got), ids_of(expected)) << name << (cache ? "" : " without cache") << ": got " << show(got)
                                              << ", expected " << show(expected);
    }
  }
}

// Prompt tuning through the input site while generating: the prompt enters on the first call only and the
// new tokens equal generating after the prompt's tokens.
TEST(Generate, Gpt2InputSitePromptEqualsPrependedTokens) {
  auto fx = test::read_fixture("gpt2");
  Tensor ids = narrow(fx.at("gen.input_ids"), 0, 0, 1);  // row 0: no padding
  const int64_t P = 3, T = ids.size(1);
  GPT2LMHeadModel& model = models().gpt2;
  auto prompt = std::make_shared<test::FixedPromptAdapter>();
  prompt->prompt = model.transformer.wte.forward(narrow(ids, 1, 0, P));
  Tensor rest = narrow(ids, 1, P, T - P);
  for (const auto& [name, options] : test::fixture_generation_cases()) {
    if (options.no_repeat_ngram_size > 0) continue;  // the n-gram history lacks the prompt's tokens here
    Tensor expected = generate(model, ids, Tensor(), options).sequences;
    attach_adapter(model.transformer.input_site, "prompt", prompt);
    Tensor got = generate(model, rest, Tensor(), options).sequences;
    detach_adapter(model.transformer.input_site, "prompt");
    EXPECT_EQ(ids_of(narrow(got, 1, T - P, got.size(1) - (T - P))), ids_of(narrow(expected, 1, T, expected.size(1) - T)))
        << name << ": got " << show(got) << ", expected " << show(expected);
  }
}

TEST(Generate, LengthOptions) {
  auto fx = test::read_fixture("gpt2");
  const int64_t prompt = fx.at("gen.input_ids").size(1);
  GenerationOptions o;
  o.eos_token_id = std::vector<int64_t>{};  // never stop early
  o.max_new_tokens = 3;
  EXPECT_EQ(models().run("gpt2", o).sequences.size(1), prompt + 3);
  o.max_new_tokens = -1;
  o.max_length = prompt + 5;  // transformers' max_length counts the prompt
  EXPECT_EQ(models().run("gpt2", o).sequences.size(1), prompt + 5);
  o.max_new_tokens = 2;  // max_new_tokens wins over max_length
  EXPECT_EQ(models().run("gpt2", o).sequences.size(1), prompt + 2);
  o.max_new_tokens = -1, o.max_length = -1;  // default: 20 new tokens
  EXPECT_EQ(models().run("gpt2", o).sequences.size(1), prompt + 20);
  // Encoder-decoder: max_length counts the decoder start token.
  GenerationOptions s;
  s.eos_token_id = std::vector<int64_t>{};
  s.forced_eos_token_id = std::vector<int64_t>{};
  s.max_length = 4;
  EXPECT_EQ(models().run("bart", s).sequences.size(1), 4);
  s.max_length = 2;
  s.num_beams = 2;
  EXPECT_EQ(models().run("t5", s).sequences.size(1), 2);
  GenerationOptions bad;
  bad.max_length = prompt;
  EXPECT_THROW(models().run("gpt2", bad), Error);
}

TEST(Generate, MinNewTokensAndNoRepeatNgram) {
  auto fx = test::read_fixture("t5v11");
  const int64_t eos = models().t5v11.config.tokens.eos_token_id[0];
  GenerationOptions o;
  o.max_new_tokens = 8;
  o.min_new_tokens = 5;
  std::vector<int64_t> seq = ids_of(models().run("t5v11", o).sequences);
  const int64_t L = int64_t(seq.size()) / 2;
  for (int64_t b = 0; b < 2; ++b)
    for (int64_t t = 1; t <= 5 && t < L; ++t) EXPECT_NE(seq[size_t(b * L + t)], eos) << "row " << b << " step " << t;
  GenerationOptions n = o;
  n.min_new_tokens = 0;
  n.no_repeat_ngram_size = 2;
  n.eos_token_id = std::vector<int64_t>{};
  seq = ids_of(models().run("t5v11", n).sequences);
  const int64_t L2 = int64_t(seq.size()) / 2;
  for (int64_t b = 0; b < 2; ++b) {
    std::set<std::pair<int64_t, int64_t>> seen;
    for (int64_t t = 0; t + 1 < L2; ++t)
      EXPECT_TRUE(seen.insert({seq[size_t(b * L2 + t)], seq[size_t(b * L2 + t + 1)]}).second)
          << "bigram repeated in row " << b << " at " << t;
  }
}

TEST(Generate, ForcedTokens) {
  GenerationOptions o;
  o.max_new_tokens = 5;
  o.forced_bos_token_id = 7;
  o.forced_eos_token_id = std::vector<int64_t>{9};
  o.eos_token_id = std::vector<int64_t>{9};
  for (int64_t beams : {1, 3}) {
    o.num_beams = beams;
    Tensor seq = models().run("bart", o).sequences;
    for (int64_t b = 0; b < 2; ++b) {
      std::vector<int64_t> row = ids_of(narrow(seq, 0, b, 1));
      EXPECT_EQ(row[0], models().bart.decoder_start_token_id());
      EXPECT_EQ(row[1], 7) << "forced bos at step 1";
      EXPECT_EQ(row.back(), 9) << "forced eos at max_length - 1";
    }
  }
}

TEST(Generate, NumReturnSequences) {
  GenerationOptions o = test::fixture_generation_cases()[1].second;  // beam
  GenerationOutput one = models().run("t5v11", o);
  o.num_return_sequences = 3;
  GenerationOutput three = models().run("t5v11", o);
  ASSERT_EQ(three.sequences.size(0), 6);
  ASSERT_EQ(three.sequence_scores.size(0), 6);
  std::vector<double> scores = to_vector(three.sequence_scores);
  for (int b = 0; b < 2; ++b) {
    EXPECT_GE(scores[size_t(3 * b)], scores[size_t(3 * b + 1)]);
    EXPECT_GE(scores[size_t(3 * b + 1)], scores[size_t(3 * b + 2)]);
    std::vector<int64_t> best = ids_of(narrow(three.sequences, 0, 3 * b, 1));
    std::vector<int64_t> ref = ids_of(narrow(one.sequences, 0, b, 1));
    best.resize(ref.size());
    EXPECT_EQ(best, ref);
  }
  o.num_return_sequences = 4;
  EXPECT_THROW(models().run("t5v11", o), Error);
}

// Per-example context (mixed-adapter batches, task ids, visual features) is repeated per beam: every adapter call sees
// as many names as rows.
TEST(Generate, PerExampleContextSurvivesBeamSearch) {
  struct Probe : SublayerAdapter {
    int calls = 0, mismatches = 0;
    Tensor forward(const Tensor&, const Tensor& out, const ForwardContext& ctx) override {
      ++calls;
      if (int64_t(ctx.sample_adapters.size()) != out.size(0) || ctx.visual.size(0) != out.size(0) ||
          int64_t(ctx.task_ids.size()) != out.size(0))
        ++mismatches;
      return out;
    }
  };
  ForwardContext ctx;
  ctx.sample_adapters = {"a", "b"};
  ctx.visual = randn({2, 1, 4});
  ctx.task_ids = {0, 1};
  EXPECT_EQ(repeat_context(ctx, 2, 3).sample_adapters, (std::vector<std::string>{"a", "a", "a", "b", "b", "b"}));
  EXPECT_EQ(repeat_context(ctx, 2, 3).task_ids, (std::vector<int64_t>{0, 0, 0, 1, 1, 1}));
  EXPECT_EQ(repeat_context(ctx, 2, 3).visual.size(0), 6);
  for (const std::string name : {"gpt2", "bart"}) {
    auto probe = std::make_shared<Probe>();
    Module& m = name == "gpt2" ? static_cast<Module&>(models().gpt2) : static_cast<Module&>(models().bart);
    auto* site = dynamic_cast<SublayerSite*>(
        m.find_module(name == "gpt2" ? "transformer.h.0.ff_site" : "model.decoder.layers.1.ff_site"));
    ASSERT_NE(site, nullptr);
    attach_adapter(*site, "probe", probe);
    GenerationOptions o = test::fixture_generation_cases()[1].second;
    Tensor with_probe = models().run(name, o, ctx).sequences;
    detach_adapter(*site, "probe");
    EXPECT_GT(probe->calls, 1) << name;
    EXPECT_EQ(probe->mismatches, 0) << name;
    EXPECT_EQ(ids_of(with_probe), ids_of(test::read_fixture(name).at("gen.beam"))) << name;
  }
}

}  // namespace
}  // namespace vlp
