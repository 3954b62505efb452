// Scaled-dot-product attention through cuDNN's fused flash attention, see attention_cudnn.h.
//
// The graphs are the ones cuDNN's fused SDPA engine recognises (the composite graphs the official
// cudnn-frontend builds for its SDPA nodes), written here directly against the backend API:
//   forward  S = matmul(Q, K^T) * scale [+ bias] [causal: select(row >= col, S, -inf)];
//            softmax with stats: M = max_j S, E = exp(S - M), Z = sum_j E, stats = M + log Z, P = E / Z
//            (P in BF16); O = matmul(P, V).
//   backward softmax_sum = sum_d dO * O (a float [B, H, Tq, 1] buffer of ours);
//            P = exp(S [+ bias] [padding] - stats) [causal]; dV = matmul(P^T, dO);
//            dS = (matmul(dO, V^T) - softmax_sum) * P [dbias = sum of dS over the bias's broadcast dims];
//            dK = matmul((dS * scale)^T, Q); dQ = matmul(dS * scale, K) through a float accumulator of ours
//            (zeroed), or straight into dQ when dbias is computed (cuDNN's "dP workspace" variant).
// Tensors are 4-d [B, H, rows, cols] with explicit strides; K and V enter transposed by swapping their
// last two dims and strides. Virtual (intermediate) tensors are float, index tensors INT32, masks BOOLEAN;
// the scale, -inf and 1 are by-value host scalars.
//
// Version workarounds taken from the same source: before cuDNN 9.10 a mask writes the lowest float
// instead of -inf; up to 9.15 the backward with Tk % 128 != 0 needs a padding mask with the full lengths
// (seq_len_q = Tq, seq_len_kv = Tk per batch, and the matmuls' M/N/K overrides), re-applied after the
// stats subtraction on 9.0 to 9.9; 9.10.0/9.10.1 have no usable backward; before 9.5 dbias needs
// Tq, Tk multiples of 64 and no padding mask.
#include "kernels/cuda/attention_cudnn.h"

#include <cstdint>
#include <stdexcept>
#include <string>

namespace vlp::cuda {

namespace {

[[noreturn]] void refuse(const std::string& why) {
  throw std::runtime_error("cuDNN attention (VLP_ATTENTION=cudnn): " + why + "; VLP_ATTENTION=rows takes it");
}

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

void check_rows(const char* name, const void* p, const int64_t* strides, int n) {
  for (int d = 0; d < n; ++d)
    if (strides[d] % 8 != 0)
      refuse(std::string(name) + " needs strides that are multiples of 8 elements (16-byte aligned rows), got " +
             std::to_string(strides[0]) + ", " + std::to_string(strides[1]) + ", " + std::to_string(strides[2]));
  if (p && !aligned16(p)) refuse(std::string(name) + " must start at a 16-byte aligned address");
}

}  // namespace

void cudnn_attention_check(const AttentionArgs& a, bool backward, const void* dbias, int64_t dbias_B,
                           int64_t dbias_H) {
  if (a.dtype != EwDType::BF16)
    refuse("BF16 storage only (cuDNN's fused flash attention computes from fp16/bf16), got F32");
  if (a.D <= 0 || a.Dv <= 0 || a.D % 8 != 0 || a.Dv % 8 != 0 || a.D > 128 || a.Dv > 128)
    refuse("head dims must be multiples of 8 up to 128, got D " + std::to_string(a.D) + ", Dv " +
           std::to_string(a.Dv));
  if (a.dropout_p != 0.0)
    refuse("attention dropout is not supported (cuDNN's RNG draws other masks than our Philox stream), got p " +
           std::to_string(a.dropout_p));
  if (a.causal && a.Tq != a.Tk)
    refuse("causal masking needs Tq == Tk (ours is aligned bottom-right; cuDNN takes that only without bias "
           "and padding), got Tq " + std::to_string(a.Tq) + ", Tk " + std::to_string(a.Tk));
  check_rows("q", a.q, a.q_strides, 3);
  check_rows("k", a.k, a.k_strides, 3);
  check_rows("v", a.v, a.v_strides, 3);
  if (!backward) return;
  if (a.Tq == 1 && a.Tk == 1) refuse("cuDNN's backward does not take Tq = Tk = 1");
  if (dbias) {
    if (!a.bias) refuse("dbias without a bias");
    if ((dbias_B != 1 && dbias_B != a.B) || (dbias_H != 1 && dbias_H != a.H))
      refuse("dbias batch/head dims must be 1 or B/H, got " + std::to_string(dbias_B) + ", " + std::to_string(dbias_H));
    if ((a.bias_strides[0] != 0 && a.B > 1 && dbias_B == 1) || (a.bias_strides[1] != 0 && a.H > 1 && dbias_H == 1))
      refuse("dbias summed over a batch or head dim the bias has");
  }
  const int64_t v = cudnn_version();
  if (v == 91000 || v == 91001) refuse("cuDNN 9.10.0/9.10.1 have a broken SDPA backward; use 9.10.2 or newer");
  const bool padding_workaround = v <= 91500 && a.Tk % 128 != 0;
  if (dbias && v < 90500 && (a.Tq % 64 != 0 || a.Tk % 64 != 0 || padding_workaround))
    refuse("dbias before cuDNN 9.5 needs Tq and Tk multiples of 64 (and of 128 for Tk), got Tq " +
           std::to_string(a.Tq) + ", Tk " + std::to_string(a.Tk));
}

}  // namespace vlp::cuda

#ifndef VLP_HAVE_CUDNN

namespace vlp::cuda {

namespace {
[[noreturn]] void no_cudnn() {
  throw std::runtime_error(
      "cuDNN attention (VLP_ATTENTION=cudnn): vlpeft was built without cuDNN (set VLP_CUDNN_ROOT to a folder "
      "with include/cudnn.h and lib/libcudnn.so*, e.g. python3 -c \"import nvidia.cudnn, os; "
      "print(os.path.dirname(nvidia.cudnn.__file__))\", and reconfigure)");
}
}  // namespace

bool cudnn_built() { return false; }
int64_t cudnn_version() { return 0; }
void cudnn_attention_forward(const AttentionArgs&, void*, float*, cudaStream_t) { no_cudnn(); }
void cudnn_attention_backward(const AttentionArgs&, const void*, const float*, const void*, void*, void*, void*, void*,
                              int64_t, int64_t, cudaStream_t) {
  no_cudnn();
}

}  // namespace vlp::cuda

