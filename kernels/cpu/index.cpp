// Indexing kernels. gather / scatter_add walk the index's shape with StridedLoop, giving x (or out) a
// zero stride along `dim` so that the loop supplies every other coordinate and the index supplies dim.
#include "kernels/cpu/index.h"

#include <algorithm>
#include <cstring>

#include "kernels/cpu/strided.h"

namespace vlp::cpu {

int64_t first_out_of_range(const int64_t* index, int64_t n, int64_t size) {
  for (int64_t i = 0; i < n; ++i)
    if (index[i] < 0 || index[i] >= size) return i;
  return -1;
}

template <class T>
void index_select(const T* x, const int64_t* index, T* out, int64_t outer, int64_t n, int64_t m, int64_t inner) {
#pragma omp parallel for collapse(2) schedule(static) if (outer * m * inner > 32768)
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t j = 0; j < m; ++j)
      std::memcpy(out + (o * m + j) * inner, x + (o * n + index[j]) * inner, size_t(inner) * sizeof(T));
}

template <class T>
void index_add(const T* g, const int64_t* index, T* dx, int64_t outer, int64_t n, int64_t m, int64_t inner) {
  // Each task owns one (outer, block of inner columns) slab of dx and walks the whole index in order,
  // so no two threads touch one element and repeats always sum in index order.
  constexpr int64_t kBlock = 256;
  const int64_t blocks = (inner + kBlock - 1) / kBlock;
#pragma omp parallel for collapse(2) schedule(static) if (outer * m * inner > 32768)
  for (int64_t o = 0; o < outer; ++o) {
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t i0 = b * kBlock, len = std::min(kBlock, inner - i0);
      for (int64_t j = 0; j < m; ++j) {
        const T* src = g + (o * m + j) * inner + i0;
        T* dst = dx + (o * n + index[j]) * inner + i0;
        for (int64_t i = 0; i < len; ++i) dst[i] += src[i];
      }
    }
  }
}

template <class T>
void gather(const std::vector<int64_t>& shape, int64_t dim, const T* x, const int64_t* x_strides,
            const int64_t* index, T* out) {
  std::vector<int64_t> contiguous(shape.size()), x_other(x_strides, x_strides + shape.size());
  for (int64_t d = int64_t(shape.size()) - 1, s = 1; d >= 0; s *= shape[size_t(d)], --d) contiguous[size_t(d)] = s;
  x_other[size_t(dim)] = 0;  // the index supplies this coordinate
  const int64_t step_dim = x_strides[dim];
  StridedLoop<3> loop(shape, {contiguous.data(), contiguous.data(), x_other.data()});
  loop.run([&](std::array<int64_t, 3> off, std::array<int64_t, 3> st, int64_t n) {
    for (int64_t i = 0; i < n; ++i)
      out[off[0] + i * st[0]] = x[off[2] + i * st[2] + index[off[1] + i * st[1]] * step_dim];
  });
}

template <class T>
void scatter_add(const std::vector<int64_t>& shape, int64_t dim, T* out, const int64_t* out_strides,
                 const int64_t* index, const T* src, const int64_t* src_strides) {
  std::vector<int64_t> contiguous(shape.size()), out_other(out_strides, out_strides + shape.size());
  for (int64_t d = int64_t(shape.size()) - 1, s = 1; d >= 0; s *= shape[size_t(d)], --d) contiguous[size_t(d)] = s;
  out_other[size_t(dim)] = 0;
  const int64_t step_dim = out_strides[dim];
  StridedLoop<3> loop(shape, {out_other.data(), contiguous.data(), src_strides});
  loop.run(
      [&](std::array<int64_t, 3> off, std::array<int64_t, 3> st, int64_t n) {
        for (int64_t i = 0; i < n; ++i)
          out[off[0] + i * st[0] + index[off[1] + i * st[1]] * step_dim] += src[off[2] + i * st[2]];
      },
      /*parallel=*/false);  // several positions may target one element
}

template <class T>
void where(const std::vector<int64_t>& shape, T* out, const int64_t* out_strides, const bool* cond,
           const int64_t* cond_strides, const T* a, const int64_t* a_strides, const T* b, const int64_t* b_strides) {
  StridedLoop<4> loop(shape, {out_strides, cond_strides, a_strides, b_strides});
  loop.run([&](std::array<int64_t, 4> off, std::array<int64_t, 4> st, int64_t n) {
    for (int64_t i = 0; i < n; ++i)
      out[off[0] + i * st[0]] = cond[off[1] + i * st[1]] ? a[off[2] + i * st[2]] : b[off[3] + i * st[3]];
  });
}

#define VLP_INSTANTIATE(T)                                                                                     \
  template void index_select<T>(const T*, const int64_t*, T*, int64_t, int64_t, int64_t, int64_t);            \
  template void gather<T>(const std::vector<int64_t>&, int64_t, const T*, const int64_t*, const int64_t*, T*); \
  template void where<T>(const std::vector<int64_t>&, T*, const int64_t*, const bool*, const int64_t*, const T*, \
                         const int64_t*, const T*, const int64_t*);
VLP_INSTANTIATE(float)
VLP_INSTANTIATE(double)
VLP_INSTANTIATE(int32_t)
VLP_INSTANTIATE(int64_t)
VLP_INSTANTIATE(uint8_t)
VLP_INSTANTIATE(bool)
#undef VLP_INSTANTIATE

#define VLP_INSTANTIATE_ADD(T)                                                                          \
  template void index_add<T>(const T*, const int64_t*, T*, int64_t, int64_t, int64_t, int64_t);        \
  template void scatter_add<T>(const std::vector<int64_t>&, int64_t, T*, const int64_t*, const int64_t*, \
                               const T*, const int64_t*);
VLP_INSTANTIATE_ADD(float)
VLP_INSTANTIATE_ADD(double)
VLP_INSTANTIATE_ADD(int32_t)
VLP_INSTANTIATE_ADD(int64_t)
#undef VLP_INSTANTIATE_ADD

}  // namespace vlp::cpu
