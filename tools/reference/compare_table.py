"""Summarises bench/compare JSON lines: per row and implementation the median of the step medians, the
min-max spread over repetitions, tokens/s, peak memory, and the vlpeft / PyTorch ratios against every
PyTorch implementation present. Markdown output, ready for bench/RESULTS.md.

Peak memory is max RSS on the CPU and the allocator's peak on a GPU (peak_device_bytes). A row whose
implementations report different trainable-parameter counts is marked MISMATCH and the script exits 3,
so the comparison is never read as like for like. A line {"row", "impl", "error"} (a run that failed)
is listed as failed."""
import argparse
import datetime
import json
import statistics
import subprocess
import sys

IMPLS = ("vlpeft", "torch-eager", "torch-compile", "torch-eager-bf16", "torch-compile-bf16")


def peak_gib(r):
    return r.get("peak_device_bytes", r["max_rss_bytes"]) / 2**30


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("log")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--device", default="CPU")
    args = ap.parse_args()
    runs, errors = {}, {}
    for line in open(args.log):
        line = line.strip()
        if not line.startswith("{"):
            continue
        r = json.loads(line)
        if "error" in r:
            errors.setdefault((r["row"], r["impl"]), r["error"])
        else:
            runs.setdefault((r["row"], r["impl"]), []).append(r)

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    where = f"CPU threads {args.threads}" if args.device == "CPU" else args.device
    print(f"\n{datetime.date.today()} · commit {commit} · {where} · vlpeft fp32 unless the impl says bf16")
    mem = "max RSS GiB" if args.device == "CPU" else "peak GPU GiB"
    print(f"\n| row | impl | batch×seq | step s (median, min-max over reps) | tokens/s | {mem} | trainable |")
    print("|---|---|---|---|---|---|---|")
    rows = sorted({row for row, _ in list(runs) + list(errors)})
    mismatched = []
    for row in rows:
        counts = {rs[0]["params_trainable"] for (r2, _), rs in runs.items() if r2 == row}
        flag = " **MISMATCH**" if len(counts) > 1 else ""
        if flag:
            mismatched.append(row)
        for impl in IMPLS:
            if (row, impl) in errors:
                print(f"| {row} | {impl} | | failed: {errors[(row, impl)][:120]} | | | |")
            rs = runs.get((row, impl))
            if not rs:
                continue
            med = [r["step_s_median"] for r in rs]
            tok = statistics.median(r["tokens_per_s"] for r in rs)
            peak = max(peak_gib(r) for r in rs)
            vis = f"+{rs[0]['visual_tokens']}v" if rs[0].get("visual_tokens") else ""
            print(f"| {row} | {impl} | {rs[0]['batch']}×{rs[0]['seq']}{vis} | {statistics.median(med):.3f} "
                  f"({min(med):.3f}-{max(med):.3f}) | {tok:.1f} | {peak:.2f} | {rs[0]['params_trainable']:,}{flag} |")

    baselines = [impl for impl in IMPLS[1:] if any(i == impl for _, i in runs)]
    if baselines:
        head = " | ".join(f"tokens/s vlpeft ÷ {b} | memory vlpeft ÷ {b}" for b in baselines)
        print(f"\n| row | {head} |")
        print("|---|" + "---|---|" * len(baselines))
        for row in rows:
            a = runs.get((row, "vlpeft"))
            if not a:
                continue
            cells = []
            for b_impl in baselines:
                b = runs.get((row, b_impl))
                if not b:
                    cells += ["", ""]
                    continue
                speed = statistics.median(r["tokens_per_s"] for r in a) / statistics.median(
                    r["tokens_per_s"] for r in b)
                memory = max(peak_gib(r) for r in a) / max(peak_gib(r) for r in b)
                cells += [f"{speed:.2f}×", f"{memory:.2f}×"]
            print(f"| {row} | " + " | ".join(cells) + " |")
    if mismatched:
        print(f"\ncompare_table: trainable parameter counts differ between implementations in: "
              f"{', '.join(mismatched)}", file=sys.stderr)
        sys.exit(3)


if __name__ == "__main__":
    main()
