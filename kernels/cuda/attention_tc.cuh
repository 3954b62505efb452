// Building blocks shared by the tensor-core attention kernels (attention_tc.cu, attention_tc_bwd.cu):
// warp-level mma.sync m16n8k16 (bf16 x bf16 -> fp32) with its fragments read from shared memory, 16-byte
// cp.async tile copies with zero fill, the score of one (query, key) element with every mask and the bias
// applied, and the dropout factor at the CPU's Philox element index. Device code only.
//
// Fragment layouts (PTX ISA, "Matrix Fragments for mma.m16n8k16 with floating point type"), with
// g = lane / 4 and t = lane % 4:
//   A (16 x 16, row-major): reg0 = (row g,     cols 2t, 2t+1)   reg1 = (row g + 8, cols 2t, 2t+1)
//                           reg2 = (row g,     cols 2t+8, 2t+9) reg3 = (row g + 8, cols 2t+8, 2t+9)
//   B (16 x 8, k x n):      reg0 = (rows k 2t, 2t+1, col n g)   reg1 = (rows k 2t+8, 2t+9, col n g)
//   C (16 x 8, fp32):       c0, c1 = (row g, cols 2t, 2t+1)     c2, c3 = (row g + 8, cols 2t, 2t+1)
// The lower-indexed element of a pair sits in the low 16 bits. Two C tiles side by side (n 0..7, 8..15)
// hold exactly the elements of one A fragment (k 0..15), which is how a score tile becomes the A operand
// of the next product without going through shared memory (pack_a_from_c).
#pragma once
#include <cuda_bf16.h>

#include <cmath>
#include <cstdint>

#include "kernels/cuda/attention.h"
#include "kernels/cuda/common.cuh"
#include "kernels/philox.h"

// Full unrolling of the fragment loops (their arrays must stay in registers); nothing in the host simulation.
#ifdef VLP_ATTENTION_TC_HOST_SIM
#define VLP_UNROLL
#else
#define VLP_UNROLL _Pragma("unroll")
#endif

namespace vlp::cuda::tc {

using bf16 = __nv_bfloat16;

#ifdef VLP_ATTENTION_TC_HOST_SIM
// Compiled as host C++ by tests/cuda/test_cuda_attention_tc_sim.cpp, which runs these kernels on the CPU
// (one coroutine per thread) and defines these emulations of the warp-collective instructions from the
// PTX ISA's layout tables, independently of the helpers below.
void sim_mma_bf16(float c[4], const uint32_t a[4], const uint32_t b[2]);
void sim_ldmatrix_x4(uint32_t r[4], const void* row_address);
void sim_ldmatrix_x4_trans(uint32_t r[4], const void* row_address);
void sim_cp_async16(void* smem, const void* gmem, bool valid);
void sim_cp_async_commit();
void sim_cp_async_wait(int pending);
#endif

constexpr int kWarps = 4;
constexpr int kThreads = 32 * kWarps;
constexpr int kPad = 8;  // bf16 elements of padding per shared row: conflict-free fragment loads, 16-byte rows
constexpr float kLog2e = 1.4426950408889634f;

// Shared-memory row length of a tile with head dim kD (a multiple of 8 elements: 16-byte aligned rows).
template <int kD>
__host__ __device__ constexpr int ld_of() {
  return kD + kPad;
}

// c += a b for one 16 x 8 x 16 tile.
__device__ __forceinline__ void mma_bf16(float c[4], const uint32_t a[4], const uint32_t b[2]) {
#ifdef VLP_ATTENTION_TC_HOST_SIM
  sim_mma_bf16(c, a, b);
#else
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#endif
}

__device__ __forceinline__ uint32_t lds32(const bf16* p) { return *reinterpret_cast<const uint32_t*>(p); }

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);  // .x (lo) is the low half
  return *reinterpret_cast<const uint32_t*>(&v);
}

__device__ __forceinline__ uint32_t pack_bf16(bf16 lo, bf16 hi) {
  return uint32_t(__bfloat16_as_ushort(lo)) | (uint32_t(__bfloat16_as_ushort(hi)) << 16);
}

// Four 8 x 8 b16 matrices from shared memory, lane 8m + r giving the address of row r of matrix m (16-byte
// aligned): register m receives, in lane L, elements (L / 4, 2 (L % 4)) and (L / 4, 2 (L % 4) + 1) of matrix
// m, or with .trans elements (2 (L % 4), L / 4) and (2 (L % 4) + 1, L / 4).
__device__ __forceinline__ void ldmatrix_x4(uint32_t r[4], const bf16* row_address) {
#ifdef VLP_ATTENTION_TC_HOST_SIM
  sim_ldmatrix_x4(r, row_address);
#else
  const uint32_t addr = uint32_t(__cvta_generic_to_shared(row_address));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr)
               : "memory");
#endif
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t r[4], const bf16* row_address) {
#ifdef VLP_ATTENTION_TC_HOST_SIM
  sim_ldmatrix_x4_trans(r, row_address);
#else
  const uint32_t addr = uint32_t(__cvta_generic_to_shared(row_address));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr)
               : "memory");
