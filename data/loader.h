// Multi-task batching (peft.md 2.10-2.11): every batch holds one task; an epoch is all batches of all
// task loaders in an order shuffled by a generator seeded from (seed, epoch); task prefixes; VQA
// targets sampled from the soft-score label dict proportionally to score.
//
// Batch k of epoch e is a pure function of (seed, e, k): the per-task example permutations, the batch
// order and every sampled target come from Philox streams named by (seed, epoch, task, purpose), never
// from a shared generator state. So background workers produce exactly the single-threaded sequence,
// and a saved LoaderPosition (epoch, index in epoch) resumes the identical remaining batches.
//
// The caller supplies a BatchBuilder (tokenisation, image loading: model-side decisions) that turns a
// Batch of raw examples into tensors; with workers > 0 it runs on background threads (so it must be
// thread-safe) behind a bounded prefetch queue. Exceptions in a worker reach the consumer with their
// message; stopping early or destroying the loader never hangs.
//
// With pin_memory the builder's tensors are moved into page-locked host memory on the worker thread, so the
// trainer's upload to the GPU skips the pageable staging copy (runtime/device_copy.h pin_memory; without a
// GPU they stay in ordinary memory).
#pragma once
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "data/datasets.h"
#include "runtime/tensor.h"

namespace vlp::data {

enum class Task { vqa, gqa, nlvr2, caption };
const char* task_name(Task task);  // "vqa", "gqa", "nlvr2", "caption"
// "vqa: ", "gqa: " (or the original code's "gpa: " with gqa_prefix_compat), "nlvr: ", "caption: ".
std::string task_prefix(Task task, bool gqa_prefix_compat = false);

// One training example before prefixing and target sampling.
struct TrainExample {
  std::string id;                       // question id, NLVR2 identifier or image id (for predictions)
  std::string text;                     // question / statement; empty for captioning
  std::vector<std::string> image_ids;   // one image (two for NLVR2)
  std::vector<std::string> targets;     // candidate targets (VQA: label answers; caption: the caption)
  std::vector<double> scores;           // one per target: VQA soft scores, 1 otherwise
};

// The examples and batch size of one task.
struct TaskData {
  Task task = Task::vqa;
  std::vector<TrainExample> examples;
  int64_t batch_size = 1;
};

// Task casting (peft.md 2.11).
std::vector<TrainExample> vqa_train_examples(const std::vector<VqaExample>& examples);
std::vector<TrainExample> gqa_train_examples(const std::vector<GqaExample>& examples);
std::vector<TrainExample> nlvr2_train_examples(const std::vector<Nlvr2Example>& examples);  // "true" / "false"
// Every (image, caption) pair an example.
std::vector<TrainExample> caption_train_examples(const std::vector<CocoImage>& images);

// Evaluation casting for captioning: one example per image, all its captions as targets (references).
std::vector<TrainExample> caption_eval_examples(const std::vector<CocoImage>& images);

// Per-task batch sizes from a base B0 (500 for VL-BART, 300 for VL-T5): VQA B0, GQA floor(B0*100/60),
// NLVR2 floor(B0*20/60), captioning floor(B0*50/60).
int64_t multitask_batch_size(Task task, int64_t base);

// A batch as the builder sees it: prefixed inputs and sampled targets.
struct BatchExample {
  std::string id;
  std::string input_text;               // prefix + text
  std::string target_text;              // sampled target ("" with weight 0 when a VQA label dict is empty)
  double target_weight = 1.0;           // the sampled answer's soft score (VQA); 1 otherwise
  std::vector<std::string> image_ids;
  int64_t example_index = 0;            // index into the task's examples
};

struct Batch {
  Task task = Task::vqa;
  int64_t task_index = 0;               // index of the task in the loader's task list
  int64_t epoch = 0;
  int64_t index = 0;                    // position in the epoch
  std::vector<BatchExample> examples;
};

using TensorMap = std::map<std::string, Tensor>;
// Turns a batch into tensors. Called from worker threads when workers > 0: must be thread-safe.
using BatchBuilder = std::function<TensorMap(const Batch&)>;

struct LoadedBatch {
  Batch batch;
  TensorMap tensors;  // what the builder returned (empty without a builder)
};

struct LoaderOptions {
  uint64_t seed = 9595;
  bool shuffle = true;            // permute each task's examples and the batch order every epoch
  bool drop_last = false;         // drop each task's last partial batch
  bool use_prefix = true;         // task prefixes (single-module runs); false: empty prefix
  bool gqa_prefix_compat = false; // "gpa: " instead of "gqa: "
  bool sample_targets = true;     // VQA: sample the target; false: take the best-scored answer
  int workers = 0;                // background threads; 0 builds on the consumer's thread
  int prefetch = 4;               // most batches built ahead of the consumer (per loader)
  bool pin_memory = false;        // builder tensors into page-locked host memory (when a GPU is present)
};

// Where the loader stands: the next batch to be delivered is batch `index` of epoch `epoch`.
struct LoaderPosition {
  int64_t epoch = 0;
  int64_t index = 0;
  bool operator==(const LoaderPosition& o) const { return epoch == o.epoch && index == o.index; }
};
std::string position_to_json(const LoaderPosition& p);   // {"epoch": e, "index": i}
LoaderPosition position_from_json(const std::string& text);

// One epoch's batch order: (task index, batch number within that task) per position.
struct BatchSlot {
  int64_t task_index = 0;
  int64_t batch_in_task = 0;
};

class MultiTaskLoader {
 public:
  MultiTaskLoader(std::vector<TaskData> tasks, LoaderOptions options, BatchBuilder builder = {});
  ~MultiTaskLoader();
  MultiTaskLoader(const MultiTaskLoader&) = delete;
  MultiTaskLoader& operator=(const MultiTaskLoader&) = delete;

