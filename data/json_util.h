// Internal helpers of the dataset loaders (not part of the public API): reading JSON files with errors
// that name the file, typed field access that reports the field, and the skip-or-fail policy.
#pragma once
#include <nlohmann/json.hpp>

#include <stdexcept>
#include <string>

#include "data/datasets.h"
#include "runtime/error.h"

namespace vlp::data::detail {

using json = nlohmann::json;

// A problem with one record; the loader adds file and record and then fails or skips.
struct BadRecord : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// The whole file as text ("cannot open" error naming `what` and the path).
std::string read_text_file(const std::string& path, const char* what);
// Parses a whole JSON file; invalid or truncated JSON is an error naming the file and the position.
json read_json_file(const std::string& path, const char* what);

// Field access: BadRecord("field 'x' is missing" / "field 'x' is not a string (got number)").
const json& field(const json& record, const char* name);
bool has_field(const json& record, const char* name);
std::string get_string(const json& record, const char* name);
int64_t get_int(const json& record, const char* name);
// A string, or an integer written as its decimal digits (ids stored either way).
std::string get_id_string(const json& record, const char* name);
std::string get_optional_string(const json& record, const char* name);
// {answer: score} object -> labels sorted by answer; scores must be numbers.
std::vector<Label> get_label_dict(const json& record, const char* name);

// Checks the image against options.images (BadRecord when absent from a given index).
void check_image(const LoadOptions& options, const std::string& image_id);
// Applies the vocabulary policy to labels: labels outside options.vocab are dropped (counted) when
// options.drop_unknown_labels, else BadRecord naming the label.
void check_labels(const LoadOptions& options, std::vector<Label>& labels, LoadReport& report);

// A bad record: the error "<file>: <where>: <message>", or with options.skip_bad a counted skip.
void reject(const LoadOptions& options, LoadReport& report, const std::string& where, const std::string& message);

// Runs one record's parsing (counted in report.records); a BadRecord goes to reject. Returns true when
// the record was accepted.
template <class F>
bool handle_record(const LoadOptions& options, LoadReport& report, const std::string& where, F&& parse) {
  ++report.records;
  try {
    parse();
    return true;
  } catch (const BadRecord& e) {
    reject(options, report, where, e.what());
    return false;
  }
}

// "COCO_val2014_000000391895" -> 391895 (or -1 when the id is not of that form).
int64_t coco_id_from_image_id(const std::string& image_id);
// File name without directory and extension.
std::string file_stem(const std::string& filename);

}  // namespace vlp::data::detail
