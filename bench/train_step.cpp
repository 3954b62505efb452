// One optimizer step of a backbone, timed: forward, loss, backward, AdamW, zero_grad. The vlpeft side of
// bench/compare (tools/reference/bench_torch.py is the PyTorch side; both read the same arguments and
// print the same JSON line).
//
//   build/bench/train_step --model configs/hf/gpt2.json --batch 4 --seq 128 [--peft cfg.json]
//                          [--visual 36] [--steps 5] [--warmup 2] [--device cuda] [--dtype bf16]
//                          [--autocast bf16]
//
// Models (by the config's model_type): GPT-2, T5, BART on random token ids (encoder-decoders get decoder
// length = seq); ViT on random images of the config's size with random class labels and a cross-entropy
// loss (tokens = patches + CLS per image; --seq is ignored). --visual N (BART only) makes VL-BART
// (models/vl/vl_seq2seq.h): the vocabulary grows by VL-BART's 200 added tokens and N random 2048-d region
// features with boxes are appended to the encoder input; the visual embedding is always trainable and the
// PEFT config is attached to the backbone, as the trainer does.
// Weights are random (the constructors' initialisation): speed and memory do not depend on their values.
// Prints one JSON object: median step time, tokens/s (encoder + decoder tokens), peak tensor memory,
// trainable and total parameters, and model FLOP/s by 6N + 6LTC (full fine-tuning) or 4N + 6N_trainable
// + 6LTC (frozen base), the formula named.
// --device cuda moves the model (Module::to_device) and the float inputs to the GPU, token ids stay on the host
// (the embedding and cross-entropy kernels upload them); --dtype bf16 stores the floating parameters in
// BF16. --autocast bf16 keeps the parameters F32 (the master weights) and runs forward and loss under
// AutocastScope (autograd/autocast.h: BF16 GEMMs and attention, everything else F32), as torch.autocast
// does for bench_torch.py --bf16; the backward replays the recorded casts. The JSON names both ("dtype",
// the parameters'; "autocast", "bf16" or "off").
// Steps are timed between device synchronisations; peak memory is then the caching allocator's.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <fstream>
#include <memory>
#include <optional>
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
#include "models/vit.h"
#include "models/vl/vl_seq2seq.h"
#include "runtime/device_copy.h"
#include "runtime/rng.h"
#include "runtime/storage.h"

using namespace vlp;

