// Multi-task loader (peft.md 2.10-2.11): one task per batch, every example once per epoch, per-task
// batch sizes, prefixes, VQA target sampling, determinism, workers == single thread, exact resume,
// clean shutdown and worker errors. Also the deterministic draws it is built on.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <map>
#include <set>
#include <thread>

#include "data/loader.h"
#include "data/sampling.h"
#include "runtime/device_copy.h"
#include "runtime/error.h"

namespace vlp::data {
namespace {

std::vector<TrainExample> numbered(const std::string& tag, int n, int n_images = 1) {
  std::vector<TrainExample> out;
  for (int i = 0; i < n; ++i) {
    TrainExample e{tag + std::to_string(i), "text " + tag + std::to_string(i), {}, {"t" + std::to_string(i)}, {1.0}};
    for (int k = 0; k < n_images; ++k) e.image_ids.push_back(tag + "_img" + std::to_string(i) + "_" + std::to_string(k));
    out.push_back(e);
  }
  return out;
}

std::vector<TaskData> four_tasks() {
  return {{Task::vqa, numbered("v", 23), 4}, {Task::gqa, numbered("g", 10), 3}, {Task::nlvr2, numbered("n", 7, 2), 5},
          {Task::caption, numbered("c", 9), 2}};
}

// A compact fingerprint of a batch: task, ids, inputs, targets, weights.
std::string describe(const Batch& b) {
  std::string s = std::string(task_name(b.task)) + "|" + std::to_string(b.epoch) + "|" + std::to_string(b.index);
  for (const auto& e : b.examples)
    s += "|" + e.id + ":" + e.input_text + ">" + e.target_text + "@" + std::to_string(e.target_weight);
  return s;
}

std::vector<std::string> run_epoch(MultiTaskLoader& loader, int64_t epoch) {
  loader.start_epoch(epoch);
  std::vector<std::string> out;
  LoadedBatch b;
  while (loader.next(b)) out.push_back(describe(b.batch));
  return out;
}

TEST(Sampling, DrawsAreDeterministicAndInRange) {
  Generator a(5), b(5);
  for (int i = 0; i < 100; ++i) ASSERT_EQ(draw_u64(a), draw_u64(b));
  EXPECT_NE(derive_seed(1, {2, 3}), derive_seed(1, {3, 2}));
  EXPECT_EQ(derive_seed(1, {2, 3}), derive_seed(1, {2, 3}));
  Generator g(11);
  std::vector<int> counts(6, 0);
  for (int i = 0; i < 6000; ++i) ++counts[size_t(draw_below(g, 6))];
  for (int c : counts) EXPECT_NEAR(c, 1000, 150);
  for (int i = 0; i < 100; ++i) {
    double u = draw_unit(g);
    EXPECT_TRUE(u >= 0 && u < 1);
    int64_t v = draw_between(g, -2, 2);
    EXPECT_TRUE(v >= -2 && v <= 2);
  }
  std::vector<int64_t> p = random_permutation(50, g);
  std::set<int64_t> distinct(p.begin(), p.end());
  EXPECT_EQ(distinct.size(), 50u);
  EXPECT_EQ(*distinct.rbegin(), 49);
  EXPECT_THROW(draw_weighted(g, {0.0, 0.0}), Error);
  for (int i = 0; i < 50; ++i) EXPECT_EQ(draw_weighted(g, {0.0, 2.0, 0.0}), 1);
}

TEST(Loader, BatchSizesOfTheRecipe) {
  EXPECT_EQ(multitask_batch_size(Task::vqa, 500), 500);
  EXPECT_EQ(multitask_batch_size(Task::gqa, 500), 833);
  EXPECT_EQ(multitask_batch_size(Task::nlvr2, 500), 166);
  EXPECT_EQ(multitask_batch_size(Task::caption, 500), 416);
  EXPECT_EQ(multitask_batch_size(Task::gqa, 300), 500);
  EXPECT_EQ(multitask_batch_size(Task::nlvr2, 300), 100);
  EXPECT_EQ(multitask_batch_size(Task::caption, 300), 250);
}

TEST(Loader, OneTaskPerBatchAndEveryExampleOncePerEpoch) {
  MultiTaskLoader loader(four_tasks(), LoaderOptions{});
  EXPECT_EQ(loader.batches_per_epoch(), 6 + 4 + 2 + 5);
  for (int64_t epoch = 0; epoch < 2; ++epoch) {
    std::map<int64_t, std::multiset<int64_t>> seen;
    std::map<int64_t, int> batches;
    loader.start_epoch(epoch);
    LoadedBatch b;
    int64_t index = 0;
    while (loader.next(b)) {
      EXPECT_EQ(b.batch.index, index++);
      EXPECT_EQ(b.batch.epoch, epoch);
      const TaskData& task = loader.tasks()[size_t(b.batch.task_index)];
      EXPECT_EQ(b.batch.task, task.task);
      EXPECT_LE(int64_t(b.batch.examples.size()), task.batch_size);
      for (const auto& e : b.batch.examples) {
        seen[b.batch.task_index].insert(e.example_index);
        EXPECT_EQ(e.id, task.examples[size_t(e.example_index)].id);  // one task per batch
        EXPECT_EQ(e.image_ids, task.examples[size_t(e.example_index)].image_ids);
      }
      ++batches[b.batch.task_index];
    }
    EXPECT_EQ(loader.position(), (LoaderPosition{epoch + 1, 0}));
    for (int64_t t = 0; t < 4; ++t) {
      const auto& s = seen[t];
      EXPECT_EQ(s.size(), loader.tasks()[size_t(t)].examples.size()) << "task " << t;
      EXPECT_EQ(std::set<int64_t>(s.begin(), s.end()).size(), s.size()) << "task " << t << " repeats an example";
    }
    EXPECT_EQ(batches[0], 6);
    EXPECT_EQ(batches[2], 2);
  }
}

TEST(Loader, ShuffledByEpochAndSeed) {
  MultiTaskLoader a(four_tasks(), LoaderOptions{}), b(four_tasks(), LoaderOptions{});
  auto e0 = run_epoch(a, 0);
  EXPECT_EQ(e0, run_epoch(b, 0));
  auto e1 = run_epoch(a, 1);
  EXPECT_NE(e0, e1);
  LoaderOptions other;
  other.seed = 1;
  MultiTaskLoader c(four_tasks(), other);
  EXPECT_NE(e0, run_epoch(c, 0));
  // Task order is interleaved, not task by task.
  auto order = a.epoch_order(0);
  int switches = 0;
  for (size_t i = 1; i < order.size(); ++i) switches += order[i].task_index != order[i - 1].task_index;
  EXPECT_GT(switches, 5);
  // Without shuffling: tasks in order, examples in order.
  LoaderOptions plain;
  plain.shuffle = false;
  MultiTaskLoader d(four_tasks(), plain);
  Batch first = d.make_batch(3, 0), last = d.make_batch(3, d.batches_per_epoch() - 1);
  EXPECT_EQ(first.task, Task::vqa);
  EXPECT_EQ(first.examples[0].id, "v0");
  EXPECT_EQ(last.task, Task::caption);
  EXPECT_EQ(last.examples.back().id, "c8");
  // drop_last drops each task's partial batch.
  plain.drop_last = true;
  EXPECT_EQ(MultiTaskLoader(four_tasks(), plain).batches_per_epoch(), 5 + 3 + 1 + 4);
}

TEST(Loader, TaskPrefixes) {
  EXPECT_EQ(task_prefix(Task::vqa), "vqa: ");
  EXPECT_EQ(task_prefix(Task::gqa), "gqa: ");
  EXPECT_EQ(task_prefix(Task::gqa, true), "gpa: ");
  EXPECT_EQ(task_prefix(Task::nlvr2), "nlvr: ");
  EXPECT_EQ(task_prefix(Task::caption), "caption: ");
  CocoImage img;
  img.image_id = "COCO_val2014_000000000001";
  img.captions = {"A dog.", "A brown dog."};
  std::vector<TaskData> tasks = {{Task::gqa, numbered("g", 2), 2}, {Task::caption, caption_train_examples({img}), 2}};
  LoaderOptions opt;
  opt.shuffle = false;
  opt.gqa_prefix_compat = true;
  MultiTaskLoader loader(tasks, opt);
  EXPECT_EQ(loader.make_batch(0, 0).examples[0].input_text, "gpa: text g0");
  Batch cap = loader.make_batch(0, 1);
  EXPECT_EQ(cap.examples[0].input_text, "caption: ");  // the prefix alone
  EXPECT_EQ(cap.examples[1].target_text, "A brown dog.");
  EXPECT_EQ(cap.examples[1].image_ids, std::vector<std::string>{"COCO_val2014_000000000001"});
  opt.use_prefix = false;
  MultiTaskLoader bare(tasks, opt);
  EXPECT_EQ(bare.make_batch(0, 0).examples[0].input_text, "text g0");
  EXPECT_EQ(bare.make_batch(0, 1).examples[0].input_text, "");
}

TEST(Loader, TaskCasting) {
  VqaExample v;
  v.question_id = 7, v.image_id = "img", v.question = "What?", v.labels = {{"a", 1.0}, {"b", 0.3}};
  auto tv = vqa_train_examples({v});
  EXPECT_EQ(tv[0].id, "7");
  EXPECT_EQ(tv[0].targets, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(tv[0].scores, (std::vector<double>{1.0, 0.3}));
  GqaExample g;
  g.question_id = "g1", g.image_id = "2", g.question = "Q?", g.labels = {{"red", 0.5}};
  EXPECT_EQ(gqa_train_examples({g})[0].scores, std::vector<double>{1.0});  // unweighted
  Nlvr2Example n;
  n.identifier = "dev-1-0-0", n.sentence = "S.", n.label = 0, n.image_ids[0] = "dev-1-0-img0", n.image_ids[1] = "dev-1-0-img1";
  CocoImage img;
  img.image_id = "COCO_val2014_000000000001", img.captions = {"A dog.", "A brown dog."};
  auto te = caption_eval_examples({img});
  ASSERT_EQ(te.size(), 1u);  // one entry per image, all references
  EXPECT_EQ(te[0].targets, img.captions);
  EXPECT_EQ(caption_train_examples({img}).size(), 2u);  // every caption an example
  auto tn = nlvr2_train_examples({n});
  EXPECT_EQ(tn[0].targets, std::vector<std::string>{"false"});
  EXPECT_EQ(tn[0].image_ids.size(), 2u);
}

TEST(Loader, VqaTargetsSampledByScore) {
  // Label dict {a: 1.0, b: 0.3, c: 0.6}: P(a) = 1/1.9, P(b) = 0.3/1.9, P(c) = 0.6/1.9.
  std::vector<TrainExample> ex(50, TrainExample{"q", "question", {"i"}, {"a", "b", "c"}, {1.0, 0.3, 0.6}});
  ex.push_back({"empty", "no label", {"i"}, {}, {}});
  MultiTaskLoader loader({{Task::vqa, ex, 51}}, LoaderOptions{});
  std::map<std::string, int> counts;
  int total = 0;
  for (int64_t epoch = 0; epoch < 40; ++epoch)
    for (const auto& e : loader.make_batch(epoch, 0).examples) {
      if (e.id == "empty") {
        EXPECT_EQ(e.target_text, "");
        EXPECT_EQ(e.target_weight, 0.0);
        continue;
      }
      ++counts[e.target_text];
      ++total;
      double expected_weight = e.target_text == "a" ? 1.0 : e.target_text == "b" ? 0.3 : 0.6;
      EXPECT_EQ(e.target_weight, expected_weight);  // the loss weight is the sampled answer's score
    }
  EXPECT_NEAR(counts["a"] / double(total), 1.0 / 1.9, 0.04);
  EXPECT_NEAR(counts["b"] / double(total), 0.3 / 1.9, 0.03);
  EXPECT_NEAR(counts["c"] / double(total), 0.6 / 1.9, 0.04);
  // The sample depends on (seed, epoch, example), not on the batch composition.
  EXPECT_EQ(describe(loader.make_batch(3, 0)), describe(loader.make_batch(3, 0)));
  LoaderOptions best;
  best.sample_targets = false;
  MultiTaskLoader argmax({{Task::vqa, ex, 51}}, best);
  EXPECT_EQ(argmax.make_batch(0, 0).examples[0].target_text, "a");
}

// A builder whose output is a function of the batch, with jitter so workers finish out of order.
TensorMap slow_builder(const Batch& b) {
  std::this_thread::sleep_for(std::chrono::microseconds(100 * ((b.index * 7919) % 5)));
  std::vector<double> idx;
  for (const auto& e : b.examples) idx.push_back(double(e.example_index));
  return {{"example_index", from_vector(idx, {int64_t(idx.size())}, DType::F64)}};
}

TEST(Loader, WorkersProduceTheSingleThreadedSequence) {
  for (int prefetch : {1, 2, 4}) {
    LoaderOptions single, threaded;
    threaded.workers = 3;
    threaded.prefetch = prefetch;
    MultiTaskLoader a(four_tasks(), single, slow_builder), b(four_tasks(), threaded, slow_builder);
    for (int64_t epoch = 0; epoch < 2; ++epoch) {
      a.start_epoch(epoch);
      b.start_epoch(epoch);
      LoadedBatch x, y;
      int n = 0;
      while (a.next(x)) {
        ASSERT_TRUE(b.next(y)) << "threaded loader ended early at batch " << n;
        ASSERT_EQ(describe(x.batch), describe(y.batch));
        ASSERT_EQ(to_vector(x.tensors.at("example_index")), to_vector(y.tensors.at("example_index")));
        ++n;
      }
      EXPECT_FALSE(b.next(y));
      EXPECT_EQ(n, a.batches_per_epoch());
    }
  }
}

TEST(Loader, PinMemoryKeepsTheValues) {
  LoaderOptions plain, pinned;
  pinned.pin_memory = true;
  pinned.workers = 2;
  MultiTaskLoader a(four_tasks(), plain, slow_builder), b(four_tasks(), pinned, slow_builder);
  a.start_epoch(0);
  b.start_epoch(0);
  LoadedBatch x, y;
  int n = 0;
  while (a.next(x)) {
    ASSERT_TRUE(b.next(y));
    const Tensor& t = y.tensors.at("example_index");
    EXPECT_TRUE(t.is_contiguous());
    // Page-locked only where a GPU can use it; the values are the builder's either way.
    EXPECT_EQ(is_pinned(t), cuda_available());
    EXPECT_EQ(to_vector(t), to_vector(x.tensors.at("example_index")));
    ++n;
  }
  EXPECT_EQ(n, a.batches_per_epoch());
}

TEST(Loader, PrefetchIsBounded) {
  std::atomic<int64_t> delivered{0}, worst_lead{0};
  LoaderOptions opt;
  opt.workers = 3;
  opt.prefetch = 2;
  auto builder = [&](const Batch& b) {
    int64_t lead = b.index - delivered.load();
    int64_t w = worst_lead.load();
    while (lead > w && !worst_lead.compare_exchange_weak(w, lead)) {
    }
    return TensorMap{};
  };
  MultiTaskLoader loader(four_tasks(), opt, builder);
  loader.start_epoch(0);
  LoadedBatch b;
  while (loader.next(b)) {
    std::this_thread::sleep_for(std::chrono::microseconds(300));
    delivered = b.batch.index + 1;
  }
  EXPECT_LT(worst_lead.load(), opt.prefetch + 1) << "a worker built a batch more than `prefetch` ahead";
}

TEST(Loader, ResumeYieldsTheRemainingSequence) {
  for (int workers : {0, 2}) {
    LoaderOptions opt;
    opt.workers = workers;
    MultiTaskLoader full(four_tasks(), opt, slow_builder);
    auto epoch2 = run_epoch(full, 2);
    MultiTaskLoader first(four_tasks(), opt, slow_builder);
    first.start_epoch(2);
    LoadedBatch b;
    for (int i = 0; i < 7; ++i) ASSERT_TRUE(first.next(b));
    std::string saved = position_to_json(first.position());
    EXPECT_EQ(first.position(), (LoaderPosition{2, 7}));
    first.stop();  // stopping early never hangs
    MultiTaskLoader resumed(four_tasks(), opt, slow_builder);
    resumed.start(position_from_json(saved));
    std::vector<std::string> rest;
    while (resumed.next(b)) rest.push_back(describe(b.batch));
    EXPECT_EQ(rest, std::vector<std::string>(epoch2.begin() + 7, epoch2.end()));
    // Saved after the epoch's last batch: the next epoch from its start.
    EXPECT_EQ(resumed.position(), (LoaderPosition{3, 0}));
  }
  EXPECT_THROW(position_from_json("{\"epoch\": 1}"), Error);
  EXPECT_THROW(position_from_json("nonsense"), Error);
  MultiTaskLoader l(four_tasks(), LoaderOptions{});
  EXPECT_THROW(l.start({0, 1000}), Error);
}

TEST(Loader, EarlyStopAndDestructionDoNotHang) {
  LoaderOptions opt;
  opt.workers = 4;
  opt.prefetch = 3;
  auto sleepy = [](const Batch&) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    return TensorMap{};
  };
  for (int round = 0; round < 5; ++round) {
    MultiTaskLoader loader(four_tasks(), opt, sleepy);
    loader.start_epoch(round);
    LoadedBatch b;
    ASSERT_TRUE(loader.next(b));
    if (round % 2) loader.start_epoch(round + 1);  // restarting mid-epoch
  }  // destroyed with workers mid-build
  MultiTaskLoader never_started(four_tasks(), opt, sleepy);
  LoadedBatch b;
  EXPECT_THROW(never_started.next(b), Error);
}

TEST(Loader, WorkerExceptionsReachTheConsumer) {
  for (int workers : {0, 3}) {
    LoaderOptions opt;
    opt.workers = workers;
    auto failing = [](const Batch& b) {
      if (b.index == 4) throw std::runtime_error("image file 'x.jpg' is corrupt");
      return TensorMap{};
    };
    MultiTaskLoader loader(four_tasks(), opt, failing);
    loader.start_epoch(0);
    LoadedBatch b;
    for (int i = 0; i < 4; ++i) ASSERT_TRUE(loader.next(b));
    try {
      loader.next(b);
      FAIL() << "expected the builder's exception";
    } catch (const Error& e) {
      std::string what = e.what();
      EXPECT_NE(what.find("image file 'x.jpg' is corrupt"), std::string::npos) << what;
      EXPECT_NE(what.find("batch 4 of epoch 0"), std::string::npos) << what;
    }
    EXPECT_EQ(loader.position(), (LoaderPosition{0, 4}));  // still at the failed batch
    EXPECT_THROW(loader.next(b), Error);                   // and it fails again, without hanging
  }
}

}  // namespace
}  // namespace vlp::data
