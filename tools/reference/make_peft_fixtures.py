"""Reference fixtures for PEFT (models/peft: LoRA, rsLoRA, DoRA, gaussian init, IA3) against huggingface/peft.

Uses the tiny random backbones already committed under tests/fixtures/models/ (GPT-2, T5, BART, ViT classifier)
and their batches (tests/fixtures/models/<model>/fixture.safetensors). For every case in CASES it wraps the model
with peft.get_peft_model, perturbs the adapter tensors so the adapted model differs from the base (LoRA B
non-zero, IA3 vectors away from 1, DoRA magnitudes away from the weight norms), and writes
tests/fixtures/peft/<case>/:

  adapter_config.json, adapter_model.safetensors   PEFT's save_pretrained output (the files the C++ loads)
  fixture.safetensors                               logits, loss (eval mode, fp32) and grad.<file key>: the
                                                    gradient of the loss for every trainable tensor, keyed as
                                                    in adapter_model.safetensors

Run:  tools/reference/.venv/bin/python tools/reference/make_peft_fixtures.py            (from the repository root)

Check mode (files written by vlpeft load in PEFT with identical outputs):
      tools/reference/.venv/bin/python tools/reference/make_peft_fixtures.py --check <dir>
<dir> holds one sub-directory per case as test_peft writes them (build/peft_written/<case>/: an adapter
directory plus outputs.safetensors with the logits vlpeft computed). Each is loaded with
PeftModel.from_pretrained on the same base model and its logits compared; the result is written to
tests/fixtures/peft/written_by_vlpeft_check.json and the script exits non-zero on any mismatch.
"""

import json
import os
import sys

import torch
from peft import AdaLoraConfig, IA3Config, LNTuningConfig, LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file, save_file
from transformers import BartForConditionalGeneration, GPT2LMHeadModel, T5ForConditionalGeneration
from transformers import ViTForImageClassification

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
MODELS = os.path.join(ROOT, "tests", "fixtures", "models")
OUT = os.path.join(ROOT, "tests", "fixtures", "peft")

MODEL_DIRS = {
    "gpt2": ("gpt2", GPT2LMHeadModel),
    "t5": ("t5", T5ForConditionalGeneration),
    "bart": ("bart", BartForConditionalGeneration),
    "vit": ("vit/classifier", ViTForImageClassification),
}

# case -> (model, config)
CASES = {
    "gpt2_lora": ("gpt2", lambda: LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn", "mlp.c_proj"])),
    "gpt2_rslora": ("gpt2", lambda: LoraConfig(r=4, lora_alpha=6, use_rslora=True, target_modules=["c_attn", "c_fc"])),
    "gpt2_dora": ("gpt2", lambda: LoraConfig(r=2, lora_alpha=4, use_dora=True, target_modules=["c_attn", "mlp.c_proj"])),
    "gpt2_ia3": ("gpt2", lambda: IA3Config(target_modules=["c_attn", "mlp.c_proj"], feedforward_modules=["mlp.c_proj"])),
    "t5_lora_gaussian": ("t5", lambda: LoraConfig(r=4, lora_alpha=8, init_lora_weights="gaussian",
                                                  target_modules=["q", "v", "wo"])),
    "t5_ia3": ("t5", lambda: IA3Config(target_modules=["k", "v", "wo"], feedforward_modules=["wo"])),
    "bart_lora": ("bart", lambda: LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "fc1"],
                                             rank_pattern={"fc1": 2}, alpha_pattern={"v_proj": 4})),
    "bart_dora": ("bart", lambda: LoraConfig(r=2, lora_alpha=2, use_dora=True, target_modules=["q_proj", "out_proj"])),
    "bart_ia3": ("bart", lambda: IA3Config(target_modules=["q_proj", "v_proj", "fc2"], feedforward_modules=["fc2"])),
    # ViT: transformers 5.x loads ViT checkpoints into renamed modules (vit.layers.N.attention.q_proj), so PEFT's
    # ViT adapter files use names models/vit translates on load; those cases live in make_peft_vit_fixtures.py
    # (tests/fixtures/peft_vit).
    "bart_lora_bias_all": ("bart", lambda: LoraConfig(r=2, lora_alpha=4, target_modules=["k_proj"], bias="all",
                                                      layers_to_transform=[1], layers_pattern="layers")),
    "bart_ln_tuning": ("bart", lambda: LNTuningConfig(target_modules=["self_attn_layer_norm", "final_layer_norm"])),
    "t5_adalora": ("t5", lambda: AdaLoraConfig(init_r=4, target_r=2, lora_alpha=8, total_step=10, tinit=0, tfinal=0,
                                               deltaT=1)),
}

# AdaLoRA: after the gradient, PEFT's rank allocator runs at this step (budget 72 of 128 triplets on the tiny T5).
ADALORA_STEP = 5


def load_base(model):
    sub, cls = MODEL_DIRS[model]
    m = cls.from_pretrained(os.path.join(MODELS, sub))
    m.eval()
    return m


def batch(model):
    sub, _ = MODEL_DIRS[model]
    fx = load_file(os.path.join(MODELS, sub, "fixture.safetensors"))
    if model == "vit":
        return dict(pixel_values=fx["pixel_values"], labels=fx["labels"])
    b = dict(input_ids=fx["input_ids"], attention_mask=fx["attention_mask"], labels=fx["labels"])
    if model in ("t5", "bart"):
        b["decoder_input_ids"] = fx["decoder_input_ids"]
    return b


