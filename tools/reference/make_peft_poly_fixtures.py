"""Reference fixtures for Poly (models/peft/poly.{h,cpp}), from HF PEFT 0.21.2's POLY.

Chain cases (the two-layer chain of make_peft_linear_fixtures.py, both layers targeted), eval mode, every adapter
tensor set to random values; tests/fixtures/peft_linear/<case>.safetensors holds

  x [3, 2, D_IN], task_ids [3] (int64), y, y_base, probe, loss = sum(probe * y)
  base.<name>                 the chain's parameters
  adapter.<key>               get_peft_model_state_dict's tensors under their adapter_model.safetensors keys
  grad.<key>                  d loss / d that tensor
  extra.lin1.mixing_weights   lin1's router output for task_ids, [3, n_splits, n_skills]

and <case>.json the adapter_config.json PEFT writes. The backbone case (tiny T5 of tests/fixtures/models, default
targets q, v, task ids [1, 0]) writes backbone/t5_poly/: HF's adapter directory and reference.safetensors
(logits, loss, adapter gradients keyed by file key, task_ids).

HF takes the task ids through PolyModel.forward (model.base_model(..., task_ids=...)).

Run:  /work/main/tools/reference/.venv/bin/python tools/reference/make_peft_poly_fixtures.py  (repo root)
"""

import json
import os
import shutil
import sys
import tempfile

import torch
from safetensors.torch import load_file, save_file

import peft
from peft import get_peft_model, get_peft_model_state_dict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_peft_linear_fixtures import D_IN, D_OUT, MODELS, OUT, Chain, randomise  # noqa: E402


def write_config(model, path):
    with tempfile.TemporaryDirectory() as d:
        model.save_pretrained(d)
        with open(os.path.join(d, "adapter_config.json")) as f:
            cfg = json.load(f)
    if isinstance(cfg.get("target_modules"), list):  # a set in PEFT: its order varies between runs
        cfg["target_modules"] = sorted(cfg["target_modules"])
    with open(path, "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")


def chain_case(name, config, scale=0.5):
    torch.manual_seed(0)
    base = Chain()
    base_state = {f"base.{k}": v.detach().clone().contiguous() for k, v in base.state_dict().items()}
    model = get_peft_model(base, config)
    randomise(model, scale)
    model.eval()
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 2, D_IN, generator=g)
    probe = torch.randn(3, 2, D_OUT, generator=g)
    task_ids = torch.tensor([2, 0, 1], dtype=torch.int64)
    y = model.base_model(x, task_ids=task_ids)
    loss = (probe * y).sum()
    loss.backward()
    out = {"x": x, "y": y.detach(), "probe": probe, "loss": loss.detach().reshape(1), "task_ids": task_ids}
    out.update(base_state)
    params = dict(model.named_parameters())
    for k, v in get_peft_model_state_dict(model).items():
        out[f"adapter.{k}"] = v.detach().clone().contiguous()
        for pname, p in params.items():
            if p.grad is not None and pname.replace(".default", "") == k:
                out[f"grad.{k}"] = p.grad.detach().clone()
    with model.disable_adapter():
        out["y_base"] = model.base_model(x, task_ids=task_ids).detach()
    with torch.no_grad():
        router = model.base_model.model.lin1.poly_router["default"]
        out["extra.lin1.mixing_weights"] = router(task_ids=task_ids, input_ids=x)
    out = {k: v.contiguous().float() if v.is_floating_point() else v.contiguous() for k, v in out.items()}
    save_file(out, os.path.join(OUT, f"{name}.safetensors"), metadata={"peft": peft.__version__})
    write_config(model, os.path.join(OUT, f"{name}.json"))
    grads = [k for k in out if k.startswith("grad.")]
    print(f"{name}: {len(grads)} grads, |y - y_base| = {(out['y'] - out['y_base']).abs().max():.4f}")


def backbone_case(name, config, scale):
    from transformers import T5ForConditionalGeneration

    torch.manual_seed(0)
    base = T5ForConditionalGeneration.from_pretrained(os.path.join(MODELS, "t5"))
    model = get_peft_model(base, config)
    randomise(model, scale)
    model.eval()
    fx = load_file(os.path.join(MODELS, "t5", "fixture.safetensors"))
    task_ids = torch.tensor([1, 0], dtype=torch.int64)
    kwargs = dict(input_ids=fx["input_ids"], attention_mask=fx["attention_mask"], labels=fx["labels"])
    out = model.base_model(**kwargs, task_ids=task_ids)
    out.loss.backward()
    with torch.no_grad(), model.disable_adapter():
        base_logits = model.base_model(**kwargs, task_ids=task_ids).logits
    ref = {"logits": out.logits.detach(), "loss": out.loss.detach().reshape(1), "task_ids": task_ids}
    for pname, p in model.named_parameters():
        if p.grad is not None:
            ref["grad." + pname.replace(".default", "")] = p.grad.detach().clone()
    d = os.path.join(OUT, "backbone", name)
    shutil.rmtree(d, ignore_errors=True)
    model.save_pretrained(d)
    os.remove(os.path.join(d, "README.md"))
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


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    t = ["lin1", "lin2"]
    chain_case("poly", peft.PolyConfig(r=2, n_tasks=3, n_skills=4, target_modules=t))
    # Multi-Head Routing: 4 splits of 16 / 12 / 8 features, 2 skills each
    chain_case("poly_mhr", peft.PolyConfig(r=3, n_tasks=3, n_skills=2, n_splits=4, target_modules=t))
    backbone_case("t5_poly", peft.PolyConfig(r=2, n_tasks=2, n_skills=3, n_splits=2), 0.3)