#else  // VLP_HAVE_CUDNN

#include <cudnn.h>

#include <algorithm>
#include <array>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "kernels/cuda/allocator.h"
#include "kernels/cuda/copy.h"
#include "kernels/cuda/elementwise.h"
#include "kernels/cuda/nn.h"
#include "kernels/cuda/nvtx.h"
#include "kernels/cuda/runtime.h"

namespace vlp::cuda {

namespace {

constexpr int kMaxDevices = 16;
constexpr int kCopyBF16 = 2, kCopyI32 = 4;  // copy.h dtype codes (the vlp::DType order)

// Tensor unique ids of the graphs (virtual tensors count up from kFirstVirtual).
enum Uid : int64_t {
  kQ = 1, kK, kV, kO, kStats, kScale, kBias, kNegInf, kSeqQ, kSeqKV,
  kDO, kDQ, kDK, kDV, kDBias, kSoftmaxSum, kDQAccum, kOne, kFirstVirtual = 100
};

void cudnn_check(cudnnStatus_t st, const std::string& call) {
  if (st == CUDNN_STATUS_SUCCESS) return;
  char detail[1024] = "";
  cudnnGetLastErrorString(detail, sizeof detail);
  throw std::runtime_error("cuDNN attention: " + call + " failed: " + cudnnGetErrorString(st) +
                           (detail[0] ? std::string(" (") + detail + ")" : std::string()));
}

// One backend descriptor, destroyed with its owner.
struct Desc {
  Desc(cudnnBackendDescriptorType_t type, const char* what) {
    cudnn_check(cudnnBackendCreateDescriptor(type, &d), std::string("cudnnBackendCreateDescriptor(") + what + ")");
  }
  ~Desc() {
    if (d) cudnnBackendDestroyDescriptor(d);
  }
  Desc(const Desc&) = delete;
  Desc& operator=(const Desc&) = delete;
  cudnnBackendDescriptor_t d = nullptr;
};

void set_attribute(cudnnBackendDescriptor_t d, cudnnBackendAttributeName_t name, cudnnBackendAttributeType_t type,
                   int64_t n, const void* values, const char* what) {
  cudnn_check(cudnnBackendSetAttribute(d, name, type, n, values),
              std::string("cudnnBackendSetAttribute(") + what + ")");
}
// Names the attribute in the error message.
#define VLP_CUDNN_SET(desc, name, type, n, values) set_attribute(desc, name, type, n, values, #name)

void finalize(cudnnBackendDescriptor_t d, const char* what) {
  cudnn_check(cudnnBackendFinalize(d), std::string("cudnnBackendFinalize(") + what + ")");
}

using Dims = std::array<int64_t, 4>;

Dims packed(const Dims& d) { return {d[1] * d[2] * d[3], d[2] * d[3], d[3], 1}; }

// The descriptors of one operation graph, alive as long as the plan built from it.
struct Graph {
  explicit Graph(cudnnHandle_t h) : handle(h) {}
  cudnnHandle_t handle;
  std::vector<std::unique_ptr<Desc>> descs;
  std::vector<cudnnBackendDescriptor_t> ops;
  int64_t next_virtual = kFirstVirtual;

  cudnnBackendDescriptor_t make(cudnnBackendDescriptorType_t type, const char* what) {
    descs.push_back(std::make_unique<Desc>(type, what));
    return descs.back()->d;
  }

  cudnnBackendDescriptor_t tensor(int64_t uid, cudnnDataType_t dt, const Dims& dims, const Dims& strides,
                                  bool is_virtual, bool by_value = false) {
    cudnnBackendDescriptor_t t = make(CUDNN_BACKEND_TENSOR_DESCRIPTOR, "tensor");
    const int64_t alignment = 16;
    VLP_CUDNN_SET(t, CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &dt);
    VLP_CUDNN_SET(t, CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, 4, dims.data());
    VLP_CUDNN_SET(t, CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, 4, strides.data());
    VLP_CUDNN_SET(t, CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid);
    VLP_CUDNN_SET(t, CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &alignment);
    VLP_CUDNN_SET(t, CUDNN_ATTR_TENSOR_IS_VIRTUAL, CUDNN_TYPE_BOOLEAN, 1, &is_virtual);
    if (by_value) VLP_CUDNN_SET(t, CUDNN_ATTR_TENSOR_IS_BY_VALUE, CUDNN_TYPE_BOOLEAN, 1, &by_value);
    finalize(t, "tensor");
    return t;
  }
  cudnnBackendDescriptor_t virt(cudnnDataType_t dt, const Dims& dims) {
    return tensor(next_virtual++, dt, dims, packed(dims), true);
  }
  cudnnBackendDescriptor_t virt(cudnnDataType_t dt, const Dims& dims, const Dims& strides) {
    return tensor(next_virtual++, dt, dims, strides, true);
  }
  cudnnBackendDescriptor_t io(int64_t uid, const Dims& dims, const Dims& strides) {  // BF16 in memory
    return tensor(uid, CUDNN_DATA_BFLOAT16, dims, strides, false);
  }
  cudnnBackendDescriptor_t scalar(int64_t uid, cudnnDataType_t dt) {
    return tensor(uid, dt, {1, 1, 1, 1}, {1, 1, 1, 1}, false, true);
  }

