// Embedding, dropout and optimizer kernels on the GPU, counterparts of kernels/cpu/{embedding,random,
// optim}.h: embedding gather and its deterministic backward, random fills and dropout from the same
// Philox stream as the CPU (identical masks for one seed and offset), fused multi-tensor AdamW with fp32
// state and fp32 master weights for BF16 parameters, and a deterministic global gradient norm.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>
#include <vector>

#include "kernels/cpu/optim.h"
#include "kernels/cuda/elementwise.h"

namespace vlp::cuda {

// out row i = weight row ids[i] (rows of row_bytes bytes, any dtype); ids on the device. A row whose id is
// outside [0, num_rows) is written as zeros (the caller checks ids beforehand; this only keeps memory safe).
void embedding_forward(const void* weight, int64_t row_bytes, int64_t num_rows, const int64_t* ids, int64_t n,
                       void* out, cudaStream_t stream);
// dweight [num_rows, d] (fully overwritten) = sum over positions i with ids[i] == v of dy row i, summed in
// increasing i in float. The ids are brought to the host to group positions by id (a stable counting
// sort), so the result is the same bits on every run; this synchronises the stream once.
void embedding_backward(EwDType dt, const void* dy, const int64_t* ids, int64_t n, int64_t num_rows, int64_t d,
                        void* dweight, cudaStream_t stream);

// out[i] = lo + (hi - lo) * uniform(i) of the Philox stream (seed, offset) (kernels/philox.h).
void random_uniform(EwDType dt, void* out, int64_t n, uint64_t seed, uint64_t offset, double lo, double hi,
                    cudaStream_t stream);
// y[i] = uniform(i) < p ? 0 : x[i] / (1 - p), the CPU's formula and mask; also dropout's backward (x = dy).
// mask (optional, uint8) gets 1 where the element is kept.
void dropout(EwDType dt, const void* x, void* y, uint8_t* mask, int64_t n, double p, uint64_t seed, uint64_t offset,
             cudaStream_t stream);

// One parameter tensor of a multi-tensor AdamW step. param and grad have the step's dtype (F32 or BF16);
// exp_avg and exp_avg_sq are always float. For BF16 parameters `master` (float) holds the fp32 weights:
// the update is applied to master and param = bf16(master). For F32 parameters master is null.
struct AdamWTensor {
  void* param = nullptr;
  const void* grad = nullptr;
  float* exp_avg = nullptr;
  float* exp_avg_sq = nullptr;
  float* master = nullptr;
  int64_t n = 0;
};
// torch.optim.AdamW over every tensor in one launch (the CPU adamw_step formula, in float).
void adamw_multi_tensor(EwDType dt, const std::vector<AdamWTensor>& tensors, const cpu::AdamWScalars& s,
                        cudaStream_t stream);

// sum_i x_t[i]^2 over all tensors (F32 or BF16), accumulated per chunk in float and the chunks combined in
// a fixed order in double: the same bits on every run. Synchronises the stream to return the value.
double sum_of_squares_multi(EwDType dt, const std::vector<const void*>& tensors, const std::vector<int64_t>& sizes,
                            cudaStream_t stream);

}  // namespace vlp::cuda
