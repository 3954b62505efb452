// METEOR and SPICE through the official jars (data.md 6.9): not computed (never 0) without them, clear
// errors naming the jar when the child fails, the exact METEOR stdio protocol (checked against a fake
// "java" script), and, when VLP_METEOR_JAR points at the real meteor-1.5.jar, the official numbers.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <sys/stat.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <string>

#include "data/metrics.h"
#include "runtime/error.h"

using namespace vlp;
using namespace vlp::data;
namespace fs = std::filesystem;

namespace {

// Three tokenised images; expected METEOR numbers below come from the official wrapper.
std::vector<CaptionItem> sample_items() {
  return {{"a man riding a horse on a beach",
           {"a man rides a horse along the beach", "a person on a horse near the ocean", "a man is riding a brown horse"}},
          {"two dogs playing in the snow", {"two dogs play in the snow", "a pair of dogs running through snow"}},
          {"a plate of food with broccoli",
           {"a plate with meat and broccoli on it", "a white plate topped with food", "food on a plate with vegetables"}}};
}

// Sets (or with nullptr unsets) an environment variable for one scope.
struct ScopedEnv {
  std::string name;
  std::optional<std::string> old;
  ScopedEnv(const char* n, const char* value) : name(n) {
    if (const char* o = std::getenv(n)) old = o;
    if (value) ::setenv(n, value, 1);
    else ::unsetenv(n);
  }
  ~ScopedEnv() {
    if (old) ::setenv(name.c_str(), old->c_str(), 1);
    else ::unsetenv(name.c_str());
  }
};

fs::path temp_dir(const std::string& name) {
  fs::path d = fs::temp_directory_path() / ("vlp_test_caption_java_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

std::string write_script(const fs::path& path, const std::string& body) {
  std::ofstream(path) << "#!/bin/sh\n" << body;
  ::chmod(path.c_str(), 0755);
  return path.string();
}

}  // namespace

TEST(CaptionJava, NotComputedWithoutTheEnvironment) {
  ScopedEnv m("VLP_METEOR_JAR", nullptr), s("VLP_SPICE_JAR", nullptr);
  JavaMetricsConfig cfg = java_metrics_from_env();
  EXPECT_TRUE(cfg.meteor_jar.empty());
  EXPECT_TRUE(cfg.spice_jar.empty());
  CaptionScores sc = caption_scores(sample_items());  // default: from the environment
  EXPECT_FALSE(sc.meteor.has_value());
  EXPECT_FALSE(sc.spice.has_value());
  EXPECT_TRUE(sc.meteor_per_image.empty());
  EXPECT_EQ(sc.meteor_not_computed, "VLP_METEOR_JAR not set");
  EXPECT_EQ(sc.spice_not_computed, "VLP_SPICE_JAR not set");
  EXPECT_GT(sc.cider_d, 0.0);  // the C++ metrics are still there
  ASSERT_EQ(sc.bleu.size(), 4u);
}

TEST(CaptionJava, MissingJarIsNamedInTheReason) {
  JavaMetricsConfig cfg;
  cfg.java = "/bin/sh";  // never run: the jar check comes first
  cfg.meteor_jar = "/nonexistent/dir/meteor-1.5.jar";
  cfg.spice_jar = "/nonexistent/dir/spice-1.0.jar";
  CaptionScores sc = caption_scores(sample_items(), cfg);
  EXPECT_FALSE(sc.meteor.has_value());
  EXPECT_FALSE(sc.spice.has_value());
  EXPECT_NE(sc.meteor_not_computed.find("/nonexistent/dir/meteor-1.5.jar"), std::string::npos) << sc.meteor_not_computed;
  EXPECT_NE(sc.spice_not_computed.find("/nonexistent/dir/spice-1.0.jar"), std::string::npos) << sc.spice_not_computed;
  try {
    meteor_score(sample_items(), "/bin/sh", "/nonexistent/dir/meteor-1.5.jar");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/dir/meteor-1.5.jar"), std::string::npos) << e.what();
  }
}

TEST(CaptionJava, MissingJavaIsTheReason) {
  JavaMetricsConfig cfg;
  cfg.meteor_jar = "/some/meteor-1.5.jar";
  cfg.missing_java = "java not found on PATH (set VLP_JAVA)";
  CaptionScores sc = caption_scores(sample_items(), cfg);
  EXPECT_FALSE(sc.meteor.has_value());
  EXPECT_EQ(sc.meteor_not_computed, cfg.missing_java);
  ScopedEnv j("VLP_JAVA", "/nonexistent/bin/java");
  EXPECT_NE(java_metrics_from_env().missing_java.find("/nonexistent/bin/java"), std::string::npos);
}

TEST(CaptionJava, DyingChildGivesAClearErrorWithoutHanging) {
  fs::path d = temp_dir("dying");
  std::string java = write_script(d / "java", "echo 'Error: Unable to access jarfile' >&2\nexit 3\n");
  std::string jar = (d / "meteor-1.5.jar").string();
  std::ofstream(jar) << "not a jar";
  try {
    meteor_score(sample_items(), java, jar);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find(jar), std::string::npos) << msg;
    EXPECT_NE(msg.find("status 3"), std::string::npos) << msg;
    EXPECT_NE(msg.find("Unable to access jarfile"), std::string::npos) << msg;
  }
  JavaMetricsConfig cfg;
  cfg.java = java;
  cfg.meteor_jar = jar;
  CaptionScores sc = caption_scores(sample_items(), cfg);  // the evaluator does not throw
  EXPECT_FALSE(sc.meteor.has_value());
  EXPECT_NE(sc.meteor_not_computed.find("status 3"), std::string::npos);
  fs::remove_all(d);
}

// A fake "java" that logs what it is sent and answers like METEOR's -stdio mode: a stats line per SCORE,
// and for EVAL one number per "|||" field and then the corpus number.
TEST(CaptionJava, MeteorStdioProtocol) {
  fs::path d = temp_dir("protocol");
  const std::string log = (d / "sent.txt").string(), args = (d / "args.txt").string();
  std::string java = write_script(d / "java",
                                  "echo \"$@\" > '" + args + "'\npwd >> '" + args + "'\nk=0\n"
                                  "while IFS= read -r line; do\n"
                                  "  printf '%s\\n' \"$line\" >> '" + log + "'\n"
                                  "  case \"$line\" in\n"
                                  "    SCORE*) k=$((k+1)); echo \"stats $k\" ;;\n"
                                  "    EVAL*) n=0; rest=\"$line\"\n"
                                  "      while case \"$rest\" in *'|||'*) true ;; *) false ;; esac; do\n"
                                  "        rest=\"${rest#*'|||'}\"; n=$((n+1)); done\n"
                                  "      i=1; while [ $i -le $n ]; do echo \"0.$i\"; i=$((i+1)); done; echo 0.25 ;;\n"
                                  "  esac\n"
                                  "done\n");
  std::string jar = (d / "meteor-1.5.jar").string();
  std::ofstream(jar) << "fake";
  std::vector<CaptionItem> items = {{"a   cat ||| on a mat", {"a cat on the mat", "the cat sits"}},
                                    {"two dogs", {"two dogs play"}}};
  JavaMetricResult r = meteor_score(items, java, jar);
  EXPECT_DOUBLE_EQ(r.corpus, 0.25);
  ASSERT_EQ(r.per_image.size(), 2u);
  EXPECT_DOUBLE_EQ(r.per_image[0], 0.1);
  EXPECT_DOUBLE_EQ(r.per_image[1], 0.2);
  std::ifstream in(log);
  std::string l1, l2, l3;
  std::getline(in, l1);
  std::getline(in, l2);
  std::getline(in, l3);
  // "|||" removed from the hypothesis, then "  " -> " " once (left to right), as pycocoevalcap does.
  EXPECT_EQ(l1, "SCORE ||| a cat on the mat ||| the cat sits ||| a  cat on a mat");
  EXPECT_EQ(l2, "SCORE ||| two dogs play ||| two dogs");
  EXPECT_EQ(l3, "EVAL ||| stats 1 ||| stats 2");
  std::ifstream a(args);
  std::string argline, cwd;
  std::getline(a, argline);
  std::getline(a, cwd);
  EXPECT_EQ(argline, "-Xmx2G -jar " + fs::absolute(jar).string() + " - - -stdio -l en -norm");
  EXPECT_EQ(fs::canonical(cwd), fs::canonical(d));  // run in the jar's folder, as pycocoevalcap does
  fs::remove_all(d);
}

// The real jar: VLP_METEOR_JAR=/path/to/pycocoevalcap/meteor/meteor-1.5.jar (pycocoevalcap 1.2 wheel).
TEST(CaptionJava, MeteorMatchesTheOfficialWrapper) {
  JavaMetricsConfig cfg = java_metrics_from_env();
  if (cfg.meteor_jar.empty()) GTEST_SKIP() << "VLP_METEOR_JAR not set (path to meteor-1.5.jar)";
  if (cfg.java.empty()) GTEST_SKIP() << cfg.missing_java;
  cfg.spice_jar.clear();
  CaptionScores sc = caption_scores(sample_items(), cfg);
  ASSERT_TRUE(sc.meteor.has_value()) << sc.meteor_not_computed;
  // Expected: pycocoevalcap 1.2 Meteor().compute_score on the same gts/res (Python wrapper driving the
  // same jar with OpenJDK 17): corpus 0.45620494906468173, per image 0.8113191416602548,
  // 0.8666666666666667, 0.28903166214870585. The corpus score is not the mean of the per-image ones.
  EXPECT_NEAR(*sc.meteor, 0.45620494906468173, 1e-12);
  ASSERT_EQ(sc.meteor_per_image.size(), 3u);
  EXPECT_NEAR(sc.meteor_per_image[0], 0.8113191416602548, 1e-12);
  EXPECT_NEAR(sc.meteor_per_image[1], 0.8666666666666667, 1e-12);
  EXPECT_NEAR(sc.meteor_per_image[2], 0.28903166214870585, 1e-12);
}

// The 20-image caption fixture of test_metrics_captions (tokenised by the Java PTB tokenizer), three
// systems. Expected: pycocoevalcap 1.2 Meteor().compute_score per system (corpus, first and last image).
TEST(CaptionJava, MeteorMatchesTheOfficialWrapperOnTheCaptionFixture) {
  JavaMetricsConfig cfg = java_metrics_from_env();
  if (cfg.meteor_jar.empty()) GTEST_SKIP() << "VLP_METEOR_JAR not set (path to meteor-1.5.jar)";
  if (cfg.java.empty()) GTEST_SKIP() << cfg.missing_java;
  std::ifstream in(std::string(VLP_SOURCE_DIR) + "/tests/fixtures/data/metrics/captions.json");
  ASSERT_TRUE(in.good());
  nlohmann::json fx = nlohmann::json::parse(in);
  const std::map<std::string, std::vector<double>> expected = {
      {"good", {0.4343610418865213, 0.4497196124097984, 0.24514367560391045}},
      {"generic", {0.1544709848922551, 0.14491838213584138, 0.15285429184714416}},
      {"edge", {0.26416387508746497, 0.0, 1.0}}};
  const auto& refs = fx["references_tokenized"];
  for (const auto& sys : fx["systems"]) {
    const std::string name = sys["name"];
    ASSERT_TRUE(expected.count(name)) << name;
    std::vector<CaptionItem> items;
    for (size_t i = 0; i < refs.size(); ++i)
      items.push_back({sys["candidates_tokenized"][i].get<std::string>(), refs[i].get<std::vector<std::string>>()});
    JavaMetricResult r = meteor_score(items, cfg.java, cfg.meteor_jar);
    const auto& e = expected.at(name);
    EXPECT_NEAR(r.corpus, e[0], 1e-12) << name;
    ASSERT_EQ(r.per_image.size(), refs.size());
    EXPECT_NEAR(r.per_image.front(), e[1], 1e-12) << name;
    EXPECT_NEAR(r.per_image.back(), e[2], 1e-12) << name;
  }
}

// SPICE needs Stanford CoreNLP 3.6.0 in lib/ beside the jar; without it the jar fails and SPICE is
// reported as not computed with the jar's error.
TEST(CaptionJava, SpiceComputedOrExplained) {
  JavaMetricsConfig cfg = java_metrics_from_env();
  if (cfg.spice_jar.empty()) GTEST_SKIP() << "VLP_SPICE_JAR not set (path to spice-1.0.jar)";
  if (cfg.java.empty()) GTEST_SKIP() << cfg.missing_java;
  cfg.meteor_jar.clear();
  CaptionScores sc = caption_scores(sample_items(), cfg);
  fs::path corenlp = fs::path(cfg.spice_jar).parent_path() / "lib" / "stanford-corenlp-3.6.0.jar";
  if (!fs::exists(corenlp)) {
    EXPECT_FALSE(sc.spice.has_value());
    EXPECT_NE(sc.spice_not_computed.find(cfg.spice_jar), std::string::npos) << sc.spice_not_computed;
    GTEST_SKIP() << "no " << corenlp << ": SPICE not computed, reason: " << sc.spice_not_computed;
  }
  ASSERT_TRUE(sc.spice.has_value()) << sc.spice_not_computed;
  ASSERT_EQ(sc.spice_per_image.size(), 3u);
  EXPECT_GT(*sc.spice, 0.0);
  EXPECT_LE(*sc.spice, 1.0);
}

// A fake "java" standing in for spice-1.0.jar: checks the command line, keeps the input file and writes
// an output in SPICE's format (one image's F as the string "NaN", which pycocoevalcap reads as NaN).
TEST(CaptionJava, SpiceFileProtocol) {
  fs::path d = temp_dir("spice");
  fs::create_directories(d / "lib");
  std::ofstream(d / "lib" / "stanford-corenlp-3.6.0.jar") << "fake";
  std::ofstream(d / "lib" / "stanford-corenlp-3.6.0-models.jar") << "fake";
  std::string jar = (d / "spice-1.0.jar").string();
  std::ofstream(jar) << "fake";
  const std::string args = (d / "args.txt").string(), kept = (d / "in_copy.json").string();
  std::string java = write_script(
      d / "java", "echo \"$@\" > '" + args + "'\ncp \"$4\" '" + kept + "'\n" +
                      "printf '%s' '[{\"image_id\": 1, \"scores\": {\"All\": {\"f\": 0.5, \"pr\": 1}}},"
                      " {\"image_id\": 0, \"scores\": {\"All\": {\"f\": 0.25}}}]' > \"$8\"\n");
  std::vector<CaptionItem> items = {{"a cat", {"a cat on a mat"}}, {"two dogs", {"two dogs play", "dogs"}}};
  const std::string cache = (d / "cache").string();
  JavaMetricResult r = spice_score(items, java, jar, cache);
  ASSERT_EQ(r.per_image.size(), 2u);
  EXPECT_DOUBLE_EQ(r.per_image[0], 0.25);
  EXPECT_DOUBLE_EQ(r.per_image[1], 0.5);
  EXPECT_DOUBLE_EQ(r.corpus, 0.375);
  EXPECT_TRUE(fs::is_directory(cache));
  std::ifstream a(args);
  std::string argline;
  std::getline(a, argline);
  EXPECT_EQ(argline.rfind("-Xmx8G -jar " + fs::absolute(jar).string() + " ", 0), 0u) << argline;
  EXPECT_NE(argline.find(" -cache " + fs::absolute(cache).string() + " -out "), std::string::npos) << argline;
  EXPECT_NE(argline.find(" -subset -silent"), std::string::npos) << argline;
  std::ifstream k(kept);
  std::string in((std::istreambuf_iterator<char>(k)), std::istreambuf_iterator<char>());
  EXPECT_EQ(in, R"([{"image_id":0,"refs":["a cat on a mat"],"test":"a cat"},)"
                R"({"image_id":1,"refs":["two dogs play","dogs"],"test":"two dogs"}])");
  // A non-numeric F counts as NaN (pycocoevalcap's float_convert); a missing image is an error naming the jar.
  write_script(d / "java", "printf '[{\"image_id\": 0, \"scores\": {\"All\": {\"f\": \"NaN\"}}}]' > \"$8\"\n");
  JavaMetricResult one = spice_score({items[0]}, java, jar, cache);
  EXPECT_TRUE(std::isnan(one.corpus));
  try {
    spice_score(items, java, jar, cache);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(jar), std::string::npos) << e.what();
  }
  fs::remove_all(d);
}
