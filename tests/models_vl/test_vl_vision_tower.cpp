// VL-T5 / VL-BART with a ViT vision tower (VLSeq2SeqConfig::vision): equal to running our ViTModel and then the
// same VL model on its patch tokens as features, checkpoint-like parameter names, gradients that reach every
// tower parameter (finite differences on two of them) and none when the tower is frozen, a safetensors
// round trip, and the errors for a visual input that does not fit the model.
#include <gtest/gtest.h>

#include <cmath>

#include "autograd/ops.h"
#include "models/vl/vl_seq2seq.h"
#include "runtime/rng.h"
#include "runtime/safetensors.h"
#include "tests/common/test_util.h"

using namespace vlp;
using namespace vlp::test;

namespace {

ViTConfig tiny_vit() {
  ViTConfig v;
  v.hidden_size = 12;
  v.num_hidden_layers = 2;
  v.num_attention_heads = 2;
  v.intermediate_size = 20;
  v.image_size = v.image_height = v.image_width = 8;
  v.patch_size = 4;  // 2 x 2 patches
  return v;
}

VLSeq2SeqConfig tiny(const std::string& backbone, bool tower) {
  VLSeq2SeqConfig c;
  c.backbone = backbone;
  c.feat_dim = 12;
  if (tower) c.vision = tiny_vit();
  c.t5.vocab_size = 40; c.t5.d_model = 16; c.t5.d_kv = 4; c.t5.num_heads = 4; c.t5.d_ff = 24;
  c.t5.num_layers = 1; c.t5.relative_attention_num_buckets = 8; c.t5.relative_attention_max_distance = 16;
  c.t5.dense_act_fn = "relu";
  c.t5.tokens.pad_token_id = 0; c.t5.tokens.eos_token_id = {1}; c.t5.tokens.decoder_start_token_id = 0;
  c.bart.vocab_size = 40; c.bart.d_model = 16; c.bart.max_position_embeddings = 32;
  c.bart.encoder_layers = 1; c.bart.decoder_layers = 1; c.bart.encoder_attention_heads = 2;
  c.bart.decoder_attention_heads = 2; c.bart.encoder_ffn_dim = 24; c.bart.decoder_ffn_dim = 24;
  c.bart.tokens.pad_token_id = 1; c.bart.tokens.bos_token_id = 0; c.bart.tokens.eos_token_id = {2};
  c.bart.tokens.decoder_start_token_id = 2;
  return c;
}

Tensor ids(const std::vector<int64_t>& v, int64_t B, int64_t T) { return from_data<int64_t>(v, {B, T}); }

const std::string kTower = "vision_model.";

bool starts_with(const std::string& s, const std::string& p) { return s.rfind(p, 0) == 0; }

// Copies `from`'s tensors into `to` by name (tensors `to` lacks are skipped); `strip` is removed from the front
// of from's names first.
void copy_by_name(const Module& from, Module& to, const std::string& strip = "") {
  std::map<std::string, Tensor> dst;
  for (auto& [n, t] : to.state_dict()) dst[n] = t;
  for (auto& [n, t] : from.state_dict()) {
    if (!strip.empty() && !starts_with(n, strip)) continue;
    auto it = dst.find(n.substr(strip.size()));
    if (it != dst.end()) copy_(it->second, t);
  }
}

}  // namespace

TEST(VLVisionTower, ParameterNamesFollowViTModel) {
  VLSeq2Seq m(tiny("t5", true));
  ASSERT_TRUE(m.vision_model);
  EXPECT_FALSE(m.vision_model->pooler);
  std::map<std::string, Shape> shapes;
  for (auto& [n, p] : m.named_parameters()) shapes[n] = p.shape();
  EXPECT_EQ(shapes["vision_model.embeddings.patch_embeddings.projection.weight"], (Shape{12, 3, 4, 4}));
  EXPECT_EQ(shapes["vision_model.embeddings.cls_token"], (Shape{1, 1, 12}));
  EXPECT_EQ(shapes["vision_model.embeddings.position_embeddings"], (Shape{1, 5, 12}));
  EXPECT_EQ(shapes["vision_model.encoder.layer.1.attention.attention.query.weight"], (Shape{12, 12}));
  EXPECT_EQ(shapes["vision_model.layernorm.weight"], (Shape{12}));
  EXPECT_EQ(shapes["visual_embedding.feat_embedding.0.weight"], (Shape{16, 12}));  // W_f reads the tower's width
  for (auto& [n, s] : shapes) EXPECT_FALSE(starts_with(n, "vision_model.pooler")) << n;
  // Every tower parameter, and nothing else, is under vision_model.
  EXPECT_EQ(m.vision_model->num_parameters() + VLSeq2Seq(tiny("t5", false)).num_parameters(), m.num_parameters());
  EXPECT_EQ(m.vision_model->num_parameters(), vit_num_parameters(tiny_vit(), false) - (12 * 12 + 12));  // no pooler
}

