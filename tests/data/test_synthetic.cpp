// The synthetic benchmark: written in the official formats (the real loaders read every file with no
// skips), deterministic in the seed, answerable from the pixels (a hand-written pixel oracle answers the
// questions) and not from the text (the best text-only baseline, the majority answer of each question
// string, stays far from 100%).
#include <gtest/gtest.h>

#define STB_IMAGE_STATIC
#define STB_IMAGE_IMPLEMENTATION
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wsign-compare"
#include <stb/stb_image.h>
#pragma GCC diagnostic pop

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "common/test_util.h"
#include "data/datasets.h"
#include "data/loader.h"
#include "data/metrics.h"
#include "data/synthetic.h"

namespace vlp::data {
namespace {

namespace fs = std::filesystem;

using Scratch = test::ScratchDir;

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream os;
  os << in.rdbuf();
  return os.str();
}

// ---- a pixel oracle: palette classification, connected components, shape from the fill ratio ----------

struct Blob {
  SynthColor color;
  SynthShape shape;
};

std::vector<Blob> find_objects(const std::string& path) {
  int w = 0, h = 0, c = 0;
  unsigned char* px = stbi_load(path.c_str(), &w, &h, &c, 3);
  EXPECT_NE(px, nullptr) << "cannot decode " << path;
  if (!px) return {};
  std::vector<int> label(size_t(w * h), -1);  // -1 background, else colour index
  for (int i = 0; i < w * h; ++i) {
    int best = -1;
    long best_d = 0;
    uint8_t rgb[3];
    synth_background(rgb);
    best_d = 0;
    for (int k = 0; k < 3; ++k) best_d += long(px[3 * i + k] - rgb[k]) * (px[3 * i + k] - rgb[k]);
    for (int col = 0; col < 4; ++col) {
      synth_color_rgb(SynthColor(col), rgb);
      long d = 0;
      for (int k = 0; k < 3; ++k) d += long(px[3 * i + k] - rgb[k]) * (px[3 * i + k] - rgb[k]);
      if (d < best_d) best_d = d, best = col;
    }
    label[size_t(i)] = best;
  }
  stbi_image_free(px);
  std::vector<Blob> blobs;
  std::vector<bool> seen(label.size(), false);
  for (int start = 0; start < w * h; ++start) {
    if (label[size_t(start)] < 0 || seen[size_t(start)]) continue;
    int col = label[size_t(start)], area = 0, x0 = w, x1 = -1, y0 = h, y1 = -1;
    std::vector<int> stack = {start};
    seen[size_t(start)] = true;
    while (!stack.empty()) {
      int p = stack.back();
      stack.pop_back();
      int x = p % w, y = p / w;
      ++area, x0 = std::min(x0, x), x1 = std::max(x1, x), y0 = std::min(y0, y), y1 = std::max(y1, y);
      const int nx[4] = {x - 1, x + 1, x, x}, ny[4] = {y, y, y - 1, y + 1};
      for (int k = 0; k < 4; ++k) {
        if (nx[k] < 0 || ny[k] < 0 || nx[k] >= w || ny[k] >= h) continue;
        int q = ny[k] * w + nx[k];
        if (!seen[size_t(q)] && label[size_t(q)] == col) seen[size_t(q)] = true, stack.push_back(q);
      }
    }
    if (area < 8) continue;  // compression speckle
    double fill = double(area) / double((x1 - x0 + 1) * (y1 - y0 + 1));
    SynthShape shape = fill > 0.95 ? SynthShape::square : fill < 0.7 ? SynthShape::triangle : SynthShape::circle;
    blobs.push_back({SynthColor(col), shape});
  }
  return blobs;
}

// Answers a VQA question from the objects found in the image.
std::string oracle_answer(const std::string& q, const std::vector<Blob>& blobs) {
  auto shape_of = [](const std::string& name) {
    for (int s = 0; s < 3; ++s)
      if (name.rfind(synth_shape_name(SynthShape(s)), 0) == 0) return SynthShape(s);
    return SynthShape::circle;
  };
  auto colour_of = [](const std::string& name) {
    for (int c = 0; c < 4; ++c)
      if (name == synth_color_name(SynthColor(c))) return SynthColor(c);
    return SynthColor::red;
  };
  std::istringstream in(q);
  std::vector<std::string> w;
  for (std::string t; in >> t;) w.push_back(t);
  if (q.rfind("how many ", 0) == 0) {
    SynthShape s = shape_of(w[2]);
    return std::to_string(std::count_if(blobs.begin(), blobs.end(), [&](const Blob& b) { return b.shape == s; }));
  }
  if (q.rfind("what color is the ", 0) == 0) {
    SynthShape s = shape_of(w[4]);
    for (const auto& b : blobs)
      if (b.shape == s) return synth_color_name(b.color);
  }
  if (q.rfind("what shape is the ", 0) == 0) {
    SynthColor c = colour_of(w[4]);
    for (const auto& b : blobs)
      if (b.color == c) return synth_shape_name(b.shape);
  }
  if (q.rfind("is there a ", 0) == 0) {
    SynthColor c = colour_of(w[3]);
    SynthShape s = shape_of(w[4]);
    for (const auto& b : blobs)
      if (b.color == c && b.shape == s) return "yes";
    return "no";
  }
  return "?";
}

// Majority answer per question string, scored on the same questions (an upper bound for text-only models).
template <class Q, class A>
double text_only_baseline(const std::vector<std::pair<Q, A>>& qa) {
  std::map<Q, std::map<A, int>> counts;
  for (const auto& [q, a] : qa) ++counts[q][a];
  int correct = 0;
  for (const auto& [q, by_answer] : counts) {
    int best = 0;
    for (const auto& [a, n] : by_answer) best = std::max(best, n);
    correct += best;
  }
  return double(correct) / double(qa.size());
}

TEST(Synthetic, RenderScene) {
  SynthScene s;
  s.size = 32;
  s.objects = {{SynthShape::circle, SynthColor::blue, 8, 8, 5, 0}, {SynthShape::square, SynthColor::yellow, 24, 24, 5, 3}};
  std::vector<uint8_t> px = render_scene(s);
  ASSERT_EQ(px.size(), 32u * 32u * 3u);
  uint8_t blue[3], yellow[3], bg[3];
  synth_color_rgb(SynthColor::blue, blue);
  synth_color_rgb(SynthColor::yellow, yellow);
  synth_background(bg);
  auto at = [&](int x, int y) { return std::vector<uint8_t>(px.begin() + (y * 32 + x) * 3, px.begin() + (y * 32 + x) * 3 + 3); };
  EXPECT_EQ(at(8, 8), std::vector<uint8_t>(blue, blue + 3));
  EXPECT_EQ(at(24, 24), std::vector<uint8_t>(yellow, yellow + 3));
  EXPECT_EQ(at(0, 31), std::vector<uint8_t>(bg, bg + 3));
  EXPECT_EQ(at(3, 3), std::vector<uint8_t>(bg, bg + 3));  // outside the circle's disc, inside its box
  EXPECT_EQ(at(28, 28), std::vector<uint8_t>(yellow, yellow + 3));  // the square's corner (half side 4)
}

TEST(Synthetic, OfficialFormatsReadBackWithoutSkips) {
  Scratch dir("synthetic_default");
  SyntheticSummary sum = make_synthetic_data(dir.string());
  EXPECT_EQ(sum.coco_images, 72);
  EXPECT_EQ(sum.captions, 72 * 5);
  EXPECT_EQ(sum.vqa_questions, 72 * 3);
  EXPECT_EQ(sum.nlvr2_examples, 2 * (24 + 8 + 8));
  for (const auto& f : sum.files) EXPECT_TRUE(fs::exists(dir / f)) << f;

  fs::path vqa = dir / "vqa";
  AnswerVocab vocab = load_answer_vocab((vqa / "trainval_ans2label.json").string(), (vqa / "trainval_label2ans.json").string());
  ImageIndex coco_images = scan_image_dir((dir / "coco").string());
  EXPECT_EQ(int64_t(coco_images.size()), sum.coco_images);
  LoadOptions strict;
  strict.vocab = &vocab;
  strict.images = &coco_images;
  int64_t questions = 0;
  for (std::string split : {"train2014", "val2014"}) {
    VqaSet set = load_vqa_official((vqa / ("v2_OpenEnded_mscoco_" + split + "_questions.json")).string(),
                                   (vqa / ("v2_mscoco_" + split + "_annotations.json")).string(), strict);
    EXPECT_EQ(set.report.skipped, 0);
    EXPECT_EQ(set.report.dropped_labels, 0);
    for (const auto& e : set.examples) {
      EXPECT_EQ(e.answers.size(), 10u);
      EXPECT_GE(vqa_soft_score(e.multiple_choice_answer, e.labels), 1.0);  // the true answer at least 7 of 10 times
      EXPECT_TRUE(fs::exists(coco_image_files((dir / "coco").string())(e.image_id))) << e.image_id;
    }
    questions += int64_t(set.examples.size());
  }
  EXPECT_EQ(questions, sum.vqa_questions);
  int64_t karpathy = 0;
  for (std::string split : {"train", "val", "test"}) {
    VqaSet set = load_vqa_karpathy((vqa / ("karpathy_" + split + ".json")).string(), strict);
    EXPECT_EQ(set.report.skipped, 0);
    karpathy += int64_t(set.examples.size());
  }
  EXPECT_EQ(karpathy, sum.vqa_questions);

  CocoCaptionSet coco = load_coco_karpathy((dir / "coco/dataset_coco.json").string(), {}, strict);
  EXPECT_EQ(int64_t(coco.images.size()), sum.coco_images);
  std::map<std::string, int> per_split;
  for (const auto& img : coco.images) {
    ++per_split[img.split];
    EXPECT_EQ(img.captions.size(), 5u);
  }
  EXPECT_EQ(per_split["train"], 48);
  EXPECT_EQ(per_split["restval"], 8);
  EXPECT_EQ(per_split["test"], 8);
  EXPECT_EQ(caption_train_examples(load_coco_karpathy((dir / "coco/dataset_coco.json").string(), {"train", "restval"}).images).size(),
            56u * 5u);

  ImageIndex gqa_images = scan_image_dir((dir / "gqa/images").string());
  LoadOptions gqa_opt;
  gqa_opt.images = &gqa_images;
  int64_t gqa_questions = 0;
  for (std::string split : {"train", "val", "testdev"}) {
    GqaSet set = load_gqa_official((dir / ("gqa/questions1.2/" + split + "_balanced_questions.json")).string(), gqa_opt);
    EXPECT_EQ(set.report.skipped, 0);
    for (const auto& e : set.examples) EXPECT_FALSE(e.answer.empty());
    gqa_questions += int64_t(set.examples.size());
  }
  EXPECT_EQ(gqa_questions, sum.gqa_questions);
  EXPECT_EQ(int64_t(load_gqa_preprocessed((dir / "gqa/valid.json").string(), gqa_opt).examples.size()) > 0, true);

  ImageIndex nlvr_images = scan_image_dir((dir / "nlvr2").string());
  EXPECT_EQ(int64_t(nlvr_images.size()), sum.nlvr2_images);
  LoadOptions nlvr_opt;
  nlvr_opt.images = &nlvr_images;
  for (std::string split : {"train", "dev", "test1"}) {
    Nlvr2Set set = load_nlvr2_official((dir / ("nlvr2/" + split + ".json")).string(), nlvr_opt);
    EXPECT_EQ(set.report.skipped, 0);
    ImagePathFn paths = nlvr2_image_files((dir / "nlvr2").string(), set.examples);
    for (const auto& e : set.examples) {
      EXPECT_TRUE(e.label == 0 || e.label == 1);
      EXPECT_TRUE(fs::exists(paths(e.image_ids[0]))) << paths(e.image_ids[0]);
      EXPECT_EQ(paths(e.image_ids[1]), nlvr_images.path_of.at(e.image_ids[1]));
    }
  }
}

TEST(Synthetic, DeterministicInTheSeed) {
  Scratch a("synthetic_a"), b("synthetic_b"), c("synthetic_c");
  SyntheticOptions small;
  small.coco_train = 6, small.coco_restval = 2, small.coco_val = 2, small.coco_test = 2;
  small.gqa_train = 4, small.gqa_val = 2, small.gqa_testdev = 2;
  small.nlvr2_train = 3, small.nlvr2_dev = 2, small.nlvr2_test = 2;
  SyntheticSummary sa = make_synthetic_data(a.string(), small), sb = make_synthetic_data(b.string(), small);
  ASSERT_EQ(sa.files, sb.files);
  for (const auto& f : sa.files) EXPECT_EQ(slurp(a / f), slurp(b / f)) << f;
  small.seed = 1;
  make_synthetic_data(c.string(), small);
  EXPECT_NE(slurp(a / "coco/dataset_coco.json"), slurp(c / "coco/dataset_coco.json"));
  EXPECT_NE(slurp(a / "nlvr2/train.json"), slurp(c / "nlvr2/train.json"));
  // An image does not depend on how many others are made.
  small.seed = 0;
  small.coco_train = 7;
  Scratch d("synthetic_d");
  make_synthetic_data(d.string(), small);
  EXPECT_EQ(slurp(a / "coco/train2014/COCO_train2014_000000000003.jpg"), slurp(d / "coco/train2014/COCO_train2014_000000000003.jpg"));
  EXPECT_THROW(make_synthetic_data(d.string(), SyntheticOptions{.image_size = 8}), Error);
}

TEST(Synthetic, NeedsVisionAndIsAnswerableFromPixels) {
  Scratch dir("synthetic_large");
  SyntheticOptions opt;
  opt.coco_train = 500, opt.coco_restval = 0, opt.coco_val = 0, opt.coco_test = 0;
  opt.gqa_train = 300, opt.gqa_val = 0, opt.gqa_testdev = 0;
  opt.nlvr2_train = 200, opt.nlvr2_dev = 0, opt.nlvr2_test = 0;
  make_synthetic_data(dir.string(), opt);
  VqaSet vqa = load_vqa_official((dir / "vqa/v2_OpenEnded_mscoco_train2014_questions.json").string(),
                                 (dir / "vqa/v2_mscoco_train2014_annotations.json").string());
  ASSERT_EQ(vqa.examples.size(), 1500u);
  std::vector<std::pair<std::string, std::string>> qa;
  std::map<std::string, std::vector<std::pair<std::string, std::string>>> by_type;
  int oracle_correct = 0;
  std::map<std::string, std::vector<Blob>> blobs_of;
  ImagePathFn coco_paths = coco_image_files((dir / "coco").string());
  for (const auto& e : vqa.examples) {
    qa.push_back({e.question, e.multiple_choice_answer});
    by_type[e.answer_type].push_back(qa.back());
    auto it = blobs_of.find(e.image_id);
    if (it == blobs_of.end()) it = blobs_of.emplace(e.image_id, find_objects(coco_paths(e.image_id))).first;
    oracle_correct += oracle_answer(e.question, it->second) == e.multiple_choice_answer;
  }
  double oracle = double(oracle_correct) / double(vqa.examples.size());
  double text_only = text_only_baseline(qa);
  std::printf("synthetic VQA: pixel oracle %.3f, text-only majority %.3f (number %.3f, yes/no %.3f, other %.3f)\n", oracle,
              text_only, text_only_baseline(by_type["number"]), text_only_baseline(by_type["yes/no"]),
              text_only_baseline(by_type["other"]));
  EXPECT_GT(oracle, 0.97) << "the answers must follow from the pixels";
  EXPECT_LT(text_only, 0.55) << "a text-only model must stay near chance";
  EXPECT_LT(text_only_baseline(by_type["number"]), 0.4);     // 4 counts, uniform
  EXPECT_LT(text_only_baseline(by_type["yes/no"]), 0.65);    // yes/no balanced
  EXPECT_LT(text_only_baseline(by_type["other"]), 0.5);      // 4 colours / 3 shapes
  EXPECT_GT(by_type["other"].size(), 300u);

  // Captions describe what is in the image.
  CocoCaptionSet coco = load_coco_karpathy((dir / "coco/dataset_coco.json").string());
  for (const auto& img : coco.images) {
    for (const auto& b : blobs_of.at(img.image_id)) {
      std::string name = std::string(synth_color_name(b.color)) + " " + synth_shape_name(b.shape);
      for (const auto& c : img.captions) EXPECT_NE(c.find(name), std::string::npos) << c << " lacks " << name;
    }
  }

  // GQA and NLVR2: the text alone does not decide the answer either.
  GqaSet gqa = load_gqa_official((dir / "gqa/questions1.2/train_balanced_questions.json").string());
  std::vector<std::pair<std::string, std::string>> gqa_qa;
  for (const auto& e : gqa.examples) gqa_qa.push_back({e.question, e.answer});
  EXPECT_GT(gqa_qa.size(), 400u);
  EXPECT_LT(text_only_baseline(gqa_qa), 0.6);
  Nlvr2Set nlvr = load_nlvr2_official((dir / "nlvr2/train.json").string());
  std::vector<std::pair<std::string, int>> nlvr_qa;
  int positives = 0;
  for (const auto& e : nlvr.examples) nlvr_qa.push_back({e.sentence, e.label}), positives += e.label;
  EXPECT_NEAR(double(positives) / double(nlvr.examples.size()), 0.5, 0.05);
  std::printf("synthetic GQA text-only %.3f, NLVR2 text-only %.3f\n", text_only_baseline(gqa_qa), text_only_baseline(nlvr_qa));
  EXPECT_LT(text_only_baseline(nlvr_qa), 0.6);
}

}  // namespace
}  // namespace vlp::data
