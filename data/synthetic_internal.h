// Internal helpers shared by the synthetic benchmark's scene and dataset files (not public API).
#pragma once
#include <string>
#include <utility>
#include <vector>

#include "data/sampling.h"
#include "data/synthetic.h"

namespace vlp::data::synth {

constexpr uint64_t kNumShapes = 3, kNumColors = 4;

SynthShape random_shape(Generator& gen);
SynthColor random_color(Generator& gen);
// The objects (shape, colour) in distinct random cells with random radius and jitter.
SynthScene place_objects(Generator& gen, int size, const std::vector<std::pair<SynthShape, SynthColor>>& specs);
// 1-4 objects of random shape and colour.
SynthScene random_scene(Generator& gen, int size);

int count_shape(const SynthScene& s, SynthShape shape);
int count_color(const SynthScene& s, SynthColor color);
bool has_object(const SynthScene& s, SynthColor color, SynthShape shape);
std::string plural(SynthShape s);  // "circles"
std::string number_word(int n);    // 0 -> "no", 1 -> "one", ...

}  // namespace vlp::data::synth
