// `vlpeft extract-features`: a frozen ViT or CLIP vision tower (a transformers checkpoint directory: config.json
// + model.safetensors) run once over a set of images, the features written as shards (models/features.h) that
// data/feature_shards.h reads back by image id. Resumable: shards already written are skipped.
//
// The images come from
//   a directory        every .jpg / .jpeg / .png under it (recursively); id = file stem, in id order
//   a list file        one image per line: PATH, or ID<tab>PATH (relative paths from the list's directory);
//                      blank lines and lines starting with '#' skipped
//   a dataset file     (--dataset KIND) the images its records name, in first-mention order, looked up by id
//                      (file stem, data/datasets.h) among the files under --image-root; KIND is one of
//                      vqa (official questions json), vqa-karpathy, gqa (official questions json), gqa-vlt5,
//                      nlvr2 (official JSON lines), nlvr2-vlt5, coco-karpathy (dataset_coco.json), coco-captions
// Preprocessing follows the tower (data/image.h): ViT vit_transform (bilinear to the configured size, mean =
// std = 0.5), CLIP clip_transform (shorter side bicubic, centre crop, CLIP mean/std) or, with transform
// "vladapter-clip", VL-Adapter's both-sides resize.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "models/features.h"

namespace vlp::trainer {

struct ExtractFeaturesArgs {
  std::string model_dir;            // HF ViT or CLIP checkpoint directory
  std::string images;               // directory, list file or dataset file
  std::string dataset;              // dataset kind for a dataset file ("" for a directory or list)
  std::string image_root;           // dataset files: where the image files are
  std::string out_dir;
  std::string mode = "grid";        // grid | pooled | patches | projected (CLIP only)
  int64_t grid = 7;                 // grid mode: the patch grid max-pooled to grid x grid
  int64_t batch = 16, shard_size = 1024;
  std::string dtype = "f32";        // f32 | f16 | bf16 (stored)
  std::string transform = "auto";   // auto (by the tower) | vit | clip | vladapter-clip
  bool resume = true;               // false: remove the directory's earlier features first
  std::function<void(int64_t done, int64_t total)> progress;
};

const std::vector<std::string>& feature_dataset_kinds();

// The images to extract, per the rules above.
std::vector<ImageRef> list_images(const std::string& images, const std::string& dataset = "",
                                  const std::string& image_root = "");

// The tower's input for one image file (the preprocessing above) for a checkpoint directory.
ImageLoader image_loader_for(const std::string& model_dir, const std::string& transform = "auto");

ExtractionReport extract_features_command(const ExtractFeaturesArgs& args);

}  // namespace vlp::trainer