  // y = mode(x[, b][, t]); axis >= 0 for GEN_INDEX.
  void pointwise(cudnnPointwiseMode_t mode, cudnnDataType_t math, cudnnBackendDescriptor_t x,
                 cudnnBackendDescriptor_t b, cudnnBackendDescriptor_t t, cudnnBackendDescriptor_t y,
                 int64_t axis = -1) {
    cudnnBackendDescriptor_t pw = make(CUDNN_BACKEND_POINTWISE_DESCRIPTOR, "pointwise");
    VLP_CUDNN_SET(pw, CUDNN_ATTR_POINTWISE_MODE, CUDNN_TYPE_POINTWISE_MODE, 1, &mode);
    VLP_CUDNN_SET(pw, CUDNN_ATTR_POINTWISE_MATH_PREC, CUDNN_TYPE_DATA_TYPE, 1, &math);
    if (axis >= 0) VLP_CUDNN_SET(pw, CUDNN_ATTR_POINTWISE_AXIS, CUDNN_TYPE_INT64, 1, &axis);
    finalize(pw, "pointwise");
    cudnnBackendDescriptor_t op = make(CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR, "pointwise operation");
    VLP_CUDNN_SET(op, CUDNN_ATTR_OPERATION_POINTWISE_PW_DESCRIPTOR, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &pw);
    VLP_CUDNN_SET(op, CUDNN_ATTR_OPERATION_POINTWISE_XDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &x);
    if (b) VLP_CUDNN_SET(op, CUDNN_ATTR_OPERATION_POINTWISE_BDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &b);
    if (t) VLP_CUDNN_SET(op, CUDNN_ATTR_OPERATION_POINTWISE_TDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &t);
    VLP_CUDNN_SET(op, CUDNN_ATTR_OPERATION_POINTWISE_YDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &y);
    const float one = 1.f;
    VLP_CUDNN_SET(op, CUDNN_ATTR_OPERATION_POINTWISE_ALPHA1, CUDNN_TYPE_FLOAT, 1, &one);
    VLP_CUDNN_SET(op, CUDNN_ATTR_OPERATION_POINTWISE_ALPHA2, CUDNN_TYPE_FLOAT, 1, &one);
    finalize(op, "pointwise operation");
    ops.push_back(op);
  }
  // A float [dims] result of mode(x, b): the scores chain.
  cudnnBackendDescriptor_t pw_float(cudnnPointwiseMode_t mode, const Dims& dims, cudnnBackendDescriptor_t x,
                                    cudnnBackendDescriptor_t b = nullptr) {
    cudnnBackendDescriptor_t y = virt(CUDNN_DATA_FLOAT, dims);
    pointwise(mode, CUDNN_DATA_FLOAT, x, b, nullptr, y);
    return y;
  }

  // c = a b over the batch dims [B, H]; overrides: per-batch M/N/K lengths (padding mask) or null.
  void matmul(cudnnBackendDescriptor_t a, cudnnBackendDescriptor_t b, cudnnBackendDescriptor_t c,
              cudnnBackendDescriptor_t m_override = nullptr, cudnnBackendDescriptor_t n_override = nullptr,
              cudnnBackendDescriptor_t k_override = nullptr) {
    cudnnBackendDescriptor_t mm = make(CUDNN_BACKEND_MATMUL_DESCRIPTOR, "matmul");
    const cudnnDataType_t f32 = CUDNN_DATA_FLOAT;
    VLP_CUDNN_SET(mm, CUDNN_ATTR_MATMUL_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &f32);
    finalize(mm, "matmul");
    cudnnBackendDescriptor_t op = make(CUDNN_BACKEND_OPERATION_MATMUL_DESCRIPTOR, "matmul operation");
    VLP_CUDNN_SET(op, CUDNN_ATTR_OPERATION_MATMUL_ADESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &a);
    VLP_CUDNN_SET(op, CUDNN_ATTR_OPERATION_MATMUL_BDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &b);
    VLP_CUDNN_SET(op, CUDNN_ATTR_OPERATION_MATMUL_CDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &c);
    VLP_CUDNN_SET(op, CUDNN_ATTR_OPERATION_MATMUL_DESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &mm);
    const cudnnBackendAttributeType_t desc = CUDNN_TYPE_BACKEND_DESCRIPTOR;
    if (m_override) VLP_CUDNN_SET(op, CUDNN_ATTR_OPERATION_MATMUL_GEMM_M_OVERRIDE_DESC, desc, 1, &m_override);
    if (n_override) VLP_CUDNN_SET(op, CUDNN_ATTR_OPERATION_MATMUL_GEMM_N_OVERRIDE_DESC, desc, 1, &n_override);
    if (k_override) VLP_CUDNN_SET(op, CUDNN_ATTR_OPERATION_MATMUL_GEMM_K_OVERRIDE_DESC, desc, 1, &k_override);
    finalize(op, "matmul operation");
    ops.push_back(op);
  }

  // y = reduce(x) over the dims where y has size 1 and x does not.
  void reduction(cudnnReduceTensorOp_t mode, cudnnBackendDescriptor_t x, cudnnBackendDescriptor_t y) {
    cudnnBackendDescriptor_t red = make(CUDNN_BACKEND_REDUCTION_DESCRIPTOR, "reduction");
    const cudnnDataType_t f32 = CUDNN_DATA_FLOAT;
    VLP_CUDNN_SET(red, CUDNN_ATTR_REDUCTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &f32);
    VLP_CUDNN_SET(red, CUDNN_ATTR_REDUCTION_OPERATOR, CUDNN_TYPE_REDUCTION_OPERATOR_TYPE, 1, &mode);
    finalize(red, "reduction");
    cudnnBackendDescriptor_t op = make(CUDNN_BACKEND_OPERATION_REDUCTION_DESCRIPTOR, "reduction operation");
    VLP_CUDNN_SET(op, CUDNN_ATTR_OPERATION_REDUCTION_DESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &red);
    VLP_CUDNN_SET(op, CUDNN_ATTR_OPERATION_REDUCTION_XDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &x);
    VLP_CUDNN_SET(op, CUDNN_ATTR_OPERATION_REDUCTION_YDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &y);
    finalize(op, "reduction operation");
    ops.push_back(op);
  }

