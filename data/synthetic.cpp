// The synthetic VL benchmark's questions, statements, captions and files (formats of data.md 1-4).
// Every image's scene and text come from a generator seeded by (seed, kind, index), see synthetic.h.
#define STB_IMAGE_WRITE_STATIC  // private copy: no symbol clashes with other stb users in the program
#define STB_IMAGE_WRITE_IMPLEMENTATION
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wsign-compare"
#include <stb_image_write.h>
#pragma GCC diagnostic pop

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>

#include "data/datasets.h"
#include "data/synthetic.h"
#include "data/synthetic_internal.h"
#include "runtime/error.h"

namespace vlp::data {

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace synth;

// Stream kinds for derive_seed.
constexpr uint64_t kKindCoco = 1, kKindGqa = 2, kKindNlvr2 = 3;

const std::vector<std::string>& colour_words() {
  static const std::vector<std::string> v = {"red", "green", "blue", "yellow"};
  return v;
}
const std::vector<std::string>& shape_words() {
  static const std::vector<std::string> v = {"circle", "square", "triangle"};
  return v;
}
const std::vector<std::string>& count_words() {
  static const std::vector<std::string> v = {"0", "1", "2", "3", "4"};
  return v;
}
const std::vector<std::string>& yes_no_words() {
  static const std::vector<std::string> v = {"yes", "no"};
  return v;
}

std::string capitalise(std::string s) {
  if (!s.empty() && s[0] >= 'a' && s[0] <= 'z') s[0] = char(s[0] - 'a' + 'A');
  return s;
}

struct Writer {
  fs::path root;
  SyntheticSummary* summary;

