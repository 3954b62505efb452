// VQAv2 (data.md 1): official questions + annotations, the VL-T5 Karpathy-split files, the 3129-answer
// vocabulary, soft-score labels and classifier targets.
#include <algorithm>
#include <cstdio>
#include <map>
#include <unordered_set>

#include "data/json_util.h"
#include "data/metrics.h"

namespace vlp::data {

using namespace detail;

int64_t AnswerVocab::find(const std::string& answer) const {
  auto it = index_of.find(answer);
  return it == index_of.end() ? -1 : it->second;
}

AnswerVocab load_answer_vocab(const std::string& ans2label_path, const std::string& label2ans_path) {
  json a2l = read_json_file(ans2label_path, "answer vocabulary (ans2label)");
  VLP_CHECK(a2l.is_object(), "answer vocabulary '", ans2label_path, "' must be a JSON object answer -> index, got ",
            a2l.type_name());
  AnswerVocab vocab;
  vocab.answers.assign(a2l.size(), std::string());
  std::vector<bool> seen(a2l.size(), false);
  for (const auto& [answer, index] : a2l.items()) {
    VLP_CHECK(index.is_number_integer(), "answer vocabulary '", ans2label_path, "': index of '", answer,
              "' is not an integer (got ", index.type_name(), ")");
    int64_t i = index.get<int64_t>();
    VLP_CHECK(i >= 0 && i < int64_t(a2l.size()), "answer vocabulary '", ans2label_path, "': index ", i, " of '", answer,
              "' is outside 0..", a2l.size() - 1);
    VLP_CHECK(!seen[size_t(i)], "answer vocabulary '", ans2label_path, "': index ", i, " is used twice ('",
              vocab.answers[size_t(i)], "' and '", answer, "')");
    seen[size_t(i)] = true;
    vocab.answers[size_t(i)] = answer;
    vocab.index_of[answer] = i;
  }
  if (!label2ans_path.empty()) {
    json l2a = read_json_file(label2ans_path, "answer vocabulary (label2ans)");
    VLP_CHECK(l2a.is_array(), "answer vocabulary '", label2ans_path, "' must be a JSON list of answers, got ", l2a.type_name());
    VLP_CHECK(l2a.size() == vocab.answers.size(), "answer vocabularies disagree: '", label2ans_path, "' has ", l2a.size(),
              " answers, '", ans2label_path, "' ", vocab.answers.size());
    for (size_t i = 0; i < l2a.size(); ++i)
      VLP_CHECK(l2a[i].is_string() && l2a[i].get<std::string>() == vocab.answers[i], "answer vocabularies disagree at index ",
                i, ": '", label2ans_path, "' has ", l2a[i].dump(), ", '", ans2label_path, "' has \"", vocab.answers[i], "\"");
  }
  return vocab;
}

std::vector<Label> vqa_soft_labels(const std::vector<std::string>& answers, const AnswerVocab* vocab, int64_t* dropped) {
  std::map<std::string, int64_t> counts;
  for (const auto& a : answers) ++counts[vqa_normalize_answer(a)];
  std::vector<Label> labels;
  for (const auto& [answer, count] : counts) {
    if (vocab && vocab->find(answer) < 0) {
      if (dropped) ++*dropped;
      continue;
    }
    labels.push_back({answer, std::min(1.0, 0.3 * double(count))});
  }
  return labels;
}

Tensor vqa_classifier_targets(const std::vector<const std::vector<Label>*>& labels, const AnswerVocab& vocab) {
  VLP_CHECK(vocab.size() > 0, "vqa_classifier_targets: empty answer vocabulary");
  Tensor t = zeros({int64_t(labels.size()), vocab.size()}, DType::F32);
  float* p = t.data<float>();
  for (size_t i = 0; i < labels.size(); ++i) {
    VLP_CHECK(labels[i] != nullptr, "vqa_classifier_targets: null label set at row ", i);
    for (const auto& l : *labels[i]) {
      int64_t j = vocab.find(l.answer);
      VLP_CHECK(j >= 0, "vqa_classifier_targets: row ", i, ": answer '", l.answer, "' is not in the answer vocabulary");
      p[int64_t(i) * vocab.size() + j] = float(l.score);
    }
  }
  return t;
}

VqaSet load_vqa_official(const std::string& questions_path, const std::string& annotations_path, const LoadOptions& options) {
  VqaSet set;
  set.report.file = questions_path;
  json qfile = read_json_file(questions_path, "VQA questions file");
  VLP_CHECK(qfile.is_object() && qfile.contains("questions") && qfile["questions"].is_array(), "VQA questions file '",
            questions_path, "' has no \"questions\" list");
  VLP_CHECK(qfile.contains("data_subtype") && qfile["data_subtype"].is_string(), "VQA questions file '", questions_path,
            "' has no \"data_subtype\" string (needed for the image file names)");
  std::string subtype = qfile["data_subtype"].get<std::string>();
  std::string image_split = subtype == "test-dev2015" ? "test2015" : subtype;

  // question_id -> annotation
  std::unordered_map<int64_t, const json*> annotation_of;
  json afile;
  if (!annotations_path.empty()) {
    afile = read_json_file(annotations_path, "VQA annotations file");
    VLP_CHECK(afile.is_object() && afile.contains("annotations") && afile["annotations"].is_array(), "VQA annotations file '",
              annotations_path, "' has no \"annotations\" list");
    const json& anns = afile["annotations"];
    for (size_t i = 0; i < anns.size(); ++i) {
      const json& a = anns[i];
      if (!a.is_object() || !a.contains("question_id") || !a["question_id"].is_number_integer())
        VLP_FAIL(annotations_path, ": annotation ", i, ": field 'question_id' is missing or not an integer");
      int64_t qid = a["question_id"].get<int64_t>();
      VLP_CHECK(annotation_of.emplace(qid, &a).second, annotations_path, ": annotation ", i, ": question_id ", qid,
                " is annotated twice");
    }
  }

  const json& questions = qfile["questions"];
  std::unordered_set<int64_t> seen;
  for (size_t i = 0; i < questions.size(); ++i) {
    const json& q = questions[i];
    std::string where = str("question ", i);
    if (has_field(q, "question_id") && q["question_id"].is_number_integer())
      where += str(" (question_id ", q["question_id"].get<int64_t>(), ")");
    handle_record(options, set.report, where, [&] {
      VqaExample ex;
      ex.question_id = get_int(q, "question_id");
      ex.coco_image_id = get_int(q, "image_id");
      ex.question = get_string(q, "question");
      if (!seen.insert(ex.question_id).second) throw BadRecord("question_id appears twice");
      char buf[64];
      std::snprintf(buf, sizeof buf, "%012lld", static_cast<long long>(ex.coco_image_id));
      ex.image_id = "COCO_" + image_split + "_" + buf;
      check_image(options, ex.image_id);
      if (!annotations_path.empty()) {
        auto it = annotation_of.find(ex.question_id);
        if (it == annotation_of.end()) throw BadRecord(str("no annotation in '", annotations_path, "'"));
        const json& a = *it->second;
        if (get_int(a, "image_id") != ex.coco_image_id)
          throw BadRecord(str("annotation names image_id ", get_int(a, "image_id"), ", the question ", ex.coco_image_id));
        const json& answers = field(a, "answers");
        if (!answers.is_array() || answers.empty()) throw BadRecord("annotation field 'answers' is not a non-empty list");
        for (const auto& ans : answers) ex.answers.push_back(get_string(ans, "answer"));
        ex.answer_type = get_string(a, "answer_type");
        ex.question_type = get_string(a, "question_type");
        ex.multiple_choice_answer = get_optional_string(a, "multiple_choice_answer");
        ex.labels = vqa_soft_labels(ex.answers, options.vocab, &set.report.dropped_labels);
      }
      set.examples.push_back(std::move(ex));
    });
  }
  set.report.loaded = int64_t(set.examples.size());
  return set;
}

VqaSet load_vqa_karpathy(const std::string& path, const LoadOptions& options) {
  VqaSet set;
  set.report.file = path;
  json file = read_json_file(path, "VQA Karpathy-split file");
  VLP_CHECK(file.is_array(), "VQA Karpathy-split file '", path, "' must be a JSON list of questions, got ", file.type_name());
  for (size_t i = 0; i < file.size(); ++i) {
    const json& r = file[i];
    std::string where = str("record ", i);
    if (has_field(r, "question_id") && r["question_id"].is_number_integer())
      where += str(" (question_id ", r["question_id"].get<int64_t>(), ")");
    handle_record(options, set.report, where, [&] {
      VqaExample ex;
      ex.question_id = get_int(r, "question_id");
      ex.image_id = get_string(r, "img_id");
      ex.coco_image_id = coco_id_from_image_id(ex.image_id);
      ex.question = get_string(r, "sent");
      check_image(options, ex.image_id);
      if (has_field(r, "label")) ex.labels = get_label_dict(r, "label");
      check_labels(options, ex.labels, set.report);
      ex.answer_type = get_optional_string(r, "answer_type");
      ex.question_type = get_optional_string(r, "question_type");
      if (has_field(r, "is_topk_optimal")) {
        if (!r["is_topk_optimal"].is_boolean()) throw BadRecord("field 'is_topk_optimal' is not a boolean");
        ex.is_topk_optimal = r["is_topk_optimal"].get<bool>() ? 1 : 0;
      }
      set.examples.push_back(std::move(ex));
    });
  }
  set.report.loaded = int64_t(set.examples.size());
  return set;
}

void attach_official_answers(std::vector<VqaExample>& examples, const std::vector<VqaExample>& official) {
  std::unordered_map<int64_t, const VqaExample*> by_id;
  for (const auto& o : official) by_id[o.question_id] = &o;
  for (auto& e : examples) {
    auto it = by_id.find(e.question_id);
    VLP_CHECK(it != by_id.end(), "attach_official_answers: question_id ", e.question_id, " (", e.image_id,
              ") is not in the official annotations given (", official.size(), " questions)");
    VLP_CHECK(!it->second->answers.empty(), "attach_official_answers: the official question_id ", e.question_id,
              " has no answers (were its annotations loaded?)");
    e.answers = it->second->answers;
    e.multiple_choice_answer = it->second->multiple_choice_answer;
    e.answer_type = it->second->answer_type;
    e.question_type = it->second->question_type;
  }
}

}  // namespace vlp::data
