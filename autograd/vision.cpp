// Differentiable image-to-token ops. patch_embed is a composite of views and linear (a stride = kernel
// convolution is a matrix product over non-overlapping patches), so its gradients come from those ops and
// it runs wherever they do (on CUDA: the strided copy kernel and cuBLASLt); adaptive_max_pool_grid runs
// kernels/cpu/vision or kernels/cuda/vision (autograd/kernel_calls.h) and saves the argmax for its
// backward.
#include "autograd/vision.h"

#include "autograd/dispatch.h"
#include "autograd/graph.h"
#include "autograd/kernel_calls.h"
#include "autograd/linalg.h"
#include "autograd/views.h"

namespace vlp {

Tensor patch_embed(const Tensor& images, const Tensor& weight, const Tensor& bias) {
  check_operands("patch_embed", {images, weight, bias}, /*same_dtype=*/true, /*cuda_ok=*/true);
  VLP_CHECK(images.dim() == 4, "patch_embed: images must be [B, C, H, W], got ", shape_str(images.shape()));
  VLP_CHECK(weight.dim() == 4 && weight.size(2) == weight.size(3) && weight.size(2) > 0,
            "patch_embed: weight must be [D, C, P, P], got ", shape_str(weight.shape()));
  const int64_t B = images.size(0), C = images.size(1), H = images.size(2), W = images.size(3);
  const int64_t D = weight.size(0), P = weight.size(2);
  VLP_CHECK(weight.size(1) == C, "patch_embed: weight ", shape_str(weight.shape()), " expects ", weight.size(1),
            " channels, images ", shape_str(images.shape()), " have ", C);
  VLP_CHECK(H % P == 0 && W % P == 0, "patch_embed: image size ", H, "x", W, " is not divisible by the patch size ",
            P);
  VLP_CHECK(!bias.defined() || bias.shape() == Shape{D}, "patch_embed: bias of shape ", shape_str(bias.shape()),
            " for ", D, " output channels");
  const int64_t gh = H / P, gw = W / P;
  // [B, C, gh, P, gw, P] -> [B, gh, gw, C, P, P]: each patch's pixels in the weight's (C, P, P) order.
  Tensor patches = permute(reshape(images, {B, C, gh, P, gw, P}), {0, 2, 4, 1, 3, 5});
  patches = reshape(patches, {B, gh * gw, C * P * P});
  return linear(patches, reshape(weight, {D, C * P * P}), bias);
}

Tensor adaptive_max_pool_grid(const Tensor& x, int64_t out_h, int64_t out_w) {
  check_operands("adaptive_max_pool_grid", {x}, /*same_dtype=*/true, /*cuda_ok=*/true);
  VLP_CHECK(x.dim() == 4, "adaptive_max_pool_grid: x must be [B, H, W, C], got ", shape_str(x.shape()));
  VLP_CHECK(out_h > 0 && out_w > 0, "adaptive_max_pool_grid: output grid ", out_h, "x", out_w, " must be positive");
  const int64_t B = x.size(0), H = x.size(1), W = x.size(2), C = x.size(3);
  VLP_CHECK(H > 0 && W > 0, "adaptive_max_pool_grid: empty input grid ", shape_str(x.shape()));
  const Device dev = x.device();
  DType dt = compute_dtype(x.dtype(), dev);
  Tensor xc = convert(x, dt);  // contiguous
  Tensor y = empty({B, out_h, out_w, C}, dt, dev), argmax = empty({B, out_h, out_w, C}, DType::I64, dev);
  call_adaptive_max_pool_grid("adaptive_max_pool_grid", xc, y, argmax);
  Tensor out = dt == x.dtype() ? y : convert(y, x.dtype());
  if (Node* n = record("adaptive_max_pool_grid", {x}, {&out})) {
    n->save({argmax});
    Shape in_shape = x.shape();
    n->backward = [in_shape](Node& n, const Grads& g) -> Grads {
      Tensor gc = convert(g[0], compute_dtype(g[0].dtype(), g[0].device()));
      Tensor dx = empty(in_shape, gc.dtype(), gc.device());
      call_adaptive_max_pool_grid_backward("adaptive_max_pool_grid backward", gc, n.saved[0], dx);
      return {dx};
    };
  }
  return out;
}

}  // namespace vlp
