// Every PEFT method learns: a short AdamW run on a tiny backbone (tests/fixtures/models: GPT-2, T5, BART, ViT,
// d = 24, two layers) with one fixed batch lowers the loss by a stated margin. One case per method of the
// method table (models/peft/methods.cpp; a test checks that no table entry is left out), plus the variants
// that take other code paths (adapter placements and sharing modes, LoRA variants, prefix tuning on each
// backbone, VPT deep) and every VL-Adapter recipe (models/peft/recipes.h) on tiny T5 and BART.
//
// Each case: 25 AdamW steps (weight decay 0, lr 1e-2 unless the case says) on the fixture batch; the loss after
// them must be at least 10% below the first step's (relative drop (first - last) / first >= 0.10; two T5
// encoder-prompt cases 4%, see below). The whole suite runs in a few seconds on one core.
//
// The runs are deterministic: eval mode (no dropout), fixed seeds. Only the trainable set is optimised, so a
// drop also shows that gradients reach the method's parameters through the backbone.
#include <set>

#include "autograd/optim.h"
#include "models/peft/fusion.h"

#include "tests/peft/peft_fixture.h"
#include "tests/peft_training/method_cases.h"

namespace vlp {
namespace {

using test::Case;
using test::method_cases;
using J = nlohmann::json;

constexpr int kSteps = 25;

// Loss on the model's fixture batch, eval mode.
Tensor loss_of(test::TinyModel& m, const ForwardContext& ctx) { return m.forward(ctx).loss; }

// After the first backward: every trainable parameter has a gradient and no frozen one has; with a batch of
// task 1 ("b") of a multi-task module, task "a"'s modules get none.
::testing::AssertionResult grads_on_trainable(Module& model, bool multi_task) {
  for (auto& [name, p] : model.named_parameters()) {
    const bool other_task = multi_task && name.find(".a.") != std::string::npos;
    if (p.requires_grad() && !p.grad().defined() && !other_task)
      return ::testing::AssertionFailure() << "trainable " << name << " got no gradient";
    if (!p.requires_grad() && p.grad().defined())
      return ::testing::AssertionFailure() << "frozen " << name << " has a gradient buffer";
  }
  return ::testing::AssertionSuccess();
}

class ShortTraining : public ::testing::TestWithParam<Case> {};

TEST_P(ShortTraining, LowersTheLoss) {
  const Case& c = GetParam();
  test::TinyModel m(c.model);
  Module& model = m.module();
  test::attach_case(model, c);
  std::vector<Tensor> params;
  int64_t trainable = 0;
  for (auto& [n, p] : model.named_parameters())
    if (p.requires_grad()) params.push_back(p), trainable += p.numel();
  ASSERT_FALSE(params.empty());
  ForwardContext ctx;
  ctx.task = c.task;
  if (c.visual) {
    Generator g(21);
    ctx.visual = randn({m.batch.at("input_ids").size(0), 1, 24}, &g);
  }
  Optimizer opt = make_adamw(params, c.lr, 0.0);
  double first = 0, last = 0;
  for (int s = 0; s < kSteps; ++s) {
    zero_grad(opt);
    Tensor loss = loss_of(m, ctx);
    if (s == 0) first = loss.item();
    backward(loss);
    if (s == 0) {
      ASSERT_TRUE(grads_on_trainable(model, c.task > 0));
    }
    step(opt);
  }
  {
    NoGradGuard no_grad;
    last = loss_of(m, ctx).item();
  }
  const double drop = (first - last) / first;
  std::printf("  %-40s %-5s trainable %7lld  loss %.4f -> %.4f  (drop %.1f%%)\n", c.label.c_str(), c.model.c_str(),
              (long long)trainable, first, last, 100.0 * drop);
  EXPECT_GE(drop, c.min_drop) << c.label << ": loss " << first << " -> " << last;
}

INSTANTIATE_TEST_SUITE_P(EveryMethod, ShortTraining, ::testing::ValuesIn(method_cases()),
                         [](const ::testing::TestParamInfo<Case>& info) { return info.param.label; });

// The cases above cover every entry of the method table.
TEST(ShortTraining, CoversEveryMethodOfTheTable) {
  std::set<std::string> covered;
  for (const Case& c : method_cases()) covered.insert(c.config.value("peft_type", ""));
  for (const auto& m : peft::all_methods()) EXPECT_TRUE(covered.count(m.peft_type)) << m.peft_type << " has no case";
}

}  // namespace
}  // namespace vlp
