// Shared pieces of the Linear-site PEFT methods (LoHa, LoKr, VeRA, OFT, BOFT, HRA, FourierFT):
// default targets per backbone (spec/peft.md §5), per-module rank/alpha patterns, target selection over
// the model's Linear sites, merging a weight delta into a base weight stored in either layout, and the
// LyCORIS-style training-time module dropout draw.
#pragma once
#include <string>
#include <utility>
#include <vector>

#include "models/peft/peft.h"

namespace vlp::peft {

// The method's default target list for a backbone: the LoRA column of spec §5 (default_targets), except
// FourierFT's mlp.c_proj on GPT-2; empty for ViT and unknown backbones, where the config must name targets.
std::vector<std::string> default_linear_targets(const std::string& backbone, const std::string& peft_type);

// The Linear sites a config selects (explicit targets, or the method's defaults), in model order. Fails,
// naming the method, when no target is given and the backbone has no default, or when nothing matches.
std::vector<std::pair<std::string, Linear*>> select_method_targets(AttachContext& ctx, const std::string& method);

// HF PEFT's pattern lookup: the first key k of `patterns` for which the module name ends in "k" preceded by
// a dot (or equals it) wins; `fallback` when none matches.
int pattern_int(const std::map<std::string, int>& patterns, const std::string& name, int fallback);
double pattern_double(const std::map<std::string, double>& patterns, const std::string& name, double fallback);

// W += sign * delta, delta given as [out, in]; transposed into a fan_in_fan_out weight. No gradient.
void add_delta_to_weight(Linear& layer, const Tensor& delta_out_in, double sign);
// W <- the [out, in] matrix `w_out_in`, written in the layer's layout (copy, no gradient).
void set_weight_out_in(Linear& layer, const Tensor& w_out_in);

// True when a training-time module dropout with probability p skips the adapter for this forward.
bool module_dropout_skips(double p, const ForwardContext& ctx);
// Rank dropout: a [rows, 1] keep mask (Bernoulli 1 - p), divided by its mean when `rescale`, on `device` (the
// draws stay on the CPU generator, so a GPU run drops the same rows as the CPU run).
Tensor rank_dropout_mask(int64_t rows, double p, bool rescale, const ForwardContext& ctx, DType dtype,
                         Device device);

// A detached float64 copy of t on the CPU, for merge arithmetic that runs in double (the CUDA kernels
// compute in F32 or BF16): t itself when it already is one.
Tensor host_f64(const Tensor& t);

}  // namespace vlp::peft

namespace vlp::peft {

// The inverse of each matrix of a batch [n, b, b] (Gauss-Jordan with partial pivoting, in double),
// differentiable: d(A^-1) = -A^-T G A^-T. Used by the exact Cayley transforms of OFT and BOFT and by
// their unmerge. Fails naming `what` on a singular block.
Tensor batched_inverse(const Tensor& a, const char* what);

// A skew-symmetric batch [n, b, b] from the strict upper triangles [n, b(b-1)/2] (row-major order, as
// torch.triu_indices(b, b, 1)): Q[i, j] = v, Q[j, i] = -v. Differentiable, exact (an index gather).
Tensor skew_from_upper(const Tensor& vec, int64_t b);

// x [..., nb·b] with each block of b features multiplied on the right by its block: out[.., r, :] =
// x[.., r, :] · R[r] (R [nb, b, b]).
Tensor apply_block_rotation(const Tensor& x, const Tensor& blocks);

// The b x b identity matrix.
Tensor identity(int64_t b, DType dtype = DType::F32, Device device = Device::cpu());

// The block-diagonal [nb·b, nb·b] matrix of blocks [nb, b, b] on the blocks' device (no gradient; for merging).
Tensor block_diagonal(const Tensor& blocks);

}  // namespace vlp::peft
