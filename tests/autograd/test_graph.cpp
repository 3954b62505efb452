// The tape itself: when nodes are recorded, how gradients accumulate, retain_graph, detach, freezing,
// and what a frozen-base network keeps alive for backward.
#include "common/test_util.h"

namespace vlp {
namespace {

using test::rand_input;

TEST(Graph, NothingRecordedWithoutTrainableInputs) {
  Tensor x = rand_input({3, 4}, 1, DType::F32, false);
  Tensor w = rand_input({5, 4}, 2, DType::F32, false);
  Tensor y = relu(linear(x, w));
  EXPECT_FALSE(y.requires_grad());
  EXPECT_TRUE(y.is_leaf());
  EXPECT_EQ(y.autograd(), nullptr);
}

TEST(Graph, NoGradGuardStopsRecording) {
  Tensor w = rand_input({4}, 3);
  {
    NoGradGuard guard;
    EXPECT_FALSE(GradMode::enabled());
    EXPECT_FALSE(mul(w, 2.0).requires_grad());
    {
      NoGradGuard inner;
    }
    EXPECT_FALSE(GradMode::enabled());
  }
  EXPECT_TRUE(GradMode::enabled());
  EXPECT_TRUE(mul(w, 2.0).requires_grad());
}

TEST(Graph, GradientsAccumulateAcrossUsesAndCalls) {
  Tensor a = from_vector({1, 2, 3}, {3}, DType::F64).set_requires_grad();
  // f = sum(a*a + 3a): df/da = 2a + 3, reached through two paths.
  Tensor f = sum(add(mul(a, a), mul(a, 3.0)));
  backward(f);
  EXPECT_TRUE(test::values_are(a.grad(), {5, 7, 9}));
  backward(sum(mul(a, 2.0)));  // accumulates: + 2
  EXPECT_TRUE(test::values_are(a.grad(), {7, 9, 11}));
  a.set_grad(Tensor());
  EXPECT_FALSE(a.grad().defined());
}

TEST(Graph, SharedGradientIsNotAliasedBetweenLeaves) {
  // add's backward hands the same tensor to both inputs; their .grad must still be separate buffers.
  Tensor a = ones({3}, DType::F64).set_requires_grad();
  Tensor b = ones({3}, DType::F64).set_requires_grad();
  backward(sum(add(a, b)));
  EXPECT_NE(a.grad().storage(), b.grad().storage());
  NoGradGuard no_grad;
  mul_(a.grad(), 10.0);
  EXPECT_TRUE(test::values_are(b.grad(), {1, 1, 1}));
}

TEST(Graph, NonScalarRootNeedsExplicitGradient) {
  Tensor a = from_vector({1, 2}, {2}, DType::F64).set_requires_grad();
  Tensor y = mul(a, a);
  EXPECT_THROW(backward(y), Error);
  backward(y, from_vector({1, 10}, {2}, DType::F64));
  EXPECT_TRUE(test::values_are(a.grad(), {2, 40}));
  EXPECT_THROW(backward(mul(a, a), ones({3}, DType::F64)), Error);
}

TEST(Graph, RetainGraphAllowsASecondBackward) {
  Tensor a = from_vector({2}, {1}, DType::F64).set_requires_grad();
  Tensor y = sum(mul(exp(a), a));
  backward(y, Tensor(), /*retain_graph=*/true);
  double first = a.grad().item();
  backward(y);
  EXPECT_DOUBLE_EQ(a.grad().item(), 2 * first);
  EXPECT_THROW(backward(y), Error);  // saved tensors were freed by the second call
}

TEST(Graph, DetachCutsTheGraph) {
  Tensor a = from_vector({3}, {1}, DType::F64).set_requires_grad();
  Tensor b = mul(a, a);
  Tensor c = mul(b.detach(), a);  // only the direct path to a counts: d/da = b = 9
  EXPECT_FALSE(b.detach().requires_grad());
  EXPECT_EQ(b.detach().storage(), b.storage());
  backward(sum(c));
  EXPECT_DOUBLE_EQ(a.grad().item(), 9.0);
}

TEST(Graph, FreezingALeafStopsItsGradient) {
  Tensor w = rand_input({3}, 5);
  Tensor v = rand_input({3}, 6);
  w.set_requires_grad(false);
  backward(sum(mul(w, v)));
  EXPECT_FALSE(w.grad().defined());
  EXPECT_TRUE(v.grad().defined());
  EXPECT_THROW(mul(v, 2.0).set_requires_grad(false), Error);  // non-leaf
  EXPECT_THROW(from_vector({1}, {1}, DType::I64).set_requires_grad(), Error);
}

TEST(Graph, RetainGradKeepsIntermediateGradients) {
  Tensor a = from_vector({1, 2}, {2}, DType::F64).set_requires_grad();
  Tensor h = mul(a, 3.0);
  retain_grad(h);
  backward(sum(mul(h, h)));
  EXPECT_TRUE(test::values_are(h.grad(), {6, 12}));
  EXPECT_TRUE(test::values_are(a.grad(), {18, 36}));
}

TEST(Graph, InPlaceChangeOfASavedTensorIsCaught) {
  Tensor a = from_vector({1, 2}, {2}, DType::F64).set_requires_grad();
  Tensor b = from_vector({3, 4}, {2}, DType::F64);
  Tensor y = sum(mul(a, b));  // saves b for a's gradient
  fill_(b, 0.0);
  EXPECT_THROW(backward(y), Error);
}

TEST(Graph, BackwardWithoutTrainableInputIsAnError) {
  EXPECT_THROW(backward(sum(ones({2}))), Error);
}

// A 4-layer linear+ReLU stack on a [B, D] batch, either fully trainable or frozen with only a small
// trainable vector on top.
struct Stack {
  std::vector<Tensor> weights;
  Tensor top;  // trainable scale on the output
  Stack(int64_t d, bool trainable_weights) {
    for (int i = 0; i < 4; ++i) weights.push_back(rand_input({d, d}, 100 + i, DType::F32, trainable_weights));
    top = ones({d}).set_requires_grad();
  }
  Tensor forward(const Tensor& x) const {
    Tensor h = x;
    for (const Tensor& w : weights) h = relu(linear(h, w));
    return sum(mul(h, top));
  }
};

TEST(Graph, FrozenBaseSavesNoActivationsBelowTheFirstTrainableParameter) {
  const int64_t batch = 64, d = 32;
  const int64_t act_bytes = batch * d * 4;
  Tensor x = rand_input({batch, d}, 7, DType::F32, false);

  Stack trainable(d, true);
  Tensor loss_t = trainable.forward(x);
  std::vector<Tensor> params_t = trainable.weights;
  params_t.push_back(trainable.top);
  // Every linear keeps its input (for dW) and every ReLU its output (for the mask); the ReLU output of
  // layer i is the input of layer i+1, so the distinct buffers are x and the four ReLU outputs.
  EXPECT_EQ(saved_tensor_bytes(loss_t, params_t), 5 * act_bytes);

  Stack frozen(d, false);
  Tensor loss_f = frozen.forward(x);
  std::vector<Tensor> params_f = frozen.weights;
  params_f.push_back(frozen.top);
  // Only the top multiply records a node (it saves the last activation for d(top)); the frozen stack
  // below it records nothing at all.
  EXPECT_EQ(saved_tensor_bytes(loss_f, params_f), act_bytes);
  backward(loss_f);
  EXPECT_TRUE(frozen.top.grad().defined());
  for (const Tensor& w : frozen.weights) EXPECT_FALSE(w.grad().defined());
}

TEST(Graph, FrozenLinearKeepsNoCopyOfItsInput) {
  // A trainable input (e.g. a prompt) below frozen linears: gradients flow to the input, yet no layer
  // stores its input, only the ReLU outputs it needs for the mask.
  const int64_t batch = 16, d = 8;
  Tensor prompt = rand_input({batch, d}, 8, DType::F32, true);
  Stack frozen(d, false);
  frozen.top.set_requires_grad(false);
  Tensor h = prompt;
  for (const Tensor& w : frozen.weights) h = linear(h, w);  // no ReLU: nothing needs saving but weights
  Tensor loss = sum(h);
  EXPECT_EQ(saved_tensor_bytes(loss, frozen.weights), 0);
  backward(loss);
  EXPECT_TRUE(prompt.grad().defined());
}

}  // namespace
}  // namespace vlp
