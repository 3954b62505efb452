// The trainer's file-backed data (see file_data.h): file defaults, the text codec, visual sources and
// loading each task's split.
#include "tools/trainer/file_data.h"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <set>

#include "data/bpe_tokenizer.h"
#include "data/image.h"
#include "runtime/error.h"
#include "tools/trainer/vl_tasks.h"

namespace vlp::trainer {
namespace fs = std::filesystem;

const std::vector<std::string>& file_task_names() {
  static const std::vector<std::string> t = {"vqa", "gqa", "nlvr2", "caption"};
  return t;
}

bool is_file_task(const std::string& name) {
  return std::find(file_task_names().begin(), file_task_names().end(), name) != file_task_names().end();
}

data::Task file_task(const std::string& name) {
  if (name == "vqa") return data::Task::vqa;
  if (name == "gqa") return data::Task::gqa;
  if (name == "nlvr2") return data::Task::nlvr2;
  VLP_CHECK(name == "caption", "unknown file-backed task '", name, "' (vqa, gqa, nlvr2, caption)");
  return data::Task::caption;
}

namespace {

std::string join_dir(const std::string& dir, const std::string& rel) { return (fs::path(dir) / rel).string(); }

// The make-data layout (data/synthetic.h), which is also the usual layout of the real files.
std::string default_files(const std::string& dir, const std::string& task, const std::string& split) {
  if (dir.empty()) return "";
  if (task == "vqa") return join_dir(dir, "vqa/karpathy_" + split + ".json");
  if (task == "gqa") return join_dir(dir, split == "train" ? "gqa/train.json" : split == "val" ? "gqa/valid.json" : "gqa/testdev.json");
  if (task == "nlvr2") return join_dir(dir, split == "train" ? "nlvr2/train.json" : split == "val" ? "nlvr2/dev.json" : "nlvr2/test1.json");
  return join_dir(dir, "coco/dataset_coco.json@" + std::string(split == "train" ? "train+restval" : split));
}

const std::string* split_key(const TrainConfig& c, const std::string& task, const std::string& split) {
  static const std::string none;
  const std::map<std::string, const std::string*> m = {
      {"vqa/train", &c.vqa_train},         {"vqa/val", &c.vqa_val},         {"vqa/test", &c.vqa_test},
      {"gqa/train", &c.gqa_train},         {"gqa/val", &c.gqa_val},         {"gqa/test", &c.gqa_test},
      {"nlvr2/train", &c.nlvr2_train},     {"nlvr2/val", &c.nlvr2_val},     {"nlvr2/test", &c.nlvr2_test},
      {"caption/train", &c.caption_train}, {"caption/val", &c.caption_val}, {"caption/test", &c.caption_test}};
  auto it = m.find(task + "/" + split);
  VLP_CHECK(it != m.end(), "unknown task split '", task, "/", split, "' (splits: train, val, test)");
  return it->second;
}

// "path@train+restval" -> {path, {train, restval}}.
std::pair<std::string, std::vector<std::string>> caption_file(const std::string& entry) {
  const size_t at = entry.rfind('@');
  if (at == std::string::npos) return {entry, {}};
  std::vector<std::string> splits;
  std::string cur;
  for (char ch : entry.substr(at + 1) + "+") {
    if (ch == '+') {
      if (!cur.empty()) splits.push_back(cur);
      cur.clear();
    } else {
      cur += ch;
    }
  }
  return {entry.substr(0, at), splits};
}

// Official VQA annotations beside a questions file: v2_OpenEnded_mscoco_X_questions.json ->
// v2_mscoco_X_annotations.json ("" when the name does not follow the pattern or the file is absent: test).
std::string vqa_annotations_for(const std::string& questions) {
  const fs::path p(questions);
  std::string name = p.filename().string();
  const std::string a = "OpenEnded_", b = "_questions.json";
  const size_t i = name.find(a), j = name.rfind(b);
  if (i == std::string::npos || j == std::string::npos) return "";
  name = name.substr(0, i) + name.substr(i + a.size(), j - i - a.size()) + "_annotations.json";
  const fs::path ann = p.parent_path() / name;
  return fs::exists(ann) ? ann.string() : "";
}

bool is_vqa_official(const std::string& path) { return path.find("_questions.json") != std::string::npos; }

std::string lower(std::string s) {
  for (char& ch : s) ch = char(std::tolower(uint8_t(ch)));
  return s;
}

}  // namespace

std::string answer_vocab_path(const TrainConfig& c) {
  if (!c.answer_vocab.empty() || c.data_dir.empty()) return c.answer_vocab;
  return join_dir(c.data_dir, "vqa/trainval_ans2label.json");
}

std::string split_files(const TrainConfig& c, const std::string& task, const std::string& split) {
  const std::string& v = *split_key(c, task, split);
  return v.empty() ? default_files(c.data_dir, task, split) : v;
}

std::string image_source(const TrainConfig& c, const std::string& task) {
  const std::string& v = task == "gqa" ? c.gqa_images : task == "nlvr2" ? c.nlvr2_images : c.coco_images;
  if (!v.empty() || c.data_dir.empty()) return v;
  return join_dir(c.data_dir, task == "gqa" ? "gqa/images" : task == "nlvr2" ? "nlvr2" : "coco");
}

std::vector<std::string> missing_paths(const TrainConfig& c) {
  std::vector<std::string> out;
  auto check = [&](const std::string& key, const std::string& path) {
    if (path.empty() || path == "words") return;
    if (path[0] == '<') {  // a placeholder of a shipped config ("<path to facebook/bart-base>")
      out.push_back("key '" + key + "' is not set: " + path);
      return;
    }
    for (const std::string& p : split_list(path)) {
      const size_t brace = p.find('{');
      if (brace != std::string::npos) {
        const std::string ref = p.substr(brace + 1, p.find('}', brace) - brace - 1);
        out.push_back("key '" + key + "' uses {" + ref + "}, which is not set (--set " + ref + "=PATH)");
        continue;
      }
      const std::string file = key.rfind("caption_", 0) == 0 ? caption_file(p).first : p;
      if (!fs::exists(file)) out.push_back("key '" + key + "' names a missing path '" + file + "'");
    }
  };
  if (!c.data_dir.empty() && c.data_dir[0] == '<')
    out.push_back("key 'data_dir' is not set: " + c.data_dir);
  else if (!c.data_dir.empty() && !fs::is_directory(c.data_dir))
    out.push_back("key 'data_dir' names a missing directory '" + c.data_dir + "'");
  for (const std::string& t : split_list(c.tasks)) {
    if (!is_file_task(t)) continue;
    for (const std::string split : {"train", "val", "test"}) {
      const std::string f = split_files(c, t, split);
      // Train is required; an absent val / test file only matters when that split is evaluated.
      if (f.empty() && split == "train") out.push_back("key '" + t + "_train' is empty (and no data_dir)");
      if (!f.empty() && (split == "train" || split == c.eval_split || !split_key(c, t, split)->empty()))
        check(t + "_" + split, f);
    }
    const std::string img = image_source(c, t);
    const std::string img_key = t == "gqa" ? "gqa_images" : t == "nlvr2" ? "nlvr2_images" : "coco_images";
    if (img.empty()) out.push_back("key '" + img_key + "' is empty (and no data_dir)");
    else check(img_key, img);
  }
  check("vqa_official", c.vqa_official);
  check("answer_vocab", c.model_kind == "encoder_classifier" ? answer_vocab_path(c) : c.answer_vocab);
  check("model_dir", c.model_dir);
  if (!c.tokenizer.empty()) check("tokenizer", c.tokenizer);
  std::vector<std::string> unique;  // one line per problem (coco_images serves two tasks)
  for (const std::string& m : out)
    if (std::find(unique.begin(), unique.end(), m) == unique.end()) unique.push_back(m);
  return unique;
}

// ---- text ------------------------------------------------------------------------------------------

std::vector<std::string> word_tokens(const std::string& text) {
  std::vector<std::string> out;
  std::string cur;
  auto flush = [&] {
    if (!cur.empty()) out.push_back(cur);
    cur.clear();
  };
  for (char ch : lower(text)) {
    const uint8_t u = uint8_t(ch);
    if (std::isspace(u)) {
      flush();
    } else if (std::isalnum(u) || ch == '\'' || ch == '-' || u >= 0x80) {
      cur += ch;
    } else {
      flush();
      out.push_back(std::string(1, ch));
    }
  }
  flush();
  return out;
}

std::vector<int64_t> TextCodec::encode(const std::string& text, int64_t max_len) const {
  std::vector<int64_t> ids;
  if (words) {
    if (bart_style) ids.push_back(bos);
    for (const std::string& w : word_tokens(text)) {
      auto it = word_id.find(w);
      ids.push_back(it == word_id.end() ? 3 : it->second);
    }
    ids.push_back(eos);
  } else {
    for (int32_t id : vlp::encode(tok, text, true)) ids.push_back(id);
    if (ids.empty() || ids.back() != eos) ids.push_back(eos);  // GPT-2 adds nothing: end with <|endoftext|>
  }
  if (int64_t(ids.size()) > max_len) {  // keep the closing </s>, as the tokenizers' truncation does
    ids.resize(size_t(max_len));
    ids.back() = eos;
  }
  return ids;
}

std::string TextCodec::decode(const std::vector<int64_t>& ids) const {
  std::vector<int64_t> kept;
  for (int64_t id : ids) {
    if (id == eos) break;
    if (id == pad || (bart_style && id == bos)) continue;
    kept.push_back(id);
  }
  if (!words) {
    std::vector<int32_t> i32(kept.begin(), kept.end());
    return vlp::decode(tok, i32, true);
  }
  std::string out;
  for (int64_t id : kept) {
    const std::string w = id >= 0 && id < int64_t(vocab.size()) ? vocab[size_t(id)] : "<unk>";
    if (w.rfind("<vis_", 0) == 0) continue;
    out += (out.empty() ? "" : " ") + w;
  }
  return out;
}

namespace {

TextCodec make_codec(const TrainConfig& c, const std::vector<std::vector<data::TrainExample>>& train,
                     int64_t visual_rows) {
  TextCodec k;
  k.bart_style = c.backbone == "bart";
  std::string path = c.tokenizer;
  if (path.empty() && !c.model_dir.empty()) path = c.model_dir;
  if (path.empty() || path == "words") {
    k.words = true;
    std::set<std::string> words;
    for (const auto& task : train)
      for (const auto& ex : task) {
        for (const std::string& w : word_tokens(ex.text)) words.insert(w);
        for (const std::string& t : ex.targets)
          for (const std::string& w : word_tokens(t)) words.insert(w);
      }
    for (const std::string& t : file_task_names())
      for (const std::string& w : word_tokens(data::task_prefix(file_task(t), c.gqa_prefix_compat))) words.insert(w);
    for (const std::string w : {"true", "false"}) words.insert(w);
    k.vocab = {"<s>", "<pad>", "</s>", "<unk>"};
    k.vocab.insert(k.vocab.end(), words.begin(), words.end());
    for (int64_t i = visual_rows - 1; i >= 0; --i) k.vocab.push_back("<vis_extra_id_" + std::to_string(i) + ">");
    for (size_t i = 0; i < k.vocab.size(); ++i) k.word_id[k.vocab[i]] = int64_t(i);
    k.size = int64_t(k.vocab.size());
    return k;
  }
  // A directory: the tokenizer files transformers writes.
  if (fs::is_directory(path)) {
    const fs::path d(path);
    if (fs::exists(d / "tokenizer.json")) path = (d / "tokenizer.json").string();
    else if (fs::exists(d / "spiece.model")) path = (d / "spiece.model").string();
    else if (fs::exists(d / "vocab.json") && fs::exists(d / "merges.txt"))
      path = (d / "vocab.json").string() + "," + (d / "merges.txt").string();
    else VLP_FAIL("tokenizer: directory '", d.string(), "' holds no tokenizer.json, spiece.model or vocab.json + merges.txt");
  }
  const auto parts = split_list(path);
  if (parts.size() == 2 && c.backbone == "gpt2") k.tok = load_gpt2_tokenizer(parts[0], parts[1]);
  else if (parts.size() == 2) k.tok = load_bart_tokenizer(parts[0], parts[1]);
  else k.tok = load_tokenizer(path);
  k.size = vocab_size(k.tok);
  auto id_of = [&](const char* t, int64_t fallback) {
    const int32_t id = token_to_id(k.tok, t);
    return id >= 0 ? int64_t(id) : fallback;
  };
  k.eos = id_of("</s>", id_of("<|endoftext|>", -1));
  VLP_CHECK(k.eos >= 0, "tokenizer '", path, "' has neither </s> nor <|endoftext|> (a T5, BART or GPT-2 tokenizer is needed)");
  k.pad = k.tok.pad_id >= 0 ? k.tok.pad_id : id_of("<pad>", k.eos);
  k.bos = id_of("<s>", k.pad);
  return k;
}

}  // namespace

// ---- images ----------------------------------------------------------------------------------------

std::vector<float> VisualSource::get(const std::string& id) {
  if (features) {
    Tensor t = contiguous(store->get(id));
    return std::vector<float>(t.data<float>(), t.data<float>() + t.numel());
  }
  {
    std::lock_guard<std::mutex> lock(mutex);
    auto it = cache.find(id);
    if (it != cache.end()) return it->second;
  }
  auto p = index.path_of.find(id);
  VLP_CHECK(p != index.path_of.end(), "images: no image file for id '", id, "' under '", root, "'");
  const Image img = resize(load_image(p->second), int(image_size), int(image_size), Resample::Bilinear);
  std::vector<float> f = image_patch_features(img, image_size, patch);
  std::lock_guard<std::mutex> lock(mutex);
  cache[id] = f;
  return f;
}

namespace {

std::shared_ptr<VisualSource> make_visual(const TrainConfig& c, const std::string& root) {
  auto v = std::make_shared<VisualSource>();
  v->root = root;
  if (fs::exists(fs::path(root) / "index.json")) {
    v->features = true;
    v->store = std::make_shared<FeatureStore>(root);
    const Shape& s = v->store->feature_shape();
    v->tokens = s.size() == 2 ? s[0] : 1;
    v->dim = s.back();
  } else {
    v->index = data::scan_image_dir(root, {".jpg", ".jpeg", ".png"});
    VLP_CHECK(v->index.size() > 0, "images: no .jpg / .png file under '", root, "'");
    v->image_size = c.image_size;
    v->patch = c.patch;
    v->tokens = (c.image_size / c.patch) * (c.image_size / c.patch);
    v->dim = c.patch * c.patch * 3;
  }
  return v;
}

}  // namespace

// ---- datasets --------------------------------------------------------------------------------------

TaskSplit load_task_split(const TrainConfig& c, const std::string& task, const std::string& split, bool for_training) {
  TaskSplit s;
  s.task = task;
  const std::string files = split_files(c, task, split);
  VLP_CHECK(!files.empty(), "no files for ", task, " split '", split, "': set key '", task, "_", split, "' or data_dir");
  data::LoadOptions opt;
  data::AnswerVocab vocab;
  if (task == "vqa" && !c.answer_vocab.empty()) {
    vocab = data::load_answer_vocab(c.answer_vocab);
    opt.vocab = &vocab;
    opt.drop_unknown_labels = true;
  }
  bool all_official = true;
  for (const std::string& f : split_list(files)) {
    if (task == "vqa") {
      const bool official = is_vqa_official(f);
      all_official &= official && !vqa_annotations_for(f).empty();
      auto set = official ? data::load_vqa_official(f, vqa_annotations_for(f), opt) : data::load_vqa_karpathy(f, opt);
      s.vqa.insert(s.vqa.end(), set.examples.begin(), set.examples.end());
    } else if (task == "gqa") {
      const bool official = f.find("_questions.json") != std::string::npos;
      auto set = official ? data::load_gqa_official(f, opt) : data::load_gqa_preprocessed(f, opt);
      s.gqa.insert(s.gqa.end(), set.examples.begin(), set.examples.end());
    } else if (task == "nlvr2") {
      // Official files are JSON lines ({...} per line), VL-T5 files one JSON list.
      std::ifstream in(f);
      char first = 0;
      in >> first;
      auto set = first == '[' ? data::load_nlvr2_preprocessed(f, opt) : data::load_nlvr2_official(f, opt);
      s.nlvr2.insert(s.nlvr2.end(), set.examples.begin(), set.examples.end());
    } else {
      auto [path, splits] = caption_file(f);
      const bool karpathy = !splits.empty() || fs::path(path).filename().string().rfind("dataset_", 0) == 0;
      auto set = karpathy ? data::load_coco_karpathy(path, splits, opt) : data::load_coco_captions(path, opt);
      s.coco.insert(s.coco.end(), set.images.begin(), set.images.end());
    }
  }
  if (task == "vqa") {
    s.vqa_official = all_official;
    std::string official_files = c.vqa_official;
    if (official_files.empty() && !c.data_dir.empty()) {  // make-data writes them beside the Karpathy files
      for (const std::string y : {"train2014", "val2014"}) {
        const std::string q = join_dir(c.data_dir, "vqa/v2_OpenEnded_mscoco_" + y + "_questions.json");
        if (fs::exists(q)) official_files += (official_files.empty() ? "" : ",") + q;
      }
    }
    if (!all_official && !official_files.empty() && !for_training) {  // Karpathy split: join the human answers
      std::vector<data::VqaExample> official;
      for (const std::string& q : split_list(official_files)) {
        auto set = data::load_vqa_official(q, vqa_annotations_for(q));
        official.insert(official.end(), set.examples.begin(), set.examples.end());
      }
      data::attach_official_answers(s.vqa, official);
      s.vqa_official = true;
    }
    s.examples = data::vqa_train_examples(s.vqa);
  } else if (task == "gqa") {
    s.examples = data::gqa_train_examples(s.gqa);
  } else if (task == "nlvr2") {
    s.examples = data::nlvr2_train_examples(s.nlvr2);
  } else {
    s.examples = for_training ? data::caption_train_examples(s.coco) : data::caption_eval_examples(s.coco);
  }
  VLP_CHECK(!s.examples.empty(), task, " split '", split, "' (", files, ") holds no example");
  return s;
}

std::unique_ptr<FileData> make_file_data(const TrainConfig& c) {
  auto d = std::make_unique<FileData>();
  d->tasks = split_list(c.tasks);
  std::vector<data::TaskData> tasks;
  std::vector<std::vector<data::TrainExample>> texts;
  int64_t max_tokens = 0;
  for (const std::string& t : d->tasks) {
    TaskSplit s = load_task_split(c, t, "train", true);
    data::TaskData td;
    td.task = file_task(t);
    td.examples = std::move(s.examples);
    td.batch_size = c.multitask_batch_base > 0 ? data::multitask_batch_size(td.task, c.multitask_batch_base) : c.batch_size;
    texts.push_back(td.examples);
    tasks.push_back(std::move(td));
    const std::string root = image_source(c, t);
    std::shared_ptr<VisualSource> v;
    for (auto& [other, src] : d->visual)
      if (src->root == root) v = src;  // vqa and caption share the COCO images
    d->visual[t] = v ? v : make_visual(c, root);
    VLP_CHECK(d->feat_dim == 0 || d->feat_dim == d->visual[t]->dim, "images: task '", t, "' has features of width ",
              d->visual[t]->dim, ", another task ", d->feat_dim, " (one model reads both)");
    d->feat_dim = d->visual[t]->dim;
    max_tokens = std::max(max_tokens, d->visual[t]->tokens);
  }
  d->codec = make_codec(c, texts, std::max<int64_t>(16, max_tokens));
  if (c.model_kind == "encoder_classifier") d->answers = data::load_answer_vocab(answer_vocab_path(c));
  data::LoaderOptions lo;
  lo.seed = c.data_seed != 0 ? c.data_seed : c.seed;
  lo.use_prefix = c.task_prefix;
  lo.gqa_prefix_compat = c.gqa_prefix_compat;
  lo.workers = int(c.workers);
  lo.pin_memory = config_device(c).is_cuda();  // batches upload from page-locked memory
  FileData* raw = d.get();
  TrainConfig cfg = c;
  d->loader = std::make_unique<data::MultiTaskLoader>(std::move(tasks), lo, [raw, cfg](const data::Batch& b) {
    FileBatch fb = build_file_batch(*raw, cfg, int(b.task_index), b.examples,
                                    &raw->loader->tasks()[size_t(b.task_index)].examples);
    data::TensorMap m{{"input_ids", fb.input_ids}, {"attention_mask", fb.attention_mask}, {"labels", fb.labels},
                      {"weights", fb.weights}, {"feats", fb.visual.feats}, {"pooled", fb.pooled}};
    if (fb.targets.defined()) m["targets"] = fb.targets;
    return m;
  });
  return d;
}

}  // namespace vlp::trainer
