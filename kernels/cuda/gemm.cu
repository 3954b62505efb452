// GEMM through cuBLASLt (row-major C = op(A) op(B) computed as the column-major C^T = op(B)^T op(A)^T),
// its fused bias / bias+GELU / dGELU+bias-gradient epilogues, and the elementwise kernels that stand in
// for an epilogue cuBLASLt cannot take. See gemm.h.
#include <cublasLt.h>
#include <cuda_bf16.h>

#include <cstring>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <tuple>

#include "kernels/cuda/allocator.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/nvtx.h"
#include "kernels/cuda/runtime.h"

namespace vlp::cuda {

namespace {

constexpr size_t kWorkspaceBytes = size_t(32) << 20;
constexpr int kMaxDevices = 16;

void lt_check(cublasStatus_t st, const char* what) {
  if (st != CUBLAS_STATUS_SUCCESS)
    throw std::runtime_error(std::string("cuBLASLt ") + what + " failed with status " + std::to_string(int(st)));
}

struct DeviceLt {
  cublasLtHandle_t handle = nullptr;
  void* workspace = nullptr;
};

DeviceLt& device_lt(int device) {
  static DeviceLt lts[kMaxDevices];
  static std::mutex mutex;
  std::lock_guard<std::mutex> lock(mutex);
  DeviceLt& lt = lts[device];
  if (!lt.handle) {
    lt_check(cublasLtCreate(&lt.handle), "cublasLtCreate");
    lt.workspace = device_alloc(kWorkspaceBytes, device);
  }
  return lt;
}

// Everything the algorithm choice depends on.
using AlgoKey = std::tuple<int, int, int, int64_t, int64_t, int64_t, int, int, int, int, int64_t, int64_t, int64_t,
                           int64_t, int64_t, bool>;
std::map<AlgoKey, cublasLtMatmulAlgo_t>& algo_cache() {
  static std::map<AlgoKey, cublasLtMatmulAlgo_t> cache;
  return cache;
}
std::mutex algo_mutex;

cudaDataType_t cuda_type(GemmDType t) { return t == GemmDType::F32 ? CUDA_R_32F : CUDA_R_16BF; }

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

// The alignment (a power of two up to 256) every matrix of a batch starts at: cuBLASLt's heuristics
// assume 256-byte aligned operands unless told otherwise, and views can start anywhere.
uint32_t alignment(const void* p, int64_t batch_stride_bytes) {
  uintptr_t v = reinterpret_cast<uintptr_t>(p) | uintptr_t(batch_stride_bytes) | uintptr_t(256);
  return uint32_t(v & (~v + 1));  // lowest set bit
}

// RAII holders for the cuBLASLt descriptors of one call.
struct Descs {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulPreference_t pref = nullptr;
  ~Descs() {
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    if (c) cublasLtMatrixLayoutDestroy(c);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (op) cublasLtMatmulDescDestroy(op);
  }
};

void make_layout(cublasLtMatrixLayout_t* layout, cudaDataType_t type, int64_t rows, int64_t cols, int64_t ld,
                 int64_t batch, int64_t stride) {
  lt_check(cublasLtMatrixLayoutCreate(layout, type, uint64_t(rows), uint64_t(cols), ld), "MatrixLayoutCreate");
  if (batch > 1) {
    int32_t count = int32_t(batch);
    lt_check(cublasLtMatrixLayoutSetAttribute(*layout, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count, sizeof(count)),
             "layout batch count");
    lt_check(cublasLtMatrixLayoutSetAttribute(*layout, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride,
                                              sizeof(stride)),
             "layout batch stride");
  }
}

// One cuBLASLt matmul with the given cuBLASLt epilogue; aux/bias_grad only for the epilogues using them.
// Returns false (nothing launched) when cuBLASLt has no algorithm for these operands (a fused epilogue it
// cannot do, or operands too misaligned), so the caller can run the unfused or the simple path.
bool lt_matmul(const GemmArgs& g, cublasLtEpilogue_t epi, bool use_aux, bool use_bias_grad) {
  const int device = current_device();
  DeviceLt& lt = device_lt(device);
  cudaStream_t stream = current_stream(device);
  const cudaDataType_t ab = cuda_type(g.ab_dtype), ct = cuda_type(g.c_dtype);
  const cublasComputeType_t compute =
      g.ab_dtype == GemmDType::F32 && g.allow_tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  Descs d;
  lt_check(cublasLtMatmulDescCreate(&d.op, compute, CUDA_R_32F), "MatmulDescCreate");
  // Column-major view: C^T [n, m] = op(B)^T [n, k] * op(A)^T [k, m].
  cublasOperation_t ta = g.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, tb = g.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  lt_check(cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)), "transa");
  lt_check(cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)), "transb");
  lt_check(cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof(epi)), "epilogue");
  if (g.bias || use_bias_grad) {
    const void* bias_ptr = use_bias_grad ? g.bias_grad : g.bias;
    lt_check(cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias_ptr, sizeof(bias_ptr)),
             "bias pointer");
  }
  if (use_aux) {
    int64_t ld = g.ldc;
    lt_check(cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &g.aux, sizeof(g.aux)),
             "aux pointer");
    lt_check(cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &ld, sizeof(ld)), "aux ld");
  }
  make_layout(&d.a, ab, g.trans_b ? g.k : g.n, g.trans_b ? g.n : g.k, g.ldb, g.batch, g.stride_b);
  make_layout(&d.b, ab, g.trans_a ? g.m : g.k, g.trans_a ? g.k : g.m, g.lda, g.batch, g.stride_a);
  make_layout(&d.c, ct, g.n, g.m, g.ldc, g.batch, g.stride_c);

  const int64_t ab_size = g.ab_dtype == GemmDType::F32 ? 4 : 2, c_size = g.c_dtype == GemmDType::F32 ? 4 : 2;
  const uint32_t align_a = alignment(g.a, g.batch > 1 ? g.stride_a * ab_size : 0);
  const uint32_t align_b = alignment(g.b, g.batch > 1 ? g.stride_b * ab_size : 0);
  const uint32_t align_c = alignment(g.c, g.batch > 1 ? g.stride_c * c_size : 0);
  const int64_t aligns = int64_t(align_a) | (int64_t(align_b) << 16) | (int64_t(align_c) << 32);
  AlgoKey key{device, int(g.ab_dtype), int(g.c_dtype), g.m, g.n, g.k, int(g.trans_a), int(g.trans_b), int(epi),
              int(compute), g.lda, g.ldb, g.ldc, g.batch * 4 + int(g.beta != 0.f) * 2 + int(use_aux), aligns,
              false};
  cublasLtMatmulAlgo_t algo;
  {
    std::lock_guard<std::mutex> lock(algo_mutex);
    auto it = algo_cache().find(key);
    if (it != algo_cache().end()) {
      algo = it->second;
    } else {
      lt_check(cublasLtMatmulPreferenceCreate(&d.pref), "PreferenceCreate");
      size_t ws = kWorkspaceBytes;
      lt_check(cublasLtMatmulPreferenceSetAttribute(d.pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)),
               "workspace preference");
      // cuBLASLt's A is our B and its B our A (see the column-major view above).
      lt_check(cublasLtMatmulPreferenceSetAttribute(d.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &align_b,
                                                    sizeof(align_b)),
               "alignment A");
      lt_check(cublasLtMatmulPreferenceSetAttribute(d.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &align_a,
                                                    sizeof(align_a)),
               "alignment B");
      lt_check(cublasLtMatmulPreferenceSetAttribute(d.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &align_c,
                                                    sizeof(align_c)),
               "alignment C");
      lt_check(cublasLtMatmulPreferenceSetAttribute(d.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &align_c,
                                                    sizeof(align_c)),
               "alignment D");
      cublasLtMatmulHeuristicResult_t result;
      std::memset(&result, 0, sizeof(result));
      int found = 0;
      cublasStatus_t st =
          cublasLtMatmulAlgoGetHeuristic(lt.handle, d.op, d.a, d.b, d.c, d.c, d.pref, 1, &result, &found);
      if (st != CUBLAS_STATUS_SUCCESS || found == 0) return false;
      algo = result.algo;
      algo_cache()[key] = algo;
    }
  }
  lt_check(cublasLtMatmul(lt.handle, d.op, &g.alpha, g.b, d.a, g.a, d.b, &g.beta, g.c, d.c, g.c, d.c, &algo,
                          lt.workspace, kWorkspaceBytes, stream),
           "Matmul");
  return true;
}

