// A synthetic vision-language benchmark written in the official file formats, so the real loaders read
// it: procedurally drawn scenes of 1-4 coloured shapes (circle, square, triangle) with VQAv2 questions
// and annotations, GQA questions, NLVR2 statements about image pairs and COCO captions. Deterministic
// in the seed (vlp::Generator streams named by kind and index: an image's content does not depend on
// how many other images are made).
//
// It needs vision: questions are generated so that the answer to each question string is balanced
// (the count asked about is uniform in 1..4, colours are uniform, yes/no and NLVR2 true/false are 50/50,
// and each NLVR2 sentence is judged true on one image pair and false on the other), so a text-only
// model stays near chance; answers are a function of the pixels, so a small model can learn them.
//
// Layout under out_dir:
//   coco/dataset_coco.json                       Karpathy split file (train, restval, val, test)
//   coco/{train2014,val2014}/COCO_{split}_{id:012d}.jpg
//   vqa/v2_OpenEnded_mscoco_{train2014,val2014}_questions.json, vqa/v2_mscoco_{...}_annotations.json
//   vqa/karpathy_{train,val,test}.json, vqa/trainval_ans2label.json, vqa/trainval_label2ans.json
//   gqa/images/{imageId}.jpg, gqa/questions1.2/{train,val,testdev}_balanced_questions.json,
//   gqa/{train,valid,testdev}.json               (VL-T5 preprocessed lists)
//   nlvr2/{train,dev,test1}.json                 (JSON lines), nlvr2/train/{directory}/*.png,
//   nlvr2/{dev,test1}/*.png
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace vlp::data {

struct SyntheticOptions {
  uint64_t seed = 0;
  int image_size = 32;          // square images, at least 24 pixels
  // COCO images per Karpathy split (VQA questions and captions are about these).
  int64_t coco_train = 48, coco_restval = 8, coco_val = 8, coco_test = 8;
  int questions_per_image = 3;  // VQA: one counting, one colour/shape, one yes/no question (1..3)
  int64_t gqa_train = 32, gqa_val = 8, gqa_testdev = 8;  // GQA images (two questions each)
  int64_t nlvr2_train = 24, nlvr2_dev = 8, nlvr2_test = 8;  // NLVR2 sentence sets (two image pairs each)
  int jpeg_quality = 95;        // COCO and GQA images are JPEG (no chroma subsampling above 90)
};

struct SyntheticSummary {
  std::string root;
  int64_t coco_images = 0, captions = 0, vqa_questions = 0;
  int64_t gqa_images = 0, gqa_questions = 0;
  int64_t nlvr2_examples = 0, nlvr2_images = 0;
  std::vector<std::string> files;  // every file written, relative to root, in writing order
};

// Writes the benchmark under out_dir (created if needed; existing files are overwritten).
SyntheticSummary make_synthetic_data(const std::string& out_dir, const SyntheticOptions& options = {});

// ---- scenes (exposed for tests and for drawing images directly) -----------------------------------

enum class SynthShape { circle, square, triangle };
enum class SynthColor { red, green, blue, yellow };
const char* synth_shape_name(SynthShape s);   // "circle", "square", "triangle"
const char* synth_color_name(SynthColor c);   // "red", "green", "blue", "yellow"
// The RGB value a colour is drawn with; the background is synth_background().
void synth_color_rgb(SynthColor c, uint8_t rgb[3]);
void synth_background(uint8_t rgb[3]);

struct SynthObject {
  SynthShape shape = SynthShape::circle;
  SynthColor color = SynthColor::red;
  int cx = 0, cy = 0, radius = 0;  // centre and half-extent in pixels
  int cell = 0;                    // grid cell (row-major) the object sits in; no two objects share one
};

struct SynthScene {
  int size = 32;
  int grid = 2;  // objects sit in distinct cells of a grid x grid layout
  std::vector<SynthObject> objects;
};

// RGB bytes, row-major HWC, size * size * 3.
std::vector<uint8_t> render_scene(const SynthScene& scene);

}  // namespace vlp::data
