// Synthetic scenes: names, palette, placement on a grid of cells, and integer-only rasterisation (so the
// pixels are identical on every machine and compiler).
#include <algorithm>

#include "data/synthetic.h"
#include "data/synthetic_internal.h"
#include "runtime/error.h"

namespace vlp::data {

const char* synth_shape_name(SynthShape s) {
  switch (s) {
    case SynthShape::circle: return "circle";
    case SynthShape::square: return "square";
    case SynthShape::triangle: return "triangle";
  }
  return "?";
}

const char* synth_color_name(SynthColor c) {
  switch (c) {
    case SynthColor::red: return "red";
    case SynthColor::green: return "green";
    case SynthColor::blue: return "blue";
    case SynthColor::yellow: return "yellow";
  }
  return "?";
}

void synth_color_rgb(SynthColor c, uint8_t rgb[3]) {
  static const uint8_t palette[4][3] = {{220, 40, 40}, {40, 170, 60}, {50, 80, 220}, {235, 210, 40}};
  const uint8_t* p = palette[int(c)];
  rgb[0] = p[0], rgb[1] = p[1], rgb[2] = p[2];
}

void synth_background(uint8_t rgb[3]) { rgb[0] = rgb[1] = rgb[2] = 140; }

namespace {

bool inside(const SynthObject& o, int x, int y) {
  int dx = x - o.cx, dy = y - o.cy, r = o.radius;
  switch (o.shape) {
    case SynthShape::circle: return dx * dx + dy * dy <= r * r + r;
    case SynthShape::square: {
      int h = r * 4 / 5;
      return std::abs(dx) <= h && std::abs(dy) <= h;
    }
    case SynthShape::triangle:  // apex up at (cx, cy - r), base on row cy + r from cx - r to cx + r
      return dy >= -r && dy <= r && 2 * std::abs(dx) <= dy + r;
  }
  return false;
}

}  // namespace

std::vector<uint8_t> render_scene(const SynthScene& scene) {
  VLP_CHECK(scene.size >= 8, "render_scene: image size ", scene.size, " is too small");
  std::vector<uint8_t> pixels(size_t(scene.size) * size_t(scene.size) * 3);
  uint8_t bg[3];
  synth_background(bg);
  for (size_t i = 0; i < pixels.size(); i += 3) pixels[i] = bg[0], pixels[i + 1] = bg[1], pixels[i + 2] = bg[2];
  for (const auto& o : scene.objects) {
    uint8_t rgb[3];
    synth_color_rgb(o.color, rgb);
    for (int y = std::max(0, o.cy - o.radius); y <= std::min(scene.size - 1, o.cy + o.radius); ++y)
      for (int x = std::max(0, o.cx - o.radius); x <= std::min(scene.size - 1, o.cx + o.radius); ++x)
        if (inside(o, x, y)) {
          size_t p = (size_t(y) * size_t(scene.size) + size_t(x)) * 3;
          pixels[p] = rgb[0], pixels[p + 1] = rgb[1], pixels[p + 2] = rgb[2];
        }
  }
  return pixels;
}

namespace synth {

SynthShape random_shape(Generator& gen) { return SynthShape(draw_below(gen, kNumShapes)); }
SynthColor random_color(Generator& gen) { return SynthColor(draw_below(gen, kNumColors)); }

SynthScene place_objects(Generator& gen, int size, const std::vector<std::pair<SynthShape, SynthColor>>& specs) {
  SynthScene scene;
  scene.size = size;
  scene.grid = size >= 48 ? 3 : 2;
  int cells = scene.grid * scene.grid;
  VLP_CHECK(int(specs.size()) <= cells, "synthetic scene: ", specs.size(), " objects do not fit ", cells, " cells");
  std::vector<int64_t> order = random_permutation(cells, gen);
  int cell = size / scene.grid;
  int r_max = (cell - 3) / 2, r_min = std::max(3, r_max * 2 / 3);
  for (size_t i = 0; i < specs.size(); ++i) {
    SynthObject o;
    o.shape = specs[i].first;
    o.color = specs[i].second;
    o.cell = int(order[i]);
    int x0 = (o.cell % scene.grid) * cell, y0 = (o.cell / scene.grid) * cell;
    o.radius = int(draw_between(gen, r_min, std::max(r_min, r_max)));
    int lo = o.radius + 1, hi = cell - o.radius - 2;
    o.cx = x0 + (hi >= lo ? int(draw_between(gen, lo, hi)) : cell / 2);
    o.cy = y0 + (hi >= lo ? int(draw_between(gen, lo, hi)) : cell / 2);
    scene.objects.push_back(o);
  }
  return scene;
}

SynthScene random_scene(Generator& gen, int size) {
  int n = int(draw_between(gen, 1, 4));
  std::vector<std::pair<SynthShape, SynthColor>> specs;
  for (int i = 0; i < n; ++i) {
    SynthShape s = random_shape(gen);
    specs.push_back({s, random_color(gen)});
  }
  return place_objects(gen, size, specs);
}

int count_shape(const SynthScene& s, SynthShape shape) {
  return int(std::count_if(s.objects.begin(), s.objects.end(), [&](const SynthObject& o) { return o.shape == shape; }));
}
int count_color(const SynthScene& s, SynthColor color) {
  return int(std::count_if(s.objects.begin(), s.objects.end(), [&](const SynthObject& o) { return o.color == color; }));
}
bool has_object(const SynthScene& s, SynthColor color, SynthShape shape) {
  return std::any_of(s.objects.begin(), s.objects.end(), [&](const SynthObject& o) { return o.color == color && o.shape == shape; });
}

std::string plural(SynthShape s) { return std::string(synth_shape_name(s)) + "s"; }

std::string number_word(int n) {
  static const char* words[] = {"no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"};
  return n >= 0 && n < 10 ? words[n] : std::to_string(n);
}

}  // namespace synth
}  // namespace vlp::data