template <class T> __device__ float to_f(T v);
template <> __device__ float to_f(float v) { return v; }
template <> __device__ float to_f(__nv_bfloat16 v) { return __bfloat162float(v); }
template <class T> __device__ T from_f(float v);
template <> __device__ float from_f(float v) { return v; }
template <> __device__ __nv_bfloat16 from_f(float v) { return __float2bfloat16_rn(v); }

__device__ float gelu_tanh_f(float x) {
  const float k = 0.7978845608028654f;  // sqrt(2 / pi)
  return 0.5f * x * (1.f + tanhf(k * (x + 0.044715f * x * x * x)));
}
__device__ float dgelu_tanh_f(float x) {
  const float k = 0.7978845608028654f;
  float t = tanhf(k * (x + 0.044715f * x * x * x));
  return 0.5f * (1.f + t) + 0.5f * x * (1.f - t * t) * k * (1.f + 3.f * 0.044715f * x * x);
}

// The GEMM for operands cuBLASLt takes no algorithm for: one thread per element of C, fp32 accumulation
// over k in order. Slow, but any alignment, transpose and batch stride works.
template <class TA, class TC>
__global__ void simple_gemm_kernel(GemmArgs g) {
  const int64_t total = g.batch * g.m * g.n;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t j = e % g.n, i = (e / g.n) % g.m, b = e / (g.m * g.n);
    const TA* a = static_cast<const TA*>(g.a) + b * g.stride_a;
    const TA* bm = static_cast<const TA*>(g.b) + b * g.stride_b;
    TC* c = static_cast<TC*>(g.c) + b * g.stride_c;
    float s = 0.f;
    for (int64_t p = 0; p < g.k; ++p) {
      const float av = to_f(g.trans_a ? a[p * g.lda + i] : a[i * g.lda + p]);
      const float bv = to_f(g.trans_b ? bm[j * g.ldb + p] : bm[p * g.ldb + j]);
      s += av * bv;
    }
    float v = g.alpha * s;
    if (g.beta != 0.f) v += g.beta * to_f(c[i * g.ldc + j]);
    c[i * g.ldc + j] = from_f<TC>(v);
  }
}