#endif
}

// A fragment of rows r0..r0+15, cols k0..k0+15 of a row-major shared matrix with row length ld: matrices
// (rows r0.., cols k0..), (r0 + 8.., k0..), (r0.., k0 + 8..), (r0 + 8.., k0 + 8..) are registers 0-3.
// -DVLP_ATTENTION_TC_NO_LDMATRIX reads the same elements with plain loads here and below (a debugging
// fallback, also exercised by the host simulation).
__device__ __forceinline__ void frag_a(uint32_t a[4], const bf16* s, int ld, int r0, int k0, int lane) {
#ifndef VLP_ATTENTION_TC_NO_LDMATRIX
  ldmatrix_x4(a, s + (r0 + (lane & 7) + ((lane >> 3) & 1) * 8) * ld + k0 + (lane >> 4) * 8);
#else
  const bf16* p = s + (r0 + (lane >> 2)) * ld + k0 + 2 * (lane & 3);
  a[0] = lds32(p);
  a[1] = lds32(p + 8 * ld);
  a[2] = lds32(p + 8);
  a[3] = lds32(p + 8 * ld + 8);
#endif
}

// The B fragments of n-tiles n0 and n0 + 8 (k0..k0+15) of B[k][n] = s[n][k]: the operand stored with n as
// its rows (K in Q K^T, V in dO V^T, Q and dO in the transposed products), pairs along k contiguous.
// Matrices (rows n0.., cols k0..), (n0.., k0 + 8..) are b0; (n0 + 8.., k0..), (n0 + 8.., k0 + 8..) are b1.
__device__ __forceinline__ void frag_b_nk_x2(uint32_t b0[2], uint32_t b1[2], const bf16* s, int ld, int n0, int k0,
                                             int lane) {
#ifndef VLP_ATTENTION_TC_NO_LDMATRIX
  uint32_t r[4];
  ldmatrix_x4(r, s + (n0 + (lane & 7) + (lane >> 4) * 8) * ld + k0 + ((lane >> 3) & 1) * 8);
  b0[0] = r[0], b0[1] = r[1], b1[0] = r[2], b1[1] = r[3];
#else
  const bf16* p = s + (n0 + (lane >> 2)) * ld + k0 + 2 * (lane & 3);
  b0[0] = lds32(p);
  b0[1] = lds32(p + 8);
  b1[0] = lds32(p + 8 * ld);
  b1[1] = lds32(p + 8 * ld + 8);
#endif
}

// The B fragments of n-tiles n0 and n0 + 8 (k0..k0+15) of B[k][n] = s[k][n]: the operand stored with k as
// its rows (V in P V, K in dS K, dO and Q in the dK/dV products), by ldmatrix .trans: matrices (rows k0..,
// cols n0..), (k0 + 8.., n0..) are b0; (k0.., n0 + 8..), (k0 + 8.., n0 + 8..) are b1.
__device__ __forceinline__ void frag_b_kn_x2(uint32_t b0[2], uint32_t b1[2], const bf16* s, int ld, int k0, int n0,
                                             int lane) {
#ifndef VLP_ATTENTION_TC_NO_LDMATRIX
  uint32_t r[4];
  ldmatrix_x4_trans(r, s + (k0 + (lane & 15)) * ld + n0 + (lane >> 4) * 8);
  b0[0] = r[0], b0[1] = r[1], b1[0] = r[2], b1[1] = r[3];
#else
  const bf16* p = s + (k0 + 2 * (lane & 3)) * ld + n0 + (lane >> 2);
  b0[0] = pack_bf16(p[0], p[ld]);
  b0[1] = pack_bf16(p[8 * ld], p[9 * ld]);
  b1[0] = pack_bf16(p[8], p[ld + 8]);
  b1[1] = pack_bf16(p[8 * ld + 8], p[9 * ld + 8]);
#endif
}

// The A fragment (k = 16 columns) made of C tiles c_lo (columns 0..7) and c_hi (8..15), rounded to bf16.
__device__ __forceinline__ void pack_a_from_c(uint32_t a[4], const float c_lo[4], const float c_hi[4]) {
  a[0] = pack_bf16(c_lo[0], c_lo[1]);
  a[1] = pack_bf16(c_lo[2], c_lo[3]);
  a[2] = pack_bf16(c_hi[0], c_hi[1]);
  a[3] = pack_bf16(c_hi[2], c_hi[3]);
}

// 16-byte asynchronous copy global -> shared; with valid false nothing is read and the 16 bytes are zeroed.
#ifdef VLP_ATTENTION_TC_HOST_SIM
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, bool valid) { sim_cp_async16(smem, gmem, valid); }
__device__ __forceinline__ void cp_async_commit() { sim_cp_async_commit(); }
template <int kPending>
__device__ __forceinline__ void cp_async_wait() {
  sim_cp_async_wait(kPending);
}
#else
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, bool valid) {
  const uint32_t s = uint32_t(__cvta_generic_to_shared(smem));
  const int n = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(n) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int kPending>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending) : "memory");
}
#endif

