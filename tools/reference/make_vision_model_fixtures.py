"""Reference fixtures for the vision towers (models/vit, models/clip_vision).

Builds tiny random models with transformers' own config and model classes (2 layers, hidden 24, 4 heads, 32x32
images, 8x8 patches, fixed seeds), saves them the way Hugging Face does (config.json + model.safetensors via
save_pretrained, i.e. with the checkpoint names of the published models), reloads them with from_pretrained, and
records into tests/fixtures/models/<dir>/fixture.safetensors (eval mode, fp32):

  pixel_values                      input images [2, 3, 32, 32]
  last_hidden_state, pooler_output  the tower's outputs (ViT: after vit.layernorm and the tanh pooler; CLIP: the
                                    encoder output, and post_layernorm of CLS)
  image_embeds / logits             CLIP's visual_projection; the ViT classifier's logits
  probe.last_hidden_state, ...      fixed random tensors: loss = sum(probe.X * X) over the outputs X (ViTModel,
                                    CLIP); the classifier's loss is cross-entropy against `labels`
  loss                              that scalar
  grad.<parameter name>             d loss / d parameter for every parameter, under its checkpoint name
  interp.*                          the same at another resolution with interpolate_pos_encoding=True (bicubic
                                    resampling of the position embeddings): ViT at 48x40 (6x5 patches, not square),
                                    CLIP at 48x48; gradients of the embedding parameters only

Models (directories under tests/fixtures/models/):
  vit/base        ViTModel with pooler (the in21k layout: no prefix, pooler.dense)
  vit/classifier  ViTForImageClassification, 5 labels, qkv_bias false (vit. prefix, classifier, no pooler)
  clip_vision     CLIPVisionModelWithProjection (vision_model. prefix, visual_projection)

It also writes configs/hf/{vit-base-patch16-224,vit-base-patch16-224-in21k,clip-vit-base-patch32}.json from
transformers' config classes with the published hyper-parameters, and the parameter counts transformers gives
for them (built on the meta device) into tests/fixtures/models/{vit,clip_vision}/param_counts.json.

Run:  tools/reference/.venv/bin/python tools/reference/make_vision_model_fixtures.py   (from the repository root)
"""

import json
import os
import shutil
import sys

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import (
    CLIPConfig,
    CLIPModel,
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
    ViTConfig,
    ViTForImageClassification,
    ViTModel,
)
from transformers.core_model_loading import revert_weight_conversion

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "models")
CONFIGS = os.path.join(ROOT, "configs", "hf")

WEIGHT_STD = 0.3
BATCH = 2


def tiny_models():
    common = dict(hidden_size=24, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48, image_size=32,
                  patch_size=8, num_channels=3)
    vit_base = ViTConfig(**common, hidden_act="gelu", layer_norm_eps=1e-12, hidden_dropout_prob=0.1,
                         attention_probs_dropout_prob=0.1)
    vit_cls = ViTConfig(**common, hidden_act="gelu", layer_norm_eps=1e-6, qkv_bias=False, num_labels=5)
    clip = CLIPVisionConfig(**common, projection_dim=16, hidden_act="quick_gelu", layer_norm_eps=1e-5,
                            attention_dropout=0.1)
    for c in (vit_base, vit_cls, clip):
        c._attn_implementation = "eager"
    return {
        "vit/base": (vit_base, ViTModel, (48, 40)),
        "vit/classifier": (vit_cls, ViTForImageClassification, None),
        "clip_vision": (clip, CLIPVisionModelWithProjection, (48, 48)),
    }


