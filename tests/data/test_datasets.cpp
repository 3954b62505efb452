// Dataset loaders on small files in the official and VL-T5 formats: field values, image ids and paths,
// soft-score labels, the answer vocabulary, and every kind of bad input (an error naming file, record and
// field, or a counted skip).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "common/test_util.h"
#include "data/datasets.h"
#include "data/metrics.h"
#include "runtime/error.h"

namespace vlp::data {
namespace {

namespace fs = std::filesystem;

using Scratch = test::ScratchDir;

std::string write(const fs::path& dir, const std::string& name, const std::string& content) {
  fs::path p = dir / name;
  fs::create_directories(p.parent_path());
  std::ofstream(p) << content;
  return p.string();
}

// Runs f, expecting a vlp::Error whose message contains every one of the parts.
template <class F>
void expect_error(F&& f, const std::vector<std::string>& parts) {
  try {
    f();
    ADD_FAILURE() << "expected an error mentioning " << parts.front();
  } catch (const Error& e) {
    for (const auto& p : parts) EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << "'" << p << "' not in: " << e.what();
  }
}

const char* kQuestions = R"({"info": {}, "license": {}, "task_type": "Open-Ended", "data_type": "mscoco",
  "data_subtype": "val2014", "questions": [
   {"image_id": 42, "question": "How many dogs?", "question_id": 42000},
   {"image_id": 42, "question": "What color is the bus?", "question_id": 42001},
   {"image_id": 7, "question": "Is it raining?", "question_id": 7000}]})";

std::string annotations(const std::string& extra = "") {
  auto answers = [](const std::vector<std::string>& a) {
    std::string s = "[";
    for (size_t i = 0; i < a.size(); ++i)
      s += std::string(i ? "," : "") + R"({"answer": ")" + a[i] + R"(", "answer_confidence": "yes", "answer_id": )" +
           std::to_string(i + 1) + "}";
    return s + "]";
  };
  return R"({"info": {}, "license": {}, "data_subtype": "val2014", "annotations": [
   {"question_id": 42000, "image_id": 42, "question_type": "how many", "answer_type": "number",
    "multiple_choice_answer": "2", "answers": )" +
         answers({"2", "2", "two", "2", "3", "3", "2", "Two", "2", "1"}) + R"(},
   {"question_id": 42001, "image_id": 42, "question_type": "what color is the", "answer_type": "other",
    "multiple_choice_answer": "red", "answers": )" +
         answers({"red", "red", "red", "dark red", "red", "red.", "maroon", "red", "red", "red"}) + R"(},
   {"question_id": 7000, "image_id": 7, "question_type": "is it", "answer_type": "yes/no",
    "multiple_choice_answer": "no", "answers": )" +
         answers({"no", "no", "no", "no", "no", "no", "no", "no", "no", "yes"}) + "}" + extra + "]}";
}

TEST(VqaOfficial, JoinsQuestionsAndAnnotations) {
  Scratch dir("vqa_official");
  auto q = write(dir, "q.json", kQuestions), a = write(dir, "a.json", annotations());
  VqaSet set = load_vqa_official(q, a);
  ASSERT_EQ(set.examples.size(), 3u);
  EXPECT_EQ(set.report.loaded, 3);
  EXPECT_EQ(set.report.skipped, 0);
  const VqaExample& e = set.examples[0];
  EXPECT_EQ(e.question_id, 42000);
  EXPECT_EQ(e.image_id, "COCO_val2014_000000000042");
  EXPECT_EQ(e.coco_image_id, 42);
  EXPECT_EQ(e.question, "How many dogs?");
  EXPECT_EQ(e.answer_type, "number");
  EXPECT_EQ(e.answers.size(), 10u);
  // Normalised answers: "two"/"Two" count as "2" (7 in all -> 1.0), "3" x2 -> 0.6, "1" -> 0.3.
  ASSERT_EQ(e.labels.size(), 3u);
  EXPECT_EQ(e.labels[0].answer, "1");
  EXPECT_NEAR(e.labels[0].score, 0.3, 1e-12);
  EXPECT_EQ(e.labels[1].answer, "2");
  EXPECT_NEAR(e.labels[1].score, 1.0, 1e-12);
  EXPECT_NEAR(e.labels[2].score, 0.6, 1e-12);
  // "red." normalises to "red" (8 of 10).
  EXPECT_NEAR(vqa_soft_score("red", set.examples[1].labels), 1.0, 1e-12);
  EXPECT_NEAR(vqa_soft_score("dark red", set.examples[1].labels), 0.3, 1e-12);
  // Official accuracy straight from the loaded examples.
  std::unordered_map<int64_t, std::string> pred = {{42000, "two"}, {42001, "maroon"}, {7000, "yes"}};
  EXPECT_NEAR(vqa_official_accuracy(set.examples, pred, VqaVariant::official).overall, (1.0 + 0.3 + 0.3) / 3, 1e-12);
}