  // y views x's elements with other dims/strides (a transpose here).
  void reshape(cudnnBackendDescriptor_t x, cudnnBackendDescriptor_t y) {
    cudnnBackendDescriptor_t op = make(CUDNN_BACKEND_OPERATION_RESHAPE_DESCRIPTOR, "reshape operation");
    VLP_CUDNN_SET(op, CUDNN_ATTR_OPERATION_RESHAPE_XDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &x);
    VLP_CUDNN_SET(op, CUDNN_ATTR_OPERATION_RESHAPE_YDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &y);
    finalize(op, "reshape operation");
    ops.push_back(op);
  }
};

// A finalized execution plan and everything it was built from.
struct Plan {
  std::vector<std::unique_ptr<Desc>> descs;
  cudnnBackendDescriptor_t plan = nullptr;
  int64_t workspace_bytes = 0;
};

std::string last_error(cudnnStatus_t st) {
  char detail[512] = "";
  cudnnGetLastErrorString(detail, sizeof detail);
  return std::string(cudnnGetErrorString(st)) + (detail[0] ? std::string(" (") + detail + ")" : std::string());
}

// Finalizes the operation graph and takes the first engine configuration (heuristics mode A, then the
// fallback list) that gives a plan.
std::unique_ptr<Plan> make_plan(Graph& g, const std::string& what) {
  cudnnBackendDescriptor_t graph = g.make(CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR, "operation graph");
  VLP_CUDNN_SET(graph, CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR, int64_t(g.ops.size()),
                g.ops.data());
  VLP_CUDNN_SET(graph, CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1, &g.handle);
  finalize(graph, "operation graph");
  std::string failures;
  for (cudnnBackendHeurMode_t mode : {CUDNN_HEUR_MODE_A, CUDNN_HEUR_MODE_FALLBACK}) {
    const char* mode_name = mode == CUDNN_HEUR_MODE_A ? "heuristics A" : "fallback";
    cudnnBackendDescriptor_t heur = g.make(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR, "engine heuristics");
    VLP_CUDNN_SET(heur, CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &graph);
    VLP_CUDNN_SET(heur, CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &mode);
    if (cudnnStatus_t st = cudnnBackendFinalize(heur); st != CUDNN_STATUS_SUCCESS) {
      failures += std::string("; ") + mode_name + ": " + last_error(st);
      continue;
    }
    int64_t count = 0;
    cudnn_check(cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, 0, &count,
                                         nullptr),
                "cudnnBackendGetAttribute(CUDNN_ATTR_ENGINEHEUR_RESULTS count)");
    std::vector<cudnnBackendDescriptor_t> configs;
    for (int64_t i = 0; i < count; ++i) configs.push_back(g.make(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR, "engine config"));
    int64_t got = 0;
    if (count > 0)
      cudnn_check(cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, count,
                                           &got, configs.data()),
                  "cudnnBackendGetAttribute(CUDNN_ATTR_ENGINEHEUR_RESULTS)");
    if (got == 0) failures += std::string("; ") + mode_name + ": no engine configurations";
    for (int64_t i = 0; i < got; ++i) {
      auto plan = std::make_unique<Desc>(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR, "execution plan");
      VLP_CUDNN_SET(plan->d, CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1, &g.handle);
      VLP_CUDNN_SET(plan->d, CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &configs[i]);
      if (cudnnStatus_t st = cudnnBackendFinalize(plan->d); st != CUDNN_STATUS_SUCCESS) {
        if (i < 3) failures += std::string("; ") + mode_name + " config " + std::to_string(i) + ": " + last_error(st);
        continue;
      }
      auto result = std::make_unique<Plan>();
      int64_t n = 0;
      cudnn_check(cudnnBackendGetAttribute(plan->d, CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE, CUDNN_TYPE_INT64, 1, &n,
                                           &result->workspace_bytes),
                  "cudnnBackendGetAttribute(CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE)");
      result->plan = plan->d;
      result->descs = std::move(g.descs);
      result->descs.push_back(std::move(plan));
      return result;
    }
  }
  throw std::runtime_error("cuDNN attention: no cuDNN engine takes this " + what + " graph (cuDNN " +
                           std::to_string(cudnnGetVersion()) + ")" + failures);
}

// What a graph depends on (pointers and the scale are execution-time values).
struct Config {
  int64_t B = 0, H = 0, Tq = 0, Tk = 0, D = 0, Dv = 0;
  int64_t q_strides[3] = {}, k_strides[3] = {}, v_strides[3] = {};
  bool bias = false;
  Dims bias_dims{}, bias_strides{};
  Dims dbias_strides{};  // of the tensor cuDNN writes dbias into (backward with dbias)
  bool causal = false, dbias = false, padding = false;

  std::vector<int64_t> key(int direction, int device) const {
    std::vector<int64_t> k{direction, device, B, H, Tq, Tk, D, Dv, bias, causal, dbias, padding};
    for (int d = 0; d < 3; ++d) k.insert(k.end(), {q_strides[d], k_strides[d], v_strides[d]});
    for (int d = 0; d < 4; ++d) k.insert(k.end(), {bias_dims[d], bias_strides[d], dbias_strides[d]});
    return k;
  }
  std::string describe() const {
    std::string d = "B " + std::to_string(B) + ", H " + std::to_string(H) + ", Tq " + std::to_string(Tq) + ", Tk " +
                    std::to_string(Tk) + ", D " + std::to_string(D) + ", Dv " + std::to_string(Dv);
    if (bias) d += ", bias [" + std::to_string(bias_dims[0]) + ", " + std::to_string(bias_dims[1]) + ", Tq, Tk]";
    return d + (causal ? ", causal" : "") + (dbias ? ", dbias" : "") + (padding ? ", full-length padding mask" : "");
  }
  Dims scores() const { return {B, H, Tq, Tk}; }
  Dims row_stats() const { return {B, H, Tq, 1}; }
};

// Before cuDNN 9.10 the masks write the lowest float rather than -inf.
float mask_value() {
  return cudnnGetVersion() < 91000 ? std::numeric_limits<float>::lowest() : -std::numeric_limits<float>::infinity();
}

cudnnBackendDescriptor_t causal_mask(Graph& g, const Config& c, cudnnBackendDescriptor_t s,
                                     cudnnBackendDescriptor_t neg_inf) {
  cudnnBackendDescriptor_t row = g.virt(CUDNN_DATA_INT32, c.scores()), col = g.virt(CUDNN_DATA_INT32, c.scores());
  g.pointwise(CUDNN_POINTWISE_GEN_INDEX, CUDNN_DATA_FLOAT, s, nullptr, nullptr, row, 2);
  g.pointwise(CUDNN_POINTWISE_GEN_INDEX, CUDNN_DATA_FLOAT, s, nullptr, nullptr, col, 3);
  cudnnBackendDescriptor_t visible = g.virt(CUDNN_DATA_BOOLEAN, c.scores());
  g.pointwise(CUDNN_POINTWISE_CMP_GE, CUDNN_DATA_BOOLEAN, row, col, nullptr, visible);
  cudnnBackendDescriptor_t y = g.virt(CUDNN_DATA_FLOAT, c.scores());
  g.pointwise(CUDNN_POINTWISE_BINARY_SELECT, CUDNN_DATA_FLOAT, s, neg_inf, visible, y);
  return y;
}

