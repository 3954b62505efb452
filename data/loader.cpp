// Multi-task loader: epoch plans from named Philox streams, target sampling, and the prefetching
// worker pool (see loader.h for the guarantees).
#include "data/loader.h"

#include "runtime/device_copy.h"

#include <nlohmann/json.hpp>

#include <algorithm>

#include "data/sampling.h"
#include "runtime/device_copy.h"
#include "runtime/error.h"

namespace vlp::data {

namespace {

// Stream purposes mixed into derive_seed with the run seed and the epoch.
constexpr uint64_t kStreamOrder = 1, kStreamPermutation = 2, kStreamTarget = 3;

}  // namespace

const char* task_name(Task task) {
  switch (task) {
    case Task::vqa: return "vqa";
    case Task::gqa: return "gqa";
    case Task::nlvr2: return "nlvr2";
    case Task::caption: return "caption";
  }
  return "?";
}

std::string task_prefix(Task task, bool gqa_prefix_compat) {
  switch (task) {
    case Task::vqa: return "vqa: ";
    case Task::gqa: return gqa_prefix_compat ? "gpa: " : "gqa: ";
    case Task::nlvr2: return "nlvr: ";
    case Task::caption: return "caption: ";
  }
  return "";
}

int64_t multitask_batch_size(Task task, int64_t base) {
  VLP_CHECK(base >= 1, "multitask_batch_size: base batch size must be positive, got ", base);
  switch (task) {
    case Task::vqa: return base;
    case Task::gqa: return base * 100 / 60;
    case Task::nlvr2: return base * 20 / 60;
    case Task::caption: return base * 50 / 60;
  }
  return base;
}

std::vector<TrainExample> vqa_train_examples(const std::vector<VqaExample>& examples) {
  std::vector<TrainExample> out;
  out.reserve(examples.size());
  for (const auto& ex : examples) {
    TrainExample t{std::to_string(ex.question_id), ex.question, {ex.image_id}, {}, {}};
    for (const auto& l : ex.labels) {
      t.targets.push_back(l.answer);
      t.scores.push_back(l.score);
    }
    out.push_back(std::move(t));
  }
  return out;
}

std::vector<TrainExample> gqa_train_examples(const std::vector<GqaExample>& examples) {
  std::vector<TrainExample> out;
  out.reserve(examples.size());
  for (const auto& ex : examples) {
    TrainExample t{ex.question_id, ex.question, {ex.image_id}, {}, {}};
    for (const auto& l : ex.labels) {
      t.targets.push_back(l.answer);
      t.scores.push_back(1.0);  // GQA is unweighted
    }
    out.push_back(std::move(t));
  }
  return out;
}

std::vector<TrainExample> nlvr2_train_examples(const std::vector<Nlvr2Example>& examples) {
  std::vector<TrainExample> out;
  out.reserve(examples.size());
  for (const auto& ex : examples) {
    TrainExample t{ex.identifier, ex.sentence, {ex.image_ids[0], ex.image_ids[1]}, {}, {}};
    if (ex.label >= 0) {
      t.targets.push_back(ex.label == 1 ? "true" : "false");
      t.scores.push_back(1.0);
    }
    out.push_back(std::move(t));
  }
  return out;
}

std::vector<TrainExample> caption_train_examples(const std::vector<CocoImage>& images) {
  std::vector<TrainExample> out;
  for (const auto& img : images)
    for (const auto& c : img.captions) out.push_back({img.image_id, "", {img.image_id}, {c}, {1.0}});
  return out;
}

std::vector<TrainExample> caption_eval_examples(const std::vector<CocoImage>& images) {
  std::vector<TrainExample> out;
  out.reserve(images.size());
  for (const auto& img : images)
    out.push_back({img.image_id, "", {img.image_id}, img.captions, std::vector<double>(img.captions.size(), 1.0)});
  return out;
}

std::string position_to_json(const LoaderPosition& p) {
  return nlohmann::json{{"epoch", p.epoch}, {"index", p.index}}.dump();
}

LoaderPosition position_from_json(const std::string& text) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    VLP_FAIL("loader position: not valid JSON: '", text, "': ", e.what());
  }
  VLP_CHECK(j.is_object() && j.contains("epoch") && j["epoch"].is_number_integer() && j.contains("index") &&
                j["index"].is_number_integer(),
            "loader position: expected {\"epoch\": int, \"index\": int}, got ", text);
  return {j["epoch"].get<int64_t>(), j["index"].get<int64_t>()};
}

