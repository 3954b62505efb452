// The adapter-family methods through the PEFT core (add_adapter, mark_trainable, save/load in the HF
// directory format) on the tiny T5 and BART fixtures: which sites each config adapts, save/load round trips
// with bit-identical logits, the VL-Adapter recipes' trainable sets, their trainable-parameter counts on
// t5-base and bart-base computed independently here (and with percentages on VL-T5-base / VL-BART-base), and a
// short training run that lowers the loss.
#include <fstream>

#include "autograd/optim.h"
#include "models/peft/fusion.h"
#include "models/peft/recipes.h"
#include "models/vl/vl_seq2seq.h"
#include "runtime/safetensors.h"
#include "tests/peft_adapters/peft_test_util.h"

namespace vlp::peft {
namespace {

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }
bool ends_with(const std::string& s, const std::string& e) {
  return s.size() >= e.size() && s.compare(s.size() - e.size(), e.size(), e) == 0;
}

PeftConfig config(const std::string& json_text) { return parse_peft_config(nlohmann::json::parse(json_text), "test"); }

// The batch context every method can run under: task 1 of 3, a pooled visual vector of the model's width.
ForwardContext context(int64_t d_model, int64_t batch = 2) {
  ForwardContext ctx;
  ctx.task = 1;
  ctx.visual = test::rand_input({batch, d_model}, 77, DType::F32, false);
  return ctx;
}

// Adapter parameters (site modules and model-level shared modules) to random values, so a round trip is not
// checked on an initialisation that happens to be regenerated.
void randomize_adapters(Module& model, uint64_t seed) {
  Generator g(seed);
  NoGradGuard ng;
  for (auto& [n, p] : model.named_parameters())
    if (contains(n, ".adapters.") || n.rfind("peft_shared.", 0) == 0) uniform_(p, -0.3, 0.3, &g);
}

int sites_with(Module& model, const std::string& adapter) {
  int n = 0;
  for (auto& [name, s] : sublayer_sites(model))
    for (auto& [a, m] : s->adapters) n += a == adapter;
  return n;
}

const char* kTasks = R"("tasks": ["vqa", "gqa", "nlvr"])";

std::vector<std::pair<std::string, std::string>> method_configs() {
  const std::string t = kTasks;
  return {
      {"adapter_single", R"({"peft_type": "VLPEFT_ADAPTER", "reduction_factor": 4})"},
      {"adapter_multiple",
       R"({"peft_type": "VLPEFT_ADAPTER", "reduction_factor": 4, "sharing": "multiple", )" + t + "}"},
      {"adapter_half",
       R"({"peft_type": "VLPEFT_ADAPTER", "reduction_factor": 4, "sharing": "half_shared", )" + t + "}"},
      {"pfeiffer", R"({"peft_type": "VLPEFT_ADAPTER", "placement": "pfeiffer", "reduction_factor": 4})"},
      {"scaled_parallel", R"({"peft_type": "VLPEFT_ADAPTER", "placement": "scaled_parallel"})"},
      {"compacter", R"({"peft_type": "VLPEFT_COMPACTER", "reduction_factor": 4})"},
      {"compacter_pp", R"({"peft_type": "VLPEFT_COMPACTER", "placement": "pfeiffer", "reduction_factor": 4,
                           "phm_dim": 2, "sharing": "multiple", )" + t + "}"},
      {"hyperformer", R"({"peft_type": "VLPEFT_HYPERFORMER", "task_embedding_dim": 8, "projector_hidden_dim": 6,
                          "reduction_factor": 4, )" + t + "}"},
      {"routed_lora", R"({"peft_type": "VLPEFT_ROUTED_LORA", "r": 4, "lora_alpha": 8, "routing_function": 3})"},
      {"routed_lora_multi", R"({"peft_type": "VLPEFT_ROUTED_LORA", "r": 2, "routing_function": 0,
                                "sharing": "multiple", )" + t + "}"},
      {"routed_adapter", R"({"peft_type": "VLPEFT_ROUTED_ADAPTER", "routing_function": 1, "bottleneck_dim": 5})"},
      {"adamix", R"({"peft_type": "VLPEFT_ADAMIX", "num_experts": 3, "reduction_factor": 4, "share_up": true})"},
      {"adamix_lora", R"({"peft_type": "VLPEFT_ADAMIX", "adamix_variant": "lora", "num_experts": 3, "r": 4,
                          "lora_alpha": 8})"},
      {"mam", R"({"peft_type": "VLPEFT_MAM", "prefix_tuning": {"num_virtual_tokens": 3, "encoder_hidden_size": 8},
                  "adapter": {"reduction_factor": 4}})"},
      {"unipelt", R"({"peft_type": "VLPEFT_UNIPELT", "prefix_tuning": {"num_virtual_tokens": 3,
                      "encoder_hidden_size": 8}, "lora": {"r": 2}})"},
  };
}

