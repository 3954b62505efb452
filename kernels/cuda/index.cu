// max/argmax along a dim and its scatter, index_select and a deterministic index_add, gather and a
// deterministic scatter_add (see index.h). One thread per output element; index_add groups the index
// positions by target row on the host (a stable counting sort), and scatter_add groups them by target
// element (a stable sort of their offsets), so each output element sums its contributions in index order
// without atomics. gather walks the index's shape with x's strides (a byte copy, any dtype).
#include <algorithm>
#include <numeric>
#include <stdexcept>
#include <vector>

#include "kernels/cuda/allocator.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/index.h"
#include "kernels/cuda/nvtx.h"
#include "kernels/cuda/runtime.h"

namespace vlp::cuda {

namespace {

template <class T>
__global__ void max_dim_kernel(const T* x, T* y, int64_t* idx, int64_t outer, int64_t n, int64_t inner) {
  for (int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; c < outer * inner;
       c += int64_t(gridDim.x) * blockDim.x) {
    const int64_t o = c / inner, i = c % inner;
    const T* p = x + o * n * inner + i;
    float best = to_float(p[0]);
    int64_t at = 0;
    for (int64_t j = 1; j < n && !isnan(best); ++j) {
      const float v = to_float(p[j * inner]);
      if (v > best || isnan(v)) best = v, at = j;
    }
    y[c] = p[at * inner];
    idx[c] = at;
  }
}

template <class T>
__global__ void scatter_dim_kernel(const T* g, const int64_t* idx, T* dx, int64_t outer, int64_t n, int64_t inner) {
  for (int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; c < outer * inner;
       c += int64_t(gridDim.x) * blockDim.x) {
    const int64_t o = c / inner, i = c % inner, j = idx[c];
    if (j < 0 || j >= n) continue;
    T* d = dx + (o * n + j) * inner + i;
    *d = from_float<T>(to_float(*d) + to_float(g[c]));
  }
}

template <class W>
__global__ void index_select_kernel(const W* x, const int64_t* index, W* out, int64_t outer, int64_t n, int64_t m,
                                    int64_t inner) {
  const int64_t total = outer * m * inner;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = e % inner, r = (e / inner) % m, o = e / (inner * m), row = index[r];
    out[e] = row >= 0 && row < n ? x[(o * n + row) * inner + i] : W{};
  }
}

// Element (o, u, i): dx[o, target[u], i] += sum over k in [start[u], start[u+1]) of g[o, order[k], i].
template <class T>
__global__ void index_add_kernel(const T* g, const int64_t* order, const int64_t* start, const int64_t* target,
                                 int64_t num_targets, T* dx, int64_t outer, int64_t n, int64_t m, int64_t inner) {
  const int64_t total = outer * num_targets * inner;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = e % inner, u = (e / inner) % num_targets, o = e / (inner * num_targets);
    float s = 0.f;
    for (int64_t k = start[u]; k < start[u + 1]; ++k) s += to_float(g[(o * m + order[k]) * inner + i]);
    T* d = dx + (o * n + target[u]) * inner + i;
    *d = from_float<T>(to_float(*d) + s);
  }
}

constexpr int kMaxDims = 8;
// The index's shape and x's strides for gather (by value: a kernel argument).
struct GatherLayout {
  int ndim = 0, dim = 0;
  int64_t size[kMaxDims];
  int64_t x_stride[kMaxDims];
};

template <class W>
__global__ void gather_kernel(GatherLayout L, const W* x, int64_t x_dim_size, const int64_t* index, W* out,
                              int64_t total) {
  for (int64_t p = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; p < total; p += int64_t(gridDim.x) * blockDim.x) {
    const int64_t row = index[p];
    int64_t off = 0;
    for (int64_t d = L.ndim - 1, rest = p; d >= 0; --d) {  // coordinates of p, last dim fastest
      const int64_t c = rest % L.size[d];
      rest /= L.size[d];
      off += (d == L.dim ? row : c) * L.x_stride[d];
    }
    out[p] = row >= 0 && row < x_dim_size ? x[off] : W{};
  }
}

