#include "models/seq2seq.h"

#include "autograd/ops.h"

namespace vlp {

Tensor shift_tokens_right(const Tensor& ids, int64_t pad_token_id, int64_t decoder_start_token_id) {
  VLP_CHECK(ids.dim() == 2, "shift_tokens_right: expected [B, L] ids, got ", shape_str(ids.shape()));
  const int64_t B = ids.size(0), L = ids.size(1);
  std::vector<double> in = to_vector(ids);
  std::vector<int64_t> out(size_t(B * L));
  for (int64_t b = 0; b < B; ++b) {
    out[size_t(b * L)] = decoder_start_token_id;
    for (int64_t t = 1; t < L; ++t) {
      const int64_t v = int64_t(in[size_t(b * L + t - 1)]);
      out[size_t(b * L + t)] = v == -100 ? pad_token_id : v;
    }
  }
  return from_data(out, {B, L}, ids.device());
}

Tensor seq2seq_lm_loss(const Tensor& logits, const Tensor& labels) {
  VLP_CHECK(logits.dim() == 3 && labels.dim() == 2 && labels.size(0) == logits.size(0) &&
                labels.size(1) == logits.size(1),
            "seq2seq_lm_loss: logits [B, L, V] and labels [B, L] expected, got ", shape_str(logits.shape()), " and ",
            shape_str(labels.shape()));
  return cross_entropy(to(reshape(logits, {-1, logits.size(2)}), DType::F32), reshape(labels, {-1}));
}

Tensor concat_masks(const Tensor& a, int64_t Ta, const Tensor& b, int64_t Tb, int64_t B, Device device) {
  if (!a.defined() && !b.defined()) return Tensor();
  Tensor ma = a.defined() ? convert(a, DType::I64) : ones({B, Ta}, DType::I64, device);
  Tensor mb = b.defined() ? convert(b, DType::I64) : ones({B, Tb}, DType::I64, device);
  return concat({ma, mb}, 1);
}

}  // namespace vlp
