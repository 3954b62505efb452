"""Reference fixtures for the text backbones (models/gpt2, t5, bart) and generation (models/generate).

Builds tiny random models with transformers' own config and model classes (2 layers, d_model 24, vocabulary
96, fixed seeds, weights drawn wider than HF's init so that logits are not near-ties), saves them the way Hugging Face does (config.json + model.safetensors via save_pretrained),
reloads them with from_pretrained, and records into tests/fixtures/models/<name>/fixture.safetensors:

  input_ids, attention_mask, labels          the batch (2 rows of different lengths, padding, -100 labels)
  decoder_input_ids                          encoder-decoder models: shift_tokens_right(labels) as HF computes it
  logits, loss                               eval mode (no dropout), fp32
  grad.<parameter name>                      d loss / d parameter for every parameter (HF names, tied ones once)
  gen.input_ids, gen.attention_mask          a batch of 2 prompts of different lengths (left-padded for GPT-2)
  gen.<case>                                 generate() outputs for the cases in GENERATION_CASES

It also writes configs/hf/{gpt2,gpt2-medium,gpt2-large,gpt2-xl,t5-base,t5-v1_1-base,bart-base}.json from
transformers' config classes with the published hyper-parameters, and tests/fixtures/models/param_counts.json
with transformers' parameter counts of every configs/hf model (built on the meta device, no weights), the
vision ones (configs from make_vision_model_fixtures.py) included:
  vit-base-patch16-224         ViTForImageClassification (no pooler, 1000-way classifier)
  vit-base-patch16-224-in21k   ViTModel (with the pooler)
  clip-vit-base-patch32        the vision tower with its projection, CLIPVisionModelWithProjection (the text
                               tower, text_projection and logit_scale of CLIPModel are not counted)
This is what `vlpeft params configs/hf/*.json` prints (tests/models/test_param_counts.cpp).

Run:  tools/reference/.venv/bin/python tools/reference/make_text_model_fixtures.py   (from the repository root)
      ... make_text_model_fixtures.py --counts-only   rewrites configs/hf (text models) and param_counts.json only
"""

import json
import os
import shutil
import sys

import torch
from safetensors.torch import save_file
from transformers import (
    BartConfig,
    BartForConditionalGeneration,
    GPT2Config,
    GPT2LMHeadModel,
    T5Config,
    T5ForConditionalGeneration,
)

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "models")
CONFIGS = os.path.join(ROOT, "configs", "hf")

VOCAB = 96
MAX_NEW_TOKENS = 8
WEIGHT_STD = 0.35
# The generation cases every model is checked on (the C++ test uses the same values, tests/models/test_generate.cpp).
GENERATION_CASES = {
    "greedy": dict(num_beams=1),
    "beam": dict(num_beams=3, length_penalty=0.6, early_stopping=False),
    "beam_early": dict(num_beams=3, length_penalty=1.5, early_stopping=True, min_new_tokens=3),
    "beam_never": dict(num_beams=3, length_penalty=2.0, early_stopping="never"),
    "beam_two": dict(num_beams=4, num_return_sequences=2, no_repeat_ngram_size=2),
    "greedy_norepeat": dict(num_beams=1, no_repeat_ngram_size=2, min_new_tokens=2),
}


def tiny_configs():
    gpt2 = GPT2Config(
        vocab_size=VOCAB, n_positions=64, n_embd=24, n_layer=2, n_head=4, bos_token_id=VOCAB - 1,
        eos_token_id=VOCAB - 1,
    )
    t5 = T5Config(
        vocab_size=VOCAB, d_model=24, d_kv=6, d_ff=48, num_layers=2, num_heads=4, relative_attention_num_buckets=8,
        relative_attention_max_distance=8, feed_forward_proj="relu", decoder_start_token_id=0,
    )
    t5v11 = T5Config(
        vocab_size=VOCAB, d_model=24, d_kv=6, d_ff=32, num_layers=2, num_heads=4, relative_attention_num_buckets=8,
        relative_attention_max_distance=8, feed_forward_proj="gated-gelu", tie_word_embeddings=False,
        decoder_start_token_id=0,
    )
    bart = BartConfig(
        vocab_size=VOCAB, d_model=24, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=48, decoder_ffn_dim=48, max_position_embeddings=32,
        scale_embedding=True, activation_function="gelu", dropout=0.1, attention_dropout=0.1, activation_dropout=0.1,
    )
    for c in (gpt2, t5, t5v11, bart):
        c._attn_implementation = "eager"
    return {"gpt2": (gpt2, GPT2LMHeadModel), "t5": (t5, T5ForConditionalGeneration),
            "t5v11": (t5v11, T5ForConditionalGeneration), "bart": (bart, BartForConditionalGeneration)}