template <class Model>
void round_trip_every_method(const std::function<std::unique_ptr<Model>()>& make, const std::string& kind) {
  for (const auto& [label, text] : method_configs()) {
    SCOPED_TRACE(kind + " " + label);
    PeftConfig c = config(text);
    auto model = make();
    add_adapter(*model, c, "default", 3);
    randomize_adapters(*model, 11);
    Seq2SeqInput in = test::tiny_batch(model->config.vocab_size);
    ForwardContext ctx = context(model->config.d_model);
    const auto logits = to_vector(model->forward(in, ctx).logits);
    auto dir = test::temp_dir("peft_adapters_" + kind + "_" + label);
    save_adapter(*model, c, "default", dir.string());
    std::ifstream f(dir / "adapter_config.json");
    auto written = nlohmann::json::parse(f);
    EXPECT_EQ(written["peft_type"], c.peft_type);

    auto fresh = make();
    load_adapter(*fresh, dir.string());
    EXPECT_EQ(to_vector(fresh->forward(in, ctx).logits), logits);
    // The loaded adapter trains exactly what the original did.
    std::vector<std::string> a, b;
    for (auto& [n, p] : model->named_parameters())
      if (p.requires_grad()) a.push_back(n);
    for (auto& [n, p] : fresh->named_parameters())
      if (p.requires_grad()) b.push_back(n);
    EXPECT_EQ(a, b);
    EXPECT_FALSE(a.empty());
    std::filesystem::remove_all(dir);
  }
}

TEST(Methods, SaveLoadRoundTripOnTinyT5) {
  round_trip_every_method<T5ForConditionalGeneration>(test::tiny_t5, "t5");
}
TEST(Methods, SaveLoadRoundTripOnTinyBart) {
  round_trip_every_method<BartForConditionalGeneration>(test::tiny_bart, "bart");
}

