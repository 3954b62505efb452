// Scaled-dot-product attention, one (batch, head) at a time: two GEMMs per head in the forward (scores,
// then probabilities times v) and up to five in the backward, with the bias, masks, softmax and dropout
// fused into row loops between them. Heads run one after another and OpenBLAS threads each product;
// the row loops stay serial: OpenMP regions between BLAS calls (or heads in parallel, each calling BLAS)
// fight OpenBLAS's own pthread workers for the cores, which measured several times slower on a 2-core
// machine. Only a [Tq, Tk] scratch buffer (two in the backward) per call is ever allocated, never the
// probabilities of every head.
//
// Backward per head (Pd = dropped probabilities, keep/(1-p) the dropout factor):
//   dV = Pd^T dO,  dPd = dO V^T,  dP = dPd * keep/(1-p),  D_i = rowsum(dO * O) = rowsum(P * dP),
//   dS = P * (dP - D_i),  dQ = scale dS K,  dK = scale dS^T Q,  dbias += dS (summed over broadcast dims).
#include "kernels/cpu/attention.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "kernels/cpu/gemm.h"
#include "kernels/philox.h"

namespace vlp::cpu {

namespace {

// Leading dimension for BLAS of a [rows, cols] matrix whose rows are row_stride apart (a single row may
// have any stride).
int64_t leading_dim(int64_t rows, int64_t cols, int64_t row_stride) {
  return rows == 1 ? std::max<int64_t>(cols, 1) : row_stride;
}

template <class T>
struct HeadView {
  const T *q, *k, *v;
  int64_t ldq, ldk, ldv;
};

template <class T>
HeadView<T> head_view(const AttentionArgs<T>& a, int64_t b, int64_t h) {
  HeadView<T> hv;
  hv.q = a.q + b * a.q_strides[0] + h * a.q_strides[1];
  hv.k = a.k + b * a.k_strides[0] + h * a.k_strides[1];
  hv.v = a.v ? a.v + b * a.v_strides[0] + h * a.v_strides[1] : nullptr;
  hv.ldq = leading_dim(a.Tq, a.D, a.q_strides[2]);
  hv.ldk = leading_dim(a.Tk, a.D, a.k_strides[2]);
  hv.ldv = leading_dim(a.Tk, a.Dv, a.v_strides[2]);
  return hv;
}

// S [Tq, Tk] = scale * q k^T + bias, with masked positions set to -inf.
template <class T>
void scores(const AttentionArgs<T>& a, const HeadView<T>& hv, int64_t b, int64_t h, T* S) {
  const int64_t Tq = a.Tq, Tk = a.Tk;
  gemm<T>(false, true, Tq, Tk, a.D, a.scale, hv.q, hv.ldq, hv.k, hv.ldk, 0.0, S, Tk);
  const T minus_inf = -std::numeric_limits<T>::infinity();
  const bool* keep = a.key_keep ? a.key_keep + b * Tk : nullptr;
  const T* bias = a.bias ? a.bias + b * a.bias_strides[0] + h * a.bias_strides[1] : nullptr;
  const int64_t shift = Tk - Tq;
  for (int64_t i = 0; i < Tq; ++i) {
    T* row = S + i * Tk;
    if (bias) {
      const T* brow = bias + i * a.bias_strides[2];
      const int64_t bs = a.bias_strides[3];
      for (int64_t j = 0; j < Tk; ++j) row[j] += brow[j * bs];
    }
    if (keep)
      for (int64_t j = 0; j < Tk; ++j)
        if (!keep[j]) row[j] = minus_inf;
    if (a.causal)
      for (int64_t j = std::clamp<int64_t>(i + shift + 1, 0, Tk); j < Tk; ++j) row[j] = minus_inf;
  }
}

// row[j] = 0 where element first + j of the dropout stream is dropped, row[j] / (1 - p) where kept:
// the same test and scaling as kernels/cpu/random.cpp's dropout.
template <class T>
void dropout_row(T* row, int64_t n, uint64_t first, double p, uint64_t seed, uint64_t offset) {
  const float threshold = float(p);
  const T keep_scale = T(1.0 / (1.0 - p));
  uint64_t block = std::numeric_limits<uint64_t>::max();
  Philox4 r{};
  for (int64_t j = 0; j < n; ++j) {
    const uint64_t e = first + uint64_t(j);
    if (e / 4 != block) block = e / 4, r = philox_block(seed, offset, block);
    row[j] = philox_uniform(r.x[e % 4]) < threshold ? T(0) : row[j] * keep_scale;
  }
}

// Softmax of one row in place; returns its log-sum-exp. A row with no finite score becomes zeros and
// returns -inf (a query with every key masked attends to nothing).
template <class T>
T softmax_row(T* row, int64_t n) {
  T m = -std::numeric_limits<T>::infinity();
  for (int64_t j = 0; j < n; ++j) m = std::max(m, row[j]);
  if (m == -std::numeric_limits<T>::infinity()) {
    std::fill(row, row + n, T(0));
    return m;
  }
  double sum = 0.0;
  for (int64_t j = 0; j < n; ++j) {
    row[j] = std::exp(row[j] - m);
    sum += double(row[j]);
  }
  const T inv = T(1.0 / sum);
  for (int64_t j = 0; j < n; ++j) row[j] *= inv;
  return T(double(m) + std::log(sum));
}

}  // namespace

template <class T>
void attention_forward(const AttentionArgs<T>& a, T* out, T* lse) {
  const int64_t Tq = a.Tq, Tk = a.Tk;
  std::vector<T> S(size_t(Tq * Tk));
  for (int64_t b = 0; b < a.B; ++b) {
    for (int64_t h = 0; h < a.H; ++h) {
      const int64_t bh = b * a.H + h;
      HeadView<T> hv = head_view(a, b, h);
      scores(a, hv, b, h, S.data());
      T* lse_bh = lse + bh * Tq;
      for (int64_t i = 0; i < Tq; ++i) {
        T* row = S.data() + i * Tk;
        lse_bh[i] = softmax_row(row, Tk);
        if (a.dropout_p > 0.0 && std::isfinite(double(lse_bh[i])))
          dropout_row(row, Tk, uint64_t((bh * Tq + i) * Tk), a.dropout_p, a.seed, a.offset);
      }
      gemm<T>(false, false, Tq, a.Dv, Tk, 1.0, S.data(), Tk, hv.v, hv.ldv, 0.0, out + bh * Tq * a.Dv, a.Dv);
    }
  }
}

template <class T>
void attention_backward(const AttentionArgs<T>& a, const T* out, const T* lse, const T* dout, T* dq, T* dk,
                        T* dv, T* dbias, const int64_t* dbias_strides) {
  const int64_t Tq = a.Tq, Tk = a.Tk, Dv = a.Dv;
  const bool need_ds = dq || dk || dbias;
  const bool dropout = a.dropout_p > 0.0;
  std::vector<T> P(size_t(Tq * Tk)), W(size_t(Tq * Tk));  // P, then dS; W: Pd, then dPd and dP
  for (int64_t b = 0; b < a.B; ++b) {
    for (int64_t h = 0; h < a.H; ++h) {
      const int64_t bh = b * a.H + h;
      HeadView<T> hv = head_view(a, b, h);
      const T* lse_bh = lse + bh * Tq;
      const T* do_bh = dout + bh * Tq * Dv;
      const T* o_bh = out ? out + bh * Tq * Dv : nullptr;
      scores(a, hv, b, h, P.data());
      for (int64_t i = 0; i < Tq; ++i) {  // P = exp(S - lse): the forward's probabilities, recomputed
        T* row = P.data() + i * Tk;
        const T l = lse_bh[i];
        if (!std::isfinite(double(l))) std::fill(row, row + Tk, T(0));
        else
          for (int64_t j = 0; j < Tk; ++j) row[j] = std::exp(row[j] - l);
      }
      if (dv) {
        const T* pd = P.data();
        if (dropout) {
          std::copy(P.begin(), P.end(), W.begin());
          for (int64_t i = 0; i < Tq; ++i)
            dropout_row(W.data() + i * Tk, Tk, uint64_t((bh * Tq + i) * Tk), a.dropout_p, a.seed, a.offset);
          pd = W.data();
        }
        gemm<T>(true, false, Tk, Dv, Tq, 1.0, pd, Tk, do_bh, Dv, 0.0, dv + bh * Tk * Dv, Dv);
      }
      if (!need_ds) continue;
      gemm<T>(false, true, Tq, Tk, Dv, 1.0, do_bh, Dv, hv.v, hv.ldv, 0.0, W.data(), Tk);  // dPd
      for (int64_t i = 0; i < Tq; ++i) {
        T* dp = W.data() + i * Tk;
        if (dropout) dropout_row(dp, Tk, uint64_t((bh * Tq + i) * Tk), a.dropout_p, a.seed, a.offset);
        double di = 0.0;
        for (int64_t c = 0; c < Dv; ++c) di += double(do_bh[i * Dv + c]) * double(o_bh[i * Dv + c]);
        T* row = P.data() + i * Tk;
        for (int64_t j = 0; j < Tk; ++j) row[j] = row[j] * (dp[j] - T(di));  // dS
      }
      if (dq) gemm<T>(false, false, Tq, a.D, Tk, a.scale, P.data(), Tk, hv.k, hv.ldk, 0.0, dq + bh * Tq * a.D, a.D);
      if (dk) gemm<T>(true, false, Tk, a.D, Tq, a.scale, P.data(), Tk, hv.q, hv.ldq, 0.0, dk + bh * Tk * a.D, a.D);
      if (dbias) {
        T* db = dbias + b * dbias_strides[0] + h * dbias_strides[1];
        const int64_t s2 = dbias_strides[2], s3 = dbias_strides[3];
        for (int64_t i = 0; i < Tq; ++i)
          for (int64_t j = 0; j < Tk; ++j) db[i * s2 + j * s3] += P[size_t(i * Tk + j)];
      }
    }
  }
}

template void attention_forward<float>(const AttentionArgs<float>&, float*, float*);
template void attention_forward<double>(const AttentionArgs<double>&, double*, double*);
template void attention_backward<float>(const AttentionArgs<float>&, const float*, const float*, const float*, float*,
                                        float*, float*, float*, const int64_t*);
template void attention_backward<double>(const AttentionArgs<double>&, const double*, const double*, const double*,
                                         double*, double*, double*, double*, const int64_t*);

}  // namespace vlp::cpu
