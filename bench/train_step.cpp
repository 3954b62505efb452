// One optimizer step of a backbone, timed: forward, loss, backward, AdamW, zero_grad. The vlpeft side of
// bench/compare (tools/reference/bench_torch.py is the PyTorch side; both read the same arguments and
// print the same JSON line).
//
//   build/bench/train_step --model configs/hf/gpt2.json --batch 4 --seq 128 [--peft lora.json] \
//                          [--steps 5] [--warmup 2] [--device cuda]
//
// Weights are random (the constructors' initialisation): speed and memory do not depend on their values.
// Inputs are random token ids from a fixed seed; encoder-decoder models get decoder length = seq. With
// --device cuda the model (after add_adapter) and the inputs are moved to the GPU (Module::to_device),
// each step ends with a device synchronisation, and peak memory is the GPU's live tensor bytes.
// Prints one JSON object: median step time, tokens/s (encoder + decoder tokens), peak tensor memory,
// trainable and total parameters, and model FLOP/s by 6N + 6LTC (full fine-tuning) or 4N + 6N_trainable
// + 6LTC (frozen base), the formula named.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <sys/resource.h>

#include "autograd/ops.h"
#include "autograd/optim.h"
#include "models/bart.h"
#include "models/config.h"
#include "models/gpt2.h"
#include "models/peft/peft.h"
#include "models/t5.h"
#include "runtime/device_copy.h"
#include "runtime/storage.h"

using namespace vlp;

namespace {

struct Args {
  std::string model, peft;
  int64_t batch = 4, seq = 128;
  int steps = 5, warmup = 2;
  Device device = Device::cpu();
};

[[noreturn]] void usage(const char* why) {
  std::fprintf(stderr,
               "train_step: %s\nusage: train_step --model CONFIG.json [--batch B] [--seq T] [--peft PEFT.json] "
               "[--steps N] [--warmup N] [--device cpu|cuda[:i]]\n",
               why);
  std::exit(2);
}

Args parse_args(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string key = argv[i];
    if (i + 1 >= argc) usage(("missing value after " + key).c_str());
    const std::string value = argv[++i];
    if (key == "--model") a.model = value;
    else if (key == "--peft") a.peft = value;
    else if (key == "--batch") a.batch = std::stoll(value);
    else if (key == "--seq") a.seq = std::stoll(value);
    else if (key == "--steps") a.steps = std::stoi(value);
    else if (key == "--warmup") a.warmup = std::stoi(value);
    else if (key == "--device") a.device = parse_device(value);
    else usage(("unknown argument " + key).c_str());
  }
  if (a.model.empty()) usage("--model is required");
  return a;
}

std::string model_type(const std::string& path) {
  std::ifstream f(path);
  VLP_CHECK(f.good(), "train_step: cannot open model config ", path);
  std::stringstream ss;
  ss << f.rdbuf();
  const auto j = nlohmann::json::parse(ss.str(), nullptr, false);
  VLP_CHECK(!j.is_discarded() && j.contains("model_type"), path, ": not a JSON config with model_type");
  return j["model_type"].get<std::string>();
}

Tensor random_ids(int64_t batch, int64_t seq, int64_t vocab, uint64_t seed, Device device) {
  Tensor ids = empty({batch, seq}, DType::I64);
  uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
  for (int64_t i = 0; i < batch * seq; ++i) {
    s ^= s << 13, s ^= s >> 7, s ^= s << 17;
    ids.data<int64_t>()[i] = int64_t(s % uint64_t(vocab));
  }
  return convert(ids, DType::I64, device);
}

// One model behind a loss function, with the figures the FLOP count needs.
struct Bench {
  std::unique_ptr<Module> model;
  std::function<Tensor()> loss;
  int64_t tokens = 0;          // per step, encoder + decoder
  double attention_flops = 0;  // 6·L·T·C summed over stacks
};