TEST(Methods, SitesAndFileKeys) {
  auto t5 = test::tiny_t5();  // 2 + 2 layers: 2·2 encoder + 2·3 decoder sublayer sites
  add_adapter(*t5, config(R"({"peft_type": "VLPEFT_ADAPTER", "sharing": "half_shared", "tasks": ["vqa", "gqa"]})"));
  EXPECT_EQ(sites_with(*t5, "default"), 10);
  for (auto& [name, s] : sublayer_sites(*t5)) EXPECT_TRUE(s->before_dropout) << name;
  auto dir = test::temp_dir("peft_adapters_keys");
  PeftConfig c = config(R"({"peft_type": "VLPEFT_ADAPTER", "sharing": "half_shared", "tasks": ["vqa", "gqa"]})");
  save_adapter(*t5, c, "default", dir.string());
  auto file = load_safetensors((dir / "adapter_model.safetensors").string());
  EXPECT_NE(file.find("base_model.model.encoder.block.0.sa_site.up.weight"), nullptr);
  EXPECT_NE(file.find("base_model.model.decoder.block.1.ca_site.gqa.down.bias"), nullptr);
  EXPECT_EQ(file.find("base_model.model.decoder.block.1.ca_site.gqa.up.weight"), nullptr);
  std::filesystem::remove_all(dir);

  auto bart = test::tiny_bart();
  add_adapter(*bart, config(R"({"peft_type": "VLPEFT_ADAPTER", "placement": "pfeiffer"})"));
  EXPECT_EQ(sites_with(*bart, "default"), 4);  // feed-forward sites only
  for (auto& [name, s] : sublayer_sites(*bart)) {
    EXPECT_FALSE(s->before_dropout) << name;
    for (auto& [a, m] : s->adapters)  // Pfeiffer on post-LN BART reads the block's final_layer_norm
      EXPECT_EQ(dynamic_cast<BottleneckAdapter*>(m.get())->block_norm,
                bart->find_module(name.substr(0, name.size() - 7) + "final_layer_norm"));
  }
  // Shared PHM rules live at model level, one set per stack.
  auto t5b = test::tiny_t5();
  add_adapter(*t5b, config(R"({"peft_type": "VLPEFT_COMPACTER", "placement": "houlsby", "reduction_factor": 4,
                                          "phm_dim": 2})"));
  EXPECT_NE(t5b->find_module("peft_shared.default.encoder"), nullptr);
  EXPECT_NE(t5b->find_module("peft_shared.default.decoder"), nullptr);
  EXPECT_TRUE(t5b->find_module("peft_shared.default.encoder")->parameters()[0].requires_grad());
  auto t5c = test::tiny_t5();
  add_adapter(*t5c, config(R"({"peft_type": "VLPEFT_COMPACTER", "placement": "houlsby", "reduction_factor": 4,
                               "phm_dim": 2, "phm_rule_scope": "model"})"));
  EXPECT_NE(t5c->find_module("peft_shared.default.all"), nullptr);
  EXPECT_EQ(t5c->find_module("peft_shared.default.encoder"), nullptr);
  EXPECT_EQ(count_parameters(*t5c).trainable + 2 * 8,  // one [2,2,2] pair less than per stack
            count_parameters(*t5b).trainable);
  EXPECT_THROW(add_adapter(*t5b, config(R"({"peft_type": "VLPEFT_ADAPTER", "sharing": "multiple"})"), "x"), Error);
  EXPECT_THROW(add_adapter(*t5b, config(R"({"peft_type": "VLPEFT_HYPERFORMER"})"), "y"), Error);  // no tasks
}

TEST(Methods, FusionOverTwoAttachedAdapters) {
  auto model = test::tiny_bart();
  PeftConfig a = config(R"({"peft_type": "VLPEFT_ADAPTER", "reduction_factor": 4})");
  PeftConfig fu = config(R"({"peft_type": "VLPEFT_FUSION", "adapters": ["a", "b"]})");
  add_adapter(*model, a, "a", 1);
  add_adapter(*model, a, "b", 2);
  add_adapter(*model, fu, "fusion", 3);
  set_active_adapters(*model, {"fusion"});
  EXPECT_EQ(sites_with(*model, "fusion"), 10);
  randomize_adapters(*model, 5);
  Seq2SeqInput in = test::tiny_batch(model->config.vocab_size);
  const auto logits = to_vector(model->forward(in).logits);
  auto dir = test::temp_dir("peft_adapters_fusion");
  save_adapter(*model, a, "a", dir.string());
  save_adapter(*model, a, "b", dir.string());
  save_adapter(*model, fu, "fusion", dir.string());
  auto fresh = test::tiny_bart();
  load_adapter(*fresh, dir.string(), "a");
  load_adapter(*fresh, dir.string(), "b");
  load_adapter(*fresh, dir.string(), "fusion");
  set_active_adapters(*fresh, {"fusion"});
  EXPECT_EQ(to_vector(fresh->forward(in).logits), logits);
  // The regulariser sees every fusion site.
  EXPECT_GT(fusion_regularization(*fresh).item(), 0.0);
  // Fusion training: members frozen, fusion layers trainable.
  freeze_fusion_members(*fresh);
  for (auto& [n, p] : fresh->named_parameters()) {
    if (contains(n, ".adapters.a.") || contains(n, ".adapters.b.")) {
      EXPECT_FALSE(p.requires_grad()) << n;
    }
    if (contains(n, ".adapters.fusion.")) {
      EXPECT_TRUE(p.requires_grad()) << n;
    }
  }
  std::filesystem::remove_all(dir);
}

// ---- VL-Adapter recipes ----

