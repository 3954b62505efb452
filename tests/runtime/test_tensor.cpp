// Memory accounting, pluggable allocators, the error macro's location, and tensor printing.
#include "common/test_util.h"

namespace vlp {
namespace {

TEST(Memory, CurrentAndPeakFollowAllocations) {
  const Device cpu = Device::cpu();
  MemoryStats start = memory_stats(cpu);
  reset_peak_memory(cpu);
  EXPECT_EQ(memory_stats(cpu).peak_bytes, start.current_bytes);
  {
    Tensor a = empty({1000}, DType::F32);  // 4000 bytes
    MemoryStats s = memory_stats(cpu);
    EXPECT_EQ(s.current_bytes, start.current_bytes + 4000);
    EXPECT_EQ(s.num_allocations, start.num_allocations + 1);
    {
      Tensor b = empty({500}, DType::F64);  // 4000 more
      EXPECT_EQ(memory_stats(cpu).current_bytes, start.current_bytes + 8000);
      // A view shares the storage: no new bytes.
      Tensor view = as_strided(b, {10}, {2}, 3);
      EXPECT_EQ(memory_stats(cpu).current_bytes, start.current_bytes + 8000);
    }
    EXPECT_EQ(memory_stats(cpu).current_bytes, start.current_bytes + 4000);
    EXPECT_EQ(memory_stats(cpu).peak_bytes, start.current_bytes + 8000);
  }
  MemoryStats end = memory_stats(cpu);
  EXPECT_EQ(end.current_bytes, start.current_bytes);
  EXPECT_EQ(end.peak_bytes, start.current_bytes + 8000);  // the high-water mark stays ...
  reset_peak_memory(cpu);
  EXPECT_EQ(memory_stats(cpu).peak_bytes, start.current_bytes);  // ... until reset
  EXPECT_EQ(memory_stats(cpu).num_allocations, start.num_allocations + 2);  // never reset
  // A storage that outlives its tensor handle through another tensor stays counted.
  Tensor keep;
  {
    Tensor t = empty({256}, DType::U8);
    keep = as_strided(t, {16}, {1}, 0);
  }
  EXPECT_EQ(memory_stats(cpu).current_bytes, start.current_bytes + 256);
  keep = Tensor();
  EXPECT_EQ(memory_stats(cpu).current_bytes, start.current_bytes);
  // Wrapped memory the runtime does not own is not counted.
  std::vector<float> host(100);
  Tensor wrapped(wrap_storage(host.data(), 400, cpu, nullptr), {100}, {1}, 0, DType::F32);
  EXPECT_EQ(memory_stats(cpu).current_bytes, start.current_bytes);
}

struct CountingAllocator final : Allocator {
  Allocator* inner;
  int allocations = 0, deallocations = 0;
  size_t last_bytes = 0;
  explicit CountingAllocator(Allocator* in) : inner(in) {}
  void* allocate(size_t n) override {
    ++allocations;
    last_bytes = n;
    return inner->allocate(n);
  }
  void deallocate(void* p, size_t n) override {
    ++deallocations;
    inner->deallocate(p, n);
  }
};

TEST(Memory, InstalledAllocatorIsUsed) {
  Allocator* previous = get_allocator(Device::cpu());
  ASSERT_NE(previous, nullptr);
  CountingAllocator counting(previous);
  set_allocator(Device::cpu(), &counting);
  {
    Tensor t = zeros({3, 5}, DType::F64);
    EXPECT_EQ(counting.allocations, 1);
    EXPECT_EQ(counting.last_bytes, 120u);
    Tensor u = convert(t, DType::F32);  // ops allocate through it too
    EXPECT_EQ(counting.allocations, 2);
    set_allocator(Device::cpu(), previous);
    // Blocks go back to the allocator that made them, even after another is installed.
  }
  EXPECT_EQ(counting.deallocations, 2);
  EXPECT_EQ(get_allocator(Device::cpu()), previous);
  // No CUDA allocator in a CPU-only build: a clear error, not a crash.
  if (get_allocator(Device::cuda(0)) == nullptr) {
    try {
      empty({4}, DType::F32, Device::cuda(0));
      ADD_FAILURE() << "allocated on a device without an allocator";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("no allocator for device cuda:0"), std::string::npos) << e.what();
    }
  }
}

TEST(Errors, MessageCarriesFileAndLine) {
  int line = 0;
  try {
    line = __LINE__ + 1;
    VLP_CHECK(1 + 1 == 3, "arithmetic is broken: ", 2, " != ", 3.5);
    ADD_FAILURE() << "VLP_CHECK did not throw";
  } catch (const Error& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find("arithmetic is broken: 2 != 3.5"), std::string::npos) << msg;
    EXPECT_NE(msg.find("test_tensor.cpp:" + std::to_string(line) + "]"), std::string::npos) << msg;
  }
  try {
    line = __LINE__ + 1;
    VLP_FAIL("always ", "fails");
  } catch (const Error& e) {
    std::string msg = e.what();
    EXPECT_EQ(msg.rfind("always fails [", 0), 0u) << msg;
    EXPECT_NE(msg.find(":" + std::to_string(line) + "]"), std::string::npos) << msg;
  }
  // Errors from the library name the library file, shortened to its project path.
  try {
    Tensor t = zeros({2, 3});
    t.size(5);
    ADD_FAILURE();
  } catch (const Error& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find("dimension 5 out of range for a tensor of shape [2, 3]"), std::string::npos) << msg;
    EXPECT_NE(msg.find("[runtime/tensor.cpp:"), std::string::npos) << msg;
  }
  // A passing check evaluates its message parts never and throws nothing.
  int evaluated = 0;
  auto part = [&] { return ++evaluated; };
  VLP_CHECK(true, "unused ", part());
  EXPECT_EQ(evaluated, 0);
}

TEST(Printing, Readable) {
  Tensor m = from_vector({1, 2.5, -3, 4}, {2, 2});
  EXPECT_EQ(to_string(m), "Tensor(F32, [2, 2], cpu)\n[[1, 2.5],\n [-3, 4]]");
  EXPECT_EQ(to_string(from_vector({7, -8}, {2}, DType::I64)), "Tensor(I64, [2], cpu)\n[7, -8]");
  EXPECT_EQ(to_string(scalar_tensor(0.125, DType::F64)), "Tensor(F64, [], cpu)\n0.125");
  EXPECT_EQ(to_string(zeros({0, 3})), "Tensor(F32, [0, 3], cpu)\n[]");
  EXPECT_EQ(to_string(Tensor()), "Tensor(undefined)");
  Tensor g = zeros({2});
  g.set_requires_grad(true);
  EXPECT_EQ(to_string(g), "Tensor(F32, [2], cpu, requires_grad)\n[0, 0]");
  // Large tensors are summarised with the first and last elements of each dim.
  EXPECT_EQ(to_string(arange(100)), "Tensor(I64, [100], cpu)\n[0, 1, 2, ..., 97, 98, 99]");
  std::string big = to_string(convert(arange(400), DType::F32));
  EXPECT_LT(big.size(), 80u);
  // operator<< prints the same; non-contiguous tensors print their logical order.
  std::ostringstream os;
  os << as_strided(m, {2, 2}, {1, 2}, 0);
  EXPECT_EQ(os.str(), "Tensor(F32, [2, 2], cpu)\n[[1, -3],\n [2.5, 4]]");
  // bf16 prints its (rounded) value.
  EXPECT_EQ(to_string(from_vector({1.0 / 3}, {1}, DType::BF16)), "Tensor(BF16, [1], cpu)\n[0.333984]");
}

}  // namespace
}  // namespace vlp
