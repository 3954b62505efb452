// Tensor-core flash attention backward for BF16 (FlashAttention-2 style), see attention_tc.h; the forward
// is attention_tc.cu. Three passes, no atomics (the same bits every run):
//   1. delta_i = rowsum(dO_i * O_i) in fp32, one warp per query row.
//   2. dK, dV: one CTA of 4 warps per (batch, head, tile of 64 keys), each warp owning 16 keys, walking the
//      query tiles (64 rows, 32 for head dim 128) that can see the keys, staged by cp.async with double
//      buffering. Per query tile: S^T = K Q^T and dPd^T = V dO^T with mma.sync, P^T = exp(S^T - lse)
//      with bias and masks applied in registers, the dropout factor f from the Philox stream,
//      dV += (P f)^T dO and dK += dS^T Q with dS = P (dPd f - delta), both A operands straight from the
//      registers (bf16). dK is scaled at the end.
//   3. dQ (and dS for the bias): one CTA per (batch, head, tile of 64 query rows) walking the key tiles:
//      S = Q K^T, dPd = dO V^T, dS as above, dQ += dS K. dS goes to dbias directly (bf16) when the bias
//      has no broadcast batch/head dims, otherwise to a float scratch [B, H, Tq, Tk] summed over the
//      broadcast dims by a fourth kernel in a fixed order.
// Fully masked rows (lse = -inf) have P = 0 everywhere: zero gradients.
#include <stdexcept>
#include <string>

#include "kernels/cuda/allocator.h"
#include "kernels/cuda/attention_tc.cuh"
#include "kernels/cuda/attention_tc.h"
#include "kernels/cuda/nvtx.h"
#include "kernels/cuda/runtime.h"