  fs::path prepare(const std::string& rel) {
    fs::path p = root / rel;
    fs::create_directories(p.parent_path());
    summary->files.push_back(rel);
    return p;
  }
  void text(const std::string& rel, const std::string& content) {
    fs::path p = prepare(rel);
    std::ofstream out(p, std::ios::binary);
    out << content;
    VLP_CHECK(out.good(), "make_synthetic_data: cannot write '", p.string(), "'");
  }
  void json_file(const std::string& rel, const json& j) { text(rel, j.dump() + "\n"); }
  void jsonl_file(const std::string& rel, const std::vector<json>& lines) {
    std::string s;
    for (const auto& l : lines) s += l.dump() + "\n";
    text(rel, s);
  }
  void image(const std::string& rel, const SynthScene& scene, bool png, int quality) {
    fs::path p = prepare(rel);
    std::vector<uint8_t> pixels = render_scene(scene);
    int ok = png ? stbi_write_png(p.string().c_str(), scene.size, scene.size, 3, pixels.data(), scene.size * 3)
                 : stbi_write_jpg(p.string().c_str(), scene.size, scene.size, 3, pixels.data(), quality);
    VLP_CHECK(ok != 0, "make_synthetic_data: cannot write image '", p.string(), "'");
  }
};

// ---- VQA -----------------------------------------------------------------------------------------

struct Question {
  std::string question, answer, answer_type, question_type;
  const std::vector<std::string>* alternatives;  // answers of the same kind, for the human-answer noise
  std::string subject;                           // attribute questions: "circle" or "red object"
};

// A scene planned for counting: k (uniform in 1..4) objects of one shape, plus up to 4 - k others.
SynthScene counting_scene(Generator& gen, int size, SynthShape& counted, int& k) {
  counted = random_shape(gen);
  k = int(draw_between(gen, 1, 4));
  std::vector<std::pair<SynthShape, SynthColor>> specs;
  for (int i = 0; i < k; ++i) specs.push_back({counted, random_color(gen)});
  int extra = int(draw_between(gen, 0, 4 - k));
  for (int i = 0; i < extra; ++i) {
    SynthShape other = SynthShape((int(counted) + 1 + int(draw_below(gen, 2))) % 3);
    specs.push_back({other, random_color(gen)});
  }
  return place_objects(gen, size, specs);
}

// "is there a {colour} {shape}?" with yes and no equally likely.
Question yes_no_question(Generator& gen, const SynthScene& s) {
  bool yes = draw_below(gen, 2) == 0;
  SynthColor c;
  SynthShape sh;
  if (yes) {
    const SynthObject& o = s.objects[size_t(draw_below(gen, s.objects.size()))];
    c = o.color, sh = o.shape;
  } else {
    std::vector<std::pair<SynthColor, SynthShape>> absent;
    for (uint64_t ci = 0; ci < kNumColors; ++ci)
      for (uint64_t si = 0; si < kNumShapes; ++si)
        if (!has_object(s, SynthColor(ci), SynthShape(si))) absent.push_back({SynthColor(ci), SynthShape(si)});
    auto pick = absent[size_t(draw_below(gen, absent.size()))];
    c = pick.first, sh = pick.second;
  }
  return {std::string("is there a ") + synth_color_name(c) + " " + synth_shape_name(sh) + "?", yes ? "yes" : "no", "yes/no",
          "is there a", &yes_no_words(), ""};
}

// "what color is the {shape}?" about a shape present once, else "what shape is the {colour} object?"
// about a colour present once; false when the scene has neither.
bool attribute_question(Generator& gen, const SynthScene& s, Question& q) {
  std::vector<const SynthObject*> unique_shape, unique_colour;
  for (const auto& o : s.objects) {
    if (count_shape(s, o.shape) == 1) unique_shape.push_back(&o);
    if (count_color(s, o.color) == 1) unique_colour.push_back(&o);
  }
  if (!unique_shape.empty()) {
    const SynthObject* o = unique_shape[size_t(draw_below(gen, unique_shape.size()))];
    q = {std::string("what color is the ") + synth_shape_name(o->shape) + "?", synth_color_name(o->color), "other",
         "what color is the", &colour_words(), synth_shape_name(o->shape)};
    return true;
  }
  if (!unique_colour.empty()) {
    const SynthObject* o = unique_colour[size_t(draw_below(gen, unique_colour.size()))];
    q = {std::string("what shape is the ") + synth_color_name(o->color) + " object?", synth_shape_name(o->shape), "other",
         "what shape is the", &shape_words(), std::string(synth_color_name(o->color)) + " object"};
    return true;
  }
  return false;
}

// Ten human answers: the correct one at least seven times, the rest wrong answers of the same kind.
std::vector<std::string> human_answers(Generator& gen, const Question& q) {
  int wrong = int(draw_between(gen, 0, 3));
  std::vector<std::string> answers(10, q.answer);
  std::vector<std::string> others;
  for (const auto& a : *q.alternatives)
    if (a != q.answer) others.push_back(a);
  for (int i = 0; i < wrong; ++i) answers[size_t(i)] = others[size_t(draw_below(gen, others.size()))];
  shuffle_in_place(answers, gen);
  return answers;
}

// ---- captions ------------------------------------------------------------------------------------

std::string describe(Generator& gen, const SynthScene& s, bool& starts_plural) {
  std::vector<SynthObject> objs = s.objects;
  std::sort(objs.begin(), objs.end(), [](const SynthObject& a, const SynthObject& b) { return a.cell < b.cell; });
  std::vector<std::pair<int, std::string>> groups;  // (count, "red circle")
  std::map<std::string, size_t> where;
  for (const auto& o : objs) {
    std::string name = std::string(synth_color_name(o.color)) + " " + synth_shape_name(o.shape);
    auto [it, inserted] = where.emplace(name, groups.size());
    if (inserted) groups.push_back({0, name});
    ++groups[it->second].first;
  }
  shuffle_in_place(groups, gen);
  std::vector<std::string> items;
  for (const auto& [n, name] : groups) items.push_back(n == 1 ? "a " + name : number_word(n) + " " + name + "s");
  starts_plural = groups[0].first > 1;
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) {
    if (i > 0) out += i + 1 == items.size() ? " and " : ", ";
    out += items[i];
  }
  return out;
}

