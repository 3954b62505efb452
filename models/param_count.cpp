// Parameter counts of transformers configurations (see param_count.h).
#include "models/param_count.h"

#include <algorithm>

#include "models/clip_vision.h"
#include "models/config.h"
#include "models/vit.h"
#include "runtime/error.h"

namespace vlp {

HfParamCount count_hf_parameters(const std::string& path) {
  HfParamCount c;
  c.model_type = read_model_type(path);
  const std::string& t = c.model_type;
  if (t == "gpt2") {
    c.counted_as = "GPT2LMHeadModel";
    c.parameters = num_parameters(read_gpt2_config(path));
  } else if (t == "t5") {
    c.counted_as = "T5ForConditionalGeneration";
    c.parameters = num_parameters(read_t5_config(path));
  } else if (t == "bart") {
    c.counted_as = "BartForConditionalGeneration";
    c.parameters = num_parameters(read_bart_config(path));
  } else if (t == "vit") {
    const ViTConfig v = read_vit_config(path);
    const bool classifier = std::find(v.architectures.begin(), v.architectures.end(), "ViTForImageClassification") !=
                            v.architectures.end();
    c.counted_as = classifier ? "ViTForImageClassification" : "ViTModel";
    c.parameters = vit_num_parameters(v, classifier);
  } else if (t == "clip" || t == "clip_vision_model") {
    c.counted_as = "CLIPVisionModelWithProjection";
    c.parameters = clip_vision_num_parameters(read_clip_vision_config(path), true);
  } else {
    VLP_FAIL(path, ": model_type '", t, "' is not counted (known: gpt2, t5, bart, vit, clip, clip_vision_model)");
  }
  return c;
}

}  // namespace vlp