def randomise(model, seed):
    """Weights with enough spread that every layer matters (HF's 0.02 init makes the blocks nearly identities)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
            elif p.dim() >= 2 and "position" not in name:
                p.copy_(torch.randn(p.shape, generator=gen) * WEIGHT_STD)
            else:
                p.copy_(0.5 * torch.randn(p.shape, generator=gen))


def checkpoint_names(model, tensors):
    """The names save_pretrained writes for these tensors (transformers 5 renames some modules internally and
    reverts the renaming when saving)."""
    reverted = revert_weight_conversion(model, dict(tensors))
    return dict(reverted)


def run_case(model, kind, pixel_values, gen, interpolate, labels=None):
    model.zero_grad()
    out = model(pixel_values=pixel_values, interpolate_pos_encoding=interpolate)
    case = {"pixel_values": pixel_values}
    if kind == "classifier":
        case["logits"] = out.logits
        loss = torch.nn.functional.cross_entropy(out.logits, labels)
        case["labels"] = labels
    else:
        outputs = {"last_hidden_state": out.last_hidden_state}
        if kind == "vit":
            outputs["pooler_output"] = out.pooler_output
        else:
            # CLIPVisionModelWithProjection returns image_embeds; the pooled output is post_layernorm(CLS)
            outputs["image_embeds"] = out.image_embeds
            pooled = model.vision_model.post_layernorm(out.last_hidden_state[:, 0, :])
            outputs["pooler_output"] = pooled
        loss = 0.0
        for key, value in outputs.items():
            probe = torch.randn(value.shape, generator=gen)
            case["probe." + key] = probe
            loss = loss + (probe * value).sum()
            case[key] = value
    loss.backward()
    case["loss"] = loss.reshape(1)
    grads = {name: p.grad for name, p in model.named_parameters()}
    for name, g in checkpoint_names(model, grads).items():
        assert g is not None, name
        case["grad." + name] = g
    return {k: v.detach().float().contiguous() if v.is_floating_point() else v.contiguous() for k, v in case.items()}


def make_fixture(dirname, config, cls, interp_size, seed):
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed + 1)
    model = cls(config).eval()
    randomise(model, seed)

    out_dir = os.path.join(FIXTURES, dirname)
    shutil.rmtree(out_dir, ignore_errors=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    model = cls.from_pretrained(out_dir, attn_implementation="eager").eval()
    with safe_open(os.path.join(out_dir, "model.safetensors"), "pt") as f:
        saved_names = set(f.keys())

    kind = "classifier" if cls is ViTForImageClassification else ("vit" if cls is ViTModel else "clip")
    pixels = torch.randn(BATCH, 3, config.image_size, config.image_size, generator=gen)
    labels = torch.tensor([1, 4]) if kind == "classifier" else None
    fixture = run_case(model, kind, pixels, gen, False, labels)
    grad_names = {k[len("grad."):] for k in fixture if k.startswith("grad.")}
    assert grad_names == saved_names, (grad_names ^ saved_names)
    if interp_size is not None:
        h, w = interp_size
        pixels = torch.randn(BATCH, 3, h, w, generator=gen)
        for k, v in run_case(model, kind, pixels, gen, True).items():
            # At the new resolution only the embedding gradients are new information (the layers' gradients are
            # checked above); keeping the rest would double the fixture.
            if not k.startswith("grad.") or "embedding" in k:
                fixture["interp." + k] = v
    save_file(fixture, os.path.join(out_dir, "fixture.safetensors"),
              metadata={"model": dirname, "transformers": __import__("transformers").__version__})
    print(dirname, sorted(saved_names)[:4], "...", {k: list(v.shape) for k, v in fixture.items()
                                                    if not k.startswith(("grad.", "interp.grad."))})


# ---- published configurations and parameter counts ----

def vit_published(num_labels=None):
    kwargs = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                  hidden_act="gelu", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                  initializer_range=0.02, layer_norm_eps=1e-12, image_size=224, patch_size=16, num_channels=3,
                  qkv_bias=True, encoder_stride=16)
    if num_labels is not None:
        kwargs["num_labels"] = num_labels
    return ViTConfig(**kwargs)


def clip_published():
    text = dict(vocab_size=49408, hidden_size=512, intermediate_size=2048, num_hidden_layers=12,
                num_attention_heads=8, max_position_embeddings=77, hidden_act="quick_gelu", layer_norm_eps=1e-5,
                attention_dropout=0.0, initializer_range=0.02, initializer_factor=1.0, projection_dim=512,
                pad_token_id=1, bos_token_id=49406, eos_token_id=49407)
    vision = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                  num_channels=3, image_size=224, patch_size=32, hidden_act="quick_gelu", layer_norm_eps=1e-5,
                  attention_dropout=0.0, initializer_range=0.02, initializer_factor=1.0, projection_dim=512)
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=512, logit_scale_init_value=2.6592)


def config_json(config, architectures, drop=()):
    d = config.to_dict()
    for k in ("transformers_version", "id2label", "label2id", "output_attentions", "output_hidden_states",
              "return_dict", "dtype", "torch_dtype", "chunk_size_feed_forward", "problem_type", "is_encoder_decoder",
              "tie_word_embeddings", "_name_or_path") + tuple(drop):
        d.pop(k, None)
    for sub in ("text_config", "vision_config"):
        if sub in d:
            d[sub] = config_json(getattr(config, sub), None)
    d.pop("architectures", None)
    if architectures:
        d["architectures"] = architectures
    return d


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")


def write_published():
    os.makedirs(CONFIGS, exist_ok=True)
    vit_cls = vit_published(num_labels=1000)
    vit_in21k = vit_published()
    clip = clip_published()
    cls_json = config_json(vit_cls, ["ViTForImageClassification"])
    cls_json["num_labels"] = 1000  # the published file lists 1000 ImageNet class names in id2label instead
    write_json(os.path.join(CONFIGS, "vit-base-patch16-224.json"), cls_json)
    write_json(os.path.join(CONFIGS, "vit-base-patch16-224-in21k.json"), config_json(vit_in21k, ["ViTModel"]))
    write_json(os.path.join(CONFIGS, "clip-vit-base-patch32.json"), config_json(clip, ["CLIPModel"]))

    def count(make):
        with torch.device("meta"):
            model = make()
        return sum(p.numel() for p in model.parameters())

    vit_counts = {
        "vit-base-patch16-224": count(lambda: ViTForImageClassification(vit_cls)),
        "vit-base-patch16-224-in21k": count(lambda: ViTModel(vit_in21k)),
    }
    # CLIPModel's visual_projection maps to config.projection_dim; the vision tower with projection is what
    # CLIPVisionModelWithProjection holds.
    vision = clip.vision_config
    vision.projection_dim = clip.projection_dim
    clip_counts = {
        "clip-vit-base-patch32": count(lambda: CLIPVisionModelWithProjection(vision)),
        "clip-vit-base-patch32 CLIPModel": count(lambda: CLIPModel(clip)),
    }
    write_json(os.path.join(FIXTURES, "vit", "param_counts.json"), vit_counts)
    write_json(os.path.join(FIXTURES, "clip_vision", "param_counts.json"), clip_counts)
    print(vit_counts, clip_counts)


def main():
    torch.use_deterministic_algorithms(True)
    for i, (dirname, (config, cls, interp)) in enumerate(tiny_models().items()):
        make_fixture(dirname, config, cls, interp, seed=2000 + 31 * i)
    write_published()
    total = 0
    for d in ("vit", "clip_vision"):
        for dirpath, _, files in os.walk(os.path.join(FIXTURES, d)):
            total += sum(os.path.getsize(os.path.join(dirpath, f)) for f in files)
    print(f"fixtures: {total / 1e6:.2f} MB")


if __name__ == "__main__":
    sys.exit(main())
