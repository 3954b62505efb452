// Embedding kernels. Backward avoids atomics and per-thread copies of dW: a counting sort groups the
// positions by id (stable, so each group lists its positions in increasing order), then ids are
// processed in parallel, each summing its own group in order. Every dW row is written by one thread in
// one fixed order, which makes the result deterministic.
#include "kernels/cpu/embedding.h"

#include <cstring>
#include <vector>

namespace vlp::cpu {

int64_t first_invalid_id(const int64_t* ids, int64_t n, int64_t num_rows) {
  for (int64_t i = 0; i < n; ++i)
    if (ids[i] < 0 || ids[i] >= num_rows) return i;
  return -1;
}

void embedding_forward(const void* weight, int64_t row_bytes, const int64_t* ids, int64_t n, void* out) {
  const char* w = static_cast<const char*>(weight);
  char* o = static_cast<char*>(out);
#pragma omp parallel for schedule(static) if (n * row_bytes > (1 << 18))
  for (int64_t i = 0; i < n; ++i) std::memcpy(o + i * row_bytes, w + ids[i] * row_bytes, size_t(row_bytes));
}

template <class T>
void embedding_backward(const T* dy, const int64_t* ids, int64_t n, int64_t num_rows, int64_t d, T* dweight) {
  // start[v] .. start[v + 1]: where id v's positions lie in `order`.
  std::vector<int64_t> start(size_t(num_rows) + 1, 0);
  for (int64_t i = 0; i < n; ++i) ++start[size_t(ids[i]) + 1];
  for (int64_t v = 0; v < num_rows; ++v) start[size_t(v) + 1] += start[size_t(v)];
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::vector<int64_t> fill(start.begin(), start.end() - 1);  // next free slot of each id
  for (int64_t i = 0; i < n; ++i) order[size_t(fill[size_t(ids[i])]++)] = i;

#pragma omp parallel if (num_rows * d > 65536)
  {
    std::vector<double> acc(static_cast<size_t>(d));
#pragma omp for schedule(dynamic, 64)
    for (int64_t v = 0; v < num_rows; ++v) {
      T* out = dweight + v * d;
      const int64_t begin = start[size_t(v)], end = start[size_t(v) + 1];
      if (begin == end) {
        for (int64_t j = 0; j < d; ++j) out[j] = T(0);
        continue;
      }
      for (int64_t j = 0; j < d; ++j) acc[size_t(j)] = 0.0;
      for (int64_t k = begin; k < end; ++k) {
        const T* g = dy + order[size_t(k)] * d;
        for (int64_t j = 0; j < d; ++j) acc[size_t(j)] += double(g[j]);
      }
      for (int64_t j = 0; j < d; ++j) out[j] = T(acc[size_t(j)]);
    }
  }
}

template void embedding_backward<float>(const float*, const int64_t*, int64_t, int64_t, int64_t, float*);
template void embedding_backward<double>(const double*, const int64_t*, int64_t, int64_t, int64_t, double*);

}  // namespace vlp::cpu