// Keeps scores with row < seq_q[b] and col < seq_kv[b] ([B, 1, 1, 1] INT32 tensors).
cudnnBackendDescriptor_t padding_mask(Graph& g, const Config& c, cudnnBackendDescriptor_t s,
                                      cudnnBackendDescriptor_t seq_q, cudnnBackendDescriptor_t seq_kv,
                                      cudnnBackendDescriptor_t neg_inf) {
  cudnnBackendDescriptor_t row = g.virt(CUDNN_DATA_INT32, c.scores()), col = g.virt(CUDNN_DATA_INT32, c.scores());
  g.pointwise(CUDNN_POINTWISE_GEN_INDEX, CUDNN_DATA_INT32, s, nullptr, nullptr, row, 2);
  g.pointwise(CUDNN_POINTWISE_GEN_INDEX, CUDNN_DATA_INT32, s, nullptr, nullptr, col, 3);
  cudnnBackendDescriptor_t row_in = g.virt(CUDNN_DATA_BOOLEAN, c.scores());
  cudnnBackendDescriptor_t col_in = g.virt(CUDNN_DATA_BOOLEAN, c.scores());
  g.pointwise(CUDNN_POINTWISE_CMP_LT, CUDNN_DATA_BOOLEAN, row, seq_q, nullptr, row_in);
  g.pointwise(CUDNN_POINTWISE_CMP_LT, CUDNN_DATA_BOOLEAN, col, seq_kv, nullptr, col_in);
  cudnnBackendDescriptor_t inside = g.virt(CUDNN_DATA_BOOLEAN, c.scores());
  g.pointwise(CUDNN_POINTWISE_LOGICAL_AND, CUDNN_DATA_BOOLEAN, row_in, col_in, nullptr, inside);
  cudnnBackendDescriptor_t y = g.virt(CUDNN_DATA_FLOAT, c.scores());
  g.pointwise(CUDNN_POINTWISE_BINARY_SELECT, CUDNN_DATA_FLOAT, s, neg_inf, inside, y);
  return y;
}

Dims strides_of(const int64_t s[3], bool transposed) {  // [B, H, rows, cols] with unit cols
  return transposed ? Dims{s[0], s[1], 1, s[2]} : Dims{s[0], s[1], s[2], 1};
}

std::unique_ptr<Plan> build_forward(cudnnHandle_t handle, const Config& c) {
  Graph g(handle);
  const Dims S = c.scores();
  cudnnBackendDescriptor_t q = g.io(kQ, {c.B, c.H, c.Tq, c.D}, strides_of(c.q_strides, false));
  cudnnBackendDescriptor_t kt = g.io(kK, {c.B, c.H, c.D, c.Tk}, strides_of(c.k_strides, true));
  cudnnBackendDescriptor_t v = g.io(kV, {c.B, c.H, c.Tk, c.Dv}, strides_of(c.v_strides, false));
  const Dims o_dims{c.B, c.H, c.Tq, c.Dv};
  cudnnBackendDescriptor_t o = g.io(kO, o_dims, packed(o_dims));
  cudnnBackendDescriptor_t stats = g.tensor(kStats, CUDNN_DATA_FLOAT, c.row_stats(), packed(c.row_stats()), false);
  cudnnBackendDescriptor_t scale = g.scalar(kScale, CUDNN_DATA_FLOAT);

  cudnnBackendDescriptor_t s = g.virt(CUDNN_DATA_FLOAT, S);
  g.matmul(q, kt, s);
  s = g.pw_float(CUDNN_POINTWISE_MUL, S, s, scale);
  if (c.bias)
    s = g.pw_float(CUDNN_POINTWISE_ADD, S, s,
                   g.io(kBias, c.bias_dims, c.bias_strides));
  if (c.causal) s = causal_mask(g, c, s, g.scalar(kNegInf, CUDNN_DATA_FLOAT));

  // Softmax with its stats (natural-log LSE).
  cudnnBackendDescriptor_t row_max = g.virt(CUDNN_DATA_FLOAT, c.row_stats());
  g.reduction(CUDNN_REDUCE_TENSOR_MAX, s, row_max);
  cudnnBackendDescriptor_t e = g.pw_float(CUDNN_POINTWISE_EXP, S, g.pw_float(CUDNN_POINTWISE_SUB, S, s, row_max));
  cudnnBackendDescriptor_t row_sum = g.virt(CUDNN_DATA_FLOAT, c.row_stats());
  g.reduction(CUDNN_REDUCE_TENSOR_ADD, e, row_sum);
  g.pointwise(CUDNN_POINTWISE_ADD, CUDNN_DATA_FLOAT, row_max, g.pw_float(CUDNN_POINTWISE_LOG, c.row_stats(), row_sum),
              nullptr, stats);
  cudnnBackendDescriptor_t p = g.virt(CUDNN_DATA_BFLOAT16, S);  // the second matmul reads P in the I/O type
  g.pointwise(CUDNN_POINTWISE_DIV, CUDNN_DATA_FLOAT, e, row_sum, nullptr, p);
  g.matmul(p, v, o);
  return make_plan(g, "forward");
}

