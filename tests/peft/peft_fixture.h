// Helpers for the PEFT tests: the tiny reference backbones of tests/fixtures/models with their batches, one
// forward for all of them, and the HF PEFT fixtures of tools/reference/make_peft_fixtures.py
// (tests/fixtures/peft/<case>/).
#pragma once
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <string>

#include "models/peft/peft.h"
#include "models/vit.h"
#include "tests/models/text_fixture.h"

namespace vlp::test {

inline std::string peft_fixture_dir(const std::string& name) {
  return std::string(VLP_SOURCE_DIR) + "/tests/fixtures/peft/" + name;
}

inline std::map<std::string, Tensor> read_tensors(const std::string& path) {
  std::map<std::string, Tensor> out;
  for (auto& [k, t] : load_safetensors(path).tensors) out[k] = t;
  return out;
}

// One tiny backbone ("gpt2", "t5", "bart", "vit") with its reference weights and batch.
struct TinyModel {
  std::string kind;
  std::unique_ptr<GPT2LMHeadModel> gpt2;
  std::unique_ptr<T5ForConditionalGeneration> t5;
  std::unique_ptr<BartForConditionalGeneration> bart;
  std::unique_ptr<ViTForImageClassification> vit;
  std::map<std::string, Tensor> batch;

  explicit TinyModel(const std::string& k) : kind(k) {
    if (kind == "vit") {
      vit = load_vit_for_image_classification(model_fixture_dir("vit/classifier"));
      batch = read_tensors(model_fixture_dir("vit/classifier") + "/fixture.safetensors");
      return;
    }
    const std::string dir = model_fixture_dir(kind);
    batch = read_fixture(kind);
    if (kind == "gpt2") gpt2 = std::make_unique<GPT2LMHeadModel>(read_gpt2_config(dir)), load_checkpoint(*gpt2, dir);
    else if (kind == "t5") t5 = std::make_unique<T5ForConditionalGeneration>(read_t5_config(dir)), load_checkpoint(*t5, dir);
    else if (kind == "bart") bart = std::make_unique<BartForConditionalGeneration>(read_bart_config(dir)), load_checkpoint(*bart, dir);
    else VLP_FAIL("TinyModel: unknown kind ", kind);
  }

  Module& module() {
    if (gpt2) return *gpt2;
    if (t5) return *t5;
    if (bart) return *bart;
    return *vit;
  }

  struct Out {
    Tensor logits, loss;
  };
  Out forward(const ForwardContext& ctx = {}) {
    if (gpt2) {
      GPT2Input in;
      in.input_ids = batch.at("input_ids");
      in.attention_mask = batch.at("attention_mask");
      in.labels = batch.at("labels");
      auto o = gpt2->forward(in, ctx);
      return {o.logits, o.loss};
    }
    if (vit) {
      auto o = vit->forward(batch.at("pixel_values"), ctx);
      return {o.logits, cross_entropy(o.logits, batch.at("labels"))};
    }
    Seq2SeqInput in;
    in.encoder.input_ids = batch.at("input_ids");
    in.encoder.attention_mask = batch.at("attention_mask");
    in.decoder_input_ids = batch.at("decoder_input_ids");
    in.labels = batch.at("labels");
    Seq2SeqOutput o = t5 ? t5->forward(in, ctx) : bart->forward(in, ctx);
    return {o.logits, o.loss};
  }

  Tensor logits() {
    NoGradGuard no_grad;
    return forward().logits;
  }
};

// After one backward: exactly the trainable parameters have gradients.
inline ::testing::AssertionResult grads_exactly_on_trainable(Module& model) {
  for (auto& [name, p] : model.named_parameters()) {
    if (p.requires_grad() && !p.grad().defined())
      return ::testing::AssertionFailure() << "trainable " << name << " got no gradient";
    if (!p.requires_grad() && p.grad().defined())
      return ::testing::AssertionFailure() << "frozen " << name << " has a gradient buffer";
  }
  return ::testing::AssertionSuccess();
}

inline std::string read_text(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

}  // namespace vlp::test
