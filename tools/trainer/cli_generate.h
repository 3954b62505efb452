// `vlpeft generate --image FILE [--question TEXT]`: answers a question about an image file (or captions it,
// for a checkpoint trained on a captioning task) with a training checkpoint.
//
// The image reaches the model as the trainer feeds its images (tools/trainer/vl_tasks.h): resized to the
// config's image_size x image_size when it has another size (bilinear, PIL's rules, aspect not kept), cut into
// patch x patch squares in row-major order, each flattened (y, x, channel) with values byte / 255 - 0.5: one
// visual token per square; a checkpoint with a vision tower (vision_tower vit) gets the resized image's pixels
// [3, H, W] as values / 127.5 - 1 instead. The question is tokenised with the checkpoint's word-level vocabulary (vl_vocab():
// lower-cased, "?" split off, unknown words become <unk> and are reported), prefixed "task: " when the config
// uses task prefixes, and </s> appended.
#pragma once
#include <string>
#include <vector>

#include "data/image.h"
#include "models/generate.h"
#include "tools/trainer/trainer.h"

namespace vlp::trainer {

// The config a training checkpoint was trained with (its metadata), with overrides applied. init_from is
// cleared: the checkpoint holds the weights.
TrainConfig checkpoint_config(const std::string& checkpoint, const std::vector<std::string>& overrides = {});

// Token ids of a question for a task (see above); words outside the vocabulary are appended to *unknown.
std::vector<int64_t> question_tokens(const std::string& question, const std::string& task, bool task_prefix,
                                     std::vector<std::string>* unknown = nullptr);

// The task a question belongs to among the session's tasks: named by --task, or by a leading "task:" word,
// or by the synthetic tasks' question templates ("how many <color>" -> count_color, "how many" -> count,
// "what color is the object" -> object_color, "what color is the" -> what_color,
// "is there a <color> <shape>" -> color_shape, "is there a <color> object" -> color, "is there a <shape>" ->
// shape); else the session's first task. Without a question, a captioning task ("caption") when the session
// has one; else an error saying a question is needed.
std::string choose_task(const Session& s, const std::string& question, const std::string& task = "");

struct ImageAnswer {
  std::string task;
  std::vector<int64_t> question_ids;
  std::vector<int64_t> answer_ids;  // generated, decoder start token removed
  std::string answer;               // decoded
  std::vector<std::string> unknown_words;
};

ImageAnswer answer_about_image(Session& s, const std::string& image_path, const std::string& question,
                               const std::string& task = "", const GenerationOptions& options = {});

}  // namespace vlp::trainer
