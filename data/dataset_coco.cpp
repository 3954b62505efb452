// COCO Captions (data.md 4): Karpathy's dataset_coco.json and COCO-format caption json.
#include <algorithm>
#include <unordered_map>

#include "data/json_util.h"

namespace vlp::data {

using namespace detail;

namespace {

bool blank(const std::string& s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; });
}

// An empty caption is a bad record of its own: an error, or (skip_bad) a skipped caption while the
// image keeps its other captions.
bool accept_caption(const LoadOptions& options, LoadReport& report, const std::string& where, const std::string& caption) {
  if (!blank(caption)) return true;
  reject(options, report, where, "empty caption");
  return false;
}

}  // namespace

CocoCaptionSet load_coco_karpathy(const std::string& path, const std::vector<std::string>& splits, const LoadOptions& options) {
  static const std::vector<std::string> known_splits = {"train", "restval", "val", "test"};
  for (const auto& s : splits)
    VLP_CHECK(std::find(known_splits.begin(), known_splits.end(), s) != known_splits.end(), "load_coco_karpathy: unknown split '",
              s, "' (expected train, restval, val or test)");
  CocoCaptionSet set;
  set.report.file = path;
  json file = read_json_file(path, "COCO Karpathy-split file");
  VLP_CHECK(file.is_object() && file.contains("images") && file["images"].is_array(), "COCO Karpathy-split file '", path,
            "' has no \"images\" list");
  const json& images = file["images"];
  for (size_t i = 0; i < images.size(); ++i) {
    const json& r = images[i];
    std::string where = str("image ", i);
    if (has_field(r, "filename") && r["filename"].is_string()) where += " (" + r["filename"].get<std::string>() + ")";
    CocoImage img;
    bool ok = handle_record(options, set.report, where, [&] {
      img.split = get_string(r, "split");
      if (std::find(known_splits.begin(), known_splits.end(), img.split) == known_splits.end())
        throw BadRecord(str("field 'split' is '", img.split, "', expected train, restval, val or test"));
      img.filepath = get_string(r, "filepath");
      img.image_id = file_stem(get_string(r, "filename"));
      img.coco_id = get_int(r, "cocoid");
      const json& sentences = field(r, "sentences");
      if (!sentences.is_array()) throw BadRecord("field 'sentences' is not a list");
      if (!splits.empty() && std::find(splits.begin(), splits.end(), img.split) == splits.end()) return;
      check_image(options, img.image_id);
    });
    if (!ok || (!splits.empty() && std::find(splits.begin(), splits.end(), img.split) == splits.end())) continue;
    const json& sentences = r["sentences"];
    for (size_t k = 0; k < sentences.size(); ++k) {
      std::string caption;
      int64_t sentid = -1;
      bool parsed = true;
      try {
        caption = get_string(sentences[k], "raw");
        if (has_field(sentences[k], "sentid")) sentid = get_int(sentences[k], "sentid");
      } catch (const BadRecord& e) {
        reject(options, set.report, str(where, " sentence ", k), e.what());
        parsed = false;
      }
      if (!parsed || !accept_caption(options, set.report, str(where, " sentence ", k, " (sentid ", sentid, ")"), caption)) continue;
      img.captions.push_back(caption);
      img.sentence_ids.push_back(sentid);
    }
    if (img.captions.empty()) {
      reject(options, set.report, where, "no usable captions");
      continue;
    }
    set.images.push_back(std::move(img));
  }
  set.report.loaded = int64_t(set.images.size());
  return set;
}

CocoCaptionSet load_coco_captions(const std::string& path, const LoadOptions& options) {
  CocoCaptionSet set;
  set.report.file = path;
  json file = read_json_file(path, "COCO caption file");
  VLP_CHECK(file.is_object() && file.contains("images") && file["images"].is_array() && file.contains("annotations") &&
                file["annotations"].is_array(),
            "COCO caption file '", path, "' needs \"images\" and \"annotations\" lists");
  std::vector<CocoImage> images;
  std::unordered_map<int64_t, size_t> position_of;
  const json& jimages = file["images"];
  for (size_t i = 0; i < jimages.size(); ++i) {
    handle_record(options, set.report, str("image ", i), [&] {
      CocoImage img;
      img.coco_id = get_int(jimages[i], "id");
      img.image_id = file_stem(get_string(jimages[i], "file_name"));
      check_image(options, img.image_id);
      if (!position_of.emplace(img.coco_id, images.size()).second) throw BadRecord(str("image id ", img.coco_id, " listed twice"));
      images.push_back(std::move(img));
    });
  }
  const json& anns = file["annotations"];
  for (size_t i = 0; i < anns.size(); ++i) {
    std::string caption;
    int64_t image = -1;
    std::string where = str("annotation ", i);
    if (has_field(anns[i], "id") && anns[i]["id"].is_number_integer()) where += str(" (id ", anns[i]["id"].get<int64_t>(), ")");
    bool ok = handle_record(options, set.report, where, [&] {
      image = get_int(anns[i], "image_id");
      caption = get_string(anns[i], "caption");
      if (!position_of.count(image)) throw BadRecord(str("image_id ", image, " is not among the file's images"));
    });
    if (!ok || !accept_caption(options, set.report, where, caption)) continue;
    CocoImage& img = images[position_of[image]];
    img.captions.push_back(caption);
    img.sentence_ids.push_back(has_field(anns[i], "id") && anns[i]["id"].is_number_integer() ? anns[i]["id"].get<int64_t>() : -1);
  }
  for (auto& img : images) {
    if (img.captions.empty()) {
      reject(options, set.report, str("image ", img.coco_id, " (", img.image_id, ")"), "no captions");
      continue;
    }
    set.images.push_back(std::move(img));
  }
  set.report.loaded = int64_t(set.images.size());
  return set;
}

}  // namespace vlp::data
