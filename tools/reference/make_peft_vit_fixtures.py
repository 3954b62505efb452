"""Reference fixtures for PEFT on the tiny ViT classifier (tests/fixtures/models/vit/classifier) against
huggingface/peft 0.21.2 with transformers 5.23.

transformers 5 loads ViT checkpoints into renamed modules (vit.layers.N.attention.q_proj, .mlp.fc1, ...), so the
adapter files PEFT writes here use those names, while models/vit, every published ViT checkpoint and adapters made
with transformers 4.x use the classic ones (vit.encoder.layer.N.attention.attention.query, ...). The C++ loader
translates the new names (models/peft/vit_names.h); this script records what PEFT does under the new names.

For every case in CASES it wraps the classifier with get_peft_model, sets every adapter tensor to non-trivial seeded
random values (the adapted logits differ from the base), and writes tests/fixtures/peft_vit/<case>/:

  adapter_config.json, adapter_model.safetensors   PEFT's save_pretrained output (transformers-5 names)
  fixture.safetensors                               logits, loss (eval mode, fp32) and grad.<file key>: the
                                                    gradient of the loss for every trainable tensor, keyed as
                                                    in adapter_model.safetensors

Run:  /work/main/tools/reference/.venv/bin/python tools/reference/make_peft_vit_fixtures.py        (repo root)

Check mode (files written by vlpeft, with classic names, load in PEFT with identical outputs once renamed):
      /work/main/tools/reference/.venv/bin/python tools/reference/make_peft_vit_fixtures.py --check <dir>
<dir> holds one sub-directory per case as test_peft writes them (build/peft_written_vit/<case>/: an adapter
directory plus outputs.safetensors with vlpeft's logits). Each adapter is renamed to the transformers-5 scheme
(TO_TRANSFORMERS5 below, the inverse of the C++ table), loaded with PeftModel.from_pretrained on the same base
and its logits compared; the result goes to tests/fixtures/peft_vit/written_by_vlpeft_check.json.
"""

import json
import os
import re
import shutil
import sys
import tempfile

import torch
from peft import (FourierFTConfig, HRAConfig, IA3Config, LoHaConfig, LoKrConfig, LoraConfig, OFTConfig, PeftModel,
                  VeraConfig, get_peft_model)
from safetensors.torch import load_file, save_file
from transformers import ViTForImageClassification

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
MODEL = os.path.join(ROOT, "tests", "fixtures", "models", "vit", "classifier")
OUT = os.path.join(ROOT, "tests", "fixtures", "peft_vit")

HEAD = ["classifier"]  # HF's image-classification recipes train the new head in full

# case -> (config, scale of the random adapter values)
CASES = {
    "vit_lora": (lambda: LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], modules_to_save=HEAD), 0.3),
    "vit_dora": (lambda: LoraConfig(r=2, lora_alpha=4, use_dora=True, target_modules=["q_proj", "o_proj", "fc1"],
                                    modules_to_save=HEAD), 0.3),
    "vit_ia3": (lambda: IA3Config(target_modules=["k_proj", "v_proj", "fc2"], feedforward_modules=["fc2"],
                                  modules_to_save=HEAD), 0.3),
    "vit_loha": (lambda: LoHaConfig(r=2, alpha=4, target_modules=["q_proj", "v_proj"], modules_to_save=HEAD), 0.3),
    "vit_lokr": (lambda: LoKrConfig(r=2, alpha=3, target_modules=["fc1", "fc2"], modules_to_save=HEAD), 0.3),
    "vit_vera": (lambda: VeraConfig(r=4, target_modules=["q_proj", "v_proj"], modules_to_save=HEAD), 0.5),
    "vit_oft": (lambda: OFTConfig(oft_block_size=4, target_modules=["q_proj", "v_proj"], modules_to_save=HEAD), 0.2),
    "vit_hra": (lambda: HRAConfig(r=2, target_modules=["q_proj", "v_proj"], modules_to_save=HEAD), 0.3),
    "vit_fourierft": (lambda: FourierFTConfig(n_frequency=20, scaling=10.0, target_modules=["q_proj", "v_proj"],
                                              modules_to_save=HEAD), 0.3),
}

# Classic ViT module names -> transformers-5 names, for the reverse check only (the C++ side holds the inverse
# table in models/peft/vit_names.cpp). Applied to full tensor keys.
TO_TRANSFORMERS5 = [
    (r"\.encoder\.layer\.(\d+)\.", r".layers.\1."),
    (r"\.attention\.attention\.query\.", ".attention.q_proj."),
    (r"\.attention\.attention\.key\.", ".attention.k_proj."),
    (r"\.attention\.attention\.value\.", ".attention.v_proj."),
    (r"\.attention\.output\.dense\.", ".attention.o_proj."),
    (r"\.intermediate\.dense\.", ".mlp.fc1."),
    (r"(\.layers\.\d+)\.output\.dense\.", r"\1.mlp.fc2."),
]


def to_transformers5(key):
    for pattern, repl in TO_TRANSFORMERS5:
        key = re.sub(pattern, repl, key)
    return key


def load_base():
    m = ViTForImageClassification.from_pretrained(MODEL)
    m.eval()
    return m


