// CPU microbenchmarks of the ops a PEFT training step spends its time in, through the public ops (the
// same path training takes: dtype checks, dispatch, kernel). Each reports the rate that judges it:
// GEMMs in GFLOP/s (2·M·N·K per product), memory-bound ops in GB/s (bytes read + written once).
//
//   build/bench/bench_cpu_ops --benchmark_min_time=0.2
//   OMP_NUM_THREADS=2 build/bench/bench_cpu_ops --benchmark_filter=Linear
//
// Shapes are those of GPT-2 124M / T5-base / BART-base layers at batch·sequence = 512 tokens.
#include <benchmark/benchmark.h>

#include "autograd/ops.h"
#include "autograd/optim.h"

namespace {

using namespace vlp;

Tensor random_tensor(const Shape& shape, uint64_t seed, bool requires_grad = false) {
  Generator gen(seed);
  Tensor t = randn(shape, &gen);
  if (requires_grad) t.set_requires_grad(true);
  return t;
}

void set_gflops(benchmark::State& state, double flops_per_iter) {
  state.counters["GFLOP/s"] =
      benchmark::Counter(flops_per_iter * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

void set_gbytes(benchmark::State& state, double bytes_per_iter) {
  state.counters["GB/s"] =
      benchmark::Counter(bytes_per_iter * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

// y = x W^T + b forward only: tokens × in → out.
void BM_LinearForward(benchmark::State& state) {
  const int64_t tokens = state.range(0), in = state.range(1), out = state.range(2);
  Tensor x = random_tensor({tokens, in}, 1), w = random_tensor({out, in}, 2), b = random_tensor({out}, 3);
  for (auto _ : state) benchmark::DoNotOptimize(linear(x, w, b));
  set_gflops(state, 2.0 * tokens * in * out);
}
BENCHMARK(BM_LinearForward)->Args({512, 768, 768})->Args({512, 768, 2304})->Args({512, 768, 3072})
    ->Args({512, 3072, 768})->Unit(benchmark::kMillisecond)->UseRealTime();

// Forward + backward with a trainable weight (full fine-tuning: 3 GEMMs) and with a frozen weight
// (PEFT: 2 GEMMs, the weight gradient is never computed).
void BM_LinearTrainStep(benchmark::State& state) {
  const int64_t tokens = state.range(0), in = state.range(1), out = state.range(2);
  const bool weight_trainable = state.range(3) != 0;
  Tensor x = random_tensor({tokens, in}, 1, true), w = random_tensor({out, in}, 2, weight_trainable);
  Tensor b = random_tensor({out}, 3, weight_trainable);
  for (auto _ : state) {
    Tensor y = linear(x, w, b);
    backward(sum(y));
    zero_grad({x, w, b});
  }
  set_gflops(state, (weight_trainable ? 6.0 : 4.0) * tokens * in * out);
  state.SetLabel(weight_trainable ? "trainable W" : "frozen W");
}
BENCHMARK(BM_LinearTrainStep)->Args({512, 768, 768, 1})->Args({512, 768, 768, 0})
    ->Args({512, 768, 3072, 1})->Args({512, 768, 3072, 0})->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_LayerNormForward(benchmark::State& state) {
  const int64_t rows = state.range(0), dim = state.range(1);
  Tensor x = random_tensor({rows, dim}, 1), g = random_tensor({dim}, 2), b = random_tensor({dim}, 3);
  for (auto _ : state) benchmark::DoNotOptimize(layer_norm(x, g, b, 1e-5));
  set_gbytes(state, 2.0 * rows * dim * 4);
}
BENCHMARK(BM_LayerNormForward)->Args({512, 768})->Args({4096, 768})->UseRealTime();

void BM_LayerNormBackward(benchmark::State& state) {
  const int64_t rows = state.range(0), dim = state.range(1);
  Tensor x = random_tensor({rows, dim}, 1, true), g = random_tensor({dim}, 2, true), b = random_tensor({dim}, 3, true);
  Tensor dy = random_tensor({rows, dim}, 4);
  for (auto _ : state) {
    Tensor y = layer_norm(x, g, b, 1e-5);
    backward(y, dy);
    zero_grad({x, g, b});
  }
  // forward reads x, writes y; backward reads x and dy, writes dx
  set_gbytes(state, 5.0 * rows * dim * 4);
}
BENCHMARK(BM_LayerNormBackward)->Args({512, 768})->Args({4096, 768})->UseRealTime();

void BM_Softmax(benchmark::State& state) {
  const int64_t rows = state.range(0), cols = state.range(1);
  Tensor x = random_tensor({rows, cols}, 1);
  for (auto _ : state) benchmark::DoNotOptimize(softmax(x, -1));
  set_gbytes(state, 2.0 * rows * cols * 4);
}
BENCHMARK(BM_Softmax)->Args({12 * 128, 128})->Args({12 * 512, 512})->UseRealTime();

// The classifier loss over a GPT-2-sized vocabulary, forward and backward.
void BM_CrossEntropyTrainStep(benchmark::State& state) {
  const int64_t tokens = state.range(0), vocab = state.range(1);
  Tensor logits = random_tensor({tokens, vocab}, 1, true);
  Tensor target = empty({tokens}, DType::I64);
  for (int64_t i = 0; i < tokens; ++i) target.data<int64_t>()[i] = (i * 7919) % vocab;
  for (auto _ : state) {
    backward(cross_entropy(logits, target));
    zero_grad({logits});
  }
  set_gbytes(state, 3.0 * tokens * vocab * 4);
}
BENCHMARK(BM_CrossEntropyTrainStep)->Args({128, 50257})->Args({512, 32128})->Unit(benchmark::kMillisecond)->UseRealTime();

// Attention forward + backward, [B, H, T, 64]; FLOPs: 4·B·H·T²·D forward (QKᵀ and PV), twice that backward.
void BM_AttentionTrainStep(benchmark::State& state) {
  const int64_t batch = state.range(0), heads = 12, seq = state.range(1), head_dim = 64;
  const bool causal = state.range(2) != 0;
  Tensor q = random_tensor({batch, heads, seq, head_dim}, 1, true);
  Tensor k = random_tensor({batch, heads, seq, head_dim}, 2, true);
  Tensor v = random_tensor({batch, heads, seq, head_dim}, 3, true);
  AttentionOptions opt;
  opt.causal = causal;
  for (auto _ : state) {
    backward(sum(scaled_dot_product_attention(q, k, v, opt)));
    zero_grad({q, k, v});
  }
  set_gflops(state, 12.0 * batch * heads * seq * seq * head_dim * (causal ? 0.5 : 1.0));
  state.SetLabel(causal ? "causal" : "bidirectional");
}
BENCHMARK(BM_AttentionTrainStep)->Args({4, 128, 0})->Args({4, 128, 1})->Args({1, 512, 1})
    ->Unit(benchmark::kMillisecond)->UseRealTime();

// AdamW over a GPT-2-124M-sized parameter set split like the model's tensors: reads p, g, m, v and
// writes p, m, v.
void BM_AdamWStep(benchmark::State& state) {
  const int64_t total = state.range(0), per_tensor = 768 * 768;
  ParamGroup group;
  group.lr = 1e-4;
  group.weight_decay = 0.01;
  for (int64_t done = 0, i = 0; done < total; done += per_tensor, ++i) {
    Tensor p = random_tensor({std::min(per_tensor, total - done)}, 10 + uint64_t(i), true);
    p.set_grad(random_tensor({p.numel()}, 1000 + uint64_t(i)));
    group.params.push_back(p);
  }
  Optimizer opt = make_adamw({group});
  for (auto _ : state) step(opt);
  set_gbytes(state, 7.0 * total * 4);
}
BENCHMARK(BM_AdamWStep)->Arg(124 << 20)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
