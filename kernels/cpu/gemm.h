// General matrix multiply through OpenBLAS: C[m, n] = alpha * op(A) op(B) + beta * C, row-major, where
// op(X) = X^T when trans_x. lda/ldb/ldc are the row strides of A, B, C as stored.
#pragma once
#include <cstdint>

namespace vlp::cpu {

template <class T>
void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, double alpha, const T* a, int64_t lda,
          const T* b, int64_t ldb, double beta, T* c, int64_t ldc);

}  // namespace vlp::cpu