// ---- the loader ---------------------------------------------------------------------------------

MultiTaskLoader::MultiTaskLoader(std::vector<TaskData> tasks, LoaderOptions options, BatchBuilder builder)
    : tasks_(std::move(tasks)), options_(options), builder_(std::move(builder)) {
  VLP_CHECK(!tasks_.empty(), "MultiTaskLoader: no tasks");
  VLP_CHECK(options_.workers >= 0, "MultiTaskLoader: workers must be >= 0, got ", options_.workers);
  VLP_CHECK(options_.prefetch >= 1, "MultiTaskLoader: prefetch must be >= 1, got ", options_.prefetch);
  for (const auto& t : tasks_) {
    VLP_CHECK(t.batch_size >= 1, "MultiTaskLoader: task ", task_name(t.task), " has batch size ", t.batch_size);
    int64_t n = int64_t(t.examples.size());
    int64_t batches = options_.drop_last ? n / t.batch_size : (n + t.batch_size - 1) / t.batch_size;
    batches_per_task_.push_back(batches);
    batches_per_epoch_ += batches;
  }
}

MultiTaskLoader::~MultiTaskLoader() { stop(); }

MultiTaskLoader::EpochPlan MultiTaskLoader::plan_epoch(int64_t epoch) const {
  EpochPlan plan;
  for (size_t t = 0; t < tasks_.size(); ++t) {
    for (int64_t b = 0; b < batches_per_task_[t]; ++b) plan.order.push_back({int64_t(t), b});
    int64_t n = int64_t(tasks_[t].examples.size());
    if (options_.shuffle) {
      Generator gen(derive_seed(options_.seed, {uint64_t(epoch), t, kStreamPermutation}));
      plan.permutations.push_back(random_permutation(n, gen));
    } else {
      std::vector<int64_t> identity(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i) identity[size_t(i)] = i;
      plan.permutations.push_back(std::move(identity));
    }
  }
  if (options_.shuffle) {
    Generator gen(derive_seed(options_.seed, {uint64_t(epoch), kStreamOrder}));
    shuffle_in_place(plan.order, gen);
  }
  return plan;
}

std::vector<BatchSlot> MultiTaskLoader::epoch_order(int64_t epoch) const { return plan_epoch(epoch).order; }

Batch MultiTaskLoader::make_batch(int64_t epoch, int64_t index) const {
  return batch_from_plan(plan_epoch(epoch), epoch, index);
}

Batch MultiTaskLoader::batch_from_plan(const EpochPlan& plan, int64_t epoch, int64_t index) const {
  VLP_CHECK(index >= 0 && index < batches_per_epoch_, "MultiTaskLoader: batch ", index, " is outside the epoch's ",
            batches_per_epoch_, " batches");
  const BatchSlot& slot = plan.order[size_t(index)];
  const TaskData& task = tasks_[size_t(slot.task_index)];
  const auto& perm = plan.permutations[size_t(slot.task_index)];
  Batch batch;
  batch.task = task.task;
  batch.task_index = slot.task_index;
  batch.epoch = epoch;
  batch.index = index;
  std::string prefix = options_.use_prefix ? task_prefix(task.task, options_.gqa_prefix_compat) : "";
  int64_t begin = slot.batch_in_task * task.batch_size;
  int64_t end = std::min<int64_t>(begin + task.batch_size, int64_t(perm.size()));
  for (int64_t k = begin; k < end; ++k) {
    int64_t i = perm[size_t(k)];
    const TrainExample& ex = task.examples[size_t(i)];
    BatchExample out;
    out.id = ex.id;
    out.input_text = prefix + ex.text;
    out.image_ids = ex.image_ids;
    out.example_index = i;
    double total = 0;
    for (double s : ex.scores) total += s;
    if (ex.targets.empty() || total <= 0) {
      out.target_text.clear();  // nothing to learn from this example: weight 0, as VL-T5 does
      out.target_weight = 0.0;
    } else {
      int64_t pick = 0;
      if (options_.sample_targets && ex.targets.size() > 1) {
        // A stream per (epoch, task, example): independent of batch composition and of threads.
        Generator gen(derive_seed(options_.seed, {uint64_t(epoch), uint64_t(slot.task_index), kStreamTarget, uint64_t(i)}));
        pick = draw_weighted(gen, ex.scores);
      } else {
        pick = int64_t(std::max_element(ex.scores.begin(), ex.scores.end()) - ex.scores.begin());
      }
      out.target_text = ex.targets[size_t(pick)];
      out.target_weight = ex.scores[size_t(pick)];
    }
    batch.examples.push_back(std::move(out));
  }
  return batch;
}

