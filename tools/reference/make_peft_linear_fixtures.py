"""Reference fixtures for the Linear-site PEFT methods (models/peft/{loha,lokr,oft,vera,hra,fourierft,boft}).

Each case wraps a tiny chain of two layers with HF PEFT (peft 0.21.2):

    y = lin2(tanh(lin1(x)))      lin1: D_IN -> D_MID, lin2: D_MID -> D_OUT (torch Linear, or transformers'
                                 Conv1D for the fan_in_fan_out cases, whose weight is stored [in, out])

with both layers targeted, and sets every adapter tensor to non-trivial random values (so the adapted output
differs from the base). It records into tests/fixtures/peft_linear/<case>.safetensors (fp32, eval mode):

  x, y, y_base          input [2, 3, D_IN], adapted output, base output (adapters disabled)
  probe, loss           loss = sum(probe * y)
  base.<name>           the chain's own parameters (lin1.weight, lin1.bias, lin2.weight, lin2.bias)
  adapter.<key>         every tensor of get_peft_model_state_dict, under its adapter_model.safetensors key
  grad.<key>            d loss / d that tensor (trainable tensors only)
  y_merged              output after merge_adapter() (mergeable methods)
  extra.*               method-specific values (FourierFT's indices, OFT's rotation, ...)

and <case>.json: the adapter_config.json PEFT writes (save_pretrained), which the C++ tests parse.

Run:  /work/main/tools/reference/.venv/bin/python tools/reference/make_peft_linear_fixtures.py  (repo root)
"""

import json
import os
import shutil
import sys
import tempfile

import torch
from safetensors.torch import save_file
from transformers.pytorch_utils import Conv1D

import peft
from peft import get_peft_model, get_peft_model_state_dict

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(ROOT, "tests", "fixtures", "peft_linear")

D_IN, D_MID, D_OUT = 16, 12, 8


class Chain(torch.nn.Module):
    def __init__(self, conv1d=False):
        super().__init__()
        make = (lambda i, o: Conv1D(o, i)) if conv1d else (lambda i, o: torch.nn.Linear(i, o))
        self.lin1 = make(D_IN, D_MID)
        self.lin2 = make(D_MID, D_OUT)
        for p in self.parameters():
            torch.nn.init.normal_(p, 0.0, 0.3)

    def forward(self, x):
        return self.lin2(torch.tanh(self.lin1(x)))


