// Embedding lookup: a row gather from a [V, D] table, and its backward, which sums the output gradient
// rows of every position holding the same id into that id's row of dW.
#pragma once
#include <cstdint>

namespace vlp::cpu {

// Position of the first id outside [0, num_rows), or -1 when every id is valid.
int64_t first_invalid_id(const int64_t* ids, int64_t n, int64_t num_rows);
// out row i = weight row ids[i], rows of row_bytes bytes: a byte copy, so it serves every dtype (a BF16
// table is gathered as it is, not converted whole). ids must be valid.
void embedding_forward(const void* weight, int64_t row_bytes, const int64_t* ids, int64_t n, void* out);
// dweight [num_rows, d] (fully overwritten) = sum over positions i with ids[i] == v of dy row i, summed
// in double in increasing i: the same bits for any thread count.
template <class T>
void embedding_backward(const T* dy, const int64_t* ids, int64_t n, int64_t num_rows, int64_t d, T* dweight);

}  // namespace vlp::cpu
