#include "models/peft/oft.h"

#include <cmath>

#include "models/peft/linear_common.h"

namespace vlp::peft {

int64_t oft_adjust(int64_t in, int64_t value) {
  if (value >= in) return in;
  int64_t higher = value;
  while (higher <= in && in % higher != 0) ++higher;
  int64_t lower = value;
  while (lower > 1 && in % lower != 0) --lower;
  return (value - lower) <= (higher - value) ? lower : higher;
}

OftAdapter::OftAdapter(int64_t in, const OftOptions& o, Generator& gen) : options(o), in_features(in) {
  VLP_CHECK((o.r == 0) != (o.block_size == 0), "OFT: exactly one of r (", o.r, ") and oft_block_size (",
            o.block_size, ") must be non-zero");
  if (o.r == 0) {
    block_size = (in % o.block_size != 0 || o.block_size > in) ? oft_adjust(in, o.block_size) : o.block_size;
    num_blocks = in / block_size;
  } else {
    num_blocks = (in % o.r != 0 || o.r > in) ? oft_adjust(in, o.r) : o.r;
    block_size = in / num_blocks;
  }
  VLP_CHECK(o.num_cayley_neumann_terms >= 1, "OFT: num_cayley_neumann_terms must be >= 1");
  const int64_t ne = block_size * (block_size - 1) / 2;
  oft_R.weight = zeros({o.block_share ? 1 : num_blocks, ne});
  if (!o.init_weights) normal_(oft_R.weight, 0.0, 0.1, &gen);
  oft_R.register_parameter("weight", &oft_R.weight);
  register_module("oft_R", &oft_R);
  set_requires_grad(true);  // trainable, as nn.Parameter; copies of these tensors share the flag
}

Tensor OftAdapter::rotation_blocks() {
  if (options.coft) {
    // Project each Q into the Frobenius ball of radius eps/sqrt(#blocks), in place (no gradient), as HF does.
    NoGradGuard no_grad;
    const int64_t n = oft_R.weight.size(0), ne = oft_R.weight.size(1);
    const double radius = options.eps / std::sqrt(double(n));
    std::vector<double> v = to_vector(oft_R.weight);
    for (int64_t i = 0; i < n; ++i) {
      double s = 0;
      for (int64_t k = 0; k < ne; ++k) s += 2.0 * v[size_t(i * ne + k)] * v[size_t(i * ne + k)];
      const double norm = std::sqrt(s);
      if (norm > radius)
        for (int64_t k = 0; k < ne; ++k) v[size_t(i * ne + k)] *= radius / norm;
    }
    copy_(oft_R.weight, from_vector(v, oft_R.weight.shape(), oft_R.weight.dtype(), oft_R.weight.device()));
  }
  Tensor q = skew_from_upper(oft_R.weight, block_size);
  const int64_t n = q.size(0);
  Tensor eye = expand(reshape(identity(block_size, q.dtype(), q.device()), {1, block_size, block_size}),
                      {n, block_size, block_size});
  Tensor r;
  if (options.use_cayley_neumann) {
    const int terms = options.num_cayley_neumann_terms;
    r = eye;
    if (terms > 1) r = add(r, mul(q, 2.0));
    if (terms > 2) {
      // As HF: 2Q² always, 2Q^k for k = 3..terms-2, then Q^max(3, terms-1) once.
      Tensor power = bmm(q, q);
      r = add(r, mul(power, 2.0));
      for (int k = 3; k < terms - 1; ++k) {
        power = bmm(power, q);
        r = add(r, mul(power, 2.0));
      }
      r = add(r, bmm(power, q));
    }
  } else {
    r = bmm(sub(eye, q), batched_inverse(add(eye, q), "OFT Cayley"));
  }
  if (options.block_share && num_blocks > 1) r = expand(r, {num_blocks, block_size, block_size});
  return r;
}

Tensor OftAdapter::rotate_input(const Tensor& x) { return apply_block_rotation(x, rotation_blocks()); }

Tensor OftAdapter::forward(const Linear& layer, const Tensor& x, const Tensor& y, const ForwardContext& ctx) {
  Tensor xr = rotate_input(x);
  if (!y.defined()) return layer.base_forward(xr);
  // After another adapter: swap the base term W x for W (R_bdᵀ x).
  return add(y, linear(sub(xr, x), layer.weight_out_in()));
}

void OftAdapter::merge(Linear& layer) {
  NoGradGuard no_grad;
  Tensor rbd = block_diagonal(contiguous(rotation_blocks()));
  set_weight_out_in(layer, matmul(layer.weight_out_in(), transpose(to(rbd, layer.weight.dtype()), 0, 1)));
  merged = true;
}

void OftAdapter::unmerge(Linear& layer) {
  NoGradGuard no_grad;
  // In double on the CPU whatever the layer's device (the CUDA kernels compute in F32); copied back below.
  Tensor blocks = host_f64(contiguous(rotation_blocks()));
  Tensor inv = block_diagonal(batched_inverse(blocks, "OFT unmerge"));
  Tensor w = matmul(host_f64(layer.weight_out_in()), transpose(inv, 0, 1));
  set_weight_out_in(layer, w);
  merged = false;
}

void attach_oft(AttachContext& ctx) {
  const PeftConfig& c = ctx.config;
  for (auto& [name, layer] : select_method_targets(ctx, "OFT")) {
    OftOptions o;
    o.r = pattern_int(c.rank_pattern, name, c.get_int("r", 0));
    o.block_size = c.get_int("oft_block_size", 32);
    o.block_share = c.get_bool("block_share", false);
    o.coft = c.get_bool("coft", false);
    o.eps = c.get_double("eps", 6e-5);
    o.use_cayley_neumann = c.get_bool("use_cayley_neumann", true);
    o.num_cayley_neumann_terms = c.get_int("num_cayley_neumann_terms", 5);
    o.init_weights = c.get_bool("init_weights", true);
    attach_adapter(*layer, ctx.adapter_name, std::make_shared<OftAdapter>(layer->in_features(), o, ctx.generator));
  }
}

}  // namespace vlp::peft