def randomise(model, scale):
    """Every adapter tensor (trainable or not, except those we must keep structural) to random values."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=g) * scale)
                if "boft_s" in name:  # a scale: around 1, so unmerge's division stays well conditioned
                    p.add_(1.0)


def make_case(name, config, conv1d=False, scale=0.3, mergeable=True, extra=None, keep_init=False):
    torch.manual_seed(0)
    base = Chain(conv1d)
    base_state = {f"base.{k}": v.detach().clone().contiguous() for k, v in base.state_dict().items()}
    model = get_peft_model(base, config)
    if not keep_init:
        randomise(model, scale)
    model.eval()
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, D_IN, generator=g)
    probe = torch.randn(2, 3, D_OUT, generator=g)
    y = model(x)
    loss = (probe * y).sum()
    loss.backward()
    sd = get_peft_model_state_dict(model)
    # map each saved key to its parameter to fetch gradients
    params = dict(model.named_parameters())
    out = {"x": x, "y": y.detach(), "probe": probe, "loss": loss.detach().reshape(1)}
    out.update(base_state)
    for k, v in sd.items():
        out[f"adapter.{k}"] = v.detach().clone().contiguous()
        # find the parameter: the saved key with the adapter name put back
        for pname, p in params.items():
            if p.grad is None:
                continue
            stripped = pname.replace(".default", "")
            if stripped == k or stripped == k + ".weight" or stripped.replace(".weight", "") == k:
                out[f"grad.{k}"] = p.grad.detach().clone()
    with model.disable_adapter():
        out["y_base"] = model(x).detach()
    if mergeable:
        with torch.no_grad():
            model.merge_adapter()
            out["y_merged"] = model(x).detach()
            model.unmerge_adapter()
    if extra:
        out.update(extra(model))
    out = {k: v.contiguous().float() if v.is_floating_point() else v.contiguous() for k, v in out.items()}
    save_file(out, os.path.join(OUT, f"{name}.safetensors"), metadata={"peft": peft.__version__})
    with tempfile.TemporaryDirectory() as d:
        model.save_pretrained(d)
        with open(os.path.join(d, "adapter_config.json")) as f:
            cfg = json.load(f)
        if isinstance(cfg.get("target_modules"), list):  # a set in PEFT: its order varies between runs
            cfg["target_modules"] = sorted(cfg["target_modules"])
        with open(os.path.join(OUT, f"{name}.json"), "w") as f:
            json.dump(cfg, f, indent=2, sort_keys=True)
            f.write("\n")
    grads = [k for k in out if k.startswith("grad.")]
    diff = (out["y"] - out["y_base"]).abs().max()
    print(f"{name}: {len(sd)} adapter tensors, {len(grads)} grads, |y - y_base| = {diff:.4f}")


def loha_cases():
    make_case("loha", peft.LoHaConfig(r=4, alpha=6, target_modules=["lin1", "lin2"]))
    make_case("loha_pattern", peft.LoHaConfig(r=4, alpha=6, target_modules=["lin1", "lin2"],
                                              rank_pattern={"lin2": 2}, alpha_pattern={"lin2": 3}))


def lokr_cases():
    make_case("lokr", peft.LoKrConfig(r=2, alpha=3, target_modules=["lin1", "lin2"]))
    make_case("lokr_both", peft.LoKrConfig(r=1, alpha=2, decompose_both=True, target_modules=["lin1", "lin2"]))
    make_case("lokr_factor", peft.LoKrConfig(r=8, alpha=4, decompose_factor=4, target_modules=["lin1", "lin2"]))


def oft_cases():
    t = ["lin1", "lin2"]
    make_case("oft", peft.OFTConfig(oft_block_size=4, target_modules=t), scale=0.2)
    make_case("oft_cayley", peft.OFTConfig(oft_block_size=4, use_cayley_neumann=False, target_modules=t), scale=0.3)
    make_case("oft_r", peft.OFTConfig(r=2, oft_block_size=0, num_cayley_neumann_terms=3, target_modules=t), scale=0.1)
    make_case("oft_share", peft.OFTConfig(oft_block_size=4, block_share=True, target_modules=t), scale=0.2)
    make_case("oft_coft", peft.OFTConfig(oft_block_size=4, coft=True, eps=0.5, target_modules=t), scale=0.2)


def vera_cases():
    t = ["lin1", "lin2"]
    make_case("vera", peft.VeraConfig(r=4, target_modules=t), scale=0.5)
    make_case("vera_conv1d", peft.VeraConfig(r=6, projection_prng_key=5, fan_in_fan_out=True, target_modules=t),
              conv1d=True, scale=0.5)
    make_case("vera_noproj", peft.VeraConfig(r=4, projection_prng_key=3, save_projection=False, target_modules=t),
              scale=0.5)


def hra_cases():
    t = ["lin1", "lin2"]
    make_case("hra", peft.HRAConfig(r=4, target_modules=t), scale=0.5)
    make_case("hra_odd", peft.HRAConfig(r=3, target_modules=t), scale=0.5)
    make_case("hra_gs", peft.HRAConfig(r=4, apply_GS=True, target_modules=t), scale=0.5)


def fourierft_indices(model):
    out = {}
    for name, m in model.named_modules():
        if hasattr(m, "indices") and isinstance(getattr(m, "indices"), dict) and "default" in m.indices:
            short = name.replace("base_model.model.", "")
            out[f"extra.{short}.indices"] = m.indices["default"].clone()
    # torch's randperm at a GPT-2 size (c_proj 3072 -> 768), first 1000, with the default seed
    out["extra.randperm_2359296_777"] = torch.randperm(3072 * 768, generator=torch.Generator().manual_seed(777))[:1000]
    return out


def fourierft_cases():
    t = ["lin1", "lin2"]
    make_case("fourierft", peft.FourierFTConfig(n_frequency=20, scaling=30.0, target_modules=t), scale=0.5,
              extra=fourierft_indices)
    make_case("fourierft_conv1d", peft.FourierFTConfig(n_frequency=30, scaling=10.0, random_loc_seed=5,
                                                       fan_in_fan_out=True, n_frequency_pattern={"lin2": 12},
                                                       target_modules=t),
              conv1d=True, scale=0.5, extra=fourierft_indices)


class TorchBlockDiag:
    """A pure-torch stand-in for BOFT's CUDA block-diagonal extension: [N, D, H, H] -> [N, D*H, D*H]."""

    @staticmethod
    def apply(t):
        return torch.stack([torch.block_diag(*torch.unbind(t[i])) for i in range(t.shape[0])])


