// CUDA runtime: device discovery, behaviour without a GPU, copies between host and device for every dtype
// and layout, fill, to(device) through autograd, and the caching allocator's statistics.
#include <gtest/gtest.h>

#include "autograd/ops.h"
#include "runtime/device_copy.h"
#include "runtime/tensor.h"

#ifdef VLP_HAVE_CUDA
#include "kernels/cuda/allocator.h"
#include "tests/cuda/cuda_test_util.h"
#endif

namespace vlp {
namespace {

#ifndef VLP_HAVE_CUDA
TEST(CudaRuntime, BuiltWithoutCuda) {
  EXPECT_FALSE(cuda_available());
  EXPECT_EQ(cuda_device_count(), 0);
  EXPECT_THROW(empty({2}, DType::F32, Device::cuda()), Error);
  GTEST_SKIP() << "built without the CUDA backend: no CUDA test runs";
}
#else
using namespace cudatest;

// Runs on every machine: without a GPU the backend must say so and refuse cleanly, never abort.
TEST(CudaRuntime, NoDeviceIsReportedAndRefusedCleanly) {
  if (cuda_available()) {
    EXPECT_GT(cuda_device_count(), 0);
    EXPECT_EQ(cuda_unavailable_reason(), "");
    GTEST_SKIP() << "a CUDA device is present; this test covers machines without one";
  }
  EXPECT_EQ(cuda_device_count(), 0);
  EXPECT_NE(cuda_unavailable_reason(), "");
  EXPECT_EQ(get_allocator(Device::cuda(0)), nullptr);
  EXPECT_THROW(empty({3}, DType::F32, Device::cuda()), Error);
  Tensor x = ones({2, 2});
  EXPECT_THROW(convert(x, DType::F32, Device::cuda()), Error);
  EXPECT_THROW(to(x, Device::cuda()), Error);
  EXPECT_THROW(cuda_memory_stats(0), Error);
  // CPU work is untouched.
  EXPECT_DOUBLE_EQ(sum(mul(x, 3.0)).item(), 12.0);
}

TEST(CudaRuntime, RoundTripEveryDtype) {
  VLP_REQUIRE_GPU();
  std::vector<double> v = {0, 1, -2, 3.5, 100, -7.25, 1e-3, 42};
  for (DType dt : {DType::F32, DType::F64, DType::BF16, DType::F16, DType::I32, DType::I64, DType::U8, DType::Bool}) {
    Tensor host = from_vector(v, {2, 4}, dt);
    Tensor dev = convert(host, dt, gpu());
    EXPECT_TRUE(dev.is_cuda());
    Tensor back = convert(dev, dt, Device::cpu());
    EXPECT_EQ(to_vector(back), to_vector(host)) << dt;
    EXPECT_EQ(std::memcmp(back.data_ptr(), host.data_ptr(), size_t(host.numel()) * host.element_size()), 0) << dt;
  }
}

TEST(CudaRuntime, PinnedHostMemoryUploadsDirectly) {
  VLP_REQUIRE_GPU();
  Generator gen(5);
  Tensor host = permute(randn({3, 5, 7}, &gen), {2, 0, 1});  // non-contiguous source
  Tensor pinned = pin_memory(host);
  EXPECT_TRUE(is_pinned(pinned));
  EXPECT_FALSE(is_pinned(host));
  EXPECT_TRUE(pinned.is_contiguous());
  EXPECT_EQ(to_vector(pinned), to_vector(host));
  // Direct upload (same dtype and layout) and the staged path (conversion) give the same values.
  EXPECT_EQ(to_vector(convert(pinned, DType::F32, gpu())), to_vector(host));
  EXPECT_EQ(to_vector(convert(convert(pinned, DType::F64, gpu()), DType::F32)), to_vector(host));
}

TEST(CudaRuntime, ConversionsOnDeviceMatchTheCpuBitForBit) {
  VLP_REQUIRE_GPU();
  Input in = make_input({7, 13}, 11, DType::F32, -200.0, 200.0);  // |x| < 255 so U8 is defined
  const DType all[] = {DType::F32, DType::F64, DType::BF16, DType::F16, DType::I32, DType::I64, DType::U8, DType::Bool};
  for (DType from : all) {
    Tensor src_cpu = convert(in.cpu, from);
    if (from == DType::U8) src_cpu = convert(convert(abs(in.cpu), DType::U8), DType::U8);
    Tensor src_dev = convert(src_cpu, from, gpu());
    for (DType to_dt : all) {
      if (to_dt == DType::U8 && from != DType::U8 && from != DType::Bool) continue;  // negative -> u8 is undefined
      Tensor expect = convert(src_cpu, to_dt);
      Tensor got = convert(convert(src_dev, to_dt, gpu()), to_dt, Device::cpu());
      ASSERT_EQ(std::memcmp(got.data_ptr(), expect.data_ptr(), size_t(expect.numel()) * expect.element_size()), 0)
          << from << " -> " << to_dt;
    }
  }
}

TEST(CudaRuntime, StridedBroadcastAndPermutedCopiesBothWays) {
  VLP_REQUIRE_GPU();
  Input in = make_input({5, 6, 7}, 3);
  // Permuted source on the device, contiguous destination on the host.
  Tensor perm_dev = as_strided(in.dev, {7, 5, 6}, {1, 42, 7}, 0);
  Tensor perm_cpu = as_strided(in.cpu, {7, 5, 6}, {1, 42, 7}, 0);
  EXPECT_EQ(to_vector(perm_dev), to_vector(perm_cpu));
  // Sliced source (offset, gaps).
  Tensor slice_dev = as_strided(in.dev, {3, 2, 4}, {42, 14, 2}, 9);
  Tensor slice_cpu = as_strided(in.cpu, {3, 2, 4}, {42, 14, 2}, 9);
  EXPECT_EQ(to_vector(slice_dev), to_vector(slice_cpu));
  // Host to a strided device view, and a broadcast source.
  Tensor dst = poisoned({4, 6});
  Tensor dst_view = as_strided(dst, {6, 4}, {1, 6}, 0);  // transposed view
  Tensor row = from_vector({1, 2, 3, 4}, {4});
  copy_(dst_view, row);  // broadcast [4] over [6, 4]
  std::vector<double> got = to_vector(dst);
  for (int64_t i = 0; i < 4; ++i)
    for (int64_t j = 0; j < 6; ++j) EXPECT_EQ(got[size_t(i * 6 + j)], double(i + 1));
  // Device to device with dtype change into a strided view.
  Tensor bf = poisoned({7, 5, 6}, DType::BF16);
  copy_(bf, perm_dev);
  EXPECT_EQ(to_vector(bf), to_vector(convert(contiguous_raw(perm_cpu), DType::BF16)));
  // Device to a strided host view.
  Tensor host = zeros({6, 5});
  copy_(as_strided(host, {5, 6}, {1, 5}, 0), as_strided(in.dev, {5, 6}, {42, 1}, 0));
  std::vector<double> h = to_vector(host), src = to_vector(in.cpu);
  for (int64_t i = 0; i < 5; ++i)
    for (int64_t j = 0; j < 6; ++j) EXPECT_EQ(h[size_t(j * 5 + i)], src[size_t(i * 42 + j)]);
}

TEST(CudaRuntime, FillAndScalars) {
  VLP_REQUIRE_GPU();
  for (DType dt : {DType::F32, DType::BF16, DType::I64, DType::Bool}) {
    Tensor t = full({3, 5}, 2.0, dt, gpu());
    for (double v : to_vector(t)) EXPECT_EQ(v, dt == DType::Bool ? 1.0 : 2.0);
    Tensor strided = as_strided(t, {3, 2}, {5, 2}, 1);
    fill_(strided, 0.0);
    std::vector<double> v = to_vector(t);
    EXPECT_EQ(v[1], 0.0);
    EXPECT_EQ(v[3], 0.0);
    EXPECT_EQ(v[2], dt == DType::Bool ? 1.0 : 2.0);
  }
  EXPECT_DOUBLE_EQ(scalar_tensor(3.25, DType::F32, gpu()).item(), 3.25);
}

TEST(CudaRuntime, ToDeviceCarriesGradientsBack) {
  VLP_REQUIRE_GPU();
  Tensor x = from_vector({1, 2, 3, 4, 5, 6}, {2, 3});
  x.set_requires_grad(true);
  Tensor on_gpu = to(x, gpu());
  EXPECT_TRUE(on_gpu.is_cuda());
  Tensor back = to(on_gpu, Device::cpu());
  Tensor loss = sum(mul(back, back));
  backward(loss);
  ASSERT_TRUE(x.grad().defined());
  EXPECT_TRUE(x.grad().is_cpu());
  EXPECT_EQ(to_vector(x.grad()), (std::vector<double>{2, 4, 6, 8, 10, 12}));
}

TEST(CudaAllocator, StatisticsCacheAndPeaks) {
  VLP_REQUIRE_GPU();
  cuda_synchronize(0);
  const CudaMemoryStats before = cuda_memory_stats(0);
  const MemoryStats tensor_before = memory_stats(gpu());
  {
    Tensor a = empty({1000}, DType::F32, gpu());  // 4000 bytes -> 4096 class
    CudaMemoryStats mid = cuda_memory_stats(0);
    EXPECT_EQ(mid.allocated_bytes - before.allocated_bytes, int64_t(cuda::size_class(4000)));
    EXPECT_GE(mid.peak_allocated_bytes, mid.allocated_bytes);
    EXPECT_EQ(memory_stats(gpu()).current_bytes - tensor_before.current_bytes, 4000);
  }
  CudaMemoryStats after_free = cuda_memory_stats(0);
  EXPECT_EQ(after_free.allocated_bytes, before.allocated_bytes);
  if (!after_free.plain_malloc) {
    EXPECT_GE(after_free.reserved_bytes, before.reserved_bytes);  // kept in the cache
    Tensor again = empty({1000}, DType::F32, gpu());
    EXPECT_EQ(cuda_memory_stats(0).num_cache_hits, after_free.num_cache_hits + 1);
    EXPECT_EQ(cuda_memory_stats(0).num_device_mallocs, after_free.num_device_mallocs);
  } else {
    EXPECT_EQ(after_free.reserved_bytes, before.reserved_bytes);  // plain mode returns blocks at once
  }
  cuda_empty_cache(0);
  CudaMemoryStats emptied = cuda_memory_stats(0);
  EXPECT_LE(emptied.reserved_bytes, after_free.reserved_bytes);
  cuda_reset_peak_memory(0);
  EXPECT_EQ(cuda_memory_stats(0).peak_allocated_bytes, cuda_memory_stats(0).allocated_bytes);
}

TEST(CudaAllocator, SizeClasses) {
  EXPECT_EQ(cuda::size_class(0), 512u);
  EXPECT_EQ(cuda::size_class(1), 512u);
  EXPECT_EQ(cuda::size_class(513), 1024u);
  EXPECT_EQ(cuda::size_class(size_t(1) << 20), size_t(1) << 20);
  EXPECT_EQ(cuda::size_class((size_t(1) << 20) + 1), size_t(2) << 20);
  EXPECT_EQ(cuda::size_class((size_t(5) << 20) + 3), size_t(6) << 20);
}

TEST(CudaAllocator, StreamsAndEvents) {
  VLP_REQUIRE_GPU();
  cudaStream_t s = nullptr;
  cuda::check(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "stream");
  {
    cuda::StreamGuard guard(0, s);
    EXPECT_EQ(cuda::current_stream(0), s);
    Tensor t = full({257}, 1.5, DType::F32, gpu());  // allocated and filled on s
    cuda::Event start, stop;
    start.record(s);
    stop.record(s);
    stop.synchronize();
    EXPECT_GE(stop.elapsed_ms(start), 0.f);
    EXPECT_DOUBLE_EQ(to_vector(t)[256], 1.5);
  }
  EXPECT_NE(cuda::current_stream(0), s);
  cuda::check(cudaStreamSynchronize(s), "sync");
  cuda::check(cudaStreamDestroy(s), "destroy");
  void* pinned = cuda::pinned_alloc(64);
  EXPECT_NE(pinned, nullptr);
  cuda::pinned_free(pinned);
  // Pinned blocks are cached by size class (powers of two from 4 KiB): a freed block comes back for the
  // next request of its class, a request of another class gets another block.
  void* a = cuda::pinned_alloc(5000);
  cuda::pinned_free(a);
  void* b = cuda::pinned_alloc(8192);
  EXPECT_EQ(b, a);
  void* c = cuda::pinned_alloc(9000);
  EXPECT_NE(c, b);
  cuda::pinned_free(b);
  cuda::pinned_free(c);
  EXPECT_THROW(cuda::pinned_free(&s), std::runtime_error);
}
#endif

}  // namespace
}  // namespace vlp
