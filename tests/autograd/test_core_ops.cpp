// Gradchecks for the core families: elementwise, views, reductions, matrix products. Each op is checked
// on contiguous inputs and on non-contiguous views (permuted, sliced, expanded), with broadcasting.
#include "common/test_util.h"

namespace vlp {
namespace {

using test::rand_input;
using Fn = std::function<Tensor(const std::vector<Tensor>&)>;

TEST(Elementwise, BinaryOpsBroadcastAndValues) {
  Tensor a = from_vector({1, 2, 3, 4, 5, 6}, {2, 3}, DType::F64);
  Tensor b = from_vector({10, 20, 30}, {3}, DType::F64);
  EXPECT_TRUE(test::values_are(add(a, b), {11, 22, 33, 14, 25, 36}));
  EXPECT_TRUE(test::values_are(sub(a, b), {-9, -18, -27, -6, -15, -24}));
  EXPECT_TRUE(test::values_are(mul(a, b), {10, 40, 90, 40, 100, 180}));
  EXPECT_TRUE(test::values_are(div(b, a), {10, 10, 10, 2.5, 4, 5}));
  EXPECT_TRUE(test::values_are(rsub(1.0, a), {0, -1, -2, -3, -4, -5}));
  EXPECT_THROW(add(a, from_vector({1, 2}, {2}, DType::F64)), Error);
}

TEST(Elementwise, BinaryGradcheck) {
  for (auto op : std::vector<Tensor (*)(const Tensor&, const Tensor&)>{add, sub, mul, div}) {
    // [3, 4] (op) [4] broadcast; [2, 1, 3] (op) [4, 1]; permuted and sliced operands.
    EXPECT_EQ(gradcheck([op](auto& in) { return op(in[0], in[1]); },
                        {rand_input({3, 4}, 1), add(rand_input({4}, 2, DType::F64, false), 3.0).set_requires_grad()}),
              "");
    EXPECT_EQ(gradcheck([op](auto& in) { return op(in[0], add(in[1], 2.5)); },
                        {rand_input({2, 1, 3}, 3), rand_input({4, 1}, 4)}),
              "");
    EXPECT_EQ(gradcheck([op](auto& in) { return op(permute(in[0], {1, 0}), add(narrow(in[1], 1, 1, 3), 2.5)); },
                        {rand_input({3, 2}, 5), rand_input({2, 5}, 6)}),
              "");
  }
}

TEST(Elementwise, UnaryValues) {
  Tensor x = from_vector({-2, -0.5, 0, 0.5, 2}, {5}, DType::F64);
  EXPECT_TRUE(test::values_are(relu(x), {0, 0, 0, 0.5, 2}));
  EXPECT_TRUE(test::values_are(abs(x), {2, 0.5, 0, 0.5, 2}));
  EXPECT_TRUE(test::values_are(clamp(x, -1, 1), {-1, -0.5, 0, 0.5, 1}));
  // Reference values from the formulas in float64: gelu (erf), gelu (tanh), x*sigmoid(1.702x), silu.
  EXPECT_TRUE(test::values_are(gelu(x), {-0.0455002639, -0.1542687694, 0, 0.3457312306, 1.9544997361}, 1e-9));
  EXPECT_TRUE(test::values_are(gelu_tanh(x), {-0.0454023059, -0.1542859902, 0, 0.3457140098, 1.9545976941}, 1e-9));
  EXPECT_TRUE(test::values_are(quick_gelu(x), {-0.0643413769, -0.1496115634, 0, 0.3503884366, 1.9356586231}, 1e-9));
  EXPECT_TRUE(test::values_are(silu(x), {-0.2384058440, -0.1887703344, 0, 0.3112296656, 1.7615941560}, 1e-9));
}

TEST(Elementwise, UnaryGradcheck) {
  std::vector<std::pair<const char*, std::function<Tensor(const Tensor&)>>> ops = {
      {"neg", [](const Tensor& x) { return neg(x); }},
      {"exp", [](const Tensor& x) { return exp(x); }},
      {"log", [](const Tensor& x) { return log(add(abs(x), 0.5)); }},
      {"sqrt", [](const Tensor& x) { return sqrt(add(x, 1.5)); }},
      {"rsqrt", [](const Tensor& x) { return rsqrt(add(x, 1.5)); }},
      {"abs", [](const Tensor& x) { return abs(x); }},
      {"pow", [](const Tensor& x) { return pow(add(x, 1.5), 2.5); }},
      {"clamp", [](const Tensor& x) { return clamp(x, -0.5, 0.5); }},
      {"tanh", [](const Tensor& x) { return tanh(x); }},
      {"sigmoid", [](const Tensor& x) { return sigmoid(x); }},
      {"relu", [](const Tensor& x) { return relu(x); }},
      {"gelu", [](const Tensor& x) { return gelu(mul(x, 3.0)); }},
      {"gelu_tanh", [](const Tensor& x) { return gelu_tanh(mul(x, 3.0)); }},
      {"quick_gelu", [](const Tensor& x) { return quick_gelu(mul(x, 3.0)); }},
      {"silu", [](const Tensor& x) { return silu(mul(x, 3.0)); }},
      {"scalars", [](const Tensor& x) { return rsub(2.0, mul(add(x, 1.0), -3.0)); }},
  };
  for (auto& [name, op] : ops) {
    SCOPED_TRACE(name);
    // A transposed, sliced view of a random input (values away from the kinks of abs/relu/clamp).
    EXPECT_EQ(gradcheck([&op](auto& in) { return op(narrow(transpose(in[0], 0, 1), 0, 1, 3)); },
                        {rand_input({5, 4}, 11)}),
              "");
  }
}

TEST(Elementwise, InPlaceOpsRefuseTrainableTensors) {
  Tensor p = rand_input({3}, 1);
  EXPECT_THROW(add_(p, ones({3}, DType::F64)), Error);
  {
    NoGradGuard no_grad;
    Tensor before = from_vector(to_vector(p), {3}, DType::F64);
    add_(p, ones({3}, DType::F64), 2.0);
    mul_(p, 0.5);
    EXPECT_TRUE(test::all_close(p, mul(add(before, 2.0), 0.5)));
  }
}

TEST(Views, ShareStorageAndHaveRightLayout) {
  Tensor x = from_vector({0, 1, 2, 3, 4, 5}, {2, 3});
  Tensor t = transpose(x, 0, 1);
  EXPECT_EQ(t.shape(), (Shape{3, 2}));
  EXPECT_EQ(t.strides(), (Shape{1, 3}));
  EXPECT_EQ(t.storage(), x.storage());
  EXPECT_FALSE(t.is_contiguous());
  EXPECT_TRUE(test::values_are(t, {0, 3, 1, 4, 2, 5}));
  EXPECT_TRUE(test::values_are(narrow(x, 1, 1, 2), {1, 2, 4, 5}));
  EXPECT_TRUE(test::values_are(select(x, 1, 2), {2, 5}));
  EXPECT_TRUE(test::values_are(expand(from_vector({7, 8}, {2, 1}), {2, 3}), {7, 7, 7, 8, 8, 8}));
  EXPECT_EQ(view(x, {3, -1}).shape(), (Shape{3, 2}));
  EXPECT_EQ(unsqueeze(x, 1).shape(), (Shape{2, 1, 3}));
  EXPECT_EQ(squeeze(unsqueeze(x, -1), 2).shape(), (Shape{2, 3}));
  EXPECT_THROW(view(t, {6}), Error);  // a transposed layout needs a copy
  Tensor r = reshape(t, {6});
  EXPECT_NE(r.storage(), x.storage());
  EXPECT_TRUE(test::values_are(r, {0, 3, 1, 4, 2, 5}));
  EXPECT_EQ(flatten(from_vector({1, 2, 3, 4, 5, 6, 7, 8}, {2, 2, 2}), 1).shape(), (Shape{2, 4}));
  EXPECT_THROW(squeeze(x, 0), Error);
  EXPECT_THROW(narrow(x, 1, 2, 2), Error);
}

TEST(Views, Gradcheck) {
  Fn f = [](auto& in) {
    Tensor x = in[0];                                  // [2, 3, 4]
    Tensor v = reshape(permute(x, {2, 0, 1}), {4, 6});  // copy path
    Tensor s = narrow(v, 1, 1, 4);                     // [4, 4]
    Tensor e = expand(unsqueeze(select(s, 0, 2), 0), {3, 4});
    Tensor w = view(contiguous(transpose(s, 0, 1)), {2, 8});
    return add(mul(e, narrow(s, 0, 0, 3)), sum(w));
  };
  EXPECT_EQ(gradcheck(f, {rand_input({2, 3, 4}, 21)}), "");
  EXPECT_EQ(gradcheck([](auto& in) { return to(clone(in[0]), DType::F32); }, {rand_input({3}, 2)},
                      {1e-3, 1e-4, 1e-3}),
            "");
}

TEST(Reduce, ValuesAndGradcheck) {
  Tensor x = from_vector({1, 5, 3, 4, 2, 6}, {2, 3}, DType::F64);
  EXPECT_TRUE(test::values_are(sum(x), {21}));
  EXPECT_TRUE(test::values_are(sum(x, {0}), {5, 7, 9}));
  EXPECT_TRUE(test::values_are(sum(x, {1}, true), {9, 12}));
  EXPECT_EQ(sum(x, {1}, true).shape(), (Shape{2, 1}));
  EXPECT_TRUE(test::values_are(mean(x, {-1}), {3, 4}));
  EXPECT_TRUE(test::values_are(var(x, {1}), {4, 4}));
  EXPECT_TRUE(test::values_are(var(x, {1}, 0), {8.0 / 3, 8.0 / 3}));
  EXPECT_TRUE(test::values_are(max(x, 1), {5, 6}));
  EXPECT_TRUE(test::values_are(argmax(x, 0), {1, 0, 1}));

  EXPECT_EQ(gradcheck([](auto& in) { return sum(in[0], {0, 2}); }, {rand_input({3, 4, 5}, 31)}), "");
  EXPECT_EQ(gradcheck([](auto& in) { return sum(permute(in[0], {2, 0, 1}), {1}, true); }, {rand_input({3, 4, 5}, 32)}),
            "");
  EXPECT_EQ(gradcheck([](auto& in) { return mean(in[0], {-1}); }, {rand_input({3, 4}, 33)}), "");
  EXPECT_EQ(gradcheck([](auto& in) { return var(narrow(in[0], 0, 1, 2), {0, 1}); }, {rand_input({3, 4}, 34)}), "");
  EXPECT_EQ(gradcheck([](auto& in) { return max(transpose(in[0], 0, 1), 1); }, {rand_input({6, 3}, 35)}), "");
  EXPECT_EQ(gradcheck([](auto& in) { return sum(expand(in[0], {4, 3})); }, {rand_input({3}, 36)}), "");
}

TEST(Linalg, MatmulValues) {
  Tensor a = from_vector({1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor b = from_vector({1, 0, 0, 1, 1, 1}, {3, 2});
  EXPECT_TRUE(test::values_are(matmul(a, b), {4, 5, 10, 11}));
  EXPECT_TRUE(test::values_are(matmul(transpose(b, 0, 1), transpose(a, 0, 1)), {4, 10, 5, 11}));
  EXPECT_TRUE(test::values_are(linear(a, transpose(b, 0, 1), from_vector({1, -1}, {2})), {5, 4, 11, 10}));
  EXPECT_TRUE(test::values_are(kron(from_vector({1, 2}, {1, 2}), from_vector({1, 10, 100, 1000}, {2, 2})),
                               {1, 10, 2, 20, 100, 1000, 200, 2000}));
  EXPECT_THROW(matmul(a, a), Error);
}

TEST(Linalg, Gradcheck) {
  EXPECT_EQ(gradcheck([](auto& in) { return matmul(in[0], in[1]); }, {rand_input({3, 4}, 41), rand_input({4, 5}, 42)}),
            "");
  // Batched with broadcasting, transposed operands, and a 2-D right operand folded into rows.
  EXPECT_EQ(gradcheck([](auto& in) { return matmul(in[0], transpose(in[1], -1, -2)); },
                      {rand_input({2, 1, 3, 4}, 43), rand_input({3, 5, 4}, 44)}),
            "");
  EXPECT_EQ(gradcheck([](auto& in) { return matmul(permute(in[0], {0, 2, 1}), in[1]); },
                      {rand_input({2, 4, 3}, 45), rand_input({4, 2}, 46)}),
            "");
  EXPECT_EQ(gradcheck([](auto& in) { return bmm(in[0], in[1]); }, {rand_input({2, 3, 4}, 47), rand_input({2, 4, 2}, 48)}),
            "");
  EXPECT_EQ(gradcheck([](auto& in) { return linear(in[0], in[1], in[2]); },
                      {rand_input({2, 3, 4}, 49), rand_input({5, 4}, 50), rand_input({5}, 51)}),
            "");
  EXPECT_EQ(gradcheck([](auto& in) { return linear(transpose(in[0], 0, 1), in[1]); },
                      {rand_input({4, 3}, 52), rand_input({2, 4}, 53)}),
            "");
  EXPECT_EQ(gradcheck([](auto& in) { return kron(in[0], in[1]); }, {rand_input({2, 3}, 54), rand_input({3, 2}, 55)}),
            "");
}

}  // namespace
}  // namespace vlp
