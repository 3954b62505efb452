// VL-T5 / VL-BART: the visual embedding and the encoder-decoder wrapper (see vl_seq2seq.h).
#include "models/vl/vl_seq2seq.h"

#include "autograd/ops.h"
#include "runtime/error.h"
#include "runtime/rng.h"
#include "runtime/trace.h"

namespace vlp {

Tensor default_img_ids(int64_t B, int64_t N, int64_t n_images) {
  VLP_CHECK(n_images >= 1 && N % n_images == 0, "VisualInput: ", N, " visual tokens do not split over ",
            n_images, " images");
  std::vector<int64_t> v(size_t(B * N));
  const int64_t per = N / n_images;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < N; ++i) v[size_t(b * N + i)] = i / per;
  return from_data<int64_t>(v, {B, N});
}

Tensor default_obj_ids(int64_t B, int64_t N, int64_t n_images) {
  VLP_CHECK(n_images >= 1 && N % n_images == 0, "VisualInput: ", N, " visual tokens do not split over ",
            n_images, " images");
  std::vector<int64_t> v(size_t(B * N));
  const int64_t per = N / n_images;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < N; ++i) v[size_t(b * N + i)] = i % per;
  return from_data<int64_t>(v, {B, N});
}

VisualEmbedding::VisualEmbedding(int64_t feat_dim, int64_t d_model, bool rms_norm, double eps,
                                 const Embedding* shared)
    : rms(rms_norm), feat_proj(feat_dim, d_model), pos_proj(5, d_model), img_order_embedding(2, d_model),
      obj_order_embedding(shared) {
  feat_embedding.register_module("0", &feat_proj);
  absolute_vis_pos_embedding.register_module("0", &pos_proj);
  if (rms) {
    feat_rms = std::make_unique<RMSNorm>(d_model, eps);
    pos_rms = std::make_unique<RMSNorm>(d_model, eps);
    feat_embedding.register_module("1", feat_rms.get());
    absolute_vis_pos_embedding.register_module("1", pos_rms.get());
  } else {
    feat_ln = std::make_unique<LayerNorm>(d_model, eps);
    pos_ln = std::make_unique<LayerNorm>(d_model, eps);
    feat_embedding.register_module("1", feat_ln.get());
    absolute_vis_pos_embedding.register_module("1", pos_ln.get());
  }
  register_module("feat_embedding", &feat_embedding);
  register_module("absolute_vis_pos_embedding", &absolute_vis_pos_embedding);
  register_module("img_order_embedding", &img_order_embedding);
  normal_(img_order_embedding.weight, 0.0, 0.02);
}

Tensor VisualEmbedding::forward(const VisualInput& visual) const {
  TraceRange range("vl.visual_embedding");
  VLP_CHECK(visual.feats.defined() && visual.feats.dim() == 3, "VisualEmbedding: feats must be [B, N, F]");
  const int64_t B = visual.feats.size(0), N = visual.feats.size(1);
  VLP_CHECK(visual.feats.size(2) == feat_proj.in_features(), "VisualEmbedding: feature width ",
            visual.feats.size(2), ", expected ", feat_proj.in_features());
  const Tensor feats = to(visual.feats, feat_proj.weight.dtype());
  Tensor f = feat_proj.forward(feats);
  f = rms ? feat_rms->forward(f) : feat_ln->forward(f);
  // [b; a] with a = (x2 - x1)(y2 - y1), boxes as (x1, x2, y1, y2).
  Tensor boxes = visual.boxes.defined() ? to(to(visual.boxes, feats.device()), feats.dtype())
                                        : zeros({B, N, 4}, feats.dtype(), feats.device());
  VLP_CHECK(boxes.dim() == 3 && boxes.size(0) == B && boxes.size(1) == N && boxes.size(2) == 4,
            "VisualEmbedding: boxes must be [B, N, 4]");
  Tensor area = mul(sub(narrow(boxes, 2, 1, 1), narrow(boxes, 2, 0, 1)),
                    sub(narrow(boxes, 2, 3, 1), narrow(boxes, 2, 2, 1)));
  Tensor p = pos_proj.forward(concat({boxes, area}, 2));
  p = rms ? pos_rms->forward(p) : pos_ln->forward(p);
  const Tensor img_ids = visual.img_ids.defined() ? visual.img_ids : default_img_ids(B, N, visual.n_images);
  const Tensor obj_ids = visual.obj_ids.defined() ? visual.obj_ids : default_obj_ids(B, N, visual.n_images);
  const int64_t V = obj_order_embedding->weight.size(0);
  // Object i reads the row of <vis_extra_id_i>: V - 1 - obj_id.
  Tensor rows = rsub(double(V - 1), to(obj_ids, DType::F64));
  Tensor obj = embedding(obj_order_embedding->weight, to(rows, DType::I64));
  Tensor img = img_order_embedding.forward(img_ids);
  return add(add(f, p), add(to(img, f.dtype()), to(obj, f.dtype())));
}

