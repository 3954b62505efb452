// Walking N operands that share one shape but have their own strides (elements), as every strided
// CPU kernel does: copies between layouts, broadcast elementwise ops. Dimensions that are contiguous in
// every operand are merged first, so a plain contiguous walk is a single flat loop.
#pragma once
#include <array>
#include <cstdint>
#include <vector>

namespace vlp::cpu {

template <int N>
struct StridedLoop {
  std::vector<int64_t> shape;                       // after merging
  std::array<std::vector<int64_t>, N> strides;      // per operand, after merging

  StridedLoop(const std::vector<int64_t>& shape_in, const std::array<const int64_t*, N>& strides_in) {
    for (size_t d = 0; d < shape_in.size(); ++d) {
      if (shape_in[d] == 1) continue;  // size-1 dims never move the offsets
      bool merge = !shape.empty();
      for (int k = 0; k < N && merge; ++k) merge = strides[k].back() == strides_in[k][d] * shape_in[d];
      if (merge) {
        shape.back() *= shape_in[d];
        for (int k = 0; k < N; ++k) strides[k].back() = strides_in[k][d];
      } else {
        shape.push_back(shape_in[d]);
        for (int k = 0; k < N; ++k) strides[k].push_back(strides_in[k][d]);
      }
    }
    if (shape.empty()) {  // a scalar: one element
      shape.push_back(1);
      for (int k = 0; k < N; ++k) strides[k].push_back(0);
    }
  }

  // fn(offsets, inner_strides, n): process n elements starting at offsets, stepping inner_strides.
  template <class Fn>
  void run(Fn&& fn, bool parallel = true) const {
    const int nd = int(shape.size());
    const int64_t inner = shape[nd - 1];
    int64_t rows = 1;
    for (int d = 0; d < nd - 1; ++d) rows *= shape[d];
    std::array<int64_t, N> step;
    for (int k = 0; k < N; ++k) step[k] = strides[k][nd - 1];
    auto row_offsets = [&](int64_t row) {
      std::array<int64_t, N> off{};
      for (int d = nd - 2; d >= 0; --d) {
        int64_t i = row % shape[d];
        row /= shape[d];
        for (int k = 0; k < N; ++k) off[k] += i * strides[k][d];
      }
      return off;
    };
    const bool par = parallel && rows * inner >= (1 << 15) && rows > 1;
#pragma omp parallel for schedule(static) if (par)
    for (int64_t r = 0; r < rows; ++r) fn(row_offsets(r), step, inner);
  }
};

}  // namespace vlp::cpu
