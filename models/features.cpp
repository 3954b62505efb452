#include "models/features.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "runtime/safetensors.h"

namespace vlp {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

constexpr const char* kFormat = "vlpeft-features";
constexpr int kVersion = 1;

std::string shard_name(int64_t k) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "features-%05lld.safetensors", static_cast<long long>(k));
  return buf;
}

// Writes the index through a temporary file in the same directory, renamed over `path` once complete (rename is
// atomic within a file system, so readers and later runs see the old index or the new one, never a partial one).
// Shards are written by save_safetensors, which does the same.
void write_text_atomically(const fs::path& path, const std::string& text) {
  fs::path tmp = path;
  tmp += ".tmp-" + std::to_string(::getpid());
  try {
    std::ofstream out(tmp, std::ios::binary);
    VLP_CHECK(out, "cannot write ", tmp.string());
    out << text;
    out.close();
    VLP_CHECK(out, "error while writing ", tmp.string());
    fs::rename(tmp, path);
  } catch (...) {
    std::error_code ignored;
    fs::remove(tmp, ignored);
    throw;
  }
}

json read_json_file(const fs::path& path) {
  std::ifstream in(path);
  VLP_CHECK(in, "cannot open ", path.string());
  try {
    return json::parse(in);
  } catch (const json::exception& e) {
    VLP_FAIL(path.string(), ": not valid JSON (", e.what(), ")");
  }
}

bool kind_from_name(const std::string& name, FeatureKind* kind) {
  for (FeatureKind k : {FeatureKind::Patches, FeatureKind::Grid, FeatureKind::Pooled, FeatureKind::Projected})
    if (name == feature_kind_name(k)) {
      *kind = k;
      return true;
    }
  return false;
}

// The settings a directory's features were made with; a later run must agree on all of them.
json settings_of(const VisionTower& tower, const FeatureOptions& o) {
  json s = {{"format", kFormat},       {"version", kVersion},
            {"tower", tower.name},     {"kind", feature_kind_name(o.kind)},
            {"dtype", std::string(dtype_name(o.dtype))}, {"shard_size", o.shard_size}};
  if (o.kind == FeatureKind::Grid) s["grid"] = {o.grid_h, o.grid_w};
  return s;
}

// Whether a shard file is complete and holds exactly these ids, of this dtype (and shape, once known). Reads the
// header only (which runtime/safetensors validates against the file size): a resumed run checks every shard
// without reading the features themselves.
bool shard_holds(const fs::path& file, const std::vector<std::string>& ids, DType dtype, const json& feature_shape) {
  SafetensorsHeader header;
  try {
    header = read_safetensors_header(file.string());
  } catch (const Error&) {
    return false;  // damaged or foreign: extract again
  }
  std::set<std::string> want(ids.begin(), ids.end()), seen;
  for (const SafetensorsEntry& e : header.entries) {
    if (!want.count(e.name) || e.dtype != dtype) return false;
    if (!feature_shape.is_null() && json(e.shape) != feature_shape) return false;
    seen.insert(e.name);
  }
  return seen == want && header.entries.size() == ids.size();
}

}  // namespace

const char* feature_kind_name(FeatureKind kind) {
  switch (kind) {
    case FeatureKind::Patches: return "patches";
    case FeatureKind::Grid: return "grid";
    case FeatureKind::Pooled: return "pooled";
    case FeatureKind::Projected: return "projected";
  }
  return "?";
}

VisionTower frozen_tower(const ViTModel& model, const std::string& name, bool interpolate_pos_encoding) {
  return {name, [&model, interpolate_pos_encoding](const Tensor& pixels) {
            NoGradGuard no_grad;
            return model.forward(pixels, ForwardContext{}, interpolate_pos_encoding);
          }};
}

VisionTower frozen_tower(const CLIPVisionModel& model, const std::string& name, bool interpolate_pos_encoding) {
  return {name, [&model, interpolate_pos_encoding](const Tensor& pixels) {
            NoGradGuard no_grad;
            return model.forward(pixels, ForwardContext{}, interpolate_pos_encoding);
          }};
}

