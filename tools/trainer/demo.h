// The embedded demo (`vlpeft` with no arguments): pretrain a tiny VL encoder-decoder (a two-layer ViT tower
// over the synthetic images + tiny T5; the tower trains with the model) on some synthetic tasks, then adapt it
// to held-out tasks with full fine-tuning (tower included) and each PEFT method (tower frozen, as VL-Adapter
// freezes CLIP), and print a table. Methods are rows of demo_methods(): adding
// one is one line. A method whose PEFT type is not built in is reported as unavailable, not fatal.
#pragma once
#include <map>
#include <string>
#include <vector>
#include <nlohmann/json.hpp>

namespace vlp::trainer {

struct DemoMethod {
  std::string name;
  std::string peft_type;  // "" = full fine-tuning; "-" = no training (the frozen base); "visual" = visual projection only
  nlohmann::json fields;  // PEFT config fields
  double lr;
};
const std::vector<DemoMethod>& demo_methods();

struct DemoOptions {
  int64_t pretrain_steps = 1000, adapt_steps = 500, train_examples = 1024, eval_examples = 200;
  int64_t d_model = 64, layers = 2, batch_size = 32;
  // The vision side (TrainConfig keys of the same names): "vit" = a ViT tower over the pixels, trained in
  // pretraining and full fine-tuning, frozen for the PEFT rows; "none" = linear patch features.
  std::string vision_tower = "vit";
  int64_t vision_layers = 2, image_size = 64, patch = 16;
  std::string pretrain_tasks = "count,color,shape,object_color", adapt_tasks = "what_color,count_color";
  std::string out_dir = "vlpeft_demo";
  std::vector<std::string> only;  // method names to run (empty = all)
  bool progress = true;
  int64_t threads = 1;  // tiny matrices: one thread beats two (and is robust on a shared machine)
  std::string device = "cpu";  // every session's config key device (cpu, cuda, cuda:N); autocast is auto
};

struct DemoRow {
  std::string method;
  double trainable_pct = 0;
  std::map<std::string, double> scores;
  double peak_mb = 0, seconds = 0;
  double peak_device_mb = 0;  // CUDA: the caching allocator's peak during this row
  std::string error;  // non-empty: the method did not run
};

struct DemoResult {
  std::map<std::string, double> pretrain_scores;  // base model on its own tasks
  std::vector<DemoRow> rows;
};

DemoResult run_demo(const DemoOptions& options);
std::string format_demo_table(const DemoResult& r, const DemoOptions& options);

}  // namespace vlp::trainer
