// The NVTX ranges Nsight Systems would show, seen from inside the process. This file gives test_cuda a
// static NVTX injection: the C symbol InitializeInjectionNvtx2_fnptr, which NVTX's loader calls when no
// profiler is attached (a profiler's NVTX_INJECTION64_PATH still takes precedence), and which routes
// nvtxRangePushA / nvtxRangePop to a recorder. Layer ranges and op-backward ranges are NVTX whenever the
// CUDA backend is built, so their test runs on the CPU (in CI); the op-forward ranges (kernel_calls'
// on_gpu) and the kernel ranges inside them need a GPU.
#ifdef VLP_HAVE_CUDA
#include <cstdint>

// This file defines the symbol, so the header's weak definition is left out here; the header's loader
// needs it declared first (the type NvtxInitializeInjectionNvtxFunc_t, spelled out).
#define NVTX_STATIC_INJECTION_IMPL
extern "C" int (*InitializeInjectionNvtx2_fnptr)(const void* (*)(uint32_t));
#include <nvtx3/nvToolsExt.h>

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "models/config.h"
#include "models/gpt2.h"
#include "tests/cuda/cuda_test_util.h"

namespace {

struct RangeEvent {
  int depth;         // ranges open around it when it was pushed
  std::string name;  // "" for a pop
};

struct RangeRecorder {
  bool recording = false;
  int depth = 0;
  std::vector<RangeEvent> events;
};

RangeRecorder& recorder() {
  static RangeRecorder r;
  return r;
}

int NVTX_API record_push(const char* message) {
  RangeRecorder& r = recorder();
  if (r.recording) r.events.push_back({r.depth, message ? message : ""});
  return ++r.depth;
}

int NVTX_API record_pop() {
  RangeRecorder& r = recorder();
  if (r.recording) r.events.push_back({r.depth - 1, ""});
  return --r.depth;
}

int NVTX_API init_injection(NvtxGetExportTableFunc_t get_export_table) {
  const auto* callbacks = static_cast<const NvtxExportTableCallbacks*>(get_export_table(NVTX_ETID_CALLBACKS));
  if (callbacks == nullptr) return 0;
  NvtxFunctionTable table = nullptr;
  unsigned int size = 0;
  if (!callbacks->GetModuleFunctionTable(NVTX_CB_MODULE_CORE, &table, &size) || size <= NVTX_CBID_CORE_RangePop)
    return 0;
  *table[NVTX_CBID_CORE_RangePushA] = reinterpret_cast<NvtxFunctionPointer>(&record_push);
  *table[NVTX_CBID_CORE_RangePop] = reinterpret_cast<NvtxFunctionPointer>(&record_pop);
  return 1;
}

}  // namespace

NvtxInitializeInjectionNvtxFunc_t InitializeInjectionNvtx2_fnptr = &init_injection;

namespace vlp {
namespace {

// Records the ranges pushed while fn runs.
template <class Fn>
std::vector<RangeEvent> ranges_of(Fn&& fn) {
  RangeRecorder& r = recorder();
  r.events.clear();
  r.recording = true;
  fn();
  r.recording = false;
  return r.events;
}

int count(const std::vector<RangeEvent>& ev, const std::string& name) {
  int n = 0;
  for (const RangeEvent& e : ev) n += e.name == name;
  return n;
}

// The name of the range enclosing event i ("" at the top level).
std::string parent_of(const std::vector<RangeEvent>& ev, size_t i) {
  for (size_t j = i; j-- > 0;)
    if (!ev[j].name.empty() && ev[j].depth == ev[i].depth - 1) return ev[j].name;
  return "";
}

void expect_balanced(const std::vector<RangeEvent>& ev) {
  int pushes = 0, pops = 0;
  for (const RangeEvent& e : ev) (e.name.empty() ? pops : pushes) += 1;
  EXPECT_EQ(pushes, pops) << "every range pushed is popped";
}

GPT2Config tiny_gpt2() {
  GPT2Config c;
  c.vocab_size = 50, c.n_positions = 16, c.n_embd = 16, c.n_layer = 2, c.n_head = 2;
  return c;
}

TEST(CudaNvtx, LayerAndOpBackwardRangesOnTheCpu) {
  GPT2LMHeadModel model(tiny_gpt2());
  model.set_requires_grad(true);
  GPT2Input in;
  in.input_ids = from_data<int64_t>({1, 5, 7, 9, 2, 4}, {1, 6});
  in.labels = in.input_ids;
  Tensor loss;
  auto fwd = ranges_of([&] { loss = model.forward(in).loss; });
  expect_balanced(fwd);
  EXPECT_EQ(count(fwd, "gpt2.block"), 2);
  EXPECT_EQ(count(fwd, "gpt2.attention"), 2);
  EXPECT_EQ(count(fwd, "gpt2.mlp"), 2);
  for (size_t i = 0; i < fwd.size(); ++i) {
    if (fwd[i].name == "gpt2.attention" || fwd[i].name == "gpt2.mlp") {
      EXPECT_EQ(parent_of(fwd, i), "gpt2.block");
    }
    if (fwd[i].name == "gpt2.block") {
      EXPECT_EQ(parent_of(fwd, i), "");
    }
  }
  auto bwd = ranges_of([&] { backward(loss); });
  expect_balanced(bwd);
  // One range per node, named after its op, at the top level: the loss, the blocks' ops, the embeddings.
  EXPECT_GE(count(bwd, "cross_entropy"), 1);
  EXPECT_GE(count(bwd, "layer_norm"), 5);  // two per block and the final one
  EXPECT_GE(count(bwd, "embedding"), 2);   // wte, wpe
  for (size_t i = 0; i < bwd.size(); ++i) {
    if (!bwd[i].name.empty()) {
      EXPECT_EQ(bwd[i].depth, 0) << bwd[i].name << " (CPU ops open no inner range)";
    }
  }
}

TEST(CudaNvtx, EveryOpsDeviceWorkSitsInARangeNamedAfterTheOp) {
  VLP_REQUIRE_GPU();
  Tensor x = cudatest::make_input({5, 7}, 1).dev, w = cudatest::make_input({3, 7}, 2).dev;
  w.set_requires_grad(true);
  Tensor y;
  auto fwd = ranges_of([&] { y = gelu(linear(x, w)); });
  expect_balanced(fwd);
  ASSERT_GE(count(fwd, "linear"), 1);
  ASSERT_GE(count(fwd, "gelu"), 1);
  // Each kernel entry's range sits inside its op's range: the GEMM inside linear's.
  bool gemm_in_linear = false;
  for (size_t i = 0; i < fwd.size(); ++i) gemm_in_linear |= fwd[i].name == "vlp::cuda::gemm" && parent_of(fwd, i) == "linear";
  EXPECT_TRUE(gemm_in_linear);
  for (size_t i = 0; i < fwd.size(); ++i) {
    if (fwd[i].name.rfind("vlp::cuda::", 0) == 0) {
      const std::string op = parent_of(fwd, i);
      EXPECT_TRUE(op == "linear" || op == "gelu") << fwd[i].name << " inside '" << op << "'";
    }
  }
  auto bwd = ranges_of([&] { backward(sum(y)); });
  expect_balanced(bwd);
  // The engine's node range, and inside it the op's device work.
  bool nested = false;
  for (size_t i = 0; i < bwd.size(); ++i) nested |= bwd[i].name == "linear" && parent_of(bwd, i) == "linear";
  EXPECT_TRUE(nested) << "the backward of linear runs its kernels inside the op's range";
}

}  // namespace
}  // namespace vlp
#endif
