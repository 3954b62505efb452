// The tensor-core attention kernels (kernels/cuda/attention_tc*.cu) run on the CPU, without a GPU: the
// kernel source is compiled here as host C++ (VLP_ATTENTION_TC_HOST_SIM) and every CUDA thread of a block
// becomes a coroutine (ucontext) of one OS thread, switched at __syncthreads and at the warp-collective
// instructions, which are emulated from the PTX ISA's layout tables:
//   mma.m16n8k16 bf16: A element a_i (i = 0..7, two per register, low half first) at row g (i in 0-1, 4-5)
//     or g + 8, col 2t + i % 2 (+ 8 for i >= 4); B element b_i at row 2t + i % 2 (+ 8 for i >= 2), col g;
//     C element c_i at row g (+ 8 for i >= 2), col 2t + i % 2; g = lane / 4, t = lane % 4.
//   ldmatrix .x4: lane 8m + r gives the address of row r of matrix m; register m of lane L holds elements
//     (L / 4, 2 (L % 4)) and (L / 4, 2 (L % 4) + 1) of matrix m, with .trans (2 (L % 4), L / 4) and
//     (2 (L % 4) + 1, L / 4).
//   cp.async: the destination turns to NaN when the copy is issued and gets its data when wait_group
//     (all but the newest N groups of the thread) retires it, so reading a tile before its wait and
//     overwriting a tile another warp still reads both show up as NaN; zero fill when the source size is 0.
// The scheduler runs warps at different speeds and threads at random (fixed seed), so warps drift apart.
// Shared memory starts as NaN bytes; addresses are checked (alignment, shared bounds, global sources inside
// the test's buffers), output buffers carry guard zones. This checks the kernels' indexing, masking,
// pipelining and fragment bookkeeping against kernels/cpu/attention (a missing wait_group or a missing
// barrier before a buffer is refilled fails it, as tried by hand); races only as far as this schedule
// exposes them, and not the hardware's rounding (fp32 sums here) nor its speed.
#ifdef VLP_HAVE_CUDA
#include <gtest/gtest.h>
#include <ucontext.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include <cuda_bf16.h>
#include <vector_types.h>

using std::max;
using std::min;

#define VLP_ATTENTION_TC_HOST_SIM 1
#define __launch_bounds__(...)

inline uint3 threadIdx, blockIdx;
inline dim3 blockDim, gridDim;

