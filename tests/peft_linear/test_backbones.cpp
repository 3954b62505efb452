// Each Linear-site method on the tiny reference backbones (tests/fixtures/models/{t5,gpt2}) with its
// default targets: the adapter directory HF PEFT saved loads through load_adapter, and the logits, loss and
// adapter gradients equal HF PEFT's (tests/fixtures/peft_linear/backbone/<case>/reference.safetensors).
#include "fixture.h"
#include "models/checkpoint.h"
#include "models/config.h"
#include "models/gpt2.h"
#include "models/t5.h"
#include "tests/models/text_fixture.h"

namespace vlp::test {
namespace {

struct BackboneCase {
  const char* name;
  const char* backbone;
};

const BackboneCase kBackboneCases[] = {
    {"t5_loha", "t5"},   {"t5_lokr", "t5"}, {"t5_oft", "t5"},      {"t5_hra", "t5"},
    {"t5_boft", "t5"},   {"t5_vera", "t5"}, {"t5_fourierft", "t5"}, {"gpt2_vera", "gpt2"},
    {"gpt2_fourierft", "gpt2"},
};

std::string param_file_key(const std::string& name) {
  if (name.rfind("peft_shared.default.", 0) == 0) return "base_model." + name.substr(20);
  std::string p = name;
  const std::string tag = ".adapters.default";
  if (auto at = p.find(tag); at != std::string::npos) p.erase(at, tag.size());
  return "base_model.model." + p;
}

class PeftLinearBackbone : public ::testing::TestWithParam<BackboneCase> {};

TEST_P(PeftLinearBackbone, MatchesHfPeft) {
  const BackboneCase& c = GetParam();
  const std::string dir = fixture_path(std::string("backbone/") + c.name);
  SafetensorsFile ref = load_safetensors(dir + "/reference.safetensors");
  auto fx = read_fixture(c.backbone);
  const std::string model_dir = model_fixture_dir(c.backbone);
  std::unique_ptr<Module> model;
  std::function<std::pair<Tensor, Tensor>()> run;
  if (std::string(c.backbone) == "t5") {
    auto m = std::make_unique<T5ForConditionalGeneration>(read_t5_config(model_dir));
    load_checkpoint(*m, model_dir);
    auto* raw = m.get();
    run = [raw, &fx] {
      Seq2SeqInput in;
      in.encoder.input_ids = fx.at("input_ids");
      in.encoder.attention_mask = fx.at("attention_mask");
      in.labels = fx.at("labels");
      Seq2SeqOutput out = raw->forward(in);
      return std::pair{out.logits, out.loss};
    };
    model = std::move(m);
  } else {
    auto m = std::make_unique<GPT2LMHeadModel>(read_gpt2_config(model_dir));
    load_checkpoint(*m, model_dir);
    auto* raw = m.get();
    run = [raw, &fx] {
      GPT2Input in;
      in.input_ids = fx.at("input_ids");
      in.attention_mask = fx.at("attention_mask");
      in.labels = fx.at("labels");
      CausalLMOutput out = raw->forward(in);
      return std::pair{out.logits, out.loss};
    };
    model = std::move(m);
  }
  model->train(false);
  peft::load_adapter(*model, dir);
  auto [logits, loss] = run();
  EXPECT_TRUE(close_to_scale(logits, ref.at("logits"), 1e-5));
  EXPECT_NEAR(loss.item(), ref.at("loss").item(), 1e-5 * std::abs(ref.at("loss").item()));
  backward(loss);
  size_t compared = 0, expected = 0;
  for (auto& [k, t] : ref.tensors) expected += k.rfind("grad.", 0) == 0;
  for (auto& [name, p] : model->named_parameters()) {
    if (!p.requires_grad()) continue;
    const Tensor* g = ref.find("grad." + param_file_key(name));
    ASSERT_NE(g, nullptr) << "trainable " << name << " has no HF gradient";
    ASSERT_TRUE(p.grad().defined()) << name;
    EXPECT_TRUE(close_in_norm(p.grad(), *g, 1e-4, 1e-7)) << "gradient of " << name;
    ++compared;
  }
  EXPECT_EQ(compared, expected) << "trainable set differs from HF PEFT's";
}

INSTANTIATE_TEST_SUITE_P(Cases, PeftLinearBackbone, ::testing::ValuesIn(kBackboneCases),
                         [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace vlp::test
