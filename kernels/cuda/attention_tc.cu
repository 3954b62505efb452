// Tensor-core flash attention forward for BF16 (FlashAttention-2 style), see attention_tc.h; the backward
// is attention_tc_bwd.cu. One CTA of 4 warps per (batch, head, tile of 64 query rows), each warp owning 16
// rows. The CTA walks the keys in tiles of 64, staged in shared memory by cp.async with double buffering
// (the next tile's copy overlaps this tile's math). Per tile and warp: S = Q K^T with mma.sync (Q's
// fragments stay in registers), then scale, bias, key padding, causal mask and bounds applied to the
// accumulators in registers, the online softmax in fp32 (running max and sum per row, the output
// rescaled), dropout from the Philox stream at the CPU's element indices, and O += P V with P taken
// straight from the score registers as the A operand (bf16). Keys past the last one a causal tile can
// see are never loaded. The output is divided by the row sum at the end; lse = max + log(sum) per row
// (-inf and a zero output for a row with every key masked).
// Compiled for head dims 64 and 128 (kD); a smaller D that is a multiple of 8 runs in the next kernel up
// with the extra columns zero in shared memory (16-column steps past D are skipped).
#include <algorithm>
#include <stdexcept>
#include <string>

#include "kernels/cuda/attention_tc.cuh"
#include "kernels/cuda/attention_tc.h"
#include "kernels/cuda/nvtx.h"
#include "kernels/cuda/runtime.h"