// Target u: out[target[u]] += src[src_off[k]] for k in [start[u], start[u+1]), in that order, in float.
template <class T>
__global__ void scatter_add_kernel(T* out, const int64_t* target, const int64_t* start, const int64_t* src_off,
                                   int64_t num_targets, const T* src) {
  for (int64_t u = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; u < num_targets;
       u += int64_t(gridDim.x) * blockDim.x) {
    T* d = out + target[u];
    float s = to_float(*d);
    for (int64_t k = start[u]; k < start[u + 1]; ++k) s += to_float(src[src_off[k]]);
    *d = from_float<T>(s);
  }
}

template <class Fn>
void by_dtype(EwDType dt, Fn&& fn) {
  if (dt == EwDType::F32) fn(float{});
  else fn(__nv_bfloat16{});
}

}  // namespace

void max_dim(EwDType dt, const void* x, void* y, int64_t* idx, int64_t outer, int64_t n, int64_t inner,
             cudaStream_t stream) {
  if (outer * inner == 0 || n == 0) return;
  by_dtype(dt, [&](auto t) {
    using T = decltype(t);
    max_dim_kernel<T><<<grid_for(outer * inner, 128), 128, 0, stream>>>(static_cast<const T*>(x), static_cast<T*>(y),
                                                                         idx, outer, n, inner);
  });
  check_launch("max_dim");
}

void scatter_dim(EwDType dt, const void* g, const int64_t* idx, void* dx, int64_t outer, int64_t n, int64_t inner,
                 cudaStream_t stream) {
  if (outer * inner == 0) return;
  by_dtype(dt, [&](auto t) {
    using T = decltype(t);
    scatter_dim_kernel<T><<<grid_for(outer * inner, 128), 128, 0, stream>>>(static_cast<const T*>(g), idx,
                                                                             static_cast<T*>(dx), outer, n, inner);
  });
  check_launch("scatter_dim");
}

void index_select(int elem_size, const void* x, const int64_t* index, void* out, int64_t outer, int64_t n, int64_t m,
                  int64_t inner, cudaStream_t stream) {
  const int64_t total = outer * m * inner;
  if (total == 0) return;
  const unsigned grid = grid_for(total, 256);
  switch (elem_size) {
    case 1:
      index_select_kernel<uint8_t><<<grid, 256, 0, stream>>>(static_cast<const uint8_t*>(x), index,
                                                             static_cast<uint8_t*>(out), outer, n, m, inner);
      break;
    case 2:
      index_select_kernel<uint16_t><<<grid, 256, 0, stream>>>(static_cast<const uint16_t*>(x), index,
                                                              static_cast<uint16_t*>(out), outer, n, m, inner);
      break;
    case 4:
      index_select_kernel<uint32_t><<<grid, 256, 0, stream>>>(static_cast<const uint32_t*>(x), index,
                                                              static_cast<uint32_t*>(out), outer, n, m, inner);
      break;
    case 8:
      index_select_kernel<uint64_t><<<grid, 256, 0, stream>>>(static_cast<const uint64_t*>(x), index,
                                                              static_cast<uint64_t*>(out), outer, n, m, inner);
      break;
    default: throw std::runtime_error("cuda index_select: element size must be 1, 2, 4 or 8");
  }
  check_launch("index_select");
}