Tensor image_features(const VisionOutput& out, const FeatureOptions& o) {
  switch (o.kind) {
    case FeatureKind::Patches: return out.patch_tokens();
    case FeatureKind::Grid: {
      VLP_CHECK(o.grid_h > 0 && o.grid_w > 0, "image_features: grid ", o.grid_h, "x", o.grid_w, " must be positive");
      Tensor patches = out.patch_tokens();
      const int64_t B = patches.size(0), D = patches.size(2);
      Tensor grid = reshape(patches, {B, out.grid_h, out.grid_w, D});
      return reshape(adaptive_max_pool_grid(grid, o.grid_h, o.grid_w), {B, o.grid_h * o.grid_w, D});
    }
    case FeatureKind::Pooled:
      return out.pooler_output.defined() ? out.pooler_output : select(out.last_hidden_state, 1, 0);
    case FeatureKind::Projected:
      VLP_CHECK(out.image_embeds.defined(), "image_features: 'projected' features need a tower with a projection "
                                            "(CLIPVisionModel with visual_projection)");
      return out.image_embeds;
  }
  VLP_FAIL("image_features: unknown feature kind");
}

ExtractionReport extract_features(const VisionTower& tower, const std::vector<ImageRef>& images,
                                  const ImageLoader& load, const std::string& directory, const FeatureOptions& o) {
  VLP_CHECK(o.shard_size > 0 && o.batch_size > 0, "extract_features: shard_size and batch_size must be positive");
  VLP_CHECK(is_floating(o.dtype), "extract_features: features are stored as a floating dtype, not ", o.dtype);
  VLP_CHECK(tower.forward && load, "extract_features: a tower and an image loader are required");

  // Distinct ids in the order given.
  std::vector<ImageRef> refs;
  std::map<std::string, std::string> path_of;
  for (const ImageRef& r : images) {
    VLP_CHECK(!r.id.empty(), "extract_features: an image id is empty (path ", r.path, ")");
    auto [it, inserted] = path_of.insert({r.id, r.path});
    VLP_CHECK(inserted || it->second == r.path, "extract_features: image id '", r.id, "' names two files, ",
              it->second, " and ", r.path);
    if (inserted) refs.push_back(r);
  }

  const fs::path dir(directory);
  fs::create_directories(dir);
  const fs::path index_path = dir / "index.json";
  json settings = settings_of(tower, o);
  json feature_shape;  // known from the first shard, written or found
  if (fs::exists(index_path)) {
    json old = read_json_file(index_path);
    std::string differences;
    for (const json* keys : {&settings, &old})
      for (auto it = keys->begin(); it != keys->end(); ++it) {
        const std::string& key = it.key();
        if (key == "shards" || key == "feature_shape" || (keys == &old && settings.contains(key))) continue;
        auto show = [&](const json& j) { return j.contains(key) ? j[key].dump() : std::string("(none)"); };
        if (show(old) != show(settings))
          differences += str("\n  ", key, ": ", show(old), " there, ", show(settings), " in this run");
      }
    VLP_CHECK(differences.empty(), "extract_features: ", directory, " holds features made with other settings:",
              differences, "\nuse another directory or remove this one");
    if (old.contains("feature_shape")) feature_shape = old["feature_shape"];
  }

  ExtractionReport report;
  report.images = int64_t(refs.size());
  report.shards = (report.images + o.shard_size - 1) / o.shard_size;
  json shards = json::array();
  auto write_index = [&] {
    json index = settings;
    if (!feature_shape.is_null()) index["feature_shape"] = feature_shape;
    index["shards"] = shards;
    write_text_atomically(index_path, index.dump(1));
  };

  for (int64_t k = 0; k < report.shards; ++k) {
    const int64_t begin = k * o.shard_size, end = std::min(report.images, begin + o.shard_size);
    std::vector<std::string> ids;
    for (int64_t i = begin; i < end; ++i) ids.push_back(refs[size_t(i)].id);
    const fs::path file = dir / shard_name(k);
    const bool done = fs::exists(file) && shard_holds(file, ids, o.dtype, feature_shape);
    if (done) {
      ++report.shards_skipped;
    } else {
      std::vector<std::pair<std::string, Tensor>> out;
      for (int64_t i = begin; i < end;) {
        // A batch of consecutive images of one size (the transforms normally make them all equal).
        std::vector<Tensor> batch;
        Shape shape;
        int64_t j = i;
        for (; j < end && int64_t(batch.size()) < o.batch_size; ++j) {
          const ImageRef& r = refs[size_t(j)];
          Tensor img;
          try {
            img = load(r.path);
          } catch (const std::exception& e) {
            VLP_FAIL("extract_features: image '", r.id, "' (", r.path, "): ", e.what());
          }
          VLP_CHECK(img.defined() && img.dim() == 3, "extract_features: the loader returned ",
                    img.defined() ? shape_str(img.shape()) : std::string("nothing"), " for image '", r.id, "' (",
                    r.path, "), expected [C, H, W]");
          if (!batch.empty() && img.shape() != shape) break;
          shape = img.shape();
          batch.push_back(img);
        }
        Tensor feats;
        {
          NoGradGuard no_grad;
          feats = image_features(tower.forward(stack(batch, 0)), o);
          feats = convert(feats, o.dtype, Device::cpu());
        }
        for (int64_t b = 0; b < int64_t(batch.size()); ++b)
          out.push_back({refs[size_t(i + b)].id, contiguous_raw(select(feats, 0, b).detach())});
        report.images_extracted += int64_t(batch.size());
        i = j;
      }
      json shape_json = json(out.front().second.shape());
      for (const auto& [id, t] : out)
        VLP_CHECK(json(t.shape()) == shape_json, "extract_features: image '", id, "' has features ",
                  shape_str(t.shape()), ", image '", out.front().first, "' ", shape_json.dump(),
                  " (images of different sizes through a tower that keeps every patch?)");
      VLP_CHECK(feature_shape.is_null() || feature_shape == shape_json, "extract_features: shard ", k, " has features ",
                shape_json.dump(), " but ", directory, " holds ", feature_shape.dump(),
                " (images of different sizes through a tower that keeps every patch?)");
      feature_shape = shape_json;
      save_safetensors(file.string(), out, {{"format", kFormat}, {"tower", tower.name}});
    }
    shards.push_back({{"shard", k}, {"file", shard_name(k)}, {"ids", ids}});
    if (!done || k + 1 == report.shards) write_index();
    if (o.progress) o.progress(end, report.images);
  }
  if (report.shards == 0) write_index();
  return report;
}

