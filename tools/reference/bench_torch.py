"""The PyTorch + transformers + peft side of bench/compare: one optimizer step, timed.

Takes the same arguments as build/bench/train_step and prints the same JSON line, so the bench/compare
scripts can alternate the two programs A B A B and compare like with like: random weights from the same HF
config, random inputs, AdamW(lr 1e-4, wd 0.01), median step time after warm-up, peak memory.

    tools/reference/.venv/bin/python tools/reference/bench_torch.py --model configs/hf/gpt2.json \
        --batch 4 --seq 128 [--peft cfg.json] [--visual 36] [--compile] [--threads N] \
        [--device cuda --bf16 --attn sdpa]

Models: GPT-2, T5, BART (random token ids; encoder-decoders get decoder length = seq), ViT (random
images at the config's size, random class labels, a cross-entropy loss; tokens = patches + CLS per
image). --visual N makes VL-BART: BART with the 200 added tokens of VL-BART in its vocabulary and N random
2048-d region features with boxes appended to the encoder input (tools/reference/vl_adapter_torch.py).
PEFT: HF peft for its own types (LORA, ...); VLPEFT_ADAPTER (VL-Adapter's bottleneck adapter, which peft
does not have) by the hand-written modules of vl_adapter_torch.py; modules_to_save of a VLPEFT_ADAPTER
config train in place. On CUDA, --bf16 runs the step under bf16 autocast (fp32 weights and AdamW state).
"""
import argparse
import json
import resource
import time

import torch
import transformers
from transformers import AutoConfig

import vl_adapter_torch

MODEL_CLASSES = {
    "gpt2": transformers.GPT2LMHeadModel,
    "t5": transformers.T5ForConditionalGeneration,
    "bart": transformers.BartForConditionalGeneration,
    "vit": transformers.ViTForImageClassification,
}
VL_ADDED_TOKENS = 200  # <extra_id_0..99> and <vis_extra_id_0..99> (spec/peft.md §2.1)


def build(args):
    with open(args.model) as f:
        cfg_dict = json.load(f)
    model_type = cfg_dict["model_type"]
    if model_type not in MODEL_CLASSES:
        raise SystemExit(f"{args.model}: model_type {model_type!r} not benchmarked (gpt2, t5, bart, vit)")
    if args.visual and model_type != "bart":
        raise SystemExit("bench_torch: --visual (VL-BART) needs a BART config")
    config = AutoConfig.for_model(**cfg_dict)
    if args.visual:
        config.vocab_size += VL_ADDED_TOKENS
    kwargs = {"attn_implementation": args.attn} if args.attn else {}
    model = MODEL_CLASSES[model_type]._from_config(config, **kwargs)
    return model_type, model, config


def make_inputs(args, model_type, config, g):
    """The batch on the CPU and the tokens it counts (encoder + decoder, or patches + CLS)."""
    if model_type == "vit":
        size = config.image_size
        pixels = torch.randn(args.batch, config.num_channels, size, size, generator=g)
        labels = torch.randint(0, config.num_labels, (args.batch,), generator=g)
        return {"pixel_values": pixels, "labels": labels}, args.batch * (1 + (size // config.patch_size) ** 2)
    ids = torch.randint(0, config.vocab_size, (args.batch, args.seq), generator=g)
    if model_type == "gpt2":
        return {"input_ids": ids, "labels": ids}, args.batch * args.seq
    labels = torch.randint(0, config.vocab_size, (args.batch, args.seq), generator=g)
    return {"input_ids": ids, "labels": labels}, args.batch * (2 * args.seq + args.visual)


def apply_peft(args, model_type, model, config, visual_module):
    """Returns (model, method). The visual embedding (VL-BART) is always trainable (spec §2.2)."""
    if not args.peft:
        model.requires_grad_(True)
        return model, "full"
    with open(args.peft) as f:
        peft_cfg = json.load(f)
    extra = [visual_module] if visual_module is not None else []
    if peft_cfg["peft_type"] == "VLPEFT_ADAPTER":
        d_model = config.n_embd if model_type == "gpt2" else config.d_model
        vl_adapter_torch.add_bottleneck_adapters(model, model_type, d_model, peft_cfg)
        vl_adapter_torch.mark_trainable(model, peft_cfg.get("modules_to_save") or [], extra)
        return model, "VLPEFT_ADAPTER"
    import peft

    model = peft.get_peft_model(model, peft.PeftConfig.from_peft_type(**peft_cfg))
    for m in extra:
        m.requires_grad_(True)
    return model, peft_cfg["peft_type"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--peft")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--visual", type=int, default=0, help="VL-BART: this many region features (36)")
    ap.add_argument("--feat-dim", type=int, default=2048)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast (CUDA)")
    ap.add_argument("--attn", default="", help="attn_implementation (sdpa, eager); default: transformers'")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench_torch: --device cuda but torch.cuda.is_available() is false")
    torch.manual_seed(0)

    model_type, model, config = build(args)
    g = torch.Generator().manual_seed(1)
    inputs, tokens = make_inputs(args, model_type, config, g)
    visual_module = None
    if args.visual:
        feats, boxes = vl_adapter_torch.random_regions(args.batch, args.visual, args.feat_dim, g)
        visual_module = vl_adapter_torch.attach_visual_embedding(model, feats, boxes)
    model, method = apply_peft(args, model_type, model, config, visual_module)
    device = torch.device(args.device)
    model.to(device).train()
    inputs = {k: v.to(device) for k, v in inputs.items()}

    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=1e-4, weight_decay=0.01)
    forward = torch.compile(model) if args.compile else model
    cuda = device.type == "cuda"

    times = []
    for s in range(args.warmup + args.steps):
        if cuda and s == args.warmup:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
            loss = forward(**inputs).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        if s >= args.warmup:
            times.append(dt)
    times.sort()
    median = times[len(times) // 2]
    # peft's modules_to_save keeps the frozen original beside the trained copy; it is not run, so it is
    # left out of the total (vlpeft trains such modules in place).
    n_total = sum(p.numel() for n, p in model.named_parameters() if ".original_module." not in n)
    n_train = sum(p.numel() for p in trainable)
    impl = "torch-compile" if args.compile else "torch-eager"
    out = {
        "impl": impl + ("-bf16" if args.bf16 else ""),
        "model": args.model,
        "method": method,
        "batch": args.batch,
        "seq": (1 + (config.image_size // config.patch_size) ** 2) if model_type == "vit" else args.seq,
        "visual_tokens": args.visual,
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "attn": model.config._attn_implementation if hasattr(model, "config") else "",
        "step_s_median": median,
        "step_s_min": times[0],
        "step_s_max": times[-1],
        "tokens_per_s": tokens / median,
        "max_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "params_total": n_total,
        "params_trainable": n_train,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
    }
    if cuda:
        out["peak_device_bytes"] = torch.cuda.max_memory_allocated()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