std::vector<std::string> trainable_names(Module& m) {
  std::vector<std::string> out;
  for (auto& [n, p] : m.named_parameters())
    if (p.requires_grad()) out.push_back(n);
  return out;
}

bool is_norm(const std::string& n, const std::string& backbone) {
  if (backbone == "t5") return contains(n, "layer_norm.weight");
  return contains(n, "layer_norm.") || contains(n, "layernorm_embedding.");
}

template <class Model>
void expect_recipe_trainable_sets(Model& model, const std::string& backbone) {
  for (const auto& name : vl_recipe_names()) {
    SCOPED_TRACE(backbone + " " + name);
    VlRecipe r = vl_adapter_recipe(name, backbone, {"vqa", "gqa", "nlvr", "caption"});
    if (r.full_finetuning) {
      EXPECT_EQ(r.learning_rate, 1e-4);
      continue;
    }
    const bool prompt = name.rfind("prompt", 0) == 0;
    if (prompt) {
      EXPECT_EQ(r.config.peft_type, "VLPEFT_PROMPT");
      EXPECT_EQ(r.config.get_int("num_virtual_tokens", 0), 40);
    }
    PeftConfig c = r.config;
    if (name.rfind("compacter", 0) == 0) {  // d = 24: bottleneck 24/8 = 3 does not divide by n = 2
      c.raw["reduction_factor"] = 4;
      c = parse_peft_config(c.raw, "test");
    }
    add_adapter(model, c, "default", 1);
    std::vector<std::string> expect;
    const bool lora = name.rfind("lora", 0) == 0;
    for (auto& [n, p] : model.named_parameters()) {
      bool adapter = contains(n, ".adapters.default.") || n.rfind("peft_shared.default.", 0) == 0;
      bool extra = lora ? ends_with(n, ".bias") && !adapter : !prompt && is_norm(n, backbone);
      if (adapter || extra) expect.push_back(n);
    }
    EXPECT_EQ(trainable_names(model), expect);
    EXPECT_EQ(sites_with(model, "default"), lora || prompt ? 0 : 10);
    delete_adapter(model, "default");
  }
  EXPECT_THROW(vl_adapter_recipe("nope", backbone), Error);
}

TEST(Recipes, TrainableSetsOnTinyT5AndBart) {
  auto t5 = test::tiny_t5();
  expect_recipe_trainable_sets(*t5, "t5");
  auto bart = test::tiny_bart();
  expect_recipe_trainable_sets(*bart, "bart");
  // The visual embedding named by the caller is trainable under every recipe.
  auto bart2 = test::tiny_bart();
  add_adapter(*bart2, vl_adapter_recipe("lora_single", "bart", {"vqa"}, {"model.shared"}).config);
  EXPECT_TRUE(bart2->model.shared.weight.requires_grad());
  EXPECT_EQ(vl_adapter_recipe("adapter_multiple", "bart").learning_rate, 3e-4);
  EXPECT_FALSE(vl_adapter_recipe("adapter_multiple", "bart").task_prefix);
  EXPECT_TRUE(vl_adapter_recipe("adapter_single", "t5").task_prefix);
}

