// Tensor: a strided view (shape, strides in elements, offset) of a Storage, with a dtype, plus optional
// autograd metadata. The Tensor class only describes data; every operation on tensors, views
// included, is a free function: the raw ones here (no autograd) and the differentiable ones in
// autograd/ops.h, which is what models use.
#pragma once
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "runtime/dtype.h"
#include "runtime/error.h"
#include "runtime/storage.h"

namespace vlp {

using Shape = std::vector<int64_t>;  // also used for strides

struct AutogradMeta;  // autograd state of one tensor; defined below, used by autograd/
struct Node;          // a recorded operation; defined in autograd/graph.h

class Tensor {
 public:
  Tensor() = default;
  Tensor(std::shared_ptr<Storage> storage, Shape shape, Shape strides, int64_t offset, DType dtype);

  bool defined() const { return storage_ != nullptr; }
  const Shape& shape() const { return shape_; }
  const Shape& strides() const { return strides_; }
  int64_t dim() const { return int64_t(shape_.size()); }
  int64_t size(int64_t d) const { return shape_[wrap_dim(d)]; }
  int64_t stride(int64_t d) const { return strides_[wrap_dim(d)]; }
  int64_t offset() const { return offset_; }
  int64_t numel() const;
  DType dtype() const { return dtype_; }
  Device device() const { return storage_ ? storage_->device : Device::cpu(); }
  bool is_cpu() const { return device().is_cpu(); }
  bool is_cuda() const { return device().is_cuda(); }
  size_t element_size() const { return dtype_size(dtype_); }
  const std::shared_ptr<Storage>& storage() const { return storage_; }
  bool is_contiguous() const;
  int64_t wrap_dim(int64_t d) const;  // -1 -> last; throws when out of range

  // Pointer to the first element of the view. data<T>() checks that T matches the dtype.
  void* data_ptr() const;
  template <class T>
  T* data() const {
    VLP_CHECK(dtype_ == dtype_of<T>(), "tensor has dtype ", dtype_, ", accessed as ", dtype_name(dtype_of<T>()));
    return static_cast<T*>(data_ptr());
  }
  // The single element of a one-element tensor, converted to double (any dtype, any device).
  double item() const;

  // ---- autograd state (the graph itself lives in autograd/) ----
  bool requires_grad() const;
  // Marks a leaf as trainable (true) or frozen (false). A non-leaf cannot be changed.
  Tensor& set_requires_grad(bool on = true);
  bool is_leaf() const;
  Tensor grad() const;  // undefined until a backward pass reaches this tensor
  void set_grad(const Tensor& grad) const;
  const std::shared_ptr<AutogradMeta>& autograd() const { return autograd_; }
  void set_autograd(std::shared_ptr<AutogradMeta> meta) { autograd_ = std::move(meta); }
  // The same view of the same storage, cut from the graph.
  Tensor detach() const;

 private:
  std::shared_ptr<Storage> storage_;
  Shape shape_, strides_;
  int64_t offset_ = 0;
  DType dtype_ = DType::F32;
  std::shared_ptr<AutogradMeta> autograd_;
};

struct AutogradMeta {
  bool requires_grad = false;
  bool retains_grad = false;      // keep .grad on a non-leaf too
  Tensor grad;                    // accumulated gradient
  std::shared_ptr<Node> grad_fn;  // the op that produced this tensor; null for leaves
  int output_nr = 0;              // which output of grad_fn this tensor is
};

// ---- shapes ----
int64_t shape_numel(const Shape& shape);
Shape contiguous_strides(const Shape& shape);
std::string shape_str(const Shape& shape);  // "[2, 3]"
// The broadcast of two shapes (numpy rules); throws naming both when they do not broadcast.
Shape broadcast_shapes(const Shape& a, const Shape& b);
// t's strides as seen through a broadcast to `shape` (0 along new leading and size-1 dims).
Shape broadcast_strides(const Tensor& t, const Shape& shape);

// ---- creation ----
Tensor empty(const Shape& shape, DType dtype = DType::F32, Device device = Device::cpu());
Tensor zeros(const Shape& shape, DType dtype = DType::F32, Device device = Device::cpu());
Tensor ones(const Shape& shape, DType dtype = DType::F32, Device device = Device::cpu());
Tensor full(const Shape& shape, double value, DType dtype = DType::F32, Device device = Device::cpu());
Tensor empty_like(const Tensor& t);
Tensor zeros_like(const Tensor& t);
Tensor scalar_tensor(double value, DType dtype = DType::F32, Device device = Device::cpu());
Tensor arange(int64_t n, DType dtype = DType::I64, Device device = Device::cpu());
// A tensor holding a copy of values (converted to dtype), e.g. from_vector({1, 2, 3, 4}, {2, 2}).
Tensor from_vector(const std::vector<double>& values, const Shape& shape, DType dtype = DType::F32,
                   Device device = Device::cpu());
template <class T>
Tensor from_data(const std::vector<T>& values, const Shape& shape, Device device = Device::cpu());
// All elements in row-major order, converted to double (any dtype, any device, any layout).
std::vector<double> to_vector(const Tensor& t);

// ---- raw views and copies (no autograd; autograd/ops.h wraps these) ----
Tensor as_strided(const Tensor& t, const Shape& shape, const Shape& strides, int64_t offset);
// dst[i] = src[i] with dtype conversion; src broadcasts to dst's shape; any devices.
void copy_(const Tensor& dst, const Tensor& src);
// t itself when already contiguous with that dtype on that device, else a contiguous copy.
Tensor convert(const Tensor& t, DType dtype, Device device);
inline Tensor convert(const Tensor& t, DType dtype) { return convert(t, dtype, t.device()); }
inline Tensor contiguous_raw(const Tensor& t) { return convert(t, t.dtype(), t.device()); }
void fill_(const Tensor& t, double value);

// Readable printing: dtype, shape, device and the values (summarised when large).
std::ostream& operator<<(std::ostream& os, const Tensor& t);
std::string to_string(const Tensor& t, int max_per_dim = 6);

template <class T>
Tensor from_data(const std::vector<T>& values, const Shape& shape, Device device) {
  VLP_CHECK(int64_t(values.size()) == shape_numel(shape), "from_data: ", values.size(),
            " values for shape ", shape_str(shape));
  Tensor cpu = empty(shape, dtype_of<T>(), Device::cpu());
  T* p = cpu.data<T>();
  for (size_t i = 0; i < values.size(); ++i) p[i] = values[i];
  return device.is_cpu() ? cpu : convert(cpu, cpu.dtype(), device);
}

}  // namespace vlp
