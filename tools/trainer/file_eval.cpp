// File-backed batches and evaluation with each task's metric (see file_data.h). Predictions: VQA and GQA
// greedy generation, captions beam search (caption_beams, max_target_length new tokens), NLVR2 the
// comparison of the "true" / "false" logits at the first target position (spec/peft.md §2.13).
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>

#include "autograd/graph.h"
#include "autograd/ops.h"
#include "data/metrics.h"
#include "runtime/error.h"
#include "tools/trainer/file_data.h"

namespace vlp::trainer {

FileBatch build_file_batch(FileData& d, const TrainConfig& c, int task_index,
                           const std::vector<data::BatchExample>& examples, const std::vector<data::TrainExample>* source) {
  const std::string& task = d.tasks[size_t(task_index)];
  VisualSource& v = *d.visual.at(task);
  const int64_t n_images = task == "nlvr2" ? 2 : 1, B = int64_t(examples.size());
  VLP_CHECK(B > 0, "build_file_batch: empty batch of task '", task, "'");
  std::vector<std::vector<int64_t>> in, out;
  size_t T = 0, L = 0;
  const bool gpt2 = c.model_kind == "gpt2_prefix";
  for (const auto& e : examples) {
    // GPT-2 reads the caption itself after the visual token; the others read the (prefixed) text.
    in.push_back(gpt2 ? d.codec.encode(e.target_text, c.max_target_length) : d.codec.encode(e.input_text, c.max_text_length));
    out.push_back(gpt2 ? in.back() : d.codec.encode(e.target_text, c.max_target_length));
    T = std::max(T, in.back().size());
    L = std::max(L, out.back().size());
  }
  std::vector<int64_t> ids(size_t(B) * T, d.codec.pad), mask(size_t(B) * T, 0), labels(size_t(B) * L, -100);
  std::vector<float> weights, feats;
  const int64_t N = v.tokens * n_images;
  feats.reserve(size_t(B * N * v.dim));
  for (int64_t i = 0; i < B; ++i) {
    for (size_t t = 0; t < in[size_t(i)].size(); ++t) {
      ids[size_t(i) * T + t] = in[size_t(i)][t];
      mask[size_t(i) * T + t] = 1;
    }
    for (size_t t = 0; t < out[size_t(i)].size(); ++t) labels[size_t(i) * L + t] = out[size_t(i)][t];
    weights.push_back(float(examples[size_t(i)].target_weight));
    const auto& img = examples[size_t(i)].image_ids;
    VLP_CHECK(int64_t(img.size()) == n_images, "task '", task, "' example '", examples[size_t(i)].id, "' names ",
              img.size(), " images, expected ", n_images);
    for (const std::string& id : img) {
      std::vector<float> f = v.get(id);
      VLP_CHECK(int64_t(f.size()) == v.tokens * v.dim, "images: features of '", id, "' have ", f.size(),
                " values, expected ", v.tokens, " x ", v.dim);
      feats.insert(feats.end(), f.begin(), f.end());
    }
  }
  FileBatch b;
  b.task = task_index;
  b.input_ids = from_data<int64_t>(ids, {B, int64_t(T)});
  b.attention_mask = from_data<int64_t>(mask, {B, int64_t(T)});
  b.labels = from_data<int64_t>(labels, {B, int64_t(L)});
  b.weights = from_data<float>(weights, {B});
  b.visual.feats = from_data<float>(feats, {B, N, v.dim});
  b.visual.n_images = n_images;
  if (c.model_kind != "seq2seq") {
    b.pooled = mean(b.visual.feats, {1}, false);  // one vector per example
    if (!d.answers.answers.empty() && source) {   // classifier targets: every label's soft score
      std::vector<float> t(size_t(B * d.answers.size()), 0.0f);
      for (int64_t i = 0; i < B; ++i) {
        const data::TrainExample& ex = (*source)[size_t(examples[size_t(i)].example_index)];
        for (size_t k = 0; k < ex.targets.size(); ++k) {
          const int64_t a = d.answers.find(ex.targets[k]);
          if (a >= 0) t[size_t(i * d.answers.size() + a)] = float(ex.scores[k]);
        }
      }
      b.targets = from_data<float>(t, {B, d.answers.size()});
    }
  }
  return b;
}

Tensor moved_to(const Tensor& t, Device device) {
  if (!t.defined() || t.device() == device) return t;
  return convert(t, t.dtype(), device);
}

FileBatch batch_to_device(FileBatch b, Device device) {
  if (device.is_cpu()) return b;
  for (Tensor* t : {&b.input_ids, &b.attention_mask, &b.weights, &b.visual.feats, &b.visual.boxes, &b.visual.mask,
                    &b.pooled, &b.targets})
    *t = moved_to(*t, device);
  return b;
}

Tensor host_copy(const Tensor& t) { return convert(t, t.dtype(), Device::cpu()); }

namespace {

constexpr int64_t kEvalBatch = 32;

// The first id of "true" / "false" as a target (after BART's <s>).
int64_t first_target_id(const TextCodec& k, const std::string& word) {
  const auto ids = k.encode(word, 8);
  return ids[k.bart_style && ids.size() > 1 && ids[0] == k.bos ? 1 : 0];
}

void write_predictions(const std::string& path, const std::string& task, const TaskSplit& s, int64_t n,
                       const std::vector<std::string>& pred) {
  std::ofstream f(path);
  if (task == "nlvr2") {  // the official scorer's CSV
    for (int64_t i = 0; i < n; ++i) f << s.nlvr2[size_t(i)].identifier << "," << (pred[size_t(i)] == "true" ? "True" : "False") << "\n";
    return;
  }
  nlohmann::json j = nlohmann::json::array();
  for (int64_t i = 0; i < n; ++i) {
    if (task == "vqa") j.push_back({{"question_id", s.vqa[size_t(i)].question_id}, {"answer", pred[size_t(i)]}});
    else if (task == "gqa") j.push_back({{"questionId", s.gqa[size_t(i)].question_id}, {"prediction", pred[size_t(i)]}});
    else j.push_back({{"image_id", s.coco[size_t(i)].coco_id}, {"caption", pred[size_t(i)]}});
  }
  f << j.dump(1) << "\n";
}

}  // namespace

Predictor seq2seq_predictor(const FileData& d, const TrainConfig& c, const VLSeq2Seq& model) {
  return [&d, c, &model](int ti, const FileBatch& host_batch) {
    const FileBatch b = batch_to_device(host_batch, config_device(c));
    const std::string& task = d.tasks[size_t(ti)];
    const int64_t B = b.input_ids.size(0);
    std::vector<std::string> pred;
    ForwardContext ctx;
    ctx.task = ti;
    if (task == "nlvr2") {
      const int64_t t_id = first_target_id(d.codec, "true"), f_id = first_target_id(d.codec, "false");
      const int64_t pos = d.codec.bart_style ? 1 : 0;  // BART decodes [</s>, <s>], T5 [<pad>]
      Tensor logits = host_copy(model.forward(b.input_ids, b.attention_mask, b.visual, b.labels, ctx).logits);
      VLP_CHECK(logits.dtype() == DType::F32, "nlvr2 eval: F32 logits expected");
      const int64_t L = logits.size(1), V = logits.size(2);
      const float* p = logits.data<float>();
      for (int64_t r = 0; r < B; ++r) {
        const float* row = p + (r * L + pos) * V;
        pred.push_back(row[t_id] > row[f_id] ? "true" : "false");
      }
      return pred;
    }
    GenerationOptions opt;
    opt.max_new_tokens = task == "caption" ? c.max_target_length : c.gen_max_length;
    opt.num_beams = task == "caption" ? c.caption_beams : 1;
    Tensor seq = host_copy(model.generate(b.input_ids, b.attention_mask, b.visual, opt, ctx).sequences);
    const int64_t L = seq.size(1);
    for (int64_t r = 0; r < B; ++r) {  // position 0 is the decoder start token
      std::vector<int64_t> ids(seq.data<int64_t>() + r * L + 1, seq.data<int64_t>() + (r + 1) * L);
      pred.push_back(d.codec.decode(ids));
    }
    return pred;
  };
}

std::map<std::string, double> evaluate_files(FileData& d, const TrainConfig& c, const Predictor& predict,
                                             const std::string& split, std::map<std::string, double>* primary,
                                             const std::string& pred_dir) {
  NoGradGuard no_grad;
  std::map<std::string, double> out;
  for (size_t ti = 0; ti < d.tasks.size(); ++ti) {
    const std::string& task = d.tasks[ti];
    const std::string key = task + "/" + split;
    if (!d.eval_cache.count(key)) d.eval_cache[key] = load_task_split(c, task, split, false);
    const TaskSplit& s = d.eval_cache.at(key);
    const int64_t total = int64_t(s.examples.size());
    const int64_t n = c.eval_limit > 0 ? std::min(c.eval_limit, total) : total;
    const std::string prefix = c.task_prefix ? data::task_prefix(file_task(task), c.gqa_prefix_compat) : "";
    std::vector<std::string> pred;
    for (int64_t i = 0; i < n; i += kEvalBatch) {
      std::vector<data::BatchExample> ex;
      for (int64_t k = i; k < std::min(n, i + kEvalBatch); ++k) {
        const data::TrainExample& e = s.examples[size_t(k)];
        data::BatchExample b;
        b.id = e.id;
        b.input_text = prefix + e.text;
        b.image_ids = e.image_ids;
        b.target_text = task == "nlvr2" ? "true" : "";
        ex.push_back(b);
      }
      const FileBatch b = build_file_batch(d, c, int(ti), ex);
      for (std::string text : predict(int(ti), b)) {
        while (!text.empty() && text.front() == ' ') text.erase(text.begin());
        pred.push_back(text);
      }
    }
    double main_score = 0;
    if (task == "vqa") {
      std::vector<data::VqaExample> sub(s.vqa.begin(), s.vqa.begin() + n);
      std::unordered_map<int64_t, std::string> m;
      for (int64_t i = 0; i < n; ++i) m[sub[size_t(i)].question_id] = pred[size_t(i)];
      out["vqa.soft_score"] = main_score = data::vqa_soft_score(sub, m);
      if (s.vqa_official) {
        out["vqa.accuracy"] = main_score = data::vqa_official_accuracy(sub, m, data::VqaVariant::legacy).overall;
      }
    } else if (task == "gqa") {
      std::vector<data::GqaExample> sub(s.gqa.begin(), s.gqa.begin() + n);
      std::unordered_map<std::string, std::string> m;
      for (int64_t i = 0; i < n; ++i) m[sub[size_t(i)].question_id] = pred[size_t(i)];
      out["gqa.accuracy"] = main_score = data::gqa_accuracy(sub, m);
    } else if (task == "nlvr2") {
      std::vector<data::Nlvr2Example> sub(s.nlvr2.begin(), s.nlvr2.begin() + n);
      std::unordered_map<std::string, bool> m;
      for (int64_t i = 0; i < n; ++i) m[sub[size_t(i)].identifier] = pred[size_t(i)] == "true";
      const bool labelled = std::all_of(sub.begin(), sub.end(), [](const auto& e) { return e.label >= 0; });
      if (labelled) {
        data::Nlvr2Scores sc = data::nlvr2_scores(sub, m);
        out["nlvr2.accuracy"] = main_score = sc.accuracy;
        out["nlvr2.consistency"] = sc.consistency;
      }
    } else {
      std::vector<data::CocoImage> sub(s.coco.begin(), s.coco.begin() + n);
      std::unordered_map<std::string, std::string> m;
      for (int64_t i = 0; i < n; ++i) m[sub[size_t(i)].image_id] = pred[size_t(i)];
      data::CaptionScores sc = data::coco_caption_scores(sub, m);
      out["caption.cider_d"] = main_score = sc.cider_d;
      out["caption.bleu_4"] = sc.bleu.size() >= 4 ? sc.bleu[3] : 0.0;
      out["caption.rouge_l"] = sc.rouge_l;
      // METEOR / SPICE only when their jars are configured (data.md 6.9); a configured jar that fails is
      // reported here and the metric is left out (never 0).
      if (sc.meteor) out["caption.meteor"] = *sc.meteor;
      else if (std::getenv("VLP_METEOR_JAR")) std::cerr << "caption.meteor not computed: " << sc.meteor_not_computed << "\n";
      if (sc.spice) out["caption.spice"] = *sc.spice;
      else if (std::getenv("VLP_SPICE_JAR")) std::cerr << "caption.spice not computed: " << sc.spice_not_computed << "\n";
    }
    if (primary) (*primary)[task] = main_score;
    if (!pred_dir.empty()) {
      std::filesystem::create_directories(pred_dir);
      write_predictions(pred_dir + "/predictions_" + split + "_" + task + (task == "nlvr2" ? ".csv" : ".json"), task, s,
                        n, pred);
    }
  }
  return out;
}

}  // namespace vlp::trainer