void index_add(EwDType dt, const void* g, const int64_t* index, void* dx, int64_t outer, int64_t n, int64_t m,
               int64_t inner, cudaStream_t stream) {
  NvtxRange nvtx("vlp::cuda::index_add");
  if (outer * m * inner == 0) return;
  std::vector<int64_t> idx(static_cast<size_t>(m));
  check(cudaMemcpyAsync(idx.data(), index, size_t(m) * sizeof(int64_t), cudaMemcpyDeviceToHost, stream), "index_add ids");
  check(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
  std::vector<int64_t> count(static_cast<size_t>(n), 0), slot(static_cast<size_t>(n), 0), target, start(1, 0);
  for (int64_t r : idx)
    if (r >= 0 && r < n) count[size_t(r)]++;
  for (int64_t r = 0; r < n; ++r) {
    if (count[size_t(r)] == 0) continue;
    slot[size_t(r)] = start.back();
    target.push_back(r);
    start.push_back(start.back() + count[size_t(r)]);
  }
  if (target.empty()) return;
  std::vector<int64_t> packed(static_cast<size_t>(start.back()));
  for (int64_t k = 0; k < m; ++k) {
    const int64_t r = idx[size_t(k)];
    if (r >= 0 && r < n) packed[size_t(slot[size_t(r)]++)] = k;
  }
  const size_t n_order = packed.size();
  packed.insert(packed.end(), start.begin(), start.end());
  packed.insert(packed.end(), target.begin(), target.end());
  DeviceBuffer buf(packed.size() * sizeof(int64_t), current_device(), stream);
  check(cudaMemcpyAsync(buf.ptr, packed.data(), packed.size() * sizeof(int64_t), cudaMemcpyHostToDevice, stream),
        "index_add upload");
  const int64_t* d_order = static_cast<const int64_t*>(buf.ptr);
  const int64_t* d_start = d_order + n_order;
  const int64_t* d_target = d_start + start.size();
  const int64_t num_targets = int64_t(target.size());
  by_dtype(dt, [&](auto t) {
    using T = decltype(t);
    index_add_kernel<T><<<grid_for(outer * num_targets * inner, 256), 256, 0, stream>>>(
        static_cast<const T*>(g), d_order, d_start, d_target, num_targets, static_cast<T*>(dx), outer, n, m, inner);
  });
  check_launch("index_add");
  check(cudaStreamSynchronize(stream), "cudaStreamSynchronize");  // `packed` is freed on return
}

void gather(int elem_size, const std::vector<int64_t>& shape, int64_t dim, const void* x, const int64_t* x_strides,
            int64_t x_dim_size, const int64_t* index, void* out, cudaStream_t stream) {
  NvtxRange nvtx("vlp::cuda::gather");
  int64_t total = 1;
  for (int64_t s : shape) total *= s;
  if (total == 0) return;
  if (shape.size() > size_t(kMaxDims) || dim < 0 || dim >= int64_t(shape.size()))
    throw std::runtime_error("cuda gather: at most 8 dims and dim within them");
  GatherLayout L;
  L.ndim = int(shape.size());
  L.dim = int(dim);
  for (int d = 0; d < L.ndim; ++d) L.size[d] = shape[size_t(d)], L.x_stride[d] = x_strides[d];
  const unsigned grid = grid_for(total, 256);
  switch (elem_size) {
    case 1:
      gather_kernel<uint8_t><<<grid, 256, 0, stream>>>(L, static_cast<const uint8_t*>(x), x_dim_size, index,
                                                       static_cast<uint8_t*>(out), total);
      break;
    case 2:
      gather_kernel<uint16_t><<<grid, 256, 0, stream>>>(L, static_cast<const uint16_t*>(x), x_dim_size, index,
                                                        static_cast<uint16_t*>(out), total);
      break;
    case 4:
      gather_kernel<uint32_t><<<grid, 256, 0, stream>>>(L, static_cast<const uint32_t*>(x), x_dim_size, index,
                                                        static_cast<uint32_t*>(out), total);
      break;
    case 8:
      gather_kernel<uint64_t><<<grid, 256, 0, stream>>>(L, static_cast<const uint64_t*>(x), x_dim_size, index,
                                                        static_cast<uint64_t*>(out), total);
      break;
    default: throw std::runtime_error("cuda gather: element size must be 1, 2, 4 or 8");
  }
  check_launch("gather");
}

ScatterPlan plan_scatter_add(const std::vector<int64_t>& shape, int64_t dim, const int64_t* out_strides,
                             int64_t out_dim_size, const int64_t* host_index, const int64_t* src_strides) {
  const int64_t ndim = int64_t(shape.size());
  int64_t m = 1;
  for (int64_t s : shape) m *= s;
  ScatterPlan plan;
  if (m == 0) return plan;
  if (dim < 0 || dim >= ndim) throw std::runtime_error("cuda scatter_add: dim outside the index's dims");
  // Element offsets of every position p (row-major over shape): its target in out and its element of src.
  // Positions whose index is out of range are dropped.
  std::vector<int64_t> target_of, src_of, coord(static_cast<size_t>(ndim), 0);
  target_of.reserve(size_t(m));
  src_of.reserve(size_t(m));
  int64_t out_base = 0, src_base = 0;  // offsets of coord (in out: with coordinate dim taken as 0)
  for (int64_t p = 0; p < m; ++p) {
    const int64_t r = host_index[p];
    if (r >= 0 && r < out_dim_size) {
      target_of.push_back(out_base + r * out_strides[dim]);
      src_of.push_back(src_base);
    }
    for (int64_t d = ndim - 1; d >= 0; --d) {  // next position: advance the odometer
      const size_t du = size_t(d);
      if (++coord[du] < shape[du]) {
        if (d != dim) out_base += out_strides[d];
        src_base += src_strides[d];
        break;
      }
      if (d != dim) out_base -= (shape[du] - 1) * out_strides[d];
      src_base -= (shape[du] - 1) * src_strides[d];
      coord[du] = 0;
    }
  }
  const int64_t valid = int64_t(target_of.size());
  if (valid == 0) return plan;
  // Stable sort of the positions by target: equal targets keep the index's row-major order.
  std::vector<int64_t> order(static_cast<size_t>(valid));
  std::iota(order.begin(), order.end(), int64_t(0));
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return target_of[size_t(a)] < target_of[size_t(b)]; });
  plan.src_offset.reserve(size_t(valid));
  for (int64_t k = 0; k < valid; ++k) {
    const int64_t p = order[size_t(k)], t = target_of[size_t(p)];
    if (k == 0 || t != plan.target.back()) {  // the first position of a new target
      plan.start.push_back(k);
      plan.target.push_back(t);
    }
    plan.src_offset.push_back(src_of[size_t(p)]);
  }
  plan.start.push_back(valid);
  return plan;
}