namespace sim {

constexpr int kMaxThreads = 256;
constexpr size_t kStackBytes = 256 * 1024;
constexpr size_t kSharedBytes = 160 * 1024;

struct Copy {
  void* dst;
  const void* src;
  bool valid;
};

struct Thread {
  ucontext_t ctx;
  std::vector<char> stack;
  bool done = false;
  std::vector<std::vector<Copy>> groups;  // committed, oldest first
  std::vector<Copy> open;                 // issued, not committed
  const int* waiting_on = nullptr;        // a barrier's generation: not runnable while it equals wait_gen
  int wait_gen = 0;
};

struct Warp {
  int count = 0, gen = 0;
  unsigned char slot[2][32][64];  // by barrier generation parity: one barrier per exchange suffices
};

struct Range {
  const void* begin;
  size_t bytes;
};

unsigned char* shared_mem = nullptr;  // the kernels' dynamic shared memory (vlp::cuda::smem_raw)
ucontext_t scheduler;
Thread threads[kMaxThreads];
Warp warps[kMaxThreads / 32];
int n_threads = 0, current = 0, block_count = 0, block_gen = 0;
uint64_t progress = 0, rng = 0x2545F4914F6CDD1Dull;
std::function<void()> body;
std::vector<Range> globals;  // buffers a kernel may read
std::vector<std::string> errors;

void error(const std::string& what) {
  if (errors.size() < 20) errors.push_back(what);
}

void yield() { swapcontext(&threads[current].ctx, &scheduler); }

void entry() {
  body();
  Thread& t = threads[current];
  if (!t.open.empty() || !t.groups.empty()) error("thread exits with cp.async copies pending");
  t.done = true;
}

// Runs body on n threads; false on a deadlock (a barrier some thread never reaches).
bool run_block(int n) {
  n_threads = n, block_count = 0;
  for (Warp& w : warps) w.count = 0;  // gen keeps counting: exchange ids stay unique across blocks
  for (int i = 0; i < n; ++i) {
    Thread& t = threads[i];
    t.stack.resize(kStackBytes);
    t.done = false, t.groups.clear(), t.open.clear(), t.waiting_on = nullptr;
    getcontext(&t.ctx);
    t.ctx.uc_stack.ss_sp = t.stack.data();
    t.ctx.uc_stack.ss_size = t.stack.size();
    t.ctx.uc_link = &scheduler;
    makecontext(&t.ctx, entry, 0);
  }
  // Rounds over the threads. Each warp gets a speed for the block (it runs every 1st, 2nd, 4th or 8th
  // round) and each thread skips a round with probability 1/4, so warps drift apart as they may on
  // hardware. Every 16th round runs every thread: no progress there means a deadlock.
  int every[kMaxThreads / 32];
  for (int w = 0; w < (n + 31) / 32; ++w) rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17, every[w] = 1 << (rng % 4);
  for (uint64_t round = 0;; ++round) {
    const bool full = round % 16 == 15;
    bool alive = false;
    const uint64_t before = progress;
    for (int i = 0; i < n; ++i) {
      if (threads[i].done) continue;
      alive = true;
      if (threads[i].waiting_on && *threads[i].waiting_on == threads[i].wait_gen) continue;  // still blocked
      rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
      if (!full && (round % every[i >> 5] != 0 || (rng & 3) == 0)) continue;
      current = i, threadIdx = {unsigned(i), 0, 0};
      swapcontext(&scheduler, &threads[i].ctx);
      if (threads[i].done) ++progress;
    }
    if (!alive) return true;
    if (full && progress == before) return false;
  }
}

// Blocks the current thread until *gen_ptr moves past gen.
void wait_for(const int* gen_ptr, int gen) {
  Thread& t = threads[current];
  t.waiting_on = gen_ptr, t.wait_gen = gen;
  while (*gen_ptr == gen) yield();
  t.waiting_on = nullptr;
}

void block_barrier() {
  const int gen = block_gen;
  ++progress;
  if (++block_count == n_threads) {
    block_count = 0, ++block_gen;
    return;
  }
  wait_for(&block_gen, gen);
}

void warp_barrier(Warp& w) {
  const int gen = w.gen;
  ++progress;
  if (++w.count == 32) {
    w.count = 0, ++w.gen;
    return;
  }
  wait_for(&w.gen, gen);
}

// Every lane of the warp deposits `in`; returns all 32 deposits.
// Returns the exchange's id (the same for all lanes of the warp).
template <class T>
int exchange(const T& in, T all[32]) {
  static_assert(sizeof(T) <= 64, "slot size");
  // A lane can deposit into this parity's slots again only after every lane has passed the next
  // exchange's barrier, i.e. after every lane has read this one.
  const int lane = current & 31;
  Warp& w = warps[current >> 5];
  const int gen = w.gen, parity = gen & 1;
  std::memcpy(w.slot[parity][lane], &in, sizeof(T));
  warp_barrier(w);
  for (int l = 0; l < 32; ++l) std::memcpy(&all[l], w.slot[parity][l], sizeof(T));
  return gen;
}

bool in_shared(const void* p, size_t n) {
  auto a = reinterpret_cast<uintptr_t>(p), s = reinterpret_cast<uintptr_t>(shared_mem);
  return a >= s && a + n <= s + kSharedBytes;
}
bool in_globals(const void* p, size_t n) {
  auto a = reinterpret_cast<uintptr_t>(p);
  for (const Range& r : globals) {
    auto b = reinterpret_cast<uintptr_t>(r.begin);
    if (a >= b && a + n <= b + r.bytes) return true;
  }
  return false;
}

float bf16_bits_to_float(uint16_t bits) {
  const uint32_t u = uint32_t(bits) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
float half_of(uint32_t reg, int hi) { return bf16_bits_to_float(uint16_t(hi ? reg >> 16 : reg & 0xffffu)); }

}  // namespace sim

inline void __syncthreads() { sim::block_barrier(); }
inline float __shfl_xor_sync(unsigned, float v, int lane_mask) {
  float all[32];
  sim::exchange(v, all);
  return all[(sim::current & 31) ^ lane_mask];
}

// The kernels, compiled for the host (their host launchers are left out by VLP_ATTENTION_TC_HOST_SIM;
// attention_tc_supported is renamed: the library's copy is linked into this executable too).
#define attention_tc_supported sim_attention_tc_supported
namespace vlp::cuda {
namespace {
alignas(16) extern unsigned char smem_raw[];
}
}  // namespace vlp::cuda
#include "kernels/cuda/attention_tc.cu"      // NOLINT: the kernel source itself
#include "kernels/cuda/attention_tc_bwd.cu"  // NOLINT

namespace vlp::cuda {
namespace {
alignas(16) unsigned char smem_raw[sim::kSharedBytes];
}
}  // namespace vlp::cuda

namespace vlp::cuda::tc {

void sim_mma_bf16(float c[4], const uint32_t a[4], const uint32_t b[2]) {
  struct In {
    uint32_t a[4], b[2];
  } in, all[32];
  std::memcpy(in.a, a, sizeof in.a);
  std::memcpy(in.b, b, sizeof in.b);
  const int id = sim::exchange(in, all);
  // The first lane through computes the warp's 16 x 8 product for all.
  static struct {
    int id = -1;
    float product[16][8];
  } done[sim::kMaxThreads / 32];
  auto& mine = done[sim::current >> 5];
  if (mine.id != id) {
  mine.id = id;
  float A[16][16], B[16][8];
  for (int l = 0; l < 32; ++l) {
    const int g = l >> 2, t = l & 3;
    for (int i = 0; i < 8; ++i) {
      const int row = (i < 2 || (i >= 4 && i < 6)) ? g : g + 8;
      const int col = 2 * t + (i & 1) + (i >= 4 ? 8 : 0);
      A[row][col] = sim::half_of(all[l].a[i / 2], i & 1);
    }
    for (int i = 0; i < 4; ++i) B[2 * t + (i & 1) + (i >= 2 ? 8 : 0)][g] = sim::half_of(all[l].b[i / 2], i & 1);
  }
  for (int row = 0; row < 16; ++row)
    for (int col = 0; col < 8; ++col) {
      float s = 0.f;
      for (int k = 0; k < 16; ++k) s += A[row][k] * B[k][col];
      mine.product[row][col] = s;
    }
  }
  const int lane = sim::current & 31, g = lane >> 2, t = lane & 3;
  for (int i = 0; i < 4; ++i) c[i] += mine.product[i < 2 ? g : g + 8][2 * t + (i & 1)];
}

void ldmatrix(uint32_t r[4], const void* row_address, bool trans) {
  if (!sim::in_shared(row_address, 16) || (reinterpret_cast<uintptr_t>(row_address) & 15u) != 0)
    sim::error("ldmatrix row address outside shared memory or not 16-byte aligned");
  const void* all[32];
  sim::exchange(row_address, all);
  const int lane = sim::current & 31;
  for (int m = 0; m < 4; ++m) {
    if (trans) {  // elements (2 (L % 4), L / 4) and (2 (L % 4) + 1, L / 4) of matrix m
      const auto* lo = static_cast<const uint16_t*>(all[8 * m + 2 * (lane & 3)]);
      const auto* hi = static_cast<const uint16_t*>(all[8 * m + 2 * (lane & 3) + 1]);
      r[m] = uint32_t(lo[lane >> 2]) | (uint32_t(hi[lane >> 2]) << 16);
    } else {  // elements (L / 4, 2 (L % 4)) and (L / 4, 2 (L % 4) + 1)
      const auto* row = static_cast<const uint16_t*>(all[8 * m + (lane >> 2)]);
      r[m] = uint32_t(row[2 * (lane & 3)]) | (uint32_t(row[2 * (lane & 3) + 1]) << 16);
    }
  }
}
void sim_ldmatrix_x4(uint32_t r[4], const void* row_address) { ldmatrix(r, row_address, false); }
void sim_ldmatrix_x4_trans(uint32_t r[4], const void* row_address) { ldmatrix(r, row_address, true); }

void sim_cp_async16(void* smem, const void* gmem, bool valid) {
  if (!sim::in_shared(smem, 16) || (reinterpret_cast<uintptr_t>(smem) & 15u) != 0)
    sim::error("cp.async destination outside shared memory or not 16-byte aligned");
  if (valid && (!sim::in_globals(gmem, 16) || (reinterpret_cast<uintptr_t>(gmem) & 15u) != 0))
    sim::error("cp.async source outside the inputs or not 16-byte aligned");
  if (sim::in_shared(smem, 16)) std::memset(smem, 0xff, 16);  // NaN from issue until the wait: catches both
  sim::threads[sim::current].open.push_back({smem, gmem, valid});  // early reads and overwrites still being read
}

void sim_cp_async_commit() {
  sim::Thread& t = sim::threads[sim::current];
  t.groups.push_back(std::move(t.open));
  t.open.clear();
}

void sim_cp_async_wait(int pending) {
  sim::Thread& t = sim::threads[sim::current];
  while (int(t.groups.size()) > pending) {
    for (const sim::Copy& c : t.groups.front()) {
      if (c.valid && sim::in_globals(c.src, 16)) std::memcpy(c.dst, c.src, 16);
      else std::memset(c.dst, 0, 16);
    }
    t.groups.erase(t.groups.begin());
  }
}

}  // namespace vlp::cuda::tc

// ---- the test ------------------------------------------------------------------------------------------
#include "kernels/cpu/attention.h"

namespace vlp {
namespace {

using cuda::tc::bf16;

// Runs kernel(args...) over a 1-D grid of blocks of n threads with `shared` bytes of dynamic shared memory.
template <class Kernel, class... Args>
void launch(unsigned grid, int n, size_t shared, Kernel kernel, Args... args) {
  ASSERT_LE(shared, sim::kSharedBytes);
  blockDim = dim3(unsigned(n)), gridDim = dim3(grid);
  for (unsigned b = 0; b < grid; ++b) {
    blockIdx = {b, 0, 0};
    sim::shared_mem = cuda::smem_raw;
    std::memset(cuda::smem_raw, 0xff, sizeof(cuda::smem_raw));  // bf16 NaN everywhere
    sim::body = [&] { kernel(args...); };
    ASSERT_TRUE(sim::run_block(n)) << "deadlock in block " << b;
  }
}

constexpr size_t kGuard = 64;

struct Buffer {  // bf16 storage with guard zones, plus its float values (what the CPU reference sees)
  std::vector<bf16> raw;
  std::vector<float> values;
  bf16* data() { return raw.data() + kGuard; }
  void check_guards(const std::string& what) const {
    for (size_t i = 0; i < kGuard; ++i) {
      const uint16_t lo = __bfloat16_as_ushort(raw[i]), hi = __bfloat16_as_ushort(raw[raw.size() - 1 - i]);
      EXPECT_TRUE(lo == 0x7fc1 && hi == 0x7fc1) << what << ": write outside the buffer";
    }
  }
};

Buffer make_buffer(size_t n, uint64_t seed, float lo, float hi, bool poison) {
  Buffer b;
  b.raw.resize(n + 2 * kGuard);
  b.values.resize(n);
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  for (size_t i = 0; i < b.raw.size(); ++i) {
    uint16_t bits = 0x7fc1;  // a NaN: guard zones, and poisoned outputs
    if (!poison && i >= kGuard && i < kGuard + n) {
      x ^= x << 13, x ^= x >> 7, x ^= x << 17;
      const float v = lo + (hi - lo) * float(x >> 40) / float(1 << 24);
      const bf16 r = __float2bfloat16_rn(v);
      bits = __bfloat16_as_ushort(r);
      b.values[i - kGuard] = __bfloat162float(r);
    }
    b.raw[i] = __ushort_as_bfloat16(bits);
  }
  sim::globals.push_back({b.raw.data() + kGuard, n * sizeof(bf16)});
  return b;
}

std::vector<float> floats(const Buffer& b, size_t n) {
  std::vector<float> out(n);
  for (size_t i = 0; i < n; ++i) out[i] = __bfloat162float(b.raw[kGuard + i]);
  return out;
}

::testing::AssertionResult close(const std::vector<float>& got, const std::vector<float>& want, double tol,
                                 const std::string& what) {
  double num = 0, den = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    if (std::isinf(want[i])) {
      if (got[i] != want[i]) return ::testing::AssertionFailure() << what << " element " << i << ": " << got[i];
      continue;
    }
    if (!std::isfinite(got[i]))
      return ::testing::AssertionFailure() << what << " element " << i << " is " << got[i] << ", want " << want[i];
    num += (double(got[i]) - want[i]) * (double(got[i]) - want[i]);
    den += double(want[i]) * want[i];
  }
  const double rel = den > 0 ? std::sqrt(num / den) : std::sqrt(num);
  if (rel <= tol) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << what << ": relative error " << rel;
}

struct SimCase {
  int64_t B, H, Tq, Tk, D;
  bool causal, masked, biased, full_bias;
  double p;
};

void run_sim(const SimCase& c) {
  const std::string tag = " B " + std::to_string(c.B) + " H " + std::to_string(c.H) + " Tq " + std::to_string(c.Tq) +
                          " Tk " + std::to_string(c.Tk) + " D " + std::to_string(c.D) + (c.causal ? " causal" : "") +
                          (c.masked ? " key-mask" : "") + (c.biased ? (c.full_bias ? " full-bias" : " bias") : "") +
                          " p " + std::to_string(c.p);
  sim::globals.clear(), sim::errors.clear();
  const int64_t B = c.B, H = c.H, Tq = c.Tq, Tk = c.Tk, D = c.D, bias_B = c.full_bias ? B : 1;
  const int64_t rows = B * H * Tq;
  Buffer q = make_buffer(size_t(rows * D), 11, -1, 1, false), k = make_buffer(size_t(B * H * Tk * D), 12, -1, 1, false);
  Buffer v = make_buffer(size_t(B * H * Tk * D), 13, -1, 1, false), dout = make_buffer(size_t(rows * D), 14, -1, 1, false);
  Buffer bias = make_buffer(size_t(bias_B * H * Tq * Tk), 15, -2, 2, false);
  Buffer out = make_buffer(size_t(rows * D), 0, 0, 0, true), dq = make_buffer(size_t(rows * D), 0, 0, 0, true);
  Buffer dk = make_buffer(size_t(B * H * Tk * D), 0, 0, 0, true), dv = make_buffer(size_t(B * H * Tk * D), 0, 0, 0, true);
  Buffer dbias = make_buffer(size_t(bias_B * H * Tq * Tk), 0, 0, 0, true);
  std::vector<char> keep_bytes(size_t(B * Tk));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t j = 0; j < Tk; ++j)
      keep_bytes[size_t(b * Tk + j)] = b == 0 ? j % 4 != 1 : b == 1 ? (j >= 12 && j % 3 == 0) : 0;
  const bool* keep = reinterpret_cast<const bool*>(keep_bytes.data());

