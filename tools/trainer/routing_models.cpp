// The routing-function model shapes in the trainer (spec/peft.md §3.4, §3.5; see trainer.h):
// GPT-2 with a visual prefix for captioning and the encoder classifier for VQA. The pooled visual vector
// (after the visual projection, when there is one) is also the routing input x_R (ForwardContext::visual)
// of every routed LoRA / adapter.
#include <filesystem>

#include "autograd/graph.h"
#include "autograd/ops.h"
#include "models/config.h"
#include "runtime/error.h"
#include "tools/trainer/trainer.h"

namespace vlp::trainer {
namespace {

// x_R [B, 1, d] for the routed methods.
Tensor routing_input(const Session& s, const Tensor& pooled, const ForwardContext& ctx) {
  if (s.gpt2) return s.gpt2->visual_token(pooled, ctx);
  Tensor v = pooled;
  if (s.classifier->visual_projection) v = s.classifier->visual_projection->forward(v, ctx);
  return unsqueeze(v, 1);
}

}  // namespace

void build_kind_model(Session& s) {
  const TrainConfig& c = s.cfg;
  const FileData& d = *s.files;
  if (c.model_kind == "gpt2_prefix") {
    GPT2Config g;
    if (!c.model_dir.empty()) {
      g = read_gpt2_config((std::filesystem::path(c.model_dir) / "config.json").string());
      g.vocab_size += c.vocab_extra_rows;
    } else {
      g.vocab_size = d.codec.size + c.vocab_extra_rows;
      g.n_positions = std::max<int64_t>(64, c.max_target_length + 2);
      g.n_embd = c.d_model;
      g.n_layer = c.layers;
      g.n_head = c.heads;
      g.n_inner = c.d_ff;
      g.resid_pdrop = g.embd_pdrop = g.attn_pdrop = c.dropout;
      g.tokens.bos_token_id = d.codec.eos;
      g.tokens.pad_token_id = d.codec.pad;
      g.tokens.eos_token_id = {d.codec.eos};
    }
    VLP_CHECK(d.codec.size <= g.vocab_size, "tokenizer has ", d.codec.size, " tokens, GPT-2's embedding ", g.vocab_size);
    s.gpt2 = std::make_unique<GPT2WithVisualPrefix>(g, d.feat_dim);
    if (!c.model_dir.empty()) load_backbone_weights(*s.gpt2->gpt2, c);
    return;
  }
  VLP_CHECK(c.model_kind == "encoder_classifier", "unknown model_kind '", c.model_kind, "'");
  VLP_CHECK(d.answers.size() > 0, "encoder_classifier: the answer vocabulary is empty");
  s.classifier = std::make_unique<VLEncoderClassifier>(file_model_config(c, d), d.answers.size());
  if (!c.model_dir.empty()) {
    if (s.classifier->t5) load_backbone_weights(*s.classifier->t5, c);
    else load_backbone_weights(*s.classifier->bart, c);
  }
}

Module& kind_backbone(Session& s) {
  if (s.gpt2) return *s.gpt2->gpt2;
  return s.classifier->t5 ? static_cast<Module&>(*s.classifier->t5) : static_cast<Module&>(*s.classifier->bart);
}

void mark_always_trainable(Session& s) {
  if (s.model) {
    s.model->visual_embedding->set_requires_grad(true);  // spec §2.2; the shared rows it reads stay frozen
  } else if (s.gpt2) {
    if (s.gpt2->visual_projection) s.gpt2->visual_projection->set_requires_grad(true);
  } else {
    s.classifier->classifier.set_requires_grad(true);  // spec §3.5: the head trains
    if (s.classifier->visual_projection) s.classifier->visual_projection->set_requires_grad(true);
  }
}

Tensor kind_loss(Session& s, const MicroBatch& b, ForwardContext& ctx) {
  ctx.visual = routing_input(s, b.pooled, ctx);
  if (s.gpt2) return s.gpt2->forward(b.pooled, b.input_ids, b.attention_mask, b.labels, ctx).loss;
  VLP_CHECK(b.targets.defined(), "encoder_classifier: the batch has no classifier targets");
  return soft_score_bce(s.classifier->forward(b.pooled, b.input_ids, b.attention_mask, ctx), b.targets);
}

Predictor kind_predictor(Session& s) {
  return [&s](int ti, const FileBatch& host_batch) {
    const FileBatch b = batch_to_device(host_batch, s.device);
    ForwardContext ctx;
    ctx.task = ti;
    ctx.visual = routing_input(s, b.pooled, ctx);
    std::vector<std::string> pred;
    const int64_t B = b.pooled.size(0);
    if (s.gpt2) {  // spec §3.6: beam search, the generation library's default maximum length
      GenerationOptions opt;
      opt.num_beams = s.cfg.caption_beams;
      opt.max_new_tokens = s.cfg.gen_max_length;
      Tensor seq = host_copy(s.gpt2->generate(b.pooled, Tensor(), opt, ctx).sequences);
      const int64_t L = seq.size(1);
      for (int64_t r = 0; r < B; ++r)
        pred.push_back(s.files->codec.decode(std::vector<int64_t>(seq.data<int64_t>() + r * L, seq.data<int64_t>() + (r + 1) * L)));
      return pred;
    }
    Tensor logits = host_copy(to(s.classifier->forward(b.pooled, b.input_ids, b.attention_mask, ctx), DType::F32));
    const int64_t A = logits.size(1);
    for (int64_t r = 0; r < B; ++r) {
      const float* row = logits.data<float>() + r * A;
      pred.push_back(s.files->answers.answers[size_t(std::max_element(row, row + A) - row)]);
    }
    return pred;
  };
}

}  // namespace vlp::trainer
