// TokenGate (see gate.h).
#include "models/peft/gate.h"

#include <cmath>

namespace vlp::peft {

TokenGate::TokenGate(int64_t d, int64_t outputs, DType dtype, Device device, bool zero_bias, Generator& gen) {
  VLP_CHECK(d > 0 && outputs > 0, "gate: width and outputs must be positive, got ", d, " and ", outputs);
  Tensor w = empty({outputs, d}, DType::F32), b = zeros({outputs}, DType::F32);
  normal_(w, 0.0, 0.02, &gen);
  if (!zero_bias) uniform_(b, -1.0 / std::sqrt(double(d)), 1.0 / std::sqrt(double(d)), &gen);
  weight = convert(w, dtype, device);
  bias = convert(b, dtype, device);
  register_parameter("weight", &weight);
  register_parameter("bias", &bias);
}

Tensor TokenGate::forward(const Tensor& x) const {
  VLP_CHECK(x.dim() == 3 && x.size(2) == weight.size(1), "gate: input must be [B, T, ", weight.size(1), "], got ",
            shape_str(x.shape()));
  Tensor xc = x.dtype() == weight.dtype() ? x : to(x, weight.dtype());
  return mean(sigmoid(linear(xc, weight, bias)), {1});
}

Tensor gate_column(const Tensor& g, int64_t i, int64_t dims) {
  Shape s(size_t(dims), 1);
  s[0] = g.size(0);
  return reshape(narrow(g, 1, i, 1), s);
}

}  // namespace vlp::peft