// The VL model with a tower = our ViTModel over the pixels, CLS dropped, then the tower-less VL model with the
// same weights on those patch tokens as features; for one and for two images per example.
TEST(VLVisionTower, EqualsViTThenFeatures) {
  for (const char* bb : {"t5", "bart"}) {
    for (int64_t n_images : {1, 2}) {
      manual_seed(21);
      VLSeq2Seq with(tiny(bb, true));
      manual_seed(22);
      VLSeq2Seq without(tiny(bb, false));
      ViTModel vit(tiny_vit(), /*add_pooling_layer=*/false);
      copy_by_name(with, without);
      copy_by_name(with, vit, kTower);
      Generator g(23);
      const int64_t B = 2;
      VisualInput px;
      px.pixels = randn({B * n_images, 3, 8, 8}, &g);
      px.n_images = n_images;
      VisualInput ft;
      Tensor last = vit.forward(px.pixels).last_hidden_state;  // [B n, 1 + 4, 12]
      ASSERT_EQ(last.shape(), (Shape{B * n_images, 5, 12}));
      ft.feats = reshape(narrow(last, 1, 1, 4), {B, n_images * 4, 12});
      ft.n_images = n_images;
      Tensor text = ids({5, 6, 7, 8, 9, 10}, B, 3);
      Tensor labels = ids({11, 12, 13, 14, 15, -100}, B, 3);
      Seq2SeqOutput a = with.forward(text, Tensor(), px, labels);
      Seq2SeqOutput b = without.forward(text, Tensor(), ft, labels);
      EXPECT_TRUE(all_close(a.logits, b.logits, 1e-5, 1e-6)) << bb << " n_images " << n_images;
      EXPECT_NEAR(a.loss.item(), b.loss.item(), 1e-6) << bb;
      EXPECT_EQ(with.encode(text, Tensor(), px).hidden.size(1), 3 + n_images * 4);
      // The visual tokens themselves.
      EXPECT_TRUE(all_close(with.visual_embeds(px), without.visual_embeds(ft), 1e-6, 1e-7));
      GenerationOptions opt;
      opt.max_new_tokens = 3;
      EXPECT_TRUE(all_close(with.generate(text, Tensor(), px, opt).sequences,
                            without.generate(text, Tensor(), ft, opt).sequences, 0, 0));
    }
  }
}

