// Differentiable image-to-token ops.
#pragma once
#include "runtime/tensor.h"

namespace vlp {

// ViT patch embedding: a conv2d with stride = kernel = patch. images [B, C, H, W], weight [D, C, P, P],
// bias [D] (optional) -> [B, (H/P)*(W/P), D], patches in row-major order. H and W must divide by P.
Tensor patch_embed(const Tensor& images, const Tensor& weight, const Tensor& bias);
// Adaptive max-pool over a token grid: x [B, H, W, C] -> [B, out_h, out_w, C], cell (i, j) covering
// rows floor(i*H/out_h) .. ceil((i+1)*H/out_h)-1 and likewise columns (PyTorch's rule). The gradient
// goes to the first maximal element of each cell.
Tensor adaptive_max_pool_grid(const Tensor& x, int64_t out_h, int64_t out_w);

}  // namespace vlp
