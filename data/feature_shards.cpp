// Feature directories of `vlpeft extract-features` (see feature_shards.h).
#include "data/feature_shards.h"

#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>

#include <nlohmann/json.hpp>

#include "runtime/error.h"
#include "runtime/safetensors.h"

namespace vlp::data {

namespace fs = std::filesystem;
using json = nlohmann::json;

FeatureShardIndex read_feature_shard_index(const std::string& dir) {
  const fs::path path = fs::path(dir) / "index.json";
  const std::string src = path.string();
  std::ifstream in(path);
  VLP_CHECK(in, src, ": cannot open (not a feature directory of vlpeft extract-features?)");
  json j = json::parse(in, nullptr, false);
  VLP_CHECK(!j.is_discarded() && j.is_object(), src, ": not valid JSON");
  VLP_CHECK(j.value("format", "") == "vlpeft-features", src, ": not a vlpeft feature index (format ",
            j.contains("format") ? j["format"].dump() : std::string("missing"), ")");
  VLP_CHECK(j.value("version", 0) == 1, src, ": version ", j.value("version", 0), " is not supported (expected 1)");
  FeatureShardIndex index;
  index.directory = dir;
  index.tower = j.value("tower", "");
  index.kind = j.value("kind", "");
  VLP_CHECK(dtype_from_name(j.value("dtype", ""), &index.dtype), src, ": unknown dtype ",
            j.contains("dtype") ? j["dtype"].dump() : std::string("(missing)"));
  try {
    if (j.contains("feature_shape")) index.feature_shape = j["feature_shape"].get<Shape>();
    for (const json& s : j.value("shards", json::array())) {
      const std::string file = (fs::path(dir) / s.at("file").get<std::string>()).string();
      for (const auto& id : s.at("ids").get<std::vector<std::string>>()) {
        auto [it, inserted] = index.shards.path_of.emplace(id, file);
        VLP_CHECK(inserted, src, ": image '", id, "' is listed in two shards, ", it->second, " and ", file);
      }
    }
  } catch (const json::exception& e) {
    VLP_FAIL(src, ": malformed field (", e.what(), ")");
  }
  return index;
}

ImagePathFn feature_shard_files(const FeatureShardIndex& index) {
  return [shards = index.shards.path_of, dir = index.directory](const std::string& id) {
    auto it = shards.find(id);
    VLP_CHECK(it != shards.end(), "no features for image '", id, "' in ", dir, " (not extracted, or its shard is unfinished)");
    return it->second;
  };
}

Tensor read_shard_features(const std::string& shard_path, const std::string& image_id) {
  SafetensorsFile f = load_safetensors(shard_path);
  const Tensor* t = f.find(image_id);
  VLP_CHECK(t, shard_path, ": no tensor for image '", image_id, "'");
  return convert(*t, DType::F32, Device::cpu());  // a copy: the mapping is released when f goes
}

Tensor read_image_features(const FeatureShardIndex& index, const std::vector<std::string>& image_ids) {
  VLP_CHECK(!image_ids.empty(), "read_image_features: no image ids");
  ImagePathFn shard_of = feature_shard_files(index);
  // Group by shard so each file is mapped once.
  std::map<std::string, std::vector<size_t>> by_shard;
  for (size_t i = 0; i < image_ids.size(); ++i) by_shard[shard_of(image_ids[i])].push_back(i);
  Shape shape = index.feature_shape;
  Tensor out;
  int64_t row = 0;
  for (const auto& [file, rows] : by_shard) {
    SafetensorsFile f = load_safetensors(file);
    for (size_t i : rows) {
      const Tensor* t = f.find(image_ids[i]);
      VLP_CHECK(t, file, ": no tensor for image '", image_ids[i], "' that ", index.directory,
                "/index.json places there");
      if (!out.defined()) {
        if (shape.empty()) shape = t->shape();
        Shape all = {int64_t(image_ids.size())};
        all.insert(all.end(), shape.begin(), shape.end());
        out = empty(all, DType::F32);
        row = t->numel();
      }
      VLP_CHECK(t->shape() == shape, file, ": image '", image_ids[i], "' has features ", shape_str(t->shape()),
                ", the index says ", shape_str(shape));
      Tensor v = convert(*t, DType::F32, Device::cpu());
      std::memcpy(out.data<float>() + int64_t(i) * row, v.data<float>(), size_t(row) * sizeof(float));
    }
  }
  return out;
}

}  // namespace vlp::data
