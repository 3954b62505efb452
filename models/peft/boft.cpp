#include "models/peft/boft.h"

#include <cmath>

#include "models/peft/linear_common.h"

namespace vlp::peft {

std::vector<int64_t> boft_butterfly_perm(int64_t n, int64_t b, int64_t r, int64_t n_butterfly_factor) {
  std::vector<int64_t> indices(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) indices[size_t(i)] = i;
  if (n_butterfly_factor == 0) return indices;
  VLP_CHECK(b * r * 2 <= n, "BOFT: invalid number of blocks ", b, " for block half-size ", r, " and ", n, " features");
  const int64_t group = n / b;
  // Within each group of `group` features, the runs of r features are reordered evens first, then odds.
  std::vector<int64_t> order;
  const int64_t runs = group / r;
  for (int64_t start : {int64_t(0), int64_t(1)})
    for (int64_t pos = start; pos < runs; pos += 2)
      for (int64_t j = 0; j < r; ++j) order.push_back(pos * r + j);
  VLP_CHECK(int64_t(order.size()) == group, "BOFT: block half-size ", r, " does not divide the group of ", group);
  for (int64_t g = 0; g < n; g += group)
    for (int64_t j = 0; j < group; ++j) indices[size_t(g + j)] = g + order[size_t(j)];
  return indices;
}

BoftAdapter::BoftAdapter(int64_t in, int64_t out, const BoftOptions& o, Generator& gen)
    : options(o), in_features(in), out_features(out) {
  VLP_CHECK(o.n_butterfly_factor >= 1, "BOFT: boft_n_butterfly_factor must be a positive integer, got ",
            o.n_butterfly_factor);
  const int64_t extra = o.n_butterfly_factor - 1;  // HF's internal count
  if (o.block_size == 0 && o.block_num != 0) {
    VLP_CHECK(in % o.block_num == 0, "BOFT: in_features (", in, ") must be divisible by boft_block_num (",
              o.block_num, ")");
    if (extra != 0) {
      VLP_CHECK(extra <= int64_t(std::log2(double(o.block_num))), "BOFT: invalid combination of ",
                "boft_n_butterfly_factor (", o.n_butterfly_factor, ") and boft_block_num (", o.block_num, ")");
      VLP_CHECK(o.block_num % (int64_t(1) << extra) == 0, "BOFT: boft_block_num (", o.block_num,
                ") must be a multiple of 2^(boft_n_butterfly_factor - 1)");
    }
    block_num = o.block_num;
    block_size = in / o.block_num;
  } else if (o.block_size != 0 && o.block_num == 0) {
    VLP_CHECK(in % o.block_size == 0, "BOFT: in_features (", in, ") must be divisible by boft_block_size (",
              o.block_size, ")");
    if (extra != 0)
      VLP_CHECK(in % (o.block_size * (int64_t(1) << extra)) == 0, "BOFT: invalid combination of in_features (", in,
                "), boft_n_butterfly_factor (", o.n_butterfly_factor, ") and boft_block_size (", o.block_size, ")");
    block_size = o.block_size;
    block_num = in / o.block_size;
  } else {
    VLP_FAIL("BOFT: exactly one of boft_block_size (", o.block_size, ") and boft_block_num (", o.block_num,
             ") must be non-zero");
  }
  if (extra != 0) {
    VLP_CHECK(block_num % 2 == 0, "BOFT: boft_block_num (", block_num, ") must be even");
    VLP_CHECK(block_size % 2 == 0, "BOFT: boft_block_size (", block_size, ") must be even");
  }
  factors = o.n_butterfly_factor;
  for (int64_t i = 0; i < factors; ++i)
    perms.push_back(boft_butterfly_perm(in, block_num >> i, block_size / 2, extra));
  boft_R = zeros({factors, block_num, block_size, block_size});
  boft_s = ones({out, 1});
  if (!o.init_weights) {
    normal_(boft_R, 0.0, 0.1, &gen);
    normal_(boft_s, 1.0, 0.1, &gen);
  }
  register_parameter("boft_R", &boft_R);
  register_parameter("boft_s", &boft_s);
  set_requires_grad(true);  // trainable, as nn.Parameter; copies of these tensors share the flag
}

Tensor BoftAdapter::rotation_blocks(const ForwardContext& ctx) const {
  const int64_t n = factors * block_num, b = block_size;
  Tensor k = reshape(boft_R, {n, b, b});
  Tensor s = mul(sub(k, transpose(k, 1, 2)), 0.5);
  Tensor eye = expand(reshape(identity(b, s.dtype(), s.device()), {1, b, b}), {n, b, b});
  Tensor r = bmm(sub(eye, s), batched_inverse(contiguous(add(eye, s)), "BOFT Cayley"));
  r = reshape(r, {factors, block_num, b, b});
  if (ctx.training && options.dropout > 0) {
    // HF's multiplicative dropout: in one random factor, int(p · nb) random blocks become the identity.
    Tensor u = empty({1 + block_num});
    uniform_(u, 0.0, 1.0, ctx.generator);
    std::vector<double> v = to_vector(u);
    const int64_t factor = std::min<int64_t>(factors - 1, int64_t(v[0] * double(factors)));
    std::vector<std::pair<double, int64_t>> keys;
    for (int64_t i = 0; i < block_num; ++i) keys.push_back({v[size_t(1 + i)], i});
    std::sort(keys.begin(), keys.end());
    std::vector<double> mask(size_t(factors * block_num), 0.0);
    for (int64_t j = 0; j < int64_t(options.dropout * double(block_num)); ++j)
      mask[size_t(factor * block_num + keys[size_t(j)].second)] = 1.0;
    // The draws come from the CPU generator (as on a CPU run); the mask follows the blocks' device.
    Tensor m = from_vector(mask, {factors, block_num, 1, 1}, r.dtype(), r.device());
    r = add(mul(rsub(1.0, m), r), mul(m, reshape(identity(b, r.dtype(), r.device()), {1, 1, b, b})));
  }
  return r;
}

// x M = x M_{m-1} ··· M_0 with x M_k = ((x P_k) D_k) P_kᵀ: (x P)[j] = x[p⁻¹[j]], (z Pᵀ)[j] = z[p[j]].
Tensor BoftAdapter::rotate(const Tensor& x, const Tensor& blocks) const {
  Tensor z = x;
  const int64_t last = x.dim() - 1;
  for (int64_t k = factors - 1; k >= 0; --k) {
    const std::vector<int64_t>& p = perms[size_t(k)];
    std::vector<int64_t> inv(p.size());
    for (size_t i = 0; i < p.size(); ++i) inv[size_t(p[i])] = int64_t(i);
    z = index_select(z, last, from_data<int64_t>(inv, {in_features}, z.device()));
    z = apply_block_rotation(z, select(blocks, 0, k));
    z = index_select(z, last, from_data<int64_t>(p, {in_features}, z.device()));
  }
  return z;
}

Tensor BoftAdapter::forward(const Linear& layer, const Tensor& x, const Tensor& y, const ForwardContext& ctx) {
  Tensor xr = rotate(x, rotation_blocks(ctx));
  Tensor s = to(reshape(boft_s, {out_features}), x.dtype());
  Tensor h = mul(linear(xr, layer.weight_out_in()), s);
  if (!y.defined()) return layer.bias.defined() ? add(h, layer.bias) : h;
  return add(y, sub(h, linear(x, layer.weight_out_in())));  // after another adapter: W x -> s ⊙ (W Mᵀ x)
}

// Merging runs in double on the CPU (host_f64) whatever the layer's device; set_weight_out_in copies back.
void BoftAdapter::merge(Linear& layer) {
  NoGradGuard no_grad;
  Tensor m = rotate(identity(in_features, DType::F64), host_f64(rotation_blocks(ForwardContext{})));
  Tensor w = matmul(host_f64(layer.weight_out_in()), transpose(m, 0, 1));
  set_weight_out_in(layer, mul(w, host_f64(boft_s)));
  merged = true;
}

void BoftAdapter::unmerge(Linear& layer) {
  NoGradGuard no_grad;
  // M is orthogonal (exact Cayley), so (W Mᵀ)⁻ = W M.
  Tensor m = rotate(identity(in_features, DType::F64), host_f64(rotation_blocks(ForwardContext{})));
  Tensor w = div(host_f64(layer.weight_out_in()), host_f64(boft_s));
  set_weight_out_in(layer, matmul(w, m));
  merged = false;
}

void attach_boft(AttachContext& ctx) {
  const PeftConfig& c = ctx.config;
  for (auto& [name, layer] : select_method_targets(ctx, "BOFT")) {
    BoftOptions o;
    o.block_size = c.get_int("boft_block_size", 4);
    o.block_num = c.get_int("boft_block_num", 0);
    o.n_butterfly_factor = c.get_int("boft_n_butterfly_factor", 1);
    o.dropout = c.get_double("boft_dropout", 0.0);
    o.init_weights = c.get_bool("init_weights", true);
    attach_adapter(*layer, ctx.adapter_name,
                   std::make_shared<BoftAdapter>(layer->in_features(), layer->out_features(), o, ctx.generator));
  }
}

}  // namespace vlp::peft