// Backward reaches every tower parameter (values checked by finite differences on the patch projection and a
// query weight); a frozen tower gets no gradient while the visual embedding still does.
TEST(VLVisionTower, GradientsReachTheTowerUnlessFrozen) {
  for (const char* bb : {"t5", "bart"}) {
    manual_seed(31);
    VLSeq2Seq m(tiny(bb, true));
    m.set_requires_grad(true);
    Generator g(32);
    VisualInput vi;
    vi.pixels = randn({2, 3, 8, 8}, &g);
    Tensor text = ids({5, 6, 7, 8, 9, 10}, 2, 3);
    Tensor labels = ids({11, 12, 13, 13, 14, 15}, 2, 3);
    auto loss_of = [&] { return m.forward(text, Tensor(), vi, labels).loss; };
    backward(loss_of());
    for (auto& [n, p] : m.vision_model->named_parameters()) {
      ASSERT_TRUE(p.grad().defined()) << bb << " " << n;
      double norm = 0;
      for (double v : to_vector(p.grad())) norm += v * v;
      EXPECT_GT(norm, 0.0) << bb << " " << n;
    }
    for (Tensor* p : {&m.vision_model->embeddings.projection.weight,
                      &m.vision_model->encoder.layers[0]->attention.query.weight}) {
      const std::vector<double> grad = to_vector(p->grad());
      for (int64_t idx : {int64_t(0), int64_t(5)}) {
        const double fd = test::central_difference(*p, idx, 1e-2, [&] { return loss_of().item(); });
        EXPECT_NEAR(grad[size_t(idx)], fd, 2e-4 + 0.05 * std::abs(fd)) << bb << " index " << idx;
      }
    }
    // Frozen tower (as the trainer does for every PEFT method): no gradient there, the rest still learns.
    manual_seed(31);
    VLSeq2Seq f(tiny(bb, true));
    f.set_requires_grad(true);
    f.vision_model->set_requires_grad(false);
    backward(f.forward(text, Tensor(), vi, labels).loss);
    for (auto& [n, p] : f.vision_model->named_parameters()) EXPECT_FALSE(p.grad().defined()) << bb << " " << n;
    EXPECT_TRUE(f.visual_embedding->feat_proj.weight.grad().defined()) << bb;
  }
}

TEST(VLVisionTower, SafetensorsRoundTrip) {
  manual_seed(41);
  VLSeq2Seq a(tiny("t5", true));
  const std::string path = (temp_dir("vl_vision_tower") / "model.safetensors").string();
  save_safetensors(path, a.state_dict());
  manual_seed(42);  // other initial weights
  VLSeq2Seq b(tiny("t5", true));
  Generator g(43);
  VisualInput vi;
  vi.pixels = randn({1, 3, 8, 8}, &g);
  Tensor text = ids({5, 6, 7}, 1, 3);
  Tensor labels = ids({11, 12, 13}, 1, 3);
  const double before = b.forward(text, Tensor(), vi, labels).loss.item();
  StateDictReport r = load_state_dict(b, load_safetensors(path).tensors);
  EXPECT_TRUE(r.ok()) << r.describe();
  EXPECT_NE(before, a.forward(text, Tensor(), vi, labels).loss.item());
  EXPECT_TRUE(all_close(a.forward(text, Tensor(), vi, labels).logits, b.forward(text, Tensor(), vi, labels).logits, 0, 0));
  // A checkpoint without the tower does not fit a model with one: the tower's tensors are named missing.
  VLSeq2Seq c(tiny("t5", false));
  StateDictReport missing = load_state_dict(b, c.state_dict(), /*strict=*/false);
  ASSERT_FALSE(missing.missing.empty());
  EXPECT_TRUE(starts_with(missing.missing[0], kTower)) << missing.describe();
}

TEST(VLVisionTower, InputErrorsNameTheField) {
  VLSeq2Seq with(tiny("t5", true)), without(tiny("t5", false));
  Tensor text = ids({5, 6, 7}, 1, 3);
  VisualInput feats;
  feats.feats = zeros({1, 4, 12});
  VisualInput pixels;
  pixels.pixels = zeros({1, 3, 8, 8});
  EXPECT_NE(error_of([&] { with.encode(text, Tensor(), feats); }).find("pass the images in VisualInput.pixels"),
            std::string::npos);
  EXPECT_NE(error_of([&] { without.encode(text, Tensor(), pixels); }).find("VisualInput.pixels given, but this model "
                                                                             "has no vision tower"),
            std::string::npos);
  VisualInput odd;
  odd.pixels = zeros({3, 3, 8, 8});
  odd.n_images = 2;
  EXPECT_NE(error_of([&] { with.encode(text, Tensor(), odd); }).find("VisualInput.pixels must be [B * n_images, C, H, W]"),
            std::string::npos);
  VisualInput wrong_size;
  wrong_size.pixels = zeros({1, 3, 12, 12});
  EXPECT_NE(error_of([&] { with.encode(text, Tensor(), wrong_size); }).find("doesn't match the model"), std::string::npos);
  // Text only: no visual tokens either way.
  EXPECT_EQ(with.encode(text, Tensor(), VisualInput()).hidden.size(1), 3);
}
