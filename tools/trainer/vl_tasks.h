// Synthetic vision-language tasks for the trainer and the demo, drawn in memory with data/synthetic.h's
// scene renderer: 1-3 coloured shapes on a 2x2 grid, and per task a question whose answer is a function of
// the pixels, balanced so text alone stays at chance:
//   count       "how many objects ?"            -> one | two | three
//   color       "is there a <color> object ?"   -> yes | no
//   shape       "is there a <shape> ?"          -> yes | no
//   what_color  "what color is the <shape> ?"   -> red | green | blue | yellow (the shape occurs once)
//   color_shape "is there a <color> <shape> ?"  -> yes | no (half the "no" scenes hold a near miss)
// Visual features: the image cut into patch x patch squares, each flattened (values / 255 - 0.5) - the
// input of a ViT-style linear patch embedding (the VL model's W_f), one visual token per patch.
// Word-level vocabulary: 0 <s>, 1 <pad>, 2 </s>, words, then 16 <vis_extra_id_k> rows at the end.
#pragma once
#include <cstdint>
#include <string>
#include <vector>
#include "runtime/tensor.h"

namespace vlp::trainer {

struct VLExample {
  std::vector<float> feats;             // [n_patches * patch_dim]
  std::vector<int64_t> question;        // token ids, </s> appended
  std::vector<int64_t> answer;          // token ids, </s> appended
  std::string answer_text;
};

struct VLBatch {
  std::string task;
  int task_index = 0;
  Tensor input_ids, attention_mask;  // [B, T] I64
  Tensor feats;                      // [B, N, F] F32
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
// Example `index` of a task's split ("train" | "eval"), deterministic in (seed, task, split, index).
VLExample make_example(const std::string& task, const std::string& split, int64_t index, uint64_t seed,
                       int64_t image_size, int64_t patch, bool task_prefix);
std::vector<VLExample> make_split(const std::string& task, const std::string& split, int64_t n, uint64_t seed,
                                  int64_t image_size, int64_t patch, bool task_prefix);
VLBatch collate(const std::string& task, int task_index, const std::vector<const VLExample*>& examples,
                int64_t n_patches, int64_t patch_dim);

}  // namespace vlp::trainer
