"""Hand-written PyTorch modules for the bench/compare rows that HF peft cannot express: VL-Adapter's
bottleneck adapter (spec/peft.md §2.5) injected at the sublayer outputs of transformers' GPT-2 / T5 / BART,
and the VL-T5/VL-BART visual embedding (§2.2) appended to BART's encoder input (§2.3).

    A(z) = z + W_up gelu_new(W_down z + c_d) + c_u,   W_down: d -> d / reduction_factor

The adapter acts on a sublayer's output before the block's dropout and residual add, as vlpeft's
sublayer sites with before_dropout (the "vl_adapter" placement): a forward hook on the module whose output
is that value. Per backbone (transformers 5 layouts):
    GPT-2: attn.c_proj and mlp.c_proj (the dropout follows inside GPT2Attention / GPT2MLP)
    T5:    SelfAttention, EncDecAttention, DenseReluDense (T5Layer* add dropout(output) to the residual)
    BART:  self_attn, encoder_attn, fc2 (Bart*Layer apply dropout, add, then the post-LN)
The adapter is registered as the child "vl_adapter" of the hooked module, so model.parameters() sees it.
"""
import torch
import torch.nn.functional as F
from torch import nn

# Module-name suffixes whose output is the sublayer output (see the docstring).
ADAPTER_SITES = {
    "gpt2": ("attn.c_proj", "mlp.c_proj"),
    "t5": ("SelfAttention", "EncDecAttention", "DenseReluDense"),
    "bart": ("self_attn", "encoder_attn", "fc2"),
}


class Adapter(nn.Module):
    def __init__(self, d_model, bottleneck):
        super().__init__()
        self.down = nn.Linear(d_model, bottleneck)
        self.up = nn.Linear(bottleneck, d_model)

    def forward(self, z):
        return z + self.up(F.gelu(self.down(z), approximate="tanh"))  # gelu_new


def _adapter_hook(module, args, output):
    # Attention modules return (hidden, attn_weights); the others a tensor.
    if isinstance(output, tuple):
        return (module.vl_adapter(output[0]),) + tuple(output[1:])
    return module.vl_adapter(output)


def add_bottleneck_adapters(model, model_type, d_model, peft_cfg):
    """One single (task-shared) adapter per sublayer site; returns the number of sites. Only the
    vl_adapter placement with a reduction factor is supported: anything else is refused by name."""
    placement = peft_cfg.get("placement", "vl_adapter")
    if placement != "vl_adapter" or peft_cfg.get("sharing", "single") != "single":
        raise SystemExit(f"bench_torch: VLPEFT_ADAPTER placement {placement!r} / sharing "
                         f"{peft_cfg.get('sharing')!r}: only vl_adapter, single is written here")
    if peft_cfg.get("non_linearity", "gelu_new") != "gelu_new":
        raise SystemExit("bench_torch: VLPEFT_ADAPTER non_linearity must be gelu_new here")
    bottleneck = peft_cfg.get("bottleneck_dim") or d_model // peft_cfg.get("reduction_factor", 8)
    sites = [m for name, m in model.named_modules() if name.endswith(ADAPTER_SITES[model_type])]
    for m in sites:
        m.add_module("vl_adapter", Adapter(d_model, bottleneck))
        m.register_forward_hook(_adapter_hook)
    return len(sites)


def mark_trainable(model, modules_to_save, extra_modules=()):
    """Freezes everything, then trains every adapter, every module whose dotted name ends with one of
    modules_to_save (vlpeft's list rule: exact name or dotted suffix) and the extra modules given."""
    model.requires_grad_(False)
    for name, m in model.named_modules():
        if name.endswith("vl_adapter") or any(name == s or name.endswith("." + s) for s in modules_to_save):
            m.requires_grad_(True)
    for m in extra_modules:
        m.requires_grad_(True)


class VisualEmbedding(nn.Module):
    """e_i = LN(W_f v_i + c_f) + LN(W_p [b_i; a_i] + c_p) + E_img[img_id_i] + E_tok[V - 1 - obj_id_i]
    for one image of N region features (img_id 0, obj_id i), boxes (x1, x2, y1, y2). E_tok is BART's shared
    token embedding, read but not registered here (it stays frozen and is counted once)."""

    def __init__(self, feat_dim, d_model, shared):
        super().__init__()
        self.feat_embedding = nn.Sequential(nn.Linear(feat_dim, d_model), nn.LayerNorm(d_model))
        self.absolute_vis_pos_embedding = nn.Sequential(nn.Linear(5, d_model), nn.LayerNorm(d_model))
        self.img_order_embedding = nn.Embedding(2, d_model)
        self._shared = [shared]  # a list, so nn.Module does not register it

    def forward(self, feats, boxes):
        n = feats.shape[1]
        area = (boxes[..., 1] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 2])
        pos = torch.cat([boxes, area.unsqueeze(-1)], dim=-1)
        shared = self._shared[0].weight
        obj_rows = shared.shape[0] - 1 - torch.arange(n, device=feats.device)
        img = self.img_order_embedding(torch.zeros(n, dtype=torch.long, device=feats.device))
        return (self.feat_embedding(feats) + self.absolute_vis_pos_embedding(pos)
                + img + F.embedding(obj_rows, shared))


class AppendVisual(nn.Module):
    """Replaces BART's encoder.layernorm_embedding: LN over the text, then the visual tokens appended, so
    the encoder's dropout and layers see [text; visual] (spec §2.3; no position embedding for visual
    tokens). The batch's features and boxes are buffers: the bench feeds the same random batch every step."""

    def __init__(self, layernorm, visual_embedding, feats, boxes):
        super().__init__()
        self.layernorm = layernorm
        self.visual_embedding = visual_embedding
        self.register_buffer("feats", feats, persistent=False)
        self.register_buffer("boxes", boxes, persistent=False)

    def forward(self, text):
        visual = self.visual_embedding(self.feats, self.boxes).to(text.dtype)
        return torch.cat([self.layernorm(text), visual], dim=1)


def attach_visual_embedding(bart, feats, boxes):
    """VL-BART from a BartForConditionalGeneration: returns the visual embedding module (to train)."""
    enc = bart.model.encoder
    d_model = bart.config.d_model
    visual = VisualEmbedding(feats.shape[-1], d_model, bart.model.shared)
    for lin in (visual.feat_embedding[0], visual.absolute_vis_pos_embedding[0]):  # BART's init
        nn.init.normal_(lin.weight, std=0.02)
        nn.init.zeros_(lin.bias)
    nn.init.normal_(visual.img_order_embedding.weight, std=0.02)
    enc.layernorm_embedding = AppendVisual(enc.layernorm_embedding, visual, feats, boxes)
    return visual


def random_regions(batch, n, feat_dim, generator):
    """Random region features [batch, n, feat_dim] and boxes (x1, x2, y1, y2) inside [0, 1]."""
    feats = torch.randn(batch, n, feat_dim, generator=generator)
    lo = torch.rand(batch, n, 2, generator=generator) * 0.5
    hi = lo + torch.rand(batch, n, 2, generator=generator) * 0.5
    boxes = torch.stack([lo[..., 0], hi[..., 0], lo[..., 1], hi[..., 1]], dim=-1)
    return feats, boxes

