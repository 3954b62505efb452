// Row-wise neural-network kernels on the GPU, counterparts of kernels/cpu/{reduce,softmax,loss,norm}.h,
// for F32 and BF16 storage (compute and statistics in float): reductions, softmax/log_softmax, the fused
// softmax-cross-entropy (with the sample weight's gradient), LayerNorm (with a fused residual add) and RMSNorm. Every reduction has a fixed
// order for a given shape, so results are deterministic run to run.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/cuda/elementwise.h"

namespace vlp::cuda {

// y[o, i] = sum_j x[o, j, i] over a contiguous [outer, n, inner] array.
void sum_dim(EwDType dt, const void* x, void* y, int64_t outer, int64_t n, int64_t inner, cudaStream_t stream);

// Softmax or log-softmax along n of a contiguous [outer, n, inner] array, and the backward from y.
void softmax_forward(EwDType dt, const void* x, void* y, int64_t outer, int64_t n, int64_t inner, bool log,
                     cudaStream_t stream);
void softmax_backward(EwDType dt, const void* y, const void* dy, void* dx, int64_t outer, int64_t n, int64_t inner,
                      bool log, cudaStream_t stream);

// Cross-entropy over the rows of [N, C] logits, as kernels/cpu/loss.h (label smoothing eps, ignored rows
// give 0 and lse 0, optional per-row sample_weight in the logits' dtype). loss, lse, raw_loss are float
// [N]; raw_loss optional. A target outside [0, C) that is not ignore_index gives a NaN loss (never an
// out-of-bounds read).
void cross_entropy_forward(EwDType dt, const void* logits, const int64_t* target, const void* sample_weight,
                           int64_t n, int64_t c, int64_t ignore_index, double eps, float* loss, float* lse,
                           float* raw_loss, cudaStream_t stream);
// dlogits[i, c] = g_i w_i (exp(logits - lse) - (1 - eps)[c == t] - eps / C), g_i = dloss[i * stride] * scale
// (dloss float; g_i = 0 on ignored rows), and the sample weight's gradient dweight[i] = g_i raw_loss[i]
// (raw_loss: the forward's unweighted per-row losses). dlogits and dweight are each optional (null); without
// dlogits, logits and lse may be null, without dweight raw_loss. dlogits may be the logits buffer itself
// (written in place).
void cross_entropy_backward(EwDType dt, const void* logits, const int64_t* target, const void* sample_weight,
                            const float* lse, const float* raw_loss, const float* dloss, int64_t dloss_stride,
                            double scale, int64_t n, int64_t c, int64_t ignore_index, double eps, void* dlogits,
                            void* dweight, cudaStream_t stream);
// Forward and backward in one pass over the logits, for a loss whose gradient per row is known up front
// (g_i = scale, e.g. 1/count for a mean): writes loss and lse and overwrites `logits` with dlogits, so no
// probability tensor is ever stored.
void cross_entropy_fused(EwDType dt, void* logits, const int64_t* target, const void* sample_weight, int64_t n,
                         int64_t c, int64_t ignore_index, double eps, double scale, float* loss, float* lse,
                         cudaStream_t stream);

// h = x + residual (residual optional; h written when h_out is not null), y = (h - mean) rstd gamma + beta
// over rows of d; mean and rstd float [rows]; gamma, beta optional. Two passes over the row for the
// statistics (mean, then the variance about it).
void layer_norm_forward(EwDType dt, const void* x, const void* residual, const void* gamma, const void* beta,
                        void* y, void* h_out, float* mean, float* rstd, int64_t rows, int64_t d, double eps,
                        cudaStream_t stream);
// One kernel computes dx and per-block partial sums of dgamma and dbeta (each partial owned by one thread);
// a second sums the partials in block order. x is the normalised input h. dx, dgamma, dbeta, gamma optional;
// x, mean and rstd may be null when only dbeta is wanted.
void layer_norm_backward(EwDType dt, const void* x, const float* mean, const float* rstd, const void* gamma,
                         const void* dy, void* dx, void* dgamma, void* dbeta, int64_t rows, int64_t d,
                         cudaStream_t stream);

// y = x rstd weight, rstd = 1/sqrt(mean(x^2) + eps); weight optional.
void rms_norm_forward(EwDType dt, const void* x, const void* weight, void* y, float* rstd, int64_t rows, int64_t d,
                      double eps, cudaStream_t stream);
void rms_norm_backward(EwDType dt, const void* x, const float* rstd, const void* weight, const void* dy, void* dx,
                       void* dweight, int64_t rows, int64_t d, cudaStream_t stream);

// Binary cross-entropy with logits, elementwise in float (kernels/cpu/loss.h's formula):
// loss[i] = max(x, 0) - x t + log1p(exp(-|x|)), x and t of dtype dt, loss F32 (loss_f32) or dt.
void bce_with_logits_forward(EwDType dt, const void* x, const void* t, void* loss, bool loss_f32, int64_t n,
                             cudaStream_t stream);
// g = dloss[i * dloss_stride] * scale (dloss of dtype dt; stride 0 for a reduced loss): dx = g (sigmoid(x) -
// t), dtarget = -g x. dx and dtarget optional (t may be null when dx is).
void bce_with_logits_backward(EwDType dt, const void* x, const void* t, const void* dloss, int64_t dloss_stride,
                              double scale, int64_t n, void* dx, void* dtarget, cudaStream_t stream);

}  // namespace vlp::cuda
