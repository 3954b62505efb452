// Trainer configuration: one JSON object of known keys, overridden by --set key=value, checked strictly
// (unknown keys, wrong types and missing paths are errors naming the key and where it came from).
#pragma once
#include <cstdint>
#include <string>
#include <vector>
#include <nlohmann/json.hpp>

#include "runtime/dtype.h"

namespace vlp::trainer {

struct TrainConfig {
  // Model: a tiny VL encoder-decoder (patch features of the synthetic images feed the visual embedding).
  std::string backbone = "t5";  // t5 | bart
  int64_t d_model = 64, layers = 2, heads = 4, d_ff = 128;
  double dropout = 0.0;
  int64_t image_size = 32, patch = 16;  // 16: one visual token per grid cell of the synthetic scenes
  // Vision tower (synthetic tasks): "none" = the image's linear patch features feed the visual embedding;
  // "vit" = a ViT encoder "vision_model" (models/vit.h; patch size `patch`, image_size, `heads` heads, MLP
  // 4 x vision_hidden, vision_layers layers) reads the pixels, its patch tokens feed the visual embedding.
  std::string vision_tower = "none";
  int64_t vision_layers = 2, vision_hidden = 0;  // vision_hidden 0 = d_model
  // Data: the synthetic VL tasks (tools/trainer/vl_tasks.h), comma-separated.
  std::string tasks = "count,color";
  int64_t train_examples = 1024, eval_examples = 128;  // per task
  uint64_t data_seed = 0;
  // Optimisation (spec/peft.md §2.12 defaults except lr / steps).
  int64_t batch_size = 32, grad_accum = 1, steps = 300;
  double lr = 1e-3, weight_decay = 0.01, warmup_ratio = 0.1, clip_norm = 5.0, adam_eps = 1e-6;
  uint64_t seed = 9595;
  // PEFT: a PEFT config file (adapter_config.json style) or an inline type with default fields; empty =
  // full fine-tuning. peft_json holds extra fields for the inline type.
  std::string peft_config, peft_type;
  nlohmann::json peft_json = nlohmann::json::object();
  bool freeze_backbone = false;     // without PEFT: train only the visual projection (a linear probe of the frozen base)
  bool task_prefix = true;          // "count: " style prefixes (spec §2.10)
  // Where to start from and where to write.
  std::string init_from;            // a checkpoint's model.safetensors: initial weights (non-strict for adapters)
  std::string out_dir = "vlpeft_run";
  bool resume = false;              // continue from out_dir/last when present
  int64_t eval_every = 100, save_every = 100, log_every = 10;
  int64_t max_new_tokens = 3;
  bool progress = true;
  int64_t threads = 0;              // OpenMP threads (0 = leave as is); tiny models run best on 1
  double peak_tflops = 989.0;       // MFU denominator (spec/performance.md: bf16 dense peak of H100/H200)
  // Where the model trains: "cpu", "cuda" (= cuda:0) or "cuda:N". The model is built and initialised on
  // the CPU (so a seed gives the same initial weights everywhere), then moved; checkpoints hold CPU copies.
  std::string device = "cpu";
  // Mixed precision: "auto" (bf16 on CUDA, off on the CPU), "off", or "bf16" (matmuls and attention in
  // bf16 with F32 outputs; weights, gradients and optimizer state stay F32).
  std::string autocast = "auto";

