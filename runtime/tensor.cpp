#include "runtime/tensor.h"

#include <cmath>
#include <cstring>
#include <iomanip>
#include <sstream>

#include "kernels/cpu/copy.h"
#include "runtime/device_copy.h"

namespace vlp {

// ---- Tensor ----

Tensor::Tensor(std::shared_ptr<Storage> storage, Shape shape, Shape strides, int64_t offset, DType dtype)
    : storage_(std::move(storage)), shape_(std::move(shape)), strides_(std::move(strides)), offset_(offset),
      dtype_(dtype) {
  VLP_CHECK(shape_.size() == strides_.size(), "tensor with ", shape_.size(), " dims but ", strides_.size(),
            " strides");
  for (int64_t s : shape_) VLP_CHECK(s >= 0, "negative size in shape ", shape_str(shape_));
}

int64_t Tensor::numel() const { return shape_numel(shape_); }

int64_t Tensor::wrap_dim(int64_t d) const {
  int64_t n = dim();
  VLP_CHECK(d >= -n && d < n, "dimension ", d, " out of range for a tensor of shape ", shape_str(shape_));
  return d < 0 ? d + n : d;
}

bool Tensor::is_contiguous() const {
  int64_t expected = 1;
  for (int64_t d = dim() - 1; d >= 0; --d) {
    if (shape_[d] == 1) continue;
    if (strides_[d] != expected) return false;
    expected *= shape_[d];
  }
  return true;
}

void* Tensor::data_ptr() const {
  VLP_CHECK(defined(), "access to the data of an undefined tensor");
  return static_cast<char*>(storage_->data) + offset_ * int64_t(element_size());
}

double Tensor::item() const {
  VLP_CHECK(numel() == 1, "item() needs a one-element tensor, got shape ", shape_str(shape_));
  return to_vector(*this)[0];
}

bool Tensor::requires_grad() const { return autograd_ && autograd_->requires_grad; }

Tensor& Tensor::set_requires_grad(bool on) {
  if (!autograd_) {
    if (!on) return *this;
    autograd_ = std::make_shared<AutogradMeta>();
  }
  VLP_CHECK(autograd_->grad_fn == nullptr,
            "set_requires_grad on a non-leaf tensor (an op's output); detach() it first");
  VLP_CHECK(!on || is_floating(dtype_), "only floating-point tensors can require grad, got ", dtype_);
  autograd_->requires_grad = on;
  return *this;
}

bool Tensor::is_leaf() const { return !autograd_ || autograd_->grad_fn == nullptr; }

Tensor Tensor::grad() const { return autograd_ ? autograd_->grad : Tensor(); }

void Tensor::set_grad(const Tensor& grad) const {
  VLP_CHECK(autograd_, "set_grad on a tensor without autograd state; call set_requires_grad first");
  autograd_->grad = grad;
}

Tensor Tensor::detach() const { return Tensor(storage_, shape_, strides_, offset_, dtype_); }

// ---- shapes ----

int64_t shape_numel(const Shape& shape) {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  return n;
}

Shape contiguous_strides(const Shape& shape) {
  Shape strides(shape.size());
  int64_t s = 1;
  for (int64_t d = int64_t(shape.size()) - 1; d >= 0; --d) {
    strides[d] = s;
    s *= shape[d];
  }
  return strides;
}

std::string shape_str(const Shape& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

Shape broadcast_shapes(const Shape& a, const Shape& b) {
  size_t n = std::max(a.size(), b.size());
  Shape out(n);
  for (size_t i = 0; i < n; ++i) {
    int64_t da = i < n - a.size() ? 1 : a[i - (n - a.size())];
    int64_t db = i < n - b.size() ? 1 : b[i - (n - b.size())];
    VLP_CHECK(da == db || da == 1 || db == 1, "shapes ", shape_str(a), " and ", shape_str(b),
              " do not broadcast");
    out[i] = da == 1 ? db : da;
  }
  return out;
}

Shape broadcast_strides(const Tensor& t, const Shape& shape) {
  Shape strides(shape.size(), 0);
  int64_t lead = int64_t(shape.size()) - t.dim();
  VLP_CHECK(lead >= 0, "cannot broadcast shape ", shape_str(t.shape()), " to ", shape_str(shape));
  for (int64_t d = 0; d < t.dim(); ++d) {
    VLP_CHECK(t.size(d) == shape[size_t(lead + d)] || t.size(d) == 1, "cannot broadcast shape ",
              shape_str(t.shape()), " to ", shape_str(shape));
    strides[size_t(lead + d)] = t.size(d) == 1 ? 0 : t.stride(d);
  }
  return strides;
}

// ---- creation ----

Tensor empty(const Shape& shape, DType dtype, Device device) {
  int64_t n = shape_numel(shape);
  return Tensor(allocate_storage(size_t(n) * dtype_size(dtype), device), shape, contiguous_strides(shape), 0,
                dtype);
}

Tensor full(const Shape& shape, double value, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  fill_(t, value);
  return t;
}
Tensor zeros(const Shape& shape, DType dtype, Device device) { return full(shape, 0.0, dtype, device); }
Tensor ones(const Shape& shape, DType dtype, Device device) { return full(shape, 1.0, dtype, device); }
Tensor empty_like(const Tensor& t) { return empty(t.shape(), t.dtype(), t.device()); }
Tensor zeros_like(const Tensor& t) { return zeros(t.shape(), t.dtype(), t.device()); }
Tensor scalar_tensor(double value, DType dtype, Device device) { return full({}, value, dtype, device); }

Tensor arange(int64_t n, DType dtype, Device device) {
  std::vector<double> v(size_t(std::max<int64_t>(n, 0)));
  for (int64_t i = 0; i < n; ++i) v[size_t(i)] = double(i);
  return from_vector(v, {int64_t(v.size())}, dtype, device);
}

Tensor from_vector(const std::vector<double>& values, const Shape& shape, DType dtype, Device device) {
  VLP_CHECK(int64_t(values.size()) == shape_numel(shape), "from_vector: ", values.size(),
            " values for shape ", shape_str(shape));
  Tensor src(wrap_storage(const_cast<double*>(values.data()), values.size() * sizeof(double), Device::cpu(),
                          nullptr),
             shape, contiguous_strides(shape), 0, DType::F64);
  Tensor out = empty(shape, dtype, device);
  copy_(out, src);
  return out;
}

std::vector<double> to_vector(const Tensor& t) {
  std::vector<double> out(size_t(t.numel()));
  if (out.empty()) return out;
  Tensor dst(wrap_storage(out.data(), out.size() * sizeof(double), Device::cpu(), nullptr), t.shape(),
             contiguous_strides(t.shape()), 0, DType::F64);
  copy_(dst, t);
  return out;
}

// ---- raw views and copies ----

Tensor as_strided(const Tensor& t, const Shape& shape, const Shape& strides, int64_t offset) {
  VLP_CHECK(t.defined(), "as_strided of an undefined tensor");
  VLP_CHECK(shape.size() == strides.size(), "as_strided: shape ", shape_str(shape), " and strides ",
            shape_str(strides), " differ in length");
  // The view must stay inside the storage.
  int64_t lo = offset, hi = offset;
  for (size_t d = 0; d < shape.size(); ++d) {
    if (shape[d] == 0) return Tensor(t.storage(), shape, strides, offset, t.dtype());
    int64_t span = (shape[d] - 1) * strides[d];
    (span < 0 ? lo : hi) += span;
  }
  int64_t capacity = int64_t(t.storage()->nbytes / t.element_size());
  VLP_CHECK(lo >= 0 && hi < std::max<int64_t>(capacity, 1), "as_strided: view ", shape_str(shape),
            " strides ", shape_str(strides), " offset ", offset, " reaches outside its storage of ", capacity,
            " elements");
  return Tensor(t.storage(), shape, strides, offset, t.dtype());
}

void copy_(const Tensor& dst, const Tensor& src) {
  VLP_CHECK(dst.defined() && src.defined(), "copy_ with an undefined tensor");
  Shape b = broadcast_shapes(dst.shape(), src.shape());
  VLP_CHECK(b == dst.shape(), "copy_: source of shape ", shape_str(src.shape()),
            " does not broadcast to the destination's shape ", shape_str(dst.shape()));
  if (dst.numel() == 0) return;
  dst.storage()->version++;
  Shape sstrides = broadcast_strides(src, dst.shape());
  if (dst.is_cpu() && src.is_cpu()) {
    cpu::copy_strided(int(dst.dtype()), dst.data_ptr(), dst.strides().data(), int(src.dtype()), src.data_ptr(),
                      sstrides.data(), dst.shape());
    return;
  }
  copy_across_devices(dst, src, sstrides);
}

Tensor convert(const Tensor& t, DType dtype, Device device) {
  if (t.dtype() == dtype && t.device() == device && t.is_contiguous()) return t.detach();
  Tensor out = empty(t.shape(), dtype, device);
  copy_(out, t);
  return out;
}

void fill_(const Tensor& t, double value) {
  if (t.numel() == 0) return;
  t.storage()->version++;
  if (t.is_cpu()) {
    cpu::fill_strided(int(t.dtype()), t.data_ptr(), t.strides().data(), t.shape(), value);
    return;
  }
  Tensor host = full({}, value, t.dtype(), Device::cpu());
  copy_(t, host);
}

// ---- printing ----

namespace {

void print_values(std::ostream& os, const std::vector<double>& v, const Shape& shape, size_t dim, int64_t base,
                  int max_per_dim, DType dtype, int indent) {
  int64_t n = shape[dim];
  int64_t block = 1;
  for (size_t d = dim + 1; d < shape.size(); ++d) block *= shape[d];
  os << "[";
  for (int64_t i = 0; i < n; ++i) {
    if (n > max_per_dim && i == max_per_dim / 2) {
      os << (dim + 1 == shape.size() ? "..., " : "...,\n" + std::string(size_t(indent + 1), ' '));
      i = n - max_per_dim / 2;
    }
    if (dim + 1 == shape.size()) {
      double x = v[size_t(base + i)];
      if (is_floating(dtype)) os << std::setprecision(6) << x;
      else os << int64_t(x);
    } else {
      print_values(os, v, shape, dim + 1, base + i * block, max_per_dim, dtype, indent + 1);
    }
    if (i + 1 < n) os << (dim + 1 == shape.size() ? ", " : ",\n" + std::string(size_t(indent + 1), ' '));
  }
  os << "]";
}

}  // namespace

std::string to_string(const Tensor& t, int max_per_dim) {
  if (!t.defined()) return "Tensor(undefined)";
  std::ostringstream os;
  os << "Tensor(" << t.dtype() << ", " << shape_str(t.shape()) << ", " << t.device();
  if (t.requires_grad()) os << ", requires_grad";
  os << ")\n";
  std::vector<double> v = to_vector(t);
  if (t.dim() == 0) os << v[0];
  else if (t.numel() == 0) os << "[]";
  else print_values(os, v, t.shape(), 0, 0, max_per_dim, t.dtype(), 0);
  return os.str();
}

std::ostream& operator<<(std::ostream& os, const Tensor& t) { return os << to_string(t); }

}  // namespace vlp
