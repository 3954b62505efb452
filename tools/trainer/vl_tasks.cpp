// Synthetic VL tasks (see vl_tasks.h).
#include "tools/trainer/vl_tasks.h"

#include <algorithm>
#include <cmath>
#include <functional>

#include "data/synthetic.h"
#include "runtime/error.h"
#include "runtime/rng.h"

namespace vlp::trainer {
namespace {

using data::SynthColor;
using data::SynthObject;
using data::SynthScene;
using data::SynthShape;

// A small deterministic integer stream (splitmix64) per example.
struct Stream {
  uint64_t s;
  uint64_t next() {
    uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  int below(int n) { return int(next() % uint64_t(n)); }
};

uint64_t hash_str(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (char c : s) h = (h ^ uint8_t(c)) * 1099511628211ull;
  return h;
}

const char* kNumbers[] = {"one", "two", "three"};
const char* kColors[] = {"red", "green", "blue", "yellow"};
const char* kShapes[] = {"circle", "square", "triangle"};

SynthScene random_scene(Stream& r, int size, int n) {
  SynthScene sc;
  sc.size = size;
  sc.grid = 2;
  std::vector<int> cells = {0, 1, 2, 3};
  for (int i = 3; i > 0; --i) std::swap(cells[size_t(i)], cells[size_t(r.below(i + 1))]);
  const int cell_px = size / 2;
  for (int i = 0; i < n; ++i) {
    SynthObject o;
    o.shape = SynthShape(r.below(3));
    o.color = SynthColor(r.below(4));
    o.cell = cells[size_t(i)];
    o.radius = cell_px * 3 / 8 + r.below(2);
    o.cx = (o.cell % 2) * cell_px + cell_px / 2;
    o.cy = (o.cell / 2) * cell_px + cell_px / 2;
    sc.objects.push_back(o);
  }
  return sc;
}

std::vector<int64_t> tokens(const std::string& text) {
  std::vector<int64_t> ids;
  std::string w;
  for (char c : text + " ") {
    if (c == ' ') {
      if (!w.empty()) ids.push_back(vl_vocab().id(w));
      w.clear();
    } else {
      w += c;
    }
  }
  ids.push_back(kEos);
  return ids;
}

}  // namespace

const Vocab& vl_vocab() {
  static const Vocab v{{"<s>", "<pad>", "</s>", "<unk>", "count:", "color:", "shape:", "what_color:", "color_shape:", "how", "many",
                        "objects", "is", "there", "a", "object", "what", "color", "the", "?", "yes", "no", "one",
                        "two", "three", "red", "green", "blue", "yellow", "circle", "square", "triangle", "object_color:",
                        "count_color:"}};
  return v;
}

int64_t Vocab::id(const std::string& w) const {
  auto it = std::find(words.begin(), words.end(), w);
  return it == words.end() ? 3 : int64_t(it - words.begin());
}

std::string Vocab::decode(const std::vector<int64_t>& ids) const {
  std::string out;
  for (int64_t id : ids) {
    if (id == kEos) break;
    if (id == kBos || id == kPad) continue;
    const std::string w = id >= 0 && id < int64_t(words.size()) ? words[size_t(id)] : "<unk>";
    out += (out.empty() ? "" : " ") + w;
  }
  return out;
}

const std::vector<std::string>& known_tasks() {
  static const std::vector<std::string> t = {"count", "color", "shape", "object_color", "what_color", "color_shape", "count_color"};
  return t;
}

std::vector<float> image_patch_features(const Image& image, int64_t image_size, int64_t patch) {
  VLP_CHECK(image_size > 0 && patch > 0 && image_size % patch == 0, "image_patch_features: image_size ", image_size,
            " must be a positive multiple of patch ", patch);
  const Image img = image.width == image_size && image.height == image_size
                        ? image
                        : resize(image, int(image_size), int(image_size), Resample::Bilinear);
  const int64_t g = image_size / patch;
  std::vector<float> feats;
  feats.reserve(size_t(g * g * patch * patch * 3));
  for (int64_t py = 0; py < g; ++py)
    for (int64_t px = 0; px < g; ++px)
      for (int64_t y = 0; y < patch; ++y)
        for (int64_t x = 0; x < patch; ++x)
          for (int c = 0; c < 3; ++c)
            feats.push_back(float(img.at(int(px * patch + x), int(py * patch + y), c)) / 255.0f - 0.5f);
  return feats;
}

std::vector<float> image_pixels(const Image& image, int64_t image_size) {
  VLP_CHECK(image_size > 0, "image_pixels: image_size must be positive, got ", image_size);
  const Image img = image.width == image_size && image.height == image_size
                        ? image
                        : resize(image, int(image_size), int(image_size), Resample::Bilinear);
  std::vector<float> px(size_t(3 * image_size * image_size));
  for (int c = 0; c < 3; ++c)
    for (int64_t y = 0; y < image_size; ++y)
      for (int64_t x = 0; x < image_size; ++x)
        px[size_t((c * image_size + y) * image_size + x)] = vit_pixel(img.at(int(x), int(y), c));
  return px;
}

double task_chance(const std::string& task) {
  if (task == "count") return 1.0 / 3;
  if (task == "object_color" || task == "what_color") return 0.25;
  return 0.5;  // color, shape, color_shape (yes / no), count_color (one / two)
}

VLExample make_example(const std::string& task, const std::string& split, int64_t index, uint64_t seed,
                       int64_t image_size, int64_t patch, bool task_prefix, bool pixels) {
  VLP_CHECK(std::find(known_tasks().begin(), known_tasks().end(), task) != known_tasks().end(), "unknown task '",
            task, "' (known: count, color, shape, object_color, what_color, color_shape, count_color)");
  Stream r{seed * 1000003ull ^ hash_str(task) ^ (hash_str(split) << 1) ^ (uint64_t(index) * 0x9E3779B97F4A7C15ull)};
  r.next();
  const int size = int(image_size);
  std::string question, answer;
  SynthScene sc;
  if (task == "count") {
    const int n = 1 + r.below(3);
    sc = random_scene(r, size, n);
    question = "how many objects ?";
    answer = kNumbers[n - 1];
  } else if (task == "color" || task == "shape") {
    const bool yes = r.below(2) == 1;
    sc = random_scene(r, size, 1 + r.below(3));
    const bool col = task == "color";
    const int target = col ? r.below(4) : r.below(3);
    for (auto& o : sc.objects) {  // remove every match, then add one for "yes"
      if (col && int(o.color) == target) o.color = SynthColor((target + 1 + r.below(3)) % 4);
      if (!col && int(o.shape) == target) o.shape = SynthShape((target + 1 + r.below(2)) % 3);
    }
    if (yes) {
      auto& o = sc.objects[size_t(r.below(int(sc.objects.size())))];
      if (col) o.color = SynthColor(target); else o.shape = SynthShape(target);
    }
    question = col ? std::string("is there a ") + kColors[target] + " object ?"
                   : std::string("is there a ") + kShapes[target] + " ?";
    answer = yes ? "yes" : "no";
  } else if (task == "color_shape") {  // both attributes on one object
    const bool yes = r.below(2) == 1;
    sc = random_scene(r, size, 1 + r.below(3));
    const int color = r.below(4), shape = r.below(3);
    for (auto& o : sc.objects)
      if (int(o.color) == color && int(o.shape) == shape) o.color = SynthColor((color + 1 + r.below(3)) % 4);
    if (yes) {
      auto& o = sc.objects[size_t(r.below(int(sc.objects.size())))];
      o.color = SynthColor(color);
      o.shape = SynthShape(shape);
    } else if (r.below(2) == 1) {  // a near miss: the colour or the shape is there, on another object
      auto& o = sc.objects[size_t(r.below(int(sc.objects.size())))];
      if (r.below(2) == 1) { o.color = SynthColor(color); o.shape = SynthShape((shape + 1 + r.below(2)) % 3); }
      else { o.shape = SynthShape(shape); o.color = SynthColor((color + 1 + r.below(3)) % 4); }
    }
    question = std::string("is there a ") + kColors[color] + " " + kShapes[shape] + " ?";
    answer = yes ? "yes" : "no";
  } else if (task == "object_color") {  // one object: its colour (colour words as answers, no binding)
    sc = random_scene(r, size, 1);
    question = "what color is the object ?";
    answer = kColors[int(sc.objects[0].color)];
  } else if (task == "count_color") {  // k of the n objects have the colour, 1 <= k < n (the total is wrong)
    const int k = 1 + r.below(2), n = k + 1 + r.below(3 - k);
    sc = random_scene(r, size, n);
    const int color = r.below(4);
    for (int i = 0; i < n; ++i)
      sc.objects[size_t(i)].color = i < k ? SynthColor(color) : SynthColor((color + 1 + r.below(3)) % 4);
    question = std::string("how many ") + kColors[color] + " objects ?";
    answer = kNumbers[k - 1];
  } else {  // what_color: the asked shape occurs exactly once
    sc = random_scene(r, size, 1 + r.below(3));
    const int target = r.below(3);
    for (auto& o : sc.objects)
      if (int(o.shape) == target) o.shape = SynthShape((target + 1 + r.below(2)) % 3);
    auto& o = sc.objects[size_t(r.below(int(sc.objects.size())))];
    o.shape = SynthShape(target);
    question = std::string("what color is the ") + kShapes[target] + " ?";
    answer = kColors[int(o.color)];
  }
  VLExample ex;
  ex.question = tokens((task_prefix ? task + ": " : std::string()) + question);
  ex.answer = tokens(answer);
  ex.answer_text = answer;
  const std::vector<uint8_t> rgb = data::render_scene(sc);
  if (pixels) {
    ex.image = rgb;
    return ex;
  }
  ex.feats = image_patch_features(Image{size, size, rgb}, image_size, patch);
  return ex;
}

std::vector<VLExample> make_split(const std::string& task, const std::string& split, int64_t n, uint64_t seed,
                                  int64_t image_size, int64_t patch, bool task_prefix, bool pixels) {
  std::vector<VLExample> out;
  out.reserve(size_t(n));
  for (int64_t i = 0; i < n; ++i)
    out.push_back(make_example(task, split, i, seed, image_size, patch, task_prefix, pixels));
  return out;
}

VLBatch collate(const std::string& task, int task_index, const std::vector<const VLExample*>& examples,
                int64_t n_patches, int64_t patch_dim) {
  VLBatch b;
  b.task = task;
  b.task_index = task_index;
  const int64_t B = int64_t(examples.size());
  size_t T = 0, L = 0;
  for (const VLExample* e : examples) {
    T = std::max(T, e->question.size());
    L = std::max(L, e->answer.size());
  }
  std::vector<int64_t> ids(size_t(B) * T, kPad), mask(size_t(B) * T, 0), labels(size_t(B) * L, -100);
  const bool pixels = B > 0 && !examples[0]->image.empty();
  const int64_t per_example = pixels ? int64_t(examples[0]->image.size()) : n_patches * patch_dim;
  const int64_t side = int64_t(std::lround(std::sqrt(double(per_example / 3))));
  VLP_CHECK(!pixels || 3 * side * side == per_example, "collate: ", per_example, " bytes are not a square RGB image");
  std::vector<float> feats;
  feats.reserve(size_t(B * per_example));
  for (int64_t i = 0; i < B; ++i) {
    const VLExample& e = *examples[size_t(i)];
    for (size_t t = 0; t < e.question.size(); ++t) {
      ids[size_t(i) * T + t] = e.question[t];
      mask[size_t(i) * T + t] = 1;
    }
    for (size_t t = 0; t < e.answer.size(); ++t) labels[size_t(i) * L + t] = e.answer[t];
    const size_t got = pixels ? e.image.size() : e.feats.size();
    VLP_CHECK(int64_t(got) == per_example && e.image.empty() != pixels, "collate: example ", i, " holds ", got,
              e.image.empty() ? " feature values" : " image bytes", ", expected ", per_example,
              pixels ? " image bytes" : " feature values");
    if (pixels) {  // [H, W, 3] bytes -> [3, H, W], normalised
      const std::vector<float> px = image_pixels(Image{int(side), int(side), e.image}, side);
      feats.insert(feats.end(), px.begin(), px.end());
    } else {
      feats.insert(feats.end(), e.feats.begin(), e.feats.end());
    }
    b.answers.push_back(e.answer_text);
  }
  b.input_ids = from_data<int64_t>(ids, {B, int64_t(T)});
  b.attention_mask = from_data<int64_t>(mask, {B, int64_t(T)});
  b.labels = from_data<int64_t>(labels, {B, int64_t(L)});
  if (pixels) {
    b.pixels = from_data<float>(feats, {B, 3, side, side});
  } else {
    b.feats = from_data<float>(feats, {B, n_patches, patch_dim});
  }
  return b;
}

}  // namespace vlp::trainer