  // ---- File-backed tasks (tools/trainer/file_data.h): `tasks` from vqa, gqa, nlvr2, caption. ----
  // Files per task and split ("train", "val", "test"), comma lists; empty = the make-data layout under
  // data_dir. VQA: VL-T5 Karpathy lists or official v2_OpenEnded_*_questions.json (annotations found
  // beside them by name); GQA: VL-T5 lists or official questions1.2 files; NLVR2: official JSON lines or
  // VL-T5 lists; caption: Karpathy dataset_coco.json with "@split+split" (e.g. "@train+restval") or a
  // COCO-format captions json.
  std::string data_dir;
  std::string features_dir;  // only referenced as "{features_dir}" in other keys (e.g. coco_images)
  // Any string value may use "{data_dir}", "{features_dir}" and "{model_dir}" (replaced after --set).
  std::string vqa_train, vqa_val, vqa_test, gqa_train, gqa_val, gqa_test, nlvr2_train, nlvr2_val, nlvr2_test,
      caption_train, caption_val, caption_test;
  std::string vqa_official;  // official questions files whose annotations give Karpathy splits the human answers
  std::string answer_vocab;  // trainval_ans2label.json: VQA labels outside it are dropped
  // Images: a directory of image files (tiny models: linear patch features) or a feature directory
  // (index.json + shards, models/features.h). COCO serves vqa and caption.
  std::string coco_images, gqa_images, nlvr2_images;
  std::string tokenizer;     // "" / "words": word vocabulary from the training texts; or spiece.model,
                             // tokenizer.json, "vocab.json,merges.txt", or a directory holding one
  // The VL model: "seq2seq" (VL-T5 / VL-BART, every task), "gpt2_prefix" (backbone gpt2, a pooled visual
  // vector as GPT-2's first position; caption only; spec §3.4) or "encoder_classifier" (the t5 / bart
  // encoder over [visual; question] with an answer classifier; vqa only, needs answer_vocab; spec §3.5).
  // The last two read one pooled vector per image (the mean of the image's tokens or patch features).
  std::string model_kind = "seq2seq";
  int64_t warmup_steps = 0;  // > 0: linear warmup over this many steps (instead of warmup_ratio)
  std::string model_dir;     // a transformers t5 / bart checkpoint directory (config.json + weights):
                             // the backbone (d_model, layers, ... are then ignored)
  int64_t vocab_extra_rows = 0;    // rows appended to the embedding (VL-BART: 200 added tokens)
  std::string peft_recipe;         // a VL-Adapter recipe of models/peft/recipes.h (adapter_single, ...)
  int64_t multitask_batch_base = 0;  // > 0: per-task batch sizes from B0 (spec §2.10); 0: batch_size for all
  int64_t epochs = 0;              // > 0: steps = epochs x batches per epoch / grad_accum
  int64_t max_text_length = 20, max_target_length = 40;  // input / target truncation (tokens)
  int64_t gen_max_length = 20, caption_beams = 5;        // generation: VQA/GQA greedy, captions beam search
  std::string eval_split = "val";  // the split evaluated during training and by `vlpeft eval`
  int64_t eval_limit = 0;          // > 0: evaluate at most this many examples (images) per task
  int64_t workers = 0;             // data-loader threads
  bool gqa_prefix_compat = false;  // "gpa: " as the original code
};

// Parses a config object (source names it in errors), then applies overrides "key=value" (value parsed as
// JSON when it parses, else taken as a string).
TrainConfig parse_config(const nlohmann::json& j, const std::string& source,
                         const std::vector<std::string>& overrides = {});
TrainConfig load_config(const std::string& path, const std::vector<std::string>& overrides = {});
nlohmann::json config_to_json(const TrainConfig& c);
// Checks paths and ranges; errors name the key (every missing path is listed).
void validate_config(const TrainConfig& c);
// The config's device (validated: "cpu", "cuda", "cuda:N") and whether autocast resolves to bf16 there.
Device config_device(const TrainConfig& c);
bool autocast_bf16(const TrainConfig& c);
// True when the tasks are the file-backed ones (vqa, gqa, nlvr2, caption), false for the synthetic ones.
bool uses_files(const TrainConfig& c);
std::vector<std::string> split_list(const std::string& s);
// One line per key (or group of keys): what it means. `vlpeft train --help` and --print-config show it.
const std::vector<std::pair<std::string, std::string>>& config_key_docs();

}  // namespace vlp::trainer