TEST(VqaOfficial, QuestionsWithoutAnnotationsAndTestDevImages) {
  Scratch dir("vqa_testdev");
  std::string text = kQuestions;
  text.replace(text.find("val2014"), 7, "test-dev2015");
  VqaSet set = load_vqa_official(write(dir, "q.json", text));
  ASSERT_EQ(set.examples.size(), 3u);
  EXPECT_EQ(set.examples[2].image_id, "COCO_test2015_000000000007");
  EXPECT_TRUE(set.examples[2].labels.empty());
}

TEST(VqaOfficial, VocabularyDropsOutsideAnswers) {
  Scratch dir("vqa_vocab_drop");
  AnswerVocab vocab;
  for (std::string a : {"2", "3", "red", "no", "yes"}) vocab.index_of[a] = vocab.size(), vocab.answers.push_back(a);
  LoadOptions opt;
  opt.vocab = &vocab;
  VqaSet set = load_vqa_official(write(dir, "q.json", kQuestions), write(dir, "a.json", annotations()), opt);
  EXPECT_EQ(set.examples[0].labels.size(), 2u);  // "1" dropped
  EXPECT_EQ(set.examples[1].labels.size(), 1u);  // "dark red", "maroon" dropped
  EXPECT_EQ(set.report.dropped_labels, 3);
}

TEST(VqaOfficial, MissingAnnotationIsAnErrorOrASkip) {
  Scratch dir("vqa_missing_ann");
  std::string q = kQuestions;
  q.replace(q.find("7000"), 4, "7777");
  auto qp = write(dir, "q.json", q), ap = write(dir, "a.json", annotations());
  expect_error([&] { load_vqa_official(qp, ap); }, {"q.json", "question 2", "question_id 7777", "no annotation", "a.json"});
  LoadOptions skip;
  skip.skip_bad = true;
  VqaSet set = load_vqa_official(qp, ap, skip);
  EXPECT_EQ(set.examples.size(), 2u);
  EXPECT_EQ(set.report.skipped, 1);
  ASSERT_EQ(set.report.skip_reasons.size(), 1u);
  EXPECT_NE(set.report.summary().find("1 skipped"), std::string::npos) << set.report.summary();
}

TEST(VqaOfficial, UnknownImageWithAnIndex) {
  Scratch dir("vqa_unknown_image");
  ImageIndex index;
  index.path_of["COCO_val2014_000000000042"] = "/x/COCO_val2014_000000000042.jpg";
  LoadOptions opt;
  opt.images = &index;
  auto qp = write(dir, "q.json", kQuestions);
  expect_error([&] { load_vqa_official(qp, "", opt); }, {"q.json", "question_id 7000", "COCO_val2014_000000000007", "image index"});
  opt.skip_bad = true;
  VqaSet set = load_vqa_official(qp, "", opt);
  EXPECT_EQ(set.examples.size(), 2u);
  EXPECT_EQ(set.report.skipped, 1);
}

