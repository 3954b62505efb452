// `vlpeft extract-features` (see cli_features.h).
#include "tools/trainer/cli_features.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>

#include "data/datasets.h"
#include "data/image.h"
#include "models/config.h"
#include "runtime/error.h"

namespace vlp::trainer {
namespace {

namespace fs = std::filesystem;

bool is_vit(const std::string& model_type) { return model_type == "vit"; }
bool is_clip(const std::string& model_type) { return model_type == "clip" || model_type == "clip_vision_model"; }

std::string model_type_of(const std::string& model_dir) {
  VLP_CHECK(fs::is_directory(model_dir), "extract-features: --model '", model_dir,
            "' is not a directory (expected a transformers checkpoint: config.json + model.safetensors)");
  const std::string t = read_model_type(model_dir);
  VLP_CHECK(is_vit(t) || is_clip(t), "extract-features: ", model_dir, "/config.json has model_type '", t,
            "'; a vision tower is expected (vit, clip or clip_vision_model)");
  return t;
}

std::vector<ImageRef> from_directory(const std::string& dir) {
  data::ImageIndex index = data::scan_image_dir(dir, {".jpg", ".jpeg", ".png"});
  std::vector<ImageRef> out;
  for (const auto& [id, path] : index.path_of) out.push_back({id, path});
  std::sort(out.begin(), out.end(), [](const ImageRef& a, const ImageRef& b) { return a.id < b.id; });
  return out;
}

std::vector<ImageRef> from_list(const std::string& file) {
  std::ifstream in(file);
  VLP_CHECK(in, "extract-features: cannot read the image list '", file, "'");
  const fs::path base = fs::path(file).parent_path();
  std::vector<ImageRef> out;
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
    if (line.empty() || line[0] == '#') continue;
    const size_t tab = line.find('\t');
    std::string id = tab == std::string::npos ? "" : line.substr(0, tab);
    fs::path path = tab == std::string::npos ? line : line.substr(tab + 1);
    if (path.is_relative()) path = base / path;
    if (id.empty()) id = path.stem().string();
    VLP_CHECK(!path.empty() && !id.empty(), file, ":", n, ": expected PATH or ID<tab>PATH");
    out.push_back({id, path.string()});
  }
  return out;
}

std::vector<ImageRef> from_dataset(const std::string& file, const std::string& kind, const std::string& root) {
  VLP_CHECK(!root.empty(), "extract-features: a dataset file (--dataset ", kind,
            ") needs --image-root DIR, the directory holding its image files");
  const data::ImageIndex index = data::scan_image_dir(root, {".jpg", ".jpeg", ".png"});
  data::LoadOptions o;
  o.images = &index;  // every image a record names must be there: an error naming the record otherwise
  std::vector<std::string> ids;
  if (kind == "vqa" || kind == "vqa-karpathy") {
    auto set = kind == "vqa" ? data::load_vqa_official(file, "", o) : data::load_vqa_karpathy(file, o);
    for (const auto& e : set.examples) ids.push_back(e.image_id);
  } else if (kind == "gqa" || kind == "gqa-vlt5") {
    auto set = kind == "gqa" ? data::load_gqa_official(file, o) : data::load_gqa_preprocessed(file, o);
    for (const auto& e : set.examples) ids.push_back(e.image_id);
  } else if (kind == "nlvr2" || kind == "nlvr2-vlt5") {
    auto set = kind == "nlvr2" ? data::load_nlvr2_official(file, o) : data::load_nlvr2_preprocessed(file, o);
    for (const auto& e : set.examples) ids.insert(ids.end(), {e.image_ids[0], e.image_ids[1]});
  } else if (kind == "coco-karpathy" || kind == "coco-captions") {
    auto set = kind == "coco-karpathy" ? data::load_coco_karpathy(file, {}, o) : data::load_coco_captions(file, o);
    for (const auto& e : set.images) ids.push_back(e.image_id);
  } else {
    std::string known;
    for (const auto& k : feature_dataset_kinds()) known += (known.empty() ? "" : ", ") + k;
    VLP_FAIL("extract-features: unknown --dataset '", kind, "' (known: ", known, ")");
  }
  std::vector<ImageRef> out;
  std::set<std::string> seen;
  for (const auto& id : ids)
    if (seen.insert(id).second) out.push_back({id, index.path_of.at(id)});
  return out;
}

}  // namespace

const std::vector<std::string>& feature_dataset_kinds() {
  static const std::vector<std::string> k = {"vqa", "vqa-karpathy", "gqa", "gqa-vlt5", "nlvr2", "nlvr2-vlt5",
                                             "coco-karpathy", "coco-captions"};
  return k;
}