void simple_gemm(const GemmArgs& g, cudaStream_t stream) {
  const unsigned grid = grid_for(g.batch * g.m * g.n, 256);
  if (g.ab_dtype == GemmDType::F32 && g.c_dtype == GemmDType::F32)
    simple_gemm_kernel<float, float><<<grid, 256, 0, stream>>>(g);
  else if (g.ab_dtype == GemmDType::F32)
    simple_gemm_kernel<float, __nv_bfloat16><<<grid, 256, 0, stream>>>(g);
  else if (g.c_dtype == GemmDType::F32)
    simple_gemm_kernel<__nv_bfloat16, float><<<grid, 256, 0, stream>>>(g);
  else
    simple_gemm_kernel<__nv_bfloat16, __nv_bfloat16><<<grid, 256, 0, stream>>>(g);
  check_launch("simple_gemm");
}

// A plain GEMM: cuBLASLt, or the simple kernel when it has no algorithm.
void plain_gemm(const GemmArgs& g, cudaStream_t stream) {
  if (!lt_matmul(g, CUBLASLT_EPILOGUE_DEFAULT, false, false)) simple_gemm(g, stream);
}

template <class T>
__global__ void bias_gelu_kernel(T* x, int64_t ld, const T* bias, T* pre, int64_t m, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < m * n; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t r = i / n, c = i % n;
    float v = to_f(x[r * ld + c]) + (bias ? to_f(bias[c]) : 0.f);
    if (pre) pre[r * ld + c] = from_f<T>(v);
    x[r * ld + c] = from_f<T>(gelu_tanh_f(v));
  }
}

