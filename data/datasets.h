// The four vision-language datasets in their official and VL-T5-preprocessed formats (data.md 1-4):
// VQAv2, GQA, NLVR2 and COCO Captions. Loaders return plain structs with raw text (no tokenisation:
// the model side tokenises) and image ids; an image id resolves to a file on disk or to a feature shard
// through an ImagePathFn.
//
// Bad input (missing file, invalid or truncated JSON, a missing or mistyped field, an empty caption, an
// unknown image, a label outside the answer vocabulary) is an error naming the file, the record and the
// field, or, with LoadOptions::skip_bad, a skipped record counted in the LoadReport.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <unordered_map>
#include <vector>

#include "runtime/tensor.h"

namespace vlp::data {

// ---- images --------------------------------------------------------------------------------------

// image id -> path of its image file or feature shard. Image ids are file stems:
// "COCO_val2014_000000391895" (VQA, COCO), "2354786" (GQA), "dev-850-0-img0" (NLVR2).
using ImagePathFn = std::function<std::string(const std::string& image_id)>;

// A path template with the placeholders {id} (the image id) and {split} (from the id: "val2014" for
// "COCO_val2014_...", "dev" for NLVR2's "dev-850-0-img0"; an error for ids without one).
ImagePathFn image_path_template(const std::string& pattern);
// COCO 2014 images: root/{split}/{id}.jpg.
ImagePathFn coco_image_files(const std::string& root);
// GQA images: root/images/{id}.jpg.
ImagePathFn gqa_image_files(const std::string& root);
// Pre-extracted features (data.md 5.4): dir/{id}{extension}, ".h5" by default.
ImagePathFn feature_files(const std::string& dir, const std::string& extension = ".h5");

// The image files (or feature shards) found under a directory, by id (file stem).
struct ImageIndex {
  std::unordered_map<std::string, std::string> path_of;
  bool contains(const std::string& id) const { return path_of.count(id) > 0; }
  size_t size() const { return path_of.size(); }
};
// Scans dir (recursively by default) for files with one of the extensions (case-insensitive).
ImageIndex scan_image_dir(const std::string& dir, const std::vector<std::string>& extensions = {".jpg", ".jpeg", ".png", ".h5"},
                          bool recursive = true);
// Looks ids up in an index (an error naming the id when it is absent). The index is copied.
ImagePathFn image_index_lookup(ImageIndex index);

// ---- loading policy -------------------------------------------------------------------------------

struct AnswerVocab;

struct LoadOptions {
  bool skip_bad = false;                // skip bad records (counted and reported) instead of throwing
  const ImageIndex* images = nullptr;   // when set, every image a record names must be in it
  const AnswerVocab* vocab = nullptr;   // VQA / GQA labels: check against (or, official VQA, filter by) it
  bool drop_unknown_labels = false;     // labels outside vocab are dropped (counted) instead of bad records
};

struct LoadReport {
  std::string file;
  int64_t records = 0;         // records read from the file
  int64_t loaded = 0;          // examples produced
  int64_t skipped = 0;         // records skipped as bad (skip_bad)
  int64_t dropped_labels = 0;  // labels or answers dropped as outside the vocabulary
  std::vector<std::string> skip_reasons;  // the first few reasons, for the log
  std::string summary() const;            // one line: "file: 10 records, 9 loaded, 1 skipped (first: ...)"
};

// A soft-scored answer.
struct Label {
  std::string answer;
  double score = 0;
};

// ---- VQAv2 ---------------------------------------------------------------------------------------

struct VqaExample {
  int64_t question_id = 0;
  int64_t coco_image_id = -1;              // COCO image id where known
  std::string image_id;                    // "COCO_train2014_000000458752"
  std::string question;
  std::vector<Label> labels;               // soft scores, sorted by answer (deterministic order)
  std::vector<std::string> answers;        // the ten raw human answers (official annotations only)
  std::string multiple_choice_answer;      // official annotations only
  std::string answer_type, question_type;  // "yes/no" | "number" | "other"; question prefix type
  int is_topk_optimal = -1;                // Karpathy files: 1/0 when present, -1 absent
};

struct VqaSet {
  std::vector<VqaExample> examples;
  LoadReport report;
};

// The answer vocabulary (trainval_ans2label.json / trainval_label2ans.json; 3129 answers).
struct AnswerVocab {
  std::vector<std::string> answers;                     // index -> answer
  std::unordered_map<std::string, int64_t> index_of;    // answer -> index
  int64_t size() const { return int64_t(answers.size()); }
  int64_t find(const std::string& answer) const;        // -1 when absent
};
// Loads ans2label (answer -> index, indices 0..n-1 each once); when label2ans_path is given, checks that
// it lists the same answers in index order.
AnswerVocab load_answer_vocab(const std::string& ans2label_path, const std::string& label2ans_path = "");

// Soft scores min(1, 0.3 * count) of the normalised answers (vqa_normalize_answer), sorted by answer.
// With a vocabulary, answers outside it are dropped and counted in *dropped.
std::vector<Label> vqa_soft_labels(const std::vector<std::string>& answers, const AnswerVocab* vocab = nullptr,
                                   int64_t* dropped = nullptr);
// Classifier targets (routing VQA head): [n, vocab size] F32, t[i, idx(a)] = score(a). Labels outside
// the vocabulary are an error.
Tensor vqa_classifier_targets(const std::vector<const std::vector<Label>*>& labels, const AnswerVocab& vocab);

// Official questions json, joined with the annotations json on question_id when annotations_path is
// non-empty (test splits have none). Image ids are COCO_{split}_{id:012d} with the split taken from the
// questions' data_subtype (test-dev2015 images live in test2015).
VqaSet load_vqa_official(const std::string& questions_path, const std::string& annotations_path = "",
                         const LoadOptions& options = {});
// VL-T5 Karpathy-split json list ({img_id, question_id, sent, label, answer_type, question_type}).
VqaSet load_vqa_karpathy(const std::string& path, const LoadOptions& options = {});

// Karpathy-split examples carry no human answers; official accuracy on them joins on question_id with
// the official annotations (data.md 1.2). Copies answers, answer and question type and
// multiple_choice_answer from `official` (e.g. train2014 + val2014 loaded with annotations); a question
// missing there is an error naming it.
void attach_official_answers(std::vector<VqaExample>& examples, const std::vector<VqaExample>& official);

// ---- GQA -----------------------------------------------------------------------------------------

struct GqaExample {
  std::string question_id;
  std::string image_id;
  std::string question;
  std::string answer;          // empty where withheld (test, challenge, submission)
  std::string full_answer;     // official files only
  std::vector<Label> labels;   // {answer: 1.0} or empty
};

struct GqaSet {
  std::vector<GqaExample> examples;
  LoadReport report;
};

// Official questions json: {question id: {imageId, question, answer, fullAnswer, ...}}, ordered by
// question id (numerically when the ids are numbers).
GqaSet load_gqa_official(const std::string& path, const LoadOptions& options = {});
// VL-T5 list: [{img_id, question_id, sent, label: {answer: 1.0}}] (no label in submit).
GqaSet load_gqa_preprocessed(const std::string& path, const LoadOptions& options = {});

// ---- NLVR2 ---------------------------------------------------------------------------------------

struct Nlvr2Example {
  std::string identifier;            // "{split}-{set_id}-{pair_id}-{sentence_id}"
  std::string sentence;
  int label = -1;                    // 1 True, 0 False, -1 hidden (test2)
  std::string image_ids[2];          // "{split}-{set_id}-{pair_id}-img0" / "-img1"
  std::string directory;             // train only: images live in train/{directory}/
};

struct Nlvr2Set {
  std::vector<Nlvr2Example> examples;
  LoadReport report;
};

// Official JSON-lines file (train.json, dev.json, test1.json, test2.json).
Nlvr2Set load_nlvr2_official(const std::string& path, const LoadOptions& options = {});
// VL-T5 list: [{identifier, img0, img1, label: 0|1, sent, uid}].
Nlvr2Set load_nlvr2_preprocessed(const std::string& path, const LoadOptions& options = {});
// NLVR2 image files: root/{split}/{id}.png, and root/train/{directory}/{id}.png for the train images
// named by the examples.
ImagePathFn nlvr2_image_files(const std::string& root, const std::vector<Nlvr2Example>& examples = {});

// ---- COCO Captions -------------------------------------------------------------------------------

struct CocoImage {
  std::string image_id;                 // file stem, "COCO_val2014_000000391895"
  int64_t coco_id = -1;
  std::string filepath;                 // "train2014" | "val2014" (Karpathy file)
  std::string split;                    // "train" | "restval" | "val" | "test" (Karpathy file)
  std::vector<std::string> captions;    // raw reference captions
  std::vector<int64_t> sentence_ids;
};

struct CocoCaptionSet {
  std::vector<CocoImage> images;
  LoadReport report;
};

// Karpathy dataset_coco.json; keep only the images whose split is in `splits` (all when empty).
CocoCaptionSet load_coco_karpathy(const std::string& path, const std::vector<std::string>& splits = {},
                                  const LoadOptions& options = {});
// COCO-format caption json ({images: [{id, file_name}], annotations: [{id, image_id, caption}]}); the
// images keep the file order, their captions the annotation order.
CocoCaptionSet load_coco_captions(const std::string& path, const LoadOptions& options = {});

}  // namespace vlp::data
