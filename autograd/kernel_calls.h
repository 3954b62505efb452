// The kernel-call layer: where an op's kernel is chosen by device. Autograd op files check operands,
// pick the compute dtype (compute_dtype(dt, device)), allocate outputs on the inputs' device and call
// these functions with tensors already in the compute dtype; each calls the CPU kernel (F32/F64) or the
// CUDA kernel (F32/BF16, on the tensor's GPU and its current stream). The autograd rules themselves do
// not change with the device. Families wired so far: elementwise (unary, binary), sum, matmul/linear (gemm), softmax, layer_norm,
// rms_norm, dropout, embedding, cross_entropy and attention; the others
// still reject CUDA tensors in check_operands.
#pragma once
#include "kernels/cpu/elementwise.h"
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
// exact fp32 math for F32 (no TF32) and fp32 accumulation for BF16.
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
// (optional) are F64 on the CPU and F32 on CUDA (norm_stats_dtype). The backward's dweight (the sample
// weight's gradient) is CPU-only for now.
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

}  // namespace vlp
