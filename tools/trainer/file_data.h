// The trainer's file-backed data path: the four VL tasks (vqa, gqa, nlvr2, caption) read from their
// official / VL-T5 files by data/datasets.h, tokenised by a real tokenizer (T5 SentencePiece, BART BPE, a
// tokenizer.json) or by a word vocabulary built from the training texts (tiny models), images read as
// linear patch features (tiny models) or looked up in a feature directory (models/features.h), batches
// from data/loader.h (one task per batch, prefixes, VQA target sampling, an exact resume position), and
// evaluation with each task's metric (data/metrics.h).
//
// Which files: per task and split the config keys <task>_<split> (see config.h); empty keys default to the
// layout `vlpeft make-data` writes under data_dir.
#pragma once
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "data/datasets.h"
#include "data/loader.h"
#include "data/tokenizer.h"
#include "models/features.h"
#include "models/vl/vl_seq2seq.h"
#include "tools/trainer/config.h"

namespace vlp::trainer {

// The file-backed tasks, in the names the config's `tasks` uses.
const std::vector<std::string>& file_task_names();  // vqa, gqa, nlvr2, caption
bool is_file_task(const std::string& name);
data::Task file_task(const std::string& name);

// The files of one task split after data_dir defaults: a comma list (possibly empty).
std::string split_files(const TrainConfig& c, const std::string& task, const std::string& split);
// The image source (directory of images or of features) of a task after data_dir defaults.
std::string image_source(const TrainConfig& c, const std::string& task);
// "key 'K' names a missing path 'P'" for every path the config names that does not exist (tasks in use
// only). Empty when everything is there.
std::vector<std::string> missing_paths(const TrainConfig& c);

// Text to ids and back, for a real tokenizer or the built-in word vocabulary.
struct TextCodec {
  bool words = false;
  Tokenizer tok;                                      // !words
  std::vector<std::string> vocab;                     // words: 0 <s>, 1 <pad>, 2 </s>, 3 <unk>, words, <vis_k>...
  std::unordered_map<std::string, int64_t> word_id;
  bool bart_style = false;                            // <s> text </s> (BART) or text </s> (T5, GPT-2: text <|endoftext|>)
  int64_t pad = 1, eos = 2, bos = 0, size = 0;
  std::vector<int64_t> encode(const std::string& text, int64_t max_len) const;  // specials added
  std::string decode(const std::vector<int64_t>& ids) const;                    // specials skipped
};
// Splits lower-cased text into words and punctuation marks (the word vocabulary's tokens).
std::vector<std::string> word_tokens(const std::string& text);

// Visual features per image id: linear patch features of the image file (values / 255 - 0.5, cut into
// patch x patch squares of the image resized to image_size) or a feature directory's tensor.
struct VisualSource {
  std::string root;
  bool features = false;
  std::shared_ptr<FeatureStore> store;
  data::ImageIndex index;
  int64_t image_size = 32, patch = 16, tokens = 0, dim = 0;
  std::mutex mutex;
  std::unordered_map<std::string, std::vector<float>> cache;  // patch features, by image id
  std::vector<float> get(const std::string& id);              // [tokens * dim]
};

// One task's examples of a split, with what its metric needs.
struct TaskSplit {
  std::string task;
  std::vector<data::TrainExample> examples;
  std::vector<data::VqaExample> vqa;
  bool vqa_official = false;  // vqa carries the ten human answers (official accuracy possible)
  std::vector<data::GqaExample> gqa;
  std::vector<data::Nlvr2Example> nlvr2;
  std::vector<data::CocoImage> coco;
};
TaskSplit load_task_split(const TrainConfig& c, const std::string& task, const std::string& split, bool for_training);

struct FileData {
  std::vector<std::string> tasks;
  TextCodec codec;
  std::map<std::string, std::shared_ptr<VisualSource>> visual;  // by task
  int64_t feat_dim = 0;
  data::AnswerVocab answers;                     // encoder_classifier: the classifier's answers
  std::map<std::string, TaskSplit> eval_cache;  // "task/split"
  // Last: destroyed first, so its workers stop before anything their batch builder reads goes away.
  std::unique_ptr<data::MultiTaskLoader> loader;
};
// answer_vocab, or the make-data layout's vqa/trainval_ans2label.json under data_dir.
std::string answer_vocab_path(const TrainConfig& c);

// Loads training data, tokenizer and image sources (the model config's vocabulary follows the codec).
std::unique_ptr<FileData> make_file_data(const TrainConfig& c);

// A model-ready batch. seq2seq: input = prefix + text, labels = the target. gpt2_prefix: input = labels =
// the caption (pads -100). encoder_classifier: input = the question, targets = the soft scores over the
// answer vocabulary (training batches: `source` holds the examples the batch indexes).
struct FileBatch {
  int task = 0;
  Tensor input_ids, attention_mask, labels, weights;
  VisualInput visual;
  Tensor pooled;   // [B, D]: the mean of each example's visual tokens (gpt2_prefix, encoder_classifier)
  Tensor targets;  // [B, answers] (encoder_classifier training)
};
FileBatch build_file_batch(FileData& d, const TrainConfig& c, int task_index,
                           const std::vector<data::BatchExample>& examples,
                           const std::vector<data::TrainExample>* source = nullptr);

// t on `device` (t itself when already there, or undefined); a pinned host tensor uploads directly.
Tensor moved_to(const Tensor& t, Device device);
// The batch's model inputs on `device`: ids, masks, features, pooled vectors, weights, targets. Labels stay
// on the host: the losses read them there (and the kernels upload what they need). The CPU: b itself.
FileBatch batch_to_device(FileBatch b, Device device);
// A host copy of t for reading its values (t itself when it is a contiguous CPU tensor).
Tensor host_copy(const Tensor& t);

// Predictions (answer / caption / "true" | "false" text) for a batch of one task's examples.
using Predictor = std::function<std::vector<std::string>(int task_index, const FileBatch& batch)>;
// VL-T5 / VL-BART: greedy for VQA / GQA, beam search for captions, the true/false logits for NLVR2.
Predictor seq2seq_predictor(const FileData& d, const TrainConfig& c, const VLSeq2Seq& model);

// Evaluates every task on a split: "vqa.accuracy" (official legacy; when human answers are known),
// "vqa.soft_score", "gqa.accuracy", "nlvr2.accuracy", "nlvr2.consistency", "caption.cider_d",
// "caption.bleu_4", "caption.rouge_l", and "caption.meteor" / "caption.spice" when VLP_METEOR_JAR /
// VLP_SPICE_JAR name working jars (data/metrics.h). Writes predictions to pred_dir (when non-empty). `primary` gets one
// score per task (VQA accuracy or soft score, GQA / NLVR2 accuracy, CIDEr-D).
std::map<std::string, double> evaluate_files(FileData& d, const TrainConfig& c, const Predictor& predict,
                                             const std::string& split, std::map<std::string, double>* primary,
                                             const std::string& pred_dir = "");

}  // namespace vlp::trainer