namespace vlp::cuda {

namespace {

using tc::bf16;
using tc::kThreads;

constexpr int kKvKeys = 64;  // keys per CTA of the dK/dV pass
template <int kD>
__host__ __device__ constexpr int kv_query_tile() {  // query rows per step of the dK/dV pass: 32 at kD 128 keeps dK, dV in registers
  return kD <= 64 ? 64 : 32;
}
constexpr int kDqRows = 64;  // query rows per CTA of the dQ pass
constexpr int kDqKeys = 64;  // keys per step of the dQ pass

template <int kD>
constexpr size_t dkv_smem_bytes() {  // K, V, Q[2], dO[2], then lse[2] and delta[2] as float
  return size_t(2 * kKvKeys + 4 * kv_query_tile<kD>()) * tc::ld_of<kD>() * sizeof(bf16) +
         size_t(4 * kv_query_tile<kD>()) * sizeof(float);
}
template <int kD>
constexpr size_t dq_smem_bytes() {  // Q, dO, K[2], V[2]
  return size_t(2 * kDqRows + 4 * kDqKeys) * tc::ld_of<kD>() * sizeof(bf16);
}

// delta[row] = sum_d dout[row, d] * out[row, d]; one warp per row, D even.
__global__ void attention_tc_delta_kernel(const bf16* out, const bf16* dout, float* delta, int64_t rows, int D) {
  const int64_t row = int64_t(blockIdx.x) * tc::kWarps + (threadIdx.x >> 5);
  if (row >= rows) return;
  const int lane = threadIdx.x & 31;
  float s = 0.f;
  for (int d = 2 * lane; d < D; d += 64) {
    const __nv_bfloat162 o = *reinterpret_cast<const __nv_bfloat162*>(out + row * D + d);
    const __nv_bfloat162 g = *reinterpret_cast<const __nv_bfloat162*>(dout + row * D + d);
    s += __bfloat162float(o.x) * __bfloat162float(g.x) + __bfloat162float(o.y) * __bfloat162float(g.y);
  }
  s = warp_sum(s);
  if (lane == 0) delta[row] = s;
}

template <int kD>
__global__ void __launch_bounds__(kThreads) attention_tc_dkv_kernel(AttentionArgs a, const float* lse,
                                                                    const float* delta, const bf16* dout, bf16* dk,
                                                                    bf16* dv, int n_ktiles) {
  constexpr int kBq = kv_query_tile<kD>(), kLd = tc::ld_of<kD>(), kNt = kBq / 8, kDt = kD / 8;
  static_assert(kD % 16 == 0 && kD <= 128, "head dim tile: a multiple of 16 up to 128");
  static_assert(kKvKeys == 16 * tc::kWarps, "each warp owns 16 keys");
  static_assert(kBq % 16 == 0 && kBq <= kThreads, "query steps of 16; one thread per row stages lse and delta");
  static_assert(kDt % 2 == 0, "two 8-column B fragments at a time");
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16* sK = reinterpret_cast<bf16*>(smem_raw);  // [kKvKeys][kLd]
  bf16* sV = sK + kKvKeys * kLd;                  // [kKvKeys][kLd]
  bf16* sQ = sV + kKvKeys * kLd;                  // [2][kBq][kLd]
  bf16* sO = sQ + 2 * kBq * kLd;                  // dO: [2][kBq][kLd]
  float* sL = reinterpret_cast<float*>(sO + 2 * kBq * kLd);  // lse: [2][kBq]
  float* sDelta = sL + 2 * kBq;                              // [2][kBq]

  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, t = lane & 3;
  const int64_t bh = blockIdx.x / n_ktiles;
  const int k0 = int(blockIdx.x % n_ktiles) * kKvKeys;
  const int Tq = int(a.Tq), Tk = int(a.Tk), D = int(a.D);
  const tc::Head hd = tc::head_of(a, bh);
  const bf16* dout_h = dout + bh * Tq * int64_t(D);
  // Causal: query i sees key j when i >= j - (Tk - Tq); rows before i_begin see no key of this tile.
  const int i_begin = a.causal ? max(0, k0 - (Tk - Tq)) : 0;
  const int qt_begin = i_begin / kBq, qt_end = (Tq + kBq - 1) / kBq;

  tc::zero_shared(sK, (2 * kKvKeys + 4 * kBq) * kLd);
  __syncthreads();
  auto stage = [&](int qt, int buf) {  // Q, dO (async) and lse, delta (plain) of query tile qt
    const int i0 = qt * kBq;
    tc::load_tile<kBq, kD>(sQ + buf * kBq * kLd, hd.q, a.q_strides[2], i0, Tq, D);
    tc::load_tile<kBq, kD>(sO + buf * kBq * kLd, dout_h, D, i0, Tq, D);
    if (threadIdx.x < kBq) {
      const int i = i0 + threadIdx.x;
      sL[buf * kBq + threadIdx.x] = i < Tq ? lse[bh * Tq + i] : -INFINITY;
      sDelta[buf * kBq + threadIdx.x] = i < Tq ? delta[bh * Tq + i] : 0.f;
    }
  };
  tc::load_tile<kKvKeys, kD>(sK, hd.k, a.k_strides[2], k0, Tk, D);
  tc::load_tile<kKvKeys, kD>(sV, hd.v, a.v_strides[2], k0, Tk, D);
  if (qt_begin < qt_end) stage(qt_begin, 0);
  tc::cp_async_commit();

  float acc_k[kDt][4], acc_v[kDt][4];
VLP_UNROLL
  for (int n = 0; n < kDt; ++n)
VLP_UNROLL
    for (int e = 0; e < 4; ++e) acc_k[n][e] = acc_v[n][e] = 0.f;
  const int key0 = k0 + warp * 16 + (lane >> 2);  // this lane's keys: key0 and key0 + 8

  for (int qt = qt_begin; qt < qt_end; ++qt) {
    const int buf = (qt - qt_begin) & 1;
    if (qt + 1 < qt_end) {  // the other buffers were last read before the previous iteration's closing barrier
      stage(qt + 1, buf ^ 1);
      tc::cp_async_commit();
      tc::cp_async_wait<1>();
    } else {
      tc::cp_async_wait<0>();
    }
    __syncthreads();
    const bf16* q_s = sQ + buf * kBq * kLd;
    const bf16* o_s = sO + buf * kBq * kLd;
    const float* l_s = sL + buf * kBq;
    const float* d_s = sDelta + buf * kBq;
    const int i0 = qt * kBq;

    // S^T = K Q^T and dPd^T = V dO^T for this warp's 16 keys and the tile's queries.
    float st[kNt][4], dpt[kNt][4];
VLP_UNROLL
    for (int n = 0; n < kNt; ++n)
VLP_UNROLL
      for (int e = 0; e < 4; ++e) st[n][e] = dpt[n][e] = 0.f;
VLP_UNROLL
    for (int kk = 0; kk < kD / 16; ++kk) {
      if (kk * 16 >= D) break;
      uint32_t ak[4], av[4];
      tc::frag_a(ak, sK, kLd, warp * 16, kk * 16, lane);
      tc::frag_a(av, sV, kLd, warp * 16, kk * 16, lane);
VLP_UNROLL
      for (int n = 0; n < kNt; n += 2) {
        uint32_t b0[2], b1[2];
        tc::frag_b_nk_x2(b0, b1, q_s, kLd, n * 8, kk * 16, lane);
        tc::mma_bf16(st[n], ak, b0);
        tc::mma_bf16(st[n + 1], ak, b1);
        tc::frag_b_nk_x2(b0, b1, o_s, kLd, n * 8, kk * 16, lane);
        tc::mma_bf16(dpt[n], av, b0);
        tc::mma_bf16(dpt[n + 1], av, b1);
      }
    }
    // Element e of tile n: key key0 + 8 (e / 2), query i0 + 8n + 2t + e % 2. st becomes P f, dpt dS.
VLP_UNROLL
    for (int n = 0; n < kNt; ++n)
VLP_UNROLL
      for (int e = 0; e < 4; ++e) {
        const int c = n * 8 + 2 * t + (e & 1), i = i0 + c, j = key0 + 8 * (e >> 1);
        const float sc = tc::masked_score(a, hd, st[n][e], i, j);
        const float L = l_s[c];
        const float p = sc == -INFINITY || L == -INFINITY ? 0.f : exp2f((sc - L) * tc::kLog2e);
        const float f = p != 0.f && a.dropout_p > 0.0 ? tc::dropout_factor(a, bh, i, j) : 1.f;
        st[n][e] = p * f;
        dpt[n][e] = p * (dpt[n][e] * f - d_s[c]);
      }
    // dV += (P f)^T dO and dK += dS^T Q: A from registers (queries as k), B by ldmatrix.trans.
VLP_UNROLL
    for (int kk = 0; kk < kBq / 16; ++kk) {
      uint32_t pa[4], sa[4];
      tc::pack_a_from_c(pa, st[2 * kk], st[2 * kk + 1]);
      tc::pack_a_from_c(sa, dpt[2 * kk], dpt[2 * kk + 1]);
VLP_UNROLL
      for (int n = 0; n < kDt; n += 2) {
        if (n * 8 >= D) break;
        uint32_t b0[2], b1[2];
        tc::frag_b_kn_x2(b0, b1, o_s, kLd, kk * 16, n * 8, lane);
        tc::mma_bf16(acc_v[n], pa, b0);
        tc::mma_bf16(acc_v[n + 1], pa, b1);
        tc::frag_b_kn_x2(b0, b1, q_s, kLd, kk * 16, n * 8, lane);
        tc::mma_bf16(acc_k[n], sa, b0);
        tc::mma_bf16(acc_k[n + 1], sa, b1);
      }
    }
    __syncthreads();  // these buffers are refilled by the copies issued in the next iteration
  }
  tc::cp_async_wait<0>();  // K and V's copies are still pending when no query tile sees this key tile

  const float scale = float(a.scale);
VLP_UNROLL
  for (int r = 0; r < 2; ++r) {
    const int j = key0 + 8 * r;
    if (j >= Tk) continue;
    const int64_t base = (bh * Tk + j) * int64_t(D);
VLP_UNROLL
    for (int n = 0; n < kDt; ++n) {
      const int col = n * 8 + 2 * t;
      if (col >= D) continue;
      if (dk) *reinterpret_cast<uint32_t*>(dk + base + col) = tc::pack_bf16(acc_k[n][2 * r] * scale, acc_k[n][2 * r + 1] * scale);
      if (dv) *reinterpret_cast<uint32_t*>(dv + base + col) = tc::pack_bf16(acc_v[n][2 * r], acc_v[n][2 * r + 1]);
    }
  }
}

template <int kD>
__global__ void __launch_bounds__(kThreads) attention_tc_dq_kernel(AttentionArgs a, const float* lse,
                                                                   const float* delta, const bf16* dout, bf16* dq,
                                                                   float* ds_scratch, bf16* dbias_direct,
                                                                   int n_qtiles) {
  constexpr int kLd = tc::ld_of<kD>(), kNt = kDqKeys / 8, kDt = kD / 8;
  static_assert(kD % 16 == 0 && kD <= 128, "head dim tile: a multiple of 16 up to 128");
  static_assert(kDqRows == 16 * tc::kWarps, "each warp owns 16 query rows");
  static_assert(kDqKeys % 16 == 0, "key steps of 16");
  static_assert(kDt % 2 == 0, "two 8-column B fragments at a time");
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16* sQ = reinterpret_cast<bf16*>(smem_raw);  // [kDqRows][kLd]
  bf16* sO = sQ + kDqRows * kLd;                  // dO: [kDqRows][kLd]
  bf16* sK = sO + kDqRows * kLd;                  // [2][kDqKeys][kLd]
  bf16* sV = sK + 2 * kDqKeys * kLd;              // [2][kDqKeys][kLd]

  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, t = lane & 3;
  const int64_t bh = blockIdx.x / n_qtiles;
  const int q0 = (n_qtiles - 1 - int(blockIdx.x % n_qtiles)) * kDqRows;
  const int Tq = int(a.Tq), Tk = int(a.Tk), D = int(a.D);
  const tc::Head hd = tc::head_of(a, bh);
  const bool want_ds = ds_scratch || dbias_direct;
  int kv_end = Tk;  // with dS wanted every key is visited: masked elements must be written as 0
  if (a.causal && !want_ds) kv_end = max(0, min(Tk, min(q0 + kDqRows, Tq) + (Tk - Tq)));
  const int n_tiles = (kv_end + kDqKeys - 1) / kDqKeys;

  tc::zero_shared(sQ, (2 * kDqRows + 4 * kDqKeys) * kLd);
  __syncthreads();
  tc::load_tile<kDqRows, kD>(sQ, hd.q, a.q_strides[2], q0, Tq, D);
  tc::load_tile<kDqRows, kD>(sO, dout + bh * Tq * int64_t(D), D, q0, Tq, D);
  if (n_tiles > 0) {
    tc::load_tile<kDqKeys, kD>(sK, hd.k, a.k_strides[2], 0, Tk, D);
    tc::load_tile<kDqKeys, kD>(sV, hd.v, a.v_strides[2], 0, Tk, D);
  }
  tc::cp_async_commit();

  const int row0 = q0 + warp * 16 + (lane >> 2);  // this lane's rows: row0 and row0 + 8
  float lse_r[2], delta_r[2];
VLP_UNROLL
  for (int r = 0; r < 2; ++r) {
    const int i = row0 + 8 * r;
    lse_r[r] = i < Tq ? lse[bh * Tq + i] : -INFINITY;
    delta_r[r] = i < Tq ? delta[bh * Tq + i] : 0.f;
  }
  float acc[kDt][4];
VLP_UNROLL
  for (int n = 0; n < kDt; ++n) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.f;

  for (int it = 0; it < n_tiles; ++it) {
    const int buf = it & 1;
    if (it + 1 < n_tiles) {
      const int j1 = (it + 1) * kDqKeys;
      tc::load_tile<kDqKeys, kD>(sK + (buf ^ 1) * kDqKeys * kLd, hd.k, a.k_strides[2], j1, Tk, D);
      tc::load_tile<kDqKeys, kD>(sV + (buf ^ 1) * kDqKeys * kLd, hd.v, a.v_strides[2], j1, Tk, D);
      tc::cp_async_commit();
      tc::cp_async_wait<1>();
    } else {
      tc::cp_async_wait<0>();
    }
    __syncthreads();
    const bf16* k_s = sK + buf * kDqKeys * kLd;
    const bf16* v_s = sV + buf * kDqKeys * kLd;
    const int j0 = it * kDqKeys;

    // S = Q K^T and dPd = dO V^T for this warp's 16 rows.
    float s[kNt][4], dp[kNt][4];
VLP_UNROLL
    for (int n = 0; n < kNt; ++n)
VLP_UNROLL
      for (int e = 0; e < 4; ++e) s[n][e] = dp[n][e] = 0.f;
VLP_UNROLL
    for (int kk = 0; kk < kD / 16; ++kk) {
      if (kk * 16 >= D) break;
      uint32_t aq[4], ao[4];
      tc::frag_a(aq, sQ, kLd, warp * 16, kk * 16, lane);
      tc::frag_a(ao, sO, kLd, warp * 16, kk * 16, lane);
VLP_UNROLL
      for (int n = 0; n < kNt; n += 2) {
        uint32_t b0[2], b1[2];
        tc::frag_b_nk_x2(b0, b1, k_s, kLd, n * 8, kk * 16, lane);
        tc::mma_bf16(s[n], aq, b0);
        tc::mma_bf16(s[n + 1], aq, b1);
        tc::frag_b_nk_x2(b0, b1, v_s, kLd, n * 8, kk * 16, lane);
        tc::mma_bf16(dp[n], ao, b0);
        tc::mma_bf16(dp[n + 1], ao, b1);
      }
    }
    // dS = P (dPd f - delta). Element e of tile n: row row0 + 8 (e / 2), key j0 + 8n + 2t + e % 2.
VLP_UNROLL
    for (int n = 0; n < kNt; ++n)
VLP_UNROLL
      for (int r = 0; r < 2; ++r) {
        const int i = row0 + 8 * r, j = j0 + n * 8 + 2 * t;
        float f[2] = {1.f, 1.f};
        if (a.dropout_p > 0.0 && i < Tq && j < Tk) tc::dropout_factor2(a, bh, i, j, f[0], f[1]);
VLP_UNROLL
        for (int c = 0; c < 2; ++c) {
          const int e = 2 * r + c;
          const float sc = tc::masked_score(a, hd, s[n][e], i, j + c);
          const float p = sc == -INFINITY || lse_r[r] == -INFINITY ? 0.f : exp2f((sc - lse_r[r]) * tc::kLog2e);
          s[n][e] = p * (dp[n][e] * f[c] - delta_r[r]);
        }
        if (want_ds && i < Tq) {
          const int64_t at = (bh * Tq + i) * int64_t(Tk) + j;
VLP_UNROLL
          for (int c = 0; c < 2; ++c) {
            if (j + c >= Tk) continue;
            if (ds_scratch) ds_scratch[at + c] = s[n][2 * r + c];
            else dbias_direct[at + c] = __float2bfloat16_rn(s[n][2 * r + c]);
          }
        }
      }
    // dQ += dS K: dS from registers (keys as k), K's B fragments by ldmatrix.trans.
    if (dq) {
VLP_UNROLL
      for (int kk = 0; kk < kDqKeys / 16; ++kk) {
        uint32_t sa[4];
        tc::pack_a_from_c(sa, s[2 * kk], s[2 * kk + 1]);
VLP_UNROLL
        for (int n = 0; n < kDt; n += 2) {
          if (n * 8 >= D) break;
          uint32_t b0[2], b1[2];
          tc::frag_b_kn_x2(b0, b1, k_s, kLd, kk * 16, n * 8, lane);
          tc::mma_bf16(acc[n], sa, b0);
          tc::mma_bf16(acc[n + 1], sa, b1);
        }
      }
    }
    __syncthreads();
  }
  tc::cp_async_wait<0>();

  if (!dq) return;
  const float scale = float(a.scale);
VLP_UNROLL
  for (int r = 0; r < 2; ++r) {
    const int i = row0 + 8 * r;
    if (i >= Tq) continue;
    bf16* qrow = dq + (bh * Tq + i) * int64_t(D);
VLP_UNROLL
    for (int n = 0; n < kDt; ++n) {
      const int col = n * 8 + 2 * t;
      if (col < D) *reinterpret_cast<uint32_t*>(qrow + col) = tc::pack_bf16(acc[n][2 * r] * scale, acc[n][2 * r + 1] * scale);
    }
  }
}

// dbias[bb, hh, i, j] = sum of ds[b, h, i, j] over the broadcast dims (all b when dB == 1, else b = bb; h
// likewise), in a fixed order.
__global__ void attention_tc_dbias_kernel(const float* ds, int64_t B, int64_t H, int64_t Tq, int64_t Tk, int64_t dB,
                                          int64_t dH, bf16* dbias) {
  const int64_t n = dB * dH * Tq * Tk;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < n; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t ij = e % (Tq * Tk), bh = e / (Tq * Tk), hh = bh % dH, bb = bh / dH;
    float s = 0.f;
    for (int64_t b = (dB == 1 ? 0 : bb); b < (dB == 1 ? B : bb + 1); ++b)
      for (int64_t h = (dH == 1 ? 0 : hh); h < (dH == 1 ? H : hh + 1); ++h) s += ds[(b * H + h) * Tq * Tk + ij];
    dbias[e] = __float2bfloat16_rn(s);
  }
}

#ifndef VLP_ATTENTION_TC_HOST_SIM  // launches: the host simulation runs the kernels itself

template <int kD>
void launch_backward(const AttentionArgs& a, const bf16* out, const float* lse, const bf16* dout, bf16* dq, bf16* dk,
                     bf16* dv, float* delta, float* ds_scratch, bf16* dbias_direct, cudaStream_t stream) {
  const int64_t rows = a.B * a.H * a.Tq;
  if (rows > 0) {
    attention_tc_delta_kernel<<<unsigned((rows + tc::kWarps - 1) / tc::kWarps), kThreads, 0, stream>>>(
        out, dout, delta, rows, int(a.D));
    check_launch("attention_backward_tc delta");
  }
  if ((dk || dv) && a.B * a.H * a.Tk > 0) {
    const int n_ktiles = int((a.Tk + kKvKeys - 1) / kKvKeys);
    const size_t smem = dkv_smem_bytes<kD>();
    check(cudaFuncSetAttribute(attention_tc_dkv_kernel<kD>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)),
          "attention_backward_tc dkv smem");
    attention_tc_dkv_kernel<kD><<<unsigned(a.B * a.H * n_ktiles), kThreads, smem, stream>>>(a, lse, delta, dout, dk,
                                                                                            dv, n_ktiles);
    check_launch("attention_backward_tc dk dv");
  }
  if ((dq || ds_scratch || dbias_direct) && rows > 0) {
    const int n_qtiles = int((a.Tq + kDqRows - 1) / kDqRows);
    const size_t smem = dq_smem_bytes<kD>();
    check(cudaFuncSetAttribute(attention_tc_dq_kernel<kD>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)),
          "attention_backward_tc dq smem");
    attention_tc_dq_kernel<kD><<<unsigned(a.B * a.H * n_qtiles), kThreads, smem, stream>>>(
        a, lse, delta, dout, dq, ds_scratch, dbias_direct, n_qtiles);
    check_launch("attention_backward_tc dq");
  }
}