// Trainable parameters of each recipe, counted from the architecture (spec §2.4–§2.8), no model involved.
int64_t expected_count(const std::string& recipe, const std::string& backbone) {
  const int64_t d = 768, m = 96, tasks = 4;
  const bool t5 = backbone == "t5";
  const int64_t L = t5 ? 12 : 6;                 // layers per stack
  const int64_t sites = L * 2 + L * 3;           // 60 (T5) / 30 (BART)
  const int64_t attentions = L + 2 * L;          // encoder self, decoder self and cross
  // Norms: T5 RMSNorm weights (2 per encoder block, 3 per decoder block, 2 final); BART LayerNorm weight + bias
  // (2 per encoder layer, 3 per decoder layer, 2 layernorm_embedding).
  const int64_t norms = t5 ? (2 * L + 3 * L + 2) * d : (2 * L + 3 * L + 2) * 2 * d;
  const int64_t adapter = d * m + m + m * d + d;
  if (recipe == "adapter_single") return sites * adapter + norms;
  if (recipe == "adapter_multiple") return tasks * sites * adapter + norms;
  if (recipe == "adapter_half_shared") return sites * (m * d + d + tasks * (d * m + m)) + norms;
  if (recipe == "compacter_single" || recipe == "compacter_multiple") {
    const int64_t n = 2, phm = (n * n * n + d * m / n + m) + (n * n * n + m * d / n + d);
    return (recipe == "compacter_single" ? 1 : tasks) * sites * phm + norms;
  }
  if (recipe == "hyperformer") {
    const int64_t te = 512, p = 8, h = 128;
    const int64_t gen = (p * d * m + d * m) + (p * d + d) + (p * m * d + m * d) + (p * m + m);
    const int64_t stack = L * te + (2 * te * h + h) + (h * p + p) + 2 * p;
    return tasks * te + 2 * stack + (2 + 3) * gen + norms;
  }
  if (recipe == "lora_single" || recipe == "lora_multiple") {
    const int64_t r = 128, lora = 2 * attentions * (r * d + d * r);
    // Every bias: BART's 4 attention projections, fc1 (3072), fc2, and LayerNorm biases; T5 has none.
    const int64_t biases = t5 ? 0 : attentions * 4 * d + 2 * L * (3072 + d) + (2 * L + 3 * L + 2) * d;
    return (recipe == "lora_single" ? 1 : tasks) * lora + biases;
  }
  if (recipe == "prompt_single" || recipe == "prompt_multiple") {  // E [40, d], W1 d -> 800, W2 800 -> d
    const int64_t n = 40, h = 800, prompt = n * d + (d * h + h) + (h * d + d);
    return (recipe == "prompt_single" ? 1 : tasks) * prompt;
  }
  ADD_FAILURE() << "no count for " << recipe;
  return 0;
}

// `vlpeft params` for the VL-Adapter recipes (spec §2.4): on VL-BART-base (bart-base, vocabulary resized by the
// 200 added tokens, spec §2.1) and VL-T5-base (t5-base) with the visual embedding (feature dim 2048), set up as
// the trainer does (backbone frozen, recipe attached to the backbone, visual embedding trainable; full
// fine-tuning trains everything). Trainable = the recipe's PEFT parameters + the visual embedding; total =
// every model parameter, visual embedding and PEFT modules included (no vision encoder: features are
// extracted offline). Both are checked against counts computed here from the architecture, for every row of
// the recipe table; the percentage is printed.
int64_t visual_embedding_count(int64_t d, bool t5) {
  const int64_t norm = t5 ? d : 2 * d;  // RMSNorm weight / LayerNorm weight + bias
  return (2048 * d + d) + norm + (5 * d + d) + norm + 2 * d;
}

// Backbone parameters, tied embeddings once (transformers' num_parameters()).
int64_t backbone_count(const std::string& backbone, int64_t vocab) {
  const int64_t d = 768, ff = 3072;
  if (backbone == "t5") {
    const int64_t L = 12, attn = 4 * d * d, rel = 32 * 12;
    const int64_t enc = L * (attn + 2 * d * ff + 2 * d) + rel + d;
    const int64_t dec = L * (2 * attn + 2 * d * ff + 3 * d) + rel + d;
    return vocab * d + enc + dec;
  }
  const int64_t L = 6, attn = 4 * (d * d + d), ln = 2 * d, pos = (1024 + 2) * d;
  const int64_t enc = L * (attn + (d * ff + ff) + (ff * d + d) + 2 * ln) + pos + ln;
  const int64_t dec = L * (2 * attn + (d * ff + ff) + (ff * d + d) + 3 * ln) + pos + ln;
  return vocab * d + enc + dec;
}