std::vector<std::string> captions_for(Generator& gen, const SynthScene& s) {
  std::vector<std::string> caps;
  bool plural_first = false;
  int n = int(s.objects.size());
  caps.push_back(capitalise(describe(gen, s, plural_first)) + ".");
  caps.push_back("An image of " + describe(gen, s, plural_first) + ".");
  caps.push_back("A picture showing " + describe(gen, s, plural_first) + " on a gray background.");
  caps.push_back(capitalise(number_word(n)) + (n == 1 ? " shape: " : " shapes: ") + describe(gen, s, plural_first) + ".");
  std::string d = describe(gen, s, plural_first);
  caps.push_back(std::string(plural_first ? "There are " : "There is ") + d + ".");
  return caps;
}

json caption_tokens(const std::string& caption) {
  json tokens = json::array();
  std::string w;
  for (char c : caption + " ") {
    if (c == ' ') {
      if (!w.empty()) tokens.push_back(w);
      w.clear();
    } else if (c != '.' && c != ',' && c != ':') {
      w += (c >= 'A' && c <= 'Z') ? char(c - 'A' + 'a') : c;
    }
  }
  return tokens;
}

// ---- NLVR2 ---------------------------------------------------------------------------------------

struct Statement {
  std::string text;
  int kind = 0;
  SynthShape shape = SynthShape::circle;
  SynthColor color = SynthColor::red;
  int k = 0;
};

Statement random_statement(Generator& gen) {
  Statement st;
  st.kind = int(draw_below(gen, 5));
  st.shape = random_shape(gen);
  st.color = random_color(gen);
  st.k = int(draw_between(gen, 2, 4));
  std::string sh = synth_shape_name(st.shape), col = synth_color_name(st.color);
  switch (st.kind) {
    case 0: st.text = "The left image contains more " + plural(st.shape) + " than the right image."; break;
    case 1: st.text = "The right image contains more " + plural(st.shape) + " than the left image."; break;
    case 2: st.text = "Both images contain a " + col + " object."; break;
    case 3: st.text = "There are exactly " + number_word(st.k) + " " + plural(st.shape) + " in total."; break;
    default: st.text = "The left image contains a " + col + " " + sh + "."; break;
  }
  return st;
}

bool statement_true(const Statement& st, const SynthScene& l, const SynthScene& r) {
  switch (st.kind) {
    case 0: return count_shape(l, st.shape) > count_shape(r, st.shape);
    case 1: return count_shape(r, st.shape) > count_shape(l, st.shape);
    case 2: return count_color(l, st.color) > 0 && count_color(r, st.color) > 0;
    case 3: return count_shape(l, st.shape) + count_shape(r, st.shape) == st.k;
    default: return has_object(l, st.color, st.shape);
  }
}

}  // namespace

