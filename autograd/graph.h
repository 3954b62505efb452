// The autograd tape. An op whose inputs require grad records a Node: edges to where its inputs' gradients
// go, the tensors its backward needs, and a backward function. backward() walks the recorded nodes in
// reverse topological order, calls each backward once with the summed gradients of its outputs, and
// accumulates into the leaves' .grad. Ops record nothing when no input requires grad (frozen weights,
// inference, NoGradGuard), so a frozen backbone costs no graph memory below its first trainable parameter.
//
// Writing an op (every differentiable op in autograd/ follows this shape):
//
//   Tensor relu(const Tensor& x) {
//     Tensor y = ...compute with a kernel...;
//     if (Node* n = record("relu", {x}, {&y})) {
//       n->save({y});                                  // only what backward reads
//       n->backward = [](Node& n, const Grads& g) -> Grads { return {relu_backward(n.saved[0], g[0])}; };
//     }
//     return y;
//   }
//
// Backward functions run with gradient recording off, receive one gradient per output (zeros where an
// output was unused) and return one gradient per input, undefined where n.needs_grad(i) is false.
// Higher-order gradients are not supported.
#pragma once
#include <functional>
#include <initializer_list>
#include <memory>
#include <vector>

#include "runtime/tensor.h"

namespace vlp {

using Grads = std::vector<Tensor>;

// Where the gradient of one op input goes: into the node that produced it, or into a leaf's .grad.
struct Edge {
  std::shared_ptr<Node> fn;            // producer of a non-leaf input
  int output_nr = 0;                   // which output of fn
  std::shared_ptr<AutogradMeta> leaf;  // a leaf that requires grad
  Shape shape;                         // the input's shape and dtype, to check what backward returns
  DType dtype = DType::F32;
  bool defined() const { return fn || leaf; }
};

struct OutputInfo {
  Shape shape;
  DType dtype = DType::F32;
  Device device;
  std::weak_ptr<AutogradMeta> meta;  // to honour retain_grad on non-leaf outputs
};

struct Node {
  const char* name = "";
  std::vector<Edge> inputs;    // one per op input, in the op's argument order
  std::vector<OutputInfo> outputs;
  std::vector<Tensor> saved;   // detached tensors backward reads
  std::vector<uint64_t> saved_versions;
  std::function<Grads(Node&, const Grads&)> backward;
  bool released = false;       // saved tensors freed after a backward without retain_graph

  bool needs_grad(size_t i) const { return i < inputs.size() && inputs[i].defined(); }
  // Stores tensors for backward, detached (so a saved output does not keep its own node alive) and with
  // their storage versions (so a later in-place change is caught instead of giving wrong gradients).
  void save(std::initializer_list<Tensor> tensors);
};

// Gradient recording switch (per thread). NoGradGuard turns it off for a scope.
struct GradMode {
  static bool enabled();
  static void set_enabled(bool on);
};
struct NoGradGuard {
  NoGradGuard() : previous_(GradMode::enabled()) { GradMode::set_enabled(false); }
  ~NoGradGuard() { GradMode::set_enabled(previous_); }
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool previous_;
};

// True when grad mode is on and at least one defined input requires grad.
bool any_requires_grad(std::initializer_list<Tensor> inputs);
bool any_requires_grad(const std::vector<Tensor>& inputs);

// Records a node for an op with these inputs and makes each output a non-leaf that requires grad.
// Returns nullptr (and records nothing) when no input requires grad or grad mode is off.
Node* record(const char* name, std::initializer_list<Tensor> inputs, std::initializer_list<Tensor*> outputs);
Node* record(const char* name, const std::vector<Tensor>& inputs, const std::vector<Tensor*>& outputs);

// Backpropagates from root. grad defaults to ones for a one-element root; a non-scalar root needs one
// of its shape. Without retain_graph the saved tensors are freed as the walk passes them.
void backward(const Tensor& root, const Tensor& grad = Tensor(), bool retain_graph = false);

// Keep .grad on a non-leaf tensor during backward (for inspection and tests).
void retain_grad(const Tensor& t);

// Bytes of distinct storages saved for backward in the graph that produced root: what a training step
// keeps alive between forward and backward. Storages of `exclude` (typically the model's parameters,
// which stay alive anyway) are not counted.
int64_t saved_tensor_bytes(const Tensor& root, const std::vector<Tensor>& exclude = {});

}  // namespace vlp
