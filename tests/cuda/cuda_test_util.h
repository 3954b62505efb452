// Helpers for the CUDA tests: the skip rule, inputs uploaded to the GPU, poisoned outputs, and the
// relative-error comparison against the CPU reference.
//
// compare_graph runs one autograd graph on the CPU and on the GPU and compares outputs and gradients.
//
// Every test that needs a GPU starts with VLP_REQUIRE_GPU(): without a device it skips with "no CUDA
// device: <reason>", unless VLP_REQUIRE_CUDA=1 is set (tools/gpu-check.sh), where a skip would hide a
// broken setup, so it fails instead.
#pragma once
#ifdef VLP_HAVE_CUDA
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "autograd/ops.h"
#include "kernels/cuda/attention.h"
#include "kernels/cuda/elementwise.h"
#include "kernels/cuda/runtime.h"
#include "runtime/device_copy.h"
#include "runtime/rng.h"
#include "runtime/tensor.h"

namespace vlp::cudatest {

// Selects an attention implementation (VLP_ATTENTION's choices) for a scope.
struct ImplGuard {
  explicit ImplGuard(cuda::AttentionImpl impl) : saved(cuda::attention_impl()) { cuda::set_attention_impl(impl); }
  ~ImplGuard() { cuda::set_attention_impl(saved); }
  ImplGuard(const ImplGuard&) = delete;
  ImplGuard& operator=(const ImplGuard&) = delete;
  cuda::AttentionImpl saved;
};

// Batch, head and row strides of an attention operand [B, H, T, width] stored as it is, or (bthd) as
// [B, T, H, width]: strided heads, as after a projection's reshape.
inline void attention_strides(bool bthd, int64_t H, int64_t T, int64_t width, int64_t out[3]) {
  if (bthd) out[0] = T * H * width, out[1] = width, out[2] = H * width;
  else out[0] = H * T * width, out[1] = T * width, out[2] = width;
}

inline bool cuda_required() {
  const char* v = std::getenv("VLP_REQUIRE_CUDA");
  return v != nullptr && std::strcmp(v, "0") != 0 && v[0] != '\0';
}

#define VLP_REQUIRE_GPU()                                                                                   \
  do {                                                                                                      \
    if (!::vlp::cuda_available()) {                                                                         \
      if (::vlp::cudatest::cuda_required()) FAIL() << "VLP_REQUIRE_CUDA is set but " << ::vlp::cuda_unavailable_reason(); \
      GTEST_SKIP() << "no CUDA device: " << ::vlp::cuda_unavailable_reason();                                \
    }                                                                                                       \
  } while (0)

inline Device gpu() { return Device::cuda(0); }
inline cudaStream_t stream() { return cuda::current_stream(0); }
inline cuda::EwDType ew(DType dt) { return dt == DType::BF16 ? cuda::EwDType::BF16 : cuda::EwDType::F32; }

// A CPU F32 tensor of uniform values in [lo, hi), rounded through dt (so that the CPU reference sees
// exactly the values the GPU gets), and its copy on the GPU in dt.
struct Input {
  Tensor cpu;  // F32, CPU
  Tensor dev;  // dt, GPU
  const float* c() const { return cpu.data<float>(); }
  void* d() const { return dev.data_ptr(); }
};

inline Input make_input(const Shape& shape, uint64_t seed, DType dt = DType::F32, double lo = -1.0, double hi = 1.0) {
  Generator gen(seed);
  Tensor c = empty(shape, DType::F32);
  uniform_(c, lo, hi, &gen);
  if (dt != DType::F32) c = convert(convert(c, dt), DType::F32);
  return {c, convert(c, dt, gpu())};
}

// An output buffer on the GPU filled with NaN (or 0x5A bytes for non-floating dtypes), so any element a
// kernel fails to write shows up in the comparison.
inline Tensor poisoned(const Shape& shape, DType dt = DType::F32) {
  Tensor t = empty(shape, dt, gpu());
  if (is_floating(dt)) fill_(t, std::numeric_limits<double>::quiet_NaN());
  else cuda::check(cudaMemsetAsync(t.data_ptr(), 0x5A, size_t(t.numel()) * t.element_size(), stream()), "poison");
  return t;
}

// ||a - b|| / ||b|| <= tol, every element of a finite where b is; reports the worst element.
inline ::testing::AssertionResult rel_close(const std::vector<double>& a, const std::vector<double>& b, double tol,
                                            const std::string& what = "") {
  if (a.size() != b.size())
    return ::testing::AssertionFailure() << what << ": " << a.size() << " values vs " << b.size() << " expected";
  double num = 0, den = 0, worst = -1;
  size_t worst_i = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::isfinite(b[i]) && !std::isfinite(a[i]))
      return ::testing::AssertionFailure() << what << ": element " << i << " is " << a[i] << ", expected " << b[i]
                                           << " (unwritten or overflow)";
    if (std::isnan(b[i]) != std::isnan(a[i]))
      return ::testing::AssertionFailure() << what << ": element " << i << " is " << a[i] << ", expected " << b[i];
    if (!std::isfinite(b[i])) continue;
    double d = a[i] - b[i];
    num += d * d;
    den += b[i] * b[i];
    if (std::abs(d) > worst) worst = std::abs(d), worst_i = i;
  }
  double rel = std::sqrt(num) / std::max(std::sqrt(den), 1e-30);
  if (den == 0 && num == 0) rel = 0;
  if (rel <= tol) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << what << ": relative error " << rel << " > " << tol << "; worst element "
                                       << worst_i << ": " << a[worst_i] << " vs " << b[worst_i];
}

