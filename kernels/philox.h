// Philox4x32-10 (Salmon et al., "Parallel Random Numbers: As Easy as 1, 2, 3", SC 2011): a counter-based
// generator, a pure function of a 128-bit counter and a 64-bit key. Shared by the CPU and CUDA kernels so
// that a (seed, offset) pair gives the same bits on every device.
//
// vlpeft's stream: 32-bit value i of stream (seed, offset) is word i % 4 of
//   philox4x32_10(counter = {lo32(offset + i/4), hi32(offset + i/4), 0, 0}, key = {lo32(seed), hi32(seed)}).
// A uniform float is (u >> 8) * 2^-24, in [0, 1) and exact in float on every device.
#pragma once
#include <cstdint>

#if defined(__CUDACC__)
#define VLP_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define VLP_HOST_DEVICE inline
#endif

namespace vlp {

struct Philox4 {
  uint32_t x[4];
};

VLP_HOST_DEVICE Philox4 philox4x32_10(Philox4 ctr, uint32_t k0, uint32_t k1) {
  for (int round = 0; round < 10; ++round) {
    uint64_t p0 = uint64_t(0xD2511F53u) * ctr.x[0];
    uint64_t p1 = uint64_t(0xCD9E8D57u) * ctr.x[2];
    Philox4 next = {{uint32_t(p1 >> 32) ^ ctr.x[1] ^ k0, uint32_t(p1), uint32_t(p0 >> 32) ^ ctr.x[3] ^ k1,
                     uint32_t(p0)}};
    ctr = next;
    k0 += 0x9E3779B9u;  // key schedule (the bump after the last round is unused)
    k1 += 0xBB67AE85u;
  }
  return ctr;
}

// The four 32-bit values i = 4*block .. 4*block+3 of stream (seed, offset).
VLP_HOST_DEVICE Philox4 philox_block(uint64_t seed, uint64_t offset, uint64_t block) {
  uint64_t c = offset + block;
  return philox4x32_10({{uint32_t(c), uint32_t(c >> 32), 0u, 0u}}, uint32_t(seed), uint32_t(seed >> 32));
}

VLP_HOST_DEVICE float philox_uniform(uint32_t u) { return float(u >> 8) * (1.0f / 16777216.0f); }

}  // namespace vlp
