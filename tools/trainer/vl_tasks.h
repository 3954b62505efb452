// Synthetic vision-language tasks for the trainer and the demo, drawn in memory with data/synthetic.h's
// scene renderer: 1-3 coloured shapes on a 2x2 grid, and per task a question whose answer is a function of
// the pixels, balanced so text alone stays at chance:
//   count       "how many objects ?"            -> one | two | three
//   color       "is there a <color> object ?"   -> yes | no
//   shape       "is there a <shape> ?"          -> yes | no
//   object_color "what color is the object ?"   -> red | green | blue | yellow (one object in the scene)
//   what_color  "what color is the <shape> ?"   -> red | green | blue | yellow (the shape occurs once)
//   color_shape "is there a <color> <shape> ?"  -> yes | no (half the "no" scenes hold a near miss)
//   count_color "how many <color> objects ?"    -> one | two (fewer than all objects: the total count is wrong)
// Visual input, one of (chosen by the trainer's vision_tower key):
//   features  the image cut into patch x patch squares, each flattened (values / 255 - 0.5) - the input of a
//             linear patch embedding (the VL model's W_f), one visual token per patch (vision_tower none);
//   pixels    the image [3, H, W] normalised as transformers' ViTImageProcessor does (rescale by 1/255, then
//             mean 0.5, std 0.5: values / 127.5 - 1), for the VL model's ViT tower (vision_tower vit).
// Word-level vocabulary: 0 <s>, 1 <pad>, 2 </s>, words, then 16 <vis_extra_id_k> rows at the end.
#pragma once
#include <cstdint>
#include <string>
#include <vector>
#include "data/image.h"
#include "runtime/tensor.h"

namespace vlp::trainer {

struct VLExample {
  std::vector<float> feats;             // [n_patches * patch_dim] (feature examples)
  std::vector<uint8_t> image;           // [H, W, 3] RGB bytes (pixel examples; collate normalises them)
  std::vector<int64_t> question;        // token ids, </s> appended
  std::vector<int64_t> answer;          // token ids, </s> appended
  std::string answer_text;
};

struct VLBatch {
  std::string task;
  int task_index = 0;
  Tensor input_ids, attention_mask;  // [B, T] I64
  Tensor feats;                      // [B, N, F] F32 (feature examples), or undefined
  Tensor pixels;                     // [B, 3, H, W] F32 (pixel examples), or undefined
  Tensor labels;                     // [B, L] I64 (-100 = padding)
  std::vector<std::string> answers;
};

struct Vocab {
  std::vector<std::string> words;
  int64_t size() const { return int64_t(words.size()) + 16; }  // + visual object-order rows
  int64_t id(const std::string& w) const;
  std::string decode(const std::vector<int64_t>& ids) const;  // stops at </s>, skips <s> / <pad>
};
const Vocab& vl_vocab();
constexpr int64_t kBos = 0, kPad = 1, kEos = 2;

const std::vector<std::string>& known_tasks();
// The accuracy of guessing a task's answer uniformly (1 / the number of possible answers).
double task_chance(const std::string& task);
// Example `index` of a task's split ("train" | "eval"), deterministic in (seed, task, split, index); with
// `pixels` the image itself instead of its patch features (the scene is the same).
VLExample make_example(const std::string& task, const std::string& split, int64_t index, uint64_t seed,
                       int64_t image_size, int64_t patch, bool task_prefix, bool pixels = false);
std::vector<VLExample> make_split(const std::string& task, const std::string& split, int64_t n, uint64_t seed,
                                  int64_t image_size, int64_t patch, bool task_prefix, bool pixels = false);
// ViTImageProcessor's normalisation of an 8-bit value (mean 0.5, std 0.5): v / 127.5 - 1.
inline float vit_pixel(uint8_t v) { return float(v) / 127.5f - 1.0f; }
// The two visual inputs above for any image (resized to image_size x image_size first when it has another size:
// bilinear, PIL's rules, aspect not kept), as the trainer, the file tasks and `vlpeft generate` feed them:
// [n_patches * patch_dim] patch features, or [3, image_size, image_size] vit_pixel values.
std::vector<float> image_patch_features(const Image& image, int64_t image_size, int64_t patch);
std::vector<float> image_pixels(const Image& image, int64_t image_size);
// Pixel examples fill VLBatch::pixels, feature examples VLBatch::feats (n_patches x patch_dim each).
VLBatch collate(const std::string& task, int task_index, const std::vector<const VLExample*>& examples,
                int64_t n_patches, int64_t patch_dim);

}  // namespace vlp::trainer