  cpu::AttentionArgs<float> ca;
  cuda::AttentionArgs ga;
  ca.B = ga.B = B, ca.H = ga.H = H, ca.Tq = ga.Tq = Tq, ca.Tk = ga.Tk = Tk, ca.D = ga.D = D, ca.Dv = ga.Dv = D;
  ca.q = q.values.data(), ca.k = k.values.data(), ca.v = v.values.data();
  ga.q = q.data(), ga.k = k.data(), ga.v = v.data(), ga.dtype = cuda::EwDType::BF16;
  const int64_t sq[3] = {H * Tq * D, Tq * D, D}, sk[3] = {H * Tk * D, Tk * D, D};
  for (int d = 0; d < 3; ++d) ca.q_strides[d] = ga.q_strides[d] = sq[d], ca.k_strides[d] = ga.k_strides[d] = sk[d];
  for (int d = 0; d < 3; ++d) ca.v_strides[d] = ga.v_strides[d] = sk[d];
  const int64_t bias_strides[4] = {c.full_bias ? H * Tq * Tk : 0, Tq * Tk, Tk, 1};
  if (c.biased) {
    ca.bias = bias.values.data(), ga.bias = bias.data();
    for (int d = 0; d < 4; ++d) ca.bias_strides[d] = ga.bias_strides[d] = bias_strides[d];
  }
  if (c.masked) ca.key_keep = ga.key_keep = keep;
  ca.causal = ga.causal = c.causal;
  ca.scale = ga.scale = 1.0 / std::sqrt(double(D));
  ca.dropout_p = ga.dropout_p = c.p;
  ca.seed = ga.seed = 99, ca.offset = ga.offset = 3;
  ASSERT_TRUE(cuda::sim_attention_tc_supported(ga)) << tag;