inline ::testing::AssertionResult rel_close(const Tensor& gpu_out, const Tensor& cpu_ref, double tol,
                                            const std::string& what = "") {
  return rel_close(to_vector(gpu_out), to_vector(cpu_ref), tol, what);
}

template <class T>
std::vector<double> as_doubles(const T* p, size_t n) {
  return std::vector<double>(p, p + n);
}

inline double tol_for(DType dt) { return dt == DType::BF16 ? 1e-2 : 1e-5; }

// Device memory for raw float / int64 arrays used by kernels with stats outputs.
inline Tensor gpu_f32(int64_t n) { return poisoned({n}, DType::F32); }
inline Tensor upload_i64(const std::vector<int64_t>& v) {
  return from_data<int64_t>(v, {int64_t(v.size())}, gpu());
}

// The tolerance for a graph of several ops: BF16 rounds after every op on both devices, differently.
inline double graph_tol(DType dt) { return dt == DType::BF16 ? 3e-2 : 1e-5; }

// Runs build(inputs on dev) on the CPU and the GPU with the same values, backward through
// sum(out * weights) (fresh weights: every output element gets its own gradient), and compares outputs
// and input gradients.
template <class Build>
void compare_graph(const std::vector<Shape>& shapes, DType dt, uint64_t seed, Build&& build, const std::string& what) {
  std::vector<Input> in;
  for (size_t i = 0; i < shapes.size(); ++i) in.push_back(make_input(shapes[i], seed + i, dt));
  auto run = [&](Device dev) {
    std::vector<Tensor> xs;
    for (const Input& x : in) {
      xs.push_back(convert(x.cpu, dt, dev));
      xs.back().set_requires_grad(true);
    }
    Tensor y = build(xs, dev);
    Input w = make_input(y.shape(), seed + 99, dt);
    backward(sum(mul(y, convert(w.cpu, dt, dev))));
    std::vector<Tensor> out{y};
    for (const Tensor& x : xs) out.push_back(x.grad());
    return out;
  };
  std::vector<Tensor> c = run(Device::cpu()), g = run(gpu());
  EXPECT_TRUE(g[0].is_cuda()) << what;
  for (size_t i = 0; i < c.size(); ++i) {
    ASSERT_TRUE(g[i].defined()) << what << " result " << i;
    EXPECT_TRUE(rel_close(g[i], c[i], graph_tol(dt), what + " " + std::string(dtype_name(dt)) + " result " +
                                                          std::to_string(i)));
  }
}

}  // namespace vlp::cudatest
#endif  // VLP_HAVE_CUDA
