// GQA (data.md 2) and NLVR2 (data.md 3): official files and the VL-T5 preprocessed lists.
#include <algorithm>
#include <sstream>

#include "data/json_util.h"

namespace vlp::data {

using namespace detail;

namespace {

bool all_digits(const std::string& s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// Numeric ids in numeric order, then the rest lexicographically.
bool id_less(const std::string& a, const std::string& b) {
  bool da = all_digits(a), db = all_digits(b);
  if (da != db) return da;
  if (da && a.size() != b.size()) return a.size() < b.size();
  return a < b;
}

// "{split}-{set_id}-{pair_id}-{sentence_id}" -> the four parts (BadRecord otherwise).
std::vector<std::string> identifier_parts(const std::string& identifier) {
  std::vector<std::string> parts;
  std::stringstream ss(identifier);
  std::string p;
  while (std::getline(ss, p, '-')) parts.push_back(p);
  if (parts.size() != 4 || std::any_of(parts.begin(), parts.end(), [](const std::string& x) { return x.empty(); }))
    throw BadRecord(str("identifier '", identifier, "' is not of the form {split}-{set_id}-{pair_id}-{sentence_id}"));
  return parts;
}

}  // namespace

// ---- GQA ------------------------------------------------------------------------------------------

GqaSet load_gqa_official(const std::string& path, const LoadOptions& options) {
  GqaSet set;
  set.report.file = path;
  json file = read_json_file(path, "GQA questions file");
  VLP_CHECK(file.is_object(), "GQA questions file '", path, "' must be a JSON object question id -> question, got ",
            file.type_name());
  std::vector<std::string> ids;
  for (const auto& [id, q] : file.items()) ids.push_back(id);
  std::sort(ids.begin(), ids.end(), id_less);
  for (const auto& id : ids) {
    const json& q = file[id];
    handle_record(options, set.report, str("question '", id, "'"), [&] {
      GqaExample ex;
      ex.question_id = id;
      ex.image_id = get_id_string(q, "imageId");
      ex.question = get_string(q, "question");
      ex.answer = get_optional_string(q, "answer");
      ex.full_answer = get_optional_string(q, "fullAnswer");
      check_image(options, ex.image_id);
      if (!ex.answer.empty()) ex.labels.push_back({ex.answer, 1.0});
      check_labels(options, ex.labels, set.report);
      set.examples.push_back(std::move(ex));
    });
  }
  set.report.loaded = int64_t(set.examples.size());
  return set;
}

GqaSet load_gqa_preprocessed(const std::string& path, const LoadOptions& options) {
  GqaSet set;
  set.report.file = path;
  json file = read_json_file(path, "GQA preprocessed file");
  VLP_CHECK(file.is_array(), "GQA preprocessed file '", path, "' must be a JSON list of questions, got ", file.type_name());
  for (size_t i = 0; i < file.size(); ++i) {
    const json& r = file[i];
    std::string where = str("record ", i);
    if (has_field(r, "question_id") && (r["question_id"].is_string() || r["question_id"].is_number_integer()))
      where += str(" (question_id ", r["question_id"].dump(), ")");
    handle_record(options, set.report, where, [&] {
      GqaExample ex;
      ex.question_id = get_id_string(r, "question_id");
      ex.image_id = get_id_string(r, "img_id");
      ex.question = get_string(r, "sent");
      check_image(options, ex.image_id);
      if (has_field(r, "label")) ex.labels = get_label_dict(r, "label");
      check_labels(options, ex.labels, set.report);
      // The single answer: the best-scored label (GQA labels hold one answer with score 1).
      double best = -1;
      for (const auto& l : ex.labels)
        if (l.score > best) best = l.score, ex.answer = l.answer;
      set.examples.push_back(std::move(ex));
    });
  }
  set.report.loaded = int64_t(set.examples.size());
  return set;
}

// ---- NLVR2 ----------------------------------------------------------------------------------------

Nlvr2Set load_nlvr2_official(const std::string& path, const LoadOptions& options) {
  Nlvr2Set set;
  set.report.file = path;
  std::string text = read_text_file(path, "NLVR2 file");
  std::istringstream lines(text);
  std::string line;
  for (int64_t line_no = 1; std::getline(lines, line); ++line_no) {
    if (std::all_of(line.begin(), line.end(), [](char c) { return c == ' ' || c == '\t' || c == '\r'; })) continue;
    json r;
    try {
      r = json::parse(line);
    } catch (const json::parse_error& e) {
      VLP_FAIL("NLVR2 file '", path, "' line ", line_no, " is not valid JSON (truncated or corrupt?): ", e.what());
    }
    std::string where = str("line ", line_no);
    if (has_field(r, "identifier") && r["identifier"].is_string()) where += " (" + r["identifier"].get<std::string>() + ")";
    handle_record(options, set.report, where, [&] {
      Nlvr2Example ex;
      ex.identifier = get_string(r, "identifier");
      ex.sentence = get_string(r, "sentence");
      auto parts = identifier_parts(ex.identifier);
      std::string pair = parts[0] + "-" + parts[1] + "-" + parts[2];
      ex.image_ids[0] = pair + "-img0";
      ex.image_ids[1] = pair + "-img1";
      if (has_field(r, "label")) {
        std::string label = get_string(r, "label");
        if (label == "True" || label == "true") ex.label = 1;
        else if (label == "False" || label == "false") ex.label = 0;
        else throw BadRecord(str("field 'label' is '", label, "', expected \"True\" or \"False\""));
      }
      if (has_field(r, "directory")) ex.directory = get_id_string(r, "directory");
      check_image(options, ex.image_ids[0]);
      check_image(options, ex.image_ids[1]);
      set.examples.push_back(std::move(ex));
    });
  }
  set.report.loaded = int64_t(set.examples.size());
  return set;
}

Nlvr2Set load_nlvr2_preprocessed(const std::string& path, const LoadOptions& options) {
  Nlvr2Set set;
  set.report.file = path;
  json file = read_json_file(path, "NLVR2 preprocessed file");
  VLP_CHECK(file.is_array(), "NLVR2 preprocessed file '", path, "' must be a JSON list, got ", file.type_name());
  for (size_t i = 0; i < file.size(); ++i) {
    const json& r = file[i];
    std::string where = str("record ", i);
    if (has_field(r, "identifier") && r["identifier"].is_string()) where += " (" + r["identifier"].get<std::string>() + ")";
    handle_record(options, set.report, where, [&] {
      Nlvr2Example ex;
      ex.identifier = get_string(r, "identifier");
      identifier_parts(ex.identifier);
      ex.sentence = get_string(r, "sent");
      ex.image_ids[0] = get_string(r, "img0");
      ex.image_ids[1] = get_string(r, "img1");
      if (has_field(r, "label")) {
        int64_t label = get_int(r, "label");
        if (label != 0 && label != 1) throw BadRecord(str("field 'label' is ", label, ", expected 0 or 1"));
        ex.label = int(label);
      }
      check_image(options, ex.image_ids[0]);
      check_image(options, ex.image_ids[1]);
      set.examples.push_back(std::move(ex));
    });
  }
  set.report.loaded = int64_t(set.examples.size());
  return set;
}

ImagePathFn nlvr2_image_files(const std::string& root, const std::vector<Nlvr2Example>& examples) {
  std::unordered_map<std::string, std::string> train_paths;
  for (const auto& ex : examples)
    if (!ex.directory.empty())
      for (const auto& id : ex.image_ids) train_paths[id] = root + "/train/" + ex.directory + "/" + id + ".png";
  ImagePathFn by_split = image_path_template(root + "/{split}/{id}.png");
  return [train_paths = std::move(train_paths), by_split](const std::string& id) {
    auto it = train_paths.find(id);
    return it != train_paths.end() ? it->second : by_split(id);
  };
}

}  // namespace vlp::data