def boft_cases():
    import peft.tuners.boft.layer as boft_layer

    t = ["lin1", "lin2"]
    make_case("boft", peft.BOFTConfig(boft_block_size=4, target_modules=t), scale=0.2)
    make_case("boft_num", peft.BOFTConfig(boft_block_size=0, boft_block_num=2, target_modules=t), scale=0.2)
    # Without its CUDA extension HF silently drops to one butterfly factor; the stand-in keeps the config's.
    boft_layer.get_fbd_cuda = lambda: True
    boft_layer.FastBlockDiag = TorchBlockDiag
    make_case("boft_butterfly", peft.BOFTConfig(boft_block_size=2, boft_n_butterfly_factor=2, target_modules=t),
              scale=0.2)
    make_case("boft_butterfly3", peft.BOFTConfig(boft_block_size=2, boft_n_butterfly_factor=3,
                                                 target_modules=["lin1"]), scale=0.2)
    make_case("boft_butterfly_num", peft.BOFTConfig(boft_block_size=0, boft_block_num=2, boft_n_butterfly_factor=2,
                                                    target_modules=t), scale=0.2)


MODELS = os.path.join(ROOT, "tests", "fixtures", "models")


def backbone_case(name, backbone, config, scale):
    """A method on a tiny reference backbone with its default targets: the adapter directory HF PEFT writes
    (backbone/<name>/adapter_config.json + adapter_model.safetensors) and backbone/<name>/reference.safetensors
    (logits, loss and the adapter gradients, keyed by their file keys, on the backbone fixture's batch)."""
    from safetensors.torch import load_file
    from transformers import GPT2LMHeadModel, T5ForConditionalGeneration

    cls = {"gpt2": GPT2LMHeadModel, "t5": T5ForConditionalGeneration}[backbone]
    torch.manual_seed(0)
    base = cls.from_pretrained(os.path.join(MODELS, backbone))
    model = get_peft_model(base, config)
    randomise(model, scale)
    model.eval()
    fx = load_file(os.path.join(MODELS, backbone, "fixture.safetensors"))
    kwargs = dict(input_ids=fx["input_ids"], attention_mask=fx["attention_mask"], labels=fx["labels"])
    out = model(**kwargs)
    out.loss.backward()
    with torch.no_grad(), model.disable_adapter():
        base_logits = model(**kwargs).logits
    ref = {"logits": out.logits.detach(), "loss": out.loss.detach().reshape(1)}
    for pname, p in model.named_parameters():
        if p.grad is not None:
            ref["grad." + pname.replace(".default", "")] = p.grad.detach().clone()
    d = os.path.join(OUT, "backbone", name)
    shutil.rmtree(d, ignore_errors=True)
    model.save_pretrained(d)
    os.remove(os.path.join(d, "README.md"))  # the model card save_pretrained adds
    with open(os.path.join(d, "adapter_config.json")) as f:
        cfg = json.load(f)
    if isinstance(cfg.get("target_modules"), list):
        cfg["target_modules"] = sorted(cfg["target_modules"])
    with open(os.path.join(d, "adapter_config.json"), "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")
    save_file({k: v.contiguous() for k, v in ref.items()}, os.path.join(d, "reference.safetensors"))
    print(f"backbone/{name}: |logits - base| = {(out.logits - base_logits).abs().max():.4f}, "
          f"{sum(k.startswith('grad.') for k in ref)} grads")


def backbone_cases():
    backbone_case("t5_loha", "t5", peft.LoHaConfig(r=2, alpha=4), 0.3)
    backbone_case("t5_lokr", "t5", peft.LoKrConfig(r=2, alpha=4), 0.3)
    backbone_case("t5_oft", "t5", peft.OFTConfig(oft_block_size=4), 0.1)
    backbone_case("t5_hra", "t5", peft.HRAConfig(r=2), 0.5)
    backbone_case("t5_boft", "t5", peft.BOFTConfig(boft_block_size=4), 0.1)
    backbone_case("t5_vera", "t5", peft.VeraConfig(r=4), 0.5)
    backbone_case("t5_fourierft", "t5", peft.FourierFTConfig(n_frequency=16, scaling=20.0), 0.5)
    backbone_case("gpt2_vera", "gpt2", peft.VeraConfig(r=4), 0.5)
    backbone_case("gpt2_fourierft", "gpt2", peft.FourierFTConfig(n_frequency=16, scaling=20.0), 0.5)
    # LoHa, LoKr, OFT, HRA and BOFT refuse GPT-2's Conv1D in HF PEFT; their Conv1D layout is covered by the
    # chain cases (merge) and by the C++ tests.


CASES = {
    "loha": loha_cases,
    "lokr": lokr_cases,
    "oft": oft_cases,
    "vera": vera_cases,
    "hra": hra_cases,
    "fourierft": fourierft_cases,
    "boft": boft_cases,
    "backbone": backbone_cases,
}

if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    for key in sys.argv[1:] or list(CASES):
        CASES[key]()
