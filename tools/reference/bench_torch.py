"""The PyTorch + transformers + peft side of bench/compare: one optimizer step, timed.

Takes the same arguments as build/bench/train_step and prints the same JSON line, so
bench/compare/run_cpu.sh can alternate the two programs A B A B and compare like with like:
random weights from the same HF config, random token ids, AdamW(lr 1e-4, wd 0.01), median step time
after warm-up, max RSS.

    tools/reference/.venv/bin/python tools/reference/bench_torch.py --model configs/hf/gpt2.json \
        --batch 4 --seq 128 [--peft lora.json] [--compile] [--threads N]
"""
import argparse
import json
import resource
import time

import torch
import transformers
from transformers import AutoConfig


def build(config_path):
    with open(config_path) as f:
        cfg_dict = json.load(f)
    model_type = cfg_dict["model_type"]
    config = AutoConfig.for_model(**cfg_dict)
    if model_type == "gpt2":
        model = transformers.GPT2LMHeadModel(config)
    elif model_type == "t5":
        model = transformers.T5ForConditionalGeneration(config)
    elif model_type == "bart":
        model = transformers.BartForConditionalGeneration(config)
    else:
        raise SystemExit(f"{config_path}: model_type {model_type!r} not benchmarked (gpt2, t5, bart)")
    return model_type, model, config


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--peft")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--compile", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    model_type, model, config = build(args.model)
    method = "full"
    if args.peft:
        import peft

        with open(args.peft) as f:
            peft_cfg = json.load(f)
        method = peft_cfg["peft_type"]
        model = peft.get_peft_model(model, peft.PeftConfig.from_peft_type(**peft_cfg))
    model.train()
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, config.vocab_size, (args.batch, args.seq), generator=g)
    if model_type == "gpt2":
        inputs = {"input_ids": ids, "labels": ids}
        tokens = args.batch * args.seq
    else:
        labels = torch.randint(0, config.vocab_size, (args.batch, args.seq), generator=g)
        inputs = {"input_ids": ids, "labels": labels}
        tokens = 2 * args.batch * args.seq

    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=1e-4, weight_decay=0.01)
    forward = torch.compile(model) if args.compile else model

    times = []
    for s in range(args.warmup + args.steps):
        t0 = time.perf_counter()
        loss = forward(**inputs).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        dt = time.perf_counter() - t0
        if s >= args.warmup:
            times.append(dt)
    times.sort()
    median = times[len(times) // 2]
    n_total = sum(p.numel() for p in model.parameters())
    n_train = sum(p.numel() for p in trainable)
    print(json.dumps({
        "impl": "torch-compile" if args.compile else "torch-eager",
        "model": args.model,
        "method": method,
        "batch": args.batch,
        "seq": args.seq,
        "step_s_median": median,
        "step_s_min": times[0],
        "step_s_max": times[-1],
        "tokens_per_s": tokens / median,
        "max_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "params_total": n_total,
        "params_trainable": n_train,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
    }))


if __name__ == "__main__":
    main()