  int64_t batches_per_epoch() const { return batches_per_epoch_; }
  const std::vector<TaskData>& tasks() const { return tasks_; }
  const LoaderOptions& options() const { return options_; }

  // The batch order of an epoch and the raw batch at a position: pure functions of (seed, epoch, index).
  std::vector<BatchSlot> epoch_order(int64_t epoch) const;
  Batch make_batch(int64_t epoch, int64_t index) const;

  // Starts delivering epoch `epoch` from batch `index` (0: the whole epoch). Stops any epoch in flight.
  void start(LoaderPosition from);
  void start_epoch(int64_t epoch) { start({epoch, 0}); }
  // The next batch of the started epoch; false when the epoch is done. Rethrows a worker's exception.
  bool next(LoadedBatch& out);
  // The position of the next batch to deliver; after the last batch of epoch e: {e + 1, 0}. Save it
  // after consuming a batch and start() from it to resume.
  LoaderPosition position() const;
  // Stops the workers (a batch being built is finished and discarded). Safe to call any time.
  void stop();

 private:
  // The batch order and per-task example permutations of one epoch.
  struct EpochPlan {
    std::vector<BatchSlot> order;
    std::vector<std::vector<int64_t>> permutations;  // per task
  };
  EpochPlan plan_epoch(int64_t epoch) const;
  Batch batch_from_plan(const EpochPlan& plan, int64_t epoch, int64_t index) const;
  LoadedBatch build(int64_t index) const;  // batch `index` of the started epoch, through the builder
  void worker_loop();

  std::vector<TaskData> tasks_;
  LoaderOptions options_;
  BatchBuilder builder_;
  std::vector<int64_t> batches_per_task_;
  int64_t batches_per_epoch_ = 0;

  // The epoch being delivered (fixed while workers run).
  int64_t epoch_ = 0;
  EpochPlan plan_;
  int64_t next_deliver_ = 0;
  bool started_ = false;

  // Worker state (guarded by mutex_).
  std::mutex mutex_;
  std::condition_variable work_cv_, ready_cv_;
  std::vector<std::thread> threads_;
  int64_t next_claim_ = 0;
  bool stopping_ = false;
  struct Slot {
    LoadedBatch batch;
    std::exception_ptr error;
  };
  std::map<int64_t, Slot> ready_;
};

}  // namespace vlp::data
