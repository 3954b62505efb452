// Parameter counts of transformers configurations (configs/hf/*.json, or any config.json), by model_type,
// counted as transformers' model.num_parameters() counts the class the checkpoint is (tied weights once,
// buffers not at all). This is what `vlpeft params CONFIG` prints.
//   gpt2  GPT2LMHeadModel             t5  T5ForConditionalGeneration       bart  BartForConditionalGeneration
//   vit   ViTForImageClassification when "architectures" names it (no pooler, num_labels-way classifier),
//         else ViTModel with the pooler
//   clip, clip_vision_model  the vision tower with its projection, CLIPVisionModelWithProjection (a whole
//         CLIPModel config counts its vision_config plus visual_projection to the top-level projection_dim;
//         the text tower, text_projection and logit_scale are not counted: only the vision side is built here)
#pragma once
#include <cstdint>
#include <string>

namespace vlp {

struct HfParamCount {
  std::string model_type;  // as in the file
  std::string counted_as;  // the transformers class counted, e.g. "ViTForImageClassification"
  int64_t parameters = 0;
};

// `path` is a config.json file or a directory holding one. An error naming the file and the supported types
// for any other model_type.
HfParamCount count_hf_parameters(const std::string& path);

}  // namespace vlp
