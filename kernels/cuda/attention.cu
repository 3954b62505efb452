// Fused attention forward (online softmax over key chunks) and backward (dq per query row, dk/dv per key
// row, dbias through a scratch), see attention.h. One block of kThreads per row; a chunk of kThreads keys
// (or queries) at a time: each thread scores one key of the chunk, the chunk's probabilities go to shared
// memory, then each thread accumulates the output dims it owns (d = tid + r * kThreads, r < kRegs).
#include <cmath>
#include <stdexcept>
#include <string>

#include "kernels/cuda/allocator.h"
#include "kernels/cuda/attention.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/nvtx.h"
#include "kernels/cuda/runtime.h"
#include "kernels/philox.h"

namespace vlp::cuda {

namespace {

constexpr int kThreads = 128;
constexpr int kRegs = int(kAttentionMaxHeadDim / kThreads);

template <class T>
struct Head {  // pointers of one (b, h)
  const T *q, *k, *v, *bias;
  const bool* keep;
};

template <class T>
__device__ Head<T> head(const AttentionArgs& a, int64_t b, int64_t h) {
  Head<T> hd;
  hd.q = static_cast<const T*>(a.q) + b * a.q_strides[0] + h * a.q_strides[1];
  hd.k = static_cast<const T*>(a.k) + b * a.k_strides[0] + h * a.k_strides[1];
  hd.v = static_cast<const T*>(a.v) + b * a.v_strides[0] + h * a.v_strides[1];
  hd.bias = a.bias ? static_cast<const T*>(a.bias) + b * a.bias_strides[0] + h * a.bias_strides[1] : nullptr;
  hd.keep = a.key_keep ? a.key_keep + b * a.Tk : nullptr;
  return hd;
}

// S_ij (scaled, biased), or -inf where masked. q_row is the query in shared memory (float).
template <class T>
__device__ float score(const AttentionArgs& a, const Head<T>& hd, const float* q_row, int64_t i, int64_t j) {
  if (hd.keep && !hd.keep[j]) return -INFINITY;
  if (a.causal && j > i + (a.Tk - a.Tq)) return -INFINITY;
  const T* kr = hd.k + j * a.k_strides[2];
  float s = 0.f;
  for (int64_t d = 0; d < a.D; ++d) s += q_row[d] * to_float(kr[d]);
  s *= float(a.scale);
  if (hd.bias) s += to_float(hd.bias[i * a.bias_strides[2] + j * a.bias_strides[3]]);
  return s;
}

// keep / (1 - p) for element (bh, i, j) of the dropout stream, or 1 without dropout.
__device__ float dropout_factor(const AttentionArgs& a, int64_t bh, int64_t i, int64_t j) {
  if (a.dropout_p <= 0.0) return 1.f;
  const uint64_t e = uint64_t((bh * a.Tq + i) * a.Tk + j);
  Philox4 r = philox_block(a.seed, a.offset, e / 4);
  return philox_uniform(r.x[e % 4]) < float(a.dropout_p) ? 0.f : float(1.0 / (1.0 - a.dropout_p));
}

template <class T>
__global__ void attention_forward_kernel(AttentionArgs a, T* out, float* lse) {
  extern __shared__ float smem[];
  float* q_row = smem;           // [D]
  float* p_chunk = smem + a.D;   // [kThreads]
  const int64_t row = blockIdx.x;  // (b * H + h) * Tq + i
  const int64_t i = row % a.Tq, bh = row / a.Tq, b = bh / a.H, h = bh % a.H;
  const Head<T> hd = head<T>(a, b, h);
  for (int64_t d = threadIdx.x; d < a.D; d += blockDim.x) q_row[d] = to_float(hd.q[i * a.q_strides[2] + d]);
  __syncthreads();
  float acc[kRegs];
#pragma unroll
  for (int r = 0; r < kRegs; ++r) acc[r] = 0.f;
  float m = -INFINITY, l = 0.f;
  for (int64_t j0 = 0; j0 < a.Tk; j0 += kThreads) {
    const int64_t j = j0 + threadIdx.x;
    const float s = j < a.Tk ? score(a, hd, q_row, i, j) : -INFINITY;
    const float m_new = fmaxf(m, block_max(s));
    const float p = s == -INFINITY ? 0.f : expf(s - m_new);
    const float chunk_sum = block_sum(p);
    const float alpha = m == -INFINITY ? 0.f : expf(m - m_new);
    l = l * alpha + chunk_sum;
    p_chunk[threadIdx.x] = j < a.Tk && p != 0.f ? p * dropout_factor(a, bh, i, j) : 0.f;
    __syncthreads();
    const int64_t n = a.Tk - j0 < kThreads ? a.Tk - j0 : kThreads;
#pragma unroll
    for (int r = 0; r < kRegs; ++r) {
      const int64_t d = threadIdx.x + int64_t(r) * kThreads;
      if (d >= a.Dv) break;
      float s_acc = acc[r] * alpha;
      for (int64_t jj = 0; jj < n; ++jj) s_acc += p_chunk[jj] * to_float(hd.v[(j0 + jj) * a.v_strides[2] + d]);
      acc[r] = s_acc;
    }
    m = m_new;
    __syncthreads();  // p_chunk is rewritten by the next chunk
  }
  const float inv = l > 0.f ? 1.f / l : 0.f;
#pragma unroll
  for (int r = 0; r < kRegs; ++r) {
    const int64_t d = threadIdx.x + int64_t(r) * kThreads;
    if (d < a.Dv) out[row * a.Dv + d] = from_float<T>(acc[r] * inv);
  }
  if (threadIdx.x == 0) lse[row] = l > 0.f ? m + logf(l) : -INFINITY;
}

// delta[row] = sum_d dout[row, d] * out[row, d].
template <class T>
__global__ void attention_delta_kernel(const T* out, const T* dout, float* delta, int64_t Dv) {
  const int64_t row = blockIdx.x;
  float s = 0.f;
  for (int64_t d = threadIdx.x; d < Dv; d += blockDim.x) s += to_float(out[row * Dv + d]) * to_float(dout[row * Dv + d]);
  s = block_sum(s);
  if (threadIdx.x == 0) delta[row] = s;
}

// dq_i = scale sum_j dS_ij k_j with dS_ij = P_ij (dPd_ij * factor_ij - delta_i), dPd_ij = dout_i . v_j.
template <class T>
__global__ void attention_dq_kernel(AttentionArgs a, const float* lse, const float* delta, const T* dout, T* dq,
                                    float* ds_out) {
  extern __shared__ float smem[];
  float* q_row = smem;                 // [D]
  float* do_row = smem + a.D;          // [Dv]
  float* ds_chunk = do_row + a.Dv;     // [kThreads]
  const int64_t row = blockIdx.x;
  const int64_t i = row % a.Tq, bh = row / a.Tq, b = bh / a.H, h = bh % a.H;
  const Head<T> hd = head<T>(a, b, h);
  for (int64_t d = threadIdx.x; d < a.D; d += blockDim.x) q_row[d] = to_float(hd.q[i * a.q_strides[2] + d]);
  for (int64_t d = threadIdx.x; d < a.Dv; d += blockDim.x) do_row[d] = to_float(dout[row * a.Dv + d]);
  __syncthreads();
  const float lse_i = lse[row], delta_i = delta[row];
  float acc[kRegs];
#pragma unroll
  for (int r = 0; r < kRegs; ++r) acc[r] = 0.f;
  for (int64_t j0 = 0; j0 < a.Tk; j0 += kThreads) {
    const int64_t j = j0 + threadIdx.x;
    float ds = 0.f;
    if (j < a.Tk && lse_i != -INFINITY) {
      const float s = score(a, hd, q_row, i, j);
      if (s != -INFINITY) {
        const float p = expf(s - lse_i);
        const T* vr = hd.v + j * a.v_strides[2];
        float dpd = 0.f;
        for (int64_t d = 0; d < a.Dv; ++d) dpd += do_row[d] * to_float(vr[d]);
        ds = p * (dpd * dropout_factor(a, bh, i, j) - delta_i);
      }
    }
    if (ds_out && j < a.Tk) ds_out[row * a.Tk + j] = ds;
    ds_chunk[threadIdx.x] = ds;
    __syncthreads();
    const int64_t n = a.Tk - j0 < kThreads ? a.Tk - j0 : kThreads;
#pragma unroll
    for (int r = 0; r < kRegs; ++r) {
      const int64_t d = threadIdx.x + int64_t(r) * kThreads;
      if (d >= a.D) break;
      float s_acc = acc[r];
      for (int64_t jj = 0; jj < n; ++jj) s_acc += ds_chunk[jj] * to_float(hd.k[(j0 + jj) * a.k_strides[2] + d]);
      acc[r] = s_acc;
    }
    __syncthreads();
  }
  if (dq) {
#pragma unroll
    for (int r = 0; r < kRegs; ++r) {
      const int64_t d = threadIdx.x + int64_t(r) * kThreads;
      if (d < a.D) dq[row * a.D + d] = from_float<T>(acc[r] * float(a.scale));
    }
  }
}

// Per key row j: dv_j = sum_i Pd_ij dout_i, dk_j = scale sum_i dS_ij q_i.
template <class T>
__global__ void attention_dkv_kernel(AttentionArgs a, const float* lse, const float* delta, const T* dout, T* dk,
                                     T* dv) {
  extern __shared__ float smem[];
  float* k_row = smem;                // [D]
  float* v_row = smem + a.D;          // [Dv]
  float* pd_chunk = v_row + a.Dv;     // [kThreads]
  float* ds_chunk = pd_chunk + kThreads;
  const int64_t krow = blockIdx.x;  // (b * H + h) * Tk + j
  const int64_t j = krow % a.Tk, bh = krow / a.Tk, b = bh / a.H, h = bh % a.H;
  const Head<T> hd = head<T>(a, b, h);
  for (int64_t d = threadIdx.x; d < a.D; d += blockDim.x) k_row[d] = to_float(hd.k[j * a.k_strides[2] + d]);
  for (int64_t d = threadIdx.x; d < a.Dv; d += blockDim.x) v_row[d] = to_float(hd.v[j * a.v_strides[2] + d]);
  __syncthreads();
  const bool key_masked = hd.keep && !hd.keep[j];
  float acc_k[kRegs], acc_v[kRegs];
#pragma unroll
  for (int r = 0; r < kRegs; ++r) acc_k[r] = acc_v[r] = 0.f;
  for (int64_t i0 = 0; i0 < a.Tq; i0 += kThreads) {
    const int64_t i = i0 + threadIdx.x;
    float pd = 0.f, ds = 0.f;
    if (i < a.Tq && !key_masked && !(a.causal && j > i + (a.Tk - a.Tq))) {
      const int64_t row = bh * a.Tq + i;
      const float lse_i = lse[row];
      if (lse_i != -INFINITY) {
        const T* qr = hd.q + i * a.q_strides[2];
        float s = 0.f;
        for (int64_t d = 0; d < a.D; ++d) s += to_float(qr[d]) * k_row[d];
        s *= float(a.scale);
        if (hd.bias) s += to_float(hd.bias[i * a.bias_strides[2] + j * a.bias_strides[3]]);
        const float p = expf(s - lse_i);
        const float f = dropout_factor(a, bh, i, j);
        float dpd = 0.f;
        const T* dor = dout + row * a.Dv;
        for (int64_t d = 0; d < a.Dv; ++d) dpd += to_float(dor[d]) * v_row[d];
        pd = p * f;
        ds = p * (dpd * f - delta[row]);
      }
    }
    pd_chunk[threadIdx.x] = pd;
    ds_chunk[threadIdx.x] = ds;
    __syncthreads();
    const int64_t n = a.Tq - i0 < kThreads ? a.Tq - i0 : kThreads;
#pragma unroll
    for (int r = 0; r < kRegs; ++r) {
      const int64_t d = threadIdx.x + int64_t(r) * kThreads;
      if (d < a.Dv) {
        float s_acc = acc_v[r];
        for (int64_t ii = 0; ii < n; ++ii) s_acc += pd_chunk[ii] * to_float(dout[(bh * a.Tq + i0 + ii) * a.Dv + d]);
        acc_v[r] = s_acc;
      }
      if (d < a.D) {
        float s_acc = acc_k[r];
        for (int64_t ii = 0; ii < n; ++ii) s_acc += ds_chunk[ii] * to_float(hd.q[(i0 + ii) * a.q_strides[2] + d]);
        acc_k[r] = s_acc;
      }
    }
    __syncthreads();
  }
#pragma unroll
  for (int r = 0; r < kRegs; ++r) {
    const int64_t d = threadIdx.x + int64_t(r) * kThreads;
    if (dk && d < a.D) dk[krow * a.D + d] = from_float<T>(acc_k[r] * float(a.scale));
    if (dv && d < a.Dv) dv[krow * a.Dv + d] = from_float<T>(acc_v[r]);
  }
}

// dbias[bb, hh, i, j] = sum of ds[b, h, i, j] over b (all when dbias_B == 1, else b = bb) and h likewise.
template <class T>
__global__ void attention_dbias_kernel(const float* ds, int64_t B, int64_t H, int64_t Tq, int64_t Tk, int64_t dB,
                                       int64_t dH, T* dbias) {
  const int64_t n = dB * dH * Tq * Tk;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < n; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t ij = e % (Tq * Tk), bh = e / (Tq * Tk), hh = bh % dH, bb = bh / dH;
    float s = 0.f;
    for (int64_t b = (dB == 1 ? 0 : bb); b < (dB == 1 ? B : bb + 1); ++b)
      for (int64_t h = (dH == 1 ? 0 : hh); h < (dH == 1 ? H : hh + 1); ++h) s += ds[(b * H + h) * Tq * Tk + ij];
    dbias[e] = from_float<T>(s);
  }
}

void check_args(const AttentionArgs& a) {
  if (a.D > kAttentionMaxHeadDim || a.Dv > kAttentionMaxHeadDim)
    throw std::runtime_error("cuda attention: head dims up to " + std::to_string(kAttentionMaxHeadDim) + ", got D " +
                             std::to_string(a.D) + ", Dv " + std::to_string(a.Dv));
  if (a.B * a.H * a.Tq > int64_t(0x7fffffff) || a.B * a.H * a.Tk > int64_t(0x7fffffff))
    throw std::runtime_error("cuda attention: too many rows for one launch");
  if (a.dropout_p < 0.0 || a.dropout_p >= 1.0)
    throw std::runtime_error("cuda attention: dropout probability must be in [0, 1)");
}

template <class Fn>
void by_dtype(EwDType dt, Fn&& fn) {
  if (dt == EwDType::F32) fn(float{});
  else fn(__nv_bfloat16{});
}

}  // namespace