TEST(DatasetFiles, MissingFileAndTruncatedJson) {
  Scratch dir("bad_files");
  expect_error([&] { load_vqa_karpathy((dir / "nope.json").string()); }, {"cannot open", "nope.json", "no such file"});
  std::string full = R"([{"img_id": "COCO_val2014_000000000042", "question_id": 1, "sent": "q?", "label": {"yes": 1}}])";
  auto p = write(dir, "cut.json", full.substr(0, full.size() / 2));
  expect_error([&] { load_vqa_karpathy(p); }, {"cut.json", "not valid JSON", "truncated"});
  expect_error([&] { load_nlvr2_official(write(dir, "cut.jsonl", R"({"identifier": "dev-1-0-0", "sente)")); },
               {"cut.jsonl", "line 1", "not valid JSON"});
  expect_error([&] { load_coco_karpathy(write(dir, "wrong.json", "[1, 2]")); }, {"wrong.json", "images"});
}

const char* kKarpathy = R"([
 {"img_id": "COCO_train2014_000000458752", "question_id": 458752000, "sent": "What is this?",
  "label": {"net": 1, "netting": 0.3}, "answer_type": "other", "question_type": "what is this", "is_topk_optimal": true},
 {"img_id": "COCO_val2014_000000000042", "question_id": 42000, "sent": "How many?", "label": {"2": 0.9, "zzz": 0.3},
  "answer_type": "number", "question_type": "how many"},
 {"img_id": "COCO_val2014_000000000043", "question_id": 43000, "sent": "Any label?", "label": {}}])";

TEST(VqaKarpathy, LoadsLabelDicts) {
  Scratch dir("vqa_karpathy");
  VqaSet set = load_vqa_karpathy(write(dir, "k.json", kKarpathy));
  ASSERT_EQ(set.examples.size(), 3u);
  const VqaExample& e = set.examples[0];
  EXPECT_EQ(e.image_id, "COCO_train2014_000000458752");
  EXPECT_EQ(e.coco_image_id, 458752);
  EXPECT_EQ(e.question, "What is this?");
  EXPECT_EQ(e.is_topk_optimal, 1);
  EXPECT_EQ(set.examples[1].is_topk_optimal, -1);
  ASSERT_EQ(e.labels.size(), 2u);
  EXPECT_EQ(e.labels[0].answer, "net");
  EXPECT_EQ(e.labels[1].score, 0.3);
  EXPECT_TRUE(set.examples[2].labels.empty());
}

TEST(VqaKarpathy, LabelOutsideTheVocabulary) {
  Scratch dir("vqa_karpathy_vocab");
  auto path = write(dir, "k.json", kKarpathy);
  AnswerVocab vocab;
  for (std::string a : {"net", "netting", "2"}) vocab.index_of[a] = vocab.size(), vocab.answers.push_back(a);
  LoadOptions opt;
  opt.vocab = &vocab;
  expect_error([&] { load_vqa_karpathy(path, opt); }, {"k.json", "record 1", "question_id 42000", "label 'zzz'", "vocabulary"});
  opt.skip_bad = true;
  VqaSet skipped = load_vqa_karpathy(path, opt);
  EXPECT_EQ(skipped.examples.size(), 2u);
  EXPECT_EQ(skipped.report.skipped, 1);
  opt.skip_bad = false;
  opt.drop_unknown_labels = true;
  VqaSet dropped = load_vqa_karpathy(path, opt);
  ASSERT_EQ(dropped.examples.size(), 3u);
  EXPECT_EQ(dropped.examples[1].labels.size(), 1u);
  EXPECT_EQ(dropped.report.dropped_labels, 1);
}

TEST(VqaKarpathy, BadFieldsNameTheField) {
  Scratch dir("vqa_karpathy_fields");
  expect_error([&] { load_vqa_karpathy(write(dir, "a.json", R"([{"img_id": "x", "question_id": "1", "sent": "q"}])")); },
               {"a.json", "record 0", "'question_id'", "not an integer"});
  expect_error([&] { load_vqa_karpathy(write(dir, "b.json", R"([{"img_id": "x", "question_id": 1}])")); },
               {"b.json", "question_id 1", "'sent' is missing"});
  expect_error([&] { load_vqa_karpathy(write(dir, "c.json", R"([{"img_id": "x", "question_id": 1, "sent": "q", "label": {"a": 2}}])")); },
               {"c.json", "score of answer 'a'"});
}

