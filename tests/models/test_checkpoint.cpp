// Hugging Face checkpoints and configs: loading the reference checkpoints, every kind of mismatch named in
// the error, transformers' conventions (tied copies, ignored keys, base-model prefixes, optional buffers),
// sharded save and load, config errors naming the key, and parameter counts of the published models equal
// to transformers' (tests/fixtures/models/param_counts.json, recorded by the reference script).
#include <fstream>

#include <nlohmann/json.hpp>

#include "tests/models/text_fixture.h"

namespace vlp {
namespace {

namespace fs = std::filesystem;

std::vector<std::pair<std::string, Tensor>> gpt2_tensors() {
  return read_checkpoint(test::model_fixture_dir("gpt2"));
}

std::string load_error(const std::vector<std::pair<std::string, Tensor>>& tensors, bool allow_conversion = true) {
  GPT2LMHeadModel model(read_gpt2_config(test::model_fixture_dir("gpt2")));
  try {
    load_checkpoint(model, tensors, checkpoint_rules(model), true, allow_conversion);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

Tensor& find(std::vector<std::pair<std::string, Tensor>>& tensors, const std::string& name) {
  for (auto& [n, t] : tensors)
    if (n == name) return t;
  throw std::runtime_error("no tensor " + name);
}

TEST(Checkpoint, ReferenceCheckpointsLoadStrictly) {
  // The files transformers' save_pretrained wrote: tied weights once, nothing missing or unexpected.
  for (const std::string name : {"gpt2", "t5", "t5v11", "bart"}) {
    const std::string dir = test::model_fixture_dir(name);
    StateDictReport r;
    if (name == "gpt2") {
      GPT2LMHeadModel m(read_gpt2_config(dir));
      r = load_checkpoint(m, dir);
    } else if (name == "bart") {
      BartForConditionalGeneration m(read_bart_config(dir));
      r = load_checkpoint(m, dir);
      EXPECT_NE(to_vector(m.final_logits_bias)[0], 0.0) << "the buffer is loaded";
    } else {
      T5ForConditionalGeneration m(read_t5_config(dir));
      r = load_checkpoint(m, dir);
    }
    EXPECT_TRUE(r.ok()) << name << ":\n" << r.describe();
  }
}

TEST(Checkpoint, WrongShapeIsNamed) {
  auto t = gpt2_tensors();
  find(t, "transformer.h.1.mlp.c_fc.weight") = zeros({3, 4});
  std::string msg = load_error(t);
  EXPECT_NE(msg.find("transformer.h.1.mlp.c_fc.weight"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[3, 4]"), std::string::npos) << msg;
}

TEST(Checkpoint, MissingAndUnexpectedAreAllNamed) {
  auto t = gpt2_tensors();
  t.erase(std::remove_if(t.begin(), t.end(), [](auto& e) {
            return e.first == "transformer.ln_f.bias" || e.first == "transformer.h.0.attn.c_proj.weight";
          }),
          t.end());
  t.push_back({"transformer.h.0.attn.extra", zeros({2})});
  std::string msg = load_error(t);
  EXPECT_NE(msg.find("missing: transformer.ln_f.bias"), std::string::npos) << msg;
  EXPECT_NE(msg.find("missing: transformer.h.0.attn.c_proj.weight"), std::string::npos) << msg;
  EXPECT_NE(msg.find("unexpected: transformer.h.0.attn.extra"), std::string::npos) << msg;
}

TEST(Checkpoint, WrongDtypeIsNamed) {
  auto t = gpt2_tensors();
  Tensor& w = find(t, "transformer.wpe.weight");
  w = convert(w, DType::I64);
  std::string msg = load_error(t);
  EXPECT_NE(msg.find("transformer.wpe.weight: checkpoint I64"), std::string::npos) << msg;
  // Floating dtypes convert, unless conversion is off.
  auto t2 = gpt2_tensors();
  Tensor& w2 = find(t2, "transformer.wte.weight");
  w2 = convert(w2, DType::F64);
  EXPECT_EQ(load_error(t2), "");
  std::string strict = load_error(t2, false);
  EXPECT_NE(strict.find("transformer.wte.weight: checkpoint F64"), std::string::npos) << strict;
}

TEST(Checkpoint, TransformersConventions) {
  // A GPT-2 checkpoint as the hub stores it: base-model names, causal-mask buffers, the tied lm_head copy.
  auto t = gpt2_tensors();
  std::vector<std::pair<std::string, Tensor>> hub;
  for (auto& [name, tensor] : t) hub.push_back({name.substr(std::string("transformer.").size()), tensor});
  hub.push_back({"h.0.attn.bias", ones({1, 1, 4, 4})});
  hub.push_back({"h.1.attn.masked_bias", scalar_tensor(-1e4)});
  hub.push_back({"lm_head.weight", find(t, "transformer.wte.weight")});
  EXPECT_EQ(load_error(hub), "");
  // A tied copy that differs means the config does not describe the checkpoint.
  hub.back().second = zeros_like(find(t, "transformer.wte.weight"));
  std::string msg = load_error(hub);
  EXPECT_NE(msg.find("lm_head.weight: differs from transformer.wte.weight"), std::string::npos) << msg;
  // BART: final_logits_bias may be absent (stays zero); the versions keys are ignored.
  const std::string dir = test::model_fixture_dir("bart");
  BartForConditionalGeneration bart(read_bart_config(dir));
  auto b = read_checkpoint(dir);
  b.erase(std::remove_if(b.begin(), b.end(), [](auto& e) { return e.first == "final_logits_bias"; }), b.end());
  b.push_back({"model.encoder.version", scalar_tensor(2)});
  b.push_back({"model.decoder.embed_tokens.weight", find(b, "model.shared.weight")});
  EXPECT_TRUE(load_checkpoint(bart, b, checkpoint_rules(bart)).ok());
  EXPECT_EQ(to_vector(bart.final_logits_bias), std::vector<double>(size_t(bart.config.vocab_size), 0.0));
}

TEST(Checkpoint, SaveAndReloadShardedAndWhole) {
  const std::string dir = test::model_fixture_dir("t5");
  T5ForConditionalGeneration model(read_t5_config(dir));
  load_checkpoint(model, dir);
  fs::path tmp = test::temp_dir("t5_checkpoint");
  save_checkpoint(model, (tmp / "whole").string());
  save_checkpoint(model, (tmp / "sharded").string(), 40000);
  EXPECT_TRUE(fs::exists(tmp / "whole" / "model.safetensors"));
  ASSERT_TRUE(fs::exists(tmp / "sharded" / "model.safetensors.index.json"));
  int shards = 0;
  for (auto& e : fs::directory_iterator(tmp / "sharded")) shards += e.path().extension() == ".safetensors";
  EXPECT_GT(shards, 1);
  for (const char* sub : {"whole", "sharded"}) {
    T5ForConditionalGeneration copy(read_t5_config(dir));
    EXPECT_TRUE(load_checkpoint(copy, (tmp / sub).string()).ok()) << sub;
    auto a = model.state_dict(), b = copy.state_dict();
    ASSERT_EQ(a.size(), b.size());
    for (size_t i = 0; i < a.size(); ++i) {
      EXPECT_EQ(a[i].first, b[i].first);
      EXPECT_EQ(to_vector(a[i].second), to_vector(b[i].second)) << a[i].first;
    }
  }
  // An index that points a tensor at a shard which does not hold it: the error names the tensor.
  nlohmann::json index;
  std::ifstream(tmp / "sharded" / "model.safetensors.index.json") >> index;
  const std::string home = index["weight_map"]["shared.weight"];
  for (auto& [name, file] : index["weight_map"].items())
    if (file.get<std::string>() != home) {
      index["weight_map"]["shared.weight"] = file;
      break;
    }
  std::ofstream(tmp / "sharded" / "model.safetensors.index.json") << index.dump();
  try {
    read_checkpoint((tmp / "sharded").string());
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("shared.weight"), std::string::npos) << e.what();
  }
  fs::remove_all(tmp);
}

// ---- configs ----

TEST(Config, MissingRequiredKeyNamesKeyAndFile) {
  try {
    parse_gpt2_config(R"({"vocab_size": 10, "n_positions": 8, "n_embd": 8, "n_head": 2})", "my/config.json");
    FAIL() << "no error";
  } catch (const Error& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find("\"n_layer\""), std::string::npos) << msg;
    EXPECT_NE(msg.find("my/config.json"), std::string::npos) << msg;
  }
  for (const char* key : {"d_kv", "num_heads"}) {
    nlohmann::json j = {{"vocab_size", 10}, {"d_model", 8}, {"d_kv", 4}, {"d_ff", 16}, {"num_layers", 1}, {"num_heads", 2}};
    j.erase(key);
    try {
      parse_t5_config(j.dump(), "t5.json");
      FAIL() << "no error for " << key;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(std::string("\"") + key + "\""), std::string::npos) << e.what();
    }
  }
  EXPECT_THROW(read_bart_config("/nonexistent/dir"), Error);
}

TEST(Config, WrongValuesNameTheKey) {
  auto message = [](const std::string& text) -> std::string {
    try {
      parse_bart_config(text, "bart.json");
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  };
  nlohmann::json base = {{"vocab_size", 10},          {"d_model", 8},         {"max_position_embeddings", 16},
                         {"encoder_layers", 1},       {"decoder_layers", 1},  {"encoder_attention_heads", 2},
                         {"decoder_attention_heads", 2}, {"encoder_ffn_dim", 16}, {"decoder_ffn_dim", 16}};
  EXPECT_EQ(message(base.dump()), "");
  nlohmann::json j = base;
  j["d_model"] = "eight";
  EXPECT_NE(message(j.dump()).find("\"d_model\" must be an integer"), std::string::npos);
  j = base;
  j["activation_function"] = "swishy";
  EXPECT_NE(message(j.dump()).find("activation_function"), std::string::npos);
  j = base;
  j["scale_embedding"] = 1;
  EXPECT_NE(message(j.dump()).find("\"scale_embedding\" must be true or false"), std::string::npos);
  j = base;
  j["some_future_key"] = {1, 2, 3};  // unknown keys are ignored
  EXPECT_EQ(message(j.dump()), "");
  nlohmann::json t5 = {{"vocab_size", 10}, {"d_model", 8}, {"d_kv", 4}, {"d_ff", 16}, {"num_layers", 1},
                       {"num_heads", 2},   {"feed_forward_proj", "gated-gelu-x"}};
  try {
    parse_t5_config(t5.dump(), "t5.json");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("feed_forward_proj"), std::string::npos) << e.what();
  }
}

TEST(Config, ParameterCountsEqualTransformers) {
  nlohmann::json counts;
  std::ifstream(test::model_fixture_dir("") + "param_counts.json") >> counts;
  const std::string configs = std::string(VLP_SOURCE_DIR) + "/configs/hf/";
  for (const char* name : {"gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl"})
    EXPECT_EQ(num_parameters(read_gpt2_config(configs + name + ".json")), counts[name].get<int64_t>()) << name;
  EXPECT_EQ(num_parameters(read_t5_config(configs + "t5-base.json")), counts["t5-base"].get<int64_t>());
  EXPECT_EQ(num_parameters(read_t5_config(configs + "t5-v1_1-base.json")), counts["t5-v1_1-base"].get<int64_t>());
  EXPECT_EQ(num_parameters(read_bart_config(configs + "bart-base.json")), counts["bart-base"].get<int64_t>());
  EXPECT_EQ(counts["gpt2"].get<int64_t>(), 124439808);  // the published figure, for the record
  EXPECT_EQ(read_model_type(configs + "t5-v1_1-base.json"), "t5");
}

}  // namespace
}  // namespace vlp