def batch():
    fx = load_file(os.path.join(MODEL, "fixture.safetensors"))
    return dict(pixel_values=fx["pixel_values"], labels=fx["labels"])


def file_key(name):
    """PEFT's key in adapter_model.safetensors for a parameter of the wrapped model (adapter name removed)."""
    name = name.replace(".modules_to_save.default.", ".")
    name = name.replace(".default.", ".")
    if name.endswith(".default"):
        name = name[: -len(".default")]
    name = name.replace("lora_magnitude_vector.weight", "lora_magnitude_vector")
    return name


def perturb(peft_model, gen, scale):
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if not p.requires_grad:
                continue
            if "modules_to_save" in name:
                p.add_(torch.randn(p.shape, generator=gen) * 0.1)
            elif "lora_magnitude_vector" in name:
                p.mul_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
            elif "ia3_l" in name:
                p.copy_(1.0 + 0.3 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(torch.randn(p.shape, generator=gen) * scale)


def make_case(case):
    make_config, scale = CASES[case]
    torch.manual_seed(0)
    peft_model = get_peft_model(load_base(), make_config())
    perturb(peft_model, torch.Generator().manual_seed(1234), scale)
    peft_model.eval()
    out_dir = os.path.join(OUT, case)
    os.makedirs(out_dir, exist_ok=True)
    peft_model.peft_config["default"].base_model_name_or_path = "tests/fixtures/models/vit/classifier"
    peft_model.save_pretrained(out_dir)
    os.remove(os.path.join(out_dir, "README.md"))  # the model card; not part of the format
    b = batch()
    out = peft_model(**b)
    out.loss.backward()
    tensors = {"logits": out.logits.detach().contiguous(), "loss": out.loss.detach().reshape(1)}
    for name, p in peft_model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, name
            tensors["grad." + file_key(name)] = p.grad.detach().contiguous()
    with torch.no_grad(), peft_model.disable_adapter():
        base_logits = peft_model(**b).logits
    save_file(tensors, os.path.join(out_dir, "fixture.safetensors"))
    saved = load_file(os.path.join(out_dir, "adapter_model.safetensors"))
    missing = [k[5:] for k in tensors if k.startswith("grad.") and k[5:] not in saved]
    assert not missing, missing
    assert any(".layers." in k for k in saved), "expected transformers-5 module names in the file"
    print(f"{case}: {len(saved)} tensors, loss {out.loss.item():.5f}, "
          f"|logits - base| = {(out.logits - base_logits).abs().max().item():.4f}")


def check_written(root):
    results, ok = {}, True
    for case in sorted(os.listdir(root)):
        d = os.path.join(root, case)
        if case not in CASES or not os.path.isdir(d):
            continue
        with open(os.path.join(d, "adapter_config.json")) as f:
            cfg = json.load(f)
        with open(os.path.join(OUT, case, "adapter_config.json")) as f:
            hf_cfg = json.load(f)
        written = load_file(os.path.join(d, "adapter_model.safetensors"))
        classic = all(".layers." not in k for k in written) and any(".encoder.layer." in k for k in written)
        # The module-name fields as PEFT names them on transformers 5 (the same case's own config).
        for field in ("target_modules", "feedforward_modules", "layers_pattern", "rank_pattern", "alpha_pattern"):
            if field in hf_cfg:
                cfg[field] = hf_cfg[field]
        with tempfile.TemporaryDirectory() as tmp:
            with open(os.path.join(tmp, "adapter_config.json"), "w") as f:
                json.dump(cfg, f)
            save_file({to_transformers5(k): v for k, v in written.items()},
                      os.path.join(tmp, "adapter_model.safetensors"), metadata={"format": "pt"})
            peft_model = PeftModel.from_pretrained(load_base(), tmp)
            peft_model.eval()
            with torch.no_grad():
                logits = peft_model(**batch()).logits
        ours = load_file(os.path.join(d, "outputs.safetensors"))["logits"]
        diff = (logits - ours).abs().max().item()
        scale = logits.abs().max().item()
        passed = classic and diff <= 1e-5 * scale
        ok = ok and passed
        results[case] = {"classic_names_in_file": classic, "max_abs_diff": diff, "max_abs_logit": scale, "ok": passed}
        print(case, results[case])
    with open(os.path.join(OUT, "written_by_vlpeft_check.json"), "w") as f:
        json.dump({"peft_version": __import__("peft").__version__,
                   "transformers_version": __import__("transformers").__version__,
                   "tolerance": "max|diff| <= 1e-5 * max|logit|", "cases": results}, f, indent=2, sort_keys=True)
        f.write("\n")
    return ok and bool(results)


def main():
    # PEFT writes target_modules from a Python set: fix the hash seed so the file order is reproducible.
    if os.environ.get("PYTHONHASHSEED") != "0":
        os.execve(sys.executable, [sys.executable] + sys.argv, dict(os.environ, PYTHONHASHSEED="0"))
    if len(sys.argv) >= 3 and sys.argv[1] == "--check":
        sys.exit(0 if check_written(sys.argv[2]) else 1)
    os.makedirs(OUT, exist_ok=True)
    only = sys.argv[1:]
    for case in CASES:
        if not only or case in only:
            make_case(case)


if __name__ == "__main__":
    main()