template <class T>
__global__ void dgelu_kernel(T* x, int64_t ld, const T* pre, int64_t m, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < m * n; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t r = i / n, c = i % n;
    x[r * ld + c] = from_f<T>(to_f(x[r * ld + c]) * dgelu_tanh_f(to_f(pre[r * ld + c])));
  }
}

template <class T>
__global__ void add_bias_kernel(T* x, int64_t ld, const T* bias, int64_t m, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < m * n; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t r = i / n, c = i % n;
    x[r * ld + c] = from_f<T>(to_f(x[r * ld + c]) + to_f(bias[c]));
  }
}

// One thread per column, rows summed in order: deterministic (and coalesced across the warp).
template <class T>
__global__ void column_sum_kernel(const T* x, int64_t ld, T* out, int64_t m, int64_t n) {
  int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (c >= n) return;
  float s = 0.f;
  for (int64_t r = 0; r < m; ++r) s += to_f(x[r * ld + c]);
  out[c] = from_f<T>(s);
}

template <class Fn>
void by_dtype(GemmDType t, Fn&& fn) {
  if (t == GemmDType::F32) fn(float{});
  else fn(__nv_bfloat16{});
}

void check_args(const GemmArgs& g) {
  if (g.m <= 0 || g.n <= 0 || g.k <= 0 || g.batch <= 0)
    throw std::runtime_error("cuda gemm: sizes must be positive (m " + std::to_string(g.m) + ", n " +
                             std::to_string(g.n) + ", k " + std::to_string(g.k) + ", batch " +
                             std::to_string(g.batch) + ")");
  if (g.ab_dtype == GemmDType::BF16 && g.allow_tf32) throw std::runtime_error("cuda gemm: TF32 is for F32 inputs");
  if (g.epilogue != Epilogue::None && g.batch != 1)
    throw std::runtime_error("cuda gemm: epilogues are for unbatched GEMMs");
  if ((g.epilogue == Epilogue::Bias) && !g.bias) throw std::runtime_error("cuda gemm: Bias epilogue without bias");
  if (g.epilogue == Epilogue::DGeluTanh && !g.aux)
    throw std::runtime_error("cuda gemm: DGeluTanh needs the saved pre-activation (aux)");
  if (g.epilogue == Epilogue::DGeluTanh && g.beta != 0.f)
    throw std::runtime_error("cuda gemm: DGeluTanh with beta != 0 is not supported");
}

}  // namespace

