// Shared pieces of the dataset loaders: JSON files and fields with errors that name file and field,
// the skip policy, load reports, and image id -> path resolution.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "data/json_util.h"

namespace vlp::data {

namespace fs = std::filesystem;

std::string LoadReport::summary() const {
  std::ostringstream os;
  os << file << ": " << records << " records, " << loaded << " loaded, " << skipped << " skipped";
  if (dropped_labels) os << ", " << dropped_labels << " labels outside the vocabulary dropped";
  if (!skip_reasons.empty()) os << " (first: " << skip_reasons.front() << ")";
  return os.str();
}

// ---- images -------------------------------------------------------------------------------------

namespace {

// The split encoded in an image id: "val2014" in "COCO_val2014_000000391895", "dev" in "dev-850-0-img0".
std::string split_of(const std::string& id) {
  if (id.rfind("COCO_", 0) == 0) {
    size_t end = id.find('_', 5);
    if (end != std::string::npos && end > 5) return id.substr(5, end - 5);
  }
  size_t dash = id.find('-');
  VLP_CHECK(dash != std::string::npos && dash > 0, "image path template: image id '", id,
            "' names no split ({split} needs COCO_{split}_... or {split}-...)");
  return id.substr(0, dash);
}

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
  for (size_t pos = s.find(from); pos != std::string::npos; pos = s.find(from, pos + to.size()))
    s.replace(pos, from.size(), to);
  return s;
}

}  // namespace

ImagePathFn image_path_template(const std::string& pattern) {
  VLP_CHECK(pattern.find("{id}") != std::string::npos, "image path template '", pattern, "' has no {id} placeholder");
  bool needs_split = pattern.find("{split}") != std::string::npos;
  return [pattern, needs_split](const std::string& id) {
    VLP_CHECK(!id.empty(), "image path template '", pattern, "': empty image id");
    std::string p = replace_all(pattern, "{id}", id);
    return needs_split ? replace_all(p, "{split}", split_of(id)) : p;
  };
}

ImagePathFn coco_image_files(const std::string& root) { return image_path_template(root + "/{split}/{id}.jpg"); }
ImagePathFn gqa_image_files(const std::string& root) { return image_path_template(root + "/images/{id}.jpg"); }
ImagePathFn feature_files(const std::string& dir, const std::string& extension) {
  return image_path_template(dir + "/{id}" + extension);
}

ImageIndex scan_image_dir(const std::string& dir, const std::vector<std::string>& extensions, bool recursive) {
  VLP_CHECK(fs::is_directory(dir), "scan_image_dir: '", dir, "' is not a directory");
  auto wanted = [&](const fs::path& p) {
    std::string ext = p.extension().string();
    std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return char(std::tolower(c)); });
    return std::find(extensions.begin(), extensions.end(), ext) != extensions.end();
  };
  std::vector<fs::path> files;
  auto visit = [&](const fs::directory_entry& e) {
    if (e.is_regular_file() && wanted(e.path())) files.push_back(e.path());
  };
  if (recursive)
    for (const auto& e : fs::recursive_directory_iterator(dir)) visit(e);
  else
    for (const auto& e : fs::directory_iterator(dir)) visit(e);
  std::sort(files.begin(), files.end());
  ImageIndex index;
  for (const auto& f : files) {
    auto [it, inserted] = index.path_of.emplace(f.stem().string(), f.string());
    VLP_CHECK(inserted, "scan_image_dir: two files for image id '", f.stem().string(), "' under '", dir, "': ", it->second,
              " and ", f.string());
  }
  return index;
}

ImagePathFn image_index_lookup(ImageIndex index) {
  return [index = std::move(index)](const std::string& id) {
    auto it = index.path_of.find(id);
    VLP_CHECK(it != index.path_of.end(), "image id '", id, "' is not in the image index (", index.size(), " files)");
    return it->second;
  };
}