def file_key(name):
    """PEFT's key in adapter_model.safetensors for a parameter of the wrapped model (adapter name removed)."""
    name = name.replace(".modules_to_save.default.", ".")
    name = name.replace(".default.", ".")
    if name.endswith(".default"):
        name = name[: -len(".default")]
    name = name.replace("lora_magnitude_vector.weight", "lora_magnitude_vector")
    return name


def perturb(peft_model, gen):
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if not p.requires_grad:
                continue
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
            elif "lora_A" in name:
                p.add_(torch.randn(p.shape, generator=gen) * 0.05)
            elif "lora_E" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
            elif "ia3_l" in name:
                p.copy_(1.0 + 0.3 * torch.randn(p.shape, generator=gen))
            elif "lora_magnitude_vector" in name:
                p.mul_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
            elif "ln_tuning_layers" in name:
                p.add_(torch.randn(p.shape, generator=gen) * 0.2)
            elif "modules_to_save" in name:
                p.add_(torch.randn(p.shape, generator=gen) * 0.1)


def make_case(case):
    model, make_config = CASES[case]
    torch.manual_seed(0)
    base = load_base(model)
    peft_model = get_peft_model(base, make_config())
    gen = torch.Generator().manual_seed(1234)
    perturb(peft_model, gen)
    peft_model.eval()
    out_dir = os.path.join(OUT, case)
    os.makedirs(out_dir, exist_ok=True)
    peft_model.peft_config["default"].base_model_name_or_path = "tests/fixtures/models/" + MODEL_DIRS[model][0]
    peft_model.save_pretrained(out_dir)
    os.remove(os.path.join(out_dir, "README.md"))  # the model card; not part of the format
    b = batch(model)
    if case.endswith("adalora"):
        # AdaLoraModel.forward adds the orthogonal regularisation to the loss; PeftModel's forward, as observed
        # with peft 0.21.2 + transformers 5.23, returns the model loss without it, so call it directly.
        out = peft_model.base_model.forward(**b)
    else:
        out = peft_model(**b)
    out.loss.backward()
    tensors = {"logits": out.logits.detach().contiguous(), "loss": out.loss.detach().reshape(1)}
    for name, p in peft_model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, name
            tensors["grad." + file_key(name)] = p.grad.detach().contiguous()
    if case.endswith("adalora"):
        # The allocator masks triplets (E_i = 0) from |p * grad| scores; record the masked E, the outputs after
        # masking, and PEFT's save of the pruned adapter (tensors sliced to the kept ranks + rank_pattern).
        peft_model.base_model.update_and_allocate(ADALORA_STEP)
        for name, p in peft_model.named_parameters():
            if "lora_E" in name:
                tensors["masked." + file_key(name)] = p.detach().clone()
        with torch.no_grad():
            tensors["logits_after"] = peft_model(**b).logits.detach().contiguous()
        allocated = os.path.join(out_dir, "allocated")
        os.makedirs(allocated, exist_ok=True)
        peft_model.save_pretrained(allocated)
        os.remove(os.path.join(allocated, "README.md"))
    save_file(tensors, os.path.join(out_dir, "fixture.safetensors"))
    # Every gradient key must be a saved adapter key.
    saved = set(load_file(os.path.join(out_dir, "adapter_model.safetensors")).keys())
    missing = [k[5:] for k in tensors if k.startswith("grad.") and k[5:] not in saved]
    assert not missing, missing
    print(case, "ok", sorted(tensors)[:3], "...")


def check_written(root):
    results, ok = {}, True
    for case in sorted(os.listdir(root)):
        d = os.path.join(root, case)
        if case not in CASES or not os.path.isdir(d):
            continue
        model, _ = CASES[case]
        base = load_base(model)
        peft_model = PeftModel.from_pretrained(base, d)
        peft_model.eval()
        ours = load_file(os.path.join(d, "outputs.safetensors"))["logits"]
        with torch.no_grad():
            logits = peft_model(**batch(model)).logits
        diff = (logits - ours).abs().max().item()
        scale = logits.abs().max().item()
        passed = diff <= 1e-5 * scale
        ok = ok and passed
        results[case] = {"max_abs_diff": diff, "max_abs_logit": scale, "ok": passed}
        print(case, results[case])
    results_path = os.path.join(OUT, "written_by_vlpeft_check.json")
    with open(results_path, "w") as f:
        json.dump({"peft_version": __import__("peft").__version__, "tolerance": "max|diff| <= 1e-5 * max|logit|",
                   "cases": results}, f, indent=2, sort_keys=True)
    return ok


def main():
    # PEFT writes target_modules from a Python set: fix the hash seed so the file order is reproducible.
    if os.environ.get("PYTHONHASHSEED") != "0":
        os.execve(sys.executable, [sys.executable] + sys.argv, dict(os.environ, PYTHONHASHSEED="0"))
    if len(sys.argv) >= 3 and sys.argv[1] == "--check":
        sys.exit(0 if check_written(sys.argv[2]) else 1)
    os.makedirs(OUT, exist_ok=True)
    only = sys.argv[1:]  # optional case names
    for case in CASES:
        if not only or case in only:
            make_case(case)


if __name__ == "__main__":
    main()
