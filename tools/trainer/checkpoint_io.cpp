// Training checkpoints (atomic safetensors with a checksum) and the SVG metrics plot (see trainer.h).
#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "autograd/ops.h"
#include "runtime/error.h"
#include "runtime/safetensors.h"
#include "tools/trainer/trainer.h"

namespace vlp::trainer {
namespace {

// FNV-1a over every tensor's bytes (contiguous, CPU) in name order, names included.
std::string checksum(NamedTensors tensors) {
  std::sort(tensors.begin(), tensors.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  uint64_t h = 1469598103934665603ull;
  auto feed = [&](const void* p, size_t n) {
    const auto* b = static_cast<const uint8_t*>(p);
    for (size_t i = 0; i < n; ++i) h = (h ^ b[i]) * 1099511628211ull;
  };
  for (const auto& [name, t] : tensors) {
    feed(name.data(), name.size());
    Tensor c = convert(t, t.dtype(), Device::cpu());  // contiguous host copy (CUDA optimizer state, weights)
    feed(c.data_ptr(), size_t(c.numel()) * c.element_size());
  }
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", (unsigned long long)h);
  return buf;
}

SafetensorsFile open_verified(const std::string& path) {
  SafetensorsFile f;
  try {
    f = load_safetensors(path);
  } catch (const Error& e) {
    VLP_FAIL("checkpoint '", path, "' is truncated or corrupt and cannot be read: ", e.what());
  }
  auto it = f.metadata.find("data_fnv1a");
  VLP_CHECK(it != f.metadata.end(), "checkpoint '", path, "' has no data_fnv1a checksum: not a vlpeft training checkpoint");
  const std::string got = checksum(f.tensors);
  VLP_CHECK(got == it->second, "checkpoint '", path, "' is corrupt: checksum ", got, " does not match the recorded ",
            it->second);
  return f;
}

}  // namespace

void save_training_checkpoint(const Session& s, const std::string& path) {
  // CPU copies of device tensors (one download each; CPU tensors are used as they are).
  NamedTensors tensors;
  for (auto& [name, t] : s.net().state_dict()) tensors.push_back({"model." + name, host_copy(t)});
  for (auto& [name, t] : export_optimizer_state(s.opt)) tensors.push_back({"optim." + name, host_copy(t)});
  SafetensorsMetadata meta;
  meta["format"] = "vlpeft-train-1";
  meta["step"] = std::to_string(s.step);
  meta["micro_batch"] = std::to_string(s.micro_batch);
  meta["rng_seed"] = std::to_string(s.dropout_gen.seed);
  meta["rng_offset"] = std::to_string(s.dropout_gen.offset);
  char best[64];
  std::snprintf(best, sizeof best, "%.17g", s.best_score);
  meta["best_score"] = best;
  meta["config"] = config_to_json(s.cfg).dump();
  if (s.files) meta["loader_position"] = data::position_to_json(s.loader_pos);
  meta["data_fnv1a"] = checksum(tensors);
  // save_safetensors writes a temporary file, fsyncs it, renames it into place and fsyncs the directory.
  save_safetensors(path, tensors, meta);
}

void load_training_checkpoint(Session& s, const std::string& path) {
  SafetensorsFile f = open_verified(path);
  auto meta = [&](const char* k) {
    auto it = f.metadata.find(k);
    VLP_CHECK(it != f.metadata.end(), "checkpoint '", path, "' lacks metadata '", k, "'");
    return it->second;
  };
  VLP_CHECK(meta("format") == "vlpeft-train-1", "checkpoint '", path, "' has format '", meta("format"), "'");
  // Check everything before changing anything.
  auto state = s.net().state_dict();
  for (auto& [name, t] : state) {
    const Tensor* src = f.find("model." + name);
    VLP_CHECK(src, "checkpoint '", path, "' has no tensor for parameter '", name, "' (another model or PEFT setup?)");
    VLP_CHECK(src->shape() == t.shape(), "checkpoint '", path, "': parameter '", name, "' has another shape");
  }
  NamedTensors optim;
  int64_t model_count = 0;
  for (auto& [name, t] : f.tensors) {
    if (name.rfind("optim.", 0) == 0) optim.push_back({name.substr(6), t});
    else ++model_count;
  }
  VLP_CHECK(model_count == int64_t(state.size()), "checkpoint '", path, "' holds ", model_count,
            " model tensors, the model has ", state.size());
  import_optimizer_state(s.opt, optim);  // onto each parameter's device
  for (auto& [name, t] : state) copy_(t, *f.find("model." + name));  // host -> the session's device
  s.step = std::stoll(meta("step"));
  s.micro_batch = std::stoll(meta("micro_batch"));
  s.dropout_gen.seed = std::stoull(meta("rng_seed"));
  s.dropout_gen.offset = std::stoull(meta("rng_offset"));
  s.best_score = std::stod(meta("best_score"));
  if (s.files) {
    s.loader_pos = data::position_from_json(meta("loader_position"));
    s.loader_started = false;  // the next micro-batch restarts the loader there
  }
}

void load_model_weights(Module& model, const std::string& path) {
  SafetensorsFile f = open_verified(path);
  int64_t copied = 0;
  // A vision tower left at its random init would go unnoticed (PEFT freezes it): refuse.
  for (auto& [name, t] : model.state_dict())
    VLP_CHECK(name.rfind("vision_model.", 0) != 0 || f.find("model." + name), "init_from '", path,
              "' has no tensor for the vision tower's '", name, "' (a checkpoint trained with another vision_tower?)");
  for (auto& [name, t] : model.state_dict()) {
    const Tensor* src = f.find("model." + name);
    if (!src) continue;  // adapters added later
    VLP_CHECK(src->shape() == t.shape(), "init_from '", path, "': parameter '", name, "' has another shape");
    copy_(t, *src);
    ++copied;
  }
  VLP_CHECK(copied > 0, "init_from '", path, "' holds no parameter of this model");
}

void write_svg_plot(const std::string& jsonl_path, const std::string& svg_path) {
  std::ifstream in(jsonl_path);
  std::map<int64_t, double> loss;
  std::map<std::string, std::map<int64_t, double>> metrics;
  std::string line;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.contains("step")) continue;
    const int64_t st = j["step"].get<int64_t>();
    if (j.contains("loss")) loss[st] = j["loss"].get<double>();  // a resumed run's later line wins
    if (j.contains("eval"))
      for (auto& [k, v] : j["eval"].items()) metrics[k][st] = v.get<double>();
  }
  const double W = 640, H = 240, pad = 40;
  int64_t max_step = 1;
  double max_loss = 1e-9;
  for (auto& [st, v] : loss) { max_step = std::max(max_step, st); max_loss = std::max(max_loss, v); }
  for (auto& [k, m] : metrics) for (auto& [st, v] : m) max_step = std::max(max_step, st);
  std::ostringstream o;
  o << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << W << "\" height=\"" << 2 * H << "\">\n";
  auto panel = [&](double y0, const std::string& title, const std::map<int64_t, double>& series, double ymax,
                   const char* color) {
    o << "<polyline fill=\"none\" stroke=\"" << color << "\" points=\"";
    for (auto& [st, v] : series)
      o << pad + (W - 2 * pad) * double(st) / double(max_step) << "," << y0 + H - pad - (H - 2 * pad) * v / ymax << " ";
    o << "\"/>\n";
    (void)title;
  };
  o << "<text x=\"" << pad << "\" y=\"20\">training loss (max " << max_loss << ") vs step (max " << max_step << ")</text>\n";
  o << "<rect x=\"" << pad << "\" y=\"" << pad << "\" width=\"" << W - 2 * pad << "\" height=\"" << H - 2 * pad
    << "\" fill=\"none\" stroke=\"#888\"/>\n";
  panel(0, "loss", loss, max_loss, "#c00");
  o << "<text x=\"" << pad << "\" y=\"" << H + 20 << "\">eval accuracy (0..1) vs step:";
  const char* colors[] = {"#06c", "#090", "#c60", "#909", "#333"};
  int ci = 0;
  for (auto& [k, m] : metrics) o << " <tspan fill=\"" << colors[ci++ % 5] << "\">" << k << "</tspan>";
  o << "</text>\n<rect x=\"" << pad << "\" y=\"" << H + pad << "\" width=\"" << W - 2 * pad << "\" height=\""
    << H - 2 * pad << "\" fill=\"none\" stroke=\"#888\"/>\n";
  ci = 0;
  for (auto& [k, m] : metrics) panel(H, k, m, 1.0, colors[ci++ % 5]);
  o << "</svg>\n";
  std::ofstream(svg_path) << o.str();
}

}  // namespace vlp::trainer