std::unique_ptr<Plan> build_backward(cudnnHandle_t handle, const Config& c) {
  Graph g(handle);
  const Dims S = c.scores(), ST{c.B, c.H, c.Tk, c.Tq}, ST_strides{c.H * c.Tq * c.Tk, c.Tq * c.Tk, 1, c.Tk};
  cudnnBackendDescriptor_t q = g.io(kQ, {c.B, c.H, c.Tq, c.D}, strides_of(c.q_strides, false));
  cudnnBackendDescriptor_t kt = g.io(kK, {c.B, c.H, c.D, c.Tk}, strides_of(c.k_strides, true));
  cudnnBackendDescriptor_t vt = g.io(kV, {c.B, c.H, c.Dv, c.Tk}, strides_of(c.v_strides, true));
  const Dims o_dims{c.B, c.H, c.Tq, c.Dv}, dq_dims{c.B, c.H, c.Tq, c.D};
  const Dims dk_dims{c.B, c.H, c.Tk, c.D}, dv_dims{c.B, c.H, c.Tk, c.Dv};
  cudnnBackendDescriptor_t o = g.io(kO, o_dims, packed(o_dims));
  cudnnBackendDescriptor_t d_o = g.io(kDO, o_dims, packed(o_dims));
  cudnnBackendDescriptor_t stats = g.tensor(kStats, CUDNN_DATA_FLOAT, c.row_stats(), packed(c.row_stats()), false);
  cudnnBackendDescriptor_t dq = g.io(kDQ, dq_dims, packed(dq_dims));
  cudnnBackendDescriptor_t dk = g.io(kDK, dk_dims, packed(dk_dims));
  cudnnBackendDescriptor_t dv = g.io(kDV, dv_dims, packed(dv_dims));
  cudnnBackendDescriptor_t scale = g.scalar(kScale, CUDNN_DATA_FLOAT);
  cudnnBackendDescriptor_t one = g.scalar(kOne, CUDNN_DATA_FLOAT);
  cudnnBackendDescriptor_t neg_inf = c.causal || c.padding ? g.scalar(kNegInf, CUDNN_DATA_FLOAT) : nullptr;
  cudnnBackendDescriptor_t seq_q = nullptr, seq_kv = nullptr;
  if (c.padding) {
    seq_q = g.tensor(kSeqQ, CUDNN_DATA_INT32, {c.B, 1, 1, 1}, {1, 1, 1, 1}, false);
    seq_kv = g.tensor(kSeqKV, CUDNN_DATA_INT32, {c.B, 1, 1, 1}, {1, 1, 1, 1}, false);
  }

  // softmax_sum = sum_d dO * O (times the inverse dropout scale, 1 here), a float buffer of ours.
  cudnnBackendDescriptor_t do_o = g.pw_float(CUDNN_POINTWISE_MUL, o_dims, d_o, o);
  cudnnBackendDescriptor_t do_o_sum = g.virt(CUDNN_DATA_FLOAT, c.row_stats());
  g.reduction(CUDNN_REDUCE_TENSOR_ADD, do_o, do_o_sum);
  cudnnBackendDescriptor_t softmax_sum =
      g.tensor(kSoftmaxSum, CUDNN_DATA_FLOAT, c.row_stats(), packed(c.row_stats()), false);
  g.pointwise(CUDNN_POINTWISE_MUL, CUDNN_DATA_FLOAT, do_o_sum, one, nullptr, softmax_sum);

  // P recomputed from the stats.
  cudnnBackendDescriptor_t s = g.virt(CUDNN_DATA_FLOAT, S);
  g.matmul(q, kt, s, seq_q, seq_kv);
  s = g.pw_float(CUDNN_POINTWISE_MUL, S, s, scale);
  if (c.bias)
    s = g.pw_float(CUDNN_POINTWISE_ADD, S, s,
                   g.io(kBias, c.bias_dims, c.bias_strides));
  if (c.padding) s = padding_mask(g, c, s, seq_q, seq_kv, neg_inf);
  s = g.pw_float(CUDNN_POINTWISE_SUB, S, s, stats);
  if (c.padding && cudnnGetVersion() >= 90000 && cudnnGetVersion() < 91000)
    s = padding_mask(g, c, s, seq_q, seq_kv, neg_inf);
  if (c.causal) s = causal_mask(g, c, s, neg_inf);
  cudnnBackendDescriptor_t p = g.pw_float(CUDNN_POINTWISE_EXP, S, s);

  // dV = P^T dO.
  cudnnBackendDescriptor_t pt = g.virt(CUDNN_DATA_BFLOAT16, ST, ST_strides);
  g.reshape(p, pt);
  g.matmul(pt, d_o, dv, seq_kv, nullptr, seq_q);

  // dS = (dO V^T - softmax_sum) * P; dbias; dK = (dS scale)^T Q; dQ = (dS scale) K.
  cudnnBackendDescriptor_t dp = g.virt(CUDNN_DATA_FLOAT, S);
  g.matmul(d_o, vt, dp, seq_q, seq_kv);
  cudnnBackendDescriptor_t ds =
      g.pw_float(CUDNN_POINTWISE_MUL, S, g.pw_float(CUDNN_POINTWISE_SUB, S, dp, softmax_sum), p);
  if (c.dbias)
    g.reduction(CUDNN_REDUCE_TENSOR_ADD, ds, g.io(kDBias, c.bias_dims, c.dbias_strides));
  ds = g.pw_float(CUDNN_POINTWISE_MUL, S, ds, scale);
  cudnnBackendDescriptor_t dst = g.virt(CUDNN_DATA_BFLOAT16, ST, ST_strides);
  g.reshape(ds, dst);
  g.matmul(dst, q, dk, seq_kv, nullptr, seq_q);
  cudnnBackendDescriptor_t k = g.virt(CUDNN_DATA_FLOAT, {c.B, c.H, c.Tk, c.D}, strides_of(c.k_strides, false));
  g.reshape(kt, k);
  if (c.dbias) {
    g.matmul(ds, k, dq, seq_q, nullptr, seq_kv);
  } else {
    cudnnBackendDescriptor_t dq_accum = g.tensor(kDQAccum, CUDNN_DATA_FLOAT, dq_dims, packed(dq_dims), false);
    g.matmul(ds, k, dq_accum, seq_q, nullptr, seq_kv);
    g.pointwise(CUDNN_POINTWISE_IDENTITY, CUDNN_DATA_FLOAT, dq_accum, nullptr, nullptr, dq);
  }
  return make_plan(g, "backward");
}

// Per device: the handle (created on first use), the plan cache, and a lock around both (the handle's
// stream binding and execution included).
struct DeviceCudnn {
  std::mutex mutex;
  cudnnHandle_t handle = nullptr;
  std::map<std::vector<int64_t>, std::unique_ptr<Plan>> plans;
};

DeviceCudnn& device_cudnn(int device) {
  static DeviceCudnn states[kMaxDevices];
  if (device < 0 || device >= kMaxDevices)
    throw std::runtime_error("cuDNN attention: device " + std::to_string(device) + " out of range");
  return states[device];
}

// The plan for key, built on first use; a failure names the configuration.
template <class Build>
const Plan& cached_plan(DeviceCudnn& st, const std::vector<int64_t>& key, const Config& c, Build&& build) {
  if (!st.handle) cudnn_check(cudnnCreate(&st.handle), "cudnnCreate");
  auto it = st.plans.find(key);
  if (it == st.plans.end()) {
    try {
      it = st.plans.emplace(key, build(st.handle)).first;
    } catch (const std::runtime_error& e) {
      throw std::runtime_error(std::string(e.what()) + " [while building the " + (key[0] ? "backward" : "forward") +
                               " plan for " + c.describe() + "]");
    }
  }
  return *it->second;
}

