// Tokenizers: ids identical to Hugging Face `tokenizers` on the fixture corpus
// (tests/fixtures/data/tokenizer_reference.json, made by tools/reference/make_tokenizer_fixtures.py) for
// GPT-2 and T5 (real vocabularies from the assets; skipped without them) and for two tiny tokenizers
// stored in the fixtures (always run); a hand-written BPE; libsentencepiece on a tiny .model; added tokens,
// batching, and the error messages.
#include <fstream>
#include <nlohmann/json.hpp>

#include "common/test_util.h"
#include "data/bpe_tokenizer.h"
#include "data/sentencepiece_tokenizer.h"
#include "data/tokenizer.h"

namespace vlp {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using Ids = std::vector<int32_t>;

fs::path fixture_dir() { return fs::path(VLP_SOURCE_DIR) / "tests" / "fixtures" / "data"; }

const json& reference() {
  static const json j = [] {
    std::ifstream in(fixture_dir() / "tokenizer_reference.json");
    return json::parse(in);
  }();
  return j;
}

std::string tokenizer_assets() {
  const std::string a = test::assets_dir();
  return a.empty() ? a : a + "/tokenizers";
}

#define SKIP_WITHOUT_TOKENIZER_ASSETS()                                                                       \
  if (tokenizer_assets().empty() || !fs::exists(tokenizer_assets()))                                          \
  GTEST_SKIP() << "test assets not found (../shared/assets or $VLP_ASSETS); skipping the real-vocabulary tests"

Ids ids_of(const json& j) { return j.get<Ids>(); }

void write_file(const fs::path& p, const std::string& s) {
  std::ofstream out(p, std::ios::binary);
  out << s;
}

void expect_error(const std::function<void()>& fn, const std::vector<std::string>& parts) {
  try {
    fn();
    ADD_FAILURE() << "no error thrown";
  } catch (const Error& e) {
    const std::string msg = e.what();
    for (const auto& part : parts) EXPECT_NE(msg.find(part), std::string::npos) << "message: " << msg << "\nmissing: " << part;
  }
}

// Compares encode/decode against a fixture section with texts, ids, ids_no_special, decode, decode_skip.
void expect_section_matches(const Tokenizer& tok, const json& sec, const json& texts, const std::string& name) {
  for (size_t i = 0; i < texts.size(); ++i) {
    const std::string text = texts[i];
    const Ids ids = encode(tok, text, true);
    EXPECT_EQ(ids, ids_of(sec["ids"][i])) << name << " text " << i << ": " << json(text).dump();
    if (sec.contains("ids_no_special")) {
      EXPECT_EQ(encode(tok, text, false), ids_of(sec["ids_no_special"][i])) << name << " (no special) text " << i;
    }
    const Ids ref_ids = ids_of(sec["ids"][i]);
    EXPECT_EQ(decode(tok, ref_ids, false), sec["decode"][i].get<std::string>()) << name << " decode text " << i;
    EXPECT_EQ(decode(tok, ref_ids, true), sec["decode_skip"][i].get<std::string>()) << name << " decode(skip) text " << i;
  }
}

// Adds the fixture's token specs (all AddedToken options) and compares ids and decodes.
void expect_added_variants_match(Tokenizer tok, const json& sec, const std::string& name) {
  std::vector<AddedToken> specs;
  for (const auto& s : sec["specs"]) {
    AddedToken a;
    a.content = s["content"];
    a.special = s.value("special", false);
    a.normalized = s.value("normalized", !a.special);
    a.lstrip = s.value("lstrip", false);
    a.rstrip = s.value("rstrip", false);
    a.single_word = s.value("single_word", false);
    specs.push_back(a);
  }
  add_tokens(tok, specs);
  for (const auto& [content, id] : sec["token_ids"].items()) EXPECT_EQ(token_to_id(tok, content), id.get<int32_t>()) << name;
  for (size_t i = 0; i < sec["texts"].size(); ++i) {
    const std::string text = sec["texts"][i];
    const Ids ids = encode(tok, text);
    EXPECT_EQ(ids, ids_of(sec["ids"][i])) << name << " text " << i << ": " << json(text).dump();
    EXPECT_EQ(decode(tok, ids, false), sec["decode"][i].get<std::string>()) << name << " decode text " << i;
    EXPECT_EQ(decode(tok, ids, true), sec["decode_skip"][i].get<std::string>()) << name << " decode(skip) text " << i;
  }
}

void expect_batch_matches(const Tokenizer& tok, const json& b, const std::string& name) {
  BatchOptions o;
  o.max_length = b["max_length"];
  o.padding_side = b["padding_side"] == "left" ? BatchOptions::Side::Left : BatchOptions::Side::Right;
  o.pad_id = b["pad_id"];
  const BatchEncoding enc = encode_batch(tok, b["texts"].get<std::vector<std::string>>(), o);
  const auto ids = b["ids"].get<std::vector<std::vector<int64_t>>>();
  const auto mask = b["attention_mask"].get<std::vector<std::vector<int64_t>>>();
  ASSERT_EQ(enc.input_ids.size(0), int64_t(ids.size())) << name;
  ASSERT_EQ(enc.input_ids.size(1), int64_t(ids[0].size())) << name;
  std::vector<double> flat_ids, flat_mask;
  for (size_t i = 0; i < ids.size(); ++i)
    for (size_t j = 0; j < ids[i].size(); ++j) {
      flat_ids.push_back(double(ids[i][j]));
      flat_mask.push_back(double(mask[i][j]));
    }
  EXPECT_TRUE(test::values_are(enc.input_ids, flat_ids, 0)) << name;
  EXPECT_TRUE(test::values_are(enc.attention_mask, flat_mask, 0)) << name;
}

// ---- no assets needed -----------------------------------------------------------------------------------

// A BPE written here: 7 merges, expectations worked out by hand.
TEST(TokenizerBpe, HandWrittenMergesApplyByRank) {
  const fs::path dir = test::temp_dir("tiny_bpe");
  // "Ġ" is the byte-level character of the space byte.
  write_file(dir / "vocab.json",
             R"({"l":0,"o":1,"w":2,"e":3,"r":4,"n":5,"\u0120":6,"lo":7,"low":8,"er":9,"lower":10,)"
             R"("\u0120n":11,"\u0120ne":12,"\u0120new":13,"<pad>":14})");
  write_file(dir / "merges.txt", "#version: 0.2\nl o\nlo w\ne r\n\u0120 n\nlow er\n\u0120n e\n\u0120ne w\n");
  const Tokenizer tok = load_bpe_tokenizer((dir / "vocab.json").string(), (dir / "merges.txt").string());
  EXPECT_EQ(vocab_size(tok), 15);
  EXPECT_EQ(tok.pad_id, 14);
  // "lower": l o -> lo, lo w -> low, e r -> er, low er -> lower.
  EXPECT_EQ(encode(tok, "lower"), (Ids{10}));
  // " newer": e r (rank 2) first, then Ġ n (3), Ġn e (5), Ġne w (6); "Ġnew er" is not a merge.
  EXPECT_EQ(encode(tok, "lower newer"), (Ids{10, 13, 9}));
  EXPECT_EQ(encode(tok, "newer"), (Ids{5, 3, 2, 9}));
  EXPECT_EQ(tokenize(tok, "lower newer"), (std::vector<std::string>{"lower", "\u0120new", "er"}));
  // Characters outside the vocabulary are dropped (no unk token), as HF does.
  EXPECT_EQ(encode(tok, "xlow"), (Ids{8}));
  EXPECT_EQ(decode(tok, {10, 13, 9}), "lower newer");
  EXPECT_EQ(decode(tok, {6, 6, 8}), "  low");
  expect_error([&] { decode(tok, {10, 99}); }, {"unknown token id 99", "vocabulary size 15"});
  expect_error([&] { decode(tok, {-1}); }, {"unknown token id -1"});
  expect_error([&] { id_to_token(tok, 15); }, {"unknown token id 15"});
  EXPECT_EQ(token_to_id(tok, "lower"), 10);
  EXPECT_EQ(token_to_id(tok, "nope"), -1);

  // Files that are missing or wrong: the message names the file and the problem.
  expect_error([&] { load_bpe_tokenizer((dir / "missing.json").string(), (dir / "merges.txt").string()); },
               {"missing.json", "cannot open"});
  write_file(dir / "bad.json", "{\"l\": 0,");
  expect_error([&] { load_bpe_tokenizer((dir / "bad.json").string(), (dir / "merges.txt").string()); },
               {"bad.json", "invalid JSON"});
  write_file(dir / "bad_merges.txt", "l o\nlo w x\n");
  expect_error([&] { load_bpe_tokenizer((dir / "vocab.json").string(), (dir / "bad_merges.txt").string()); },
               {"bad_merges.txt", "line 2"});
  write_file(dir / "oov_merges.txt", "l o\nq z\n");
  expect_error([&] { load_bpe_tokenizer((dir / "vocab.json").string(), (dir / "oov_merges.txt").string()); },
               {"oov_merges.txt", "missing from the vocabulary"});
  fs::remove_all(dir);
}

TEST(TokenizerBpe, TinyTokenizerJsonMatchesHF) {
  const json& sec = reference()["tiny_bpe"];
  const Tokenizer tok = load_tokenizer((fixture_dir() / sec["file"].get<std::string>()).string());
  EXPECT_EQ(tok.prefix_ids, (Ids{0}));  // RobertaProcessing: <s> ... </s>
  EXPECT_EQ(tok.suffix_ids, (Ids{2}));
  EXPECT_EQ(tok.pad_id, 1);
  expect_section_matches(tok, sec, sec["texts"], "tiny_bpe");
  expect_added_variants_match(tok, sec["added"], "tiny_bpe added tokens");
}

TEST(TokenizerUnigram, TinyTokenizerJsonMatchesHF) {
  const json& sec = reference()["tiny_unigram"];
  const Tokenizer tok = load_tokenizer((fixture_dir() / sec["file"].get<std::string>()).string());
  ASSERT_EQ(tok.model, TokenizerModel::Unigram);
  // Byte fallback is exercised: CJK and emoji are not in the training corpus.
  expect_section_matches(tok, sec, sec["texts"], "tiny_unigram");
}

TEST(TokenizerSentencePiece, TinyModelThroughLibsentencepiece) {
  const json& sec = reference()["tiny_unigram"];
  const std::string path = (fixture_dir() / sec["model_file"].get<std::string>()).string();
  const Tokenizer tok = load_tokenizer(path);
  ASSERT_EQ(tok.model, TokenizerModel::SentencePiece);
  EXPECT_EQ(tok.pad_id, 3);
  EXPECT_EQ(tok.suffix_ids, (Ids{2}));  // T5 convention: </s> appended
  for (size_t i = 0; i < sec["spm_texts"].size(); ++i) {
    const std::string text = sec["spm_texts"][i];
    const Ids expected = ids_of(sec["spm_ids"][i]);
    EXPECT_EQ(encode(tok, text, false), expected) << json(text).dump();
    Ids with_eos = expected;
    with_eos.push_back(2);
    EXPECT_EQ(encode(tok, text, true), with_eos);
    EXPECT_EQ(decode(tok, expected), sec["spm_decode"][i].get<std::string>());
  }
  // Control pieces in the text are special tokens; skipped on request when decoding.
  const Ids ids = encode(tok, "the cat</s>", false);
  EXPECT_EQ(ids.back(), 2);
  EXPECT_EQ(decode(tok, ids, true), "the cat");
  expect_error([&] { decode(tok, {100000}); }, {"unknown token id 100000"});
  expect_error([&] { load_tokenizer((fixture_dir() / "no_such.model").string()); }, {"no_such.model"});
}

TEST(TokenizerBatch, PaddingTruncationAndMasks) {
  const Tokenizer tok = load_tokenizer((fixture_dir() / "tiny_bpe_tokenizer.json").string());
  const std::vector<std::string> texts = {"the lower tower", "a", ""};
  const Ids a = encode(tok, texts[0]), b = encode(tok, texts[1]), c = encode(tok, texts[2]);
  ASSERT_EQ(c, (Ids{0, 2}));
  BatchOptions o;  // right padding to the longest with the tokenizer's <pad> (1)
  BatchEncoding enc = encode_batch(tok, texts, o);
  ASSERT_EQ(enc.input_ids.shape(), (Shape{3, int64_t(a.size())}));
  EXPECT_EQ(enc.input_ids.dtype(), DType::I64);
  std::vector<double> row1(a.size(), 1), mask1(a.size(), 0);
  for (size_t j = 0; j < b.size(); ++j) {
    row1[j] = b[j];
    mask1[j] = 1;
  }
  const auto v = to_vector(enc.input_ids), m = to_vector(enc.attention_mask);
  EXPECT_EQ(std::vector<double>(v.begin() + a.size(), v.begin() + 2 * a.size()), row1);
  EXPECT_EQ(std::vector<double>(m.begin() + a.size(), m.begin() + 2 * a.size()), mask1);
  EXPECT_EQ(enc.ids[0], a);
  // Left padding, truncation to 3 keeps <s>, the first token and </s>.
  o.padding_side = BatchOptions::Side::Left;
  o.max_length = 3;
  enc = encode_batch(tok, texts, o);
  EXPECT_EQ(enc.ids[0], (Ids{0, a[1], 2}));
  EXPECT_TRUE(test::values_are(enc.input_ids, {0, double(a[1]), 2, 0, double(b[1]), 2, 1, 0, 2}, 0));
  EXPECT_TRUE(test::values_are(enc.attention_mask, {1, 1, 1, 1, 1, 1, 0, 1, 1}, 0));
  // Left truncation keeps the end of the text.
  o.truncation_side = BatchOptions::Side::Left;
  enc = encode_batch(tok, texts, o);
  EXPECT_EQ(enc.ids[0], (Ids{0, a[a.size() - 2], 2}));
  // Pad to max_length with a given pad id, no special tokens.
  BatchOptions p;
  p.add_special_tokens = false;
  p.max_length = 6;
  p.pad_to_max_length = true;
  p.pad_id = 7;
  enc = encode_batch(tok, {"a"}, p);
  EXPECT_TRUE(test::values_are(enc.input_ids, {double(b[1]), 7, 7, 7, 7, 7}, 0));
  EXPECT_TRUE(test::values_are(enc.attention_mask, {1, 0, 0, 0, 0, 0}, 0));
  // Already-encoded targets.
  BatchOptions q;
  q.pad_id = 0;
  q.max_length = 2;
  enc = pad_batch({{5, 6, 7}, {9}}, q);
  EXPECT_TRUE(test::values_are(enc.input_ids, {5, 6, 9, 0}, 0));
  EXPECT_TRUE(test::values_are(enc.attention_mask, {1, 1, 1, 0}, 0));
  // A tokenizer without a pad token needs an explicit pad id once padding is needed.
  Tokenizer no_pad = tok;
  no_pad.pad_id = -1;
  expect_error([&] { encode_batch(no_pad, texts); }, {"no pad id"});
  EXPECT_NO_THROW(encode_batch(no_pad, {"a", "a"}));
}

TEST(TokenizerAddedTokens, IdsAndMatching) {
  Tokenizer tok = load_tokenizer((fixture_dir() / "tiny_bpe_tokenizer.json").string());
  const int64_t base = vocab_size(tok);
  EXPECT_EQ(add_tokens(tok, {"<vis_extra_id_1>", "<vis_extra_id_0>", "low"}, /*special=*/true), 3);
  EXPECT_EQ(token_to_id(tok, "<vis_extra_id_1>"), base);      // new ids after the vocabulary
  EXPECT_EQ(token_to_id(tok, "<vis_extra_id_0>"), base + 1);
  const int32_t low = token_to_id(tok, "low");  // already a model token: keeps its id
  EXPECT_LT(low, base);
  EXPECT_EQ(add_tokens(tok, {"<vis_extra_id_0>"}, true), 0);  // no duplicates
  EXPECT_EQ(vocab_size(tok), base + 2);
  const Ids ids = encode(tok, "a<vis_extra_id_0>the<vis_extra_id_1>", false);
  EXPECT_EQ(ids[1], base + 1);
  EXPECT_EQ(ids.back(), base);
  EXPECT_EQ(decode(tok, ids, false), "a<vis_extra_id_0>the<vis_extra_id_1>");
  EXPECT_EQ(decode(tok, ids, true), "athe");
  // Leftmost-longest: "<vis_extra_id_1>" is not cut as a shorter token.
  add_tokens(tok, {"<vis"}, true);
  EXPECT_EQ(encode(tok, "<vis_extra_id_1>", false), (Ids{int32_t(base)}));
  // <mask> has lstrip: the space before it is swallowed.
  const int32_t mask = token_to_id(tok, "<mask>");
  EXPECT_EQ(encode(tok, "a <mask>", false), (Ids{encode(tok, "a", false)[0], mask}));
}

TEST(TokenizerText, Utf8AndByteLevelHelpers) {
  EXPECT_EQ(text::utf8_lossy("ok"), "ok");
  EXPECT_EQ(text::utf8_lossy("a\xE6\x97"), "a\xEF\xBF\xBD");             // truncated 3-byte sequence: one U+FFFD
  EXPECT_EQ(text::utf8_lossy("\xFF\xFE"), "\xEF\xBF\xBD\xEF\xBF\xBD");    // two invalid bytes
  EXPECT_EQ(text::utf8_lossy("\xE6\x97" "a"), "\xEF\xBF\xBD" "a");
  EXPECT_EQ(text::find_invalid_utf8("abc\xC3\xA9"), std::string_view::npos);
  EXPECT_EQ(text::find_invalid_utf8("ab\xC3"), 2u);
  EXPECT_EQ(byte_to_unicode(' '), "\u0120");
  EXPECT_EQ(byte_to_unicode('\n'), "\u010A");
  EXPECT_EQ(byte_to_unicode(0), "\u0100");
  EXPECT_EQ(byte_to_unicode('A'), "A");
  EXPECT_EQ(byte_to_unicode(0xAD), "\u0143");  // soft hyphen is not printable: mapped past U+0100
  for (int b = 0; b < 256; ++b) {
    size_t len;
    EXPECT_EQ(unicode_to_byte(text::decode_utf8(byte_to_unicode(uint8_t(b)), 0, &len)), b);
  }
  // GPT-2 pre-tokenizer splits.
  const auto parts = gpt2_split("I'll  go\there 42x!! ");
  std::vector<std::string> s(parts.begin(), parts.end());
  EXPECT_EQ(s, (std::vector<std::string>{"I", "'ll", " ", " go", "\t", "here", " 42", "x", "!!", " "}));
  const Tokenizer tok = load_tokenizer((fixture_dir() / "tiny_bpe_tokenizer.json").string());
  expect_error([&] { encode(tok, "bad \xFF byte"); }, {"not valid UTF-8", "byte 4"});
}

TEST(TokenizerErrors, TokenizerJsonProblemsNameTheFile) {
  const fs::path dir = test::temp_dir("tokenizer_json_errors");
  expect_error([&] { load_tokenizer((dir / "absent.json").string()); }, {"absent.json", "cannot open"});
  write_file(dir / "broken.json", "{\"model\": ");
  expect_error([&] { load_tokenizer((dir / "broken.json").string()); }, {"broken.json", "invalid JSON"});
  write_file(dir / "wordpiece.json", R"({"model": {"type": "WordPiece", "vocab": {"a": 0}}})");
  expect_error([&] { load_tokenizer((dir / "wordpiece.json").string()); }, {"wordpiece.json", "WordPiece", "not supported"});
  write_file(dir / "nfkc.json",
             R"({"normalizer": {"type": "NFKC"}, "model": {"type": "Unigram", "unk_id": 0, "vocab": [["<unk>", 0.0]]}})");
  expect_error([&] { load_tokenizer((dir / "nfkc.json").string()); }, {"nfkc.json", "normalizer", "NFKC"});
  write_file(dir / "nomodel.json", R"({"version": "1.0"})");
  expect_error([&] { load_tokenizer((dir / "nomodel.json").string()); }, {"nomodel.json", "model"});
  fs::remove_all(dir);
}

// ---- real vocabularies (assets) --------------------------------------------------------------------------

TEST(TokenizerGpt2, MatchesHuggingFaceOnTheCorpus) {
  SKIP_WITHOUT_TOKENIZER_ASSETS();
  const std::string d = tokenizer_assets() + "/gpt2/";
  const Tokenizer tok = load_gpt2_tokenizer(d + "encoder.json", d + "vocab.bpe");
  EXPECT_EQ(vocab_size(tok), 50257);
  EXPECT_EQ(token_to_id(tok, "\u0120the"), 262);
  EXPECT_EQ(token_to_id(tok, "Hello"), 15496);
  EXPECT_EQ(token_to_id(tok, "<|endoftext|>"), 50256);
  const json& ref = reference();
  const json& sec = ref["gpt2"];
  expect_section_matches(tok, sec, ref["corpus"], "gpt2");
  for (const auto& c : sec["decode_ids"]) {
    EXPECT_EQ(decode(tok, ids_of(c["ids"]), false), c["text"].get<std::string>()) << c["ids"].dump();
    EXPECT_EQ(decode(tok, ids_of(c["ids"]), true), c["text_skip"].get<std::string>()) << c["ids"].dump();
  }
  for (size_t i = 0; i < ref["random_texts"].size(); ++i)
    EXPECT_EQ(encode(tok, ref["random_texts"][i].get<std::string>()), ids_of(sec["random_ids"][i]))
        << "random text " << i << ": " << ref["random_texts"][i].dump();
  // Round trip: byte-level BPE decodes back to the exact text.
  for (const auto& t : ref["corpus"]) EXPECT_EQ(decode(tok, encode(tok, t.get<std::string>())), t.get<std::string>());
  for (const auto& t : ref["random_texts"]) EXPECT_EQ(decode(tok, encode(tok, t.get<std::string>())), t.get<std::string>());
  Tokenizer added = tok;
  add_tokens(added, sec["added"]["special"].get<std::vector<std::string>>(), true);
  for (const auto& [t, id] : sec["added"]["ids"].items()) EXPECT_EQ(token_to_id(added, t), id.get<int32_t>()) << t;
  for (size_t i = 0; i < sec["added"]["texts"].size(); ++i)
    EXPECT_EQ(encode(added, sec["added"]["texts"][i].get<std::string>()), ids_of(sec["added"]["text_ids"][i]));
  expect_batch_matches(tok, sec["batch"], "gpt2 batch");
  expect_error([&] { decode(tok, {15496, 50257}); }, {"unknown token id 50257", "50257"});
}

TEST(TokenizerT5, MatchesHuggingFaceOnTheCorpus) {
  SKIP_WITHOUT_TOKENIZER_ASSETS();
  const Tokenizer tok = load_tokenizer(tokenizer_assets() + "/t5/tokenizer.json");
  ASSERT_EQ(tok.model, TokenizerModel::Unigram);
  EXPECT_EQ(vocab_size(tok), 32100);
  EXPECT_EQ(tok.pad_id, 0);
  EXPECT_EQ(tok.suffix_ids, (Ids{1}));
  EXPECT_EQ(token_to_id(tok, "<extra_id_0>"), 32099);
  const json& ref = reference();
  const json& sec = ref["t5"];
  for (size_t i = 0; i < ref["corpus"].size(); ++i)
    EXPECT_EQ(normalize_text(tok, ref["corpus"][i].get<std::string>()), sec["normalized"][i].get<std::string>())
        << "normalizer on text " << i << ": " << ref["corpus"][i].dump();
  expect_section_matches(tok, sec, ref["corpus"], "t5");
  for (const auto& c : sec["decode_ids"]) {
    EXPECT_EQ(decode(tok, ids_of(c["ids"]), false), c["text"].get<std::string>()) << c["ids"].dump();
    EXPECT_EQ(decode(tok, ids_of(c["ids"]), true), c["text_skip"].get<std::string>()) << c["ids"].dump();
  }
  for (size_t i = 0; i < ref["random_texts"].size(); ++i) {
    const Ids ids = encode(tok, ref["random_texts"][i].get<std::string>());
    EXPECT_EQ(ids, ids_of(sec["random_ids"][i])) << "random text " << i << ": " << ref["random_texts"][i].dump();
    EXPECT_EQ(decode(tok, ids), sec["random_decode"][i].get<std::string>()) << "random text " << i;
  }
  Tokenizer added = tok;
  add_tokens(added, sec["added"]["special"].get<std::vector<std::string>>(), true);
  add_tokens(added, sec["added"]["plain"].get<std::vector<std::string>>(), false);
  for (const auto& [t, id] : sec["added"]["ids"].items()) EXPECT_EQ(token_to_id(added, t), id.get<int32_t>()) << t;
  for (size_t i = 0; i < sec["added"]["texts"].size(); ++i) {
    const std::string text = sec["added"]["texts"][i];
    EXPECT_EQ(encode(added, text), ids_of(sec["added"]["text_ids"][i])) << text;
    EXPECT_EQ(decode(added, encode(added, text), true), sec["added"]["decode_skip"][i].get<std::string>()) << text;
  }
  expect_added_variants_match(tok, sec["added_variants"], "t5 added tokens");
  for (const auto& b : sec["batches"]) expect_batch_matches(tok, b, "t5 batch");
  expect_error([&] { decode(tok, {8, 40000}); }, {"unknown token id 40000", "32100"});
}

}  // namespace
}  // namespace vlp