void VLSeq2Seq::adopt_backbone_children() {
  for (const auto& [name, child] : backbone().children()) {
    bool known = false;
    for (const auto& [mine, m] : children()) known = known || mine == name;
    if (!known) register_module(name, child);
  }
}

namespace {
// With a vision tower the visual embedding reads its hidden states.
VLSeq2SeqConfig resolved(VLSeq2SeqConfig c) {
  if (c.vision) c.feat_dim = c.vision->hidden_size;
  return c;
}
}  // namespace

VLSeq2Seq::VLSeq2Seq(const VLSeq2SeqConfig& config_in) : config(resolved(config_in)) {
  const VLSeq2SeqConfig& cfg = config;
  if (cfg.backbone == "t5") {
    t5 = std::make_unique<T5ForConditionalGeneration>(cfg.t5);
    for (const auto& [name, child] : t5->children()) register_module(name, child);
    visual_embedding = std::make_unique<VisualEmbedding>(cfg.feat_dim, cfg.t5.d_model, true,
                                                         cfg.t5.layer_norm_epsilon, &t5->shared);
  } else if (cfg.backbone == "bart") {
    bart = std::make_unique<BartForConditionalGeneration>(cfg.bart);
    for (const auto& [name, child] : bart->children()) register_module(name, child);
    register_buffer("final_logits_bias", &bart->final_logits_bias);
    visual_embedding = std::make_unique<VisualEmbedding>(cfg.feat_dim, cfg.bart.d_model, false, 1e-5,
                                                         &bart->model.shared);
    // BART's init: N(0, 0.02) weights, zero biases.
    normal_(visual_embedding->feat_proj.weight, 0.0, 0.02);
    zeros_(visual_embedding->feat_proj.bias);
    normal_(visual_embedding->pos_proj.weight, 0.0, 0.02);
    zeros_(visual_embedding->pos_proj.bias);
  } else {
    VLP_FAIL("VLSeq2Seq: backbone '", cfg.backbone, "' is not one of t5, bart");
  }
  register_module("visual_embedding", visual_embedding.get());
  if (cfg.vision) {
    vision_model = std::make_unique<ViTModel>(*cfg.vision, /*add_pooling_layer=*/false);
    register_module("vision_model", vision_model.get());
    // transformers' ViT init (initializer_range 0.02; normal, not truncated): Linear and patch-conv weights
    // N(0, 0.02), their biases 0 (ViTModel itself initialises CLS, positions and LayerNorms so). From scratch
    // this trains much faster than the layers' default (Kaiming-uniform) init: on the synthetic shape task the
    // demo-sized tower reached 98% after 750 steps with it, about 60% without.
    auto ends_with = [](const std::string& s, const std::string& e) {
      return s.size() >= e.size() && s.compare(s.size() - e.size(), e.size(), e) == 0;
    };
    for (auto& [name, p] : vision_model->named_parameters()) {
      if (name.find("layernorm") != std::string::npos) continue;
      if (ends_with(name, ".weight")) normal_(p, 0.0, 0.02);
      else if (ends_with(name, ".bias")) zeros_(p);
    }
  }
}

int64_t VLSeq2Seq::pad_token_id() const {
  const SpecialTokens& tk = t5 ? config.t5.tokens : config.bart.tokens;
  return tk.pad_token_id.value_or(t5 ? 0 : 1);
}

namespace {
// The context the backbone sees: routing functions read the visual tokens from ctx.visual, which defaults
// to this batch's visual embeddings.
ForwardContext with_visual(const ForwardContext& ctx, const Tensor& visual_embeds) {
  ForwardContext c = ctx;
  if (!c.visual.defined() && visual_embeds.defined()) c.visual = visual_embeds;
  return c;
}
}  // namespace