void execute(DeviceCudnn& st, const Plan& plan, const std::vector<int64_t>& uids, const std::vector<void*>& ptrs,
             int device, cudaStream_t stream, const char* what) {
  cudnn_check(cudnnSetStream(st.handle, stream), "cudnnSetStream");
  DeviceBuffer workspace(size_t(plan.workspace_bytes > 0 ? plan.workspace_bytes : 1), device, stream);
  Desc pack(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR, "variant pack");
  VLP_CUDNN_SET(pack.d, CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, int64_t(uids.size()), uids.data());
  VLP_CUDNN_SET(pack.d, CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, int64_t(ptrs.size()), ptrs.data());
  VLP_CUDNN_SET(pack.d, CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &workspace.ptr);
  finalize(pack.d, "variant pack");
  cudnn_check(cudnnBackendExecute(st.handle, plan.plan, pack.d), std::string("cudnnBackendExecute(") + what + ")");
}

int64_t round8(int64_t n) { return (n + 7) / 8 * 8; }

// The additive bias cuDNN reads: the caller's bias where cuDNN can read it as it is, else a BF16 scratch
// [dims] with rows padded to 8 elements holding the bias (or 0) where the key is kept and the mask value
// where it is not. want_b / want_h: the dbias dims the backward writes (1 in the forward).
struct ScoreBias {
  const void* ptr = nullptr;
  Dims dims{}, strides{};
  std::unique_ptr<DeviceBuffer> scratch, scalars;
};

ScoreBias score_bias(const AttentionArgs& a, int64_t want_b, int64_t want_h, int device, cudaStream_t stream) {
  ScoreBias r;
  if (!a.bias && !a.key_keep) return r;
  const int64_t* bs = a.bias_strides;
  const int64_t own_b = a.bias && bs[0] != 0 ? a.B : 1, own_h = a.bias && bs[1] != 0 ? a.H : 1;
  const int64_t nb = a.key_keep ? a.B : std::max(own_b, want_b), nh = std::max(own_h, want_h);
  r.dims = {nb, nh, a.Tq, a.Tk};
  const bool direct = !a.key_keep && nb == own_b && nh == own_h && aligned16(a.bias) && bs[3] == 1 &&
                      (bs[2] % 8 == 0 && (bs[2] >= a.Tk || a.Tq == 1)) && bs[0] % 8 == 0 && bs[1] % 8 == 0;
  if (direct) {
    r.ptr = a.bias;
    const Dims p = packed(r.dims);
    r.strides = {nb > 1 ? bs[0] : p[0], nh > 1 ? bs[1] : p[1], a.Tq > 1 ? bs[2] : p[2], 1};
    return r;
  }
  const int64_t row = round8(a.Tk);
  r.strides = {nh * a.Tq * row, a.Tq * row, row, 1};
  r.scratch = std::make_unique<DeviceBuffer>(size_t(nb * nh * a.Tq * row) * 2, device, stream);
  r.ptr = r.scratch->ptr;
  const std::vector<int64_t> shape{nb, nh, a.Tq, a.Tk};
  if (!a.key_keep) {
    copy_strided(kCopyBF16, r.scratch->ptr, r.strides.data(), kCopyBF16, a.bias, bs, shape, stream);
    return r;
  }
  // scalars[0] = 0 (no bias), scalars[1] = the mask value.
  r.scalars = std::make_unique<DeviceBuffer>(4, device, stream);
  const int64_t unit = 1;
  const std::vector<int64_t> one{1};
  fill_strided(kCopyBF16, r.scalars->ptr, &unit, one, 0.0, stream);
  const double masked = cudnnGetVersion() < 91000 ? -3.3895313892515355e38 : -std::numeric_limits<double>::infinity();
  fill_strided(kCopyBF16, static_cast<char*>(r.scalars->ptr) + 2, &unit, one, masked, stream);
  const int64_t keep_strides[4] = {a.Tk, 0, 0, 1}, zero[4] = {0, 0, 0, 0};
  const void* kept = a.bias ? a.bias : r.scalars->ptr;
  where(EwDType::BF16, shape, r.scratch->ptr, r.strides.data(), a.key_keep, keep_strides, kept, a.bias ? bs : zero,
        static_cast<char*>(r.scalars->ptr) + 2, zero, stream);
  return r;
}

Config config_for(const AttentionArgs& a, const ScoreBias& bias) {
  Config c;
  c.B = a.B, c.H = a.H, c.Tq = a.Tq, c.Tk = a.Tk, c.D = a.D, c.Dv = a.Dv;
  for (int d = 0; d < 3; ++d)
    c.q_strides[d] = a.q_strides[d], c.k_strides[d] = a.k_strides[d], c.v_strides[d] = a.v_strides[d];
  c.bias = bias.ptr != nullptr;
  if (c.bias) c.bias_dims = bias.dims, c.bias_strides = bias.strides;
  c.causal = a.causal;
  return c;
}

void require_aligned(const void* p, const char* name) {
  if (p && !aligned16(p))
    throw std::runtime_error(std::string("cuDNN attention (VLP_ATTENTION=cudnn): ") + name +
                             " must start at a 16-byte aligned address");
}

}  // namespace

bool cudnn_built() { return true; }
int64_t cudnn_version() { return int64_t(cudnnGetVersion()); }

void cudnn_attention_forward(const AttentionArgs& a, void* out, float* lse, cudaStream_t stream) {
  NvtxRange nvtx("vlp::cuda::cudnn_attention_forward");
  cudnn_attention_check(a, false);
  require_aligned(out, "out");
  require_aligned(lse, "lse");
  if (a.B * a.H * a.Tq == 0) return;
  const int device = current_device();
  ScoreBias bias = score_bias(a, 1, 1, device, stream);
  const Config c = config_for(a, bias);
  DeviceCudnn& st = device_cudnn(device);
  std::lock_guard<std::mutex> lock(st.mutex);
  const Plan& plan = cached_plan(st, c.key(0, device), c, [&](cudnnHandle_t h) { return build_forward(h, c); });
  float scale = float(a.scale), neg_inf = mask_value();
  std::vector<int64_t> uids{kQ, kK, kV, kO, kStats, kScale};
  std::vector<void*> ptrs{const_cast<void*>(a.q), const_cast<void*>(a.k), const_cast<void*>(a.v), out, lse, &scale};
  if (c.bias) uids.push_back(kBias), ptrs.push_back(const_cast<void*>(bias.ptr));
  if (c.causal) uids.push_back(kNegInf), ptrs.push_back(&neg_inf);
  execute(st, plan, uids, ptrs, device, stream, "forward");
}

