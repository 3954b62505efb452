"""Reference fixtures for the prompt methods (models/peft: prompt tuning, prefix tuning, P-tuning) against
huggingface/peft, on the tiny random GPT-2, T5 and BART of tests/fixtures/models and their batches.

For every case it wraps the model with peft.get_peft_model (training mode: the reparameterisation MLPs exist),
makes the virtual-token table non-trivial (random, scale 0.5), and writes tests/fixtures/peft_prompts/<case>/:

  adapter_config.json, adapter_model.safetensors   PEFT's save_pretrained output: one tensor,
                                                    prompt_embeddings (the MLP's output where there is one)
  fixture.safetensors   logits, loss (eval mode, fp32) of the training-mode model;
                        grad.prompt_embeddings: the loss gradient for the saved prompt_embeddings, computed by
                        loading the saved adapter back (inference mode: the table is used as is);
                        train.<name>: the training-mode encoder tensors (embedding.weight, transform.N.* /
                        mlp_head.N.*) with grad.train.<name> their gradients;
                        generated (prefix cases): greedy generate() ids, 6 new tokens from input_ids[:1, :5]

Run:  /work/main/tools/reference/.venv/bin/python tools/reference/make_peft_prompt_fixtures.py [CASE...]
(repository root; no argument = every case)
"""

import os
import sys

import torch
from peft import AdaptionPromptConfig, PeftModel, PrefixTuningConfig, PromptEncoderConfig, PromptTuningConfig, get_peft_model
from safetensors.torch import load_file, save_file
from transformers import BartForConditionalGeneration, GPT2LMHeadModel, T5ForConditionalGeneration

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
MODELS = os.path.join(ROOT, "tests", "fixtures", "models")
OUT = os.path.join(ROOT, "tests", "fixtures", "peft_prompts")

CASES = {
    "gpt2_prompt_tuning": lambda: PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=3),
    "gpt2_prefix": lambda: PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=3),
    "gpt2_prefix_projection": lambda: PrefixTuningConfig(
        task_type="CAUSAL_LM", num_virtual_tokens=3, prefix_projection=True, encoder_hidden_size=12),
    "gpt2_p_tuning": lambda: PromptEncoderConfig(task_type="CAUSAL_LM", num_virtual_tokens=3, encoder_hidden_size=10),
    # Encoder-decoder: the table holds 2 x num_virtual_tokens rows; PEFT prepends the first half to the encoder.
    "t5_prompt_tuning": lambda: PromptTuningConfig(task_type="SEQ_2_SEQ_LM", num_virtual_tokens=3),
    "t5_p_tuning": lambda: PromptEncoderConfig(task_type="SEQ_2_SEQ_LM", num_virtual_tokens=2, encoder_hidden_size=8),
    # Encoder-decoder prefix tuning: PEFT puts the prefix in the decoder's self-attention only (the cross-attention
    # cache it also builds is emptied again; the encoder gets none).
    "t5_prefix": lambda: PrefixTuningConfig(task_type="SEQ_2_SEQ_LM", num_virtual_tokens=3),
    "t5_prefix_projection": lambda: PrefixTuningConfig(
        task_type="SEQ_2_SEQ_LM", num_virtual_tokens=3, prefix_projection=True, encoder_hidden_size=12),
    "bart_prefix": lambda: PrefixTuningConfig(task_type="SEQ_2_SEQ_LM", num_virtual_tokens=3),
    "bart_prefix_projection": lambda: PrefixTuningConfig(
        task_type="SEQ_2_SEQ_LM", num_virtual_tokens=2, prefix_projection=True, encoder_hidden_size=10),
}


# Adaption prompt (GPT-2 variant): adapter tensors are ordinary parameters; the gate is set non-zero.
ADAPTION_CASE = "gpt2_adaption_prompt"