namespace detail {

// ---- files and fields ---------------------------------------------------------------------------

std::string read_text_file(const std::string& path, const char* what) {
  std::ifstream in(path, std::ios::binary);
  VLP_CHECK(in, "cannot open ", what, " '", path, "'", fs::exists(path) ? " (unreadable)" : " (no such file)");
  std::ostringstream os;
  os << in.rdbuf();
  return os.str();
}

json read_json_file(const std::string& path, const char* what) {
  std::string text = read_text_file(path, what);
  try {
    return json::parse(text);
  } catch (const json::parse_error& e) {
    VLP_FAIL(what, " '", path, "' is not valid JSON (truncated or corrupt? ", text.size(), " bytes): ", e.what());
  }
}

const json& field(const json& record, const char* name) {
  if (!record.is_object()) throw BadRecord(str("record is not a JSON object (got ", record.type_name(), ")"));
  auto it = record.find(name);
  if (it == record.end()) throw BadRecord(str("field '", name, "' is missing"));
  return *it;
}

bool has_field(const json& record, const char* name) { return record.is_object() && record.contains(name); }

std::string get_string(const json& record, const char* name) {
  const json& v = field(record, name);
  if (!v.is_string()) throw BadRecord(str("field '", name, "' is not a string (got ", v.type_name(), ")"));
  return v.get<std::string>();
}

int64_t get_int(const json& record, const char* name) {
  const json& v = field(record, name);
  if (!v.is_number_integer()) throw BadRecord(str("field '", name, "' is not an integer (got ", v.type_name(), ")"));
  return v.get<int64_t>();
}

std::string get_id_string(const json& record, const char* name) {
  const json& v = field(record, name);
  if (v.is_string()) return v.get<std::string>();
  if (v.is_number_integer()) return std::to_string(v.get<int64_t>());
  throw BadRecord(str("field '", name, "' is neither a string nor an integer (got ", v.type_name(), ")"));
}

std::string get_optional_string(const json& record, const char* name) {
  return has_field(record, name) && !record.at(name).is_null() ? get_string(record, name) : std::string();
}

std::vector<Label> get_label_dict(const json& record, const char* name) {
  const json& v = field(record, name);
  if (!v.is_object()) throw BadRecord(str("field '", name, "' is not an {answer: score} object (got ", v.type_name(), ")"));
  std::vector<Label> labels;
  for (const auto& [answer, score] : v.items()) {
    if (!score.is_number())
      throw BadRecord(str("field '", name, "': score of answer '", answer, "' is not a number (got ", score.type_name(), ")"));
    double s = score.get<double>();
    if (!(s >= 0 && s <= 1)) throw BadRecord(str("field '", name, "': score of answer '", answer, "' is ", s, ", not in [0, 1]"));
    labels.push_back({answer, s});
  }
  std::sort(labels.begin(), labels.end(), [](const Label& a, const Label& b) { return a.answer < b.answer; });
  return labels;
}

void check_image(const LoadOptions& options, const std::string& image_id) {
  if (image_id.empty()) throw BadRecord("empty image id");
  if (options.images && !options.images->contains(image_id))
    throw BadRecord(str("image '", image_id, "' is not in the image index (", options.images->size(), " images)"));
}

void check_labels(const LoadOptions& options, std::vector<Label>& labels, LoadReport& report) {
  if (!options.vocab) return;
  std::vector<Label> kept;
  for (auto& l : labels) {
    if (options.vocab->find(l.answer) >= 0) {
      kept.push_back(std::move(l));
    } else if (options.drop_unknown_labels) {
      ++report.dropped_labels;
    } else {
      throw BadRecord(str("label '", l.answer, "' is not in the answer vocabulary (", options.vocab->size(), " answers)"));
    }
  }
  labels.swap(kept);
}

void reject(const LoadOptions& options, LoadReport& report, const std::string& where, const std::string& message) {
  std::string full = report.file + ": " + where + ": " + message;
  if (!options.skip_bad) VLP_FAIL(full);
  ++report.skipped;
  if (report.skip_reasons.size() < 20) report.skip_reasons.push_back(full);
}

int64_t coco_id_from_image_id(const std::string& image_id) {
  if (image_id.rfind("COCO_", 0) != 0) return -1;
  size_t us = image_id.rfind('_');
  if (us == std::string::npos || us + 1 >= image_id.size()) return -1;
  std::string digits = image_id.substr(us + 1);
  if (!std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; }) || digits.size() > 18) return -1;
  return std::stoll(digits);
}

std::string file_stem(const std::string& filename) { return fs::path(filename).stem().string(); }

}  // namespace detail
}  // namespace vlp::data