void cudnn_attention_backward(const AttentionArgs& a, const void* out, const float* lse, const void* dout, void* dq,
                              void* dk, void* dv, void* dbias, int64_t dbias_B, int64_t dbias_H,
                              cudaStream_t stream) {
  NvtxRange nvtx("vlp::cuda::cudnn_attention_backward");
  cudnn_attention_check(a, true, dbias, dbias_B, dbias_H);
  require_aligned(out, "out");
  require_aligned(lse, "lse");
  require_aligned(dout, "dout");
  require_aligned(dq, "dq");
  require_aligned(dk, "dk");
  require_aligned(dv, "dv");
  if (a.B * a.H * a.Tq == 0) return;
  const int device = current_device();
  ScoreBias bias = score_bias(a, dbias ? dbias_B : 1, dbias ? dbias_H : 1, device, stream);
  Config c = config_for(a, bias);
  c.dbias = dbias != nullptr;
  c.padding = cudnnGetVersion() <= 91500 && a.Tk % 128 != 0;
  // dbias straight into the caller's tensor when its layout is the bias's with 16-byte rows; else into a
  // padded scratch, summed over the batch when the key mask widened the bias, then copied.
  const bool dbias_direct = dbias && bias.dims[0] == dbias_B && a.Tk % 8 == 0 && aligned16(dbias);
  const int64_t row = round8(a.Tk);
  const Dims padded_dbias{bias.dims[1] * a.Tq * row, a.Tq * row, row, 1};
  std::unique_ptr<DeviceBuffer> dbias_scratch;
  if (dbias) {
    c.dbias_strides = dbias_direct ? packed(bias.dims) : padded_dbias;
    if (!dbias_direct)
      dbias_scratch = std::make_unique<DeviceBuffer>(size_t(bias.dims[0] * bias.dims[1] * a.Tq * round8(a.Tk)) * 2,
                                                     device, stream);
  }
  // cuDNN writes dq, dk and dv together: scratch for the ones the caller does not want.
  std::unique_ptr<DeviceBuffer> dq_tmp, dk_tmp, dv_tmp;
  auto scratch_if_null = [&](void*& p, std::unique_ptr<DeviceBuffer>& tmp, int64_t elements) {
    if (p) return;
    tmp = std::make_unique<DeviceBuffer>(size_t(elements) * 2, device, stream);
    p = tmp->ptr;
  };
  scratch_if_null(dq, dq_tmp, a.B * a.H * a.Tq * a.D);
  scratch_if_null(dk, dk_tmp, a.B * a.H * a.Tk * a.D);
  scratch_if_null(dv, dv_tmp, a.B * a.H * a.Tk * a.Dv);
  DeviceBuffer softmax_sum(size_t(a.B * a.H * a.Tq) * sizeof(float), device, stream);
  std::unique_ptr<DeviceBuffer> dq_accum, seq_lens;
  if (!c.dbias) {
    const size_t bytes = size_t(a.B * a.H * a.Tq * a.D) * sizeof(float);
    dq_accum = std::make_unique<DeviceBuffer>(bytes, device, stream);
    check(cudaMemsetAsync(dq_accum->ptr, 0, bytes, stream), "cuDNN attention: zeroing the dq accumulator");
  }
  if (c.padding) {  // seq_len_q = Tq, seq_len_kv = Tk for every batch
    seq_lens = std::make_unique<DeviceBuffer>(size_t(2 * a.B) * sizeof(int32_t), device, stream);
    const int64_t unit = 1;
    fill_strided(kCopyI32, seq_lens->ptr, &unit, {a.B}, double(a.Tq), stream);
    fill_strided(kCopyI32, static_cast<int32_t*>(seq_lens->ptr) + a.B, &unit, {a.B}, double(a.Tk), stream);
  }

  DeviceCudnn& st = device_cudnn(device);
  {
    std::lock_guard<std::mutex> lock(st.mutex);
    const Plan& plan = cached_plan(st, c.key(1, device), c, [&](cudnnHandle_t h) { return build_backward(h, c); });
    float scale = float(a.scale), neg_inf = mask_value(), one = 1.f;
    std::vector<int64_t> uids{kQ, kK, kV, kO, kDO, kStats, kDQ, kDK, kDV, kScale, kOne, kSoftmaxSum};
    std::vector<void*> ptrs{const_cast<void*>(a.q), const_cast<void*>(a.k), const_cast<void*>(a.v),
                            const_cast<void*>(out), const_cast<void*>(dout), const_cast<float*>(lse), dq, dk, dv,
                            &scale, &one, softmax_sum.ptr};
    if (c.bias) uids.push_back(kBias), ptrs.push_back(const_cast<void*>(bias.ptr));
    if (c.causal || c.padding) uids.push_back(kNegInf), ptrs.push_back(&neg_inf);
    if (c.padding) {
      uids.insert(uids.end(), {kSeqQ, kSeqKV});
      ptrs.insert(ptrs.end(), {seq_lens->ptr, static_cast<int32_t*>(seq_lens->ptr) + a.B});
    }
    if (c.dbias) uids.push_back(kDBias), ptrs.push_back(dbias_direct ? dbias : dbias_scratch->ptr);
    else uids.push_back(kDQAccum), ptrs.push_back(dq_accum->ptr);
    execute(st, plan, uids, ptrs, device, stream, "backward");
  }

  if (dbias && !dbias_direct) {
    const void* src = dbias_scratch->ptr;
    std::unique_ptr<DeviceBuffer> summed;
    const int64_t per_batch = padded_dbias[0];
    if (bias.dims[0] != dbias_B) {  // the key mask gave the bias a batch dim the caller's bias lacks
      summed = std::make_unique<DeviceBuffer>(size_t(per_batch) * 2, device, stream);
      sum_dim(EwDType::BF16, src, summed->ptr, 1, bias.dims[0], per_batch, stream);
      src = summed->ptr;
    }
    const Dims dst_strides = packed({dbias_B, dbias_H, a.Tq, a.Tk});
    copy_strided(kCopyBF16, dbias, dst_strides.data(), kCopyBF16, src, padded_dbias.data(),
                 {dbias_B, dbias_H, a.Tq, a.Tk}, stream);
  }
}

}  // namespace vlp::cuda

#endif  // VLP_HAVE_CUDNN