  // Forward, as attention_forward_tc launches it.
  std::vector<float> lse(size_t(rows), NAN);
  const int n_qtiles = int((Tq + cuda::kFwdRows - 1) / cuda::kFwdRows);
  auto fwd = [&](auto kernel, size_t shared) {
    launch(unsigned(B * H * n_qtiles), 128, shared, kernel, ga, out.data(), lse.data(), n_qtiles);
  };
  if (D <= 64) fwd(cuda::attention_tc_forward_kernel<64>, cuda::forward_smem_bytes<64>());
  else fwd(cuda::attention_tc_forward_kernel<128>, cuda::forward_smem_bytes<128>());

  std::vector<float> out_ref(static_cast<size_t>(rows * D)), lse_ref(static_cast<size_t>(rows));
  cpu::attention_forward<float>(ca, out_ref.data(), lse_ref.data());
  EXPECT_TRUE(close(floats(out, out_ref.size()), out_ref, 1e-2, "out" + tag));
  EXPECT_TRUE(close(lse, lse_ref, 1e-5, "lse" + tag));

  // Backward, as attention_backward_tc launches it (scratch for a broadcast bias, direct otherwise).
  sim::globals.push_back({out.data(), size_t(rows * D) * sizeof(bf16)});
  std::vector<float> delta(size_t(rows), NAN), scratch(c.biased && !c.full_bias ? size_t(rows * Tk) : 0, NAN);
  float* ds_scratch = scratch.empty() ? nullptr : scratch.data();
  bf16* dbias_direct = c.biased && c.full_bias ? dbias.data() : nullptr;
  launch(unsigned((rows + 3) / 4), 128, 0, cuda::attention_tc_delta_kernel, static_cast<const bf16*>(out.data()),
         static_cast<const bf16*>(dout.data()), delta.data(), rows, int(D));
  const int n_ktiles = int((Tk + cuda::kKvKeys - 1) / cuda::kKvKeys), n_dq = int((Tq + cuda::kDqRows - 1) / cuda::kDqRows);
  auto bwd = [&](auto dkv_kernel, size_t dkv_shared, auto dq_kernel, size_t dq_shared) {
    launch(unsigned(B * H * n_ktiles), 128, dkv_shared, dkv_kernel, ga, static_cast<const float*>(lse.data()),
           static_cast<const float*>(delta.data()), static_cast<const bf16*>(dout.data()), dk.data(), dv.data(),
           n_ktiles);
    launch(unsigned(B * H * n_dq), 128, dq_shared, dq_kernel, ga, static_cast<const float*>(lse.data()),
           static_cast<const float*>(delta.data()), static_cast<const bf16*>(dout.data()), dq.data(), ds_scratch,
           dbias_direct, n_dq);
  };
  if (D <= 64)
    bwd(cuda::attention_tc_dkv_kernel<64>, cuda::dkv_smem_bytes<64>(), cuda::attention_tc_dq_kernel<64>,
        cuda::dq_smem_bytes<64>());
  else
    bwd(cuda::attention_tc_dkv_kernel<128>, cuda::dkv_smem_bytes<128>(), cuda::attention_tc_dq_kernel<128>,
        cuda::dq_smem_bytes<128>());
  if (ds_scratch) {
    const int64_t n = H * Tq * Tk;
    launch(unsigned((n + 255) / 256), 256, 0, cuda::attention_tc_dbias_kernel, static_cast<const float*>(ds_scratch),
           B, H, Tq, Tk, int64_t(1), H, dbias.data());
  }

