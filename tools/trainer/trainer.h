// The vlpeft trainer: a tiny VL encoder-decoder (models/vl) trained on the synthetic VL tasks with full
// fine-tuning or any PEFT method of models/peft/peft.h, multi-task batches (one task per batch, spec
// §2.10), AdamW with linear warmup/decay, clipping and gradient accumulation, evaluation, atomic
// checkpoints that resume bit-exactly, a JSONL metrics log and an SVG plot.
//
// Devices (config keys device, autocast): the model is built and initialised on the CPU exactly as in a
// CPU run (init_from and PEFT included), then moved to the device with Module::to_device; the optimizer
// state is made there. Micro-batches come to the device (ids, masks, features, weights; labels stay on
// the host, where the losses read them), evaluation and generation run there and copy what they read back
// to the host, and checkpoints hold CPU copies (they load onto any device). Resume on the CPU is bit-exact;
// on CUDA the restored state (weights, optimizer moments, step, RNG, data position) is exactly the saved
// one, while the steps after it follow an uninterrupted run only up to the GPU's nondeterministic
// reductions (atomic adds), i.e. closely but not bit for bit.
//
// Checkpoint file (safetensors, written to a temporary file, fsynced, renamed): "model.<param>" for every
// parameter, "optim.<key>" the optimizer state, metadata: step, micro_batch (data position), rng_seed,
// rng_offset (dropout generator), best_score, config, and data_fnv1a (a checksum over every tensor's bytes
// in name order). out_dir/last.safetensors is the newest, out_dir/last.prev.safetensors the one before,
// out_dir/best.safetensors the best mean eval score.
#pragma once
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "autograd/optim.h"
#include "models/vl/vl_prefix.h"
#include "models/vl/vl_seq2seq.h"
#include "runtime/rng.h"
#include "tools/trainer/config.h"
#include "tools/trainer/file_data.h"
#include "tools/trainer/vl_tasks.h"

namespace vlp::trainer {

VLSeq2SeqConfig model_config(const TrainConfig& c);
// The ViT tower of vision_tower vit: patch `patch`, image_size, `heads` heads, MLP 4 x width.
ViTConfig vision_config(const TrainConfig& c);
// A synthetic batch's visual input on `device`: its features, or its pixels for a model with a vision tower.
VisualInput batch_visual(const VLBatch& b, Device device);

struct Session {
  TrainConfig cfg;
  std::unique_ptr<VLSeq2Seq> model;  // model_kind seq2seq; else one of:
  std::unique_ptr<GPT2WithVisualPrefix> gpt2;
  std::unique_ptr<VLEncoderClassifier> classifier;
  Module& net() const { return model ? static_cast<Module&>(*model) : gpt2 ? static_cast<Module&>(*gpt2) : *classifier; }
  std::vector<std::string> tasks;
  std::vector<std::vector<VLExample>> train_data, eval_data;
  int64_t n_patches = 0, patch_dim = 0;
  std::vector<std::pair<std::string, Tensor>> trainable;  // in optimizer order
  Optimizer opt;
  Generator dropout_gen;
  int64_t step = 0, micro_batch = 0;
  double best_score = -1.0;
  bool peft = false;
  int64_t base_parameters = 0;  // the model's parameters before PEFT attached anything
  // File-backed tasks (cfg.tasks from vqa, gqa, nlvr2, caption): data, loader and its position (the next
  // micro-batch; saved in checkpoints as metadata "loader_position").
  std::unique_ptr<FileData> files;
  data::LoaderPosition loader_pos;
  bool loader_started = false;
  std::map<std::string, double> last_primary;  // per task: the main score of the last evaluation
  Device device = Device::cpu();  // cfg.device: where the model, its optimizer state and the batches live
  bool autocast_bf16 = false;     // cfg.autocast resolved for the device (the autocast sites in trainer.cpp)
};

// Builds data and model (seeded), loads init_from, attaches PEFT, freezes per method, makes the optimizer.
std::unique_ptr<Session> make_session(const TrainConfig& cfg);

// The micro-batch at a global index: (task index, example indices); deterministic in (seed, index).
std::pair<int, std::vector<int64_t>> batch_at(const Session& s, int64_t micro_batch);

// Synthetic tasks: greedy-generation accuracy (exact match of the answer) per task on the eval split.
// File-backed tasks: every metric of evaluate_files on cfg.eval_split (max_examples ignored; eval_limit
// applies), predictions written under cfg.out_dir/predictions when write_predictions.
std::map<std::string, double> evaluate(Session& s, int64_t max_examples = -1, bool write_predictions = false);


// The next training micro-batch (synthetic schedule or the file loader), advancing the data position.
struct MicroBatch {
  int task = 0;
  Tensor input_ids, attention_mask, labels, weights;  // weights: file tasks only (spec §2.11 loss)
  VisualInput visual;
  Tensor pooled, targets;  // gpt2_prefix / encoder_classifier (FileBatch)
};
// Its tensors are on the session's device (labels on the host; see the note on devices above).
MicroBatch next_micro_batch(Session& s);

// File-backed tasks: the model config (a tiny model from the config's sizes with the codec's vocabulary,
// or model_dir's config.json) and loading model_dir's weights (vocab_extra_rows appended, N(0, 0.02)).
VLSeq2SeqConfig file_model_config(const TrainConfig& c, const FileData& d);
// backbone: the T5 / BART / GPT-2 LM module the checkpoint's names address.
void load_backbone_weights(Module& backbone, const TrainConfig& c);

// The routing model shapes (routing_models.cpp): build from the config / model_dir, the module PEFT
// attaches to, the always-trainable parts (visual projection; the classifier head), the loss of a batch
// (sets ctx.visual, the routing input) and predictions.
void build_kind_model(Session& s);
Module& kind_backbone(Session& s);
void mark_always_trainable(Session& s);
Tensor kind_loss(Session& s, const MicroBatch& b, ForwardContext& ctx);
Predictor kind_predictor(Session& s);

struct RunSummary {
  int64_t steps = 0;
  double last_loss = 0, seconds = 0, tokens_per_s = 0, samples_per_s = 0, model_tflops = 0, mfu = 0;
  int64_t peak_rss_bytes = 0, trainable = 0, total = 0;
  int64_t peak_device_bytes = 0;  // CUDA: the caching allocator's peak since the session was made; else 0
  std::map<std::string, double> metrics;
  std::string mfu_formula;
};

// Trains to cfg.steps (resuming from out_dir when cfg.resume). Stops with an Error on a NaN/Inf loss.
// The environment variable VLP_TRAINER_KILL_AT_STEP=N makes the process SIGKILL itself after step N
// (tests of crash-resume).
RunSummary train(Session& s);

// Checkpoints.
void save_training_checkpoint(const Session& s, const std::string& path);
// Verifies the checksum and the contents against the session; an Error naming the file and the problem
// when it is truncated, corrupt or does not fit. Restores weights, optimizer, RNG, data position, step.
void load_training_checkpoint(Session& s, const std::string& path);
// Copies only the model weights of a checkpoint (non-strict over adapters) into a model.
void load_model_weights(Module& model, const std::string& path);

int64_t peak_rss_bytes();
// CUDA sessions: the caching allocator's peak allocated bytes since the session was made; 0 on the CPU.
int64_t peak_device_bytes(const Session& s);
// Writes an SVG plot of loss and eval metrics from a metrics.jsonl.
void write_svg_plot(const std::string& jsonl_path, const std::string& svg_path);

}  // namespace vlp::trainer