void scatter_add(EwDType dt, const std::vector<int64_t>& shape, int64_t dim, void* out, const int64_t* out_strides,
                 int64_t out_dim_size, const int64_t* index, const void* src, const int64_t* src_strides,
                 cudaStream_t stream) {
  NvtxRange nvtx("vlp::cuda::scatter_add");
  int64_t m = 1;
  for (int64_t s : shape) m *= s;
  if (m == 0) return;
  std::vector<int64_t> idx(static_cast<size_t>(m));
  check(cudaMemcpyAsync(idx.data(), index, size_t(m) * sizeof(int64_t), cudaMemcpyDeviceToHost, stream),
        "scatter_add index");
  check(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
  const ScatterPlan plan = plan_scatter_add(shape, dim, out_strides, out_dim_size, idx.data(), src_strides);
  if (plan.target.empty()) return;
  // One upload: src offsets, start, target back to back.
  std::vector<int64_t> packed(plan.src_offset);
  packed.insert(packed.end(), plan.start.begin(), plan.start.end());
  packed.insert(packed.end(), plan.target.begin(), plan.target.end());
  DeviceBuffer buf(packed.size() * sizeof(int64_t), current_device(), stream);
  check(cudaMemcpyAsync(buf.ptr, packed.data(), packed.size() * sizeof(int64_t), cudaMemcpyHostToDevice, stream),
        "scatter_add upload");
  const int64_t* d_src_off = static_cast<const int64_t*>(buf.ptr);
  const int64_t* d_start = d_src_off + plan.src_offset.size();
  const int64_t* d_target = d_start + plan.start.size();
  const int64_t num_targets = int64_t(plan.target.size());
  by_dtype(dt, [&](auto t) {
    using T = decltype(t);
    scatter_add_kernel<T><<<grid_for(num_targets, 256), 256, 0, stream>>>(
        static_cast<T*>(out), d_target, d_start, d_src_off, num_targets, static_cast<const T*>(src));
  });
  check_launch("scatter_add");
  check(cudaStreamSynchronize(stream), "cudaStreamSynchronize");  // `packed` is freed on return
}

}  // namespace vlp::cuda