std::vector<ImageRef> list_images(const std::string& images, const std::string& dataset, const std::string& image_root) {
  VLP_CHECK(!images.empty(), "extract-features: --images is required (a directory, a list file or a dataset file)");
  VLP_CHECK(fs::exists(images), "extract-features: --images '", images, "' does not exist");
  if (fs::is_directory(images)) {
    VLP_CHECK(dataset.empty(), "extract-features: --dataset names a dataset file, but --images '", images,
              "' is a directory");
    return from_directory(images);
  }
  if (!dataset.empty()) return from_dataset(images, dataset, image_root);
  const std::string ext = fs::path(images).extension().string();
  VLP_CHECK(ext != ".json" && ext != ".jsonl", "extract-features: '", images,
            "' looks like a dataset file: say which with --dataset KIND (and --image-root DIR)");
  return from_list(images);
}

ImageLoader image_loader_for(const std::string& model_dir, const std::string& transform) {
  const std::string type = model_type_of(model_dir);
  std::string t = transform;
  if (t == "auto") t = is_vit(type) ? "vit" : "clip";
  int size = 0;
  if (is_vit(type)) {
    const ViTConfig c = read_vit_config(model_dir);
    VLP_CHECK(c.image_height == c.image_width, "extract-features: non-square ViT image size ", c.image_height, "x",
              c.image_width, " is not supported");
    size = int(c.image_height);
  } else {
    size = int(read_clip_vision_config(model_dir).image_size);
  }
  if (t == "vit") return [size](const std::string& p) { return vit_transform(load_image(p), size); };
  if (t == "clip") return [size](const std::string& p) { return clip_transform(load_image(p), size); };
  if (t == "vladapter-clip")
    return [size](const std::string& p) { return vladapter_clip_transform(load_image(p), size); };
  VLP_FAIL("extract-features: unknown --transform '", transform, "' (auto, vit, clip, vladapter-clip)");
}

ExtractionReport extract_features_command(const ExtractFeaturesArgs& a) {
  VLP_CHECK(!a.out_dir.empty(), "extract-features: --out DIR is required");
  FeatureOptions o;
  if (a.mode == "grid") o.kind = FeatureKind::Grid;
  else if (a.mode == "pooled") o.kind = FeatureKind::Pooled;
  else if (a.mode == "patches") o.kind = FeatureKind::Patches;
  else if (a.mode == "projected") o.kind = FeatureKind::Projected;
  else VLP_FAIL("extract-features: unknown --mode '", a.mode, "' (grid, pooled, patches, projected)");
  VLP_CHECK(a.grid > 0, "extract-features: --grid must be positive, got ", a.grid);
  o.grid_h = o.grid_w = a.grid;
  VLP_CHECK(a.batch > 0 && a.shard_size > 0, "extract-features: --batch and --shard-size must be positive");
  o.batch_size = a.batch;
  o.shard_size = a.shard_size;
  if (a.dtype == "f32") o.dtype = DType::F32;
  else if (a.dtype == "f16") o.dtype = DType::F16;
  else if (a.dtype == "bf16") o.dtype = DType::BF16;
  else VLP_FAIL("extract-features: unknown --dtype '", a.dtype, "' (f32, f16, bf16)");
  o.progress = a.progress;

  const std::string type = model_type_of(a.model_dir);
  ImageLoader load = image_loader_for(a.model_dir, a.transform);
  const std::vector<ImageRef> images = list_images(a.images, a.dataset, a.image_root);
  VLP_CHECK(!images.empty(), "extract-features: no image found in '", a.images, "'");
  if (!a.resume && fs::exists(a.out_dir)) {  // only what an extraction writes; other files stay
    for (const auto& e : fs::directory_iterator(a.out_dir)) {
      const std::string name = e.path().filename().string();
      if (name == "index.json" || (name.rfind("features-", 0) == 0 && e.path().extension() == ".safetensors"))
        fs::remove(e.path());
    }
  }
  // The tower's name goes into the index: a later run resumes only with the same checkpoint (by directory name)
  // and preprocessing.
  std::string transform = a.transform == "auto" ? (is_vit(type) ? "vit" : "clip") : a.transform;
  fs::path model_path = fs::path(a.model_dir).lexically_normal();
  if (model_path.filename().empty()) model_path = model_path.parent_path();  // "dir/"
  const std::string name = type + ":" + model_path.filename().string() + ":" + transform;
  if (is_vit(type)) {
    const ViTConfig c = read_vit_config(a.model_dir);
    const bool classifier = std::find(c.architectures.begin(), c.architectures.end(), "ViTForImageClassification") !=
                            c.architectures.end();
    VLP_CHECK(o.kind != FeatureKind::Projected, "extract-features: --mode projected needs a CLIP tower");
    auto model = load_vit_model(a.model_dir, !classifier);  // a classifier checkpoint has no pooler
    return extract_features(frozen_tower(*model, name), images, load, a.out_dir, o);
  }
  auto model = load_clip_vision_model(a.model_dir, o.kind == FeatureKind::Projected);
  return extract_features(frozen_tower(*model, name), images, load, a.out_dir, o);
}

}  // namespace vlp::trainer