TEST(VqaKarpathy, OfficialAccuracyThroughTheAnnotations) {
  Scratch dir("vqa_attach");
  VqaSet official = load_vqa_official(write(dir, "q.json", kQuestions), write(dir, "a.json", annotations()));
  VqaSet karpathy = load_vqa_karpathy(write(dir, "k.json", R"([
    {"img_id": "COCO_val2014_000000000007", "question_id": 7000, "sent": "Is it raining?", "label": {"no": 1}},
    {"img_id": "COCO_val2014_000000000042", "question_id": 42001, "sent": "What color is the bus?", "label": {"red": 1}}])"));
  attach_official_answers(karpathy.examples, official.examples);
  EXPECT_EQ(karpathy.examples[0].answers.size(), 10u);
  EXPECT_EQ(karpathy.examples[1].answer_type, "other");
  std::unordered_map<int64_t, std::string> pred = {{7000, "no"}, {42001, "red"}};
  EXPECT_NEAR(vqa_official_accuracy(karpathy.examples, pred, VqaVariant::legacy).overall, 1.0, 1e-12);
  std::vector<VqaExample> orphan(1);
  orphan[0].question_id = 5;
  expect_error([&] { attach_official_answers(orphan, official.examples); }, {"question_id 5", "official annotations"});
}

TEST(AnswerVocab, LoadsAndChecksBothFiles) {
  Scratch dir("vocab");
  auto a2l = write(dir, "ans2label.json", R"({"yes": 0, "no": 1, "2": 2})");
  AnswerVocab v = load_answer_vocab(a2l, write(dir, "label2ans.json", R"(["yes", "no", "2"])"));
  EXPECT_EQ(v.size(), 3);
  EXPECT_EQ(v.find("no"), 1);
  EXPECT_EQ(v.find("maybe"), -1);
  EXPECT_EQ(v.answers[2], "2");
  expect_error([&] { load_answer_vocab(a2l, write(dir, "bad.json", R"(["yes", "2", "no"])")); }, {"disagree", "index 1"});
  expect_error([&] { load_answer_vocab(write(dir, "dup.json", R"({"yes": 0, "no": 0})")); }, {"dup.json", "index 0", "twice"});
  expect_error([&] { load_answer_vocab(write(dir, "gap.json", R"({"yes": 0, "no": 5})")); }, {"gap.json", "outside"});
}

TEST(AnswerVocab, ClassifierTargets) {
  AnswerVocab v;
  for (std::string a : {"yes", "no", "2", "3"}) v.index_of[a] = v.size(), v.answers.push_back(a);
  std::vector<Label> a = {{"2", 1.0}, {"3", 0.3}}, b = {{"no", 0.6}};
  Tensor t = vqa_classifier_targets({&a, &b}, v);
  EXPECT_EQ(t.shape(), (Shape{2, 4}));
  EXPECT_TRUE(test::values_are(t, {0, 0, 1.0, 0.3, 0, 0.6, 0, 0}, 1e-7));
  std::vector<Label> bad = {{"maybe", 1.0}};
  expect_error([&] { vqa_classifier_targets({&bad}, v); }, {"maybe", "vocabulary"});
}

