// The indexing and reduction families wired for training steps on CUDA (where/masked_fill, index_select,
// max/argmax, var through composed ops, binary_cross_entropy_with_logits) and the joining copies (concat,
// split, stack, narrow): forward values and gradients against the same graph run on the CPU.
#ifdef VLP_HAVE_CUDA
#include <gtest/gtest.h>

#include <limits>

#include "autograd/loss.h"
#include "autograd/ops.h"
#include "tests/cuda/cuda_test_util.h"

namespace vlp {
namespace {

using namespace cudatest;

TEST(CudaIndexing, WhereAndMaskedFillMatchTheCpu) {
  VLP_REQUIRE_GPU();
  for (DType dt : {DType::F32, DType::BF16}) {
    // A [5, 1, 9] condition broadcast against [5, 7, 9] and [7, 1]; an I64 mask built on each device.
    std::vector<double> cond_v, mask_v;
    for (int i = 0; i < 45; ++i) cond_v.push_back((i * 7 + 3) % 5 < 2 ? 1.0 : 0.0);
    for (int i = 0; i < 7 * 9; ++i) mask_v.push_back((i * 5 + 1) % 4 == 0 ? 3.0 : 0.0);
    compare_graph({{5, 7, 9}, {7, 1}}, dt, 901, [&](const std::vector<Tensor>& x, Device dev) {
      Tensor cond = from_vector(cond_v, {5, 1, 9}, DType::Bool, dev);
      Tensor mask = from_vector(mask_v, {7, 9}, DType::I64, dev);
      // masked_fill with -inf then a softmax: the unselected operand's infinities must not leak.
      Tensor filled = softmax(masked_fill(x[0], mask, -std::numeric_limits<double>::infinity()), -1);
      return where(cond, filled, x[1]);
    }, "where(masked_fill)");
  }
}

TEST(CudaIndexing, IndexSelectMatchesTheCpuWithRepeatedRows) {
  VLP_REQUIRE_GPU();
  for (DType dt : {DType::F32, DType::BF16})
    for (int64_t dim : {0, 1, 2}) {
      compare_graph({{6, 5, 7}}, dt, 911 + uint64_t(dim), [&](const std::vector<Tensor>& x, Device dev) {
        const int64_t n = x[0].size(dim);
        Tensor index = from_vector({double(n - 1), 0, 2, 2, double(n - 1), 1}, {6}, DType::I64, dev);
        return index_select(permute(x[0], {0, 2, 1}), dim, index);  // a non-contiguous input
      }, "index_select dim " + std::to_string(dim));
    }
  // Integer tensors move as they are on CUDA (a byte copy).
  Tensor ids = from_vector({4, 8, 15, 16, 23, 42}, {3, 2}, DType::I64, gpu());
  Tensor rows = from_vector({2, 0, 2}, {3}, DType::I32, gpu());
  EXPECT_EQ(to_vector(index_select(ids, 0, rows)), (std::vector<double>{23, 42, 4, 8, 23, 42}));
}

TEST(CudaIndexing, MaxArgmaxAndVarMatchTheCpu) {
  VLP_REQUIRE_GPU();
  for (DType dt : {DType::F32, DType::BF16}) {
    for (int64_t dim : {0, 1, -1})
      compare_graph({{5, 33, 7}}, dt, 921, [&](const std::vector<Tensor>& x, Device) { return max(x[0], dim, dim == 1); },
                    "max dim " + std::to_string(dim));
    compare_graph({{5, 33, 7}}, dt, 925, [&](const std::vector<Tensor>& x, Device) { return var(x[0], {1}, 1, false); },
                  "var");
    Input x = make_input({9, 13}, 927, dt);
    EXPECT_EQ(to_vector(argmax(x.dev, 1)), to_vector(argmax(x.cpu, 1))) << dtype_name(dt);
  }
}

TEST(CudaIndexing, BinaryCrossEntropyWithLogitsMatchesTheCpu) {
  VLP_REQUIRE_GPU();
  for (DType dt : {DType::F32, DType::BF16})
    for (Reduction red : {Reduction::Mean, Reduction::Sum, Reduction::None}) {
      compare_graph({{7, 37}, {7, 37}}, dt, 931, [&](const std::vector<Tensor>& x, Device) {
        // logits up to +-8 (large |x| exercises the stable form), soft targets in [0, 1]
        Tensor loss = binary_cross_entropy_with_logits(mul(x[0], 8.0), mul(add(x[1], 1.0), 0.5), red);
        return red == Reduction::None ? loss : reshape(loss, {1});
      }, std::string("bce ") + (red == Reduction::None ? "none" : red == Reduction::Sum ? "sum" : "mean"));
    }
}

TEST(CudaIndexing, ConcatSplitStackNarrowMatchTheCpu) {
  VLP_REQUIRE_GPU();
  for (DType dt : {DType::F32, DType::BF16})
    compare_graph({{3, 5, 7}, {3, 2, 7}}, dt, 941, [&](const std::vector<Tensor>& x, Device) {
      Tensor c = concat({x[0], x[1]}, 1);                              // [3, 7, 7]
      std::vector<Tensor> parts = split(c, {4, 3}, 2);                 // [3, 7, 4], [3, 7, 3]
      Tensor s = stack({narrow(parts[0], 2, 1, 3), parts[1]}, 0);      // [2, 3, 7, 3]
      return mul(s, s);
    }, "concat/split/stack/narrow");
}

}  // namespace
}  // namespace vlp
#endif  // VLP_HAVE_CUDA
