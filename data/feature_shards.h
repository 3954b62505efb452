// Reading feature directories written by `vlpeft extract-features` (models/features.h extract_features):
//   index.json                       {"format": "vlpeft-features", "version": 1, "tower", "kind", "dtype",
//                                     "feature_shape", "shards": [{"shard", "file", "ids": [...]}], ...}
//   features-00000.safetensors, ...  one tensor per image, named by its image id: [tokens, D] or [D]
// Image ids are the datasets' ids (file stems, datasets.h), so an ImagePathFn over a feature directory maps
// an id to the shard holding it, and read_shard_features takes the image's tensor out of that shard. The
// index lists finished shards only (a shard is added once written), so a directory whose extraction is
// still running or was interrupted reads as the images done so far.
//
// models/features.h FeatureStore reads the same directories with a shard cache for the model side; this is
// the data side's path (no dependency on models/), used by loaders and tools.
#pragma once
#include <string>
#include <vector>

#include "data/datasets.h"
#include "runtime/tensor.h"

namespace vlp::data {

struct FeatureShardIndex {
  std::string directory;
  std::string tower;        // the tower's name as recorded by the extractor
  std::string kind;         // "patches", "grid", "pooled", "projected"
  DType dtype = DType::F32; // stored dtype; reading converts to F32
  Shape feature_shape;      // per image; empty when no shard is finished yet
  ImageIndex shards;        // image id -> shard file
};

// Reads dir/index.json; an error naming the file when it is missing, not a vlpeft feature index, or of
// another version.
FeatureShardIndex read_feature_shard_index(const std::string& dir);
// image id -> shard file (an error naming the id and the directory when it has no features there).
ImagePathFn feature_shard_files(const FeatureShardIndex& index);
// The features of one image from its shard file, as F32 (a copy; the file is memory-mapped while reading).
Tensor read_shard_features(const std::string& shard_path, const std::string& image_id);
// Several images' features stacked: [N, ...feature_shape] F32.
Tensor read_image_features(const FeatureShardIndex& index, const std::vector<std::string>& image_ids);

}  // namespace vlp::data
