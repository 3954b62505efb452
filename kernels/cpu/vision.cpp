// Adaptive max-pooling over a channels-last grid: each output cell scans its window once per channel
// vector, so the inner loop runs over contiguous channels.
#include "kernels/cpu/vision.h"

#include <cmath>

namespace vlp::cpu {

template <class T>
void adaptive_max_pool_grid(const T* x, T* y, int64_t* argmax, int64_t B, int64_t H, int64_t W, int64_t C,
                            int64_t oh, int64_t ow) {
#pragma omp parallel for collapse(3) schedule(static) if (B * oh * ow * C > 32768)
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t i = 0; i < oh; ++i) {
      for (int64_t j = 0; j < ow; ++j) {
        const int64_t r0 = adaptive_start(i, H, oh), r1 = adaptive_end(i, H, oh);
        const int64_t c0 = adaptive_start(j, W, ow), c1 = adaptive_end(j, W, ow);
        T* best = y + ((b * oh + i) * ow + j) * C;
        int64_t* at = argmax + ((b * oh + i) * ow + j) * C;
        const T* first = x + ((b * H + r0) * W + c0) * C;
        for (int64_t c = 0; c < C; ++c) best[c] = first[c], at[c] = r0 * W + c0;
        for (int64_t r = r0; r < r1; ++r) {
          for (int64_t s = c0; s < c1; ++s) {
            if (r == r0 && s == c0) continue;
            const T* px = x + ((b * H + r) * W + s) * C;
            for (int64_t c = 0; c < C; ++c) {
              // Strictly greater keeps the first maximum; once a NaN is found it stays.
              if (!std::isnan(double(best[c])) && (px[c] > best[c] || std::isnan(double(px[c]))))
                best[c] = px[c], at[c] = r * W + s;
            }
          }
        }
      }
    }
  }
}

template <class T>
void adaptive_max_pool_grid_backward(const T* dy, const int64_t* argmax, T* dx, int64_t B, int64_t H, int64_t W,
                                     int64_t C, int64_t oh, int64_t ow) {
  // One image per task: windows of one image may overlap, different images never do.
#pragma omp parallel for schedule(static) if (B * oh * ow * C > 32768)
  for (int64_t b = 0; b < B; ++b) {
    T* dx_b = dx + b * H * W * C;
    for (int64_t cell = 0; cell < oh * ow; ++cell) {
      const T* g = dy + (b * oh * ow + cell) * C;
      const int64_t* at = argmax + (b * oh * ow + cell) * C;
      for (int64_t c = 0; c < C; ++c) dx_b[at[c] * C + c] += g[c];
    }
  }
}

template void adaptive_max_pool_grid<float>(const float*, float*, int64_t*, int64_t, int64_t, int64_t, int64_t,
                                            int64_t, int64_t);
template void adaptive_max_pool_grid<double>(const double*, double*, int64_t*, int64_t, int64_t, int64_t, int64_t,
                                             int64_t, int64_t);
template void adaptive_max_pool_grid_backward<float>(const float*, const int64_t*, float*, int64_t, int64_t,
                                                     int64_t, int64_t, int64_t, int64_t);
template void adaptive_max_pool_grid_backward<double>(const double*, const int64_t*, double*, int64_t, int64_t,
                                                      int64_t, int64_t, int64_t, int64_t);

}  // namespace vlp::cpu