TEST(Gqa, OfficialQuestionsInIdOrder) {
  Scratch dir("gqa");
  auto p = write(dir, "testdev_balanced_questions.json", R"({
    "201307251": {"imageId": "n15740", "question": "Is the sky blue?", "answer": "yes", "fullAnswer": "Yes, it is.",
                  "isBalanced": true, "types": {"structural": "verify"}},
    "20968379": {"imageId": "2354786", "question": "What color is the car?", "answer": "red", "fullAnswer": "The car is red."},
    "05451384": {"imageId": "2354786", "question": "Which side?"}})");
  GqaSet set = load_gqa_official(p);
  ASSERT_EQ(set.examples.size(), 3u);
  EXPECT_EQ(set.examples[0].question_id, "05451384");
  EXPECT_EQ(set.examples[1].question_id, "20968379");
  EXPECT_EQ(set.examples[2].question_id, "201307251");
  EXPECT_EQ(set.examples[1].image_id, "2354786");
  EXPECT_EQ(set.examples[1].answer, "red");
  EXPECT_EQ(set.examples[1].full_answer, "The car is red.");
  ASSERT_EQ(set.examples[1].labels.size(), 1u);
  EXPECT_EQ(set.examples[1].labels[0].score, 1.0);
  EXPECT_TRUE(set.examples[0].answer.empty());  // withheld
  expect_error([&] { load_gqa_official(write(dir, "bad.json", R"({"1": {"question": "q?"}})")); }, {"bad.json", "question '1'", "'imageId'"});
}

TEST(Gqa, PreprocessedList) {
  Scratch dir("gqa_pre");
  auto p = write(dir, "testdev.json", R"([
    {"img_id": "n161313", "question_id": "201640614", "sent": "Who is wearing the shirt?", "label": {"man": 1.0}},
    {"img_id": "2354786", "question_id": 5, "sent": "Submit question?"}])");
  GqaSet set = load_gqa_preprocessed(p);
  ASSERT_EQ(set.examples.size(), 2u);
  EXPECT_EQ(set.examples[0].answer, "man");
  EXPECT_EQ(set.examples[1].question_id, "5");
  EXPECT_TRUE(set.examples[1].labels.empty());
}

TEST(Nlvr2, OfficialJsonLines) {
  Scratch dir("nlvr2");
  auto p = write(dir, "train.json",
                 R"({"identifier": "train-10171-0-0", "sentence": "An image shows one dog.", "label": "True", "left_url": "u", "right_url": "v", "synset": "dog", "query": "q", "writer": "w", "directory": 12})"
                 "\n\n"
                 R"({"identifier": "train-10171-1-0", "sentence": "An image shows one dog.", "label": "False", "directory": "12"})"
                 "\n");
  Nlvr2Set set = load_nlvr2_official(p);
  ASSERT_EQ(set.examples.size(), 2u);
  const Nlvr2Example& e = set.examples[0];
  EXPECT_EQ(e.identifier, "train-10171-0-0");
  EXPECT_EQ(e.label, 1);
  EXPECT_EQ(set.examples[1].label, 0);
  EXPECT_EQ(e.image_ids[0], "train-10171-0-img0");
  EXPECT_EQ(e.image_ids[1], "train-10171-0-img1");
  EXPECT_EQ(e.directory, "12");
  ImagePathFn paths = nlvr2_image_files("/data/nlvr2", set.examples);
  EXPECT_EQ(paths("train-10171-1-img1"), "/data/nlvr2/train/12/train-10171-1-img1.png");
  EXPECT_EQ(paths("dev-850-0-img0"), "/data/nlvr2/dev/dev-850-0-img0.png");
  // test2 hides labels.
  Nlvr2Set hidden = load_nlvr2_official(write(dir, "test2.json", R"({"identifier": "test2-1-0-0", "sentence": "s"})"));
  EXPECT_EQ(hidden.examples[0].label, -1);
}

TEST(Nlvr2, BadRecords) {
  Scratch dir("nlvr2_bad");
  auto p = write(dir, "dev.json",
                 R"({"identifier": "dev-1-0-0", "sentence": "s", "label": "True"})"
                 "\n"
                 R"({"identifier": "dev-1-1-0", "sentence": "s", "label": "maybe"})"
                 "\n"
                 R"({"identifier": "dev-1", "sentence": "s", "label": "True"})"
                 "\n");
  expect_error([&] { load_nlvr2_official(p); }, {"dev.json", "line 2", "dev-1-1-0", "'label'", "maybe"});
  LoadOptions skip;
  skip.skip_bad = true;
  Nlvr2Set set = load_nlvr2_official(p, skip);
  EXPECT_EQ(set.examples.size(), 1u);
  EXPECT_EQ(set.report.skipped, 2);
  EXPECT_NE(set.report.skip_reasons[1].find("{split}-{set_id}-{pair_id}-{sentence_id}"), std::string::npos);
}

