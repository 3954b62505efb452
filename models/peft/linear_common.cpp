#include "models/peft/linear_common.h"

#include <cmath>
#include <regex>

namespace vlp::peft {

std::vector<std::string> default_linear_targets(const std::string& backbone, const std::string& peft_type) {
  if (backbone == "gpt2" && peft_type == "FOURIERFT") return {"mlp.c_proj"};
  return default_targets("lora", backbone);
}

std::vector<std::pair<std::string, Linear*>> select_method_targets(AttachContext& ctx, const std::string& method) {
  std::vector<std::string> defaults = default_linear_targets(ctx.backbone, method);
  const PeftConfig& c = ctx.config;
  bool explicit_targets = !c.target_modules.empty() || !c.target_regex.empty() || c.target_all_linear;
  VLP_CHECK(explicit_targets || !defaults.empty(), c.source, ": ", method, " has no default target modules for ",
            ctx.backbone.empty() ? std::string("this model") : "backbone '" + ctx.backbone + "'",
            "; set target_modules");
  return select_linear_targets(ctx.model, c, defaults);
}

template <class V>
static V pattern_lookup(const std::map<std::string, V>& patterns, const std::string& name, V fallback) {
  for (const auto& [key, value] : patterns) {
    if (key == name) return value;
    if (std::regex_match(name, std::regex("(.*\\.)?(" + key + ")"))) return value;
  }
  return fallback;
}

int pattern_int(const std::map<std::string, int>& patterns, const std::string& name, int fallback) {
  return pattern_lookup(patterns, name, fallback);
}
double pattern_double(const std::map<std::string, double>& patterns, const std::string& name, double fallback) {
  return pattern_lookup(patterns, name, fallback);
}

void add_delta_to_weight(Linear& layer, const Tensor& delta_out_in, double sign) {
  NoGradGuard no_grad;
  Tensor d = to(delta_out_in.detach(), layer.weight.dtype());
  add_(layer.weight, layer.fan_in_fan_out ? transpose(d, 0, 1) : d, sign);
}

void set_weight_out_in(Linear& layer, const Tensor& w_out_in) {
  NoGradGuard no_grad;
  Tensor w = to(w_out_in.detach(), layer.weight.dtype());
  copy_(layer.weight, layer.fan_in_fan_out ? transpose(w, 0, 1) : w);
}

bool module_dropout_skips(double p, const ForwardContext& ctx) {
  if (!ctx.training || p <= 0.0) return false;
  Tensor u = empty({1});
  uniform_(u, 0.0, 1.0, ctx.generator);
  return !(to_vector(u)[0] > p);
}

Tensor rank_dropout_mask(int64_t rows, double p, bool rescale, const ForwardContext& ctx, DType dtype,
                         Device device) {
  Tensor u = empty({rows, 1});
  uniform_(u, 0.0, 1.0, ctx.generator);
  std::vector<double> v = to_vector(u);
  double kept = 0;
  for (double& e : v) {
    e = e > p ? 1.0 : 0.0;
    kept += e;
  }
  if (rescale && kept > 0)
    for (double& e : v) e *= double(rows) / kept;
  return from_vector(v, {rows, 1}, dtype, device);
}

Tensor host_f64(const Tensor& t) { return convert(t.detach(), DType::F64, Device::cpu()); }

}  // namespace vlp::peft

