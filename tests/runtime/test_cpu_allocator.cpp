// The host caching allocator: freed blocks are reused for requests of the same size class, the stats
// report cached bytes and cache hits, reused memory is distinct while live, and release_cached_memory
// empties the cache. Skipped when VLP_CPU_ALLOCATOR=plain.
#include <cstdlib>
#include <cstring>
#include <set>
#include <thread>

#include "common/test_util.h"

namespace vlp {
namespace {

bool caching_enabled() {
  const char* env = std::getenv("VLP_CPU_ALLOCATOR");
  return env == nullptr || std::strcmp(env, "plain") != 0;
}

TEST(CpuAllocator, ReusesFreedBlockOfSameSize) {
  if (!caching_enabled()) GTEST_SKIP() << "VLP_CPU_ALLOCATOR=plain";
  const Device cpu = Device::cpu();
  release_cached_memory(cpu);  // start from an empty cache, whatever earlier tests left
  void* first = nullptr;
  {
    Tensor a = zeros({1000, 1000});  // 4 MB: glibc would mmap and unmap this every time
    first = a.data_ptr();
  }
  MemoryStats before = memory_stats(cpu);
  EXPECT_GE(before.cached_bytes, 4000000);
  {
    Tensor b = zeros({1000, 1000});
    EXPECT_EQ(b.data_ptr(), first);  // the freed block came back
    MemoryStats during = memory_stats(cpu);
    EXPECT_EQ(during.num_cache_hits, before.num_cache_hits + 1);
    EXPECT_LE(during.cached_bytes, before.cached_bytes - 4000000);
    EXPECT_EQ(during.current_bytes, before.current_bytes + 4000000);  // live bytes are the asked size
    // zeros() still zeroes reused memory
    const float* p = b.data<float>();
    for (int64_t i = 0; i < 1000000; i += 997) ASSERT_EQ(p[i], 0.0f);
  }
  // A size in the same class (4000000 and 3999000 both round up to the same block) is served too.
  {
    int64_t hits = memory_stats(cpu).num_cache_hits;
    Tensor c = zeros({999750});
    EXPECT_EQ(c.data_ptr(), first);
    EXPECT_EQ(memory_stats(cpu).num_cache_hits, hits + 1);
  }
  release_cached_memory(cpu);
  EXPECT_EQ(memory_stats(cpu).cached_bytes, 0);
  EXPECT_EQ(memory_stats(cpu).current_bytes, before.current_bytes);
}

TEST(CpuAllocator, LiveBlocksAreDistinctAndAligned) {
  std::set<void*> seen;
  std::vector<Tensor> live;
  for (int round = 0; round < 3; ++round) {
    for (int64_t n : {1, 7, 16, 300, 4096, 100000}) {
      live.push_back(full({n}, double(n)));
      void* p = live.back().data_ptr();
      EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % 64, 0u);
      EXPECT_TRUE(seen.insert(p).second) << "two live tensors share a block";
    }
  }
  for (const Tensor& t : live) EXPECT_EQ(t.data<float>()[t.numel() - 1], float(t.numel()));
}

TEST(CpuAllocator, ThreadsAllocateAndFreeConcurrently) {
  const Device cpu = Device::cpu();
  const int64_t bytes_before = memory_stats(cpu).current_bytes;
  auto work = [](int seed) {
    for (int i = 0; i < 200; ++i) {
      int64_t n = 1 + (seed * 7919 + i * 104729) % 50000;
      Tensor t = full({n}, double(seed));
      ASSERT_EQ(t.data<float>()[n - 1], float(seed));
    }
  };
  std::vector<std::thread> threads;
  for (int s = 0; s < 4; ++s) threads.emplace_back(work, s + 1);
  for (auto& t : threads) t.join();
  EXPECT_EQ(memory_stats(cpu).current_bytes, bytes_before);
}

}  // namespace
}  // namespace vlp