namespace {

// A forward context in training mode (dropout on); the other fields keep their defaults.
ForwardContext training_context() {
  ForwardContext ctx;
  ctx.training = true;
  return ctx;
}

constexpr int64_t kVlAddedTokens = 200;  // <extra_id_0..99>, <vis_extra_id_0..99> (spec/peft.md §2.1)

struct Args {
  std::string model, peft, device = "cpu", dtype, autocast = "off";
  int64_t batch = 4, seq = 128, visual = 0, feat_dim = 2048;
  int steps = 5, warmup = 2;
};

[[noreturn]] void usage(const char* why) {
  std::fprintf(stderr,
               "train_step: %s\nusage: train_step --model CONFIG.json [--batch B] [--seq T] [--peft PEFT.json] "
               "[--visual N] [--feat-dim F] [--steps N] [--warmup N] [--device cpu|cuda] [--dtype f32|bf16] "
               "[--autocast off|bf16]\n",
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
    else if (key == "--visual") a.visual = std::stoll(value);
    else if (key == "--feat-dim") a.feat_dim = std::stoll(value);
    else if (key == "--steps") a.steps = std::stoi(value);
    else if (key == "--warmup") a.warmup = std::stoi(value);
    else if (key == "--device") a.device = value;
    else if (key == "--dtype") a.dtype = value;
    else if (key == "--autocast") a.autocast = value;
    else usage(("unknown argument " + key).c_str());
  }
  if (a.model.empty()) usage("--model is required");
  if (a.steps < 1) usage("--steps must be at least 1");
  if (!a.dtype.empty() && a.dtype != "f32" && a.dtype != "bf16") usage("--dtype is f32 or bf16");
  if (a.autocast != "off" && a.autocast != "bf16") usage("--autocast is off or bf16");
  if (a.autocast == "bf16" && a.dtype == "bf16")
    usage("--autocast bf16 keeps F32 parameters (the master weights); it does not combine with --dtype bf16");
  return a;
}

std::string model_type(const std::string& path) {
  std::ifstream f(path);
  VLP_CHECK(f.good(), "cannot open model config ", path);
  std::stringstream ss;
  ss << f.rdbuf();
  const auto j = nlohmann::json::parse(ss.str(), nullptr, false);
  VLP_CHECK(!j.is_discarded() && j.contains("model_type"), path, ": not a JSON config with model_type");
  return j["model_type"].get<std::string>();
}

Tensor random_ids(int64_t batch, int64_t seq, int64_t vocab, uint64_t seed) {
  Tensor ids = empty({batch, seq}, DType::I64);
  uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
  for (int64_t i = 0; i < batch * seq; ++i) {
    s ^= s << 13, s ^= s >> 7, s ^= s << 17;
    ids.data<int64_t>()[i] = int64_t(s % uint64_t(vocab));
  }
  return ids;
}

// One model behind a loss function, with the figures the FLOP count needs.
struct Bench {
  std::unique_ptr<Module> model;
  Module* peft_root = nullptr;          // where the PEFT config attaches (the backbone of a VL model)
  std::function<void()> after_peft;     // VL models: list the backbone's new children, train the visual embedding
  std::function<Tensor()> loss;
  std::vector<Tensor*> float_inputs;    // moved to the device with the model (ids stay on the host)
  int64_t tokens = 0;                   // per step: encoder + decoder tokens, or patches + CLS
  int64_t seq = 0;                      // as reported (ViT: tokens per image)
  double attention_flops = 0;           // 6·L·T·C per token, summed over stacks and tokens
};

// Encoder-decoder attention FLOPs: encoder self-attention over t_enc keys, decoder self-attention over
// t_dec keys and cross-attention over t_enc keys, 6·L·T·C per token of each stack.
double seq2seq_attention_flops(int64_t batch, int64_t t_enc, int64_t t_dec, int64_t enc_layers, int64_t dec_layers,
                               int64_t width) {
  const double enc = 6.0 * double(enc_layers * t_enc * width) * double(batch * t_enc);
  const double dec = 6.0 * double(dec_layers * (t_dec + t_enc) * width) * double(batch * t_dec);
  return enc + dec;
}

void make_gpt2(const Args& a, Bench& b) {
  auto m = std::make_unique<GPT2LMHeadModel>(read_gpt2_config(a.model));
  Tensor ids = random_ids(a.batch, a.seq, m->config.vocab_size, 1);
  GPT2Input in;
  in.input_ids = ids;
  in.labels = ids;
  auto* raw = m.get();
  b.loss = [raw, in] { return raw->forward(in, training_context()).loss; };
  b.tokens = a.batch * a.seq;
  b.attention_flops = 6.0 * double(m->config.n_layer * a.seq * m->config.n_embd) * double(b.tokens);
  b.model = std::move(m);
}

void make_text_seq2seq(const Args& a, const std::string& type, Bench& b) {
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
  in.encoder.input_ids = random_ids(a.batch, a.seq, vocab, 1);
  in.labels = random_ids(a.batch, a.seq, vocab, 2);
  Module* raw = b.model.get();
  const ForwardContext ctx = training_context();
  if (type == "t5")
    b.loss = [raw, in, ctx] { return static_cast<T5ForConditionalGeneration*>(raw)->forward(in, ctx).loss; };
  else
    b.loss = [raw, in, ctx] { return static_cast<BartForConditionalGeneration*>(raw)->forward(in, ctx).loss; };
  b.tokens = 2 * a.batch * a.seq;
  b.attention_flops = seq2seq_attention_flops(a.batch, a.seq, a.seq, enc_layers, dec_layers, width);
}

// VL-BART-base: BART + the visual embedding of --visual random region features with boxes.
struct VlBatch {
  Tensor ids, labels;
  VisualInput visual;
};

void make_vl_bart(const Args& a, Bench& b) {
  VLSeq2SeqConfig cfg;
  cfg.backbone = "bart";
  cfg.bart = read_bart_config(a.model);
  cfg.bart.vocab_size += kVlAddedTokens;
  cfg.feat_dim = a.feat_dim;
  auto m = std::make_unique<VLSeq2Seq>(cfg);
  Generator gen(3);
  auto batch = std::make_shared<VlBatch>();
  batch->ids = random_ids(a.batch, a.seq, cfg.bart.vocab_size, 1);
  batch->labels = random_ids(a.batch, a.seq, cfg.bart.vocab_size, 2);
  batch->visual.feats = randn({a.batch, a.visual, a.feat_dim}, &gen);
  // Boxes (x1, x2, y1, y2) inside [0, 1]: a corner in [0, 0.5) and a size in [0, 0.5).
  Tensor lo = empty({a.batch, a.visual, 2}), size = empty({a.batch, a.visual, 2});
  uniform_(lo, 0.0, 0.5, &gen);
  uniform_(size, 0.0, 0.5, &gen);
  Tensor hi = add(lo, size);
  batch->visual.boxes = contiguous(concat({narrow(lo, 2, 0, 1), narrow(hi, 2, 0, 1), narrow(lo, 2, 1, 1),
                                           narrow(hi, 2, 1, 1)}, 2));
  b.float_inputs = {&batch->visual.feats, &batch->visual.boxes};
  VLSeq2Seq* raw = m.get();
  b.peft_root = &m->backbone();
  b.after_peft = [raw] {
    raw->adopt_backbone_children();
    raw->visual_embedding->set_requires_grad(true);  // spec §2.2: always trainable
  };
  b.loss = [raw, batch] {
    return raw->forward(batch->ids, Tensor(), batch->visual, batch->labels, training_context()).loss;
  };
  const int64_t t_enc = a.seq + a.visual;
  b.tokens = a.batch * (t_enc + a.seq);
  b.attention_flops = seq2seq_attention_flops(a.batch, t_enc, a.seq, cfg.bart.encoder_layers,
                                              cfg.bart.decoder_layers, cfg.bart.d_model);
  b.model = std::move(m);
}

// ViT-B/16 image classification on random images and labels.
struct ImageBatch {
  Tensor pixels, labels;
};

void make_vit(const Args& a, Bench& b) {
  auto m = std::make_unique<ViTForImageClassification>(read_vit_config(a.model));
  const ViTConfig& c = m->config;
  Generator gen(3);
  auto batch = std::make_shared<ImageBatch>();
  batch->pixels = randn({a.batch, c.num_channels, c.image_height, c.image_width}, &gen);
  batch->labels = reshape(random_ids(a.batch, 1, c.num_labels, 2), {a.batch});
  b.float_inputs = {&batch->pixels};
  ViTForImageClassification* raw = m.get();
  b.loss = [raw, batch] {
    return cross_entropy(raw->forward(batch->pixels, training_context()).logits, batch->labels);
  };
  b.seq = 1 + c.grid_height() * c.grid_width();
  b.tokens = a.batch * b.seq;
  b.attention_flops = 6.0 * double(c.num_hidden_layers * b.seq * c.hidden_size) * double(b.tokens);
  b.model = std::move(m);
}

Bench make_bench(const Args& a) {
  Bench b;
  const std::string type = model_type(a.model);
  VLP_CHECK(a.visual == 0 || type == "bart", "--visual (VL-BART) needs a BART config, ", a.model,
            " is ", type);
  if (type == "gpt2") make_gpt2(a, b);
  else if ((type == "t5" || type == "bart") && a.visual == 0) make_text_seq2seq(a, type, b);
  else if (type == "bart") make_vl_bart(a, b);
  else if (type == "vit") make_vit(a, b);
  else VLP_FAIL(a.model, ": model_type '", type, "' has no train_step bench (gpt2, t5, bart, vit)");
  if (!b.peft_root) b.peft_root = b.model.get();
  if (b.seq == 0) b.seq = a.seq;
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
  const Device device = parse_device(a.device);
  if (device.is_cuda())
    VLP_CHECK(cuda_available(), "--device ", a.device, ": ", cuda_unavailable_reason());
  Bench b = make_bench(a);
  b.model->train(true);
  b.model->set_requires_grad(true);  // full fine-tuning; add_adapter freezes all but the adapter
  std::string method = "full";
  if (!a.peft.empty()) {
    const peft::PeftConfig config = peft::load_peft_config(a.peft);
    peft::add_adapter(*b.peft_root, config, "default", 0);
    method = config.peft_type;
  }
  if (b.after_peft) b.after_peft();
  std::optional<DType> dtype;
  if (a.dtype == "bf16") dtype = DType::BF16;
  if (!device.is_cpu() || dtype) {
    b.model->to_device(device, dtype);
    for (Tensor* t : b.float_inputs) *t = convert(*t, dtype.value_or(t->dtype()), device);
  }
  std::vector<Tensor> trainable;
  for (const auto& [name, p] : b.model->named_parameters())
    if (p.requires_grad()) trainable.push_back(p);
  Optimizer opt = make_adamw(trainable, 1e-4, 0.01);
  const int64_t total_params = b.model->num_parameters(), trainable_params = b.model->num_parameters(true);

  auto sync = [&] {
    if (device.is_cuda()) cuda_synchronize(device.index);
  };
  std::vector<double> seconds;
  for (int s = 0; s < a.warmup + a.steps; ++s) {
    sync();
    if (s == a.warmup) {
      reset_peak_memory(device);
      if (device.is_cuda()) cuda_reset_peak_memory(device.index);
    }
    const auto t0 = std::chrono::steady_clock::now();
    Tensor loss;
    {
      AutocastScope autocast(a.autocast == "bf16");  // AutocastScope(false) leaves everything as it is
      loss = b.loss();
    }
    backward(loss);
    step(opt);
    zero_grad(opt);
    sync();
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
      {"seq", b.seq},
      {"visual_tokens", a.visual},
      {"device", to_string(device)},
      {"dtype", dtype ? "bf16" : "f32"},
      {"autocast", a.autocast},
      {"step_s_median", median},
      {"step_s_min", seconds.front()},
      {"step_s_max", seconds.back()},
      {"tokens_per_s", double(b.tokens) / median},
      {"peak_tensor_bytes", memory_stats(device).peak_bytes},
      {"max_rss_bytes", max_rss_bytes()},
      {"params_total", total_params},
      {"params_trainable", trainable_params},
      {"model_gflop_per_s", flops / median * 1e-9},
      {"flop_formula", frozen_base ? "4N+6N_trainable+6LTC" : "6N+6LTC"},
  };
  if (device.is_cuda()) out["peak_device_bytes"] = cuda_memory_stats(device.index).peak_allocated_bytes;
  std::printf("%s\n", out.dump().c_str());
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "train_step: %s\n", e.what());
  return 1;
}
