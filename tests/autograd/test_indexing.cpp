// Joining, splitting and indexing: values against hand-computed results, torch semantics for gather /
// scatter_add / index_select, errors that name the bad index, and gradchecks on non-contiguous inputs.
#include "common/test_util.h"

namespace vlp {
namespace {

using test::rand_input;

using ::vlp::test::error_of;

::testing::AssertionResult contains(const std::string& text, const std::string& part) {
  if (text.find(part) != std::string::npos) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "'" << text << "' does not contain '" << part << "'";
}

TEST(Concat, ValuesAlongEachDim) {
  Tensor a = from_vector({1, 2, 3, 4}, {2, 2});
  Tensor b = from_vector({5, 6, 7, 8, 9, 10}, {2, 3});
  EXPECT_TRUE(test::values_are(concat({a, b}, 1), {1, 2, 5, 6, 7, 3, 4, 8, 9, 10}));
  EXPECT_TRUE(test::values_are(concat({a, b}, -1), {1, 2, 5, 6, 7, 3, 4, 8, 9, 10}));
  // Dim 0 with a transposed (non-contiguous) operand.
  Tensor c = transpose(from_vector({1, 2, 3, 4, 5, 6}, {3, 2}), 0, 1);  // [[1, 3, 5], [2, 4, 6]]
  EXPECT_TRUE(test::values_are(concat({b, c}, 0), {5, 6, 7, 8, 9, 10, 1, 3, 5, 2, 4, 6}));
  EXPECT_TRUE(test::values_are(concat({from_vector({1, 0}, {2}, DType::I64), from_vector({7}, {1}, DType::I64)}, 0),
                               {1, 0, 7}));
  EXPECT_THROW(concat({a, b}, 0), Error);  // dim 1 differs
  EXPECT_THROW(concat({a, to(a, DType::F64)}, 0), Error);
  EXPECT_THROW(concat({}, 0), Error);
}

TEST(Concat, Gradcheck) {
  for (int64_t dim : {0, 1, 2}) {
    SCOPED_TRACE(dim);
    // Shapes [2, 3, 4] along the other dims; the operands are a plain, a transposed and a sliced view.
    Shape s0{2, 3, 4}, s1{2, 3, 4};
    s0[size_t(dim)] = 1;
    s1[size_t(dim)] = 2;
    Shape s1t = s1;
    std::swap(s1t[0], s1t[2]);
    Shape s2 = s0;
    s2[2] += 2;  // narrowed back along dim 2
    EXPECT_EQ(gradcheck(
                  [dim](auto& in) {
                    return concat({in[0], transpose(in[1], 0, 2), narrow(in[2], 2, 1, in[2].size(2) - 2)}, dim);
                  },
                  {rand_input(s0, 1), rand_input(s1t, 2), rand_input(s2, 3)}),
              "");
  }
}

TEST(Concat, OnlyTrainableInputsGetGradients) {
  Tensor a = rand_input({2, 3}, 1);
  Tensor frozen = rand_input({2, 2}, 2, DType::F64, false);
  backward(sum(mul(concat({frozen, a}, 1), 2.0)));
  EXPECT_TRUE(test::values_are(a.grad(), {2, 2, 2, 2, 2, 2}));
  EXPECT_FALSE(frozen.grad().defined());
}

TEST(Split, OutputsAreViewsWithRightValues) {
  Tensor x = from_vector({0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}, {2, 6});
  std::vector<Tensor> parts = split(x, {1, 3, 2}, 1);
  ASSERT_EQ(parts.size(), 3u);
  EXPECT_TRUE(test::values_are(parts[0], {0, 6}));
  EXPECT_TRUE(test::values_are(parts[1], {1, 2, 3, 7, 8, 9}));
  EXPECT_TRUE(test::values_are(parts[2], {4, 5, 10, 11}));
  for (const Tensor& p : parts) EXPECT_EQ(p.storage(), x.storage());  // views, not copies
  std::vector<Tensor> rows = split(x, {1, 1}, 0);
  EXPECT_TRUE(test::values_are(rows[1], {6, 7, 8, 9, 10, 11}));
  EXPECT_TRUE(contains(error_of([&] { split(x, {2, 3}, 1); }), "add up to 5"));
  EXPECT_THROW(split(x, {7, -1}, 1), Error);
}

TEST(Split, GradcheckWithUnusedOutputs) {
  // A transposed input; only some outputs reach the result, the others get zeros from the engine.
  EXPECT_EQ(gradcheck(
                [](auto& in) {
                  std::vector<Tensor> p = split(transpose(in[0], 0, 1), {2, 1, 3}, 0);  // of [6, 4]
                  return mul(p[2], p[2]);
                },
                {rand_input({4, 6}, 4)}),
            "");
  EXPECT_EQ(gradcheck(
                [](auto& in) {
                  std::vector<Tensor> p = split(in[0], {1, 2, 1}, -1);
                  return add(mul(p[0], 3.0), p[2]);
                },
                {rand_input({3, 2, 4}, 5)}),
            "");
  Tensor x = rand_input({5}, 6);
  std::vector<Tensor> p = split(x, {2, 3}, 0);
  backward(sum(mul(p[1], 4.0)));
  EXPECT_TRUE(test::values_are(x.grad(), {0, 0, 4, 4, 4}));
}

TEST(Stack, ValuesAndGradcheck) {
  Tensor a = from_vector({1, 2, 3}, {3}), b = from_vector({4, 5, 6}, {3});
  EXPECT_TRUE(test::values_are(stack({a, b}, 0), {1, 2, 3, 4, 5, 6}));
  EXPECT_TRUE(test::values_are(stack({a, b}, 1), {1, 4, 2, 5, 3, 6}));
  EXPECT_TRUE(test::values_are(stack({a, b}, -1), {1, 4, 2, 5, 3, 6}));
  EXPECT_EQ(stack({a, b, a}, 0).shape(), (Shape{3, 3}));
  EXPECT_THROW(stack({a, from_vector({1, 2}, {2})}, 0), Error);
  EXPECT_THROW(stack({a, b}, 2), Error);
  for (int64_t dim : {0, 1, 2, -1}) {
    SCOPED_TRACE(dim);
    EXPECT_EQ(gradcheck([dim](auto& in) { return stack({in[0], transpose(in[1], 0, 1), narrow(in[2], 0, 1, 2)}, dim); },
                        {rand_input({2, 3}, 7), rand_input({3, 2}, 8), rand_input({4, 3}, 9)}),
              "");
  }
}

TEST(IndexSelect, ValuesWithRepeatsAndBothIndexDtypes) {
  Tensor x = from_vector({0, 1, 2, 10, 11, 12, 20, 21, 22}, {3, 3});
  for (DType idt : {DType::I64, DType::I32}) {
    Tensor idx = from_vector({2, 0, 2}, {3}, idt);
    EXPECT_TRUE(test::values_are(index_select(x, 0, idx), {20, 21, 22, 0, 1, 2, 20, 21, 22}));
    EXPECT_TRUE(test::values_are(index_select(x, 1, idx), {2, 0, 2, 12, 10, 12, 22, 20, 22}));
  }
  // A transposed input and an integer tensor.
  EXPECT_TRUE(test::values_are(index_select(transpose(x, 0, 1), 0, from_vector({1}, {1}, DType::I64)), {1, 11, 21}));
  Tensor ids = from_vector({5, 6, 7}, {3}, DType::I64);
  Tensor picked = index_select(ids, 0, from_vector({2, 2, 0}, {3}, DType::I32));
  EXPECT_EQ(picked.dtype(), DType::I64);
  EXPECT_TRUE(test::values_are(picked, {7, 7, 5}));
}

TEST(IndexSelect, OutOfRangeAndBadIndexAreErrors) {
  Tensor x = zeros({3, 4});
  std::string msg = error_of([&] { index_select(x, 0, from_vector({0, 5}, {2}, DType::I64)); });
  EXPECT_TRUE(contains(msg, "index 5"));
  EXPECT_TRUE(contains(msg, "size 3"));
  EXPECT_TRUE(contains(error_of([&] { index_select(x, 1, from_vector({-1}, {1}, DType::I32)); }), "index -1"));
  EXPECT_THROW(index_select(x, 0, from_vector({0.0}, {1}, DType::F32)), Error);  // not an index dtype
  EXPECT_THROW(index_select(x, 0, zeros({1, 1}, DType::I64)), Error);            // not 1-D
}

TEST(IndexSelect, BackwardSumsRepeatsDeterministically) {
  Tensor x = rand_input({3, 2}, 10);
  Tensor idx = from_vector({0, 2, 0, 0, 2}, {5}, DType::I64);
  Tensor g = from_vector({1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, {5, 2}, DType::F64);
  backward(index_select(x, 0, idx), g);
  // Row 0 gets rows 0, 2, 3 of g; row 2 gets rows 1 and 4; row 1 nothing.
  EXPECT_TRUE(test::values_are(x.grad(), {1 + 5 + 7, 2 + 6 + 8, 0, 0, 3 + 9, 4 + 10}, 0.0));
  // A large repeated index (parallel path) gives bit-identical sums in index order on every run.
  Tensor big = rand_input({4, 3000}, 11);
  std::vector<double> iv(200);
  for (size_t i = 0; i < iv.size(); ++i) iv[i] = double((i * 7) % 4);
  Tensor bidx = from_vector(iv, {200}, DType::I64);
  Tensor bg = rand_input({200, 3000}, 12, DType::F64, false);
  backward(index_select(big, 0, bidx), bg);
  std::vector<double> first = to_vector(big.grad());
  big.set_grad(Tensor());
  backward(index_select(big, 0, bidx), bg);
  EXPECT_EQ(first, to_vector(big.grad()));
  // and equal to a serial sum in index order
  std::vector<double> gv = to_vector(bg), expected(4 * 3000, 0.0);
  for (size_t j = 0; j < 200; ++j)
    for (size_t c = 0; c < 3000; ++c) expected[size_t(iv[j]) * 3000 + c] += gv[j * 3000 + c];
  EXPECT_EQ(first, expected);
}

TEST(IndexSelect, Gradcheck) {
  Tensor idx = from_vector({3, 0, 3, 1}, {4}, DType::I64);
  for (int64_t dim : {0, 1, 2}) {
    SCOPED_TRACE(dim);
    EXPECT_EQ(gradcheck([&](auto& in) { return index_select(permute(in[0], {2, 0, 1}), dim, idx); },
                        {rand_input({4, 5, 4}, 13)}),
              "");
  }
}

TEST(Gather, ValuesFollowTorchSemantics) {
  // x [2, 3]; dim 1: out[i][j] = x[i][index[i][j]].
  Tensor x = from_vector({1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor idx = from_vector({2, 0, 1, 1}, {2, 2}, DType::I64);
  EXPECT_TRUE(test::values_are(gather(x, 1, idx), {3, 1, 5, 5}));
  // dim 0: out[i][j] = x[index[i][j]][j]; the index is smaller than x in dim 1.
  Tensor idx0 = from_vector({1, 0, 0, 0}, {2, 2}, DType::I32);
  EXPECT_TRUE(test::values_are(gather(x, 0, idx0), {4, 2, 1, 2}));
  // A transposed input: xt [3, 2] = [[1, 4], [2, 5], [3, 6]].
  Tensor xt = transpose(x, 0, 1);
  EXPECT_TRUE(test::values_are(gather(xt, 1, from_vector({1, 1, 0}, {3, 1}, DType::I64)), {4, 5, 3}));
  std::string msg = error_of([&] { gather(x, 1, from_vector({0, 3}, {2, 1}, DType::I64)); });
  EXPECT_TRUE(contains(msg, "index 3"));
  EXPECT_TRUE(contains(msg, "size 3"));
  EXPECT_THROW(gather(x, 1, from_vector({0, 1}, {2}, DType::I64)), Error);         // rank differs
  EXPECT_THROW(gather(x, 1, zeros({3, 1}, DType::I64)), Error);                    // larger than x in dim 0
}

TEST(Gather, Gradcheck) {
  // Repeated positions (gradients sum) and an index smaller than x outside dim; a permuted x.
  Generator gen(5);
  Tensor u = rand({3, 2, 4}, &gen, DType::F64);
  std::vector<double> iv;
  for (double v : to_vector(u)) iv.push_back(std::floor(v * 5));  // values in [0, 5) along dim 1 of size 5
  Tensor idx = from_vector(iv, {3, 2, 4}, DType::I64);
  EXPECT_EQ(gradcheck([&](auto& in) { return gather(permute(in[0], {1, 0, 2}), 1, idx); },
                      {rand_input({5, 4, 6}, 14)}),
            "");
}

TEST(ScatterAdd, ValuesFollowTorchSemantics) {
  Tensor x = from_vector({1, 1, 1, 1, 1, 1}, {2, 3});
  // dim 1: out[i][index[i][j]] += src[i][j]; src larger than the index in dim 1 (its extra column unused).
  Tensor idx = from_vector({0, 0, 2, 1}, {2, 2}, DType::I64);
  Tensor src = from_vector({10, 20, 99, 30, 40, 99}, {2, 3});
  EXPECT_TRUE(test::values_are(scatter_add(x, 1, idx, src), {31, 1, 1, 1, 41, 31}));
  // dim 0 with an I32 index.
  Tensor idx0 = from_vector({1, 1, 0}, {1, 3}, DType::I32);
  EXPECT_TRUE(test::values_are(scatter_add(x, 0, idx0, from_vector({5, 6, 7}, {1, 3})), {1, 1, 8, 6, 7, 1}));
  EXPECT_TRUE(test::values_are(x, {1, 1, 1, 1, 1, 1}));  // x itself untouched
  std::string msg = error_of([&] { scatter_add(x, 0, from_vector({2}, {1, 1}, DType::I64), src); });
  EXPECT_TRUE(contains(msg, "index 2"));
  EXPECT_TRUE(contains(msg, "size 2"));
  EXPECT_THROW(scatter_add(x, 1, idx, from_vector({1, 2}, {2, 1})), Error);  // src smaller than the index
}

TEST(ScatterAdd, BackwardIsIdentityAndGather) {
  Tensor x = rand_input({2, 3}, 15), src = rand_input({2, 3}, 16);
  Tensor idx = from_vector({2, 2, 0, 1}, {2, 2}, DType::I64);
  Tensor g = from_vector({1, 2, 3, 4, 5, 6}, {2, 3}, DType::F64);
  backward(scatter_add(x, 1, idx, src), g);
  EXPECT_TRUE(test::values_are(x.grad(), {1, 2, 3, 4, 5, 6}));
  // dsrc = gather(g, 1, idx) = [[3, 3], [4, 5]] in src's first two columns, zero in the unused one.
  EXPECT_TRUE(test::values_are(src.grad(), {3, 3, 0, 4, 5, 0}));
}

TEST(ScatterAdd, Gradcheck) {
  Tensor idx = from_vector({1, 0, 1, 3, 3, 2, 0, 0}, {2, 4}, DType::I64);
  // x is a transposed view; src is larger than the index and sliced.
  EXPECT_EQ(gradcheck([&](auto& in) { return scatter_add(transpose(in[0], 0, 1), 1, idx, narrow(in[1], 1, 1, 5)); },
                      {rand_input({4, 3}, 17), rand_input({3, 6}, 18)}),
            "");
  EXPECT_EQ(gradcheck([&](auto& in) { return scatter_add(in[0], 0, from_vector({2, 0, 2}, {1, 3}, DType::I32), in[1]); },
                      {rand_input({3, 3}, 19), rand_input({2, 3}, 20)}),
            "");
}

TEST(MaskedFill, EveryMaskDtypeAndBroadcasting) {
  Tensor x = from_vector({1, 2, 3, 4, 5, 6}, {2, 3});
  for (DType mdt : {DType::Bool, DType::U8, DType::I32, DType::I64}) {
    SCOPED_TRACE(dtype_name(mdt));
    Tensor mask = from_vector({0, 1, 0, 1, 0, 0}, {2, 3}, mdt);
    EXPECT_TRUE(test::values_are(masked_fill(x, mask, -7), {1, -7, 3, -7, 5, 6}));
    // A row mask broadcast over rows.
    EXPECT_TRUE(test::values_are(masked_fill(x, from_vector({1, 0, 1}, {3}, mdt), 0.5), {0.5, 2, 0.5, 0.5, 5, 0.5}));
  }
  // Nonzero counts as true, not just 1; a column mask [2, 1].
  EXPECT_TRUE(test::values_are(masked_fill(x, from_vector({-3, 0}, {2, 1}, DType::I64), 9), {9, 9, 9, 4, 5, 6}));
  EXPECT_TRUE(test::values_are(masked_fill(x, from_vector({256, 0}, {2, 1}, DType::I32), 9), {9, 9, 9, 4, 5, 6}));
  Tensor inf = masked_fill(x, from_vector({1, 0, 0, 0, 0, 0}, {2, 3}, DType::Bool), -INFINITY);
  EXPECT_TRUE(std::isinf(to_vector(inf)[0]));
  EXPECT_THROW(masked_fill(x, zeros({2, 3}, DType::F32), 0), Error);   // float mask
  EXPECT_THROW(masked_fill(x, zeros({2, 2}, DType::Bool), 0), Error);  // does not broadcast
  EXPECT_THROW(masked_fill(x, zeros({2, 2, 3}, DType::Bool), 0), Error);  // would grow x
}

TEST(MaskedFill, Gradcheck) {
  Tensor mask = from_vector({1, 0, 0, 1, 1, 0, 0, 0}, {2, 1, 4}, DType::U8);
  EXPECT_EQ(gradcheck([&](auto& in) { return masked_fill(permute(in[0], {1, 2, 0}), mask, 3.0); },
                      {rand_input({4, 2, 3}, 21)}),
            "");
  Tensor x = rand_input({2, 2}, 22);
  backward(sum(masked_fill(x, from_vector({0, 1, 1, 0}, {2, 2}, DType::I64), 100.0)));
  EXPECT_TRUE(test::values_are(x.grad(), {1, 0, 0, 1}));
}

TEST(Where, ValuesWithBroadcasting) {
  Tensor cond = from_vector({1, 0, 2}, {3}, DType::I32);
  Tensor a = from_vector({1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor b = from_vector({-1, -2}, {2, 1});
  EXPECT_TRUE(test::values_are(where(cond, a, b), {1, -1, 3, 4, -2, 6}));
  // All three broadcast: cond [2, 1], a [3], b scalar-like [1] -> [2, 3].
  Tensor c2 = from_vector({0, 1}, {2, 1}, DType::Bool);
  EXPECT_TRUE(test::values_are(where(c2, from_vector({7, 8, 9}, {3}), from_vector({0}, {1})), {0, 0, 0, 7, 8, 9}));
  Tensor ints = where(c2, from_vector({1, 2}, {1, 2}, DType::I64), from_vector({5, 6}, {1, 2}, DType::I64));
  EXPECT_EQ(ints.dtype(), DType::I64);
  EXPECT_TRUE(test::values_are(ints, {5, 6, 1, 2}));
  EXPECT_THROW(where(cond, a, to(b, DType::F64)), Error);
  EXPECT_THROW(where(from_vector({1, 0}, {2}, DType::Bool), a, b), Error);
}

TEST(Where, Gradcheck) {
  Tensor cond = from_vector({1, 0, 0, 1, 1, 0, 1, 0}, {2, 4, 1}, DType::U8);
  // a [2, 1, 3] and b [3] (a transposed slice) broadcast with cond [2, 4, 1] to [2, 4, 3].
  EXPECT_EQ(gradcheck([&](auto& in) { return where(cond, in[0], select(transpose(in[1], 0, 1), 0, 1)); },
                      {rand_input({2, 1, 3}, 23), rand_input({3, 2}, 24)}),
            "");
  Tensor a = rand_input({2}, 25), b = rand_input({2, 2}, 26);
  backward(sum(where(from_vector({1, 0}, {2}, DType::Bool), a, b)));
  EXPECT_TRUE(test::values_are(a.grad(), {2, 0}));
  EXPECT_TRUE(test::values_are(b.grad(), {0, 1, 0, 1}));
}

}  // namespace
}  // namespace vlp
