// Plain LoRA runs through the fused op (vlp::lora_linear) with the numbers of the composed ops, forward and
// gradients, bit for bit on the CPU, for a Linear and a Conv1D-layout layer, with dropout; the variants the
// fused op does not cover (DoRA, lora_bias, mixed-adapter batches, a second active adapter) keep the
// composed path.
#include "autograd/graph.h"
#include "models/peft/lora.h"
#include "common/test_util.h"

namespace vlp {
namespace {

using nlohmann::json;

peft::PeftConfig cfg(const std::string& text) { return peft::parse_peft_config(json::parse(text)); }

struct TinyMlp : Module {
  Linear fc1{6, 8};
  Linear fc2{8, 5, true, true};  // GPT-2 Conv1D layout
  TinyMlp() {
    register_module("fc1", &fc1);
    register_module("fc2", &fc2);
  }
};

const char* node_name(const Tensor& y) {
  return y.autograd() && y.autograd()->grad_fn ? y.autograd()->grad_fn->name : "";
}

peft::LoraLayer* lora_of(Linear& l, size_t i = 0) {
  return dynamic_cast<peft::LoraLayer*>(l.adapters.at(i).second.get());
}

std::vector<Tensor> take_grads(const std::vector<Tensor*>& ts) {
  std::vector<Tensor> out;
  for (Tensor* t : ts) {
    out.push_back(t->grad().defined() ? contiguous(t->grad()) : Tensor());
    t->set_grad(Tensor());
  }
  return out;
}

TEST(LoraFused, PlainLoraIsTheFusedOpWithTheComposedNumbers) {
  TinyMlp mlp;
  peft::add_adapter(mlp, cfg(R"({"peft_type": "LORA", "r": 3, "lora_alpha": 5, "lora_dropout": 0.25,
                                 "target_modules": ["fc1", "fc2"], "init_lora_weights": false})"), "default", 3);
  for (Linear* layer : {&mlp.fc1, &mlp.fc2}) {
    SCOPED_TRACE(layer->type_name());
    peft::LoraLayer* l = lora_of(*layer);
    const int64_t in = layer->in_features();
    Tensor x = test::rand_input({3, 4, in}, 11, DType::F32);
    Generator g1(21), g2(21);
    ForwardContext ctx;
    ctx.training = true;
    ctx.generator = &g1;
    EXPECT_TRUE(l->fused_applies(*layer, x, ctx));
    Tensor y = layer->forward(x, ctx);
    EXPECT_STREQ(node_name(y), "lora_linear");
    Tensor dy = test::rand_input(y.shape(), 12, DType::F32, false);
    backward(y, dy);
    std::vector<Tensor*> ts = {&x, &l->lora_A, &l->lora_B};
    std::vector<Tensor> fused = take_grads(ts);
    // The composed ops LoraLayer ran before the fused op.
    Tensor yc = add(layer->base_forward(x),
                    mul(linear(linear(dropout(x, l->dropout, true, &g2), l->lora_A), l->lora_B), l->scaling));
    EXPECT_EQ(g1.offset, g2.offset);
    EXPECT_TRUE(test::all_close(y, yc, 0, 0));
    backward(yc, dy);
    std::vector<Tensor> comp = take_grads(ts);
    for (size_t i = 0; i < ts.size(); ++i) EXPECT_TRUE(test::all_close(fused[i], comp[i], 0, 0)) << "gradient " << i;
    // Eval: no dropout, nothing drawn.
    ForwardContext eval;
    eval.generator = &g1;
    const uint64_t before = g1.offset;
    NoGradGuard no_grad;
    EXPECT_TRUE(test::all_close(layer->forward(x, eval),
                                add(layer->base_forward(x), mul(linear(linear(x, l->lora_A), l->lora_B), l->scaling)),
                                0, 0));
    EXPECT_EQ(g1.offset, before);
  }
}

TEST(LoraFused, VariantsKeepTheComposedPath) {
  const char* configs[] = {
      R"({"peft_type": "LORA", "r": 2, "target_modules": ["fc1"], "use_dora": true, "init_lora_weights": false})",
      R"({"peft_type": "LORA", "r": 2, "target_modules": ["fc1"], "lora_bias": true, "init_lora_weights": false})",
  };
  Tensor x = test::rand_input({2, 6}, 31, DType::F32);
  for (const char* c : configs) {
    SCOPED_TRACE(c);
    TinyMlp mlp;
    peft::add_adapter(mlp, cfg(c), "default", 4);
    EXPECT_FALSE(lora_of(mlp.fc1)->fused_applies(mlp.fc1, x, {}));
    EXPECT_STRNE(node_name(mlp.fc1.forward(x)), "lora_linear");
  }
  // Mixed-adapter batch: composed, with the base computed by the LoRA layer itself.
  TinyMlp mlp;
  auto lora = cfg(R"({"peft_type": "LORA", "r": 2, "target_modules": ["fc1"], "init_lora_weights": false})");
  peft::add_adapter(mlp, lora, "a", 5);
  ForwardContext mixed;
  mixed.sample_adapters = {"a", ""};
  Tensor y_mixed = mlp.fc1.forward(x, mixed);
  EXPECT_STRNE(node_name(y_mixed), "lora_linear");
  Tensor y_fused = mlp.fc1.forward(x), y_base = mlp.fc1.base_forward(x);
  EXPECT_TRUE(test::all_close(narrow(y_mixed, 0, 0, 1), narrow(y_fused, 0, 0, 1), 0, 0));
  EXPECT_TRUE(test::all_close(narrow(y_mixed, 0, 1, 1), narrow(y_base, 0, 1, 1), 0, 0));
  // None of the batch uses the adapter: the base output.
  mixed.sample_adapters = {"", ""};
  EXPECT_TRUE(test::all_close(mlp.fc1.forward(x, mixed), y_base, 0, 0));
  // Two active adapters: the first fused, the second added to its result by the composed ops.
  peft::add_adapter(mlp, lora, "b", 6);
  peft::set_active_adapters(mlp, {"a", "b"});
  Tensor y_both = mlp.fc1.forward(x);
  EXPECT_STREQ(node_name(y_both), "add");
  NoGradGuard no_grad;
  peft::LoraLayer* b = lora_of(mlp.fc1, 1);
  EXPECT_TRUE(test::all_close(y_both, add(y_fused, mul(linear(linear(x, b->lora_A), b->lora_B), b->scaling)), 0, 0));
}

}  // namespace
}  // namespace vlp
