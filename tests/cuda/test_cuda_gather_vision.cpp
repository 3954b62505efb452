// The last ops wired for CUDA: gather / scatter_add (kernels/cuda/index.cu), adaptive_max_pool_grid
// (kernels/cuda/vision.cu), patch_embed (views + copy + linear) and the sample weight's gradient of
// cross_entropy (kernels/cuda/loss.cu), plus two model functions that built CPU tensors (the weighted
// seq2seq loss, the ViT position-embedding resampling). Kernels against the CPU
// kernels on odd sizes with outputs poisoned beforehand (F32 relative error 1e-5, BF16 1e-2); ops as whole
// graphs (forward and every input gradient) against the same graph on the CPU.
#ifdef VLP_HAVE_CUDA
#include <gtest/gtest.h>

#include <cmath>

#include "autograd/loss.h"
#include "autograd/ops.h"
#include "kernels/cpu/index.h"
#include "kernels/cpu/vision.h"
#include "kernels/cuda/index.h"
#include "kernels/cuda/vision.h"
#include "models/vit.h"
#include "models/vl/vl_seq2seq.h"
#include "tests/cuda/cuda_test_util.h"

namespace vlp {
namespace {

using namespace cudatest;

const DType kDtypes[] = {DType::F32, DType::BF16};

// A deterministic I64 index of `shape` with values in [0, range), many repeats.
std::vector<int64_t> index_values(const Shape& shape, int64_t range, uint64_t salt) {
  std::vector<int64_t> v(static_cast<size_t>(shape_numel(shape)));
  for (size_t i = 0; i < v.size(); ++i) v[i] = int64_t((i * 7919 + salt * 104729 + (i * i) % 13) % uint64_t(range));
  return v;
}

// Uniform [-1, 1) F32 values on the CPU (for the host-only test: no upload).
Tensor host_random(const Shape& shape, uint64_t seed) {
  Generator gen(seed);
  Tensor t = empty(shape, DType::F32);
  uniform_(t, -1.0, 1.0, &gen);
  return t;
}

// ---- kernels ----

TEST(CudaGatherKernel, MatchesTheCpuOnStridedInputsForEveryElementSize) {
  VLP_REQUIRE_GPU();
  // x [5, 9, 7] viewed through a permutation (non-contiguous); the index is smaller than x outside dim.
  for (int64_t dim : {0, 1, 2}) {
    Input base = make_input({5, 7, 9}, 301 + uint64_t(dim));
    const Shape x_shape{5, 9, 7};  // the permuted view's shape; strides (63, 1, 9)
    Shape ishape{4, 8, 6};
    ishape[size_t(dim)] = 11;  // along dim the index may be longer than x (repeats)
    std::vector<int64_t> idx = index_values(ishape, x_shape[size_t(dim)], uint64_t(dim));
    Tensor idx_dev = from_data<int64_t>(idx, ishape, gpu());
    // Sizes 4, 2, 8, 4 and 1 bytes; values scaled so the integer dtypes hold distinct values.
    for (DType dt : {DType::F32, DType::BF16, DType::F64, DType::I32, DType::Bool}) {
      const std::string tag = "dim " + std::to_string(dim) + " " + std::string(dtype_name(dt));
      Tensor x_dt = convert(mul(base.cpu, 50.0), dt);  // on the CPU; uploaded as it is
      Tensor x_dev = permute(convert(x_dt, dt, gpu()), {0, 2, 1});
      Tensor out = poisoned(ishape, dt);
      cuda::gather(int(x_dev.element_size()), ishape, dim, x_dev.data_ptr(), x_dev.strides().data(), x_dev.size(dim),
                   idx_dev.data<int64_t>(), out.data_ptr(), stream());
      // A byte copy: exactly the CPU kernel's values (through the CPU op).
      Tensor expect = gather(permute(x_dt, {0, 2, 1}), dim, from_data<int64_t>(idx, ishape));
      EXPECT_EQ(to_vector(out), to_vector(expect)) << tag;
    }
  }
}

TEST(CudaScatterAddKernel, MatchesTheCpuBitForBitInF32AndIsDeterministic) {
  VLP_REQUIRE_GPU();
  for (int64_t dim : {0, 1, 2})
    for (DType dt : kDtypes) {
      const std::string tag = "dim " + std::to_string(dim) + " " + std::string(dtype_name(dt));
      // out [6, 7, 5] contiguous with fresh values (accumulated into: every element is compared, untouched
      // ones must keep their value); src [15, 14, 13] permuted (non-contiguous); index [5, 6, 4] with dim
      // replaced by 12 positions hitting a few targets many times.
      Input out0 = make_input({6, 7, 5}, 311 + uint64_t(dim), dt);
      Input src_base = make_input({13, 15, 14}, 321 + uint64_t(dim), dt, -2, 2);
      Tensor src_cpu = permute(src_base.cpu, {1, 2, 0});  // [15, 14, 13]
      Shape ishape{5, 6, 4};
      ishape[size_t(dim)] = 12;
      std::vector<int64_t> idx = index_values(ishape, out0.cpu.size(dim), 7 + uint64_t(dim));
      Tensor ref = clone(out0.cpu);
      cpu::scatter_add<float>(ishape, dim, ref.data<float>(), ref.strides().data(), idx.data(), src_cpu.data<float>(),
                              src_cpu.strides().data());
      Tensor idx_dev = from_data<int64_t>(idx, ishape, gpu());
      Tensor src_dev = permute(src_base.dev, {1, 2, 0});
      std::vector<double> first;
      for (int run = 0; run < 2; ++run) {
        Tensor out = convert(out0.cpu, dt, gpu());
        cuda::scatter_add(ew(dt), ishape, dim, out.data_ptr(), out.strides().data(), out.size(dim),
                          idx_dev.data<int64_t>(), src_dev.data_ptr(), src_dev.strides().data(), stream());
        std::vector<double> got = to_vector(out);
        EXPECT_TRUE(rel_close(got, to_vector(ref), tol_for(dt), tag));
        // F32: the same additions in the same order as the serial CPU kernel.
        if (dt == DType::F32) {
          EXPECT_EQ(got, to_vector(ref)) << tag;
        }
        if (run == 0) {
          first = got;
        } else {
          EXPECT_EQ(got, first) << tag << ": not deterministic";
        }
      }
    }
}

// The host half of the CUDA scatter_add (no GPU needed): running its plan serially on the host must give
// the CPU kernel's bits, for strided out and src.
TEST(CudaScatterAddPlan, ReproducesTheCpuKernelOnTheHost) {
  for (int64_t dim : {0, 1, 2})
    for (bool strided_out : {false, true}) {
      const std::string tag = "dim " + std::to_string(dim) + (strided_out ? " strided out" : "");
      Tensor out_base = host_random({5, 7, 6}, 411 + uint64_t(dim));
      // out [6, 7, 5]: a permuted view of out_base, or a contiguous copy of it.
      Tensor out_view = permute(out_base, {2, 1, 0});
      Tensor src = permute(host_random({13, 15, 14}, 421), {1, 2, 0});  // [15, 14, 13]
      Shape ishape{5, 6, 4};
      ishape[size_t(dim)] = 12;
      std::vector<int64_t> idx = index_values(ishape, out_view.size(dim), 5 + uint64_t(dim));
      Tensor ref = contiguous_raw(out_view);
      cpu::scatter_add<float>(ishape, dim, ref.data<float>(), ref.strides().data(), idx.data(), src.data<float>(),
                              src.strides().data());
      Tensor got = strided_out ? clone(out_base) : contiguous_raw(out_view);
      Tensor got_view = strided_out ? permute(got, {2, 1, 0}) : got;
      cuda::ScatterPlan plan = cuda::plan_scatter_add(ishape, dim, got_view.strides().data(), got_view.size(dim),
                                                      idx.data(), src.strides().data());
      ASSERT_EQ(plan.start.size(), plan.target.size() + 1) << tag;
      ASSERT_EQ(plan.start.back(), int64_t(idx.size())) << tag;  // every index in range: every position used
      float* o = got.data<float>();
      const float* sp = src.data<float>();
      for (size_t u = 0; u < plan.target.size(); ++u) {  // what scatter_add_kernel does, one target each
        if (u > 0) {
          EXPECT_LT(plan.target[u - 1], plan.target[u]) << tag;
        }
        float acc = o[plan.target[u]];
        for (int64_t k = plan.start[u]; k < plan.start[u + 1]; ++k) acc += sp[plan.src_offset[size_t(k)]];
        o[plan.target[u]] = acc;
      }
      EXPECT_EQ(to_vector(got_view), to_vector(ref)) << tag;
    }
  // Positions whose index is out of range are dropped, never planned.
  const std::vector<int64_t> shape{2, 3}, strides{3, 1};
  const std::vector<int64_t> idx{-1, 3, 0, 2, 7, 0};  // along dim 1 of size 3: positions 2, 3, 5 are valid
  cuda::ScatterPlan plan = cuda::plan_scatter_add(shape, 1, strides.data(), 3, idx.data(), strides.data());
  EXPECT_EQ(plan.target, (std::vector<int64_t>{0, 3, 5}));  // out (0, 0), (1, 0), (1, 2)
  EXPECT_EQ(plan.src_offset, (std::vector<int64_t>{2, 5, 3}));
  EXPECT_EQ(plan.start, (std::vector<int64_t>{0, 1, 2, 3}));
}

TEST(CudaVisionKernel, AdaptiveMaxPoolGridForwardBackward) {
  VLP_REQUIRE_GPU();
  struct Case {
    int64_t B, H, W, C, oh, ow;
    bool ties;  // values on a coarse lattice: many equal maxima, the first one must win
  };
  const Case cases[] = {{2, 7, 5, 33, 3, 4, false}, {3, 5, 7, 9, 9, 6, false},  // down- and up-sampling
                        {2, 7, 5, 33, 3, 2, true},  {1, 11, 13, 65, 4, 5, false}};
  for (const Case& k : cases)
    for (DType dt : kDtypes) {
      const std::string tag = std::to_string(k.H) + "x" + std::to_string(k.W) + " -> " + std::to_string(k.oh) + "x" +
                              std::to_string(k.ow) + (k.ties ? " ties " : " ") + std::string(dtype_name(dt));
      Input x = make_input({k.B, k.H, k.W, k.C}, 331, dt, -3, 3);
      if (k.ties) {  // round to multiples of 1 (values -3..3): exact in BF16 too
        std::vector<double> v = to_vector(x.cpu);
        for (double& e : v) e = std::round(e);
        x.cpu = from_vector(v, x.cpu.shape());
        x.dev = convert(x.cpu, dt, gpu());
      }
      const int64_t n_out = k.B * k.oh * k.ow * k.C, n_in = k.B * k.H * k.W * k.C;
      std::vector<float> y_ref(static_cast<size_t>(n_out)), dx_ref(static_cast<size_t>(n_in), 0.f);
      std::vector<int64_t> at_ref(static_cast<size_t>(n_out));
      cpu::adaptive_max_pool_grid<float>(x.c(), y_ref.data(), at_ref.data(), k.B, k.H, k.W, k.C, k.oh, k.ow);
      Tensor y = poisoned({k.B, k.oh, k.ow, k.C}, dt), at = poisoned({k.B, k.oh, k.ow, k.C}, DType::I64);
      cuda::adaptive_max_pool_grid(ew(dt), x.d(), y.data_ptr(), at.data<int64_t>(), k.B, k.H, k.W, k.C, k.oh, k.ow,
                                   stream());
      EXPECT_EQ(to_vector(y), as_doubles(y_ref.data(), y_ref.size())) << tag;  // a selection: exact
      EXPECT_EQ(to_vector(at), as_doubles(at_ref.data(), at_ref.size())) << tag;
      Input dy = make_input({k.B, k.oh, k.ow, k.C}, 332, dt);
      cpu::adaptive_max_pool_grid_backward<float>(dy.c(), at_ref.data(), dx_ref.data(), k.B, k.H, k.W, k.C, k.oh,
                                                  k.ow);
      Tensor dx = poisoned({k.B, k.H, k.W, k.C}, dt);
      cuda::adaptive_max_pool_grid_backward(ew(dt), dy.d(), at.data<int64_t>(), dx.data_ptr(), k.B, k.H, k.W, k.C,
                                            k.oh, k.ow, stream());
      EXPECT_TRUE(rel_close(to_vector(dx), as_doubles(dx_ref.data(), dx_ref.size()), tol_for(dt), "dx " + tag));
      if (dt == DType::F32) {
        EXPECT_EQ(to_vector(dx), as_doubles(dx_ref.data(), dx_ref.size())) << tag;
      }
    }
}

// ---- ops ----

TEST(CudaGatherOp, GatherMatchesTheCpuWithGradients) {
  VLP_REQUIRE_GPU();
  for (DType dt : kDtypes)
    for (int64_t dim : {0, 1, 2, -1}) {
      compare_graph({{6, 5, 7}}, dt, 341 + uint64_t(dim + 1), [&](const std::vector<Tensor>& x, Device dev) {
        Tensor xv = permute(x[0], {0, 2, 1});  // [6, 7, 5], non-contiguous
        const int64_t d = xv.wrap_dim(dim);
        Shape ishape{5, 4, 3};
        ishape[size_t(d)] = 9;  // repeats along dim: the backward sums collisions
        std::vector<int64_t> v = index_values(ishape, xv.size(d), uint64_t(d));
        return gather(xv, dim, from_data<int64_t>(v, ishape, dev));
      }, "gather dim " + std::to_string(dim));
    }
  // Integer tensors are moved as they are (a byte copy); an I32 index is accepted.
  Tensor ids = from_vector({4, 8, 15, 16, 23, 42}, {2, 3}, DType::I64, gpu());
  Tensor index = from_vector({2, 0, 1, 1}, {2, 2}, DType::I32, gpu());
  EXPECT_EQ(to_vector(gather(ids, 1, index)), (std::vector<double>{15, 4, 23, 23}));
}

TEST(CudaGatherOp, ScatterAddMatchesTheCpuWithGradients) {
  VLP_REQUIRE_GPU();
  for (DType dt : kDtypes)
    for (int64_t dim : {0, 1, 2}) {
      // x [6, 7, 5]; src [8, 9, 9] larger than the index [5, 6, 4] (dim: 8), so part of src gets no gradient.
      Shape ishape{5, 6, 4};
      ishape[size_t(dim)] = 8;
      compare_graph({{6, 7, 5}, {8, 9, 9}}, dt, 351 + uint64_t(dim), [&](const std::vector<Tensor>& x, Device dev) {
        std::vector<int64_t> v = index_values(ishape, x[0].size(dim), 3 + uint64_t(dim));
        return scatter_add(x[0], dim, from_data<int64_t>(v, ishape, dev), x[1]);
      }, "scatter_add dim " + std::to_string(dim));
    }
}

TEST(CudaVisionOp, AdaptiveMaxPoolGridAndPatchEmbedMatchTheCpu) {
  VLP_REQUIRE_GPU();
  for (DType dt : kDtypes) {
    compare_graph({{2, 7, 5, 9}}, dt, 361, [&](const std::vector<Tensor>& x, Device) {
      return adaptive_max_pool_grid(x[0], 3, 4);
    }, "adaptive_max_pool_grid 7x5 -> 3x4");
    compare_graph({{2, 5, 7, 9}}, dt, 362, [&](const std::vector<Tensor>& x, Device) {
      return adaptive_max_pool_grid(permute(x[0], {0, 2, 1, 3}), 9, 6);  // non-contiguous, upsampling
    }, "adaptive_max_pool_grid 7x5 -> 9x6");
    // images [2, 3, 14, 21], patch 7: a 2x3 grid of 147-pixel patches; weight [5, 3, 7, 7] and bias [5].
    compare_graph({{2, 3, 14, 21}, {5, 3, 7, 7}, {5}}, dt, 363, [&](const std::vector<Tensor>& x, Device) {
      return patch_embed(x[0], x[1], x[2]);
    }, "patch_embed");
  }
}

TEST(CudaVisionOp, PositionEmbeddingResamplingFollowsTheDevice) {
  VLP_REQUIRE_GPU();
  // [1, 1 + 3x3, 6] resampled bicubically to a 4x5 grid: the resampling matrices follow the embeddings.
  for (DType dt : kDtypes)
    compare_graph({{1, 10, 6}}, dt, 366, [&](const std::vector<Tensor>& x, Device) {
      return interpolate_position_embeddings(x[0], 4, 5, false);
    }, "interpolate_position_embeddings");
}

TEST(CudaLossOp, CrossEntropySampleWeightGradientMatchesTheCpu) {
  VLP_REQUIRE_GPU();
  const int64_t n = 11, c = 37, ignore = -100;
  std::vector<double> target;
  for (int64_t i = 0; i < n; ++i) target.push_back(i % 4 == 2 ? double(ignore) : double((i * 13 + 5) % c));
  for (DType dt : kDtypes)
    for (Reduction red : {Reduction::Mean, Reduction::Sum, Reduction::None})
      for (double eps : {0.0, 0.1}) {
        const std::string tag = std::string(red == Reduction::None ? "none" : red == Reduction::Sum ? "sum" : "mean") +
                                " eps " + std::to_string(eps);
        compare_graph({{n, c}, {n}}, dt, 371, [&](const std::vector<Tensor>& x, Device dev) {
          Tensor w = add(x[1], 1.5);  // weights in [0.5, 2.5)
          Tensor loss = cross_entropy(mul(x[0], 3.0), from_vector(target, {n}, DType::I64, dev), ignore, eps, w, red);
          return red == Reduction::None ? loss : reshape(loss, {1});
        }, "cross_entropy weighted " + tag);
      }
  // Only the weight needs a gradient (frozen logits): no logits gradient is computed or saved.
  Input logits = make_input({n, c}, 381), w = make_input({n}, 382, DType::F32, 0.5, 1.5);
  Tensor tgt = from_vector(target, {n}, DType::I64);
  std::vector<std::vector<double>> grads;
  for (Device dev : {Device::cpu(), gpu()}) {
    Tensor wd = convert(w.cpu, DType::F32, dev);
    wd.set_requires_grad(true);
    backward(cross_entropy(convert(logits.cpu, DType::F32, dev), convert(tgt, DType::I64, dev), ignore, 0.1, wd));
    grads.push_back(to_vector(wd.grad()));
  }
  EXPECT_TRUE(rel_close(grads[1], grads[0], 1e-5, "dweight with frozen logits"));
}

TEST(CudaLossOp, WeightedSeq2SeqLossMatchesTheCpu) {
  VLP_REQUIRE_GPU();
  // logits [3, 5, 17], labels with ignored (-100) positions, one row fully ignored; per-example weights.
  std::vector<double> labels;
  for (int64_t i = 0; i < 15; ++i) labels.push_back(i % 5 == 4 || (i >= 10 && i < 15) ? -100.0 : double((i * 7) % 17));
  for (DType dt : kDtypes)
    compare_graph({{3, 5, 17}, {3}}, dt, 391, [&](const std::vector<Tensor>& x, Device dev) {
      Tensor loss = weighted_seq2seq_loss(x[0], from_vector(labels, {3, 5}, DType::I64, dev), add(x[1], 1.5));
      return reshape(loss, {1});
    }, "weighted_seq2seq_loss");
}

// A tiny VL-T5 / VL-BART as the trainer runs it (grid features without boxes, per-example weighted loss),
// forward and backward on the GPU against the same model on the CPU.
TEST(CudaVLModel, WeightedStepOfTinyVLT5AndVLBartFollowsTheCpu) {
  VLP_REQUIRE_GPU();
  for (const char* backbone : {"t5", "bart"}) {
    VLSeq2SeqConfig c;
    c.backbone = backbone;
    c.feat_dim = 6;
    c.t5.vocab_size = 48, c.t5.d_model = 16, c.t5.d_kv = 4, c.t5.num_heads = 4, c.t5.d_ff = 24;
    c.t5.num_layers = 2, c.t5.dropout_rate = 0.0, c.t5.relative_attention_num_buckets = 8;
    c.t5.relative_attention_max_distance = 16, c.t5.dense_act_fn = "relu";
    c.t5.tokens.pad_token_id = 0, c.t5.tokens.eos_token_id = {1}, c.t5.tokens.decoder_start_token_id = 0;
    c.bart.vocab_size = 48, c.bart.d_model = 16, c.bart.max_position_embeddings = 32;
    c.bart.encoder_layers = 1, c.bart.decoder_layers = 1, c.bart.encoder_attention_heads = 2;
    c.bart.decoder_attention_heads = 2, c.bart.encoder_ffn_dim = 24, c.bart.decoder_ffn_dim = 24;
    c.bart.dropout = 0.0;
    c.bart.tokens.pad_token_id = 1, c.bart.tokens.bos_token_id = 0, c.bart.tokens.eos_token_id = {2};
    c.bart.tokens.decoder_start_token_id = 2, c.bart.tokens.forced_eos_token_id = {2};
    Input feats = make_input({2, 4, 6}, 401);
    const std::vector<int64_t> text{5, 6, 7, 8, 9, 10}, labels{11, 12, -100, 13, 14, -100};
    std::vector<std::vector<double>> results;  // loss, then every parameter gradient
    for (Device dev : {Device::cpu(), gpu()}) {
      manual_seed(6);
      VLSeq2Seq m(c);
      m.to_device(dev);
      VisualInput vi;
      vi.feats = convert(feats.cpu, DType::F32, dev);
      Tensor lab = from_data<int64_t>(labels, {2, 3}, dev);
      Seq2SeqOutput out = m.forward(from_data<int64_t>(text, {2, 3}, dev), Tensor(), vi, lab);
      Tensor loss = weighted_seq2seq_loss(out.logits, lab, from_vector({0.3, 1.0}, {2}, DType::F32, dev));
      EXPECT_EQ(loss.device(), dev) << backbone;
      backward(loss);
      results.push_back({loss.item()});
      for (auto& [name, p] : m.named_parameters()) {
        if (!p.grad().defined()) continue;
        EXPECT_EQ(p.grad().device(), dev) << name;
        results.push_back(to_vector(p.grad()));
      }
    }
    ASSERT_EQ(results.size() % 2, 0u) << backbone;
    const size_t half = results.size() / 2;
    for (size_t i = 0; i < half; ++i)
      EXPECT_TRUE(rel_close(results[half + i], results[i], 1e-4, std::string(backbone) + " result " + std::to_string(i)));
  }
}

}  // namespace
}  // namespace vlp
#endif  // VLP_HAVE_CUDA
