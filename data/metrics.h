// Evaluation metrics of data.md section 6: official VQA accuracy (legacy and official variants), the
// soft VQA score, GQA accuracy, NLVR2 accuracy and consistency, and the caption metrics BLEU-1..4,
// ROUGE-L and CIDEr-D exactly as pycocoevalcap computes them (corpus level), plus METEOR and SPICE through
// the official Java jars when they are configured (data/caption_java.cpp). Caption metrics take
// captions already tokenised by ptb_tokenize (data/ptb_tokenize.h) or by the Java PTB tokenizer.
//
// Scores are returned as fractions in [0, 1] (CIDEr-D in [0, 10]); reports print them x100. Where the
// reference rounds to 2 decimals, round2 reproduces Python's round(x, 2).
#pragma once
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace vlp::data {

struct VqaExample;
struct GqaExample;
struct Nlvr2Example;
struct Label;

// ---- VQA normalisation (GT-Vision-Lab/VQA vqaEval.py) ---------------------------------------------

// processPunctuation: each of the 21 characters ; / [ ] " { } ( ) = + \ _ - > < @ ` , ? ! is deleted
// when it appears next to a space in the input or the input has a digit,digit sequence, else replaced
// by a space; then up to 32 periods not followed by a digit are deleted.
std::string vqa_process_punctuation(const std::string& text);
// processDigitArticle: lower-case, split on whitespace, number words -> digits, drop a/an/the, apply the
// contractions table, join with single spaces.
std::string vqa_process_digit_article(const std::string& text);
// The 120-entry contractions table, verbatim (data/vqa_contractions.cpp).
const std::vector<std::pair<std::string, std::string>>& vqa_contractions();
// The answer-vocabulary normalisation of Anderson et al. / Teney et al. (bottom-up-attention-vqa):
// processPunctuation, processDigitArticle, then every comma removed.
std::string vqa_normalize_answer(const std::string& answer);

// Which strings the official accuracy normalises (data.md 6.1):
//   legacy   - the reference code before its March 2021 fix (VL-T5 / VL-Adapter numbers): the prediction
//              always gets punctuation + digit/article processing, the ten answers punctuation only and
//              only when they are not all identical.
//   official - the current reference code: answers and prediction get \n,\t -> space and strip; when the
//              answers are not all identical both get punctuation + digit/article processing.
enum class VqaVariant { legacy, official };
const char* vqa_variant_name(VqaVariant v);

// Accuracy of one prediction against the (usually ten) human answers: the mean over the leave-one-out
// subsets of min(1, matches / 3).
double vqa_accuracy(const std::string& prediction, const std::vector<std::string>& answers, VqaVariant variant);

struct VqaAccuracy {
  double overall = 0;                              // mean accuracy in [0, 1] (not rounded)
  std::map<std::string, double> per_answer_type;   // mean per answer_type
  std::map<std::string, double> per_question_type; // mean per question_type
  std::unordered_map<int64_t, double> per_question;
  int64_t count = 0;
};
// Official accuracy over examples carrying their ten human answers (VqaExample::answers). Every
// example needs a prediction and every prediction an example (as the reference checks), else an error
// naming the first offending question id.
VqaAccuracy vqa_official_accuracy(const std::vector<VqaExample>& examples,
                                  const std::unordered_map<int64_t, std::string>& predictions, VqaVariant variant);

// Soft score: the prediction's score in the question's label dict (0 when absent).
double vqa_soft_score(const std::string& prediction, const std::vector<Label>& labels);
// Mean soft score over examples (every example needs a prediction).
double vqa_soft_score(const std::vector<VqaExample>& examples, const std::unordered_map<int64_t, std::string>& predictions);

// ---- GQA and NLVR2 ------------------------------------------------------------------------------

// Fraction of questions whose whitespace-stripped prediction equals the answer exactly.
double gqa_accuracy(const std::vector<GqaExample>& examples, const std::unordered_map<std::string, std::string>& predictions);

struct Nlvr2Scores {
  double accuracy = 0;     // fraction of examples predicted correctly
  double consistency = 0;  // fraction of sentence groups whose examples are all correct
  int64_t examples = 0, groups = 0;
};
// Group key of an identifier "{split}-{set_id}-{pair_id}-{sentence_id}": "{split}-{set_id}--{sentence_id}".
std::string nlvr2_group_key(const std::string& identifier);
// predictions: identifier -> true/false. Examples must have a label (0/1).
Nlvr2Scores nlvr2_scores(const std::vector<Nlvr2Example>& examples, const std::unordered_map<std::string, bool>& predictions);

// ---- captions (pycocoevalcap) -----------------------------------------------------------------------

// One evaluated image: a tokenised candidate and its tokenised references.
struct CaptionItem {
  std::string candidate;
  std::vector<std::string> references;
};

// Corpus BLEU-1..4 (option "closest": the reference length closest to the candidate's, ties to the
// shorter), words split on whitespace.
std::vector<double> bleu_scores(const std::vector<CaptionItem>& items, int max_n = 4);
// ROUGE-L F-measure (beta 1.2) of one image, tokens split on single spaces as the reference does.
double rouge_l(const std::string& candidate, const std::vector<std::string>& references);
// CIDEr-D per image (idf over the references of exactly these images: score a whole split at once).
std::vector<double> cider_d_per_image(const std::vector<CaptionItem>& items);

// Where the official Java scorers of data.md 6.9 are (METEOR 1.5, SPICE 1.0). Empty paths mean "not
// configured"; the metrics are then reported as not computed, never as 0.
struct JavaMetricsConfig {
  std::string java;         // java executable (absolute path); empty when none was found
  std::string meteor_jar;   // meteor-1.5.jar (its data/ folder beside it, as pycocoevalcap ships it)
  std::string spice_jar;    // spice-1.0.jar (needs lib/stanford-corenlp-3.6.0{,-models}.jar beside it)
  std::string spice_cache;  // SPICE parse cache folder (empty: $TMPDIR/vlp_spice_cache)
  std::string missing_java; // why java is empty ("java not found on PATH")
};
// From the environment: VLP_METEOR_JAR, VLP_SPICE_JAR, VLP_SPICE_CACHE, and VLP_JAVA (a java executable;
// default: `java` searched on PATH).
JavaMetricsConfig java_metrics_from_env();
// No Java metrics at all (BLEU, ROUGE-L and CIDEr-D only).
inline JavaMetricsConfig no_java_metrics() { return {}; }

struct JavaMetricResult {
  double corpus = 0;              // METEOR: the jar's corpus score (not the mean of per_image); SPICE: mean F
  std::vector<double> per_image;
};
// Run the jars on already-tokenised items (data.md 6.9). Errors (java or jar missing, the child dying,
// unparsable output, a time-out) throw vlp::Error naming the jar, with the tail of the child's stderr.
JavaMetricResult meteor_score(const std::vector<CaptionItem>& items, const std::string& java, const std::string& jar);
JavaMetricResult spice_score(const std::vector<CaptionItem>& items, const std::string& java, const std::string& jar,
                             const std::string& cache_dir);

struct CaptionScores {
  std::vector<double> bleu;            // BLEU-1..4
  double rouge_l = 0, cider_d = 0;     // corpus means
  std::vector<double> rouge_l_per_image, cider_d_per_image;
  // METEOR and SPICE come from the official jars (data.md 6.9) when configured and working; otherwise
  // they are absent and *_not_computed says why (e.g. "VLP_METEOR_JAR not set", or the jar's error).
  std::optional<double> meteor, spice;
  std::vector<double> meteor_per_image, spice_per_image;
  std::string meteor_not_computed, spice_not_computed;
};
// All caption metrics over already-tokenised captions. The items must be non-empty and every image
// needs at least one reference. METEOR / SPICE run only when `java` names the jars (by default from the
// environment); a failing jar leaves them not computed with the reason, it does not throw.
CaptionScores caption_scores(const std::vector<CaptionItem>& items, const JavaMetricsConfig& java = java_metrics_from_env());
// Tokenises candidates and references with ptb_tokenize first (data.md 6.5), then scores.
CaptionScores caption_scores_raw(const std::vector<CaptionItem>& raw_items,
                                 const JavaMetricsConfig& java = java_metrics_from_env());
// Fills meteor / spice of `scores` (or their not-computed reasons) for these tokenised items.
void add_java_caption_metrics(CaptionScores& scores, const std::vector<CaptionItem>& items, const JavaMetricsConfig& java);

// COCO captioning evaluation in one call: one item per image with all its reference captions and the
// prediction for its image id (every image needs one), tokenised with ptb_tokenize, then scored.
struct CocoImage;
std::vector<CaptionItem> coco_caption_items(const std::vector<CocoImage>& images,
                                            const std::unordered_map<std::string, std::string>& predictions);
CaptionScores coco_caption_scores(const std::vector<CocoImage>& images,
                                  const std::unordered_map<std::string, std::string>& predictions,
                                  const JavaMetricsConfig& java = java_metrics_from_env());

// Python's round(x, 2) (correct rounding of the binary value, ties to even), for reports.
double round2(double x);

}  // namespace vlp::data