LoadedBatch MultiTaskLoader::build(int64_t index) const {
  LoadedBatch lb;
  lb.batch = batch_from_plan(plan_, epoch_, index);
  if (builder_) lb.tensors = builder_(lb.batch);
  if (options_.pin_memory)
    for (auto& [name, t] : lb.tensors)
      if (t.defined() && t.device().is_cpu()) t = pin_memory(t);
  return lb;
}

void MultiTaskLoader::start(LoaderPosition from) {
  stop();
  VLP_CHECK(from.epoch >= 0 && from.index >= 0 && from.index <= batches_per_epoch_, "MultiTaskLoader: cannot start at epoch ",
            from.epoch, " batch ", from.index, " (an epoch has ", batches_per_epoch_, " batches)");
  epoch_ = from.epoch;
  plan_ = plan_epoch(epoch_);
  next_deliver_ = next_claim_ = from.index;
  started_ = true;
  if (options_.workers > 0 && next_deliver_ < batches_per_epoch_)
    for (int w = 0; w < options_.workers; ++w) threads_.emplace_back([this] { worker_loop(); });
}

void MultiTaskLoader::worker_loop() {
  for (;;) {
    int64_t index;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      work_cv_.wait(lock, [&] {
        return stopping_ || next_claim_ >= batches_per_epoch_ || next_claim_ < next_deliver_ + options_.prefetch;
      });
      if (stopping_ || next_claim_ >= batches_per_epoch_) return;
      index = next_claim_++;
    }
    Slot slot;
    try {
      slot.batch = build(index);
    } catch (...) {
      slot.error = std::current_exception();
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (stopping_) return;
      ready_.emplace(index, std::move(slot));
    }
    ready_cv_.notify_all();
  }
}

bool MultiTaskLoader::next(LoadedBatch& out) {
  VLP_CHECK(started_, "MultiTaskLoader::next: call start() or start_epoch() first");
  if (next_deliver_ >= batches_per_epoch_) {
    stop();
    return false;
  }
  std::exception_ptr error;
  if (threads_.empty()) {
    try {
      out = build(next_deliver_);
    } catch (...) {
      error = std::current_exception();
    }
  } else {
    std::unique_lock<std::mutex> lock(mutex_);
    ready_cv_.wait(lock, [&] { return ready_.count(next_deliver_) > 0; });
    auto it = ready_.find(next_deliver_);
    if (it->second.error) {
      error = it->second.error;  // left in place: the position stays at the failed batch
    } else {
      out = std::move(it->second.batch);
      ready_.erase(it);
    }
  }
  if (error) {
    std::string what = "unknown exception";
    try {
      std::rethrow_exception(error);
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
    }
    VLP_FAIL("MultiTaskLoader: building batch ", next_deliver_, " of epoch ", epoch_, " failed: ", what);
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    ++next_deliver_;
  }
  work_cv_.notify_all();
  return true;
}

LoaderPosition MultiTaskLoader::position() const {
  if (!started_) return {0, 0};
  if (next_deliver_ >= batches_per_epoch_) return {epoch_ + 1, 0};
  return {epoch_, next_deliver_};
}

void MultiTaskLoader::stop() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  work_cv_.notify_all();
  for (auto& t : threads_) t.join();
  threads_.clear();
  std::lock_guard<std::mutex> lock(mutex_);
  ready_.clear();
  stopping_ = false;
}

}  // namespace vlp::data
