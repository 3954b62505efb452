// vlpeft: the command-line tool. With no arguments it runs the embedded demo (tools/trainer/demo.h).
//   vlpeft [demo]            pretrain a tiny VL model, adapt it with each PEFT method, print a table
//   vlpeft train             train from a config (JSON) with --set key=value overrides
//   vlpeft eval              evaluate a training checkpoint
//   vlpeft generate          print questions, answers and generated predictions
//   vlpeft params            parameter counts of a transformers config (configs/hf/*.json) or a train config
//   vlpeft make-data         write the synthetic VL benchmark in the official file formats (data/synthetic.h)
//   vlpeft extract-features  (not yet: see --help)
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "data/synthetic.h"
#include "models/config.h"
#include "runtime/error.h"
#include "tools/trainer/demo.h"
#include "tools/trainer/trainer.h"

using namespace vlp;
using namespace vlp::trainer;

namespace {

struct Args {
  std::vector<std::string> positional, sets;
  std::map<std::string, std::string> opts;
  bool help = false;
};

Args parse_args(int argc, char** argv, int first) {
  Args a;
  for (int i = first; i < argc; ++i) {
    std::string s = argv[i];
    if (s == "--help" || s == "-h") {
      a.help = true;
    } else if (s == "--set") {
      VLP_CHECK(i + 1 < argc, "--set needs key=value");
      a.sets.push_back(argv[++i]);
    } else if (s.rfind("--", 0) == 0) {
      const size_t eq = s.find('=');
      if (eq != std::string::npos) {
        a.opts[s.substr(2, eq - 2)] = s.substr(eq + 1);
      } else {
        VLP_CHECK(i + 1 < argc, "option ", s, " needs a value");
        a.opts[s.substr(2)] = argv[++i];
      }
    } else {
      a.positional.push_back(s);
    }
  }
  return a;
}

TrainConfig config_from(const Args& a) {
  auto it = a.opts.find("config");
  if (it != a.opts.end()) return load_config(it->second, a.sets);
  return parse_config(nlohmann::json::object(), "defaults", a.sets);
}

const char* kTrainHelp =
    "usage: vlpeft train [--config FILE] [--set key=value]...\n"
    "Trains a VL model (VL-T5 / VL-BART, GPT-2 prefix, encoder classifier) on synthetic tasks or on the\n"
    "VQAv2 / GQA / NLVR2 / COCO files (README: Training on real data). Keys (with defaults) are printed by\n"
    "`vlpeft train --print-config 1`; `--check 1` only reports missing paths. Checkpoints: OUT/last.safetensors, OUT/last.prev.safetensors,\n"
    "OUT/best.safetensors; log OUT/metrics.jsonl, plot OUT/metrics.svg. --set resume=true continues from OUT.\n";

int cmd_train(const Args& a) {
  if (a.help) {
    std::fputs(kTrainHelp, stdout);
    for (const auto& [k, d] : config_key_docs()) std::printf("  %s: %s\n", k.c_str(), d.c_str());
    return 0;
  }
  TrainConfig c = config_from(a);
  if (a.opts.count("print-config")) {  // the config (loadable as is: "_keys" is a comment) with the key docs
    nlohmann::json j = config_to_json(c), docs = nlohmann::json::object();
    for (const auto& [k, d] : config_key_docs()) docs[k] = d;
    j["_keys"] = docs;
    return std::printf("%s\n", j.dump(2).c_str()), 0;
  }
  if (a.opts.count("check")) {  // validate only: every unfilled or missing path, by key
    const auto missing = uses_files(c) ? missing_paths(c) : std::vector<std::string>{};
    for (const auto& m : missing) std::printf("missing: %s\n", m.c_str());
    if (missing.empty()) validate_config(c), std::printf("config ok\n");
    return missing.empty() ? 0 : 1;
  }
  auto s = make_session(c);
  int64_t trainable = 0;
  for (auto& [n, p] : s->trainable) trainable += p.numel();
  std::printf("model: %s d=%lld, %lld parameters, %lld trainable (%.2f%%)\n", c.backbone.c_str(), (long long)c.d_model,
              (long long)s->net().num_parameters(), (long long)trainable,
              100.0 * double(trainable) / double(s->net().num_parameters()));
  RunSummary r = train(*s);
  std::printf("done: %lld steps in %.1f s, last loss %.4f\n", (long long)r.steps, r.seconds, r.last_loss);
  for (auto& [k, v] : r.metrics)
    std::printf("  eval %s: %.2f%s\n", k.c_str(), 100 * v, k == "caption.cider_d" ? " (x100)" : "%");
  std::printf("throughput: %.0f tokens/s (encoder + decoder), %.1f samples/s; peak memory %.1f MiB (max RSS)\n",
              r.tokens_per_s, r.samples_per_s, double(r.peak_rss_bytes) / (1 << 20));
  std::printf("model FLOP/s %.4f TFLOP/s, MFU %.6f%% of %.0f TFLOP/s; formula: %s\n", r.model_tflops, 100 * r.mfu,
              c.peak_tflops, r.mfu_formula.c_str());
  return 0;
}

std::unique_ptr<Session> session_with_checkpoint(const Args& a) {
  auto it = a.opts.find("checkpoint");
  VLP_CHECK(it != a.opts.end(), "--checkpoint PATH is required (a training checkpoint, e.g. OUT/last.safetensors)");
  // Without --config: the config the checkpoint was trained with (metadata), --set overrides applied.
  std::vector<std::string> sets = a.sets;
  if (a.opts.count("split")) sets.push_back("eval_split=" + a.opts.at("split"));
  TrainConfig c = a.opts.count("config") ? load_config(a.opts.at("config"), sets) : config_of_checkpoint(it->second, sets);
  auto s = make_session(c);
  load_training_checkpoint(*s, it->second);
  return s;
}

int cmd_eval(const Args& a) {
  if (a.help)
    return std::fputs("usage: vlpeft eval --checkpoint PATH [--split train|val|test] [--config FILE] [--set key=value]...\n"
                      "Scores the checkpoint on a split with each task's metric (VQA accuracy, GQA / NLVR2 accuracy,\n"
                      "CIDEr-D, BLEU-4, ROUGE-L; synthetic tasks: exact match) and writes the predictions under\n"
                      "OUT/predictions. The config defaults to the one stored in the checkpoint.\n", stdout), 0;
  auto s = session_with_checkpoint(a);
  for (auto& [k, v] : evaluate(*s, -1, true))
    std::printf("%s: %.2f%s\n", k.c_str(), 100 * v, k == "caption.cider_d" ? " (x100)" : "%");
  return 0;
}

int cmd_generate(const Args& a) {
  if (a.help)
    return std::fputs("usage: vlpeft generate --checkpoint PATH [--config FILE] [--n N] [--beams K] [--set key=value]...\n"
                      "Prints N eval questions per task with the reference answer and the generated one.\n", stdout), 0;
  auto s = session_with_checkpoint(a);
  VLP_CHECK(!s->files, "generate: synthetic tasks only; for the file-backed tasks `vlpeft eval` writes every prediction "
            "under OUT/predictions");
  const int64_t n = a.opts.count("n") ? std::stoll(a.opts.at("n")) : 5;
  GenerationOptions opt;
  opt.max_new_tokens = s->cfg.max_new_tokens;
  if (a.opts.count("beams")) opt.num_beams = std::stoll(a.opts.at("beams"));
  for (size_t t = 0; t < s->tasks.size(); ++t) {
    for (int64_t i = 0; i < std::min<int64_t>(n, int64_t(s->eval_data[t].size())); ++i) {
      const VLExample& e = s->eval_data[t][size_t(i)];
      VLBatch b = collate(s->tasks[t], int(t), {&e}, s->n_patches, s->patch_dim);
      VisualInput vi;
      vi.feats = b.feats;
      ForwardContext ctx;
      ctx.task = int(t);
      Tensor seq = contiguous(s->model->generate(b.input_ids, b.attention_mask, vi, opt, ctx).sequences);
      std::vector<int64_t> ids(seq.data<int64_t>() + 1, seq.data<int64_t>() + seq.numel());
      std::printf("[%s] %s -> %s (reference: %s)\n", s->tasks[t].c_str(), vl_vocab().decode(e.question).c_str(),
                  vl_vocab().decode(ids).c_str(), e.answer_text.c_str());
    }
  }
  return 0;
}

int cmd_params(const Args& a) {
  if (a.help || (a.positional.empty() && !a.opts.count("config")))
    return std::fputs("usage: vlpeft params HF_CONFIG.json...   (gpt2 / t5 / bart transformers configs, e.g. configs/hf/*.json)\n"
                      "       vlpeft params --config TRAIN.json [--set key=value]...  (the trainer's model, with PEFT)\n"
                      "Counts as transformers' model.num_parameters() (tied weights once, buffers excluded).\n",
                      stdout), a.help ? 0 : 2;
  for (const std::string& path : a.positional) {
    const std::string type = read_model_type(path);
    int64_t n = -1;
    if (type == "gpt2") n = num_parameters(read_gpt2_config(path));
    else if (type == "t5") n = num_parameters(read_t5_config(path));
    else if (type == "bart") n = num_parameters(read_bart_config(path));
    if (n < 0) std::printf("%s: model_type '%s' not counted (gpt2, t5, bart)\n", path.c_str(), type.c_str());
    else std::printf("%s: %s %lld parameters\n", path.c_str(), type.c_str(), (long long)n);
  }
  if (a.opts.count("config") || !a.sets.empty()) {
    auto s = make_session(config_from(a));
    int64_t trainable = 0;
    for (auto& [n, p] : s->trainable) trainable += p.numel();
    std::printf("trainer model: %lld parameters, %lld trainable (%.3f%%)\n", (long long)s->net().num_parameters(),
                (long long)trainable, 100.0 * double(trainable) / double(s->net().num_parameters()));
  }
  return 0;
}

int cmd_make_data(const Args& a) {
  if (a.help || !a.opts.count("out"))
    return std::fputs("usage: vlpeft make-data --out DIR [--seed N] [--image-size PX]\n"
                      "Writes the synthetic VL benchmark (COCO captions, VQAv2, GQA, NLVR2 in their official\n"
                      "file formats) under DIR; see data/synthetic.h.\n", stdout), a.help ? 0 : 2;
  data::SyntheticOptions o;
  if (a.opts.count("seed")) o.seed = std::stoull(a.opts.at("seed"));
  if (a.opts.count("image-size")) o.image_size = std::stoi(a.opts.at("image-size"));
  data::SyntheticSummary s = data::make_synthetic_data(a.opts.at("out"), o);
  std::printf("wrote %zu files under %s: %lld COCO images, %lld captions, %lld VQA questions, %lld GQA questions, "
              "%lld NLVR2 examples\n", s.files.size(), s.root.c_str(), (long long)s.coco_images, (long long)s.captions,
              (long long)s.vqa_questions, (long long)s.gqa_questions, (long long)s.nlvr2_examples);
  return 0;
}

int cmd_extract_features(const Args& a) {
  std::fputs("usage: vlpeft extract-features (not implemented yet in the CLI)\n"
             "The library side exists (models/features.h: extract_features with a frozen ViT / CLIP tower);\n"
             "the trainer's demo uses linear patch features computed on the fly instead.\n", stdout);
  return a.help ? 0 : 2;
}

int cmd_demo(const Args& a) {
  if (a.help)
    return std::fputs("usage: vlpeft [demo] [--pretrain-steps N] [--adapt-steps N] [--out DIR] [--only METHOD,...]\n"
                      "Pretrains a tiny VL encoder-decoder on synthetic tasks, adapts it to held-out tasks with full\n"
                      "fine-tuning and each PEFT method, and prints a table.\n", stdout), 0;
  DemoOptions o;
  if (a.opts.count("pretrain-steps")) o.pretrain_steps = std::stoll(a.opts.at("pretrain-steps"));
  if (a.opts.count("adapt-steps")) o.adapt_steps = std::stoll(a.opts.at("adapt-steps"));
  if (a.opts.count("out")) o.out_dir = a.opts.at("out");
  if (a.opts.count("only")) {  // method names contain spaces: split on commas only
    std::string cur;
    for (char ch : a.opts.at("only") + ",") {
      if (ch != ',') { cur += ch; continue; }
      if (!cur.empty()) o.only.push_back(cur);
      cur.clear();
    }
  }
  DemoResult r = run_demo(o);
  std::fputs(format_demo_table(r, o).c_str(), stdout);
  return 0;
}

const char* kUsage =
    "usage: vlpeft [command] [--help]\n"
    "commands: demo (default), train, eval, generate, params, make-data, extract-features\n";

}  // namespace

int main(int argc, char** argv) {
  try {
    const std::string cmd = argc > 1 ? argv[1] : "demo";
    const bool has_cmd = argc > 1 && argv[1][0] != '-';
    const Args a = parse_args(argc, argv, has_cmd ? 2 : 1);
    if (!has_cmd && a.help) return std::fputs(kUsage, stdout), 0;
    const std::string c = has_cmd ? cmd : "demo";
    if (c == "demo") return cmd_demo(a);
    if (c == "train") return cmd_train(a);
    if (c == "eval") return cmd_eval(a);
    if (c == "generate") return cmd_generate(a);
    if (c == "params") return cmd_params(a);
    if (c == "make-data") return cmd_make_data(a);
    if (c == "extract-features") return cmd_extract_features(a);
    std::fprintf(stderr, "vlpeft: unknown command '%s'\n%s", c.c_str(), kUsage);
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "vlpeft: error: %s\n", e.what());
    return 1;
  }
}