// Zeroes n bf16 elements (a multiple of 8) of 16-byte aligned shared memory.
__device__ __forceinline__ void zero_shared(bf16* s, int n) {
  for (int i = threadIdx.x; i < n / 8; i += kThreads) reinterpret_cast<uint4*>(s)[i] = make_uint4(0, 0, 0, 0);
}

// Rows row0 .. row0 + kRows - 1 of a [T, D] bf16 matrix (row stride `stride` elements, 16-byte aligned rows)
// into s[kRows][ld_of<kD>()], asynchronously: rows at or past T are zero-filled; columns D .. kD are not
// touched (zeroed once when the kernel starts, they stay zero).
template <int kRows, int kD>
__device__ __forceinline__ void load_tile(bf16* s, const bf16* g, int64_t stride, int row0, int T, int D) {
  constexpr int kChunks = kD / 8;
  for (int c = threadIdx.x; c < kRows * kChunks; c += kThreads) {
    const int r = c / kChunks, col = (c % kChunks) * 8;
    if (col >= D) continue;
    const bool valid = row0 + r < T;
    const bf16* src = valid ? g + int64_t(row0 + r) * stride + col : g;  // g: row 0, always readable
    cp_async16(s + r * ld_of<kD>() + col, src, valid);
  }
}

// One head's operands.
struct Head {
  const bf16 *q, *k, *v, *bias;
  const bool* keep;
  int64_t bh;  // b * H + h
};

__device__ __forceinline__ Head head_of(const AttentionArgs& a, int64_t bh) {
  const int64_t b = bh / a.H, h = bh % a.H;
  Head hd;
  hd.q = static_cast<const bf16*>(a.q) + b * a.q_strides[0] + h * a.q_strides[1];
  hd.k = static_cast<const bf16*>(a.k) + b * a.k_strides[0] + h * a.k_strides[1];
  hd.v = static_cast<const bf16*>(a.v) + b * a.v_strides[0] + h * a.v_strides[1];
  hd.bias = a.bias ? static_cast<const bf16*>(a.bias) + b * a.bias_strides[0] + h * a.bias_strides[1] : nullptr;
  hd.keep = a.key_keep ? a.key_keep + b * a.Tk : nullptr;
  hd.bh = bh;
  return hd;
}

// scale * qk + bias for query i, key j, or -inf when the element is masked or outside [Tq, Tk].
__device__ __forceinline__ float masked_score(const AttentionArgs& a, const Head& hd, float qk, int i, int j) {
  if (i >= a.Tq || j >= a.Tk) return -INFINITY;
  if (a.causal && int64_t(j) > int64_t(i) + (a.Tk - a.Tq)) return -INFINITY;
  if (hd.keep && !hd.keep[j]) return -INFINITY;
  float s = qk * float(a.scale);
  if (hd.bias) s += __bfloat162float(hd.bias[int64_t(i) * a.bias_strides[2] + int64_t(j) * a.bias_strides[3]]);
  return s;
}

__device__ __forceinline__ uint32_t philox_word(const Philox4& r, uint32_t w) {
  return w == 0 ? r.x[0] : w == 1 ? r.x[1] : w == 2 ? r.x[2] : r.x[3];  // no dynamic index: stays in registers
}

// keep / (1 - p) for element (bh * Tq + i) * Tk + j of the dropout stream (the rows kernel's test and scale).
__device__ __forceinline__ float dropout_factor(const AttentionArgs& a, int64_t bh, int i, int j) {
  const uint64_t e = uint64_t((bh * a.Tq + i) * a.Tk + j);
  const Philox4 r = philox_block(a.seed, a.offset, e / 4);
  return philox_uniform(philox_word(r, uint32_t(e & 3))) < float(a.dropout_p) ? 0.f : float(1.0 / (1.0 - a.dropout_p));
}

// The factors of elements (i, j) and (i, j + 1): one Philox block unless the pair straddles two.
__device__ __forceinline__ void dropout_factor2(const AttentionArgs& a, int64_t bh, int i, int j, float& f0,
                                                float& f1) {
  const uint64_t e = uint64_t((bh * a.Tq + i) * a.Tk + j);
  const float p = float(a.dropout_p), keep_scale = float(1.0 / (1.0 - a.dropout_p));
  const Philox4 r = philox_block(a.seed, a.offset, e / 4);
  const uint32_t w0 = philox_word(r, uint32_t(e & 3));
  uint32_t w1;
  if ((e & 3) != 3) {
    w1 = philox_word(r, uint32_t((e + 1) & 3));
  } else {
    w1 = philox_block(a.seed, a.offset, e / 4 + 1).x[0];
  }
  f0 = philox_uniform(w0) < p ? 0.f : keep_scale;
  f1 = philox_uniform(w1) < p ? 0.f : keep_scale;
}

}  // namespace vlp::cuda::tc
