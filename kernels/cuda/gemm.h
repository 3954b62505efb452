// GEMM on the GPU through cuBLASLt, row-major like kernels/cpu/gemm.h:
//   C[b] = alpha * op(A[b]) op(B[b]) + beta * C[b],  op(X) = X^T when trans_x,  b < batch,
// with strides between the matrices of a batch (0 repeats one matrix). Inputs F32 (exact fp32 math,
// or TF32 tensor cores when allow_tf32) or BF16; output F32 or BF16; always fp32 accumulation.
// Epilogues (bias is per column of C, i.e. per output feature of a linear layer):
//   Bias          C = alpha op(A) op(B) + beta C + bias
//   BiasGeluTanh  pre = alpha op(A) op(B) + bias;  C = gelu_tanh(pre); pre written to aux when aux given
//   DGeluTanh     C = (alpha op(A) op(B)) * gelu_tanh'(aux); bias_grad[j] = sum_i C[i, j] when given
// cuBLASLt's GELU epilogues are the tanh approximation (GPT-2's gelu_new), hence the names. Where
// cuBLASLt cannot take an aux matrix (its leading dimension must be a multiple of 8), or has no algorithm
// for an epilogue, the epilogue runs as a separate elementwise kernel; where it has no algorithm at all
// (misaligned views), a simple GEMM kernel runs. The results are the same up to rounding. The algorithm is chosen once per shape and
// cached; a 32 MiB workspace per device is allocated on first use.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

namespace vlp::cuda {

enum class GemmDType { F32, BF16 };
enum class Epilogue { None, Bias, BiasGeluTanh, DGeluTanh };

struct GemmArgs {
  bool trans_a = false, trans_b = false;
  int64_t m = 0, n = 0, k = 0;
  GemmDType ab_dtype = GemmDType::F32;  // A and B
  GemmDType c_dtype = GemmDType::F32;   // C, bias, aux, bias_grad
  bool allow_tf32 = false;              // F32 inputs on TF32 tensor cores
  const void* a = nullptr;
  int64_t lda = 0, stride_a = 0;
  const void* b = nullptr;
  int64_t ldb = 0, stride_b = 0;
  void* c = nullptr;
  int64_t ldc = 0, stride_c = 0;
  int64_t batch = 1;
  float alpha = 1.f, beta = 0.f;
  Epilogue epilogue = Epilogue::None;
  const void* bias = nullptr;  // [n] for Bias and BiasGeluTanh
  void* aux = nullptr;         // [m, n] row-major with row stride ldc: written by BiasGeluTanh, read by DGeluTanh
  void* bias_grad = nullptr;   // [n], DGeluTanh only, optional
};

// Runs on the current stream of the current device. Throws std::runtime_error naming the failing call.
void gemm(const GemmArgs& args);

// Number of cached algorithm choices (for tests of the cache).
int64_t gemm_cache_size();
// The simple one-thread-per-element GEMM gemm() falls back to when cuBLASLt has no algorithm for the
// operands (e.g. pointers aligned to less than 16 bytes); no epilogue. Exposed so tests cover it.
void gemm_simple(const GemmArgs& args);

// The fallbacks of the epilogues, also usable on their own (row-major [m, n], row stride ld):
// x = gelu_tanh(x + bias) saving pre = x + bias to pre when not null; F32 or BF16 per dtype.
void bias_gelu_tanh(GemmDType dtype, void* x, int64_t ld, const void* bias, void* pre, int64_t m, int64_t n,
                    cudaStream_t stream);
// x = x * gelu_tanh'(pre).
void dgelu_tanh(GemmDType dtype, void* x, int64_t ld, const void* pre, int64_t m, int64_t n, cudaStream_t stream);
// out[j] = sum_i x[i, j] (fp32 accumulation, fixed order: deterministic); out has the dtype of x.
void column_sum(GemmDType dtype, const void* x, int64_t ld, void* out, int64_t m, int64_t n, cudaStream_t stream);
// x[i, j] += bias[j].
void add_bias(GemmDType dtype, void* x, int64_t ld, const void* bias, int64_t m, int64_t n, cudaStream_t stream);

}  // namespace vlp::cuda