  std::vector<float> out_gpu = floats(out, size_t(rows * D));
  std::vector<float> dq_ref(size_t(rows * D)), dk_ref(size_t(B * H * Tk * D)), dv_ref(dk_ref.size());
  std::vector<float> dbias_ref(size_t(bias_B * H * Tq * Tk), 0.f);
  cpu::attention_backward<float>(ca, out_gpu.data(), lse_ref.data(), dout.values.data(), dq_ref.data(), dk_ref.data(),
                                 dv_ref.data(), c.biased ? dbias_ref.data() : nullptr, bias_strides);
  EXPECT_TRUE(close(floats(dq, dq_ref.size()), dq_ref, 1e-2, "dq" + tag));
  EXPECT_TRUE(close(floats(dk, dk_ref.size()), dk_ref, 1e-2, "dk" + tag));
  EXPECT_TRUE(close(floats(dv, dv_ref.size()), dv_ref, 1e-2, "dv" + tag));
  if (c.biased) {
    EXPECT_TRUE(close(floats(dbias, dbias_ref.size()), dbias_ref, 1e-2, "dbias" + tag));
  }
  for (Buffer* b : {&out, &dq, &dk, &dv, &dbias}) b->check_guards(tag);
  for (const std::string& e : sim::errors) ADD_FAILURE() << e << tag;
}

// Every combination when VLP_TC_SIM_FULL=1 (about a minute on one core); otherwise six that between them
// take each feature on and off (a few seconds).
bool full_run() {
  const char* v = std::getenv("VLP_TC_SIM_FULL");
  return v != nullptr && v[0] != '\0' && std::strcmp(v, "0") != 0;
}

TEST(CudaAttentionTcSim, ForwardAndBackwardOnTheCpu) {
  // Odd sizes over two query tiles and three key tiles (so the double buffers are each refilled).
  if (full_run()) {
    for (bool causal : {false, true})
      for (bool masked : {false, true})
        for (bool biased : {false, true})
          for (double p : {0.0, 0.2}) run_sim({3, 1, 77, 131, 64, causal, masked, biased, false, p});
    return;
  }
  run_sim({3, 1, 77, 131, 64, false, false, false, false, 0.0});
  run_sim({3, 1, 77, 131, 64, true, true, true, false, 0.2});
  run_sim({3, 1, 77, 131, 64, false, true, true, false, 0.0});
  run_sim({3, 1, 77, 131, 64, true, false, false, false, 0.2});
  run_sim({3, 1, 77, 131, 64, true, true, false, false, 0.0});
  run_sim({3, 1, 77, 131, 64, false, false, true, false, 0.2});
  run_sim({2, 1, 150, 70, 64, true, true, true, false, 0.1});  // 3 query tiles for the dK/dV pass, Tq > Tk
}

TEST(CudaAttentionTcSim, HeadDimsSingleRowsAndShiftedCausal) {
  run_sim({1, 1, 70, 140, 128, true, true, true, true, 0.1});  // the 128 kernel over 3 tiles, dS written directly
  run_sim({2, 1, 33, 20, 72, true, false, true, false, 0.0});  // D 72 in the 128 kernel, Tq > Tk
  run_sim({2, 2, 1, 1, 64, false, true, true, true, 0.0});     // Tq = Tk = 1
  run_sim({1, 1, 1, 90, 32, true, true, false, false, 0.2});   // decoding, D 32 in the 64 kernel
  run_sim({1, 1, 70, 65, 48, false, false, true, false, 0.0}); // D 48
}

}  // namespace
}  // namespace vlp
#endif  // VLP_HAVE_CUDA
