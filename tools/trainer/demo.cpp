// The embedded demo (see demo.h).
#include "tools/trainer/demo.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <sstream>

#include "models/peft/peft.h"
#include "runtime/error.h"
#include "tools/trainer/trainer.h"

namespace vlp::trainer {

const std::vector<DemoMethod>& demo_methods() {
  using J = nlohmann::json;
  static const std::vector<DemoMethod> m = {
      {"frozen base (zero-shot)", "-", J::object(), 0},
      {"frozen base + visual proj", "visual", J::object(), 3e-3},
      {"full fine-tuning", "", J::object(), 1e-3},
      {"LoRA", "LORA", J{{"r", 8}, {"lora_alpha", 16}, {"target_modules", {"q", "v"}}}, 3e-3},
      {"single adapter", "VLPEFT_ADAPTER", J{{"reduction_factor", 4}}, 3e-3},
      {"Compacter", "VLPEFT_COMPACTER", J{{"reduction_factor", 4}}, 3e-3},
      // Encoder soft prompts (the answers' colour words come from pretraining's object_color task: a frozen
      // decoder that never emitted them could not learn them from prompts), and prefixes in the encoder and
      // the decoder's self- and cross-attention.
      {"prompt tuning", "PROMPT_TUNING", J{{"num_virtual_tokens", 8}}, 3e-2},
      {"prefix tuning", "VLPEFT_PREFIX_TUNING", J{{"num_virtual_tokens", 8}}, 1e-2},
      {"routed LoRA", "VLPEFT_ROUTED_LORA", J{{"r", 8}, {"lora_alpha", 16}, {"target_modules", {"q", "v"}}, {"visual_pool", "mean"}}, 3e-3},
  };
  return m;
}

namespace {

TrainConfig base_config(const DemoOptions& o) {
  TrainConfig c;
  c.d_model = o.d_model;
  c.layers = o.layers;
  c.heads = 4;
  c.d_ff = 2 * o.d_model;
  c.train_examples = o.train_examples;
  c.eval_examples = o.eval_examples;
  c.batch_size = o.batch_size;
  c.vision_tower = o.vision_tower;
  c.vision_layers = o.vision_layers;
  c.image_size = o.image_size;
  c.patch = o.patch;
  c.progress = false;
  c.threads = o.threads;
  c.log_every = 10;
  c.device = o.device;
  return c;
}

}  // namespace

DemoResult run_demo(const DemoOptions& o) {
  namespace fs = std::filesystem;
  DemoResult res;
  // 1. Pretrain on the pretraining tasks (full training of the whole tiny model).
  TrainConfig pre = base_config(o);
  validate_config(pre);  // e.g. device cuda without a GPU: an error before any work
  fs::create_directories(o.out_dir);
  pre.tasks = o.pretrain_tasks;
  pre.steps = o.pretrain_steps;
  pre.lr = 2e-3;
  pre.eval_every = o.pretrain_steps;
  pre.save_every = 0;
  pre.out_dir = o.out_dir + "/pretrain";
  fs::remove_all(pre.out_dir);
  if (o.progress) std::fprintf(stderr, "pretraining on %s (%lld steps)\n", pre.tasks.c_str(), (long long)pre.steps);
  {
    auto s = make_session(pre);
    RunSummary sum = train(*s);
    res.pretrain_scores = sum.metrics;
  }
  const std::string base_ckpt = pre.out_dir + "/last.safetensors";
  // 2. Adapt to the held-out tasks with each method.
  for (const DemoMethod& m : demo_methods()) {
    if (!o.only.empty() && std::find(o.only.begin(), o.only.end(), m.name) == o.only.end()) continue;
    DemoRow row;
    row.method = m.name;
    const auto t0 = std::chrono::steady_clock::now();
    try {
      TrainConfig c = base_config(o);
      c.tasks = o.adapt_tasks;
      c.init_from = base_ckpt;
      c.steps = m.peft_type == "-" ? 0 : o.adapt_steps;
      c.lr = m.lr > 0 ? m.lr : 1e-3;
      c.eval_every = 0;
      c.save_every = 0;
      c.out_dir = o.out_dir + "/adapt_" + std::to_string(res.rows.size());
      fs::remove_all(c.out_dir);
      if (m.peft_type == "visual") {
        c.freeze_backbone = true;  // everything frozen but the visual projection
      } else if (m.peft_type != "-" && !m.peft_type.empty()) {
        peft::find_method(m.peft_type);  // unavailable methods fail here, before any work
        c.peft_type = m.peft_type;
        c.peft_json = m.fields;
      }
      if (o.progress) std::fprintf(stderr, "adapting: %s\n", m.name.c_str());
      auto s = make_session(c);
      int64_t trainable = 0;
      for (auto& [n, p] : s->trainable) trainable += p.numel();
      row.trainable_pct = m.peft_type == "-" ? 0.0 : 100.0 * double(trainable) / double(s->model->num_parameters());
      if (c.steps > 0) train(*s);
      row.scores = evaluate(*s);
      row.peak_mb = double(peak_rss_bytes()) / (1 << 20);
      row.peak_device_mb = double(peak_device_bytes(*s)) / (1 << 20);
    } catch (const Error& e) {
      row.error = e.what();
      const size_t cut = row.error.find('\n');
      if (cut != std::string::npos) row.error.resize(cut);
    }
    row.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    res.rows.push_back(row);
  }
  return res;
}

std::string format_demo_table(const DemoResult& r, const DemoOptions& o) {
  std::ostringstream out;
  char buf[256];
  out << "Base model pretrained on {" << o.pretrain_tasks << "}: ";
  for (auto& [k, v] : r.pretrain_scores) {
    std::snprintf(buf, sizeof buf, "%s %.1f%%  ", k.c_str(), 100 * v);
    out << buf;
  }
  auto chances = [](const std::string& tasks) {
    std::string s = "(chance:";
    for (const std::string& t : split_list(tasks)) s += " " + t + " " + std::to_string(int(std::lround(100 * task_chance(t)))) + "%";
    return s + ")";
  };
  out << chances(o.pretrain_tasks) << "\n";
  out << "Adapting to held-out {" << o.adapt_tasks << "} " << chances(o.adapt_tasks) << ", exact-match accuracy";
  const Device device = parse_device(o.device);
  out << ", device " << to_string(device) << (device.is_cuda() ? " (autocast bf16)" : "") << ":\n";
  const auto tasks = split_list(o.adapt_tasks);
  std::snprintf(buf, sizeof buf, "%-27s %11s", "method", "trainable%");
  out << buf;
  for (auto& t : tasks) {
    std::snprintf(buf, sizeof buf, " %11s", t.c_str());
    out << buf;
  }
  out << "   peak MB" << (device.is_cuda() ? "    GPU MB" : "") << "   time s\n";
  for (const DemoRow& row : r.rows) {
    std::snprintf(buf, sizeof buf, "%-27s", row.method.c_str());
    out << buf;
    if (!row.error.empty()) {
      out << " not run: " << row.error.substr(0, 90) << "\n";
      continue;
    }
    std::snprintf(buf, sizeof buf, " %10.2f%%", row.trainable_pct);
    out << buf;
    for (auto& t : tasks) {
      auto it = row.scores.find(t);
      std::snprintf(buf, sizeof buf, " %10.1f%%", it == row.scores.end() ? 0.0 : 100 * it->second);
      out << buf;
    }
    std::snprintf(buf, sizeof buf, " %9.0f", row.peak_mb);
    out << buf;
    if (device.is_cuda()) {
      std::snprintf(buf, sizeof buf, " %9.1f", row.peak_device_mb);
      out << buf;
    }
    std::snprintf(buf, sizeof buf, " %8.1f\n", row.seconds);
    out << buf;
  }
  out << "(peak MB = the process's peak resident memory so far, which only grows across rows";
  out << (device.is_cuda() ? "; GPU MB = the CUDA caching allocator's peak during the row)\n" : ")\n");
  return out.str();
}

}  // namespace vlp::trainer
