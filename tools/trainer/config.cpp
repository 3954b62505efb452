// Trainer configuration parsing (see config.h). Each key is listed once in fields(): its JSON kind and
// how to read and write it, so parsing, printing and error messages share one table.
#include "tools/trainer/config.h"

#include <filesystem>
#include <fstream>
#include <functional>

#include "runtime/device_copy.h"
#include "runtime/error.h"
#include "tools/trainer/file_data.h"

namespace vlp::trainer {
namespace {

struct Field {
  const char* key;
  const char* kind;  // "integer", "number", "string", "boolean", "object"
  std::function<void(TrainConfig&, const nlohmann::json&)> set;
  std::function<nlohmann::json(const TrainConfig&)> get;
};

#define VLP_FIELD(name, kind, type) \
  Field{#name, kind, [](TrainConfig& c, const nlohmann::json& v) { c.name = v.get<type>(); }, \
        [](const TrainConfig& c) { return nlohmann::json(c.name); }}

const std::vector<Field>& fields() {
  static const std::vector<Field> f = {
      VLP_FIELD(backbone, "string", std::string), VLP_FIELD(d_model, "integer", int64_t),
      VLP_FIELD(layers, "integer", int64_t), VLP_FIELD(heads, "integer", int64_t),
      VLP_FIELD(d_ff, "integer", int64_t), VLP_FIELD(dropout, "number", double),
      VLP_FIELD(image_size, "integer", int64_t), VLP_FIELD(patch, "integer", int64_t),
      VLP_FIELD(vision_tower, "string", std::string), VLP_FIELD(vision_layers, "integer", int64_t),
      VLP_FIELD(vision_hidden, "integer", int64_t),
      VLP_FIELD(tasks, "string", std::string), VLP_FIELD(train_examples, "integer", int64_t),
      VLP_FIELD(eval_examples, "integer", int64_t), VLP_FIELD(data_seed, "integer", uint64_t),
      VLP_FIELD(batch_size, "integer", int64_t), VLP_FIELD(grad_accum, "integer", int64_t),
      VLP_FIELD(steps, "integer", int64_t), VLP_FIELD(lr, "number", double),
      VLP_FIELD(weight_decay, "number", double), VLP_FIELD(warmup_ratio, "number", double),
      VLP_FIELD(clip_norm, "number", double), VLP_FIELD(adam_eps, "number", double),
      VLP_FIELD(seed, "integer", uint64_t), VLP_FIELD(peft_config, "string", std::string),
      VLP_FIELD(peft_type, "string", std::string), VLP_FIELD(peft_json, "object", nlohmann::json),
      VLP_FIELD(task_prefix, "boolean", bool), VLP_FIELD(freeze_backbone, "boolean", bool), VLP_FIELD(init_from, "string", std::string),
      VLP_FIELD(out_dir, "string", std::string), VLP_FIELD(resume, "boolean", bool),
      VLP_FIELD(eval_every, "integer", int64_t), VLP_FIELD(save_every, "integer", int64_t),
      VLP_FIELD(log_every, "integer", int64_t), VLP_FIELD(max_new_tokens, "integer", int64_t),
      VLP_FIELD(progress, "boolean", bool), VLP_FIELD(threads, "integer", int64_t), VLP_FIELD(peak_tflops, "number", double),
      VLP_FIELD(data_dir, "string", std::string), VLP_FIELD(features_dir, "string", std::string), VLP_FIELD(vqa_train, "string", std::string),
      VLP_FIELD(vqa_val, "string", std::string), VLP_FIELD(vqa_test, "string", std::string),
      VLP_FIELD(gqa_train, "string", std::string), VLP_FIELD(gqa_val, "string", std::string),
      VLP_FIELD(gqa_test, "string", std::string), VLP_FIELD(nlvr2_train, "string", std::string),
      VLP_FIELD(nlvr2_val, "string", std::string), VLP_FIELD(nlvr2_test, "string", std::string),
      VLP_FIELD(caption_train, "string", std::string), VLP_FIELD(caption_val, "string", std::string),
      VLP_FIELD(caption_test, "string", std::string), VLP_FIELD(vqa_official, "string", std::string),
      VLP_FIELD(answer_vocab, "string", std::string), VLP_FIELD(coco_images, "string", std::string),
      VLP_FIELD(gqa_images, "string", std::string), VLP_FIELD(nlvr2_images, "string", std::string),
      VLP_FIELD(tokenizer, "string", std::string), VLP_FIELD(model_dir, "string", std::string),
      VLP_FIELD(vocab_extra_rows, "integer", int64_t), VLP_FIELD(peft_recipe, "string", std::string),
      VLP_FIELD(multitask_batch_base, "integer", int64_t), VLP_FIELD(epochs, "integer", int64_t),
      VLP_FIELD(max_text_length, "integer", int64_t), VLP_FIELD(max_target_length, "integer", int64_t),
      VLP_FIELD(gen_max_length, "integer", int64_t), VLP_FIELD(caption_beams, "integer", int64_t),
      VLP_FIELD(eval_split, "string", std::string), VLP_FIELD(eval_limit, "integer", int64_t),
      VLP_FIELD(workers, "integer", int64_t), VLP_FIELD(model_kind, "string", std::string),
      VLP_FIELD(warmup_steps, "integer", int64_t), VLP_FIELD(gqa_prefix_compat, "boolean", bool),
      VLP_FIELD(device, "string", std::string), VLP_FIELD(autocast, "string", std::string),
  };
  return f;
}
#undef VLP_FIELD

bool kind_matches(const char* kind, const nlohmann::json& v) {
  const std::string k = kind;
  if (k == "integer") return v.is_number_integer();
  if (k == "number") return v.is_number();
  if (k == "string") return v.is_string();
  if (k == "boolean") return v.is_boolean();
  return v.is_object();
}

void apply(TrainConfig& c, const std::string& key, const nlohmann::json& v, const std::string& source) {
  if (!key.empty() && key[0] == '_') return;  // "_comment" and the like: notes for the reader
  for (const Field& f : fields()) {
    if (key != f.key) continue;
    VLP_CHECK(kind_matches(f.kind, v), source, ": key '", key, "' must be ", f.kind == std::string("integer") ? "an " : "a ",
              f.kind, ", got ", v.dump());
    if (std::string(f.kind) == "integer" && key.find("seed") != std::string::npos)
      VLP_CHECK(v.get<int64_t>() >= 0 || v.is_number_unsigned(), source, ": key '", key, "' must be >= 0");
    f.set(c, v);
    return;
  }
  std::string known;
  for (const Field& f : fields()) known += std::string(known.empty() ? "" : ", ") + f.key;
  VLP_FAIL(source, ": unknown key '", key, "' (known keys: ", known, ")");
}

}  // namespace

const std::vector<std::pair<std::string, std::string>>& config_key_docs() {
  static const std::vector<std::pair<std::string, std::string>> d = {
      {"backbone", "t5 | bart | gpt2 (gpt2 with model_kind gpt2_prefix)"},
      {"model_kind", "seq2seq (VL-T5/VL-BART, any task) | gpt2_prefix (caption) | encoder_classifier (vqa)"},
      {"model_dir", "transformers checkpoint directory (config.json + model.safetensors); empty: a tiny model "
                    "of d_model, layers, heads, d_ff"},
      {"vocab_extra_rows", "rows appended to the embedding (VL-BART: 200), N(0, 0.02)"},
      {"d_model, layers, heads, d_ff, dropout", "tiny model sizes (ignored with model_dir)"},
      {"image_size, patch", "image files: resized to image_size, cut into patch x patch linear features; with "
                            "vision_tower vit: the tower's image size and patch size"},
      {"vision_tower", "synthetic tasks: none (linear patch features feed the visual embedding) | vit (a ViT "
                       "encoder, trained with the model and frozen under PEFT, reads the pixels; its patch "
                       "tokens, CLS dropped, feed the visual embedding)"},
      {"vision_layers, vision_hidden", "the ViT tower's layers and width (0 = d_model); heads from heads, MLP "
                                       "4 x vision_hidden"},
      {"tasks", "comma list: synthetic in-memory tasks (count, color, shape, object_color, what_color, "
                "color_shape, count_color) or the file-backed vqa, gqa, nlvr2, caption"},
      {"train_examples, eval_examples", "synthetic tasks only: examples per task"},
      {"data_seed", "synthetic tasks: their seed; file tasks: the loader's shuffling / sampling seed when non-zero "
                    "(else seed)"},
      {"data_dir", "root laid out as `vlpeft make-data` writes it; defaults every file key below"},
      {"features_dir", "referenced as {features_dir} in other keys"},
      {"{vqa,gqa,nlvr2,caption}_{train,val,test}",
       "comma lists of files. vqa: VL-T5 karpathy_*.json or official v2_OpenEnded_*_questions.json (annotations "
       "found beside them); gqa: VL-T5 lists or questions1.2/*_questions.json; nlvr2: official JSON lines or "
       "VL-T5 lists; caption: dataset_coco.json@split+split or a COCO-format captions json"},
      {"vqa_official", "official questions files whose annotations give Karpathy splits the ten human answers "
                       "(official VQA accuracy)"},
      {"answer_vocab", "trainval_ans2label.json: VQA labels outside it are dropped; the encoder_classifier's answers"},
      {"coco_images, gqa_images, nlvr2_images", "directory of image files, or a feature directory (index.json "
                                                "+ shards from vlpeft extract-features)"},
      {"tokenizer", "words (default without model_dir: a word vocabulary of the training texts), a spiece.model, "
                    "tokenizer.json, vocab.json,merges.txt, or a directory holding one (default: model_dir)"},
      {"peft_recipe", "VL-Adapter recipe: full, adapter_single, adapter_multiple, adapter_half_shared, hyperformer, "
                      "compacter_single, compacter_multiple, lora_single, lora_multiple, prompt_single, prompt_multiple"},
      {"peft_type, peft_json", "a PEFT method by type with its config fields"},
      {"peft_config", "an adapter_config.json"},
      {"freeze_backbone", "without PEFT: train the visual projection only"},
      {"task_prefix, gqa_prefix_compat", "\"vqa: \" style prefixes; \"gpa: \" as the original code"},
      {"batch_size, multitask_batch_base", "batch size per task, or per-task sizes from B0 (BART 500, T5 300)"},
      {"steps, epochs, grad_accum", "optimizer steps (epochs > 0: computed from the epoch size)"},
      {"lr, weight_decay, warmup_ratio, warmup_steps, clip_norm, adam_eps, seed", "AdamW, linear schedule"},
      {"max_text_length, max_target_length", "input / target truncation in tokens"},
      {"gen_max_length, caption_beams, max_new_tokens", "generation: VQA/GQA greedy, captions beam search "
                                                         "(max_new_tokens: synthetic tasks)"},
      {"eval_split, eval_limit, eval_every", "split evaluated (train | val | test), examples cap, period in steps"},
      {"init_from, out_dir, resume, save_every, log_every", "checkpoints and logs"},
      {"device", "cpu (default) | cuda | cuda:N: where the model trains and evaluates (built on the CPU, then "
                 "moved; checkpoints hold CPU copies)"},
      {"autocast", "auto (default: bf16 on CUDA, off on the CPU) | off | bf16: matmuls and attention in bf16, "
                   "F32 weights, gradients and optimizer state"},
      {"workers, threads, progress, peak_tflops", "data-loader threads, OpenMP threads, progress line, MFU peak"},
      {"_anything", "keys starting with _ are comments and ignored"},
  };
  return d;
}

std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  std::string cur;
  for (char ch : s + ",") {
    if (ch == ',') {
      if (!cur.empty()) out.push_back(cur);
      cur.clear();
    } else if (ch != ' ') {
      cur += ch;
    }
  }
  return out;
}