void attention_forward_rows(const AttentionArgs& a, void* out, float* lse, cudaStream_t stream) {
  NvtxRange nvtx("vlp::cuda::attention_forward_rows");
  check_args(a);
  if (a.B * a.H * a.Tq == 0) return;
  const size_t shared = size_t(a.D + kThreads) * sizeof(float);
  by_dtype(a.dtype, [&](auto t) {
    using T = decltype(t);
    attention_forward_kernel<T><<<unsigned(a.B * a.H * a.Tq), kThreads, shared, stream>>>(a, static_cast<T*>(out), lse);
  });
  check_launch("attention_forward");
}

void attention_backward_rows(const AttentionArgs& a, const void* out, const float* lse, const void* dout, void* dq,
                             void* dk, void* dv, void* dbias, int64_t dbias_B, int64_t dbias_H, cudaStream_t stream) {
  NvtxRange nvtx("vlp::cuda::attention_backward_rows");
  check_args(a);
  if (dbias && ((dbias_B != 1 && dbias_B != a.B) || (dbias_H != 1 && dbias_H != a.H)))
    throw std::runtime_error("cuda attention_backward: dbias batch/head dims must be 1 or B/H");
  const int64_t rows = a.B * a.H * a.Tq, krows = a.B * a.H * a.Tk;
  if (rows == 0) return;
  const int device = current_device();
  DeviceBuffer delta(size_t(rows) * sizeof(float), device, stream);
  DeviceBuffer ds(dbias ? size_t(rows * a.Tk) * sizeof(float) : 1, device, stream);
  float* ds_ptr = dbias ? static_cast<float*>(ds.ptr) : nullptr;
  by_dtype(a.dtype, [&](auto t) {
    using T = decltype(t);
    const T* o = static_cast<const T*>(out);
    const T* g = static_cast<const T*>(dout);
    float* dl = static_cast<float*>(delta.ptr);
    attention_delta_kernel<T><<<unsigned(rows), kThreads, 0, stream>>>(o, g, dl, a.Dv);
    check_launch("attention_backward delta");
    if (dq || dbias) {
      const size_t shared = size_t(a.D + a.Dv + kThreads) * sizeof(float);
      attention_dq_kernel<T><<<unsigned(rows), kThreads, shared, stream>>>(a, lse, dl, g, static_cast<T*>(dq), ds_ptr);
      check_launch("attention_backward dq");
    }
    if ((dk || dv) && krows > 0) {
      const size_t shared = size_t(a.D + a.Dv + 2 * kThreads) * sizeof(float);
      attention_dkv_kernel<T><<<unsigned(krows), kThreads, shared, stream>>>(a, lse, dl, g, static_cast<T*>(dk),
                                                                            static_cast<T*>(dv));
      check_launch("attention_backward dk dv");
    }
    if (dbias) {
      const int64_t n = dbias_B * dbias_H * a.Tq * a.Tk;
      attention_dbias_kernel<T><<<grid_for(n, 256), 256, 0, stream>>>(ds_ptr, a.B, a.H, a.Tq, a.Tk, dbias_B, dbias_H,
                                                                      static_cast<T*>(dbias));
      check_launch("attention_backward dbias");
    }
  });
}

}  // namespace vlp::cuda
