// Differentiable ops on CUDA tensors through the kernel-call layer (autograd/kernel_calls.h): elementwise
// unary and broadcasting binary ops, in-place updates, sum and mean, matmul and linear, softmax, norms,
// dropout and embedding; forward values and gradients against the same graph run on the CPU. What CUDA
// does not support (F64, integer scatter_add) is refused with a clear error.
#ifdef VLP_HAVE_CUDA
#include <gtest/gtest.h>

#include "autograd/attention.h"
#include "autograd/loss.h"
#include "autograd/ops.h"
#include "tests/cuda/cuda_test_util.h"

namespace vlp {
namespace {

using namespace cudatest;

// loss = sum(gelu(a * b + c) / (1 + exp(-a)) - 0.5 * mean(rsqrt(b^2 + 1), dim 1)) over broadcast shapes.
Tensor graph(const Tensor& a, const Tensor& b, const Tensor& c) {
  Tensor h = gelu(add(mul(a, b), c));                    // [5, 7, 9] from [5, 7, 9], [7, 1], [9]
  Tensor gate = div(h, add(exp(neg(a)), 1.0));
  Tensor r = rsqrt(add(mul(b, b), 1.0));                 // [7, 1]
  Tensor t = sub(gate, mul(mean(r, {1}, true), 0.5));
  return sum(mul(tanh(t), silu(t)));
}

TEST(CudaAutograd, ElementwiseBroadcastAndSumMatchTheCpuGraph) {
  VLP_REQUIRE_GPU();
  for (DType dt : {DType::F32, DType::BF16}) {
    Input a = make_input({5, 7, 9}, 171, dt), b = make_input({7, 1}, 172, dt), c = make_input({9}, 173, dt);
    Tensor ac = convert(a.cpu, dt), bc = convert(b.cpu, dt), cc = convert(c.cpu, dt);
    Tensor ag = convert(a.cpu, dt, gpu()), bg = convert(b.cpu, dt, gpu()), cg = convert(c.cpu, dt, gpu());
    for (Tensor* t : {&ac, &bc, &cc, &ag, &bg, &cg}) t->set_requires_grad(true);
    Tensor loss_cpu = graph(ac, bc, cc), loss_gpu = graph(ag, bg, cg);
    EXPECT_TRUE(loss_gpu.is_cuda());
    EXPECT_EQ(loss_gpu.dtype(), dt);
    const double tol = dt == DType::BF16 ? 3e-2 : 1e-5;  // BF16: the CPU rounds after every op too, differently
    EXPECT_TRUE(rel_close(loss_gpu, loss_cpu, tol, "loss"));
    backward(loss_cpu);
    backward(loss_gpu);
    EXPECT_TRUE(ag.grad().is_cuda());
    EXPECT_TRUE(rel_close(ag.grad(), ac.grad(), tol, "da"));
    EXPECT_TRUE(rel_close(bg.grad(), bc.grad(), tol, "db (summed over broadcast dims)"));
    EXPECT_TRUE(rel_close(cg.grad(), cc.grad(), tol, "dc"));
  }
}

TEST(CudaAutograd, NonContiguousInputsAndInPlaceUpdates) {
  VLP_REQUIRE_GPU();
  Input x = make_input({6, 4}, 181);
  Tensor xg = x.dev.detach(), xt_cpu = transpose(x.cpu, 0, 1), xt_gpu = transpose(xg, 0, 1);
  EXPECT_TRUE(rel_close(exp(xt_gpu), exp(xt_cpu), 1e-5, "exp of a transposed view"));
  EXPECT_TRUE(rel_close(mul(xt_gpu, xt_gpu), mul(xt_cpu, xt_cpu), 1e-5, "mul of transposed views"));
  Tensor p_cpu = clone(x.cpu), p_gpu = clone(xg);
  Input d = make_input({6, 4}, 182);
  {
    NoGradGuard guard;
    add_(p_cpu, d.cpu, -0.3);
    add_(p_gpu, d.dev, -0.3);
    mul_(p_cpu, 1.5);
    mul_(p_gpu, 1.5);
  }
  EXPECT_TRUE(rel_close(p_gpu, p_cpu, 1e-6, "add_ and mul_"));
}

TEST(CudaAutograd, UnsupportedCasesRefuseCudaTensorsClearly) {
  VLP_REQUIRE_GPU();
  // Every op is wired now; what remains refused says so, naming the op.
  auto expect_error = [](auto&& fn, const std::string& needle) {
    try {
      fn();
      ADD_FAILURE() << "expected an error containing '" << needle << "'";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  Tensor x64 = full({2}, 1.0, DType::F64, gpu());
  expect_error([&] { exp(x64); }, "F32 or BF16");  // the CUDA kernels compute in F32 or BF16
  Tensor xi = from_vector({1, 2, 3}, {3}, DType::I64, gpu());
  expect_error([&] { scatter_add(xi, 0, from_vector({0}, {1}, DType::I64, gpu()), xi); },
               "scatter_add on cuda:0: only floating tensors");
  Shape nine(9, 1);
  expect_error([&] { gather(full(nine, 1.0, DType::F32, gpu()), 0, full(nine, 0.0, DType::I64, gpu())); },
               "at most 8 dims");
}

// y = sum(gelu(linear(x, W, b)) @ V) with x [2, 5, 7], batched matmul with a broadcast and transposed
// operand, on CUDA through cuBLASLt against the CPU graph.
TEST(CudaAutograd, LinearAndBatchedMatmulMatchTheCpuGraph) {
  VLP_REQUIRE_GPU();
  for (DType dt : {DType::F32, DType::BF16}) {
    Input x = make_input({2, 5, 7}, 191, dt), w = make_input({9, 7}, 192, dt), b = make_input({9}, 193, dt);
    Input v = make_input({3, 9}, 194, dt), m = make_input({2, 4, 5}, 195, dt);
    auto run = [&](Device dev) {
      Tensor xs = convert(x.cpu, dt, dev), ws = convert(w.cpu, dt, dev), bs = convert(b.cpu, dt, dev);
      Tensor vs = convert(v.cpu, dt, dev), ms = convert(m.cpu, dt, dev);
      for (Tensor* t : {&xs, &ws, &bs, &vs, &ms}) t->set_requires_grad(true);
      Tensor h = gelu(linear(xs, ws, bs));                 // [2, 5, 9]
      Tensor p = matmul(h, transpose(vs, 0, 1));           // [2, 5, 3], a transposed 2-D operand
      Tensor q = matmul(ms, p);                            // [2, 4, 3], batched
      Tensor r = matmul(transpose(q, 1, 2), q);            // [2, 3, 3], transposed batched operand
      Tensor loss = sum(mul(r, r));
      backward(loss);
      return std::vector<Tensor>{loss, xs.grad(), ws.grad(), bs.grad(), vs.grad(), ms.grad()};
    };
    std::vector<Tensor> c = run(Device::cpu()), g = run(gpu());
    const char* names[] = {"loss", "dx", "dW", "db", "dV", "dM"};
    const double tol = dt == DType::BF16 ? 3e-2 : 1e-5;
    for (size_t i = 0; i < c.size(); ++i) {
      EXPECT_TRUE(g[i].is_cuda()) << names[i];
      EXPECT_TRUE(rel_close(g[i], c[i], tol, std::string(names[i]) + " " + std::string(dtype_name(dt))));
    }
  }
}

// embedding -> dropout -> layer_norm -> softmax / log_softmax -> rms_norm, forward values and every
// gradient (table, norm parameters) on CUDA against the same graph on the CPU; the dropout masks are the
// same because both devices draw from the same Philox stream.
TEST(CudaAutograd, NormSoftmaxDropoutEmbeddingMatchTheCpuGraph) {
  VLP_REQUIRE_GPU();
  for (DType dt : {DType::F32, DType::BF16}) {
    Input table = make_input({23, 33}, 201, dt), g1 = make_input({33}, 202, dt, 0.5, 1.5);
    Input b1 = make_input({33}, 203, dt), g2 = make_input({33}, 204, dt, 0.5, 1.5);
    Tensor ids = from_vector({3, 7, 7, 0, 22, 5, 3, 3, 11, 19}, {2, 5}, DType::I64);
    auto run = [&](Device dev) {
      Tensor w = convert(table.cpu, dt, dev), ga = convert(g1.cpu, dt, dev), be = convert(b1.cpu, dt, dev);
      Tensor gr = convert(g2.cpu, dt, dev);
      for (Tensor* t : {&w, &ga, &be, &gr}) t->set_requires_grad(true);
      Generator gen(1234);
      Tensor e = dropout(embedding(w, ids), 0.25, true, &gen);   // [2, 5, 33]
      Tensor h = layer_norm(e, ga, be, 1e-5);
      Tensor s = add(softmax(h, -1), log_softmax(h, 1));         // last dim and a middle dim
      Tensor r = rms_norm(s, gr, 1e-6);
      Tensor loss = sum(mul(r, h));
      backward(loss);
      return std::vector<Tensor>{loss, w.grad(), ga.grad(), be.grad(), gr.grad()};
    };
    std::vector<Tensor> c = run(Device::cpu()), g = run(gpu());
    const char* names[] = {"loss", "dtable", "dgamma", "dbeta", "drms_weight"};
    const double tol = dt == DType::BF16 ? 5e-2 : 1e-5;  // BF16: each op rounds, at different points per device
    for (size_t i = 0; i < c.size(); ++i) {
      EXPECT_TRUE(g[i].is_cuda()) << names[i];
      EXPECT_TRUE(rel_close(g[i], c[i], tol, std::string(names[i]) + " " + std::string(dtype_name(dt))));
    }
  }
}

// A classifier head: cross_entropy (mean and per-row, label smoothing, ignored rows, sample weights) of
// linear logits, value and gradients on CUDA against the CPU.
TEST(CudaAutograd, CrossEntropyMatchesTheCpu) {
  VLP_REQUIRE_GPU();
  const int64_t n = 9, k = 12, c = 37;
  Tensor target = from_vector({3, 36, 0, -100, 7, 7, 20, -100, 11}, {n}, DType::I64);
  for (DType dt : {DType::F32, DType::BF16})
    for (Reduction red : {Reduction::Mean, Reduction::None}) {
      Input x = make_input({n, k}, 211, dt), w = make_input({c, k}, 212, dt, -2, 2);
      Input sw = make_input({n}, 213, dt, 0.5, 1.5);
      auto run = [&](Device dev) {
        Tensor xs = convert(x.cpu, dt, dev), ws = convert(w.cpu, dt, dev), sws = convert(sw.cpu, dt, dev);
        xs.set_requires_grad(true), ws.set_requires_grad(true);
        Tensor loss = cross_entropy(linear(xs, ws, Tensor()), target, -100, 0.1, sws, red);
        Tensor scalar = red == Reduction::None ? sum(mul(loss, loss)) : loss;
        backward(scalar);
        return std::vector<Tensor>{loss, xs.grad(), ws.grad()};
      };
      std::vector<Tensor> cpu_r = run(Device::cpu()), gpu_r = run(gpu());
      const char* names[] = {"loss", "dx", "dW"};
      const double tol = dt == DType::BF16 ? 3e-2 : 1e-5;
      for (size_t i = 0; i < cpu_r.size(); ++i)
        EXPECT_TRUE(rel_close(gpu_r[i], cpu_r[i], tol,
                              std::string(names[i]) + " " + std::string(dtype_name(dt)) +
                                  (red == Reduction::None ? " none" : " mean")));
    }
}

// scaled_dot_product_attention on CUDA against the CPU: [B, T, H, D] projections permuted to [B, H, T, D]
// (strided heads read in place), causal or a T5 bias [1, H, Tq, Tk] that trains, key padding, dropout.
TEST(CudaAutograd, AttentionMatchesTheCpu) {
  VLP_REQUIRE_GPU();
  const int64_t B = 2, T = 19, H = 3, D = 8;
  Tensor mask = from_vector(std::vector<double>(static_cast<size_t>(B * T), 1.0), {B, T}, DType::Bool);
  {
    std::vector<double> mv(static_cast<size_t>(B * T), 1.0);
    for (int64_t j = 15; j < T; ++j) mv[size_t(T + j)] = 0.0;  // batch 1: the last keys are padding
    mask = from_vector(mv, {B, T}, DType::Bool);
  }
  for (DType dt : {DType::F32, DType::BF16})
    for (bool t5 : {false, true}) {
      Input q = make_input({B, T, H, D}, 221, dt), k = make_input({B, T, H, D}, 222, dt);
      Input v = make_input({B, T, H, D}, 223, dt), bias = make_input({1, H, T, T}, 224, dt);
      auto run = [&](Device dev) {
        Tensor qs = convert(q.cpu, dt, dev), ks = convert(k.cpu, dt, dev), vs = convert(v.cpu, dt, dev);
        Tensor bs = convert(bias.cpu, dt, dev);
        for (Tensor* t : {&qs, &ks, &vs, &bs}) t->set_requires_grad(true);
        Generator gen(77);
        AttentionOptions o;
        o.causal = !t5;
        if (t5) o.bias = bs, o.scale = 1.0;
        o.key_padding_mask = convert(mask, DType::Bool, dev);
        o.dropout_p = 0.2, o.generator = &gen;
        Tensor y = scaled_dot_product_attention(permute(qs, {0, 2, 1, 3}), permute(ks, {0, 2, 1, 3}),
                                                permute(vs, {0, 2, 1, 3}), o);
        backward(sum(mul(y, y)));
        std::vector<Tensor> r{y, qs.grad(), ks.grad(), vs.grad()};
        if (t5) r.push_back(bs.grad());
        return r;
      };
      std::vector<Tensor> c = run(Device::cpu()), g = run(gpu());
      const char* names[] = {"out", "dq", "dk", "dv", "dbias"};
      const double tol = dt == DType::BF16 ? 3e-2 : 1e-5;
      for (size_t i = 0; i < c.size(); ++i)
        EXPECT_TRUE(rel_close(g[i], c[i], tol,
                              std::string(names[i]) + " " + std::string(dtype_name(dt)) + (t5 ? " t5" : " causal")));
    }
}

}  // namespace
}  // namespace vlp
#endif  // VLP_HAVE_CUDA