def randomise(model, seed):
    """Weights with enough spread that logits differ clearly between tokens (HF's 0.02 init gives near-ties)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=gen) * WEIGHT_STD)
            elif "norm" in name or name.endswith("ln_1.weight") or name.endswith("ln_2.weight") or \
                    name.endswith("ln_f.weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.2 * torch.randn(p.shape, generator=gen))
        if hasattr(model, "final_logits_bias"):
            model.final_logits_bias.copy_(0.2 * torch.randn(model.final_logits_bias.shape, generator=gen))


def batch(name, gen):
    """Training batch: encoder (or GPT-2) inputs right-padded, labels with -100."""
    if name == "gpt2":
        lengths, T, pad = [10, 6], 10, VOCAB - 1
    else:
        lengths, T, pad = [12, 7], 12, (1 if name == "bart" else 0)
    ids = torch.randint(3, VOCAB - 1, (2, T), generator=gen)
    mask = torch.zeros(2, T, dtype=torch.long)
    for b, n in enumerate(lengths):
        mask[b, :n] = 1
        ids[b, n:] = pad
    if name == "gpt2":
        labels = ids.masked_fill(mask == 0, -100)
    else:
        labels = torch.randint(3, VOCAB - 1, (2, 6), generator=gen)
        labels[1, 4:] = -100
    return ids, mask, labels


def prompts(name, gen, pad):
    """Generation prompts: GPT-2 left-padded (as HF expects), encoder-decoder right-padded."""
    lengths, T = ([7, 4], 7) if name == "gpt2" else ([9, 5], 9)
    ids = torch.full((2, T), pad, dtype=torch.long)
    mask = torch.zeros(2, T, dtype=torch.long)
    for b, n in enumerate(lengths):
        toks = torch.randint(3, VOCAB - 1, (n,), generator=gen)
        if name == "gpt2":
            ids[b, T - n:] = toks
            mask[b, T - n:] = 1
        else:
            ids[b, :n] = toks
            mask[b, :n] = 1
    return ids, mask


def run_cases(model, ids, mask, **extra):
    """Sequences of every case, and the final beam scores of the beam cases (as "<case>.scores")."""
    out = {}
    with torch.no_grad():
        for case, kwargs in GENERATION_CASES.items():
            res = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=MAX_NEW_TOKENS,
                                 do_sample=False, output_scores=True, return_dict_in_generate=True, **kwargs, **extra)
            out[case] = res.sequences
            if kwargs.get("num_beams", 1) > 1:
                out[case + ".scores"] = res.sequences_scores.float()
    return out


def pick_eos(model, ids, mask, special, pad):
    """An end-of-sequence id that makes the generation cases interesting: among the close runner-up tokens of greedy
    decoding, the one for which the cases differ most from each other and finish most rows before max length."""
    out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=MAX_NEW_TOKENS, do_sample=False,
                         num_beams=1, eos_token_id=VOCAB + 5, pad_token_id=0, output_scores=True,
                         return_dict_in_generate=True)
    candidates = []
    for step in range(1, 5):
        for row in (0, 1):
            for rank in (1, 2, 3):
                tok = int(out.scores[step][row].argsort(descending=True)[rank])
                if tok not in special and tok not in candidates:
                    candidates.append(tok)
    best, best_score = None, -1
    for tok in candidates:
        seqs = {k: v for k, v in run_cases(model, ids, mask, eos_token_id=tok, pad_token_id=pad).items()
                if not k.endswith(".scores")}
        distinct = len({str(s.tolist()) for s in seqs.values()})
        early = sum(int((s[r, :-1] == tok).any()) for s in seqs.values() for r in range(s.shape[0]))
        score = 3 * distinct + early
        if score > best_score:
            best, best_score = tok, score
    return best


def make_model_fixture(name, config, cls, seed):
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed + 1)
    model = cls(config).eval()
    if name == "t5v11":
        # transformers 5 constructs T5 tied; v1.1 checkpoints carry their own lm_head, which from_pretrained keeps
        # untied (both keys present and different). Give the model one.
        model.lm_head.weight = torch.nn.Parameter(torch.empty(VOCAB, config.d_model))
    randomise(model, seed)

    gen_pad = config.pad_token_id if config.pad_token_id is not None else config.eos_token_id
    gen_ids, gen_mask = prompts(name, gen, gen_pad)
    eos = pick_eos(model, gen_ids, gen_mask, {0, 1, 2, gen_pad}, config.pad_token_id)
    model.config.eos_token_id = eos
    model.generation_config.eos_token_id = eos
    if name == "gpt2":
        model.config.bos_token_id = eos
        model.generation_config.bos_token_id = eos
        gen_ids[gen_mask == 0] = eos
    if name == "bart":
        model.config.forced_eos_token_id = eos
        model.generation_config.forced_eos_token_id = eos

    out_dir = os.path.join(FIXTURES, name)
    shutil.rmtree(out_dir, ignore_errors=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    for extra in ("generation_config.json",):
        path = os.path.join(out_dir, extra)
        if os.path.exists(path):
            os.remove(path)
    if name == "t5v11":
        # Write the config the way the published v1.1 checkpoints have it (tie_word_embeddings false, no
        # transformers-5 scale_decoder_outputs key).
        path = os.path.join(out_dir, "config.json")
        with open(path) as f:
            cfg = json.load(f)
        cfg.pop("scale_decoder_outputs", None)
        cfg["tie_word_embeddings"] = False
        with open(path, "w") as f:
            json.dump(cfg, f, indent=2, sort_keys=True)
            f.write("\n")

    model = cls.from_pretrained(out_dir, attn_implementation="eager").eval()
    if name == "t5v11":
        assert model.lm_head.weight.data_ptr() != model.shared.weight.data_ptr()
        assert not model.config.scale_decoder_outputs

    ids, mask, labels = batch(name, gen)
    fixture = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    model.zero_grad()
    out = model(input_ids=ids, attention_mask=mask, labels=labels)
    out.loss.backward()
    fixture["logits"] = out.logits.detach().float().contiguous()
    fixture["loss"] = out.loss.detach().float().reshape(1)
    if name != "gpt2":
        fixture["decoder_input_ids"] = model.prepare_decoder_input_ids_from_labels(labels)
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        fixture["grad." + pname] = p.grad.detach().float().contiguous()

    fixture["gen.input_ids"] = gen_ids
    fixture["gen.attention_mask"] = gen_mask
    for case, seq in run_cases(model, gen_ids, gen_mask).items():
        fixture["gen." + case] = seq.contiguous()
    save_file(fixture, os.path.join(out_dir, "fixture.safetensors"),
              metadata={"model": name, "eos_token_id": str(eos), "transformers": __import__("transformers").__version__})
    print(name, "eos", eos, {k: v.tolist() for k, v in fixture.items() if k.startswith("gen.") and k != "gen.attention_mask"})


# ---- published configurations and parameter counts ----

def published_configs():
    gpt2 = GPT2Config(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12,
                      activation_function="gelu_new", bos_token_id=50256, eos_token_id=50256)
    t5_base = T5Config(vocab_size=32128, d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_heads=12,
                       relative_attention_num_buckets=32, dropout_rate=0.1, layer_norm_epsilon=1e-6,
                       feed_forward_proj="relu", decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    t5_v11 = T5Config(vocab_size=32128, d_model=768, d_kv=64, d_ff=2048, num_layers=12, num_heads=12,
                      relative_attention_num_buckets=32, dropout_rate=0.1, layer_norm_epsilon=1e-6,
                      feed_forward_proj="gated-gelu", tie_word_embeddings=False, decoder_start_token_id=0,
                      pad_token_id=0, eos_token_id=1)
    bart_base = BartConfig(vocab_size=50265, d_model=768, encoder_layers=6, decoder_layers=6,
                           encoder_attention_heads=12, decoder_attention_heads=12, encoder_ffn_dim=3072,
                           decoder_ffn_dim=3072, max_position_embeddings=1024, activation_function="gelu",
                           dropout=0.1, attention_dropout=0.1, activation_dropout=0.1, scale_embedding=False,
                           pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2,
                           forced_eos_token_id=2)
    sizes = {"gpt2-medium": (1024, 24, 16), "gpt2-large": (1280, 36, 20), "gpt2-xl": (1600, 48, 25)}
    bigger = {name: (GPT2Config(vocab_size=50257, n_positions=1024, n_embd=d, n_layer=n, n_head=h,
                                activation_function="gelu_new", bos_token_id=50256, eos_token_id=50256),
                     GPT2LMHeadModel) for name, (d, n, h) in sizes.items()}
    return {"gpt2": (gpt2, GPT2LMHeadModel), **bigger, "t5-base": (t5_base, T5ForConditionalGeneration),
            "t5-v1_1-base": (t5_v11, T5ForConditionalGeneration), "bart-base": (bart_base, BartForConditionalGeneration)}


def write_published():
    os.makedirs(CONFIGS, exist_ok=True)
    counts = {}
    for name, (config, cls) in published_configs().items():
        d = config.to_diff_dict()
        d.pop("transformers_version", None)
        for k in ("id2label", "label2id"):
            d.pop(k, None)
        if name == "t5-v1_1-base":
            d.pop("scale_decoder_outputs", None)
            d["tie_word_embeddings"] = False
        with open(os.path.join(CONFIGS, name + ".json"), "w") as f:
            json.dump(d, f, indent=2, sort_keys=True)
            f.write("\n")
        with torch.device("meta"):
            model = cls(config)
            if name == "t5-v1_1-base":
                # Loading the published checkpoint keeps its own lm_head (see make_model_fixture).
                model.lm_head.weight = torch.nn.Parameter(torch.empty(config.vocab_size, config.d_model))
        counts[name] = sum(p.numel() for p in model.parameters())
    counts.update(vision_counts())
    with open(os.path.join(FIXTURES, "param_counts.json"), "w") as f:
        json.dump(counts, f, indent=2, sort_keys=True)
        f.write("\n")
    print(counts)


def vision_counts():
    # The published vision configurations as make_vision_model_fixtures.py writes them to configs/hf.
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import make_vision_model_fixtures as vision
    from transformers import CLIPVisionModelWithProjection, ViTForImageClassification, ViTModel

    def count(make):
        with torch.device("meta"):
            model = make()
        return sum(p.numel() for p in model.parameters())

    clip = vision.clip_published()
    tower = clip.vision_config
    tower.projection_dim = clip.projection_dim  # CLIPModel sizes visual_projection by its top-level projection_dim
    return {
        "vit-base-patch16-224": count(lambda: ViTForImageClassification(vision.vit_published(num_labels=1000))),
        "vit-base-patch16-224-in21k": count(lambda: ViTModel(vision.vit_published())),
        "clip-vit-base-patch32": count(lambda: CLIPVisionModelWithProjection(tower)),
    }


def main():
    torch.use_deterministic_algorithms(True)
    os.makedirs(FIXTURES, exist_ok=True)
    if "--counts-only" in sys.argv[1:]:
        write_published()
        return 0
    for i, (name, (config, cls)) in enumerate(tiny_configs().items()):
        make_model_fixture(name, config, cls, seed=1000 + 17 * i)
    write_published()
    total = 0
    for dirpath, _, files in os.walk(FIXTURES):
        total += sum(os.path.getsize(os.path.join(dirpath, f)) for f in files)
    print(f"fixtures: {total / 1e6:.2f} MB")


if __name__ == "__main__":
    sys.exit(main())