TEST(Nlvr2, PreprocessedList) {
  Scratch dir("nlvr2_pre");
  Nlvr2Set set = load_nlvr2_preprocessed(write(dir, "valid.json", R"([
    {"identifier": "dev-850-0-0", "img0": "dev-850-0-img0", "img1": "dev-850-0-img1", "label": 1, "sent": "Two dogs.", "uid": "nlvr2_dev_0"},
    {"identifier": "dev-850-1-0", "img0": "dev-850-1-img0", "img1": "dev-850-1-img1", "label": 0, "sent": "Two dogs.", "uid": "nlvr2_dev_1"}])"));
  ASSERT_EQ(set.examples.size(), 2u);
  EXPECT_EQ(set.examples[0].sentence, "Two dogs.");
  EXPECT_EQ(set.examples[1].label, 0);
  EXPECT_EQ(set.examples[1].image_ids[1], "dev-850-1-img1");
  expect_error([&] { load_nlvr2_preprocessed(write(dir, "bad.json", R"([{"identifier": "dev-1-0-0", "img0": "a", "img1": "b", "sent": "s", "label": 3}])")); },
               {"bad.json", "record 0", "expected 0 or 1"});
}

const char* kDatasetCoco = R"({"dataset": "coco", "images": [
  {"filepath": "val2014", "filename": "COCO_val2014_000000391895.jpg", "imgid": 0, "cocoid": 391895, "split": "test",
   "sentids": [0, 1], "sentences": [{"raw": "A man riding a bike.", "tokens": ["a", "man"], "imgid": 0, "sentid": 0},
                                     {"raw": "A person on a bicycle.", "tokens": [], "imgid": 0, "sentid": 1}]},
  {"filepath": "train2014", "filename": "COCO_train2014_000000000009.jpg", "imgid": 1, "cocoid": 9, "split": "train",
   "sentids": [2], "sentences": [{"raw": "Food on a plate.", "imgid": 1, "sentid": 2}]},
  {"filepath": "val2014", "filename": "COCO_val2014_000000000010.jpg", "imgid": 2, "cocoid": 10, "split": "restval",
   "sentids": [3, 4], "sentences": [{"raw": "A cat.", "imgid": 2, "sentid": 3}, {"raw": "  ", "imgid": 2, "sentid": 4}]}]})";

TEST(Coco, KarpathySplits) {
  Scratch dir("coco_karpathy");
  auto p = write(dir, "dataset_coco.json", kDatasetCoco);
  CocoCaptionSet test_split = load_coco_karpathy(p, {"test"});
  ASSERT_EQ(test_split.images.size(), 1u);
  const CocoImage& img = test_split.images[0];
  EXPECT_EQ(img.image_id, "COCO_val2014_000000391895");
  EXPECT_EQ(img.coco_id, 391895);
  EXPECT_EQ(img.split, "test");
  EXPECT_EQ(img.captions, (std::vector<std::string>{"A man riding a bike.", "A person on a bicycle."}));
  EXPECT_EQ(img.sentence_ids, (std::vector<int64_t>{0, 1}));
  EXPECT_EQ(coco_image_files("/coco")(img.image_id), "/coco/val2014/COCO_val2014_000000391895.jpg");
  CocoCaptionSet train = load_coco_karpathy(p, {"train"});
  ASSERT_EQ(train.images.size(), 1u);
  EXPECT_EQ(train.images[0].split, "train");
  expect_error([&] { load_coco_karpathy(p, {"trian"}); }, {"unknown split 'trian'"});
}

