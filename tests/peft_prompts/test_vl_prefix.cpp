// VLPEFT_PREFIX_TUNING (models/peft/prefix_tuning.h): prefixes in the encoder self-attention, decoder
// self-attention and decoder cross-attention of T5 / BART, one key/value block pair per site. With the decoder
// location alone and HF's table rearranged into that layout it gives HF PEFT's logits (fixtures t5_prefix,
// bart_prefix); every site reads its own blocks; gradients reach the table; files round-trip; GPT-2 takes
// the decoder location only.
#include <filesystem>

#include "models/peft/prefix_tuning.h"

#include "tests/peft/peft_fixture.h"

namespace vlp {
namespace {

using test::close_to_scale;

std::string prompt_fixture_dir(const std::string& name) {
  return std::string(VLP_SOURCE_DIR) + "/tests/fixtures/peft_prompts/" + name;
}

TEST(VlPrefix, DecoderLocationReproducesHfPeft) {
  for (const std::string kind : {"t5", "bart"}) {
    SCOPED_TRACE(kind);
    const std::string dir = prompt_fixture_dir(kind + "_prefix");
    auto fx = test::read_tensors(dir + "/fixture.safetensors");
    Tensor hf = test::read_tensors(dir + "/adapter_model.safetensors").at("prompt_embeddings");  // [3, 4 d]
    const int64_t d = 24;
    test::TinyModel m(kind);
    nlohmann::json j = {{"peft_type", "VLPEFT_PREFIX_TUNING"}, {"num_virtual_tokens", 3}, {"locations", {"decoder"}}};
    peft::add_adapter(m.module(), peft::parse_peft_config(j), "default", 1);
    auto* enc = peft::find_prompt_encoder(m.module(), "default");
    ASSERT_TRUE(enc);
    ASSERT_EQ(enc->embedding.weight.shape(), (Shape{3, 4 * d}));  // 2 decoder layers x (keys, values)
    {
      // HF: both decoder layers read blocks 0 and 1 (prefix_tuning.h); here layer l reads 2l and 2l + 1.
      NoGradGuard no_grad;
      Tensor first = narrow(hf, 1, 0, 2 * d);
      copy_(enc->embedding.weight, concat({first, first}, 1));
    }
    auto out = m.forward();
    EXPECT_TRUE(close_to_scale(out.logits, fx.at("logits"), 1e-5));
    EXPECT_NEAR(out.loss.item(), fx.at("loss").item(), 1e-5 * std::abs(fx.at("loss").item()));
  }
}

TEST(VlPrefix, EverySiteReadsItsOwnBlocksAndFilesRoundTrip) {
  for (const std::string kind : {"t5", "bart"}) {
    SCOPED_TRACE(kind);
    test::TinyModel m(kind);
    Tensor base = m.logits();
    nlohmann::json j = {{"peft_type", "VLPEFT_PREFIX_TUNING"}, {"num_virtual_tokens", 2}, {"prefix_projection", true},
                        {"encoder_hidden_size", 7}};
    peft::PeftConfig config = peft::parse_peft_config(j);
    peft::add_adapter(m.module(), config, "default", 2);
    // Encoder self (2), decoder self (2), cross (2), in that order.
    size_t sites = 0, encoder_sites = 0, cross_sites = 0;
    for (auto& [name, site] : peft::attention_sites(m.module()))
      if (!site->adapters.empty()) {
        ++sites;
        encoder_sites += name.find("encoder.") != std::string::npos && name.find("decoder") == std::string::npos;
        cross_sites += name.find("EncDecAttention") != std::string::npos || name.find("encoder_attn") != std::string::npos;
      }
    EXPECT_EQ(sites, 6u);
    EXPECT_EQ(encoder_sites, 2u);
    EXPECT_EQ(cross_sites, 2u);
    auto* enc = peft::find_prompt_encoder(m.module(), "default");
    ASSERT_TRUE(enc);
    ASSERT_EQ(enc->layers.size(), 2u);
    EXPECT_EQ(enc->layers[1]->weight.shape(), (Shape{6 * 2 * 24, 7}));
    Tensor adapted = m.logits();
    EXPECT_FALSE(close_to_scale(adapted, base, 1e-4));
    // Each block pair k feeds one site: changing its rows of the last layer changes the logits.
    for (int64_t k = 0; k < 6; ++k) {
      test::TinyModel t(kind);
      peft::add_adapter(t.module(), config, "default", 2);
      auto* e = peft::find_prompt_encoder(t.module(), "default");
      {
        NoGradGuard no_grad;
        Tensor rows = narrow(e->layers[1]->bias, 0, 2 * k * 24, 2 * 24);
        copy_(rows, rows + 3.0);
      }
      EXPECT_FALSE(close_to_scale(t.logits(), adapted, 1e-4)) << "block pair " << k;
    }
    // Gradients reach the table and the MLP, nothing frozen.
    backward(m.forward().loss);
    EXPECT_TRUE(test::grads_exactly_on_trainable(m.module()));
    // Files: the table and the MLP under "prompt_encoder.", loaded back to the same logits.
    const auto dir = std::filesystem::path(VLP_BINARY_DIR) / "peft_prompts_written" / ("vl_prefix_" + kind);
    std::filesystem::remove_all(dir);
    peft::save_adapter(m.module(), config, "default", dir.string());
    auto file = test::read_tensors((dir / "adapter_model.safetensors").string());
    std::set<std::string> keys;
    for (auto& [k, t] : file) keys.insert(k);
    EXPECT_EQ(keys, (std::set<std::string>{"prompt_encoder.embedding.weight", "prompt_encoder.transform.0.weight",
                                           "prompt_encoder.transform.0.bias", "prompt_encoder.transform.2.weight",
                                           "prompt_encoder.transform.2.bias"}));
    test::TinyModel again(kind);
    peft::load_adapter(again.module(), dir.string());
    EXPECT_TRUE(close_to_scale(again.logits(), adapted, 0));
  }
}

TEST(VlPrefix, LocationsAreChecked) {
  test::TinyModel gpt2("gpt2");
  nlohmann::json j = {{"peft_type", "VLPEFT_PREFIX_TUNING"}, {"num_virtual_tokens", 2}};
  peft::add_adapter(gpt2.module(), peft::parse_peft_config(j));  // decoder self-attention by default
  EXPECT_EQ(peft::find_prompt_encoder(gpt2.module(), "default")->embedding.weight.shape(), (Shape{2, 2 * 2 * 24}));
  test::TinyModel gpt2b("gpt2");
  j["locations"] = {"encoder"};
  EXPECT_THROW(peft::add_adapter(gpt2b.module(), peft::parse_peft_config(j)), Error);
  test::TinyModel t5("t5");
  j["locations"] = {"decoder", "middle"};
  EXPECT_THROW(peft::add_adapter(t5.module(), peft::parse_peft_config(j)), Error);
  j["locations"] = nlohmann::json::array();
  EXPECT_THROW(peft::add_adapter(t5.module(), peft::parse_peft_config(j)), Error);
}

}  // namespace
}  // namespace vlp