Tensor VLSeq2Seq::visual_embeds(const VisualInput& visual, const ForwardContext& ctx) const {
  if (!vision_model) {
    VLP_CHECK(!visual.pixels.defined(), "VLSeq2Seq: VisualInput.pixels given, but this model has no vision tower ",
              "(VLSeq2SeqConfig::vision unset): pass the visual features in VisualInput.feats");
    return visual.feats.defined() ? visual_embedding->forward(visual) : Tensor();
  }
  VLP_CHECK(!visual.feats.defined(), "VLSeq2Seq: VisualInput.feats given, but this model has a vision tower ",
            "(vision_model) that computes the features: pass the images in VisualInput.pixels");
  if (!visual.pixels.defined()) return Tensor();
  const int64_t n = visual.n_images;
  VLP_CHECK(visual.pixels.dim() == 4 && n >= 1 && visual.pixels.size(0) % n == 0,
            "VLSeq2Seq: VisualInput.pixels must be [B * n_images, C, H, W] with n_images = ", n, ", got ",
            shape_str(visual.pixels.shape()));
  Tensor patches = vision_model->forward(visual.pixels, ctx).patch_tokens();  // [B * n, g, D], CLS dropped
  VisualInput v = visual;
  v.pixels = Tensor();
  v.feats = reshape(patches, {patches.size(0) / n, n * patches.size(1), patches.size(2)});
  return visual_embedding->forward(v);
}

EncoderOutput VLSeq2Seq::encode(const Tensor& input_ids, const Tensor& attention_mask, const VisualInput& visual,
                                const ForwardContext& ctx) const {
  EncoderInput in;
  in.input_ids = input_ids;
  in.attention_mask = attention_mask;
  in.appended_embeds = visual_embeds(visual, ctx);
  if (in.appended_embeds.defined()) in.appended_mask = visual.mask;
  const ForwardContext c = with_visual(ctx, in.appended_embeds);
  return t5 ? t5->encode(in, c) : bart->encode(in, c);
}

Seq2SeqOutput VLSeq2Seq::forward(const Tensor& input_ids, const Tensor& attention_mask, const VisualInput& visual,
                                 const Tensor& labels, const ForwardContext& ctx) const {
  Seq2SeqInput in;
  const Tensor v = visual_embeds(visual, ctx);
  const ForwardContext c = with_visual(ctx, v);
  in.encoder.input_ids = input_ids;
  in.encoder.attention_mask = attention_mask;
  in.encoder.appended_embeds = v;
  if (v.defined()) in.encoder.appended_mask = visual.mask;
  in.encoder_output = t5 ? t5->encode(in.encoder, c) : bart->encode(in.encoder, c);
  in.labels = labels;
  return t5 ? t5->forward(in, c) : bart->forward(in, c);
}

GenerationOutput VLSeq2Seq::generate(const Tensor& input_ids, const Tensor& attention_mask,
                                     const VisualInput& visual, const GenerationOptions& options,
                                     const ForwardContext& ctx) const {
  EncoderInput in;
  in.input_ids = input_ids;
  in.attention_mask = attention_mask;
  in.appended_embeds = visual_embeds(visual, ctx);
  if (in.appended_embeds.defined()) in.appended_mask = visual.mask;
  const ForwardContext c = with_visual(ctx, in.appended_embeds);
  EncoderOutput enc = t5 ? t5->encode(in, c) : bart->encode(in, c);
  return t5 ? vlp::generate(*t5, enc, options, c) : vlp::generate(*bart, enc, options, c);
}

Tensor weighted_seq2seq_loss(const Tensor& logits, const Tensor& labels, const Tensor& weights) {
  VLP_CHECK(logits.dim() == 3 && labels.dim() == 2, "weighted_seq2seq_loss: logits [B, L, V], labels [B, L]");
  const int64_t B = logits.size(0), L = logits.size(1), V = logits.size(2);
  Tensor flat = reshape(to(logits, DType::F32), {B * L, V});
  Tensor tok = reshape(cross_entropy(flat, reshape(labels, {B * L}), -100, 0.0, Tensor(), Reduction::None), {B, L});
  // Count of labelled tokens per row (at least 1 so an all-ignored row contributes 0). The labels are read
  // on the host and the counts and weights follow the logits' device.
  std::vector<double> counts(size_t(B), 0.0);
  {
    const std::vector<double> p = to_vector(labels);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t < L; ++t) counts[size_t(b)] += p[size_t(b * L + t)] != -100 ? 1.0 : 0.0;
    for (double& n : counts) n = n > 0 ? n : 1.0;
  }
  Tensor per_example = div(sum(tok, {1}), from_vector(counts, {B}, DType::F32, logits.device()));
  if (weights.defined()) per_example = mul(per_example, to(to(weights, logits.device()), DType::F32));
  return mean(per_example);
}

}  // namespace vlp
