// vlpeft: the command-line tool. With no arguments it runs the embedded demo (tools/trainer/demo.h).
//   vlpeft [demo]            pretrain a tiny VL model, adapt it with each PEFT method, print a table
//   vlpeft train             train from a config (JSON) with --set key=value overrides
//   vlpeft eval              evaluate a training checkpoint
//   vlpeft generate          answer a question about an image file, or print eval questions with answers
//   vlpeft params            parameter counts of a transformers config (configs/hf/*.json) or a train config
//   vlpeft make-data         write the synthetic VL benchmark in the official file formats (data/synthetic.h)
//   vlpeft extract-features  run a frozen ViT / CLIP tower over images into feature shards (models/features.h)
// Every command takes --help. Usage errors (unknown command, unknown option, missing value or required option)
// exit 2; failures while running exit 1.
#include <cstdio>
#include <cstring>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "data/synthetic.h"
#include "models/param_count.h"
#include "runtime/error.h"
#include "tools/trainer/cli_features.h"
#include "tools/trainer/cli_generate.h"
#include "tools/trainer/cli_params.h"
#include "tools/trainer/demo.h"
#include "tools/trainer/trainer.h"

using namespace vlp;
using namespace vlp::trainer;

namespace {

// A command-line mistake: exit 2. with_usage: follow the message with the command list (unknown command).
struct UsageError : std::runtime_error {
  explicit UsageError(const std::string& m, bool list = false) : std::runtime_error(m), with_usage(list) {}
  bool with_usage;
};

struct Flag {
  const char* name;  // without "--"
  const char* arg;   // value placeholder; nullptr = a switch
  const char* help;
};

struct Command {
  const char* name;
  const char* summary;  // one line for the command list
  const char* usage;    // after "usage: "
  const char* about;
  std::vector<Flag> flags;
  bool positional = false;  // takes positional arguments
};

const Flag kConfig{"config", "FILE", "a training config (JSON); keys as printed by `vlpeft train --print-config`"};
const Flag kSet{"set", "KEY=VALUE", "override one config key (repeatable)"};
const Flag kDevice{"device", "DEV", "cpu, cuda or cuda:N (shortcut for --set device=DEV)"};
const Flag kCheckpoint{"checkpoint", "PATH", "a training checkpoint, e.g. OUT/last.safetensors (its config is used "
                                             "unless --config is given)"};

const std::vector<Command>& commands() {
  static const std::vector<Command> c = {
      {"demo", "pretrain a tiny VL model, adapt it with each PEFT method, print a table", "vlpeft [demo] [options]",
       "Pretrains a tiny VL encoder-decoder (a ViT vision tower and a T5) on synthetic tasks, adapts it to\n"
       "held-out tasks with full fine-tuning and each PEFT method (the tower frozen), and prints a table.",
       {{"pretrain-steps", "N", "pretraining steps (default 1000)"},
        {"adapt-steps", "N", "adaptation steps per method (default 500)"},
        {"out", "DIR", "where checkpoints go (default vlpeft_demo)"},
        {"vision-tower", "vit|none", "a ViT tower over the pixels (default) or linear patch features"},
        {"only", "METHOD,...", "run only these methods (names as in the table)"},
        {"device", "DEV", "cpu (default), cuda or cuda:N: where every run trains and evaluates (bf16 autocast on "
                          "CUDA)"}}},
      {"train", "train from a config (JSON) with --set overrides", "vlpeft train [--config FILE] [--set KEY=VALUE]...",
       "Trains a VL model (VL-T5 / VL-BART, GPT-2 prefix, encoder classifier) on the synthetic tasks or on the\n"
       "VQAv2 / GQA / NLVR2 / COCO files (README: Training on real data; configs/ has the recipes).\n"
       "Checkpoints: OUT/last.safetensors, OUT/last.prev.safetensors, OUT/best.safetensors; log\n"
       "OUT/metrics.jsonl, plot OUT/metrics.svg. --set resume=true continues from OUT.",
       {kConfig, kSet, kDevice, {"print-config", nullptr, "print every config key with its value (and, under _keys, what it means) and exit"},
        {"check", nullptr, "only list the paths the config misses or leaves unfilled, by key (exit 1 when any)"}}},
      {"eval", "score a training checkpoint per task", "vlpeft eval --checkpoint PATH [--split NAME] [--config FILE] [--set KEY=VALUE]...",
       "Each task's metric on a split: VQA accuracy (official, legacy) and soft score, GQA accuracy, NLVR2\n"
       "accuracy and consistency, CIDEr-D, BLEU-4, ROUGE-L (synthetic tasks: exact match). Predictions go to\n"
       "OUT/predictions in the official result formats.",
       {kCheckpoint, {"split", "NAME", "train, val or test (default: the config's eval_split)"}, kConfig, kSet, kDevice}},
      {"generate", "answer a question about an image file, or show eval answers", "vlpeft generate --checkpoint PATH --image FILE [--question TEXT] [options]\n"
                   "       vlpeft generate --checkpoint PATH [--n N] [options]",
       "With --image: answers the question about the image file (or captions it, for a checkpoint with a\n"
       "captioning task). The image is fed as in training (resized to the config's image_size; patch\n"
       "features, or pixels for a vision_tower vit checkpoint); the question is tokenised with the checkpoint's vocabulary. Without --image: prints N eval\n"
       "questions per task with the reference answer and the generated one.",
       {kCheckpoint, {"image", "FILE", "a JPEG or PNG image"},
        {"question", "TEXT", "the question (e.g. \"how many objects ?\")"},
        {"task", "NAME", "the task to answer as (default: from the question)"},
        {"n", "N", "without --image: examples per task (default 5)"},
        {"beams", "K", "beam search with K beams (default greedy)"},
        {"max-new-tokens", "N", "generation length (default: the config's max_new_tokens)"},
        kConfig, kSet, kDevice}},
      {"params", "parameter counts of HF configs or of a training config", "vlpeft params HF_CONFIG.json...\n       vlpeft params --config TRAIN.json [--set KEY=VALUE]...",
       "HF configs (gpt2, t5, bart, vit, clip; e.g. configs/hf/*.json): parameters as transformers'\n"
       "num_parameters() of the class the checkpoint is (tied weights once, buffers excluded; CLIP: the vision\n"
       "tower with projection, CLIPVisionModelWithProjection). A training config: the trainer model's\n"
       "parameters (backbone, visual embedding, PEFT modules) and the trainable count and percentage.",
       {kConfig, kSet}, true},
      {"make-data", "write the synthetic VL benchmark in the official formats", "vlpeft make-data --out DIR [--seed N] [--image-size PX]",
       "Writes the synthetic VL benchmark (COCO captions, VQAv2, GQA, NLVR2 in their official file\n"
       "formats) under DIR; see data/synthetic.h.",
       {{"out", "DIR", "output directory (required)"}, {"seed", "N", "seed (default 0)"},
        {"image-size", "PX", "square image size (default 32)"}}},
      {"extract-features", "frozen ViT / CLIP features of images into shards", "vlpeft extract-features --model DIR --images PATH --out DIR [options]",
       "Runs a frozen ViT or CLIP vision tower over images and writes their features as safetensors shards\n"
       "(OUT/features-NNNNN.safetensors, one tensor per image id, and OUT/index.json) that the data side\n"
       "reads by image id (data/feature_shards.h). Resumes by default: finished shards are skipped.\n"
       "--images is a directory (every .jpg/.jpeg/.png under it; id = file stem), a list file (PATH or\n"
       "ID<tab>PATH per line), or a dataset file with --dataset KIND and --image-root DIR (the images its\n"
       "records name, found by id among the files under DIR).",
       {{"model", "DIR", "transformers ViT or CLIP checkpoint directory (config.json + model.safetensors)"},
        {"images", "PATH", "directory, list file or dataset file"},
        {"dataset", "KIND", "vqa, vqa-karpathy, gqa, gqa-vlt5, nlvr2, nlvr2-vlt5, coco-karpathy, coco-captions"},
        {"image-root", "DIR", "with --dataset: the directory holding the images"},
        {"out", "DIR", "output directory"},
        {"mode", "MODE", "grid (default), pooled, patches, or projected (CLIP)"},
        {"grid", "N", "grid mode: patch grid max-pooled to N x N (default 7)"},
        {"batch", "N", "images per forward (default 16)"},
        {"shard-size", "N", "images per shard file (default 1024)"},
        {"dtype", "TYPE", "stored dtype: f32 (default), f16, bf16"},
        {"transform", "NAME", "auto (default: by the tower), vit, clip, vladapter-clip"},
        {"no-resume", nullptr, "remove earlier features in OUT first"},
        {"quiet", nullptr, "no progress on stderr"}}},
  };
  return c;
}

const Command& command(const std::string& name) {
  for (const Command& c : commands())
    if (name == c.name) return c;
  throw UsageError("unknown command '" + name + "'", true);
}

std::string help_of(const Command& c) {
  std::string s = std::string("usage: ") + c.usage + "\n" + c.about + "\noptions:\n";
  for (const Flag& f : c.flags) {
    std::string left = std::string("  --") + f.name + (f.arg ? std::string(" ") + f.arg : "");
    if (left.size() < 26) left.resize(26, ' ');
    else left += "  ";
    s += left + f.help + "\n";
  }
  s += "  --help, -h              print this help\n";
  return s;
}

struct Args {
  std::vector<std::string> positional, sets;
  std::map<std::string, std::string> opts;
  bool help = false;
  bool has(const char* k) const { return opts.count(k) > 0; }
  std::string get(const char* k, const std::string& fallback = "") const {
    auto it = opts.find(k);
    return it == opts.end() ? fallback : it->second;
  }
  int64_t integer(const char* k, int64_t fallback) const {
    if (!has(k)) return fallback;
    try {
      size_t used = 0;
      const int64_t v = std::stoll(opts.at(k), &used);
      if (used == opts.at(k).size()) return v;
    } catch (const std::exception&) {
    }
    throw UsageError("--" + std::string(k) + " expects an integer, got '" + opts.at(k) + "'");
  }
  std::string required(const Command& c, const char* k) const {
    if (!has(k)) throw UsageError(std::string(c.name) + ": --" + k + " is required");
    return opts.at(k);
  }
};

Args parse_args(const Command& c, int argc, char** argv, int first) {
  Args a;
  for (int i = first; i < argc; ++i) {
    const std::string s = argv[i];
    if (s == "--help" || s == "-h") {
      a.help = true;
      continue;
    }
    if (s.rfind("-", 0) != 0 || s == "-") {
      if (!c.positional) throw UsageError(std::string(c.name) + ": unexpected argument '" + s + "'");
      a.positional.push_back(s);
      continue;
    }
    const size_t eq = s.find('=');
    const std::string name = s.rfind("--", 0) == 0 ? s.substr(2, eq == std::string::npos ? std::string::npos : eq - 2) : s;
    const Flag* flag = nullptr;
    for (const Flag& f : c.flags)
      if (name == f.name) flag = &f;
    if (!flag) throw UsageError(std::string(c.name) + ": unknown option '" + s + "' (see vlpeft " + c.name + " --help)");
    std::string value;
    if (!flag->arg) {
      if (eq != std::string::npos) throw UsageError(std::string(c.name) + ": --" + name + " takes no value");
      value = "1";
    } else if (eq != std::string::npos) {
      value = s.substr(eq + 1);
    } else {
      if (i + 1 >= argc) throw UsageError(std::string(c.name) + ": --" + name + " needs a value " + flag->arg);
      value = argv[++i];
    }
    if (name == "set") a.sets.push_back(value);
    else a.opts[name] = value;
  }
  return a;
}

// --set overrides, then --device (a shortcut for --set device=DEV, so it wins).
std::vector<std::string> overrides(const Args& a, std::vector<std::string> sets = {}) {
  sets.insert(sets.end(), a.sets.begin(), a.sets.end());
  if (a.has("device")) sets.push_back("device=" + a.get("device"));
  return sets;
}

TrainConfig config_from(const Args& a) {
  if (a.has("config")) return load_config(a.get("config"), overrides(a));
  return parse_config(nlohmann::json::object(), "defaults", overrides(a));
}

int cmd_train(const Command&, const Args& a) {
  TrainConfig c = config_from(a);
  if (a.has("print-config")) {  // loadable as is: "_keys" is a comment
    nlohmann::json j = config_to_json(c), docs = nlohmann::json::object();
    for (const auto& [k, d] : config_key_docs()) docs[k] = d;
    j["_keys"] = docs;
    return std::printf("%s\n", j.dump(2).c_str()), 0;
  }
  if (a.has("check")) {
    const auto missing = uses_files(c) ? missing_paths(c) : std::vector<std::string>{};
    for (const auto& m : missing) std::printf("missing: %s\n", m.c_str());
    if (missing.empty()) validate_config(c), std::printf("config ok\n");
    return missing.empty() ? 0 : 1;
  }
  auto s = make_session(c);
  int64_t trainable = 0;
  for (auto& [n, p] : s->trainable) trainable += p.numel();
  std::printf("model: %s d=%lld, %lld parameters, %lld trainable (%.2f%%); device %s, autocast %s\n", c.backbone.c_str(),
              (long long)c.d_model, (long long)s->net().num_parameters(), (long long)trainable,
              100.0 * double(trainable) / double(s->net().num_parameters()), to_string(s->device).c_str(),
              s->autocast_bf16 ? "bf16" : "off");
  RunSummary r = train(*s);
  std::printf("done: %lld steps in %.1f s, last loss %.4f\n", (long long)r.steps, r.seconds, r.last_loss);
  for (auto& [k, v] : r.metrics)
    std::printf("  eval %s: %.2f%s\n", k.c_str(), 100 * v, k == "caption.cider_d" ? " (x100)" : "%");
  std::printf("throughput: %.0f tokens/s (encoder + decoder), %.1f samples/s; peak memory %.1f MiB (max RSS)",
              r.tokens_per_s, r.samples_per_s, double(r.peak_rss_bytes) / (1 << 20));
  if (s->device.is_cuda())
    std::printf(", %s %.1f MiB (caching allocator peak)", to_string(s->device).c_str(),
                double(r.peak_device_bytes) / (1 << 20));
  std::printf("\n");
  std::printf("model FLOP/s %.4f TFLOP/s, MFU %.6f%% of %.0f TFLOP/s; formula: %s\n", r.model_tflops, 100 * r.mfu,
              c.peak_tflops, r.mfu_formula.c_str());
  return 0;
}

// The session of a checkpoint: its own config (from its metadata) unless --config names one.
std::unique_ptr<Session> session_with_checkpoint(const Command& c, const Args& a,
                                                 std::vector<std::string> extra_sets = {}) {
  const std::string path = a.required(c, "checkpoint");
  std::vector<std::string> sets = overrides(a, extra_sets);
  if (a.has("split")) sets.push_back("eval_split=" + a.get("split"));
  TrainConfig cfg = a.has("config") ? load_config(a.get("config"), sets) : checkpoint_config(path, sets);
  auto s = make_session(cfg);
  load_training_checkpoint(*s, path);
  return s;
}

int cmd_eval(const Command& c, const Args& a) {
  auto s = session_with_checkpoint(c, a);
  for (auto& [k, v] : evaluate(*s, -1, true))
    std::printf("%s: %.2f%s\n", k.c_str(), 100 * v, k == "caption.cider_d" ? " (x100)" : "%");
  return 0;
}

int cmd_generate(const Command& c, const Args& a) {
  GenerationOptions opt;
  opt.num_beams = a.integer("beams", 1);
  opt.max_new_tokens = a.integer("max-new-tokens", -1);
  if (a.has("image")) {
    for (const char* k : {"n"})
      if (a.has(k)) throw UsageError(std::string("generate: --") + k + " goes without --image");
    // One image: the training data the session would build is not needed.
    auto s = session_with_checkpoint(c, a, {"train_examples=1", "eval_examples=1"});
    VLP_CHECK(!s->files, "generate: synthetic-task checkpoints only; `vlpeft eval` writes the predictions of file-backed tasks");
    ImageAnswer r = answer_about_image(*s, a.get("image"), a.get("question"), a.get("task"), opt);
    if (!r.unknown_words.empty()) {
      std::string w;
      for (const auto& u : r.unknown_words) w += (w.empty() ? "'" : ", '") + u + "'";
      std::fprintf(stderr, "warning: words outside the checkpoint's vocabulary (read as <unk>): %s\n", w.c_str());
    }
    std::printf("[%s] %s\n", r.task.c_str(), r.answer.c_str());
    return 0;
  }
  for (const char* k : {"question", "task"})
    if (a.has(k)) throw UsageError(std::string("generate: --") + k + " needs --image FILE");
  auto s = session_with_checkpoint(c, a);
  VLP_CHECK(!s->files, "generate: synthetic-task checkpoints only; `vlpeft eval` writes the predictions of file-backed tasks");
  const int64_t n = a.integer("n", 5);
  if (opt.max_new_tokens <= 0) opt.max_new_tokens = s->cfg.max_new_tokens;
  for (size_t t = 0; t < s->tasks.size(); ++t) {
    for (int64_t i = 0; i < std::min<int64_t>(n, int64_t(s->eval_data[t].size())); ++i) {
      const VLExample& e = s->eval_data[t][size_t(i)];
      VLBatch b = collate(s->tasks[t], int(t), {&e}, s->n_patches, s->patch_dim);
      const VisualInput vi = batch_visual(b, s->device);
      ForwardContext ctx;
      ctx.task = int(t);
      Tensor seq = host_copy(s->model->generate(moved_to(b.input_ids, s->device), moved_to(b.attention_mask, s->device),
                                                vi, opt, ctx).sequences);
      std::vector<int64_t> ids(seq.data<int64_t>() + 1, seq.data<int64_t>() + seq.numel());
      std::printf("[%s] %s -> %s (reference: %s)\n", s->tasks[t].c_str(), vl_vocab().decode(e.question).c_str(),
                  vl_vocab().decode(ids).c_str(), e.answer_text.c_str());
    }
  }
  return 0;
}

int cmd_params(const Command& c, const Args& a) {
  if (a.positional.empty() && !a.has("config") && a.sets.empty())
    throw UsageError("params: name an HF config file or --config TRAIN.json");
  int rc = 0;
  for (const std::string& path : a.positional) {
    try {
      HfParamCount n = count_hf_parameters(path);
      std::printf("%s: %s (%s) %lld parameters\n", path.c_str(), n.model_type.c_str(), n.counted_as.c_str(),
                  (long long)n.parameters);
    } catch (const Error& e) {
      std::fprintf(stderr, "vlpeft params: %s\n", e.what());
      rc = 1;
    }
  }
  if (a.has("config") || !a.sets.empty()) {
    auto s = make_session(config_from(a));
    std::fputs(format_trainer_params(*s, trainer_params(*s)).c_str(), stdout);
  }
  return rc;
}

int cmd_make_data(const Command& c, const Args& a) {
  data::SyntheticOptions o;
  const std::string out = a.required(c, "out");
  o.seed = uint64_t(a.integer("seed", int64_t(o.seed)));
  o.image_size = int(a.integer("image-size", o.image_size));
  data::SyntheticSummary s = data::make_synthetic_data(out, o);
  std::printf("wrote %zu files under %s: %lld COCO images, %lld captions, %lld VQA questions, %lld GQA questions, "
              "%lld NLVR2 examples\n", s.files.size(), s.root.c_str(), (long long)s.coco_images, (long long)s.captions,
              (long long)s.vqa_questions, (long long)s.gqa_questions, (long long)s.nlvr2_examples);
  return 0;
}

int cmd_extract_features(const Command& c, const Args& a) {
  ExtractFeaturesArgs e;
  e.model_dir = a.required(c, "model");
  e.images = a.required(c, "images");
  e.out_dir = a.required(c, "out");
  e.dataset = a.get("dataset");
  e.image_root = a.get("image-root");
  e.mode = a.get("mode", e.mode);
  e.grid = a.integer("grid", e.grid);
  e.batch = a.integer("batch", e.batch);
  e.shard_size = a.integer("shard-size", e.shard_size);
  e.dtype = a.get("dtype", e.dtype);
  e.transform = a.get("transform", e.transform);
  e.resume = !a.has("no-resume");
  if (!a.has("quiet"))
    e.progress = [](int64_t done, int64_t total) {
      std::fprintf(stderr, "\r%lld / %lld images", (long long)done, (long long)total);
      if (done == total) std::fprintf(stderr, "\n");
    };
  ExtractionReport r = extract_features_command(e);
  std::printf("%lld images in %lld shards under %s: %lld extracted now, %lld shards already there\n",
              (long long)r.images, (long long)r.shards, e.out_dir.c_str(), (long long)r.images_extracted,
              (long long)r.shards_skipped);
  return 0;
}

int cmd_demo(const Command&, const Args& a) {
  DemoOptions o;
  o.pretrain_steps = a.integer("pretrain-steps", o.pretrain_steps);
  o.adapt_steps = a.integer("adapt-steps", o.adapt_steps);
  if (a.has("out")) o.out_dir = a.get("out");
  if (a.has("device")) o.device = a.get("device");
  if (a.has("vision-tower")) {
    o.vision_tower = a.get("vision-tower");
    if (o.vision_tower != "vit" && o.vision_tower != "none")
      throw UsageError("demo: --vision-tower must be vit or none, got '" + o.vision_tower + "'");
    if (o.vision_tower == "none") o.image_size = 32, o.patch = 16;  // the linear-feature demo's images
  }
  if (a.has("only")) {  // method names contain spaces: split on commas only
    std::string cur;
    for (char ch : a.get("only") + ",") {
      if (ch != ',') { cur += ch; continue; }
      if (!cur.empty()) o.only.push_back(cur);
      cur.clear();
    }
  }
  DemoResult r = run_demo(o);
  std::fputs(format_demo_table(r, o).c_str(), stdout);
  return 0;
}

std::string usage() {
  std::string s = "usage: vlpeft [command] [options]   (vlpeft COMMAND --help for a command's options)\ncommands:\n";
  for (const Command& c : commands()) {
    std::string name = std::string("  ") + c.name;
    name.resize(20, ' ');
    s += name + c.summary + "\n";
  }
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  using Handler = int (*)(const Command&, const Args&);
  static const std::map<std::string, Handler> handlers = {
      {"demo", cmd_demo},         {"train", cmd_train},         {"eval", cmd_eval},
      {"generate", cmd_generate}, {"params", cmd_params},       {"make-data", cmd_make_data},
      {"extract-features", cmd_extract_features}};
  const bool has_cmd = argc > 1 && argv[1][0] != '-';
  const std::string name = has_cmd ? argv[1] : "demo";
  try {
    if (!has_cmd && argc > 1 && (std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0))
      return std::fputs(usage().c_str(), stdout), 0;
    const Command& c = command(name);
    const Args a = parse_args(c, argc, argv, has_cmd ? 2 : 1);
    if (a.help) return std::fputs(help_of(c).c_str(), stdout), 0;
    return handlers.at(name)(c, a);
  } catch (const UsageError& e) {
    std::fprintf(stderr, "vlpeft: %s\n%s", e.what(), e.with_usage ? usage().c_str() : "");
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "vlpeft: error: %s\n", e.what());
    return 1;
  }
}
