// Caption metrics as pycocoevalcap computes them (data.md 6.6-6.8): corpus BLEU-1..4 with the
// "closest" reference length, ROUGE-L (beta 1.2, precision and recall maximised separately over the
// references) and CIDEr-D (tf-idf n-gram cosine with clipping and a Gaussian length penalty, idf from
// the references of the evaluated images). Inputs are tokenised captions.
#include <algorithm>
#include <cmath>
#include <unordered_map>
#include <unordered_set>

#include "data/datasets.h"
#include "data/metrics.h"
#include "data/ptb_tokenize.h"
#include "runtime/error.h"

namespace vlp::data {

namespace {

constexpr int kCiderN = 4;
constexpr double kCiderSigma = 6.0;
constexpr double kRougeBeta = 1.2;

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

// Python's str.split(): runs of whitespace separate, no empty words.
std::vector<std::string> split_whitespace(const std::string& s) {
  std::vector<std::string> words;
  std::string w;
  for (char c : s) {
    if (is_space(c)) {
      if (!w.empty()) words.push_back(std::move(w));
      w.clear();
    } else {
      w += c;
    }
  }
  if (!w.empty()) words.push_back(std::move(w));
  return words;
}

// Python's str.split(" "): every single space separates, so empty words are possible ("" -> [""]).
std::vector<std::string> split_single_spaces(const std::string& s) {
  std::vector<std::string> words;
  size_t start = 0;
  for (;;) {
    size_t sp = s.find(' ', start);
    words.push_back(s.substr(start, sp - start));
    if (sp == std::string::npos) break;
    start = sp + 1;
  }
  return words;
}

// n-gram counts for n = 1..max_n; an n-gram is its words joined by single spaces (words hold no
// whitespace, so the key also fixes n).
using NgramCounts = std::unordered_map<std::string, int64_t>;
NgramCounts count_ngrams(const std::vector<std::string>& words, int max_n) {
  NgramCounts counts;
  for (int n = 1; n <= max_n; ++n)
    for (size_t i = 0; i + size_t(n) <= words.size(); ++i) {
      std::string key = words[i];
      for (int k = 1; k < n; ++k) key += ' ' + words[i + size_t(k)];
      ++counts[key];
    }
  return counts;
}
int ngram_order(const std::string& key) { return 1 + int(std::count(key.begin(), key.end(), ' ')); }

void check_items(const std::vector<CaptionItem>& items, const char* metric) {
  VLP_CHECK(!items.empty(), metric, ": no images to score");
  for (size_t i = 0; i < items.size(); ++i)
    VLP_CHECK(!items[i].references.empty(), metric, ": image ", i, " has no reference captions");
}

int64_t lcs_length(const std::vector<std::string>& a, const std::vector<std::string>& b) {
  std::vector<int64_t> prev(b.size() + 1, 0), cur(b.size() + 1, 0);
  for (size_t i = 1; i <= a.size(); ++i) {
    for (size_t j = 1; j <= b.size(); ++j)
      cur[j] = a[i - 1] == b[j - 1] ? prev[j - 1] + 1 : std::max(prev[j], cur[j - 1]);
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

// CIDEr-D's per-sentence view: tf-idf vector, its norm per order, and its length (number of bigrams).
struct TfIdf {
  std::unordered_map<std::string, double> vec;
  double norm[kCiderN] = {0, 0, 0, 0};
  int64_t length = 0;
};

TfIdf tf_idf(const NgramCounts& counts, const std::unordered_map<std::string, double>& doc_freq, double log_n) {
  TfIdf t;
  for (const auto& [gram, tf] : counts) {
    auto df = doc_freq.find(gram);
    double log_df = std::log(std::max(1.0, df == doc_freq.end() ? 0.0 : df->second));
    int n = ngram_order(gram) - 1;
    double v = double(tf) * (log_n - log_df);
    t.vec[gram] = v;
    t.norm[n] += v * v;
    if (n == 1) t.length += tf;
  }
  for (double& x : t.norm) x = std::sqrt(x);
  return t;
}

}  // namespace

std::vector<double> bleu_scores(const std::vector<CaptionItem>& items, int max_n) {
  check_items(items, "BLEU");
  VLP_CHECK(max_n >= 1, "BLEU: max_n must be positive, got ", max_n);
  std::vector<double> correct(size_t(max_n), 0.0), guess(size_t(max_n), 0.0);
  double test_len = 0, ref_len = 0;
  for (const auto& item : items) {
    std::unordered_map<std::string, int64_t> max_ref_counts;
    std::vector<int64_t> ref_lens;
    for (const auto& r : item.references) {
      auto words = split_whitespace(r);
      ref_lens.push_back(int64_t(words.size()));
      for (const auto& [g, c] : count_ngrams(words, max_n)) {
        int64_t& m = max_ref_counts[g];
        m = std::max(m, c);
      }
    }
    auto words = split_whitespace(item.candidate);
    int64_t c = int64_t(words.size());
    // Closest reference length, ties to the shorter one.
    int64_t best = ref_lens[0];
    for (int64_t l : ref_lens)
      if (std::llabs(l - c) < std::llabs(best - c) || (std::llabs(l - c) == std::llabs(best - c) && l < best)) best = l;
    test_len += double(c);
    ref_len += double(best);
    for (int k = 1; k <= max_n; ++k) guess[size_t(k - 1)] += double(std::max<int64_t>(0, c - k + 1));
    for (const auto& [g, count] : count_ngrams(words, max_n)) {
      auto m = max_ref_counts.find(g);
      if (m != max_ref_counts.end()) correct[size_t(ngram_order(g) - 1)] += double(std::min(count, m->second));
    }
  }
  const double tiny = 1e-15, small = 1e-9;
  std::vector<double> bleus;
  double product = 1.0;
  for (int k = 0; k < max_n; ++k) {
    product *= (correct[size_t(k)] + tiny) / (guess[size_t(k)] + small);
    bleus.push_back(std::pow(product, 1.0 / double(k + 1)));
  }
  double ratio = (test_len + tiny) / (ref_len + small);
  if (ratio < 1)
    for (double& b : bleus) b *= std::exp(1 - 1 / ratio);
  return bleus;
}

double rouge_l(const std::string& candidate, const std::vector<std::string>& references) {
  VLP_CHECK(!references.empty(), "ROUGE-L: no reference captions for candidate '", candidate, "'");
  auto c = split_single_spaces(candidate);
  double best_p = 0, best_r = 0;
  for (const auto& ref : references) {
    auto r = split_single_spaces(ref);
    double lcs = double(lcs_length(r, c));
    best_p = std::max(best_p, lcs / double(c.size()));
    best_r = std::max(best_r, lcs / double(r.size()));
  }
  if (best_p == 0 || best_r == 0) return 0.0;
  double b2 = kRougeBeta * kRougeBeta;
  return (1 + b2) * best_p * best_r / (best_r + b2 * best_p);
}

std::vector<double> cider_d_per_image(const std::vector<CaptionItem>& items) {
  check_items(items, "CIDEr-D");
  std::vector<NgramCounts> cand_counts;
  std::vector<std::vector<NgramCounts>> ref_counts;
  std::unordered_map<std::string, double> doc_freq;  // images whose references contain the n-gram
  for (const auto& item : items) {
    cand_counts.push_back(count_ngrams(split_whitespace(item.candidate), kCiderN));
    std::vector<NgramCounts> refs;
    std::unordered_set<std::string> in_this_image;
    for (const auto& r : item.references) {
      refs.push_back(count_ngrams(split_whitespace(r), kCiderN));
      for (const auto& [g, c] : refs.back()) in_this_image.insert(g);
    }
    for (const auto& g : in_this_image) doc_freq[g] += 1.0;
    ref_counts.push_back(std::move(refs));
  }
  double log_n = std::log(double(items.size()));
  std::vector<double> scores;
  for (size_t i = 0; i < items.size(); ++i) {
    TfIdf cand = tf_idf(cand_counts[i], doc_freq, log_n);
    double score[kCiderN] = {0, 0, 0, 0};
    for (const auto& rc : ref_counts[i]) {
      TfIdf ref = tf_idf(rc, doc_freq, log_n);
      double delta = double(cand.length - ref.length);
      double val[kCiderN] = {0, 0, 0, 0};
      for (const auto& [g, v] : cand.vec) {
        auto r = ref.vec.find(g);
        double vr = r == ref.vec.end() ? 0.0 : r->second;
        val[ngram_order(g) - 1] += std::min(v, vr) * vr;
      }
      for (int n = 0; n < kCiderN; ++n) {
        // Zero norms leave val at 0 (its numerator is 0 then); the reference skips the division.
        if (cand.norm[n] != 0 && ref.norm[n] != 0) val[n] /= cand.norm[n] * ref.norm[n];
        val[n] *= std::exp(-(delta * delta) / (2 * kCiderSigma * kCiderSigma));
        score[n] += val[n];
      }
    }
    double avg = (score[0] + score[1] + score[2] + score[3]) / kCiderN;
    avg /= double(ref_counts[i].size());
    scores.push_back(avg * 10.0);
  }
  return scores;
}

CaptionScores caption_scores(const std::vector<CaptionItem>& items, const JavaMetricsConfig& java) {
  CaptionScores s;
  s.bleu = bleu_scores(items, 4);
  double rouge_sum = 0;
  for (const auto& item : items) {
    s.rouge_l_per_image.push_back(rouge_l(item.candidate, item.references));
    rouge_sum += s.rouge_l_per_image.back();
  }
  s.rouge_l = rouge_sum / double(items.size());
  s.cider_d_per_image = cider_d_per_image(items);
  double cider_sum = 0;
  for (double x : s.cider_d_per_image) cider_sum += x;
  s.cider_d = cider_sum / double(items.size());
  add_java_caption_metrics(s, items, java);
  return s;
}

CaptionScores caption_scores_raw(const std::vector<CaptionItem>& raw_items, const JavaMetricsConfig& java) {
  std::vector<CaptionItem> items;
  items.reserve(raw_items.size());
  for (const auto& raw : raw_items) {
    CaptionItem t;
    t.candidate = ptb_tokenize(raw.candidate);
    for (const auto& r : raw.references) t.references.push_back(ptb_tokenize(r));
    items.push_back(std::move(t));
  }
  return caption_scores(items, java);
}

std::vector<CaptionItem> coco_caption_items(const std::vector<CocoImage>& images,
                                            const std::unordered_map<std::string, std::string>& predictions) {
  std::vector<CaptionItem> items;
  items.reserve(images.size());
  for (const auto& img : images) {
    auto it = predictions.find(img.image_id);
    VLP_CHECK(it != predictions.end(), "caption evaluation: no prediction for image ", img.image_id);
    items.push_back({it->second, img.captions});
  }
  VLP_CHECK(predictions.size() == images.size(), "caption evaluation: ", predictions.size(), " predictions for ",
            images.size(), " images (one per image expected)");
  return items;
}

CaptionScores coco_caption_scores(const std::vector<CocoImage>& images,
                                  const std::unordered_map<std::string, std::string>& predictions,
                                  const JavaMetricsConfig& java) {
  return caption_scores_raw(coco_caption_items(images, predictions), java);
}

}  // namespace vlp::data
