// Caption metrics and the PTB tokenizer: worked numbers of data.md 6.5-6.8 and the pycocoevalcap
// fixtures of tools/reference/make_metric_fixtures.py (20 images x 5 references, three candidate sets
// including edge cases), within 1e-6.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <fstream>

#include "data/datasets.h"
#include "data/metrics.h"
#include "data/ptb_tokenize.h"
#include "runtime/error.h"

namespace vlp::data {
namespace {

using nlohmann::json;

json load_fixture(const std::string& name) {
  std::ifstream in(std::string(VLP_SOURCE_DIR) + "/tests/fixtures/data/metrics/" + name);
  EXPECT_TRUE(in.good()) << "missing fixture " << name;
  return json::parse(in);
}

std::string words(int n, const std::string& stem) {
  std::string s;
  for (int i = 0; i < n; ++i) s += (i ? " " : "") + stem + std::to_string(i);
  return s;
}

TEST(Bleu, ClippedUnigramsAndBrevityPenalty) {
  // "the the the the" vs "the cat is on the mat": clipped matches min(4, 2) = 2, p1 = 2/4; c = 4 < r = 6.
  std::vector<CaptionItem> items = {{"the the the the", {"the cat is on the mat"}}};
  auto b = bleu_scores(items);
  double bp = std::exp(1.0 - 6.0 / 4.0);
  EXPECT_NEAR(b[0], 0.5 * bp, 1e-9);
  // No bigram matches: BLEU-2 collapses to ~0 (1e-15 smoothing).
  EXPECT_LT(b[1], 1e-6);
  // C / R = 9800 / 10000 = 49 / 50: BP = exp(1 - 50/49) = 0.9798.
  std::vector<CaptionItem> long_items = {{words(49, "w"), {words(50, "w")}}};
  EXPECT_NEAR(bleu_scores(long_items)[0], std::exp(1.0 - 50.0 / 49.0), 1e-9);
  EXPECT_NEAR(std::exp(1.0 - 50.0 / 49.0), 0.9798, 5e-5);
}

TEST(Bleu, ClosestReferenceLengthTiesToShorter) {
  // Candidate of 4 words, references of 3 and 5 words: the tie picks 3, so no brevity penalty.
  std::vector<CaptionItem> items = {{"a b c d", {"a b c", "a b c d e"}}};
  EXPECT_NEAR(bleu_scores(items)[0], 1.0, 1e-9);
  // References of 5 and 7: closest is 5 > 4, penalty exp(1 - 5/4).
  items = {{"a b c d", {"a b c d e", "a b c d e f g"}}};
  EXPECT_NEAR(bleu_scores(items)[0], std::exp(1.0 - 5.0 / 4.0), 1e-9);
}

TEST(RougeL, WorkedExample) {
  double f = rouge_l("a man riding a horse", {"a man is riding a brown horse"});
  double p = 1.0, r = 5.0 / 7.0, b2 = 1.44;
  EXPECT_NEAR(f, (1 + b2) * p * r / (r + b2 * p), 1e-12);
  EXPECT_NEAR(f, 0.8090, 5e-5);
  // Precision and recall are maximised separately over the references.
  double g = rouge_l("a b c", {"a b c d e f", "a x"});
  EXPECT_NEAR(g, (1 + b2) * 1.0 * 0.5 / (0.5 + b2 * 1.0), 1e-12);
  EXPECT_EQ(rouge_l("", {"a b"}), 0.0);
}

TEST(CiderD, IdfOfTheWorkedExample) {
  // N = 5000 images; "zebra" in the references of 50 (idf ln 100 = 4.6052), "xylophone" in none
  // (idf ln 5000 = 8.5172). Image 0: candidate "zebra xylophone", reference "zebra".
  std::vector<CaptionItem> items(5000);
  for (size_t i = 0; i < items.size(); ++i) items[i] = {"horse", {i < 50 ? "zebra" : "horse"}};
  items[0].candidate = "zebra xylophone";
  auto scores = cider_d_per_image(items);
  double idf_zebra = std::log(5000.0) - std::log(50.0), idf_xylo = std::log(5000.0);
  EXPECT_NEAR(idf_zebra, 4.6052, 5e-5);
  EXPECT_NEAR(idf_xylo, 8.5172, 5e-5);
  // Unigrams: numerator idf_z^2, norms sqrt(idf_z^2 + idf_x^2) and idf_z; higher orders: reference norm 0.
  // Lengths: 1 bigram vs 0.
  double sim1 = idf_zebra * idf_zebra / (std::sqrt(idf_zebra * idf_zebra + idf_xylo * idf_xylo) * idf_zebra);
  EXPECT_NEAR(scores[0], 10.0 / 4.0 * sim1 * std::exp(-1.0 / 72.0), 1e-9);
  // "horse" is in 4950 reference sets: idf ln(5000/4950) > 0, a perfect match scores 10/4.
  EXPECT_NEAR(scores[100], 2.5, 1e-9);
}

TEST(CiderD, LengthPenaltyOfTheWorkedExample) {
  // A 9-word candidate (8 bigrams) that is the prefix of a 12-word reference (11 bigrams); every n-gram
  // of image 0 has df 1 of N = 2, so all idf are ln 2 and cancel in the cosines.
  std::vector<CaptionItem> items = {{words(9, "w"), {words(12, "w")}}, {"other words here", {"other words here"}}};
  auto scores = cider_d_per_image(items);
  double penalty = std::exp(-9.0 / 72.0);
  EXPECT_NEAR(penalty, 0.8825, 5e-5);
  double expected = 0;
  for (int n = 1; n <= 4; ++n) expected += std::sqrt(double(10 - n) / double(13 - n)) * penalty;
  EXPECT_NEAR(scores[0], 10.0 / 4.0 * expected, 1e-9);
}

TEST(CaptionMetrics, FixturesFromPycocoevalcap) {
  json fx = load_fixture("captions.json");
  const auto& refs = fx["references_tokenized"];
  ASSERT_EQ(refs.size(), 20u);
  for (const auto& sys : fx["systems"]) {
    std::vector<CaptionItem> items;
    for (size_t i = 0; i < refs.size(); ++i)
      items.push_back({sys["candidates_tokenized"][i].get<std::string>(), refs[i].get<std::vector<std::string>>()});
    CaptionScores s = caption_scores(items);
    std::string name = sys["name"];
    for (int n = 0; n < 4; ++n) EXPECT_NEAR(s.bleu[size_t(n)], sys["bleu"][size_t(n)].get<double>(), 1e-6) << name << " BLEU-" << n + 1;
    EXPECT_NEAR(s.rouge_l, sys["rouge_l"].get<double>(), 1e-6) << name;
    EXPECT_NEAR(s.cider_d, sys["cider_d"].get<double>(), 1e-6) << name;
    for (size_t i = 0; i < refs.size(); ++i) {
      EXPECT_NEAR(s.rouge_l_per_image[i], sys["rouge_l_per_image"][i].get<double>(), 1e-6) << name << " image " << i;
      EXPECT_NEAR(s.cider_d_per_image[i], sys["cider_d_per_image"][i].get<double>(), 1e-6) << name << " image " << i;
    }
  }
}

TEST(CaptionMetrics, IdfDependsOnTheEvaluatedSet) {
  json fx = load_fixture("captions.json");
  const auto& sub = fx["cider_subset"];
  const json* good = nullptr;
  for (const auto& sys : fx["systems"])
    if (sys["name"] == sub["system"]) good = &sys;
  ASSERT_NE(good, nullptr);
  std::vector<CaptionItem> items;
  for (int i : sub["images"].get<std::vector<int>>())
    items.push_back({(*good)["candidates_tokenized"][size_t(i)].get<std::string>(),
                     fx["references_tokenized"][size_t(i)].get<std::vector<std::string>>()});
  double subset = caption_scores(items).cider_d;
  EXPECT_NEAR(subset, sub["cider_d"].get<double>(), 1e-6);
  EXPECT_GT(std::abs(subset - (*good)["cider_d"].get<double>()), 0.01);
}

TEST(CaptionMetrics, CocoImagesAndPredictionsInOneCall) {
  json fx = load_fixture("captions.json");
  const json& good = fx["systems"][0];
  std::vector<CocoImage> images(fx["references"].size());
  std::unordered_map<std::string, std::string> pred;
  for (size_t i = 0; i < images.size(); ++i) {
    images[i].image_id = "img" + std::to_string(i);
    images[i].captions = fx["references"][i].get<std::vector<std::string>>();
    pred[images[i].image_id] = good["candidates"][i];
  }
  CaptionScores s = coco_caption_scores(images, pred);
  EXPECT_NEAR(s.cider_d, good["cider_d"].get<double>(), 1e-6);
  EXPECT_NEAR(s.rouge_l, good["rouge_l"].get<double>(), 1e-6);
  pred.erase("img3");
  EXPECT_THROW(coco_caption_scores(images, pred), Error);
}

TEST(CaptionMetrics, BadInputIsAnError) {
  EXPECT_THROW(caption_scores({}), Error);
  EXPECT_THROW(caption_scores({{"a cat", {}}}), Error);
}

// ---- PTB tokenizer --------------------------------------------------------------------------------

TEST(PtbTokenize, CommonRules) {
  EXPECT_EQ(ptb_tokenize("A man's dog doesn't like it."), "a man 's dog does n't like it");
  EXPECT_EQ(ptb_tokenize("He can't, won't and cannot go"), "he ca n't wo n't and can not go");
  EXPECT_EQ(ptb_tokenize("A well-known T-shirt at 3:30 for 1,000 people..."), "a well-known t-shirt at 3:30 for 1,000 people");
  EXPECT_EQ(ptb_tokenize("A (small) dog"), "a -lrb- small -rrb- dog");  // kept: the filter is upper case
  EXPECT_EQ(ptb_tokenize("\"Hi,\" he said."), "hi he said");
  EXPECT_EQ(ptb_tokenize("Mr. Smith in the U.S. at 5 p.m."), "mr. smith in the u.s. at 5 p.m.");
  EXPECT_EQ(ptb_tokenize("two\nlines"), "two lines");
  EXPECT_EQ(ptb_tokenize(""), "");
  EXPECT_EQ(ptb_tokenize("..."), "");
  EXPECT_EQ(ptb_tokens("wow!!! what?!"), (std::vector<std::string>{"wow", "!!!", "what", "?!"}));
  EXPECT_TRUE(is_ptb_punctuation("--"));
  EXPECT_FALSE(is_ptb_punctuation("-lrb-"));
}

TEST(PtbTokenize, AgreesWithTheJavaTokenizerOnTheFixtures) {
  json fx = load_fixture("captions.json");
  std::vector<std::pair<std::string, std::string>> cases;
  for (size_t i = 0; i < fx["references"].size(); ++i)
    for (size_t k = 0; k < fx["references"][i].size(); ++k)
      cases.push_back({fx["references"][i][k], fx["references_tokenized"][i][k]});
  for (const auto& sys : fx["systems"])
    for (size_t i = 0; i < sys["candidates"].size(); ++i) cases.push_back({sys["candidates"][i], sys["candidates_tokenized"][i]});
  for (const auto& t : fx["tokenizer"]) cases.push_back({t["raw"], t["tokenized"]});
  ASSERT_GT(cases.size(), 170u);
  int mismatches = 0;
  for (const auto& [raw, java] : cases) {
    std::string ours = ptb_tokenize(raw);
    if (ours != java) {
      ++mismatches;
      ADD_FAILURE() << "raw:  " << raw << "\nJava: " << java << "\nours: " << ours;
    }
  }
  EXPECT_EQ(mismatches, 0);
}

TEST(PtbTokenize, RawScoresMatchTheJavaPipeline) {
  json fx = load_fixture("captions.json");
  for (const auto& sys : fx["systems"]) {
    std::vector<CaptionItem> raw;
    for (size_t i = 0; i < fx["references"].size(); ++i)
      raw.push_back({sys["candidates"][i].get<std::string>(), fx["references"][i].get<std::vector<std::string>>()});
    CaptionScores s = caption_scores_raw(raw);
    EXPECT_NEAR(s.cider_d, sys["cider_d"].get<double>(), 1e-6) << sys["name"];
    EXPECT_NEAR(s.bleu[3], sys["bleu"][3].get<double>(), 1e-6) << sys["name"];
  }
}

}  // namespace
}  // namespace vlp::data