TEST(Recipes, VlModelTrainableCountsAndPercentages) {
  const std::string dir = std::string(VLP_SOURCE_DIR) + "/configs/hf/";
  for (const std::string backbone : {"bart", "t5"}) {
    VLSeq2SeqConfig cfg;
    cfg.backbone = backbone;
    if (backbone == "bart") {
      cfg.bart = read_bart_config(dir + "bart-base.json");
      cfg.bart.vocab_size += 200;  // <extra_id_k>, <vis_extra_id_k>
    } else {
      cfg.t5 = read_t5_config(dir + "t5-base.json");
    }
    const int64_t vocab = backbone == "bart" ? cfg.bart.vocab_size : cfg.t5.vocab_size;
    const int64_t visual = visual_embedding_count(768, backbone == "t5");
    const int64_t base = backbone_count(backbone, vocab) + visual;
    VLSeq2Seq model(cfg);  // one model per backbone (building t5-base is the slow part): recipes come and go
    EXPECT_EQ(model.num_parameters(), base);
    for (const auto& name : vl_recipe_names()) {
      SCOPED_TRACE(backbone + " " + name);
      VlRecipe r = vl_adapter_recipe(name, backbone);
      int64_t peft_modules = 0;
      if (r.full_finetuning) {
        model.set_requires_grad(true);
      } else {
        model.set_requires_grad(false);
        add_adapter(model.backbone(), r.config, "default", 1);
        model.adopt_backbone_children();
        model.visual_embedding->set_requires_grad(true);
        peft_modules = model.num_parameters() - base;
      }
      const int64_t trainable = model.num_parameters(true), total = model.num_parameters();
      const int64_t expect = r.full_finetuning ? base : expected_count(name, backbone) + visual;
      EXPECT_EQ(trainable, expect);
      EXPECT_EQ(total, base + peft_modules);
      // The PEFT modules are new parameters (everything but the unfrozen backbone norms / biases).
      if (!r.full_finetuning) {
        EXPECT_GT(peft_modules, 0);
      }
      const double percent = 100.0 * double(trainable) / double(total);
      EXPECT_GT(percent, 0.0);
      EXPECT_LE(percent, 100.0);
      std::printf("  VL-%s-base %-20s trainable %10lld of %10lld  (%.2f%%)\n", backbone == "bart" ? "BART" : "T5",
                  name.c_str(), (long long)trainable, (long long)total, percent);
      if (!r.full_finetuning) {
        // Children adopted from the backbone (model-level PEFT modules) are unregistered before the backbone
        // frees them.
        std::vector<std::string> adopted;
        for (const auto& [child, m] : model.children())
          if (child.rfind("peft_", 0) == 0) adopted.push_back(child);
        for (const auto& child : adopted) model.remove_module(child);
        delete_adapter(model.backbone(), "default");
      }
      EXPECT_EQ(model.num_parameters(), base);
    }
  }
}

// A few AdamW steps on adapters (the rest frozen) lower the loss on a fixed batch.
template <class Model>
double loss_drop(Model& model, const PeftConfig& c, int task) {
  add_adapter(model, c, "default", 2);
  std::vector<Tensor> params;
  for (auto& [n, p] : model.named_parameters())
    if (p.requires_grad()) params.push_back(p);
  Optimizer opt = make_adamw(params, 1e-2, 0.0);
  Seq2SeqInput in = test::tiny_batch(model.config.vocab_size, 4, 6, 5, 3);
  ForwardContext ctx = context(model.config.d_model, 4);
  ctx.task = task;
  double first = 0, last = 0;
  for (int s = 0; s < 12; ++s) {
    Tensor loss = model.forward(in, ctx).loss;
    if (s == 0) first = loss.item();
    last = loss.item();
    zero_grad(opt);
    backward(loss);
    step(opt);
  }
  return (first - last) / first;
}

TEST(Training, ShortRunsLowerTheLoss) {
  auto bart = test::tiny_bart();
  EXPECT_GT(loss_drop(*bart, vl_adapter_recipe("adapter_half_shared", "bart", {"vqa", "gqa"}).config, 1), 0.05);
  auto t5 = test::tiny_t5();
  EXPECT_GT(loss_drop(*t5, config(R"({"peft_type": "VLPEFT_HYPERFORMER", "task_embedding_dim": 16,
                                       "projector_hidden_dim": 8, "tasks": ["a", "b"]})"), 0),
            0.05);
  auto t5b = test::tiny_t5();
  EXPECT_GT(loss_drop(*t5b, config(R"({"peft_type": "VLPEFT_ROUTED_LORA", "r": 4, "routing_function": 2})"), 0), 0.05);
}

}  // namespace
}  // namespace vlp::peft
