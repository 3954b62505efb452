// Question-answering metrics: official VQA accuracy (both variants), soft VQA score, GQA accuracy,
// NLVR2 accuracy and consistency (data.md 6.1-6.4).
//
// The official scorer was written for Python 2 byte strings, so everything here is byte-wise ASCII:
// lower-casing, whitespace and digits are the ASCII ones, which is what that code did.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <set>
#include <unordered_set>

#include "data/datasets.h"
#include "data/metrics.h"
#include "runtime/error.h"

namespace vlp::data {

namespace {

bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

// The 21 characters processPunctuation acts on (apostrophe, colon and period are not among them).
constexpr char kPunctuation[] = {';', '/', '[', ']', '"', '{', '}', '(', ')', '=', '+',
                                 '\\', '_', '-', '>', '<', '@', '`', ',', '?', '!'};
// The reference passes re.UNICODE (= 32) where re.sub expects its count: at most 32 periods go.
constexpr int kMaxPeriodsStripped = 32;

bool has_digit_comma_digit(const std::string& t) {
  for (size_t i = 1; i + 1 < t.size(); ++i)
    if (t[i] == ',' && is_digit(t[i - 1]) && is_digit(t[i + 1])) return true;
  return false;
}

std::string strip(const std::string& s) {
  size_t b = 0, e = s.size();
  while (b < e && is_space(s[b])) ++b;
  while (e > b && is_space(s[e - 1])) --e;
  return s.substr(b, e - b);
}

// "\n" and "\t" become spaces, then surrounding whitespace goes.
std::string clean_whitespace(std::string s) {
  for (char& c : s)
    if (c == '\n' || c == '\t') c = ' ';
  return strip(s);
}

const std::unordered_map<std::string, std::string>& contraction_map() {
  static const std::unordered_map<std::string, std::string> map(vqa_contractions().begin(), vqa_contractions().end());
  return map;
}

double mean(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return v.empty() ? 0.0 : s / double(v.size());
}

}  // namespace

std::string vqa_process_punctuation(const std::string& text) {
  bool digit_comma_digit = has_digit_comma_digit(text);
  std::string out = text;
  for (char p : kPunctuation) {
    bool next_to_space = text.find(std::string{p, ' '}) != std::string::npos ||
                         text.find(std::string{' ', p}) != std::string::npos;
    bool remove = next_to_space || digit_comma_digit;
    std::string replaced;
    replaced.reserve(out.size());
    for (char c : out) {
      if (c != p) replaced += c;
      else if (!remove) replaced += ' ';
    }
    out.swap(replaced);
  }
  // Periods not followed by a digit (looking at the string before any period is removed).
  std::string result;
  result.reserve(out.size());
  int stripped = 0;
  for (size_t i = 0; i < out.size(); ++i) {
    bool followed_by_digit = i + 1 < out.size() && is_digit(out[i + 1]);
    if (out[i] == '.' && !followed_by_digit && stripped < kMaxPeriodsStripped) {
      ++stripped;
      continue;
    }
    result += out[i];
  }
  return result;
}

std::string vqa_process_digit_article(const std::string& text) {
  static const std::unordered_map<std::string, std::string> number_words = {
      {"none", "0"}, {"zero", "0"}, {"one", "1"}, {"two", "2"}, {"three", "3"}, {"four", "4"},
      {"five", "5"}, {"six", "6"},  {"seven", "7"}, {"eight", "8"}, {"nine", "9"}, {"ten", "10"}};
  std::vector<std::string> words;
  std::string word;
  auto flush = [&] {
    if (word.empty()) return;
    auto n = number_words.find(word);
    if (n != number_words.end()) word = n->second;
    if (word != "a" && word != "an" && word != "the") words.push_back(word);
    word.clear();
  };
  for (char c : text) {
    if (is_space(c)) flush();
    else word += (c >= 'A' && c <= 'Z') ? char(c - 'A' + 'a') : c;
  }
  flush();
  const auto& contractions = contraction_map();
  std::string out;
  for (size_t i = 0; i < words.size(); ++i) {
    auto it = contractions.find(words[i]);
    if (i) out += ' ';
    out += it != contractions.end() ? it->second : words[i];
  }
  return out;
}

std::string vqa_normalize_answer(const std::string& answer) {
  std::string s = vqa_process_digit_article(vqa_process_punctuation(answer));
  s.erase(std::remove(s.begin(), s.end(), ','), s.end());
  return s;
}

const char* vqa_variant_name(VqaVariant v) { return v == VqaVariant::legacy ? "legacy" : "official"; }

double vqa_accuracy(const std::string& prediction, const std::vector<std::string>& answers, VqaVariant variant) {
  VLP_CHECK(!answers.empty(), "vqa_accuracy: no ground-truth answers for prediction '", prediction, "'");
  std::vector<std::string> gt = answers;
  std::string pred;
  if (variant == VqaVariant::legacy) {
    pred = vqa_process_digit_article(vqa_process_punctuation(clean_whitespace(prediction)));
    if (std::set<std::string>(gt.begin(), gt.end()).size() > 1)
      for (auto& a : gt) a = vqa_process_punctuation(a);
  } else {
    for (auto& a : gt) a = clean_whitespace(a);
    pred = clean_whitespace(prediction);
    if (std::set<std::string>(gt.begin(), gt.end()).size() > 1) {
      for (auto& a : gt) a = vqa_process_digit_article(vqa_process_punctuation(a));
      pred = vqa_process_digit_article(vqa_process_punctuation(pred));
    }
  }
  int64_t matches = 0;
  for (const auto& a : gt) matches += a == pred;
  double sum = 0;
  for (const auto& a : gt) {
    double others = double(matches - (a == pred ? 1 : 0));
    sum += std::min(1.0, others / 3.0);
  }
  return sum / double(gt.size());
}

VqaAccuracy vqa_official_accuracy(const std::vector<VqaExample>& examples,
                                  const std::unordered_map<int64_t, std::string>& predictions, VqaVariant variant) {
  VqaAccuracy result;
  std::unordered_set<int64_t> seen;
  std::map<std::string, std::vector<double>> by_answer_type, by_question_type;
  std::vector<double> all;
  for (const auto& ex : examples) {
    auto it = predictions.find(ex.question_id);
    VLP_CHECK(it != predictions.end(), "VQA accuracy: no prediction for question_id ", ex.question_id,
              " (the results must answer every question exactly once)");
    VLP_CHECK(!ex.answers.empty(), "VQA accuracy: question_id ", ex.question_id,
              " has no human answers (load the official annotations to score official accuracy)");
    VLP_CHECK(seen.insert(ex.question_id).second, "VQA accuracy: question_id ", ex.question_id, " appears twice");
    double acc = vqa_accuracy(it->second, ex.answers, variant);
    result.per_question[ex.question_id] = acc;
    all.push_back(acc);
    by_answer_type[ex.answer_type].push_back(acc);
    by_question_type[ex.question_type].push_back(acc);
  }
  for (const auto& [qid, answer] : predictions)
    VLP_CHECK(seen.count(qid), "VQA accuracy: prediction for question_id ", qid, " which is not among the ",
              examples.size(), " evaluated questions");
  result.overall = mean(all);
  result.count = int64_t(all.size());
  for (const auto& [k, v] : by_answer_type) result.per_answer_type[k] = mean(v);
  for (const auto& [k, v] : by_question_type) result.per_question_type[k] = mean(v);
  return result;
}

double vqa_soft_score(const std::string& prediction, const std::vector<Label>& labels) {
  for (const auto& l : labels)
    if (l.answer == prediction) return l.score;
  return 0.0;
}

double vqa_soft_score(const std::vector<VqaExample>& examples, const std::unordered_map<int64_t, std::string>& predictions) {
  std::vector<double> scores;
  for (const auto& ex : examples) {
    auto it = predictions.find(ex.question_id);
    VLP_CHECK(it != predictions.end(), "VQA soft score: no prediction for question_id ", ex.question_id);
    scores.push_back(vqa_soft_score(it->second, ex.labels));
  }
  return mean(scores);
}

double gqa_accuracy(const std::vector<GqaExample>& examples, const std::unordered_map<std::string, std::string>& predictions) {
  VLP_CHECK(!examples.empty(), "GQA accuracy: no examples");
  int64_t correct = 0;
  for (const auto& ex : examples) {
    auto it = predictions.find(ex.question_id);
    VLP_CHECK(it != predictions.end(), "GQA accuracy: no prediction for question ", ex.question_id);
    VLP_CHECK(!ex.answer.empty(), "GQA accuracy: question ", ex.question_id, " has no answer (withheld split?)");
    correct += strip(it->second) == ex.answer;
  }
  return double(correct) / double(examples.size());
}

std::string nlvr2_group_key(const std::string& identifier) {
  std::vector<std::string> parts;
  size_t start = 0;
  for (;;) {
    size_t dash = identifier.find('-', start);
    parts.push_back(identifier.substr(start, dash - start));
    if (dash == std::string::npos) break;
    start = dash + 1;
  }
  VLP_CHECK(parts.size() == 4, "NLVR2 identifier '", identifier,
            "' is not of the form {split}-{set_id}-{pair_id}-{sentence_id}");
  return parts[0] + "-" + parts[1] + "--" + parts[3];
}

Nlvr2Scores nlvr2_scores(const std::vector<Nlvr2Example>& examples, const std::unordered_map<std::string, bool>& predictions) {
  VLP_CHECK(!examples.empty(), "NLVR2 scores: no examples");
  Nlvr2Scores s;
  std::map<std::string, bool> group_all_correct;
  int64_t correct = 0;
  for (const auto& ex : examples) {
    auto it = predictions.find(ex.identifier);
    VLP_CHECK(it != predictions.end(), "NLVR2 scores: no prediction for ", ex.identifier);
    VLP_CHECK(ex.label == 0 || ex.label == 1, "NLVR2 scores: example ", ex.identifier, " has no label");
    bool ok = it->second == (ex.label == 1);
    correct += ok;
    auto [g, inserted] = group_all_correct.emplace(nlvr2_group_key(ex.identifier), ok);
    if (!inserted) g->second = g->second && ok;
  }
  int64_t consistent = 0;
  for (const auto& [key, ok] : group_all_correct) consistent += ok;
  s.examples = int64_t(examples.size());
  s.groups = int64_t(group_all_correct.size());
  s.accuracy = double(correct) / double(s.examples);
  s.consistency = double(consistent) / double(s.groups);
  return s;
}

double round2(double x) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.2f", x);
  return std::strtod(buf, nullptr);
}

}  // namespace vlp::data