TrainConfig parse_config(const nlohmann::json& j, const std::string& source, const std::vector<std::string>& overrides) {
  VLP_CHECK(j.is_object(), source, ": a config must be a JSON object");
  TrainConfig c;
  for (const auto& [key, v] : j.items()) apply(c, key, v, source);
  for (const std::string& o : overrides) {
    const size_t eq = o.find('=');
    VLP_CHECK(eq != std::string::npos && eq > 0, "--set ", o, ": expected key=value");
    const std::string key = o.substr(0, eq), text = o.substr(eq + 1);
    nlohmann::json v = nlohmann::json::parse(text, nullptr, false);
    if (v.is_discarded()) v = text;
    apply(c, key, v, "--set " + o);
  }
  // "{data_dir}", "{features_dir}" and "{model_dir}" in string values stand for those keys' values (set
  // ones only: an unset one stays, and missing_paths names it).
  nlohmann::json j2 = config_to_json(c);
  bool changed = false;
  for (auto& [key, v] : j2.items()) {
    if (!v.is_string()) continue;
    std::string text = v.get<std::string>();
    for (const char* ref : {"data_dir", "features_dir", "model_dir"}) {
      const std::string mark = std::string("{") + ref + "}", value = j2[ref].get<std::string>();
      if (key == ref || value.empty() || value[0] == '<') continue;  // unset or a placeholder
      for (size_t at = text.find(mark); at != std::string::npos; at = text.find(mark, at + value.size())) {
        text.replace(at, mark.size(), value);
        changed = true;
      }
    }
    v = text;
  }
  if (changed)
    for (auto& [key, v] : j2.items()) apply(c, key, v, source);
  return c;
}