Bench make_bench(const Args& a) {
  Bench b;
  const std::string type = model_type(a.model);
  const ForwardContext ctx{.training = true};
  if (type == "gpt2") {
    auto m = std::make_unique<GPT2LMHeadModel>(read_gpt2_config(a.model));
    Tensor ids = random_ids(a.batch, a.seq, m->config.vocab_size, 1, a.device);
    GPT2Input in{.input_ids = ids, .labels = ids};
    auto* raw = m.get();
    b.loss = [raw, in, ctx] { return raw->forward(in, ctx).loss; };
    b.tokens = a.batch * a.seq;
    b.attention_flops = 6.0 * double(m->config.n_layer * a.seq * m->config.n_embd) * double(b.tokens);
    b.model = std::move(m);
  } else if (type == "t5" || type == "bart") {
    Seq2SeqInput in;
    int64_t vocab = 0, enc_layers = 0, dec_layers = 0, width = 0;
    if (type == "t5") {
      auto m = std::make_unique<T5ForConditionalGeneration>(read_t5_config(a.model));
      vocab = m->config.vocab_size, width = m->config.d_model;
      enc_layers = m->config.num_layers;
      dec_layers = m->config.num_decoder_layers > 0 ? m->config.num_decoder_layers : enc_layers;
      b.model = std::move(m);
    } else {
      auto m = std::make_unique<BartForConditionalGeneration>(read_bart_config(a.model));
      vocab = m->config.vocab_size, width = m->config.d_model;
      enc_layers = m->config.encoder_layers, dec_layers = m->config.decoder_layers;
      b.model = std::move(m);
    }
    in.encoder.input_ids = random_ids(a.batch, a.seq, vocab, 1, a.device);
    in.labels = random_ids(a.batch, a.seq, vocab, 2, a.device);
    Module* raw = b.model.get();
    if (type == "t5")
      b.loss = [raw, in, ctx] { return static_cast<T5ForConditionalGeneration*>(raw)->forward(in, ctx).loss; };
    else
      b.loss = [raw, in, ctx] { return static_cast<BartForConditionalGeneration*>(raw)->forward(in, ctx).loss; };
    b.tokens = 2 * a.batch * a.seq;
    // per stack 6·L·T·C per token; the decoder's cross-attention adds its own T_enc·C term
    const double per_token_enc = 6.0 * double(enc_layers * a.seq * width);
    const double per_token_dec = 6.0 * double(dec_layers * a.seq * width) * 2.0;
    b.attention_flops = (per_token_enc + per_token_dec) * double(a.batch * a.seq);
  } else {
    VLP_FAIL(a.model, ": model_type '", type, "' has no train_step bench (gpt2, t5, bart)");
  }
  return b;
}

int64_t max_rss_bytes() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return int64_t(usage.ru_maxrss) * 1024;  // Linux reports KiB
}

}  // namespace

int main(int argc, char** argv) try {
  const Args a = parse_args(argc, argv);
  Bench b = make_bench(a);
  b.model->train(true);
  b.model->set_requires_grad(true);  // full fine-tuning; add_adapter freezes all but the adapter
  std::string method = "full";
  if (!a.peft.empty()) {
    const peft::PeftConfig config = peft::load_peft_config(a.peft);
    peft::add_adapter(*b.model, config, "default", 0);
    method = config.peft_type;
  }
  b.model->to_device(a.device);
  std::vector<Tensor> trainable;
  for (const auto& [name, p] : b.model->named_parameters())
    if (p.requires_grad()) trainable.push_back(p);
  Optimizer opt = make_adamw(trainable, 1e-4, 0.01);
  const int64_t total_params = b.model->num_parameters(), trainable_params = b.model->num_parameters(true);

  std::vector<double> seconds;
  for (int s = 0; s < a.warmup + a.steps; ++s) {
    if (s == a.warmup) reset_peak_memory(a.device);
    const auto t0 = std::chrono::steady_clock::now();
    Tensor loss = b.loss();
    backward(loss);
    step(opt);
    zero_grad(opt);
    if (!a.device.is_cpu()) cuda_synchronize(a.device.index);
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (s >= a.warmup) seconds.push_back(dt);
  }
  std::sort(seconds.begin(), seconds.end());
  const double median = seconds[seconds.size() / 2];
  const bool frozen_base = trainable_params < total_params;
  const double n = double(total_params), nt = double(trainable_params);
  const double flops = (frozen_base ? 4.0 * n + 6.0 * nt : 6.0 * n) * double(b.tokens) + b.attention_flops;
  nlohmann::json out = {
      {"impl", "vlpeft"},
      {"model", a.model},
      {"method", method},
      {"batch", a.batch},
      {"seq", a.seq},
      {"device", str(a.device)},
      {"step_s_median", median},
      {"step_s_min", seconds.front()},
      {"step_s_max", seconds.back()},
      {"tokens_per_s", double(b.tokens) / median},
      {"peak_tensor_bytes", memory_stats(a.device).peak_bytes},
      {"max_rss_bytes", max_rss_bytes()},
      {"params_total", total_params},
      {"params_trainable", trainable_params},
      {"model_gflop_per_s", flops / median * 1e-9},
      {"flop_formula", frozen_base ? "4N+6N_trainable+6LTC" : "6N+6LTC"},
  };
  std::printf("%s\n", out.dump().c_str());
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "train_step: %s\n", e.what());
  return 1;
}
