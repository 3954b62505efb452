// The kernel-call layer: where an op's kernel is chosen by device. Autograd op files check operands,
// pick the compute dtype (compute_dtype(dt, device)), allocate outputs on the inputs' device and call
// these functions with tensors already in the compute dtype; each calls the CPU kernel (F32/F64) or the
// CUDA kernel (F32/BF16, on the tensor's GPU and its current stream). The autograd rules themselves do
// not change with the device. Families wired: elementwise (unary, binary), sum, matmul/linear (gemm),
// softmax, layer_norm, rms_norm, dropout, embedding, cross_entropy (with the sample weight's gradient),
// attention, where/masked_fill, index_select, gather/scatter_add, max, binary_cross_entropy_with_logits,
// adaptive_max_pool_grid, and the optimizers' AdamW step and gradient norm (CUDA side only). patch_embed
// is composed of views, a copy and linear, so it needs no entry here.
#pragma once
#include <vector>

#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/optim.h"
#include "runtime/tensor.h"

namespace vlp {

// y = f(x), x and y contiguous, same dtype and device.
void call_unary_forward(const char* op, cpu::Unary kind, const Tensor& x, const Tensor& y, double a, double b);
// dx = dy * f'(.) from x or y (whichever cpu::unary_saves_output says; the other may be undefined).
void call_unary_backward(const char* op, cpu::Unary kind, const Tensor& x, const Tensor& y, const Tensor& dy,
                         const Tensor& dx, double a, double b);
// out = a (op) b over shape with the given element strides (out's own strides for out).
void call_binary(const char* op, cpu::Binary kind, const Shape& shape, const Tensor& out, const Tensor& a,
                 const Shape& a_strides, const Tensor& b, const Shape& b_strides, double alpha);
// y [outer, inner] = sum over the middle dim of contiguous x [outer, n, inner].
void call_sum_dim(const char* op, const Tensor& x, const Tensor& y, int64_t outer, int64_t n, int64_t inner);

// C = alpha op(A) op(B) + beta C, row-major as kernels/cpu/gemm.h, on matrices starting at the given
// element offsets from each tensor's data_ptr(); all three of one dtype and device. CUDA: cuBLASLt with
// exact fp32 math for F32 (no TF32) and fp32 accumulation for BF16; C may also be F32 with BF16 A and B
// (autocast: the F32 result written directly, no separate cast pass).
void call_gemm(const char* op, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, double alpha,
               const Tensor& a, int64_t a_offset, int64_t lda, const Tensor& b, int64_t b_offset, int64_t ldb,
               double beta, const Tensor& c, int64_t c_offset, int64_t ldc);

// Softmax / log_softmax over the middle dim of contiguous [outer, n, inner], and its backward from y.
void call_softmax_forward(const char* op, const Tensor& x, const Tensor& y, int64_t outer, int64_t n, int64_t inner,
                          bool log);
void call_softmax_backward(const char* op, const Tensor& y, const Tensor& dy, const Tensor& dx, int64_t outer,
                           int64_t n, int64_t inner, bool log);

// The dtype of the per-row statistics the norms save: F64 on the CPU, F32 on CUDA.
inline DType norm_stats_dtype(Device device) { return device.is_cpu() ? DType::F64 : DType::F32; }
// LayerNorm / RMSNorm over rows of d (kernels/cpu/norm.h); optional tensors may be undefined.
void call_layer_norm_forward(const char* op, const Tensor& x, const Tensor& gamma, const Tensor& beta,
                             const Tensor& y, const Tensor& mean, const Tensor& rstd, int64_t rows, int64_t d,
                             double eps);
void call_layer_norm_backward(const char* op, const Tensor& x, const Tensor& mean, const Tensor& rstd,
                              const Tensor& gamma, const Tensor& dy, const Tensor& dx, const Tensor& dgamma,
                              const Tensor& dbeta, int64_t rows, int64_t d);
void call_rms_norm_forward(const char* op, const Tensor& x, const Tensor& weight, const Tensor& y, const Tensor& rstd,
                           int64_t rows, int64_t d, double eps);
void call_rms_norm_backward(const char* op, const Tensor& x, const Tensor& rstd, const Tensor& weight,
                            const Tensor& dy, const Tensor& dx, const Tensor& dweight, int64_t rows, int64_t d);

// y = dropout(x) from the Philox stream (seed, offset): the same mask on every device.
void call_dropout(const char* op, const Tensor& x, const Tensor& y, double p, uint64_t seed, uint64_t offset);

// Embedding rows of weight (contiguous [V, d]) for ids (contiguous I64 on the CPU, already checked), and
// the backward into dweight [V, d] (fully overwritten). CUDA uploads the ids.
void call_embedding_forward(const char* op, const Tensor& weight, const Tensor& ids, const Tensor& out);
void call_embedding_backward(const char* op, const Tensor& dy, const Tensor& ids, const Tensor& dweight);

// Cross-entropy rows (kernels/cpu/loss.h): target is the checked I64 CPU tensor; rows, lse and raw
// (optional) are F64 on the CPU and F32 on CUDA (norm_stats_dtype). The backward writes dlogits and
// dweight (the sample weight's gradient, from raw), each optional; without dlogits, logits and lse may be
// undefined.
void call_cross_entropy_forward(const char* op, const Tensor& logits, const Tensor& target, const Tensor& weight,
                                int64_t ignore_index, double eps, const Tensor& rows, const Tensor& lse,
                                const Tensor& raw);
void call_cross_entropy_backward(const char* op, const Tensor& logits, const Tensor& target, const Tensor& weight,
                                 const Tensor& lse, const Tensor& raw, const Tensor& dloss, int64_t dloss_stride,
                                 double scale, int64_t c, int64_t ignore_index, double eps, const Tensor& dlogits,
                                 const Tensor& dweight);

// Everything about an attention call except its tensors (kernels/cpu/attention.h for the semantics).
struct AttentionConfig {
  int64_t B = 0, H = 0, Tq = 0, Tk = 0, D = 0, Dv = 0;
  bool causal = false;
  double scale = 1.0, dropout_p = 0.0;
  uint64_t seed = 0, offset = 0;
};
// q, k, v [B, H, T, D] with unit last-dim stride; bias broadcastable to [B, H, Tq, Tk] (optional); keep a
// Bool [B, Tk] on the same device (optional); out [B, H, Tq, Dv] and lse [B, H, Tq] contiguous, lse in the
// compute dtype on the CPU and F32 on CUDA (norm_stats_dtype).
void call_attention_forward(const char* op, const AttentionConfig& c, const Tensor& q, const Tensor& k,
                            const Tensor& v, const Tensor& bias, const Tensor& keep, const Tensor& out,
                            const Tensor& lse);
// dq, dk, dv contiguous (each optional); dbias (optional) 4-D in the bias's left-padded shape, zeroed,
// accumulated with dbias_strides on the CPU. On CUDA out and v are required, and dbias must be
// [1 or B, 1 or H, Tq, Tk].
void call_attention_backward(const char* op, const AttentionConfig& c, const Tensor& q, const Tensor& k,
                             const Tensor& v, const Tensor& bias, const Tensor& keep, const Tensor& out,
                             const Tensor& lse, const Tensor& dout, const Tensor& dq, const Tensor& dk,
                             const Tensor& dv, const Tensor& dbias, const Shape& dbias_strides);

// Binary cross-entropy with logits (kernels/cpu/loss.h): the per-element losses of contiguous x and t
// (one dtype) into loss (x's dtype, or F32 on CUDA for a sum computed in float); and the backward with
// g = dloss[i * dloss_stride] * scale into dx and dtarget (each optional; t may be undefined without dx).
void call_bce_with_logits_forward(const char* op, const Tensor& x, const Tensor& t, const Tensor& loss);
void call_bce_with_logits_backward(const char* op, const Tensor& x, const Tensor& t, const Tensor& dloss,
                                   int64_t dloss_stride, double scale, const Tensor& dx, const Tensor& dtarget);

// ---- indexing (float tensors; integer and Bool data stay on the CPU kernels in autograd/indexing.cpp) ----

// out = cond ? a : b over shape with per-operand element strides (out's own for out); cond Bool on the
// same device as out, a and b of out's dtype.
void call_where(const char* op, const Shape& shape, const Tensor& out, const Tensor& cond, const Shape& cond_strides,
                const Tensor& a, const Shape& a_strides, const Tensor& b, const Shape& b_strides);
// y [outer, m, inner] = x [outer, n, inner] at rows index (contiguous I64 on the CPU, checked in range;
// CUDA uploads it), and the backward dx [outer, n, inner] += g at those rows (repeats summed in order).
void call_index_select(const char* op, const Tensor& x, const Tensor& index, const Tensor& y, int64_t outer,
                       int64_t n, int64_t inner);
void call_index_add(const char* op, const Tensor& g, const Tensor& index, const Tensor& dx, int64_t outer, int64_t n,
                    int64_t inner);
// values [outer, inner] = max over the middle dim of contiguous x [outer, n, inner], indices (I64, on x's
// device) the first position reaching it; and its backward dx[o, idx, i] += g[o, i] (dx zeroed).
void call_max_dim(const char* op, const Tensor& x, const Tensor& values, const Tensor& indices, int64_t outer,
                  int64_t n, int64_t inner);
void call_scatter_dim(const char* op, const Tensor& g, const Tensor& indices, const Tensor& dx, int64_t outer,
                      int64_t n, int64_t inner);

// out (contiguous, the index's shape) = x gathered along dim at index (contiguous I64 on the CPU, checked
// in range; CUDA uploads it) as cpu::gather; x in its kernel dtype with its own strides. On CUDA any dtype
// (a byte copy, at most 8 dims).
void call_gather(const char* op, const Tensor& x, int64_t dim, const Tensor& index, const Tensor& out);
// out[p with dim replaced by index[p]] += src[p] over the index's shape (cpu::scatter_add): out and src of
// one dtype with their own strides. Deterministic on both devices (CUDA: floating dtypes only, grouped by
// target on the host, summed in index order).
void call_scatter_add(const char* op, const Tensor& out, int64_t dim, const Tensor& index, const Tensor& src);

// ---- vision (kernels/cpu/vision.h) ----

// x [B, H, W, C] contiguous -> y [B, oh, ow, C] and argmax (I64 on x's device); and the backward into dx
// [B, H, W, C] (fully overwritten) from dy and the saved argmax.
void call_adaptive_max_pool_grid(const char* op, const Tensor& x, const Tensor& y, const Tensor& argmax);
void call_adaptive_max_pool_grid_backward(const char* op, const Tensor& dy, const Tensor& argmax, const Tensor& dx);

// ---- optimizers (CUDA only: the CPU optimizers call kernels/cpu/optim.h one parameter at a time) ----

// One parameter of a multi-tensor AdamW step: param and grad contiguous, of one dtype (F32 or BF16);
// exp_avg and exp_avg_sq contiguous F32; master (F32, the fp32 weights) required for BF16 params and
// undefined for F32 ones. All on one GPU.
struct AdamWParamRef {
  Tensor param, grad, exp_avg, exp_avg_sq, master;
};
// One launch of cuda::adamw_multi_tensor over every tensor (same dtype, device and scalars).
void call_adamw_multi_tensor(const char* op, const std::vector<AdamWParamRef>& params, const cpu::AdamWScalars& s);
// Sum of squares over contiguous tensors of one dtype (F32 or BF16) on one GPU, deterministic (same
// bits every run), accumulated in double across chunks.
double call_sum_of_squares(const char* op, const std::vector<Tensor>& xs);

// ---- fused LoRA (autograd/lora.cpp) ----

// h [m, rank] (contiguous) = dropout(x) a^T for x [m, k] with unit column stride and row stride ldx, a
// [rank, k] contiguous, all of one dtype and device; element (i, j) of x is element i * k + j of the Philox
// stream (seed, offset), as vlp::dropout over a contiguous x; p = 0: no dropout. x is the [m, k] tensor itself
// (its strides (ldx, 1)). CPU: the dropped x into a buffer, then the GEMM (x must be contiguous, ldx = k).
// CUDA: cuda::lora_down_dropout (one kernel, nothing stored) for rank <= cuda::kLoraMaxRank, else the dropout
// kernel into a buffer and cuBLASLt.
void call_lora_down_dropout(const char* op, const Tensor& x, int64_t ldx, const Tensor& a, const Tensor& h, int64_t m,
                            int64_t k, int64_t rank, double p, uint64_t seed, uint64_t offset);

}  // namespace vlp