TEST(Coco, EmptyCaptionIsAnErrorOrASkippedCaption) {
  Scratch dir("coco_empty");
  auto p = write(dir, "dataset_coco.json", kDatasetCoco);
  expect_error([&] { load_coco_karpathy(p, {"train", "restval"}); },
               {"dataset_coco.json", "COCO_val2014_000000000010.jpg", "sentence 1", "sentid 4", "empty caption"});
  LoadOptions skip;
  skip.skip_bad = true;
  CocoCaptionSet set = load_coco_karpathy(p, {"train", "restval"}, skip);
  ASSERT_EQ(set.images.size(), 2u);
  EXPECT_EQ(set.images[1].captions, (std::vector<std::string>{"A cat."}));
  EXPECT_EQ(set.report.skipped, 1);
}

TEST(Coco, CocoFormatCaptions) {
  Scratch dir("coco_format");
  auto p = write(dir, "captions_val2014.json", R"({"info": {}, "licenses": [],
    "images": [{"id": 42, "file_name": "COCO_val2014_000000000042.jpg", "width": 640, "height": 480},
               {"id": 7, "file_name": "COCO_val2014_000000000007.jpg"}],
    "annotations": [{"id": 1, "image_id": 7, "caption": "A dog."}, {"id": 2, "image_id": 42, "caption": "A bus."},
                    {"id": 3, "image_id": 7, "caption": "A brown dog."}]})");
  CocoCaptionSet set = load_coco_captions(p);
  ASSERT_EQ(set.images.size(), 2u);
  EXPECT_EQ(set.images[0].coco_id, 42);
  EXPECT_EQ(set.images[1].captions, (std::vector<std::string>{"A dog.", "A brown dog."}));
  EXPECT_EQ(set.images[1].sentence_ids, (std::vector<int64_t>{1, 3}));
  auto bad = write(dir, "bad.json", R"({"images": [{"id": 1, "file_name": "a.jpg"}],
    "annotations": [{"id": 5, "image_id": 1, "caption": "ok"}, {"id": 6, "image_id": 99, "caption": "orphan"}]})");
  expect_error([&] { load_coco_captions(bad); }, {"bad.json", "annotation 1", "id 6", "image_id 99"});
}

TEST(ImagePaths, TemplatesIndexesAndFeatures) {
  EXPECT_EQ(gqa_image_files("/gqa")("2354786"), "/gqa/images/2354786.jpg");
  EXPECT_EQ(feature_files("/feat")("COCO_val2014_000000000042"), "/feat/COCO_val2014_000000000042.h5");
  EXPECT_EQ(image_path_template("/r/{split}/x/{id}.png")("test1-5-0-img1"), "/r/test1/x/test1-5-0-img1.png");
  expect_error([&] { image_path_template("/r/{split}/{id}.jpg")("2354786"); }, {"2354786", "no split"});
  expect_error([&] { image_path_template("/r/images"); }, {"{id}"});

  Scratch dir("image_index");
  write(dir, "train2014/COCO_train2014_000000000001.jpg", "x");
  write(dir, "val2014/sub/COCO_val2014_000000000002.PNG", "x");
  write(dir, "notes.txt", "x");
  ImageIndex index = scan_image_dir(dir.string());
  EXPECT_EQ(index.size(), 2u);
  EXPECT_TRUE(index.contains("COCO_val2014_000000000002"));
  ImagePathFn lookup = image_index_lookup(index);
  EXPECT_EQ(lookup("COCO_train2014_000000000001"), (dir / "train2014/COCO_train2014_000000000001.jpg").string());
  expect_error([&] { lookup("COCO_val2014_000000000003"); }, {"COCO_val2014_000000000003", "not in the image index"});
  EXPECT_EQ(scan_image_dir(dir.string(), {".jpg"}, false).size(), 0u);
  write(dir, "dup/COCO_train2014_000000000001.png", "x");
  expect_error([&] { scan_image_dir(dir.string()); }, {"two files", "COCO_train2014_000000000001"});
}

}  // namespace
}  // namespace vlp::data
