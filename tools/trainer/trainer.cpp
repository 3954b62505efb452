// The trainer (see trainer.h): session setup, the multi-task schedule, the training loop, evaluation.
#include "tools/trainer/trainer.h"

#include <omp.h>
#include <sys/resource.h>

#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "autograd/graph.h"
#include "autograd/ops.h"
#include "models/peft/peft.h"
#include "models/peft/recipes.h"
#include "runtime/device_copy.h"
#include "runtime/error.h"

namespace vlp::trainer {
namespace {

// splitmix64: the schedule's shuffles (portable, unlike std::shuffle's distribution).
uint64_t mix(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

template <class T>
void shuffle(std::vector<T>& v, uint64_t seed) {
  uint64_t s = mix(seed);
  for (size_t i = v.size(); i > 1; --i) {
    s = mix(s);
    std::swap(v[i - 1], v[size_t(s % i)]);
  }
}

int64_t batches_of(const Session& s, size_t t) {
  const int64_t n = int64_t(s.train_data[t].size());
  return std::max<int64_t>(1, n / s.cfg.batch_size);
}

// The micro-batch's inputs on the session's device (see batch_to_device; the CPU: unchanged).
MicroBatch on_device(MicroBatch mb, Device device) {
  if (device.is_cpu()) return mb;
  for (Tensor* t : {&mb.input_ids, &mb.attention_mask, &mb.weights, &mb.visual.feats, &mb.visual.pixels,
                     &mb.pooled, &mb.targets})
    *t = moved_to(*t, device);
  return mb;
}

// The forward pass and loss of one training micro-batch: the only place they run, inside the bf16
// autocast scope when s.autocast_bf16 (autograd/autocast.h: bf16 matmuls and attention, F32 elsewhere;
// the backward always runs without it).
Tensor micro_batch_loss(Session& s, const MicroBatch& b, ForwardContext& ctx) {
  AutocastScope autocast(s.autocast_bf16);
  if (s.model) {
    Seq2SeqOutput out = s.model->forward(b.input_ids, b.attention_mask, b.visual, b.labels, ctx);
    // File-backed tasks: VL-Adapter's loss (spec §2.11), per-example token mean x the target's weight.
    return b.weights.defined() ? weighted_seq2seq_loss(out.logits, b.labels, b.weights) : out.loss;
  }
  return kind_loss(s, b, ctx);
}

}  // namespace

MicroBatch next_micro_batch(Session& s) {
  MicroBatch mb;
  if (s.files) {
    data::MultiTaskLoader& loader = *s.files->loader;
    if (!s.loader_started) {
      loader.start(s.loader_pos);
      s.loader_started = true;
    }
    data::LoadedBatch lb;
    while (!loader.next(lb)) loader.start(loader.position());  // the epoch ended: the next one
    s.loader_pos = loader.position();
    ++s.micro_batch;
    mb.task = int(lb.batch.task_index);
    mb.input_ids = lb.tensors.at("input_ids");
    mb.attention_mask = lb.tensors.at("attention_mask");
    mb.labels = lb.tensors.at("labels");
    mb.weights = lb.tensors.at("weights");
    mb.visual.feats = lb.tensors.at("feats");
    mb.visual.n_images = s.tasks[size_t(mb.task)] == "nlvr2" ? 2 : 1;
    mb.pooled = lb.tensors.at("pooled");
    if (lb.tensors.count("targets")) mb.targets = lb.tensors.at("targets");
    return on_device(mb, s.device);
  }
  auto [t, idx] = batch_at(s, s.micro_batch++);
  std::vector<const VLExample*> ex;
  for (int64_t i : idx) ex.push_back(&s.train_data[size_t(t)][size_t(i)]);
  VLBatch b = collate(s.tasks[size_t(t)], t, ex, s.n_patches, s.patch_dim);
  mb.task = t;
  mb.input_ids = b.input_ids;
  mb.attention_mask = b.attention_mask;
  mb.labels = b.labels;
  mb.visual = batch_visual(b, s.device);
  return on_device(mb, s.device);
}

VisualInput batch_visual(const VLBatch& b, Device device) {
  VisualInput v;
  v.feats = moved_to(b.feats, device);
  v.pixels = moved_to(b.pixels, device);
  return v;
}

ViTConfig vision_config(const TrainConfig& c) {
  ViTConfig v;
  v.hidden_size = c.vision_hidden > 0 ? c.vision_hidden : c.d_model;
  v.num_hidden_layers = c.vision_layers;
  v.num_attention_heads = c.heads;
  v.intermediate_size = 4 * v.hidden_size;
  v.image_size = v.image_height = v.image_width = c.image_size;
  v.patch_size = c.patch;
  v.hidden_dropout_prob = v.attention_probs_dropout_prob = c.dropout;
  return v;
}

VLSeq2SeqConfig model_config(const TrainConfig& c) {
  VLSeq2SeqConfig m;
  m.backbone = c.backbone;
  m.feat_dim = c.patch * c.patch * 3;
  if (c.vision_tower == "vit") m.vision = vision_config(c);
  const int64_t V = vl_vocab().size();
  m.t5.vocab_size = V;
  m.t5.d_model = c.d_model;
  m.t5.d_kv = c.d_model / c.heads;
  m.t5.num_heads = c.heads;
  m.t5.d_ff = c.d_ff;
  m.t5.num_layers = c.layers;
  m.t5.dropout_rate = c.dropout;
  m.t5.relative_attention_num_buckets = 16;
  m.t5.relative_attention_max_distance = 32;
  m.t5.dense_act_fn = "relu";
  m.t5.tokens.pad_token_id = kPad;
  m.t5.tokens.eos_token_id = {kEos};
  m.t5.tokens.decoder_start_token_id = kPad;  // T5 starts decoding from the pad id
  m.bart.vocab_size = V;
  m.bart.d_model = c.d_model;
  m.bart.max_position_embeddings = 64;
  m.bart.encoder_layers = m.bart.decoder_layers = c.layers;
  m.bart.encoder_attention_heads = m.bart.decoder_attention_heads = c.heads;
  m.bart.encoder_ffn_dim = m.bart.decoder_ffn_dim = c.d_ff;
  m.bart.dropout = c.dropout;
  m.bart.tokens.pad_token_id = kPad;
  m.bart.tokens.bos_token_id = kBos;
  m.bart.tokens.eos_token_id = {kEos};
  m.bart.tokens.decoder_start_token_id = kEos;
  return m;
}

std::unique_ptr<Session> make_session(const TrainConfig& cfg) {
  validate_config(cfg);  // a CUDA device without a usable GPU fails here, before any work
  if (cfg.threads > 0) omp_set_num_threads(int(cfg.threads));
  auto s = std::make_unique<Session>();
  s->cfg = cfg;
  s->device = config_device(cfg);
  s->autocast_bf16 = autocast_bf16(cfg);
  if (s->device.is_cuda()) cuda_reset_peak_memory(s->device.index);
  s->tasks = split_list(cfg.tasks);
  if (uses_files(cfg)) {
    s->files = make_file_data(cfg);
    manual_seed(cfg.seed);
    if (cfg.model_kind == "seq2seq") {
      s->model = std::make_unique<VLSeq2Seq>(file_model_config(cfg, *s->files));
      if (!cfg.model_dir.empty()) load_backbone_weights(s->model->backbone(), cfg);
    } else {
      build_kind_model(*s);
    }
    if (cfg.epochs > 0) {
      const int64_t mb = cfg.epochs * s->files->loader->batches_per_epoch();
      s->cfg.steps = (mb + cfg.grad_accum - 1) / cfg.grad_accum;
    }
  } else {
    const bool pixels = cfg.vision_tower == "vit";
    for (const std::string& t : s->tasks) {
      s->train_data.push_back(make_split(t, "train", cfg.train_examples, cfg.data_seed, cfg.image_size, cfg.patch,
                                         cfg.task_prefix, pixels));
      s->eval_data.push_back(make_split(t, "eval", cfg.eval_examples, cfg.data_seed, cfg.image_size, cfg.patch,
                                        cfg.task_prefix, pixels));
    }
    const int64_t g = cfg.image_size / cfg.patch;
    s->n_patches = g * g;
    s->patch_dim = cfg.patch * cfg.patch * 3;
    manual_seed(cfg.seed);
    s->model = std::make_unique<VLSeq2Seq>(model_config(cfg));
  }
  if (!cfg.init_from.empty()) load_model_weights(s->net(), cfg.init_from);
  s->net().set_requires_grad(false);
  s->base_parameters = s->net().num_parameters();
  bool full = cfg.peft_config.empty() && cfg.peft_type.empty() && !cfg.freeze_backbone;
  peft::PeftConfig pc;
  if (!cfg.peft_recipe.empty()) {
    const peft::VlRecipe r = peft::vl_adapter_recipe(cfg.peft_recipe, cfg.backbone, s->tasks);
    full = r.full_finetuning;
    pc = r.config;
  }
  if (!full && (!cfg.peft_config.empty() || !cfg.peft_type.empty() || !cfg.peft_recipe.empty())) {
    if (cfg.peft_recipe.empty() && !cfg.peft_config.empty()) {
      pc = peft::load_peft_config(cfg.peft_config);
    } else if (cfg.peft_recipe.empty()) {
      nlohmann::json j = cfg.peft_json;
      j["peft_type"] = cfg.peft_type;
      pc = peft::parse_peft_config(j, "config peft_type/peft_json");
    }
    peft::add_adapter(s->model ? s->model->backbone() : kind_backbone(*s), pc, "default", cfg.seed);
    if (s->model) s->model->adopt_backbone_children();  // prompt tables live on the backbone
    s->peft = true;
    mark_always_trainable(*s);
  } else if (!full) {
    mark_always_trainable(*s);
  } else {
    s->net().set_requires_grad(true);
  }
  // Built, initialised and adapted on the CPU as a CPU run; then moved (requires_grad kept), so the
  // optimizer below makes its state on the device.
  if (!s->device.is_cpu()) s->net().to_device(s->device);
  ParamGroup decay, no_decay;
  for (auto& [name, p] : s->net().named_parameters()) {
    if (!p.requires_grad()) continue;
    s->trainable.push_back({name, p});
    ParamGroup& g2 = name.find("bias") != std::string::npos ? no_decay : decay;
    g2.params.push_back(p);
    g2.names.push_back(name);
  }
  VLP_CHECK(!s->trainable.empty(), "trainer: no trainable parameter (PEFT config matched nothing?)");
  for (ParamGroup* g2 : {&decay, &no_decay}) {
    g2->lr = cfg.lr;
    g2->eps = cfg.adam_eps;
  }
  decay.weight_decay = cfg.weight_decay;
  std::vector<ParamGroup> groups;
  if (!decay.params.empty()) groups.push_back(decay);
  if (!no_decay.params.empty()) groups.push_back(no_decay);
  s->opt = make_adamw(groups);
  s->dropout_gen = Generator(cfg.seed + 1);
  return s;
}

std::pair<int, std::vector<int64_t>> batch_at(const Session& s, int64_t micro_batch) {
  int64_t per_epoch = 0;
  for (size_t t = 0; t < s.tasks.size(); ++t) per_epoch += batches_of(s, t);
  const int64_t epoch = micro_batch / per_epoch, pos = micro_batch % per_epoch;
  // Every batch holds one task; the epoch's batches are shuffled by a generator seeded by the epoch.
  std::vector<std::pair<int, int64_t>> order;
  for (size_t t = 0; t < s.tasks.size(); ++t)
    for (int64_t j = 0; j < batches_of(s, t); ++j) order.push_back({int(t), j});
  shuffle(order, s.cfg.seed * 7919 + uint64_t(epoch));
  const auto [t, j] = order[size_t(pos)];
  std::vector<int64_t> perm(s.train_data[size_t(t)].size());
  for (size_t i = 0; i < perm.size(); ++i) perm[i] = int64_t(i);
  shuffle(perm, (s.cfg.seed * 31 + uint64_t(epoch)) * 131 + uint64_t(t));
  const int64_t B = std::min<int64_t>(s.cfg.batch_size, int64_t(perm.size()));
  return {t, std::vector<int64_t>(perm.begin() + j * B, perm.begin() + (j + 1) * B)};
}

// Every evaluation forward and generation (synthetic and file-backed tasks, through the predictors) runs
// inside this function, in the bf16 autocast scope when s.autocast_bf16.
std::map<std::string, double> evaluate(Session& s, int64_t max_examples, bool write_predictions) {
  AutocastScope autocast(s.autocast_bf16);
  if (s.files) {
    s.net().train(false);
    const Predictor predict = s.model ? seq2seq_predictor(*s.files, s.cfg, *s.model) : kind_predictor(s);
    auto m = evaluate_files(*s.files, s.cfg, predict, s.cfg.eval_split, &s.last_primary,
                            write_predictions ? s.cfg.out_dir + "/predictions" : "");
    s.net().train(true);
    return m;
  }
  NoGradGuard no_grad;
  std::map<std::string, double> out;
  GenerationOptions opt;
  opt.max_new_tokens = s.cfg.max_new_tokens;
  for (size_t t = 0; t < s.tasks.size(); ++t) {
    const auto& data = s.eval_data[t];
    const int64_t n = max_examples > 0 ? std::min<int64_t>(max_examples, int64_t(data.size())) : int64_t(data.size());
    int64_t correct = 0;
    for (int64_t i = 0; i < n; i += 64) {
      std::vector<const VLExample*> ex;
      for (int64_t k = i; k < std::min<int64_t>(n, i + 64); ++k) ex.push_back(&data[size_t(k)]);
      VLBatch b = collate(s.tasks[t], int(t), ex, s.n_patches, s.patch_dim);
      const VisualInput vi = batch_visual(b, s.device);
      ForwardContext ctx;
      ctx.task = int(t);
      GenerationOutput g = s.model->generate(moved_to(b.input_ids, s.device), moved_to(b.attention_mask, s.device), vi,
                                             opt, ctx);
      Tensor seq = host_copy(g.sequences);
      const int64_t L = seq.size(1);
      for (size_t r = 0; r < ex.size(); ++r) {
        std::vector<int64_t> ids(seq.data<int64_t>() + int64_t(r) * L + 1, seq.data<int64_t>() + int64_t(r + 1) * L);
        correct += vl_vocab().decode(ids) == b.answers[r];
      }
    }
    out[s.tasks[t]] = n > 0 ? double(correct) / double(n) : 0.0;
  }
  return out;
}

int64_t peak_rss_bytes() {
  struct rusage ru {};
  getrusage(RUSAGE_SELF, &ru);
  return int64_t(ru.ru_maxrss) * 1024;
}

int64_t peak_device_bytes(const Session& s) {
  return s.device.is_cuda() ? cuda_memory_stats(s.device.index).peak_allocated_bytes : 0;
}

RunSummary train(Session& s) {
  const TrainConfig& c = s.cfg;
  namespace fs = std::filesystem;
  fs::create_directories(c.out_dir);
  const std::string last = c.out_dir + "/last.safetensors", prev = c.out_dir + "/last.prev.safetensors",
                    best = c.out_dir + "/best.safetensors", log_path = c.out_dir + "/metrics.jsonl";
  if (c.resume) {
    bool loaded = false;
    for (const std::string& p : {last, prev}) {
      if (!fs::exists(p)) continue;
      try {
        load_training_checkpoint(s, p);
        loaded = true;
        std::fprintf(stderr, "resumed from %s at step %lld\n", p.c_str(), (long long)s.step);
        break;
      } catch (const Error& e) {
        std::fprintf(stderr, "warning: not resuming from %s: %s\n", p.c_str(), e.what());
        // Keep the refused file for inspection, out of the rotation (so it never replaces a good .prev).
        if (p == last) {
          fs::rename(last, last + ".refused");
          std::fprintf(stderr, "  (moved to %s.refused)\n", last.c_str());
        }
      }
    }
    if (!loaded) std::fprintf(stderr, "no usable checkpoint in %s: starting from step 0\n", c.out_dir.c_str());
  }
  std::ofstream log(log_path, std::ios::app);
  const char* kill_env = std::getenv("VLP_TRAINER_KILL_AT_STEP");
  const int64_t kill_at = kill_env ? std::atoll(kill_env) : -1;
  const int64_t warmup = c.warmup_steps > 0 ? c.warmup_steps : int64_t(c.warmup_ratio * double(c.steps));
  std::vector<Tensor> params;
  for (auto& [n, p] : s.trainable) params.push_back(p);
  RunSummary sum;
  int64_t tokens = 0, samples = 0;
  double flops = 0;
  const double N = double(s.net().num_parameters()), N_tr = double(params.size() ? 0 : 0);
  double n_trainable = 0;
  for (auto& p : params) n_trainable += double(p.numel());
  (void)N_tr;
  const double per_token = s.peft ? 4 * N + 6 * n_trainable : 6 * N;
  const auto t0 = std::chrono::steady_clock::now();
  ForwardContext ctx;
  ctx.training = c.dropout > 0 || !c.model_dir.empty();  // a checkpoint brings its own dropout rates
  ctx.generator = &s.dropout_gen;
  s.net().train(true);
  while (s.step < c.steps) {
    double loss_sum = 0;
    int task_index = 0;
    for (int64_t a = 0; a < c.grad_accum; ++a) {
      MicroBatch b = next_micro_batch(s);
      const int t = b.task;
      task_index = t;
      ctx.task = t;
      Tensor loss = micro_batch_loss(s, b, ctx);
      const double lv = loss.item();  // a host copy (synchronises with the device)
      VLP_CHECK(std::isfinite(lv), "training stopped: the loss is ", lv, " at step ", s.step + 1, " (task '",
                s.tasks[size_t(t)], "', micro-batch ", s.micro_batch - 1,
                "); lower lr (", c.lr, ") or check the data; the last good checkpoint is ", last);
      loss_sum += lv;
      backward(mul(loss, 1.0 / double(c.grad_accum)));
      const int64_t n_visual = !s.model ? 1 : b.visual.feats.defined() ? b.visual.feats.size(1) : s.n_patches;
      const int64_t enc_t = b.input_ids.size(1) + n_visual, dec_t = b.labels.size(1);
      const int64_t B = b.input_ids.size(0);
      tokens += B * (enc_t + dec_t);
      samples += B;
      // 6·L·T·C attention term per stack (encoder self; decoder self + cross over the encoder length).
      flops += double(B) * (per_token * double(enc_t + dec_t) +
                            6.0 * double(c.layers * c.d_model) * (double(enc_t * enc_t) + double(dec_t * (dec_t + enc_t))));
    }
    const double gnorm = clip_grad_norm_(params, c.clip_norm);
    VLP_CHECK(std::isfinite(gnorm), "training stopped: the gradient norm is ", gnorm, " at step ", s.step + 1);
    set_lr_factor(s.opt, linear_schedule_with_warmup(s.step, warmup, c.steps));
    step(s.opt);
    zero_grad(s.opt);
    ++s.step;
    sum.last_loss = loss_sum / double(c.grad_accum);
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (c.log_every > 0 && (s.step % c.log_every == 0 || s.step == c.steps)) {
      nlohmann::json j = {{"step", s.step}, {"loss", sum.last_loss}, {"grad_norm", gnorm},
                          {"lr", s.opt.groups[0].lr}, {"task", s.tasks[size_t(task_index)]}};
      log << j.dump() << "\n" << std::flush;
      if (c.progress)
        std::fprintf(stderr, "\rstep %lld/%lld  loss %.4f  lr %.2e  |g| %.3f  %.1f steps/s   ", (long long)s.step,
                     (long long)c.steps, sum.last_loss, s.opt.groups[0].lr, gnorm, double(s.step) / std::max(1e-9, elapsed));
    }
    const bool do_eval = c.eval_every > 0 && (s.step % c.eval_every == 0 || s.step == c.steps);
    if (do_eval) {
      auto m = evaluate(s);
      const auto& scores = s.files ? s.last_primary : m;  // file tasks: one main score per task
      double mean = 0;
      for (auto& [k, v] : scores) mean += v / double(scores.size());
      nlohmann::json j = {{"step", s.step}, {"eval", m}, {"eval_mean", mean}};
      log << j.dump() << "\n" << std::flush;
      if (c.progress) std::fprintf(stderr, "\n[eval step %lld] %s\n", (long long)s.step, j["eval"].dump().c_str());
      if (mean > s.best_score) {
        s.best_score = mean;
        save_training_checkpoint(s, best);
      }
      sum.metrics = m;
    }
    if ((c.save_every > 0 && s.step % c.save_every == 0) || s.step == c.steps) {
      if (fs::exists(last)) fs::rename(last, prev);
      save_training_checkpoint(s, last);
    }
    if (s.step == kill_at) std::raise(SIGKILL);
  }
  if (c.progress) std::fprintf(stderr, "\n");
  log.close();
  write_svg_plot(log_path, c.out_dir + "/metrics.svg");
  sum.steps = s.step;
  sum.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  sum.tokens_per_s = double(tokens) / std::max(1e-9, sum.seconds);
  sum.samples_per_s = double(samples) / std::max(1e-9, sum.seconds);
  sum.model_tflops = flops / std::max(1e-9, sum.seconds) / 1e12;
  sum.mfu = sum.model_tflops / c.peak_tflops;
  sum.mfu_formula = s.peft ? "(4N + 6N_trainable) per token + 6*L*T*C attention, encoder + decoder tokens"
                           : "6N per token + 6*L*T*C attention, encoder + decoder tokens";
  sum.peak_rss_bytes = peak_rss_bytes();
  sum.peak_device_bytes = peak_device_bytes(s);
  sum.trainable = int64_t(n_trainable);
  sum.total = int64_t(N);
  return sum;
}

}  // namespace vlp::trainer
