#include "autograd/graph.h"

#include <unordered_map>
#include <unordered_set>

#include "autograd/autocast.h"
#include "autograd/ops.h"
#include "runtime/trace.h"

namespace vlp {

namespace {
thread_local bool grad_enabled = true;

// A gradient about to be stored in a leaf's .grad must not share storage with anything else: later
// in-place updates (accumulation, clipping, the optimizer) would otherwise change other tensors too.
Tensor exclusive_copy(Tensor g, DType dtype) {
  const auto& st = g.storage();
  bool exclusive = st.use_count() == 1 && g.is_contiguous() && g.offset() == 0 && g.dtype() == dtype &&
                   st->nbytes == size_t(g.numel()) * g.element_size();
  if (exclusive) return g.detach();
  Tensor out = empty(g.shape(), dtype, g.device());
  copy_(out, g);
  return out;
}

void accumulate_into(Tensor& slot, const Tensor& g) { slot = slot.defined() ? add(slot, g) : g; }
}  // namespace

bool GradMode::enabled() { return grad_enabled; }
void GradMode::set_enabled(bool on) { grad_enabled = on; }

void Node::save(std::initializer_list<Tensor> tensors) {
  for (const Tensor& t : tensors) {
    saved.push_back(t.defined() ? t.detach() : Tensor());
    saved_versions.push_back(t.defined() ? t.storage()->version : 0);
  }
}

bool any_requires_grad(const std::vector<Tensor>& inputs) {
  if (!GradMode::enabled()) return false;
  for (const Tensor& t : inputs)
    if (t.defined() && t.requires_grad()) return true;
  return false;
}
bool any_requires_grad(std::initializer_list<Tensor> inputs) {
  if (!GradMode::enabled()) return false;
  for (const Tensor& t : inputs)
    if (t.defined() && t.requires_grad()) return true;
  return false;
}

Node* record(const char* name, const std::vector<Tensor>& inputs, const std::vector<Tensor*>& outputs) {
  if (!any_requires_grad(inputs)) return nullptr;
  auto node = std::make_shared<Node>();
  node->name = name;
  node->inputs.resize(inputs.size());
  for (size_t i = 0; i < inputs.size(); ++i) {
    const Tensor& t = inputs[i];
    if (!t.defined() || !t.requires_grad()) continue;
    Edge& e = node->inputs[i];
    const auto& meta = t.autograd();
    if (meta->grad_fn) {
      e.fn = meta->grad_fn;
      e.output_nr = meta->output_nr;
    } else {
      e.leaf = meta;
    }
    e.shape = t.shape();
    e.dtype = t.dtype();
  }
  for (size_t k = 0; k < outputs.size(); ++k) {
    Tensor& out = *outputs[k];
    auto meta = std::make_shared<AutogradMeta>();
    meta->requires_grad = true;
    meta->grad_fn = node;
    meta->output_nr = int(k);
    out.set_autograd(meta);
    node->outputs.push_back({out.shape(), out.dtype(), out.device(), meta});
  }
  return node.get();  // owned by the outputs' metadata
}

Node* record(const char* name, std::initializer_list<Tensor> inputs, std::initializer_list<Tensor*> outputs) {
  return record(name, std::vector<Tensor>(inputs), std::vector<Tensor*>(outputs));
}

void retain_grad(const Tensor& t) {
  VLP_CHECK(t.requires_grad(), "retain_grad on a tensor that does not require grad");
  t.autograd()->retains_grad = true;
}

namespace {

// Nodes reachable from root, ordered so that every node comes before the producers of its inputs.
std::vector<Node*> topological_order(Node* root) {
  std::vector<Node*> post;
  std::unordered_set<Node*> seen{root};
  std::vector<std::pair<Node*, size_t>> stack{{root, 0}};
  while (!stack.empty()) {
    auto& [node, next] = stack.back();
    if (next < node->inputs.size()) {
      Node* child = node->inputs[next++].fn.get();
      if (child && seen.insert(child).second) stack.push_back({child, 0});
    } else {
      post.push_back(node);
      stack.pop_back();
    }
  }
  return {post.rbegin(), post.rend()};
}

void accumulate_leaf(AutogradMeta& leaf, Tensor g) {
  if (!leaf.requires_grad) return;  // frozen after the graph was recorded
  if (leaf.grad.defined()) g = add(leaf.grad, g);
  leaf.grad = Tensor();  // drop our reference so a fresh sum counts as exclusive
  DType dtype = g.dtype();
  leaf.grad = exclusive_copy(std::move(g), dtype);
}

}  // namespace

void backward(const Tensor& root, const Tensor& grad, bool retain_graph) {
  VLP_CHECK(root.defined() && root.requires_grad(),
            "backward() on a tensor that does not require grad (no trainable parameter reaches it)");
  Tensor g = grad;
  if (!g.defined()) {
    VLP_CHECK(root.numel() == 1, "backward() on a non-scalar tensor of shape ", shape_str(root.shape()),
              " needs an explicit gradient of that shape");
    g = ones(root.shape(), root.dtype(), root.device());
  }
  VLP_CHECK(g.shape() == root.shape(), "backward(): gradient of shape ", shape_str(g.shape()),
            " for a tensor of shape ", shape_str(root.shape()));
  NoGradGuard no_grad;
  AutocastScope no_autocast(false);  // backward rules pick their own dtypes (autograd/autocast.h)
  const auto& root_meta = root.autograd();
  if (!root_meta->grad_fn) {
    accumulate_leaf(*root_meta, g);
    return;
  }

  std::vector<Node*> order = topological_order(root_meta->grad_fn.get());
  std::unordered_map<Node*, Grads> pending;  // summed gradients of each node's outputs
  pending[order.front()].resize(order.front()->outputs.size());
  pending[order.front()][size_t(root_meta->output_nr)] = g;

  for (Node* node : order) {
    Grads grads_out = std::move(pending[node]);
    pending.erase(node);
    grads_out.resize(node->outputs.size());
    VLP_CHECK(!node->released, "backward through '", node->name,
              "' a second time: its saved tensors were freed; pass retain_graph=true to the first backward");
    for (size_t i = 0; i < node->saved.size(); ++i) {
      const Tensor& s = node->saved[i];
      VLP_CHECK(!s.defined() || s.storage()->version == node->saved_versions[i], "a tensor saved by '",
                node->name, "' for backward was modified in place after the forward pass");
    }
    for (size_t k = 0; k < grads_out.size(); ++k) {
      const OutputInfo& out = node->outputs[k];
      if (!grads_out[k].defined()) grads_out[k] = zeros(out.shape, out.dtype, out.device);
      if (auto meta = out.meta.lock(); meta && meta->retains_grad) accumulate_into(meta->grad, grads_out[k]);
    }

    Grads grads_in;
    {
      TraceRange range(node->name);
      grads_in = node->backward(*node, grads_out);
    }
    VLP_CHECK(grads_in.size() == node->inputs.size(), "backward of '", node->name, "' returned ",
              grads_in.size(), " gradients for ", node->inputs.size(), " inputs");
    if (!retain_graph) {
      node->saved.clear();
      node->backward = nullptr;
      node->released = true;
    }
    for (size_t i = 0; i < grads_in.size(); ++i) {
      const Edge& e = node->inputs[i];
      if (!e.defined() || !grads_in[i].defined()) continue;
      VLP_CHECK(grads_in[i].shape() == e.shape, "backward of '", node->name, "' returned a gradient of shape ",
                shape_str(grads_in[i].shape()), " for input ", i, " of shape ", shape_str(e.shape));
      Tensor gi = std::move(grads_in[i]);
      if (gi.dtype() != e.dtype) gi = convert(gi, e.dtype);
      if (e.leaf) {
        accumulate_leaf(*e.leaf, std::move(gi));
      } else {
        Grads& slot = pending[e.fn.get()];
        slot.resize(e.fn->outputs.size());
        accumulate_into(slot[size_t(e.output_nr)], gi);
      }
    }
  }
}

int64_t saved_tensor_bytes(const Tensor& root, const std::vector<Tensor>& exclude) {
  if (!root.defined() || !root.autograd() || !root.autograd()->grad_fn) return 0;
  std::unordered_set<const Storage*> skip, counted;
  for (const Tensor& t : exclude)
    if (t.defined()) skip.insert(t.storage().get());
  int64_t bytes = 0;
  for (Node* node : topological_order(root.autograd()->grad_fn.get())) {
    for (const Tensor& s : node->saved) {
      if (!s.defined() || skip.count(s.storage().get())) continue;
      if (counted.insert(s.storage().get()).second) bytes += int64_t(s.storage()->nbytes);
    }
  }
  return bytes;
}

}  // namespace vlp
