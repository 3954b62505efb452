"""AdapterHub parity fixtures: the real adapter-hub/adapters library (v1.3.0) on the repository's tiny BART
tiny T5 and tiny GPT-2 (tests/fixtures/models/{bart,t5,gpt2}, written by transformers 5; they load unchanged
in 4.57.6).

For each bottleneck-adapter configuration below the script adds the adapter with `adapters`, sets every
adapter parameter to seeded random values (so no projection is zero), runs one fixed batch in eval mode
and writes tests/fixtures/adapterhub/<model>_<variant>.safetensors with
  - the adapter parameters under vlpeft's names ("<site>.adapters.default.down.weight", ...),
  - the batch: input_ids, attention_mask, decoder_input_ids (not for GPT-2), labels (int64),
  - logits and loss,
  - "grad.<vlpeft name>": the gradient of the loss with respect to each adapter parameter,
and in the header metadata the adapters config (JSON) it came from.

Run from the repository root with the venv of setup_venv.sh:
  tools/reference/adapterhub/.venv/bin/python tools/reference/adapterhub/make_adapter_fixtures.py
"""
import json
import os
import re

import torch
import transformers
import adapters
from adapters import CompacterConfig, CompacterPlusPlusConfig, DoubleSeqBnConfig, ParBnConfig, SeqBnConfig
from safetensors.torch import save_file

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
MODELS = {
    "bart": transformers.BartForConditionalGeneration,
    "t5": transformers.T5ForConditionalGeneration,
    "gpt2": transformers.GPT2LMHeadModel,
}
OUT_DIR = os.path.join(ROOT, "tests", "fixtures", "adapterhub")

# d_model of both tiny models is 24: reduction factor 4 -> bottleneck 6, 2 -> 12.
VARIANTS = {
    "pfeiffer": SeqBnConfig(reduction_factor=4),
    "pfeiffer_gated": SeqBnConfig(reduction_factor=4, use_gating=True),
    "houlsby": DoubleSeqBnConfig(reduction_factor=4),
    "houlsby_cross": DoubleSeqBnConfig(reduction_factor=4, cross_adapter=True),
    "parallel": ParBnConfig(),
    "scaled_parallel": ParBnConfig(scaling="learned"),
    # PHM projections (phm_dim 4): the bottleneck must divide by 4 -> reduction factor 3 (bottleneck 8).
    "compacter": CompacterConfig(reduction_factor=3),
    "compacter_pp": CompacterPlusPlusConfig(reduction_factor=3),
}

# adapters' per-layer containers -> vlpeft's sublayer sites (models/bart.cpp, models/t5.cpp). BART's
# layers hold named containers; in T5 the sublayer modules layer.0 (self-attention), layer.1
# (cross-attention in the decoder, feed-forward in the encoder) and layer.2 are the containers.
SITE_OF_CONTAINER = {
    "attention_adapters": "sa_site",
    "cross_attention_adapters": "ca_site",
    "output_adapters": "ff_site",
}
T5_SITE = {("encoder", "0"): "sa_site", ("encoder", "1"): "ff_site",
           ("decoder", "0"): "sa_site", ("decoder", "1"): "ca_site", ("decoder", "2"): "ff_site"}
# Tensor names inside one adapters.Adapter -> vlpeft's BottleneckAdapter (models/peft/adapter.h).
TENSOR_OF_PARAM = {
    "adapter_down.0.weight": "down.weight",  # adapter_down = Sequential(Linear, activation)
    "adapter_down.0.bias": "down.bias",
    "adapter_up.weight": "up.weight",
    "adapter_up.bias": "up.bias",
    "scaling": "scale",                      # scaling="learned": a [1] parameter
    "gate.weight": "gate.weight",            # use_gating: Linear(d, 1)
    "gate.bias": "gate.bias",
    "adapter_down.0.W_left": "down.W_left",  # PHMLayer (Compacter): W_i = W_left_i W_right_i, bias "b"
    "adapter_down.0.W_right": "down.W_right",
    "adapter_down.0.b": "down.bias",
    "adapter_up.W_left": "up.W_left",
    "adapter_up.W_right": "up.W_right",
    "adapter_up.b": "up.bias",
}
# shared_phm_rule: one [n, n, n] rule per adapter, in base_model.shared_parameters, used by every PHM layer.
SHARED_RE = re.compile(r"^(?:model\.|transformer\.)?shared_parameters\.default\.phm_rule$")
BART_RE = re.compile(r"^(model\.(?:encoder|decoder)\.layers\.\d+|transformer\.h\.\d+)\.(\w+)\.adapters\.default\.(.+)$")
T5_RE = re.compile(r"^((encoder|decoder)\.block\.\d+)\.layer\.(\d)\.adapters\.default\.(.+)$")