void gemm(const GemmArgs& g) {
  NvtxRange nvtx("vlp::cuda::gemm");
  check_args(g);
  cudaStream_t stream = current_stream();
  // cuBLASLt takes an aux matrix only with a leading dimension that is a multiple of 8 and 16-byte
  // aligned pointers; anything else, or an epilogue cuBLASLt has no algorithm for, runs unfused: the
  // plain GEMM, then the epilogue as its own kernel.
  const bool aux_ok = g.aux && g.ldc % 8 == 0 && aligned16(g.aux) && aligned16(g.c);
  // The heuristics are not told where the bias vector starts, and cuBLASLt epilogues are reported to fail
  // in cublasLtMatmul itself (an error, not a fallback) on a bias below 16-byte alignment, e.g. a view
  // one element into its storage: such a bias takes the unfused path.
  const bool bias_ok = g.bias && aligned16(g.bias);
  GemmArgs plain = g;
  plain.epilogue = Epilogue::None;
  plain.bias = nullptr;
  switch (g.epilogue) {
    case Epilogue::None: plain_gemm(g, stream); return;
    case Epilogue::Bias:
      if (bias_ok && lt_matmul(g, CUBLASLT_EPILOGUE_BIAS, false, false)) return;
      plain_gemm(plain, stream);
      add_bias(g.c_dtype, g.c, g.ldc, g.bias, g.m, g.n, stream);
      return;
    case Epilogue::BiasGeluTanh:
      if (!g.aux && bias_ok && lt_matmul(g, CUBLASLT_EPILOGUE_GELU_BIAS, false, false)) return;
      if (aux_ok && bias_ok && lt_matmul(g, CUBLASLT_EPILOGUE_GELU_AUX_BIAS, true, false)) return;
      plain_gemm(plain, stream);
      bias_gelu_tanh(g.c_dtype, g.c, g.ldc, g.bias, g.aux, g.m, g.n, stream);
      return;
    case Epilogue::DGeluTanh:
      if (aux_ok && (!g.bias_grad || aligned16(g.bias_grad)) &&
          lt_matmul(plain, g.bias_grad ? CUBLASLT_EPILOGUE_DGELU_BGRAD : CUBLASLT_EPILOGUE_DGELU, true,
                    g.bias_grad != nullptr))
        return;
      plain_gemm(plain, stream);
      dgelu_tanh(g.c_dtype, g.c, g.ldc, g.aux, g.m, g.n, stream);
      if (g.bias_grad) column_sum(g.c_dtype, g.c, g.ldc, g.bias_grad, g.m, g.n, stream);
      return;
  }
}

void gemm_simple(const GemmArgs& g) {
  check_args(g);
  if (g.epilogue != Epilogue::None) throw std::runtime_error("cuda gemm_simple: no epilogues");
  simple_gemm(g, current_stream());
}

int64_t gemm_cache_size() {
  std::lock_guard<std::mutex> lock(algo_mutex);
  return int64_t(algo_cache().size());
}

void bias_gelu_tanh(GemmDType dtype, void* x, int64_t ld, const void* bias, void* pre, int64_t m, int64_t n,
                    cudaStream_t stream) {
  by_dtype(dtype, [&](auto t) {
    using T = decltype(t);
    bias_gelu_kernel<T><<<grid_for(m * n, 256), 256, 0, stream>>>(static_cast<T*>(x), ld, static_cast<const T*>(bias),
                                                                  static_cast<T*>(pre), m, n);
  });
  check_launch("bias_gelu_tanh");
}

void dgelu_tanh(GemmDType dtype, void* x, int64_t ld, const void* pre, int64_t m, int64_t n, cudaStream_t stream) {
  by_dtype(dtype, [&](auto t) {
    using T = decltype(t);
    dgelu_kernel<T><<<grid_for(m * n, 256), 256, 0, stream>>>(static_cast<T*>(x), ld, static_cast<const T*>(pre), m, n);
  });
  check_launch("dgelu_tanh");
}

void column_sum(GemmDType dtype, const void* x, int64_t ld, void* out, int64_t m, int64_t n, cudaStream_t stream) {
  by_dtype(dtype, [&](auto t) {
    using T = decltype(t);
    column_sum_kernel<T><<<grid_for(n, 128), 128, 0, stream>>>(static_cast<const T*>(x), ld, static_cast<T*>(out), m, n);
  });
  check_launch("column_sum");
}

void add_bias(GemmDType dtype, void* x, int64_t ld, const void* bias, int64_t m, int64_t n, cudaStream_t stream) {
  by_dtype(dtype, [&](auto t) {
    using T = decltype(t);
    add_bias_kernel<T><<<grid_for(m * n, 256), 256, 0, stream>>>(static_cast<T*>(x), ld, static_cast<const T*>(bias), m, n);
  });
  check_launch("add_bias");
}

}  // namespace vlp::cuda