bool aligned4(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 3u) == 0; }
#endif  // VLP_ATTENTION_TC_HOST_SIM

}  // namespace

#ifndef VLP_ATTENTION_TC_HOST_SIM

void attention_backward_tc(const AttentionArgs& a, const void* out, const float* lse, const void* dout, void* dq,
                           void* dk, void* dv, void* dbias, int64_t dbias_B, int64_t dbias_H, cudaStream_t stream) {
  NvtxRange nvtx("vlp::cuda::attention_backward_tc");
  if (!attention_tc_supported(a))
    throw std::runtime_error("cuda attention_backward_tc: unsupported arguments (attention_tc_supported is false)");
  if (!aligned16(dout) || !aligned4(out) || !aligned4(dq) || !aligned4(dk) || !aligned4(dv))
    throw std::runtime_error("cuda attention_backward_tc: dout must be 16-byte aligned, out, dq, dk, dv 4-byte aligned");
  if (dbias && ((dbias_B != 1 && dbias_B != a.B) || (dbias_H != 1 && dbias_H != a.H)))
    throw std::runtime_error("cuda attention_backward_tc: dbias batch/head dims must be 1 or B/H");
  const int64_t rows = a.B * a.H * a.Tq;
  if (rows == 0 && a.B * a.H * a.Tk == 0) return;
  const int device = current_device();
  DeviceBuffer delta(size_t(rows > 0 ? rows : 1) * sizeof(float), device, stream);
  const bool direct = dbias && dbias_B == a.B && dbias_H == a.H;  // no broadcast dim: dS is dbias itself
  DeviceBuffer ds(dbias && !direct ? size_t(rows * a.Tk) * sizeof(float) : 1, device, stream);
  float* ds_scratch = dbias && !direct ? static_cast<float*>(ds.ptr) : nullptr;
  bf16* dbias_direct = direct ? static_cast<bf16*>(dbias) : nullptr;
  auto run = [&](auto launch) {
    launch(a, static_cast<const bf16*>(out), lse, static_cast<const bf16*>(dout), static_cast<bf16*>(dq),
           static_cast<bf16*>(dk), static_cast<bf16*>(dv), static_cast<float*>(delta.ptr), ds_scratch, dbias_direct,
           stream);
  };
  if (a.D <= 64) run(launch_backward<64>);
  else run(launch_backward<128>);
  if (ds_scratch && rows * a.Tk > 0) {
    const int64_t n = dbias_B * dbias_H * a.Tq * a.Tk;
    attention_tc_dbias_kernel<<<grid_for(n, 256), 256, 0, stream>>>(ds_scratch, a.B, a.H, a.Tq, a.Tk, dbias_B,
                                                                    dbias_H, static_cast<bf16*>(dbias));
    check_launch("attention_backward_tc dbias");
  }
}

#endif  // VLP_ATTENTION_TC_HOST_SIM

}  // namespace vlp::cuda
