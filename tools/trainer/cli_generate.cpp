// Answers about image files with a training checkpoint (see cli_generate.h).
#include "tools/trainer/cli_generate.h"

#include <algorithm>
#include <cctype>

#include "autograd/graph.h"
#include "runtime/error.h"
#include "runtime/safetensors.h"

namespace vlp::trainer {
namespace {

bool has_task(const Session& s, const std::string& t) {
  return std::find(s.tasks.begin(), s.tasks.end(), t) != s.tasks.end();
}

std::vector<std::string> words_of(const std::string& text) {
  std::vector<std::string> out;
  std::string w;
  auto flush = [&] {
    if (!w.empty()) out.push_back(w);
    w.clear();
  };
  for (char c : text) {
    if (std::isspace(static_cast<unsigned char>(c))) {
      flush();
    } else if (c == '?') {
      flush();
      out.push_back("?");
    } else {
      w += char(std::tolower(static_cast<unsigned char>(c)));
    }
  }
  flush();
  return out;
}

bool one_of(const std::string& w, std::initializer_list<const char*> set) {
  for (const char* s : set)
    if (w == s) return true;
  return false;
}

}  // namespace

TrainConfig checkpoint_config(const std::string& checkpoint, const std::vector<std::string>& overrides) {
  const SafetensorsHeader h = read_safetensors_header(checkpoint);
  auto it = h.metadata.find("config");
  VLP_CHECK(it != h.metadata.end(), "checkpoint '", checkpoint,
            "' records no config (not a vlpeft training checkpoint?): pass --config");
  nlohmann::json j = nlohmann::json::parse(it->second, nullptr, false);
  VLP_CHECK(!j.is_discarded(), "checkpoint '", checkpoint, "': its config metadata is not valid JSON");
  j["init_from"] = "";  // the checkpoint holds the weights
  return parse_config(j, checkpoint + " (config metadata)", overrides);
}

std::vector<int64_t> question_tokens(const std::string& question, const std::string& task, bool task_prefix,
                                     std::vector<std::string>* unknown) {
  std::vector<std::string> words = words_of(question);
  if (!words.empty() && words[0] == task + ":") words.erase(words.begin());  // the prefix is added below
  std::vector<int64_t> ids;
  if (task_prefix) ids.push_back(vl_vocab().id(task + ":"));
  for (const std::string& w : words) {
    const int64_t id = vl_vocab().id(w);
    if (id == 3 && w != "<unk>" && unknown) unknown->push_back(w);
    ids.push_back(id);
  }
  ids.push_back(kEos);
  return ids;
}

std::string choose_task(const Session& s, const std::string& question, const std::string& task) {
  std::string tasks;
  for (const auto& t : s.tasks) tasks += (tasks.empty() ? "" : ", ") + t;
  if (!task.empty()) {
    VLP_CHECK(has_task(s, task), "--task '", task, "' is not a task of this checkpoint (", tasks, ")");
    return task;
  }
  const std::vector<std::string> w = words_of(question);
  if (w.empty()) {
    VLP_CHECK(has_task(s, "caption"), "this checkpoint's tasks (", tasks,
              ") include no captioning task: pass --question TEXT");
    return "caption";
  }
  if (w[0].size() > 1 && w[0].back() == ':' && has_task(s, w[0].substr(0, w[0].size() - 1)))
    return w[0].substr(0, w[0].size() - 1);
  auto at = [&](size_t i) { return i < w.size() ? w[i] : std::string(); };
  const auto colors = {"red", "green", "blue", "yellow"};
  const auto shapes = {"circle", "square", "triangle"};
  std::string guess;
  if (at(0) == "how" && at(1) == "many") guess = one_of(at(2), colors) ? "count_color" : "count";
  else if (at(0) == "what" && at(1) == "color") guess = at(4) == "object" ? "object_color" : "what_color";
  else if (at(0) == "is" && at(1) == "there" && at(2) == "a") {
    if (one_of(at(3), colors) && one_of(at(4), shapes)) guess = "color_shape";
    else if (one_of(at(3), colors)) guess = "color";
    else if (one_of(at(3), shapes)) guess = "shape";
  }
  if (!guess.empty() && has_task(s, guess)) return guess;
  return s.tasks.at(0);
}

ImageAnswer answer_about_image(Session& s, const std::string& image_path, const std::string& question,
                               const std::string& task, const GenerationOptions& options) {
  ImageAnswer r;
  r.task = choose_task(s, question, task);
  const int t = int(std::find(s.tasks.begin(), s.tasks.end(), r.task) - s.tasks.begin());
  r.question_ids = question_tokens(question, r.task, s.cfg.task_prefix, &r.unknown_words);
  const Image image = load_image(image_path);
  const int64_t T = int64_t(r.question_ids.size());
  Tensor ids = from_data<int64_t>(r.question_ids, {1, T}, s.device);
  Tensor mask = from_data<int64_t>(std::vector<int64_t>(size_t(T), 1), {1, T}, s.device);
  VisualInput vi;
  if (s.model->vision_model) {
    const int64_t S = s.cfg.image_size;
    vi.pixels = from_data<float>(image_pixels(image, S), {1, 3, S, S}, s.device);
  } else {
    const std::vector<float> feats = image_patch_features(image, s.cfg.image_size, s.cfg.patch);
    VLP_CHECK(int64_t(feats.size()) == s.n_patches * s.patch_dim, "generate: the image gives ", feats.size(),
              " feature values, the model takes ", s.n_patches, " x ", s.patch_dim);
    vi.feats = from_data<float>(feats, {1, s.n_patches, s.patch_dim}, s.device);
  }
  ForwardContext ctx;
  ctx.task = t;
  GenerationOptions opt = options;
  if (opt.max_new_tokens <= 0 && opt.max_length <= 0) opt.max_new_tokens = s.cfg.max_new_tokens;
  NoGradGuard no_grad;
  s.model->train(false);
  Tensor seq = host_copy(s.model->generate(ids, mask, vi, opt, ctx).sequences);
  r.answer_ids.assign(seq.data<int64_t>() + 1, seq.data<int64_t>() + seq.size(1));
  r.answer = vl_vocab().decode(r.answer_ids);
  return r;
}

}  // namespace vlp::trainer