SyntheticSummary make_synthetic_data(const std::string& out_dir, const SyntheticOptions& o) {
  VLP_CHECK(o.image_size >= 24, "make_synthetic_data: image_size must be at least 24, got ", o.image_size);
  VLP_CHECK(o.questions_per_image >= 1 && o.questions_per_image <= 3, "make_synthetic_data: questions_per_image must be 1..3, got ",
            o.questions_per_image);
  VLP_CHECK(o.coco_train >= 0 && o.coco_restval >= 0 && o.coco_val >= 0 && o.coco_test >= 0 && o.gqa_train >= 0 &&
                o.gqa_val >= 0 && o.gqa_testdev >= 0 && o.nlvr2_train >= 0 && o.nlvr2_dev >= 0 && o.nlvr2_test >= 0,
            "make_synthetic_data: counts must be non-negative");
  VLP_CHECK(o.jpeg_quality >= 1 && o.jpeg_quality <= 100, "make_synthetic_data: jpeg_quality must be 1..100");
  SyntheticSummary summary;
  summary.root = out_dir;
  Writer w{fs::path(out_dir), &summary};
  fs::create_directories(out_dir);

  // ---- answer vocabulary ----
  AnswerVocab vocab;
  for (const auto* list : {&yes_no_words(), &count_words(), &colour_words(), &shape_words()})
    for (const auto& a : *list) {
      vocab.index_of[a] = vocab.size();
      vocab.answers.push_back(a);
    }
  json ans2label = json::object();
  for (size_t i = 0; i < vocab.answers.size(); ++i) ans2label[vocab.answers[i]] = i;
  w.json_file("vqa/trainval_ans2label.json", ans2label);
  w.json_file("vqa/trainval_label2ans.json", vocab.answers);

  // ---- COCO images, captions and VQA ----
  struct SplitSpec {
    const char* split;
    const char* folder;
    int64_t count;
  };
  const SplitSpec coco_splits[] = {{"train", "train2014", o.coco_train}, {"restval", "val2014", o.coco_restval},
                                   {"val", "val2014", o.coco_val}, {"test", "val2014", o.coco_test}};
  json karpathy_images = json::array();
  std::map<std::string, json> vqa_questions, vqa_annotations;  // by folder
  std::map<std::string, json> vqa_karpathy;                     // train / val / test
  for (const char* f : {"train2014", "val2014"}) vqa_questions[f] = vqa_annotations[f] = json::array();
  for (const char* k : {"train", "val", "test"}) vqa_karpathy[k] = json::array();
  int64_t index = 0;
  for (const auto& spec : coco_splits) {
    for (int64_t i = 0; i < spec.count; ++i, ++index) {
      Generator gen(derive_seed(o.seed, {kKindCoco, uint64_t(index)}));
      SynthShape counted;
      int k = 0;
      SynthScene scene = counting_scene(gen, o.image_size, counted, k);
      int64_t cocoid = index + 1;
      char digits[32];
      std::snprintf(digits, sizeof digits, "%012lld", static_cast<long long>(cocoid));
      std::string stem = std::string("COCO_") + spec.folder + "_" + digits;
      w.image(std::string("coco/") + spec.folder + "/" + stem + ".jpg", scene, false, o.jpeg_quality);

      json sentences = json::array(), sentids = json::array();
      for (const auto& c : captions_for(gen, scene)) {
        int64_t sentid = int64_t(summary.captions++);
        sentences.push_back({{"raw", c}, {"tokens", caption_tokens(c)}, {"imgid", index}, {"sentid", sentid}});
        sentids.push_back(sentid);
      }
      karpathy_images.push_back({{"filepath", spec.folder}, {"filename", stem + ".jpg"}, {"imgid", index}, {"cocoid", cocoid},
                                 {"split", spec.split}, {"sentids", sentids}, {"sentences", sentences}});

      std::vector<Question> qs;
      qs.push_back({"how many " + plural(counted) + " are there?", std::to_string(k), "number", "how many", &count_words(), ""});
      Question attr;
      if (o.questions_per_image >= 2) qs.push_back(attribute_question(gen, scene, attr) ? attr : yes_no_question(gen, scene));
      if (o.questions_per_image >= 3) qs.push_back(yes_no_question(gen, scene));
      std::string karpathy = std::string(spec.split) == "restval" ? "train" : spec.split;
      for (size_t qi = 0; qi < qs.size(); ++qi) {
        const Question& q = qs[qi];
        int64_t qid = cocoid * 1000 + int64_t(qi);
        std::vector<std::string> answers = human_answers(gen, q);
        json jans = json::array();
        for (size_t a = 0; a < answers.size(); ++a)
          jans.push_back({{"answer", answers[a]}, {"answer_confidence", answers[a] == q.answer ? "yes" : "maybe"}, {"answer_id", a + 1}});
        vqa_questions[spec.folder].push_back({{"image_id", cocoid}, {"question", q.question}, {"question_id", qid}});
        vqa_annotations[spec.folder].push_back({{"question_id", qid}, {"image_id", cocoid}, {"question_type", q.question_type},
                                                {"answer_type", q.answer_type}, {"multiple_choice_answer", q.answer},
                                                {"answers", jans}});
        json label = json::object();
        for (const auto& l : vqa_soft_labels(answers, &vocab)) label[l.answer] = l.score;
        vqa_karpathy[karpathy].push_back({{"img_id", stem}, {"question_id", qid}, {"sent", q.question}, {"label", label},
                                          {"answer_type", q.answer_type}, {"question_type", q.question_type}});
        ++summary.vqa_questions;
      }
      ++summary.coco_images;
    }
  }
  w.json_file("coco/dataset_coco.json", {{"dataset", "coco"}, {"images", karpathy_images}});
  json info = {{"description", "vlpeft synthetic shapes benchmark"}, {"version", "1.0"}};
  json license = {{"name", "generated"}, {"url", ""}};
  for (const char* f : {"train2014", "val2014"}) {
    w.json_file(std::string("vqa/v2_OpenEnded_mscoco_") + f + "_questions.json",
                {{"info", info}, {"license", license}, {"task_type", "Open-Ended"}, {"data_type", "mscoco"}, {"data_subtype", f},
                 {"questions", vqa_questions[f]}});
    w.json_file(std::string("vqa/v2_mscoco_") + f + "_annotations.json",
                {{"info", info}, {"license", license}, {"data_subtype", f}, {"annotations", vqa_annotations[f]}});
  }
  for (const char* k : {"train", "val", "test"}) w.json_file(std::string("vqa/karpathy_") + k + ".json", vqa_karpathy[k]);

  // ---- GQA ----
  struct GqaSplit {
    const char* official;
    const char* preprocessed;
    int64_t count;
  };
  const GqaSplit gqa_splits[] = {{"train", "train", o.gqa_train}, {"val", "valid", o.gqa_val}, {"testdev", "testdev", o.gqa_testdev}};
  index = 0;
  for (const auto& spec : gqa_splits) {
    json official = json::object(), pre = json::array();
    for (int64_t i = 0; i < spec.count; ++i, ++index) {
      Generator gen(derive_seed(o.seed, {kKindGqa, uint64_t(index)}));
      SynthScene scene = random_scene(gen, o.image_size);
      std::string image_id = std::to_string(2000000 + index);
      w.image("gqa/images/" + image_id + ".jpg", scene, false, o.jpeg_quality);
      struct GqaQ {
        std::string question, answer, full_answer, structural, semantic, detailed;
      };
      std::vector<GqaQ> qs;
      Question attr;
      if (attribute_question(gen, scene, attr)) {
        bool colour = attr.question_type == "what color is the";
        qs.push_back({attr.question, attr.answer,
                      "The " + attr.subject + " is " + (colour ? "" : "a ") + attr.answer + ".",
                      "query", colour ? "attr" : "obj", colour ? "queryAttr" : "queryObject"});
      }
      // Left/right relation between two shapes present once each, in different grid columns.
      std::vector<const SynthObject*> unique;
      for (const auto& ob : scene.objects)
        if (count_shape(scene, ob.shape) == 1) unique.push_back(&ob);
      std::vector<std::pair<const SynthObject*, const SynthObject*>> pairs;
      for (auto* a : unique)
        for (auto* b : unique)
          if (a != b && a->cell % scene.grid != b->cell % scene.grid) pairs.push_back({a, b});
      if (!pairs.empty()) {
        auto [a, b] = pairs[size_t(draw_below(gen, pairs.size()))];
        bool left = a->cx < b->cx;
        std::string sa = synth_shape_name(a->shape), sb = synth_shape_name(b->shape);
        qs.push_back({"is the " + sa + " to the left of the " + sb + "?", left ? "yes" : "no",
                      left ? "Yes, the " + sa + " is to the left of the " + sb + "." : "No, the " + sa + " is to the right of the " + sb + ".",
                      "verify", "rel", "relVerify"});
      } else {
        Question yn = yes_no_question(gen, scene);
        qs.push_back({yn.question, yn.answer, yn.answer == "yes" ? "Yes, there is." : "No, there is not.", "verify", "obj", "exist"});
      }
      for (size_t qi = 0; qi < qs.size(); ++qi) {
        std::string qid = std::to_string((2000000 + index) * 10 + int64_t(qi));
        const GqaQ& q = qs[qi];
        official[qid] = {{"imageId", image_id}, {"question", capitalise(q.question)}, {"answer", q.answer},
                         {"fullAnswer", q.full_answer}, {"isBalanced", true}, {"groups", {{"global", nullptr}, {"local", q.detailed}}},
                         {"entailed", json::array()}, {"equivalent", json::array({qid})},
                         {"types", {{"structural", q.structural}, {"semantic", q.semantic}, {"detailed", q.detailed}}},
                         {"annotations", {{"question", json::object()}, {"answer", json::object()}, {"fullAnswer", json::object()}}},
                         {"semantic", json::array()}, {"semanticStr", ""}};
        pre.push_back({{"img_id", image_id}, {"question_id", qid}, {"sent", capitalise(q.question)}, {"label", {{q.answer, 1.0}}}});
        ++summary.gqa_questions;
      }
      ++summary.gqa_images;
    }
    w.json_file(std::string("gqa/questions1.2/") + spec.official + "_balanced_questions.json", official);
    w.json_file(std::string("gqa/") + spec.preprocessed + ".json", pre);
  }

  // ---- NLVR2 ----
  struct NlvrSplit {
    const char* name;
    int64_t sets;
  };
  const NlvrSplit nlvr_splits[] = {{"train", o.nlvr2_train}, {"dev", o.nlvr2_dev}, {"test1", o.nlvr2_test}};
  for (uint64_t si = 0; si < 3; ++si) {
    const auto& spec = nlvr_splits[si];
    std::vector<json> lines;
    for (int64_t set = 0; set < spec.sets; ++set) {
      Generator gen(derive_seed(o.seed, {kKindNlvr2, si, uint64_t(set)}));
      Statement st = random_statement(gen);
      bool first_true = draw_below(gen, 2) == 0;
      for (int pair = 0; pair < 2; ++pair) {
        bool want = (pair == 0) == first_true;
        SynthScene left, right;
        for (int attempt = 0; attempt < 200; ++attempt) {  // rejection sampling towards the wanted label
          left = random_scene(gen, o.image_size);
          right = random_scene(gen, o.image_size);
          if (statement_true(st, left, right) == want) break;
        }
        bool label = statement_true(st, left, right);
        std::string pair_id = std::string(spec.name) + "-" + std::to_string(set) + "-" + std::to_string(pair);
        std::string directory = std::to_string(set % 10);
        std::string folder = std::string(spec.name) == "train" ? "nlvr2/train/" + directory + "/" : "nlvr2/" + std::string(spec.name) + "/";
        w.image(folder + pair_id + "-img0.png", left, true, 0);
        w.image(folder + pair_id + "-img1.png", right, true, 0);
        summary.nlvr2_images += 2;
        json line = {{"identifier", pair_id + "-0"}, {"sentence", st.text}, {"label", label ? "True" : "False"},
                     {"left_url", "synthetic:" + pair_id + "-img0.png"}, {"right_url", "synthetic:" + pair_id + "-img1.png"},
                     {"synset", "shapes"}, {"query", "synthetic shapes " + std::to_string(set)}, {"writer", "synthetic"}};
        if (std::string(spec.name) == "train") line["directory"] = directory;
        lines.push_back(line);
        ++summary.nlvr2_examples;
      }
    }
    w.jsonl_file(std::string("nlvr2/") + spec.name + ".json", lines);
  }
  return summary;
}

}  // namespace vlp::data