namespace vlp::cuda {

namespace {

using tc::bf16;
using tc::kThreads;

constexpr int kFwdRows = 64;  // query rows per CTA
constexpr int kFwdKeys = 64;  // keys per shared tile

template <int kD>
constexpr size_t forward_smem_bytes() {
  return size_t(kFwdRows + 4 * kFwdKeys) * tc::ld_of<kD>() * sizeof(bf16);  // Q, K[2], V[2]
}

template <int kD>
__global__ void __launch_bounds__(kThreads) attention_tc_forward_kernel(AttentionArgs a, bf16* out, float* lse,
                                                                        int n_qtiles) {
  constexpr int kLd = tc::ld_of<kD>(), kNt = kFwdKeys / 8, kDt = kD / 8;
  static_assert(kD % 16 == 0 && kD <= 128, "head dim tile: a multiple of 16 up to 128");
  static_assert(kFwdRows == 16 * tc::kWarps, "each warp owns 16 query rows");
  static_assert(kFwdKeys % 16 == 0, "key tiles in 16-key mma steps (and pairs of 8-key B fragments)");
  static_assert(kDt % 2 == 0, "P V loads two 8-column B fragments at a time");
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16* sQ = reinterpret_cast<bf16*>(smem_raw);  // [kFwdRows][kLd]
  bf16* sK = sQ + kFwdRows * kLd;                 // [2][kFwdKeys][kLd]
  bf16* sV = sK + 2 * kFwdKeys * kLd;             // [2][kFwdKeys][kLd]

  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, t = lane & 3;
  const int64_t bh = blockIdx.x / n_qtiles;
  const int q0 = (n_qtiles - 1 - int(blockIdx.x % n_qtiles)) * kFwdRows;  // last (heaviest causal) tiles first
  const int Tq = int(a.Tq), Tk = int(a.Tk), D = int(a.D);
  const tc::Head hd = tc::head_of(a, bh);
  int kv_end = Tk;  // keys at or past kv_end are masked for every row of this tile
  if (a.causal) kv_end = max(0, min(Tk, min(q0 + kFwdRows, Tq) + (Tk - Tq)));
  const int n_tiles = (kv_end + kFwdKeys - 1) / kFwdKeys;

  tc::zero_shared(sQ, (kFwdRows + 4 * kFwdKeys) * kLd);
  __syncthreads();  // the zeros land before any cp.async writes the same rows
  tc::load_tile<kFwdRows, kD>(sQ, hd.q, a.q_strides[2], q0, Tq, D);
  if (n_tiles > 0) {
    tc::load_tile<kFwdKeys, kD>(sK, hd.k, a.k_strides[2], 0, Tk, D);
    tc::load_tile<kFwdKeys, kD>(sV, hd.v, a.v_strides[2], 0, Tk, D);
  }
  tc::cp_async_commit();

  float o[kDt][4];
VLP_UNROLL
  for (int n = 0; n < kDt; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};  // rows row0, row0 + 8; l: this lane's columns only
  uint32_t qf[kD / 16][4];
  const int row0 = q0 + warp * 16 + (lane >> 2);

  for (int it = 0; it < n_tiles; ++it) {
    const int buf = it & 1;
    if (it + 1 < n_tiles) {  // the other buffer was last read in iteration it - 1, before its closing barrier
      const int j1 = (it + 1) * kFwdKeys;
      tc::load_tile<kFwdKeys, kD>(sK + (buf ^ 1) * kFwdKeys * kLd, hd.k, a.k_strides[2], j1, Tk, D);
      tc::load_tile<kFwdKeys, kD>(sV + (buf ^ 1) * kFwdKeys * kLd, hd.v, a.v_strides[2], j1, Tk, D);
      tc::cp_async_commit();
      tc::cp_async_wait<1>();
    } else {
      tc::cp_async_wait<0>();
    }
    __syncthreads();
    if (it == 0) {
VLP_UNROLL
      for (int kk = 0; kk < kD / 16; ++kk) tc::frag_a(qf[kk], sQ, kLd, warp * 16, kk * 16, lane);
    }
    const bf16* k_s = sK + buf * kFwdKeys * kLd;
    const bf16* v_s = sV + buf * kFwdKeys * kLd;
    const int j0 = it * kFwdKeys;

    // S = Q K^T for this warp's 16 rows and the tile's 64 keys.
    float s[kNt][4];
VLP_UNROLL
    for (int n = 0; n < kNt; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
VLP_UNROLL
    for (int kk = 0; kk < kD / 16; ++kk) {
      if (kk * 16 >= D) break;
VLP_UNROLL
      for (int n = 0; n < kNt; n += 2) {
        uint32_t b0[2], b1[2];
        tc::frag_b_nk_x2(b0, b1, k_s, kLd, n * 8, kk * 16, lane);
        tc::mma_bf16(s[n], qf[kk], b0);
        tc::mma_bf16(s[n + 1], qf[kk], b1);
      }
    }

    // Scores, masks and the online softmax. Element e of tile n: row row0 + 8 (e / 2), key j0 + 8n + 2t + e % 2.
    float mx[2] = {-INFINITY, -INFINITY};
VLP_UNROLL
    for (int n = 0; n < kNt; ++n)
VLP_UNROLL
      for (int e = 0; e < 4; ++e) {
        s[n][e] = tc::masked_score(a, hd, s[n][e], row0 + 8 * (e >> 1), j0 + n * 8 + 2 * t + (e & 1));
        mx[e >> 1] = fmaxf(mx[e >> 1], s[n][e]);
      }
    float base[2];
VLP_UNROLL
    for (int r = 0; r < 2; ++r) {  // the 4 lanes of a quad hold one row between them
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
      const float m_new = fmaxf(m[r], mx[r]);
      base[r] = m_new == -INFINITY ? 0.f : m_new;  // a row with nothing visible yet: every p is exp(-inf) = 0
      const float alpha = exp2f((m[r] - base[r]) * tc::kLog2e);  // 0 while m was -inf
      m[r] = m_new;
      l[r] *= alpha;
VLP_UNROLL
      for (int n = 0; n < kDt; ++n) o[n][2 * r] *= alpha, o[n][2 * r + 1] *= alpha;
    }
VLP_UNROLL
    for (int n = 0; n < kNt; ++n)
VLP_UNROLL
      for (int e = 0; e < 4; ++e) {
        const float p = exp2f((s[n][e] - base[e >> 1]) * tc::kLog2e);
        l[e >> 1] += p;
        s[n][e] = p;
      }
    if (a.dropout_p > 0.0) {  // the sum above is before dropout, as in the CPU's softmax
VLP_UNROLL
      for (int n = 0; n < kNt; ++n)
VLP_UNROLL
        for (int r = 0; r < 2; ++r) {
          const int i = row0 + 8 * r, j = j0 + n * 8 + 2 * t;
          if (i < Tq && j < Tk) {
            float f0, f1;
            tc::dropout_factor2(a, bh, i, j, f0, f1);
            s[n][2 * r] *= f0, s[n][2 * r + 1] *= f1;
          }
        }
    }

    // O += P V: P from the score registers (keys as k), V's B fragments by ldmatrix.trans.
VLP_UNROLL
    for (int kk = 0; kk < kFwdKeys / 16; ++kk) {
      uint32_t pa[4];
      tc::pack_a_from_c(pa, s[2 * kk], s[2 * kk + 1]);
VLP_UNROLL
      for (int n = 0; n < kDt; n += 2) {
        if (n * 8 >= D) break;
        uint32_t b0[2], b1[2];
        tc::frag_b_kn_x2(b0, b1, v_s, kLd, kk * 16, n * 8, lane);
        tc::mma_bf16(o[n], pa, b0);
        tc::mma_bf16(o[n + 1], pa, b1);
      }
    }
    __syncthreads();  // this buffer is refilled by the copy issued in the next iteration
  }
  tc::cp_async_wait<0>();  // nothing may be in flight at exit (n_tiles == 0 leaves Q's copy pending)

VLP_UNROLL
  for (int r = 0; r < 2; ++r) {
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
    const int i = row0 + 8 * r;
    if (i >= Tq) continue;
    const float inv = l[r] > 0.f ? 1.f / l[r] : 0.f;
    bf16* orow = out + (bh * Tq + i) * int64_t(D);
VLP_UNROLL
    for (int n = 0; n < kDt; ++n) {
      const int col = n * 8 + 2 * t;
      if (col < D) *reinterpret_cast<uint32_t*>(orow + col) = tc::pack_bf16(o[n][2 * r] * inv, o[n][2 * r + 1] * inv);
    }
    if (t == 0) lse[bh * Tq + i] = l[r] > 0.f ? m[r] + logf(l[r]) : -INFINITY;
  }
}

bool stride_ok(int64_t stride, int64_t extent) { return extent <= 1 || stride % 8 == 0; }

#ifndef VLP_ATTENTION_TC_HOST_SIM  // launches: the host simulation runs the kernels itself
template <int kD>
void launch_forward(const AttentionArgs& a, void* out, float* lse, cudaStream_t stream) {
  const int n_qtiles = int((a.Tq + kFwdRows - 1) / kFwdRows);
  const size_t smem = forward_smem_bytes<kD>();
  check(cudaFuncSetAttribute(attention_tc_forward_kernel<kD>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)),
        "attention_forward_tc smem");
  attention_tc_forward_kernel<kD><<<unsigned(a.B * a.H * n_qtiles), kThreads, smem, stream>>>(
      a, static_cast<bf16*>(out), lse, n_qtiles);
  check_launch("attention_forward_tc");
}
#endif

}  // namespace

bool attention_tc_supported(const AttentionArgs& a) {
  if (a.dtype != EwDType::BF16) return false;
  if (a.D != a.Dv || a.D <= 0 || a.D > 128 || a.D % 8 != 0) return false;
  if (a.B < 0 || a.H < 0 || a.Tq < 0 || a.Tk < 0 || !(a.dropout_p >= 0.0 && a.dropout_p < 1.0)) return false;
  if (!aligned16(a.q) || !aligned16(a.k) || !aligned16(a.v)) return false;
  const int64_t* st[3] = {a.q_strides, a.k_strides, a.v_strides};
  const int64_t rows[3] = {a.Tq, a.Tk, a.Tk};
  for (int x = 0; x < 3; ++x)
    if (!stride_ok(st[x][0], a.B) || !stride_ok(st[x][1], a.H) || !stride_ok(st[x][2], rows[x])) return false;
  // Grids are one-dimensional (tiles of 64 rows, or 32 for the backward's query passes) and indices int.
  const int64_t limit = int64_t(0x7fffffff);
  if (a.Tq >= limit / 2 || a.Tk >= limit / 2 || a.B * a.H * ((std::max(a.Tq, a.Tk) + 31) / 32) >= limit) return false;
  return true;
}

#ifndef VLP_ATTENTION_TC_HOST_SIM
void attention_forward_tc(const AttentionArgs& a, void* out, float* lse, cudaStream_t stream) {
  NvtxRange nvtx("vlp::cuda::attention_forward_tc");
  if (!attention_tc_supported(a))
    throw std::runtime_error("cuda attention_forward_tc: unsupported arguments (attention_tc_supported is false)");
  if ((reinterpret_cast<uintptr_t>(out) & 3u) != 0)
    throw std::runtime_error("cuda attention_forward_tc: out must be 4-byte aligned");
  if (a.B * a.H * a.Tq == 0) return;
  if (a.D <= 64) launch_forward<64>(a, out, lse, stream);
  else launch_forward<128>(a, out, lse, stream);
}

#endif  // VLP_ATTENTION_TC_HOST_SIM

}  // namespace vlp::cuda