def vlpeft_name(name):
    if SHARED_RE.match(name):
        return "peft_shared.default.all.phm_rule"
    m = BART_RE.match(name)
    if m and m.group(2) in SITE_OF_CONTAINER and m.group(3) in TENSOR_OF_PARAM:
        return f"{m.group(1)}.{SITE_OF_CONTAINER[m.group(2)]}.adapters.default.{TENSOR_OF_PARAM[m.group(3)]}"
    m = T5_RE.match(name)
    if m and (m.group(2), m.group(3)) in T5_SITE and m.group(4) in TENSOR_OF_PARAM:
        site = T5_SITE[(m.group(2), m.group(3))]
        return f"{m.group(1)}.{site}.adapters.default.{TENSOR_OF_PARAM[m.group(4)]}"
    raise ValueError(f"no vlpeft name for adapters parameter {name}")


def is_adapter_param(name):
    return ".adapters.default." in name or bool(SHARED_RE.match(name))


def causal_batch(config):
    g = torch.Generator().manual_seed(11)
    input_ids = torch.randint(3, config.vocab_size, (2, 7), generator=g)
    attention_mask = torch.ones(2, 7, dtype=torch.int64)
    attention_mask[1, 5:] = 0  # the second example is right-padded
    labels = input_ids.clone()
    labels[1, 5:] = -100
    return dict(input_ids=input_ids, attention_mask=attention_mask, labels=labels)


def batch(config):
    if not config.is_encoder_decoder:
        return causal_batch(config)
    vocab, pad, start = config.vocab_size, config.pad_token_id, config.decoder_start_token_id
    g = torch.Generator().manual_seed(11)
    input_ids = torch.randint(3, vocab, (2, 6), generator=g)
    attention_mask = torch.ones(2, 6, dtype=torch.int64)
    attention_mask[1, 4:] = 0  # the second example is padded
    input_ids[1, 4:] = pad
    decoder_input_ids = torch.randint(3, vocab, (2, 4), generator=g)
    decoder_input_ids[:, 0] = start
    labels = torch.randint(3, vocab, (2, 4), generator=g)
    labels[1, 3] = -100          # one ignored position
    return dict(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids, labels=labels)


def make(kind, variant, config, seed):
    model_dir = os.path.join(ROOT, "tests", "fixtures", "models", kind)
    model = MODELS[kind].from_pretrained(model_dir, dtype=torch.float32)
    variant = f"{kind}_{variant}"
    adapters.init(model)
    model.add_adapter("default", config=config)
    model.train_adapter("default")
    model.eval()
    g = torch.Generator().manual_seed(seed)
    tensors, params = {}, {}
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not is_adapter_param(name):
                continue
            if name.endswith(".scaling"):
                p.copy_(0.5 + torch.rand(p.shape, generator=g))  # learned scale in [0.5, 1.5)
            else:
                p.copy_((torch.rand(p.shape, generator=g) * 2 - 1) * 0.4)
            params[vlpeft_name(name)] = p
    assert params, f"{variant}: no adapter parameters"
    inputs = batch(model.config)
    out = model(**inputs, use_cache=False)
    out.loss.backward()
    for n, p in params.items():
        tensors[n] = p.detach().clone().contiguous()
        tensors["grad." + n] = p.grad.detach().clone().contiguous()
    # Only the adapter is trainable: no gradient reaches the backbone.
    for name, p in model.named_parameters():
        if not is_adapter_param(name):
            assert p.grad is None, name
    tensors.update(inputs)
    tensors.update(logits=out.logits.detach().contiguous(), loss=out.loss.detach().reshape(1))
    meta = {
        "adapters_config": json.dumps(config.to_dict(), sort_keys=True, default=str),
        "versions": json.dumps({"adapters": adapters.__version__, "transformers": transformers.__version__,
                                "torch": torch.__version__}),
    }
    path = os.path.join(OUT_DIR, variant + ".safetensors")
    save_file(tensors, path, metadata=meta)
    print(f"{variant}: {len(params)} adapter tensors, loss {out.loss.item():.6f}, {os.path.getsize(path)} bytes")


def main():
    torch.manual_seed(0)
    os.makedirs(OUT_DIR, exist_ok=True)
    for kind in MODELS:
        for i, (variant, config) in enumerate(VARIANTS.items()):
            if kind == "gpt2" and config["cross_adapter"]:
                continue  # no cross-attention
            make(kind, variant, config, seed=100 + i)


if __name__ == "__main__":
    main()
