// Helpers for the text backbone tests: the reference fixtures of tools/reference/make_text_model_fixtures.py
// (tests/fixtures/models/<name>/), comparisons with the tolerances the tests promise, and tiny adapters that
// exercise the adaptation sites.
#pragma once
#include <map>
#include <string>

#include "common/test_util.h"
#include "models/checkpoint.h"
#include "models/generate.h"
#include "runtime/safetensors.h"

namespace vlp::test {

inline std::string model_fixture_dir(const std::string& name) {
  return std::string(VLP_SOURCE_DIR) + "/tests/fixtures/models/" + name;
}

inline std::map<std::string, Tensor> read_fixture(const std::string& name) {
  std::map<std::string, Tensor> out;
  for (auto& [key, t] : load_safetensors(model_fixture_dir(name) + "/fixture.safetensors").tensors) out[key] = t;
  return out;
}

// max |a - b| <= rtol * max |b|: relative to the largest reference magnitude (logits near zero do not make
// the test fragile).
inline ::testing::AssertionResult close_to_scale(const Tensor& a, const Tensor& b, double rtol) {
  if (a.shape() != b.shape())
    return ::testing::AssertionFailure() << "shapes differ: " << shape_str(a.shape()) << " vs " << shape_str(b.shape());
  std::vector<double> va = to_vector(a), vb = to_vector(b);
  double scale = 0.0, worst = 0.0;
  size_t at = 0;
  for (double v : vb) scale = std::max(scale, std::abs(v));
  for (size_t i = 0; i < va.size(); ++i)
    if (!(std::abs(va[i] - vb[i]) <= worst)) worst = std::abs(va[i] - vb[i]), at = i;
  if (worst <= rtol * scale) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "element " << at << ": " << va[at] << " vs " << vb[at] << ", |diff| " << worst
                                       << " > " << rtol << " * max|ref| (" << scale << ")";
}

// ||a - b||_2 <= rtol * ||b||_2 + atol * sqrt(n): relative to the gradient's norm, with an absolute floor (as
// an RMS) for gradients that are zero in exact arithmetic and only rounding noise in both implementations
// (the key-projection biases: softmax ignores a shift shared by all keys).
inline ::testing::AssertionResult close_in_norm(const Tensor& a, const Tensor& b, double rtol, double atol = 0.0) {
  if (a.shape() != b.shape())
    return ::testing::AssertionFailure() << "shapes differ: " << shape_str(a.shape()) << " vs " << shape_str(b.shape());
  std::vector<double> va = to_vector(a), vb = to_vector(b);
  double diff = 0.0, ref = 0.0;
  for (size_t i = 0; i < va.size(); ++i) diff += (va[i] - vb[i]) * (va[i] - vb[i]), ref += vb[i] * vb[i];
  diff = std::sqrt(diff), ref = std::sqrt(ref);
  const double floor = atol * std::sqrt(double(va.size()));
  if (diff <= rtol * ref + floor && std::isfinite(diff)) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "||diff|| " << diff << " > " << rtol << " * ||ref|| (" << ref << ") + "
                                       << floor;
}

// Every parameter's gradient against the fixture's grad.<name> (see close_in_norm), and the two name sets equal.
inline void expect_gradients_match(const Module& model, const std::map<std::string, Tensor>& fixture, double rtol,
                                   double atol = 1e-6) {
  size_t expected = 0;
  for (const auto& [key, t] : fixture) expected += key.rfind("grad.", 0) == 0;
  auto params = model.named_parameters();
  EXPECT_EQ(params.size(), expected) << "parameter count differs from transformers' named_parameters()";
  for (const auto& [name, p] : params) {
    auto it = fixture.find("grad." + name);
    if (it == fixture.end()) {
      ADD_FAILURE() << "parameter " << name << " is not one of transformers' parameters";
      continue;
    }
    ASSERT_TRUE(p.grad().defined()) << name << " received no gradient";
    EXPECT_TRUE(close_in_norm(p.grad(), it->second, rtol, atol)) << "gradient of " << name;
  }
}

inline std::vector<int64_t> ids_of(const Tensor& t) {
  std::vector<int64_t> out;
  for (double v : to_vector(t)) out.push_back(int64_t(v));
  return out;
}

// Generation options of the fixture cases (tools/reference/make_text_model_fixtures.py, GENERATION_CASES).
inline std::vector<std::pair<std::string, GenerationOptions>> fixture_generation_cases() {
  GenerationOptions greedy;
  greedy.max_new_tokens = 8;
  GenerationOptions beam = greedy;
  beam.num_beams = 3, beam.length_penalty = 0.6, beam.early_stopping = EarlyStopping::Heuristic;
  GenerationOptions beam_early = greedy;
  beam_early.num_beams = 3, beam_early.length_penalty = 1.5, beam_early.early_stopping = EarlyStopping::Always;
  beam_early.min_new_tokens = 3;
  GenerationOptions beam_never = greedy;
  beam_never.num_beams = 3, beam_never.length_penalty = 2.0, beam_never.early_stopping = EarlyStopping::Never;
  GenerationOptions beam_two = greedy;
  beam_two.num_beams = 4, beam_two.num_return_sequences = 2, beam_two.no_repeat_ngram_size = 2;
  GenerationOptions greedy_norepeat = greedy;
  greedy_norepeat.no_repeat_ngram_size = 2, greedy_norepeat.min_new_tokens = 2;
  return {{"greedy", greedy},         {"beam", beam},         {"beam_early", beam_early},
          {"beam_never", beam_never}, {"beam_two", beam_two}, {"greedy_norepeat", greedy_norepeat}};
}

// ---- adapters for the site tests ----

// Counts its calls and passes the output through unchanged.
struct CountingSublayerAdapter : SublayerAdapter {
  int calls = 0;
  Shape input_shape, output_shape;
  Tensor forward(const Tensor& input, const Tensor& output, const ForwardContext&) override {
    ++calls;
    input_shape = input.shape(), output_shape = output.shape();
    return output;
  }
};

// Prepends fixed keys and values [B, H, P, D] to every attention call (prefix tuning with a given prefix).
struct FixedPrefixAdapter : AttentionAdapter {
  Tensor k, v;
  int calls = 0;
  void before(AttentionState& s, const ForwardContext&) override {
    ++calls;
    const int64_t B = s.k.size(0), P = k.size(2);
    s.k = concat({k, s.k}, 2);
    s.v = concat({v, s.v}, 2);
    if (s.key_padding_mask.defined())
      s.key_padding_mask = concat({ones({B, P}, DType::Bool), convert(s.key_padding_mask, DType::Bool)}, 1);
  }
};

// Prepends fixed embeddings ([B, P, D], or [1, P, D] for every row) to the stack input and ones to its mask
// (prompt tuning).
struct FixedPromptAdapter : InputAdapter {
  Tensor prompt;
  Tensor forward(const Tensor& embeds, Tensor& mask, const ForwardContext&) override {
    const int64_t B = embeds.size(0), P = prompt.size(1);
    mask = concat({ones({B, P}, mask.dtype()), mask}, 1);
    return concat({expand(prompt, {B, P, prompt.size(2)}), embeds}, 1);
  }
};

}  // namespace vlp::test
