// The model side of the file-backed trainer (see trainer.h): the VL model's config for the data's
// vocabulary and features, a transformers checkpoint as its backbone, and a checkpoint's own config.
#include <filesystem>

#include "autograd/ops.h"
#include "models/checkpoint.h"
#include "models/config.h"
#include "runtime/error.h"
#include "runtime/rng.h"
#include "runtime/safetensors.h"
#include "tools/trainer/trainer.h"

namespace vlp::trainer {

VLSeq2SeqConfig file_model_config(const TrainConfig& c, const FileData& d) {
  VLSeq2SeqConfig m;
  if (!c.model_dir.empty()) {
    const std::string cfg = (std::filesystem::path(c.model_dir) / "config.json").string();
    const std::string type = read_model_type(cfg);
    VLP_CHECK(type == c.backbone, "model_dir '", c.model_dir, "' holds a '", type, "' model, key 'backbone' says '",
              c.backbone, "'");
    m.backbone = c.backbone;
    if (type == "t5") {
      m.t5 = read_t5_config(cfg);
      m.t5.vocab_size += c.vocab_extra_rows;
    } else {
      m.bart = read_bart_config(cfg);
      m.bart.vocab_size += c.vocab_extra_rows;
    }
    m.feat_dim = d.feat_dim;
    const int64_t V = type == "t5" ? m.t5.vocab_size : m.bart.vocab_size;
    VLP_CHECK(d.codec.size <= V, "tokenizer has ", d.codec.size, " tokens, the model's embedding ", V, " rows");
    return m;
  }
  m = model_config(c);
  m.feat_dim = d.feat_dim;
  const TextCodec& k = d.codec;
  m.t5.vocab_size = m.bart.vocab_size = k.size + c.vocab_extra_rows;
  m.t5.tokens.pad_token_id = m.bart.tokens.pad_token_id = k.pad;
  m.t5.tokens.eos_token_id = m.bart.tokens.eos_token_id = {k.eos};
  m.t5.tokens.decoder_start_token_id = k.pad;
  m.bart.tokens.bos_token_id = k.bos;
  m.bart.tokens.decoder_start_token_id = k.eos;
  m.bart.max_position_embeddings = std::max<int64_t>(64, std::max(c.max_text_length, c.max_target_length) + 2);
  return m;
}

void load_backbone_weights(Module& backbone, const TrainConfig& c) {
  auto* t5 = dynamic_cast<T5ForConditionalGeneration*>(&backbone);
  auto* bart = dynamic_cast<BartForConditionalGeneration*>(&backbone);
  auto* gpt2 = dynamic_cast<GPT2LMHeadModel*>(&backbone);
  VLP_CHECK(t5 || bart || gpt2, "load_backbone_weights: not a T5, BART or GPT-2 LM module");
  auto tensors = read_checkpoint(c.model_dir);
  if (c.vocab_extra_rows > 0) {
    // VL-BART's added tokens: new embedding rows N(0, 0.02) (BART's init_std), zero logit biases.
    const int64_t V = t5 ? t5->config.vocab_size : bart ? bart->config.vocab_size : gpt2->config.vocab_size;
    const int64_t old = V - c.vocab_extra_rows;
    Generator gen(c.seed + 17);
    for (auto& [name, t] : tensors) {
      const bool table = t.dim() == 2 && t.size(0) == old &&
                         (name.find("shared") != std::string::npos || name.find("embed_tokens") != std::string::npos ||
                          name.find("lm_head") != std::string::npos || name.find("wte") != std::string::npos);
      if (table) {
        Tensor extra = mul(randn({c.vocab_extra_rows, t.size(1)}, &gen), 0.02);
        t = concat({convert(t, DType::F32), extra}, 0);
      } else if (name.find("final_logits_bias") != std::string::npos && t.dim() == 2 && t.size(1) == old) {
        t = concat({convert(t, DType::F32), zeros({1, c.vocab_extra_rows})}, 1);
      }
    }
  }
  if (t5) load_checkpoint(*t5, tensors, checkpoint_rules(*t5));
  else if (bart) load_checkpoint(*bart, tensors, checkpoint_rules(*bart));
  else load_checkpoint(*gpt2, tensors, checkpoint_rules(*gpt2));
}

}  // namespace vlp::trainer