def make_adaption_case():
    torch.manual_seed(0)
    model = get_peft_model(base("gpt2"), AdaptionPromptConfig(task_type="CAUSAL_LM", adapter_len=2, adapter_layers=1))
    gen = torch.Generator().manual_seed(99)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=gen) * (0.8 if "gate" in name else 0.5))
    model.eval()
    out_dir = os.path.join(OUT, ADAPTION_CASE)
    os.makedirs(out_dir, exist_ok=True)
    model.peft_config["default"].base_model_name_or_path = "tests/fixtures/models/gpt2"
    model.save_pretrained(out_dir)
    os.remove(os.path.join(out_dir, "README.md"))
    out = model(**batch("gpt2"))
    out.loss.backward()
    tensors = {"logits": out.logits.detach().contiguous(), "loss": out.loss.detach().reshape(1)}
    for name, p in model.named_parameters():
        if p.requires_grad:
            key = name.replace(".default", "").replace("base_model.model.", "base_model.model.", 1)
            tensors["grad." + key] = p.grad.detach().contiguous()
    save_file(tensors, os.path.join(out_dir, "fixture.safetensors"))
    print(ADAPTION_CASE, "ok", sorted(tensors))


def model_of(case):
    return case.split("_")[0]


def base(model):
    cls = {"gpt2": GPT2LMHeadModel, "t5": T5ForConditionalGeneration, "bart": BartForConditionalGeneration}[model]
    m = cls.from_pretrained(os.path.join(MODELS, model))
    m.eval()
    return m


def batch(model):
    fx = load_file(os.path.join(MODELS, model, "fixture.safetensors"))
    b = dict(input_ids=fx["input_ids"], attention_mask=fx["attention_mask"], labels=fx["labels"])
    if model != "gpt2":
        b["decoder_input_ids"] = fx["decoder_input_ids"]
    return b


def make_case(case):
    torch.manual_seed(0)
    name = model_of(case)
    model = get_peft_model(base(name), CASES[case]())
    encoder = model.prompt_encoder["default"]
    gen = torch.Generator().manual_seed(4321)
    with torch.no_grad():
        encoder.embedding.weight.copy_(torch.randn(encoder.embedding.weight.shape, generator=gen) * 0.5)
    model.eval()
    out_dir = os.path.join(OUT, case)
    os.makedirs(out_dir, exist_ok=True)
    model.peft_config["default"].base_model_name_or_path = "tests/fixtures/models/" + name
    model.save_pretrained(out_dir)
    os.remove(os.path.join(out_dir, "README.md"))
    b = batch(name)
    out = model(**b)
    out.loss.backward()
    tensors = {"logits": out.logits.detach().contiguous(), "loss": out.loss.detach().reshape(1)}
    for pname, p in encoder.named_parameters():
        tensors["train." + pname] = p.detach().clone().contiguous()
        tensors["grad.train." + pname] = p.grad.detach().contiguous()
    # The saved adapter, loaded as PEFT loads it (inference mode): gradient for prompt_embeddings.
    loaded = PeftModel.from_pretrained(base(name), out_dir)
    table = loaded.prompt_encoder["default"].embedding.weight
    table.requires_grad_(True)
    lo = loaded(**b)
    assert torch.allclose(lo.logits, out.logits, atol=1e-5), case
    lo.loss.backward()
    tensors["grad.prompt_embeddings"] = table.grad.detach().contiguous()
    if "prefix" in case:
        with torch.no_grad():
            ids = b["input_ids"][:1, :5]
            g = loaded.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=6,
                                do_sample=False, pad_token_id=0)
        tensors["generated"] = g.contiguous()
    save_file(tensors, os.path.join(out_dir, "fixture.safetensors"))
    print(case, "ok", sorted(tensors))


def main():
    chosen = sys.argv[1:] or list(CASES) + [ADAPTION_CASE]
    for case in chosen:
        if case == ADAPTION_CASE:
            make_adaption_case()
        else:
            make_case(case)


if __name__ == "__main__":
    main()
