"""Summarises bench/compare JSON lines: per row and implementation the median of the step medians, the
min-max spread over repetitions, tokens/s, max RSS, and the vlpeft / PyTorch ratios. Markdown output, ready
for bench/RESULTS.md."""
import argparse
import json
import statistics
import subprocess
import datetime


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("log")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    runs = {}
    for line in open(args.log):
        line = line.strip()
        if not line.startswith("{"):
            continue
        r = json.loads(line)
        runs.setdefault((r["row"], r["impl"]), []).append(r)

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"\n{datetime.date.today()} · commit {commit} · CPU threads {args.threads} · fp32")
    print("\n| row | impl | batch×seq | step s (median, min-max over reps) | tokens/s | max RSS GiB | trainable |")
    print("|---|---|---|---|---|---|---|")
    rows = sorted({row for row, _ in runs})
    for row in rows:
        for impl in ("vlpeft", "torch-eager", "torch-compile"):
            rs = runs.get((row, impl))
            if not rs:
                continue
            med = [r["step_s_median"] for r in rs]
            tok = statistics.median(r["tokens_per_s"] for r in rs)
            rss = max(r["max_rss_bytes"] for r in rs) / 2**30
            print(f"| {row} | {impl} | {rs[0]['batch']}×{rs[0]['seq']} | {statistics.median(med):.3f} "
                  f"({min(med):.3f}-{max(med):.3f}) | {tok:.1f} | {rss:.2f} | {rs[0]['params_trainable']:,} |")
    print("\n| row | tokens/s vlpeft ÷ torch eager | max RSS vlpeft ÷ torch eager |")
    print("|---|---|---|")
    for row in rows:
        a, b = runs.get((row, "vlpeft")), runs.get((row, "torch-eager"))
        if not a or not b:
            continue
        speed = statistics.median(r["tokens_per_s"] for r in a) / statistics.median(r["tokens_per_s"] for r in b)
        mem = max(r["max_rss_bytes"] for r in a) / max(r["max_rss_bytes"] for r in b)
        print(f"| {row} | {speed:.2f}× | {mem:.2f}× |")


if __name__ == "__main__":
    main()