TrainConfig load_config(const std::string& path, const std::vector<std::string>& overrides) {
  std::ifstream f(path);
  VLP_CHECK(f.good(), "config file '", path, "' cannot be read");
  nlohmann::json j = nlohmann::json::parse(f, nullptr, false);
  VLP_CHECK(!j.is_discarded(), "config file '", path, "' is not valid JSON");
  return parse_config(j, path, overrides);
}

nlohmann::json config_to_json(const TrainConfig& c) {
  nlohmann::json j = nlohmann::json::object();
  for (const Field& f : fields()) j[f.key] = f.get(c);
  return j;
}

Device config_device(const TrainConfig& c) {
  Device d;
  try {
    d = parse_device(c.device);
  } catch (const Error&) {
    VLP_FAIL("config: key 'device' must be cpu, cuda or cuda:N, got '", c.device, "'");
  }
  return d;
}

bool autocast_bf16(const TrainConfig& c) {
  return c.autocast == "bf16" || (c.autocast == "auto" && config_device(c).is_cuda());
}

void validate_config(const TrainConfig& c) {
  const Device device = config_device(c);
  VLP_CHECK(c.autocast == "auto" || c.autocast == "off" || c.autocast == "bf16",
            "config: key 'autocast' must be auto, off or bf16, got '", c.autocast, "'");
  if (device.is_cuda()) {
    VLP_CHECK(cuda_available(), "config: key 'device' is '", c.device, "' but no CUDA device can be used: ",
              cuda_unavailable_reason(), " (set device cpu)");
    VLP_CHECK(device.index < cuda_device_count(), "config: key 'device' is '", c.device, "' but there are only ",
              cuda_device_count(), " CUDA device(s)");
  }
  VLP_CHECK(c.model_kind == "seq2seq" || c.model_kind == "gpt2_prefix" || c.model_kind == "encoder_classifier",
            "config: key 'model_kind' must be seq2seq, gpt2_prefix or encoder_classifier, got '", c.model_kind, "'");
  if (c.model_kind == "gpt2_prefix") {
    VLP_CHECK(c.backbone == "gpt2", "config: model_kind gpt2_prefix needs backbone gpt2, got '", c.backbone, "'");
    VLP_CHECK(c.tasks == "caption", "config: model_kind gpt2_prefix trains the caption task only, got tasks '", c.tasks, "'");
  } else {
    VLP_CHECK(c.backbone == "t5" || c.backbone == "bart", "config: backbone must be t5 or bart, got '", c.backbone, "'");
  }
  if (c.model_kind == "encoder_classifier") {
    VLP_CHECK(c.tasks == "vqa", "config: model_kind encoder_classifier trains the vqa task only, got tasks '", c.tasks, "'");
    VLP_CHECK(!c.answer_vocab.empty() || !c.data_dir.empty(), "config: model_kind encoder_classifier needs key 'answer_vocab'");
  }
  VLP_CHECK(c.warmup_steps >= 0, "config: key 'warmup_steps' must be >= 0");
  for (auto [k, v] : {std::pair{"d_model", c.d_model}, {"layers", c.layers}, {"heads", c.heads}, {"d_ff", c.d_ff},
                      {"batch_size", c.batch_size}, {"grad_accum", c.grad_accum},
                      {"train_examples", c.train_examples}, {"eval_examples", c.eval_examples},
                      {"patch", c.patch}, {"image_size", c.image_size}})
    VLP_CHECK(v > 0, "config: key '", k, "' must be positive, got ", v);
  VLP_CHECK(c.steps >= 0, "config: key 'steps' must be >= 0 (0 = evaluate only), got ", c.steps);
  VLP_CHECK(c.d_model % c.heads == 0, "config: d_model ", c.d_model, " must be a multiple of heads ", c.heads);
  VLP_CHECK(c.image_size % c.patch == 0, "config: image_size must be a multiple of patch");
  VLP_CHECK(c.vision_tower == "none" || c.vision_tower == "vit", "config: key 'vision_tower' must be none or vit, got '",
            c.vision_tower, "'");
  VLP_CHECK(c.vision_layers > 0, "config: key 'vision_layers' must be positive, got ", c.vision_layers);
  VLP_CHECK(c.vision_hidden >= 0, "config: key 'vision_hidden' must be >= 0 (0 = d_model), got ", c.vision_hidden);
  if (c.vision_tower == "vit") {
    const int64_t w = c.vision_hidden > 0 ? c.vision_hidden : c.d_model;
    VLP_CHECK(w % c.heads == 0, "config: the vision tower's width ", w, " (vision_hidden, 0 = d_model) must be a ",
              "multiple of heads ", c.heads);
    VLP_CHECK(!uses_files(c) && c.model_kind == "seq2seq", "config: key 'vision_tower' vit needs the synthetic ",
              "tasks and model_kind seq2seq (file-backed tasks read patch features or extracted features), got tasks '",
              c.tasks, "'");
  }
  VLP_CHECK(c.lr > 0, "config: key 'lr' must be positive");
  VLP_CHECK(c.warmup_ratio >= 0 && c.warmup_ratio <= 1, "config: key 'warmup_ratio' must be in [0, 1]");
  for (auto [k, p] : {std::pair{"peft_config", c.peft_config}, {"init_from", c.init_from}})
    VLP_CHECK(p.empty() || std::filesystem::exists(p), "config: key '", k, "' names a missing path '", p, "'");
  VLP_CHECK(int(!c.peft_config.empty()) + int(!c.peft_type.empty()) + int(!c.peft_recipe.empty()) <= 1,
            "config: set one of peft_config, peft_type and peft_recipe");
  VLP_CHECK(!split_list(c.tasks).empty(), "config: key 'tasks' names no task");
  int file_tasks = 0;
  for (const std::string& t : split_list(c.tasks)) file_tasks += is_file_task(t);
  VLP_CHECK(file_tasks == 0 || file_tasks == int64_t(split_list(c.tasks).size()), "config: key 'tasks' mixes the ",
            "file-backed tasks (vqa, gqa, nlvr2, caption) with synthetic ones: '", c.tasks, "'");
  for (auto [k, v] : {std::pair{"max_text_length", c.max_text_length}, {"max_target_length", c.max_target_length},
                      {"gen_max_length", c.gen_max_length}, {"caption_beams", c.caption_beams}})
    VLP_CHECK(v > 0, "config: key '", k, "' must be positive, got ", v);
  for (auto [k, v] : {std::pair{"vocab_extra_rows", c.vocab_extra_rows}, {"multitask_batch_base", c.multitask_batch_base},
                      {"epochs", c.epochs}, {"eval_limit", c.eval_limit}, {"workers", c.workers}})
    VLP_CHECK(v >= 0, "config: key '", k, "' must be >= 0, got ", v);
  VLP_CHECK(c.eval_split == "train" || c.eval_split == "val" || c.eval_split == "test",
            "config: key 'eval_split' must be train, val or test, got '", c.eval_split, "'");
  VLP_CHECK(file_tasks > 0 || c.model_dir.empty(), "config: key 'model_dir' needs the file-backed tasks");
  if (file_tasks > 0) {
    const std::vector<std::string> missing = missing_paths(c);
    std::string all;
    for (const std::string& m : missing) all += "\n  " + m;
    VLP_CHECK(missing.empty(), "config: ", missing.size(), " missing path(s):", all);
  }
}

bool uses_files(const TrainConfig& c) {
  const auto t = split_list(c.tasks);
  return !t.empty() && is_file_task(t[0]);
}

}  // namespace vlp::trainer