// ---- reading ----

FeatureStore::FeatureStore(const std::string& directory, int64_t cached_shards)
    : directory_(directory), cached_shards_(std::max<int64_t>(1, cached_shards)) {
  const fs::path index_path = fs::path(directory) / "index.json";
  VLP_CHECK(fs::exists(index_path), "FeatureStore: ", directory, " has no index.json (run extract_features first)");
  json index = read_json_file(index_path);
  const std::string src = index_path.string();
  VLP_CHECK(index.value("format", "") == kFormat, src, ": not a vlpeft feature index");
  VLP_CHECK(index.value("version", 0) == kVersion, src, ": version ", index.value("version", 0),
            " is not supported (expected ", kVersion, ")");
  tower_ = index.value("tower", "");
  VLP_CHECK(kind_from_name(index.value("kind", ""), &kind_), src, ": unknown feature kind ", index["kind"].dump());
  VLP_CHECK(dtype_from_name(index.value("dtype", ""), &dtype_), src, ": unknown dtype ", index["dtype"].dump());
  if (index.contains("feature_shape")) feature_shape_ = index["feature_shape"].get<Shape>();
  for (const json& s : index.value("shards", json::array())) {
    const int64_t k = int64_t(shard_files_.size());
    shard_files_.push_back((fs::path(directory) / s.at("file").get<std::string>()).string());
    for (const auto& id : s.at("ids").get<std::vector<std::string>>()) shard_of_[id] = k;
  }
}

std::vector<std::string> FeatureStore::ids() const {
  std::vector<std::string> out;
  for (const auto& [id, k] : shard_of_) out.push_back(id);
  return out;
}

const std::map<std::string, Tensor>& FeatureStore::shard(int64_t index) {
  for (auto it = cache_.begin(); it != cache_.end(); ++it)
    if (it->first == index) {
      cache_.splice(cache_.begin(), cache_, it);
      return cache_.front().second;
    }
  std::map<std::string, Tensor> tensors;  // views of the memory-mapped file
  for (auto& [name, t] : load_safetensors(shard_files_[size_t(index)]).tensors) tensors[name] = t;
  cache_.push_front({index, std::move(tensors)});
  while (int64_t(cache_.size()) > cached_shards_) cache_.pop_back();
  return cache_.front().second;
}

Tensor FeatureStore::get(const std::string& id) {
  auto it = shard_of_.find(id);
  VLP_CHECK(it != shard_of_.end(), "FeatureStore: no features for image '", id, "' in ", directory_);
  std::lock_guard<std::mutex> lock(mutex_);
  const auto& tensors = shard(it->second);
  auto t = tensors.find(id);
  VLP_CHECK(t != tensors.end(), "FeatureStore: ", shard_files_[size_t(it->second)], " lacks image '", id,
            "' that index.json places there");
  Tensor out = empty(t->second.shape(), DType::F32);  // a copy: the cached shard stays untouched
  copy_(out, t->second);
  return out;
}

Tensor FeatureStore::batch(const std::vector<std::string>& ids) {
  VLP_CHECK(!ids.empty(), "FeatureStore::batch: no ids");
  std::vector<Tensor> rows;
  for (const auto& id : ids) rows.push_back(get(id));
  return stack(rows, 0);
}

}  // namespace vlp