namespace vlp::peft {

Tensor batched_inverse(const Tensor& a, const char* what) {
  VLP_CHECK(a.dim() == 3 && a.size(1) == a.size(2), what, ": inverse needs [n, b, b] blocks, got ",
            shape_str(a.shape()));
  const int64_t n = a.size(0), b = a.size(1);
  std::vector<double> m = to_vector(a), inv(size_t(n * b * b), 0.0);
  for (int64_t s = 0; s < n; ++s) {
    double* A = m.data() + s * b * b;
    double* I = inv.data() + s * b * b;
    for (int64_t i = 0; i < b; ++i) I[i * b + i] = 1.0;
    for (int64_t col = 0; col < b; ++col) {
      int64_t piv = col;
      for (int64_t r = col + 1; r < b; ++r)
        if (std::abs(A[r * b + col]) > std::abs(A[piv * b + col])) piv = r;
      VLP_CHECK(A[piv * b + col] != 0.0, what, ": block ", s, " is singular");
      if (piv != col)
        for (int64_t j = 0; j < b; ++j) {
          std::swap(A[piv * b + j], A[col * b + j]);
          std::swap(I[piv * b + j], I[col * b + j]);
        }
      const double d = A[col * b + col];
      for (int64_t j = 0; j < b; ++j) {
        A[col * b + j] /= d;
        I[col * b + j] /= d;
      }
      for (int64_t r = 0; r < b; ++r) {
        if (r == col || A[r * b + col] == 0.0) continue;
        const double f = A[r * b + col];
        for (int64_t j = 0; j < b; ++j) {
          A[r * b + j] -= f * A[col * b + j];
          I[r * b + j] -= f * I[col * b + j];
        }
      }
    }
  }
  Tensor out = from_vector(inv, a.shape(), a.dtype(), a.device());
  if (Node* node = record("batched_inverse", {a}, {&out})) {
    node->save({out});
    node->backward = [](Node& nd, const Grads& g) -> Grads {
      Tensor it = transpose(nd.saved[0], 1, 2);
      return {neg(bmm(bmm(it, g[0]), it))};
    };
  }
  return out;
}

Tensor skew_from_upper(const Tensor& vec, int64_t b) {
  const int64_t n = vec.size(0), ne = b * (b - 1) / 2;
  VLP_CHECK(vec.dim() == 2 && vec.size(1) == ne, "skew matrix: expected [n, ", ne, "] upper triangles for block size ",
            b, ", got ", shape_str(vec.shape()));
  // Column 0 of `padded` is zero, 1..ne the values, ne+1..2ne their negatives.
  std::vector<int64_t> idx(size_t(b * b), 0);
  int64_t k = 0;
  for (int64_t i = 0; i < b; ++i)
    for (int64_t j = i + 1; j < b; ++j, ++k) {
      idx[size_t(i * b + j)] = 1 + k;
      idx[size_t(j * b + i)] = 1 + ne + k;
    }
  Tensor padded = concat({zeros({n, 1}, vec.dtype(), vec.device()), vec, neg(vec)}, 1);
  return reshape(index_select(padded, 1, from_data<int64_t>(idx, {b * b}, vec.device())), {n, b, b});
}

Tensor apply_block_rotation(const Tensor& x, const Tensor& blocks) {
  const int64_t nb = blocks.size(0), b = blocks.size(1), in = x.size(x.dim() - 1);
  VLP_CHECK(nb * b == in, "block rotation: ", nb, " blocks of ", b, " do not cover ", in, " input features");
  Shape shape = x.shape();
  Tensor xr = transpose(reshape(x, {-1, nb, b}), 0, 1);  // [nb, N, b]
  Tensor out = transpose(bmm(contiguous(xr), to(blocks, x.dtype())), 0, 1);
  return reshape(contiguous(out), shape);
}

Tensor identity(int64_t b, DType dtype, Device device) {
  std::vector<double> v(size_t(b * b), 0.0);
  for (int64_t i = 0; i < b; ++i) v[size_t(i * b + i)] = 1.0;
  return from_vector(v, {b, b}, dtype, device);
}

Tensor block_diagonal(const Tensor& blocks) {
  NoGradGuard no_grad;
  const int64_t nb = blocks.size(0), b = blocks.size(1);
  Tensor out = zeros({nb * b, nb * b}, blocks.dtype(), blocks.device());
  for (int64_t i = 0; i < nb; ++i) copy_(narrow(narrow(out, 0, i * b, b), 1, i * b, b), select(blocks, 0, i));
  return out;
}

}  // namespace vlp::peft
