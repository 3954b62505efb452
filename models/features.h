// Visual feature extraction: a frozen vision tower (ViT or CLIP vision) run once over a set of images, its
// features stored on disk so that training epochs read them instead of running the tower again.
//
// On disk, a directory holds
//   features-00000.safetensors, ...  shards of up to shard_size images: one tensor per image, named by its id,
//                                    [tokens, D] (grid / patch features) or [D] (pooled features)
//   index.json                       what was extracted (tower, kind, shapes, dtype) and which ids each finished
//                                    shard holds
// Shard k holds images k*shard_size .. (k+1)*shard_size-1 of the (deduplicated) list in the order given, so a
// run that stopped part-way resumes: shards already written with exactly their ids are skipped. Each shard and
// the index are written to a temporary file in the same directory and renamed into place, so a crash never
// leaves a partial file under a final name. A directory extracted with other settings is an error, not mixed in.
//
// Images are read through a caller-supplied loader (models/ does not depend on data/): for the in21k ViT,
//   [](const std::string& path) { return vit_transform(load_image(path)); }           (data/image.h)
// and for CLIP clip_transform (or vladapter_clip_transform for VL-Adapter's features).
#pragma once
#include <functional>
#include <list>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "models/clip_vision.h"
#include "models/vit.h"

namespace vlp {

// A vision tower seen as a function of a batch of images. The towers below run frozen (no graph is recorded),
// in eval mode, and refer to the model, which must outlive them.
struct VisionTower {
  std::string name;  // recorded in the index; a directory is only reused by a tower of the same name
  std::function<VisionOutput(const Tensor& pixel_values)> forward;
};
// interpolate_pos_encoding lets images of other sizes through (position embeddings resampled).
VisionTower frozen_tower(const ViTModel& model, const std::string& name = "vit", bool interpolate_pos_encoding = false);
VisionTower frozen_tower(const CLIPVisionModel& model, const std::string& name = "clip-vision",
                         bool interpolate_pos_encoding = false);

enum class FeatureKind {
  Patches,   // every patch token, row-major over the grid: [gh*gw, D]
  Grid,      // the patch grid adaptive-max-pooled to grid_h x grid_w (e.g. 7 x 7): [grid_h*grid_w, D]
  Pooled,    // the tower's pooled output (ViT: the tanh pooler, or the final CLS state without one;
             // CLIP: post_layernorm(CLS)): [D]
  Projected  // CLIP's image_embeds (visual_projection of the pooled output): [projection_dim]
};
const char* feature_kind_name(FeatureKind kind);  // "patches", "grid", "pooled", "projected"

struct FeatureOptions {
  FeatureKind kind = FeatureKind::Grid;
  int64_t grid_h = 7, grid_w = 7;  // FeatureKind::Grid only
  int64_t shard_size = 1024;       // images per shard file
  int64_t batch_size = 16;         // images per tower forward
  DType dtype = DType::F32;        // stored dtype (F16 / BF16 halve the disk)
  // Called after each shard with (images done, images in total), skipped shards included.
  std::function<void(int64_t done, int64_t total)> progress;
};

struct ImageRef {
  std::string id;    // the key features are stored under (COCO image id, GQA imageId, NLVR2 image name, ...)
  std::string path;  // the file the loader reads
};

// The image as the tower takes it: [C, H, W] float, normalised.
using ImageLoader = std::function<Tensor(const std::string& path)>;

struct ExtractionReport {
  int64_t images = 0;            // distinct ids
  int64_t shards = 0;
  int64_t shards_skipped = 0;    // already on disk from an earlier run
  int64_t images_extracted = 0;  // run through the tower by this call
};

// Extracts features of every image into `directory` (created when missing). Duplicate ids must name the same
// path and are extracted once; an id may not be empty.
ExtractionReport extract_features(const VisionTower& tower, const std::vector<ImageRef>& images,
                                  const ImageLoader& load, const std::string& directory,
                                  const FeatureOptions& options = {});

// Features of one image batch as extract_features stores them: [B, tokens, D] or [B, D] in the tower's dtype.
Tensor image_features(const VisionOutput& out, const FeatureOptions& options);

// Reads a feature directory. Shards are memory-mapped on first use (runtime/safetensors) and the most recently
// used `cached_shards` kept mapped. Safe to call from several threads (data-loader workers).
class FeatureStore {
 public:
  explicit FeatureStore(const std::string& directory, int64_t cached_shards = 8);

  const std::string& tower() const { return tower_; }
  FeatureKind kind() const { return kind_; }
  const Shape& feature_shape() const { return feature_shape_; }  // per image: [tokens, D] or [D]
  DType dtype() const { return dtype_; }
  int64_t size() const { return int64_t(shard_of_.size()); }
  bool contains(const std::string& id) const { return shard_of_.count(id) > 0; }
  std::vector<std::string> ids() const;

  // One image's features, converted to F32; an error naming the id and directory when absent.
  Tensor get(const std::string& id);
  // Several images' features stacked: [N, ...feature_shape].
  Tensor batch(const std::vector<std::string>& ids);

 private:
  const std::map<std::string, Tensor>& shard(int64_t index);

  std::string directory_, tower_;
  FeatureKind kind_ = FeatureKind::Grid;
  Shape feature_shape_;
  DType dtype_ = DType::F32;
  std::vector<std::string> shard_files_;
  std::map<std::string, int64_t> shard_of_;
  int64_t cached_shards_;
  std::mutex mutex_;
  std::list<std::pair<int64_t, std::map<std::string, Tensor>>> cache_;  // most recently used first
};

}  // namespace vlp
