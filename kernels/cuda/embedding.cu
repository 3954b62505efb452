// Embedding gather (a byte copy per row, 16 bytes at a time when rows and pointers allow) and its
// deterministic backward: positions are grouped by id on the host (stable counting sort of the ids), then
// one block per distinct id sums its dy rows in increasing position order.
#include <stdexcept>
#include <vector>

#include "kernels/cuda/allocator.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/misc.h"
#include "kernels/cuda/nvtx.h"
#include "kernels/cuda/runtime.h"

namespace vlp::cuda {

namespace {

template <class W>  // W: the word copied (uint4 for 16 bytes, uint8_t otherwise)
__global__ void gather_rows_kernel(const W* weight, int64_t row_words, int64_t num_rows, const int64_t* ids, int64_t n,
                                   W* out) {
  for (int64_t i = blockIdx.x; i < n; i += gridDim.x) {
    const int64_t id = ids[i];
    const bool valid = id >= 0 && id < num_rows;
    for (int64_t j = threadIdx.x; j < row_words; j += blockDim.x)
      out[i * row_words + j] = valid ? weight[id * row_words + j] : W{};
  }
}

// Block u sums dy rows order[start[u] .. start[u+1]) into dweight row unique_ids[u].
template <class T>
__global__ void embedding_backward_kernel(const T* dy, const int64_t* order, const int64_t* start,
                                          const int64_t* unique_ids, int64_t num_unique, int64_t d, T* dweight) {
  for (int64_t u = blockIdx.x; u < num_unique; u += gridDim.x) {
    const int64_t row = unique_ids[u];
    for (int64_t j = threadIdx.x; j < d; j += blockDim.x) {
      float s = 0.f;
      for (int64_t k = start[u]; k < start[u + 1]; ++k) s += to_float(dy[order[k] * d + j]);
      dweight[row * d + j] = from_float<T>(s);
    }
  }
}

unsigned row_grid(int64_t rows) { return unsigned(rows < 65535 * 4 ? (rows < 1 ? 1 : rows) : 65535 * 4); }

}  // namespace

void embedding_forward(const void* weight, int64_t row_bytes, int64_t num_rows, const int64_t* ids, int64_t n,
                       void* out, cudaStream_t stream) {
  NvtxRange nvtx("vlp::cuda::embedding_forward");
  if (n == 0 || row_bytes == 0) return;
  if (row_bytes % 16 == 0 && aligned16(weight) && aligned16(out)) {
    gather_rows_kernel<uint4><<<row_grid(n), 128, 0, stream>>>(static_cast<const uint4*>(weight), row_bytes / 16,
                                                               num_rows, ids, n, static_cast<uint4*>(out));
  } else {
    gather_rows_kernel<uint8_t><<<row_grid(n), 128, 0, stream>>>(static_cast<const uint8_t*>(weight), row_bytes,
                                                                 num_rows, ids, n, static_cast<uint8_t*>(out));
  }
  check_launch("embedding_forward");
}

void embedding_backward(EwDType dt, const void* dy, const int64_t* ids, int64_t n, int64_t num_rows, int64_t d,
                        void* dweight, cudaStream_t stream) {
  NvtxRange nvtx("vlp::cuda::embedding_backward");
  const size_t es = dt == EwDType::F32 ? 4 : 2;
  check(cudaMemsetAsync(dweight, 0, size_t(num_rows * d) * es, stream), "embedding_backward memset");
  if (n == 0 || d == 0) return;
  std::vector<int64_t> host_ids(size_t(n), 0);
  check(cudaMemcpyAsync(host_ids.data(), ids, size_t(n) * sizeof(int64_t), cudaMemcpyDeviceToHost, stream),
        "embedding_backward ids");
  check(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
  // Stable counting sort of positions by id; invalid ids are dropped (their rows of dy contribute nothing).
  std::vector<int64_t> count(size_t(num_rows) + 1, 0);
  for (int64_t id : host_ids)
    if (id >= 0 && id < num_rows) count[size_t(id)]++;
  std::vector<int64_t> unique_ids, start(1, 0);
  std::vector<int64_t> slot(size_t(num_rows), 0);
  for (int64_t v = 0; v < num_rows; ++v) {
    if (count[size_t(v)] == 0) continue;
    slot[size_t(v)] = start.back();
    unique_ids.push_back(v);
    start.push_back(start.back() + count[size_t(v)]);
  }
  std::vector<int64_t> order(size_t(start.back()));
  for (int64_t i = 0; i < n; ++i) {
    const int64_t id = host_ids[size_t(i)];
    if (id >= 0 && id < num_rows) order[size_t(slot[size_t(id)]++)] = i;
  }
  if (unique_ids.empty()) return;
  // One upload: order, start, unique_ids back to back.
  std::vector<int64_t> packed(order);
  packed.insert(packed.end(), start.begin(), start.end());
  packed.insert(packed.end(), unique_ids.begin(), unique_ids.end());
  DeviceBuffer buf(packed.size() * sizeof(int64_t), current_device(), stream);
  check(cudaMemcpyAsync(buf.ptr, packed.data(), packed.size() * sizeof(int64_t), cudaMemcpyHostToDevice, stream),
        "embedding_backward upload");
  const int64_t* d_order = static_cast<const int64_t*>(buf.ptr);
  const int64_t* d_start = d_order + order.size();
  const int64_t* d_unique = d_start + start.size();
  const int64_t num_unique = int64_t(unique_ids.size());
  if (dt == EwDType::F32)
    embedding_backward_kernel<float><<<row_grid(num_unique), 128, 0, stream>>>(
        static_cast<const float*>(dy), d_order, d_start, d_unique, num_unique, d, static_cast<float*>(dweight));
  else
    embedding_backward_kernel<__nv_bfloat16><<<row_grid(num_unique), 128, 0, stream>>>(
        static_cast<const __nv_bfloat16*>(dy), d_order, d_start, d_unique, num_unique, d,
        static_cast<__nv_bfloat16*>(dweight));
  check_launch("embedding_backward");
  // `packed` is pageable host memory: wait for the upload before it is freed.
  check(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
}

}  // namespace vlp::cuda
