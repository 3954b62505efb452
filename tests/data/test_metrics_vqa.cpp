// VQA, GQA and NLVR2 metrics: the worked examples of data.md 6.1-6.4 and the fixtures of
// tools/reference/make_metric_fixtures.py (a re-implementation of the official VQA evaluation, checked
// against the official code when the fixtures were made).
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <fstream>

#include "data/datasets.h"
#include "data/metrics.h"
#include "runtime/error.h"

namespace vlp::data {
namespace {

using nlohmann::json;

json load_fixture(const std::string& name) {
  std::ifstream in(std::string(VLP_SOURCE_DIR) + "/tests/fixtures/data/metrics/" + name);
  EXPECT_TRUE(in.good()) << "missing fixture " << name;
  return json::parse(in);
}

std::vector<std::string> repeat(const std::vector<std::pair<std::string, int>>& parts) {
  std::vector<std::string> out;
  for (const auto& [s, n] : parts) out.insert(out.end(), size_t(n), s);
  return out;
}

TEST(VqaMetric, WorkedExampleThreeIsPointNine) {
  auto answers = repeat({{"2", 4}, {"3", 3}, {"4", 2}, {"1", 1}});
  EXPECT_EQ(vqa_process_punctuation("Three."), "Three");
  EXPECT_EQ(vqa_process_digit_article("Three"), "3");
  EXPECT_NEAR(vqa_accuracy("Three.", answers, VqaVariant::legacy), 0.9, 1e-12);
  EXPECT_NEAR(vqa_accuracy("Three.", answers, VqaVariant::official), 0.9, 1e-12);
}

TEST(VqaMetric, MatchCountsGiveSoftScores) {
  const double expected[] = {0.0, 0.3, 0.6, 0.9, 1.0, 1.0};
  for (int m = 0; m <= 5; ++m) {
    auto answers = repeat({{"cat", m}, {"dog", 10 - m}});
    EXPECT_NEAR(vqa_accuracy("cat", answers, VqaVariant::official), expected[m], 1e-12) << m << " matches";
    EXPECT_NEAR(vqa_accuracy("cat", answers, VqaVariant::legacy), expected[m], 1e-12) << m << " matches";
  }
}

TEST(VqaMetric, AllIdenticalAnswersDistinguishTheVariants) {
  auto answers = repeat({{"2", 10}});
  EXPECT_EQ(vqa_accuracy("two", answers, VqaVariant::official), 0.0);
  EXPECT_EQ(vqa_accuracy("two", answers, VqaVariant::legacy), 1.0);
  EXPECT_STREQ(vqa_variant_name(VqaVariant::legacy), "legacy");
}

TEST(VqaMetric, NormalisationExamplesOfTheSpec) {
  auto norm = [](const std::string& s) { return vqa_process_digit_article(vqa_process_punctuation(s)); };
  EXPECT_EQ(norm("1,000"), "1000");
  EXPECT_EQ(norm("black/white"), "black white");
  EXPECT_EQ(norm("yes, it is"), "yes it is");
  EXPECT_EQ(norm("The dog's bowl"), "dog's bowl");
  EXPECT_EQ(norm("dont know"), "don't know");
  EXPECT_EQ(norm("2.5"), "2.5");
  EXPECT_EQ(vqa_normalize_answer("1,2,3 go"), "123 go");
  // At most 32 periods are removed.
  EXPECT_EQ(vqa_process_punctuation(std::string(40, '.')), std::string(8, '.'));
}

TEST(VqaMetric, ContractionsTableIsTheOfficialOne) {
  const auto& table = vqa_contractions();
  ASSERT_EQ(table.size(), 120u);
  std::map<std::string, std::string> m(table.begin(), table.end());
  EXPECT_EQ(m.size(), 120u) << "duplicate keys";
  EXPECT_EQ(m.at("dont"), "don't");
  EXPECT_EQ(m.at("isnt"), "isn't");
  EXPECT_EQ(m.at("whats"), "what's");
  EXPECT_EQ(m.at("somebody'd"), "somebodyd");
  EXPECT_EQ(m.at("Im"), "I'm");
  EXPECT_EQ(m.at("twas"), "'twas");
  EXPECT_EQ(m.at("yall'd've"), "y'all'd've");
  // Keys with capitals never match: words are lower-cased first.
  EXPECT_EQ(vqa_process_digit_article("Im"), "im");
}

TEST(VqaMetric, FixtureNormalisation) {
  json fx = load_fixture("vqa_eval.json");
  ASSERT_GT(fx["normalisation"].size(), 30u);
  for (const auto& c : fx["normalisation"]) {
    std::string t = c["text"];
    EXPECT_EQ(vqa_process_punctuation(t), c["punctuation"].get<std::string>()) << "text: " << t;
    EXPECT_EQ(vqa_process_digit_article(t), c["digit_article"].get<std::string>()) << "text: " << t;
    EXPECT_EQ(vqa_normalize_answer(t), c["answer_key"].get<std::string>()) << "text: " << t;
  }
}

TEST(VqaMetric, FixtureAccuracyBothVariants) {
  json fx = load_fixture("vqa_eval.json");
  ASSERT_GT(fx["accuracy"].size(), 50u);
  int differ = 0;
  for (const auto& c : fx["accuracy"]) {
    auto answers = c["answers"].get<std::vector<std::string>>();
    std::string pred = c["prediction"];
    double legacy = vqa_accuracy(pred, answers, VqaVariant::legacy);
    double official = vqa_accuracy(pred, answers, VqaVariant::official);
    EXPECT_NEAR(legacy, c["legacy"].get<double>(), 1e-12) << c.dump();
    EXPECT_NEAR(official, c["official"].get<double>(), 1e-12) << c.dump();
    differ += std::abs(legacy - official) > 1e-9;
  }
  EXPECT_GT(differ, 5) << "the fixture should exercise the differences between the variants";
}

std::vector<VqaExample> three_questions() {
  std::vector<VqaExample> ex(3);
  ex[0].question_id = 1, ex[0].answers = repeat({{"yes", 10}}), ex[0].answer_type = "yes/no", ex[0].question_type = "is the";
  ex[1].question_id = 2, ex[1].answers = repeat({{"2", 2}, {"3", 8}}), ex[1].answer_type = "number", ex[1].question_type = "how many";
  ex[2].question_id = 3, ex[2].answers = repeat({{"red", 3}, {"blue", 7}}), ex[2].answer_type = "other",
  ex[2].question_type = "what color";
  for (auto& e : ex) e.labels = vqa_soft_labels(e.answers);
  return ex;
}

TEST(VqaMetric, CorpusAccuracyAndPerTypeMeans) {
  auto ex = three_questions();
  std::unordered_map<int64_t, std::string> pred = {{1, "yes"}, {2, "2"}, {3, "red"}};
  VqaAccuracy acc = vqa_official_accuracy(ex, pred, VqaVariant::official);
  EXPECT_EQ(acc.count, 3);
  EXPECT_NEAR(acc.overall, (1.0 + 0.6 + 0.9) / 3, 1e-12);
  EXPECT_NEAR(acc.per_answer_type.at("number"), 0.6, 1e-12);
  EXPECT_NEAR(acc.per_question_type.at("what color"), 0.9, 1e-12);
  EXPECT_NEAR(acc.per_question.at(2), 0.6, 1e-12);
  EXPECT_DOUBLE_EQ(round2(100 * acc.overall), 83.33);
  // The soft score agrees here (in-vocabulary answers, no normalisation differences).
  EXPECT_NEAR(vqa_soft_score(ex, pred), acc.overall, 1e-12);
  EXPECT_EQ(vqa_soft_score("blue", ex[2].labels), 1.0);
  EXPECT_EQ(vqa_soft_score("green", ex[2].labels), 0.0);
}

TEST(VqaMetric, ResultsMustMatchTheQuestions) {
  auto ex = three_questions();
  std::unordered_map<int64_t, std::string> missing = {{1, "yes"}, {3, "red"}};
  try {
    vqa_official_accuracy(ex, missing, VqaVariant::legacy);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("question_id 2"), std::string::npos) << e.what();
  }
  std::unordered_map<int64_t, std::string> extra = {{1, "yes"}, {2, "2"}, {3, "red"}, {99, "x"}};
  EXPECT_THROW(vqa_official_accuracy(ex, extra, VqaVariant::legacy), Error);
}

TEST(VqaMetric, Round2FollowsPython) {
  EXPECT_DOUBLE_EQ(round2(83.333333), 83.33);
  EXPECT_DOUBLE_EQ(round2(0.125), 0.12);   // exact tie: to even
  EXPECT_DOUBLE_EQ(round2(2.675), 2.67);   // 2.675 is 2.67499999... in binary
  EXPECT_DOUBLE_EQ(round2(66.666666), 66.67);
}

TEST(GqaMetric, ExactMatchAfterStrip) {
  std::vector<GqaExample> ex(3);
  ex[0].question_id = "a", ex[0].answer = "red";
  ex[1].question_id = "b", ex[1].answer = "left";
  ex[2].question_id = "c", ex[2].answer = "no";
  std::unordered_map<std::string, std::string> pred = {{"a", " red\n"}, {"b", "Left"}, {"c", "no"}};
  EXPECT_NEAR(gqa_accuracy(ex, pred), 2.0 / 3.0, 1e-12);
  pred.erase("c");
  EXPECT_THROW(gqa_accuracy(ex, pred), Error);
}

TEST(Nlvr2Metric, AccuracyAndConsistency) {
  EXPECT_EQ(nlvr2_group_key("dev-850-0-0"), "dev-850--0");
  EXPECT_EQ(nlvr2_group_key("test1-12-3-2"), "test1-12--2");
  EXPECT_THROW(nlvr2_group_key("dev-850-0"), Error);
  auto make = [](const std::string& id, int label) {
    Nlvr2Example e;
    e.identifier = id;
    e.label = label;
    return e;
  };
  // Group dev-1--0 has pairs 0..3 (one wrong), dev-1--1 two pairs (both right), dev-2--0 one (right).
  std::vector<Nlvr2Example> ex = {make("dev-1-0-0", 1), make("dev-1-1-0", 0), make("dev-1-2-0", 1), make("dev-1-3-0", 0),
                                  make("dev-1-0-1", 1), make("dev-1-1-1", 1), make("dev-2-0-0", 0)};
  std::unordered_map<std::string, bool> pred = {{"dev-1-0-0", true}, {"dev-1-1-0", false}, {"dev-1-2-0", false},
                                                {"dev-1-3-0", false}, {"dev-1-0-1", true},  {"dev-1-1-1", true},
                                                {"dev-2-0-0", false}};
  Nlvr2Scores s = nlvr2_scores(ex, pred);
  EXPECT_EQ(s.examples, 7);
  EXPECT_EQ(s.groups, 3);
  EXPECT_NEAR(s.accuracy, 6.0 / 7.0, 1e-12);
  EXPECT_NEAR(s.consistency, 2.0 / 3.0, 1e-12);
}

}  // namespace
}  // namespace vlp::data
