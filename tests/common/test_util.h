// Helpers shared by the tests: random tensors, comparisons that print the worst element, asset paths.
#pragma once
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <string>
#include <unistd.h>
#include <vector>

#include "autograd/gradcheck.h"
#include "autograd/ops.h"
#include "runtime/rng.h"

namespace vlp::test {

// A random F64 (by default) tensor in [-1, 1) that requires grad: the usual gradcheck input.
inline Tensor rand_input(const Shape& shape, uint64_t seed, DType dtype = DType::F64, bool requires_grad = true) {
  Generator gen(seed);
  Tensor t = empty(shape, dtype);
  uniform_(t, -1.0, 1.0, &gen);
  if (requires_grad) t.set_requires_grad(true);
  return t;
}

// Max |a - b| <= atol + rtol * |b| elementwise, reporting the worst element.
inline ::testing::AssertionResult all_close(const Tensor& a, const Tensor& b, double rtol = 1e-5,
                                            double atol = 1e-6) {
  if (a.shape() != b.shape())
    return ::testing::AssertionFailure() << "shapes differ: " << shape_str(a.shape()) << " vs " << shape_str(b.shape());
  std::vector<double> va = to_vector(a), vb = to_vector(b);
  for (size_t i = 0; i < va.size(); ++i) {
    double tol = atol + rtol * std::abs(vb[i]);
    if (!(std::abs(va[i] - vb[i]) <= tol))
      return ::testing::AssertionFailure() << "element " << i << ": " << va[i] << " vs " << vb[i] << " (tol " << tol << ")";
  }
  return ::testing::AssertionSuccess();
}

inline ::testing::AssertionResult values_are(const Tensor& a, const std::vector<double>& expected, double tol = 1e-6) {
  std::vector<double> va = to_vector(a);
  if (va.size() != expected.size())
    return ::testing::AssertionFailure() << va.size() << " values, expected " << expected.size();
  for (size_t i = 0; i < va.size(); ++i)
    if (!(std::abs(va[i] - expected[i]) <= tol))
      return ::testing::AssertionFailure() << "element " << i << ": " << va[i] << ", expected " << expected[i];
  return ::testing::AssertionSuccess();
}

// ../shared/assets (or $VLP_ASSETS); empty when absent, so tests can GTEST_SKIP with a reason.
inline std::string assets_dir() {
  if (const char* env = std::getenv("VLP_ASSETS")) return env;
  std::filesystem::path p = std::filesystem::path(VLP_SOURCE_DIR) / ".." / "shared" / "assets";
  return std::filesystem::exists(p) ? p.lexically_normal().string() : std::string();
}

// A fresh scratch directory for one test.
inline std::filesystem::path temp_dir(const std::string& name) {
  auto p = std::filesystem::temp_directory_path() / ("vlpeft_test_" + name + "_" + std::to_string(::getpid()));
  std::filesystem::remove_all(p);
  std::filesystem::create_directories(p);
  return p;
}

// A fresh scratch directory (temp_dir) removed, with everything in it, when the test ends.
struct ScratchDir {
  std::filesystem::path path;
  explicit ScratchDir(const std::string& name) : path(temp_dir(name)) {}
  ~ScratchDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  operator const std::filesystem::path&() const { return path; }
  std::string string() const { return path.string(); }
  std::filesystem::path operator/(const std::string& rel) const { return path / rel; }
};

// The message of the exception fn throws ("" when it throws none), for asserting on error texts.
template <class F>
std::string error_of(F&& fn) {
  try {
    fn();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

// (loss(w + h) - loss(w - h)) / 2h for element `index` of an F32 tensor w, restored afterwards: a finite-difference
// check of one gradient element of a whole model, where gradcheck's F64 sweep would be too slow.
template <class F>
double central_difference(Tensor& w, int64_t index, double h, F&& loss) {
  float* v = w.data<float>() + index;
  const float orig = *v;
  *v = float(orig + h);
  const double up = loss();
  *v = float(orig - h);
  const double down = loss();
  *v = orig;
  return (up - down) / (2 * h);
}

}  // namespace vlp::test
