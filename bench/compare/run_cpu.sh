#!/usr/bin/env bash
# Side-by-side CPU comparison: vlpeft (build/bench/train_step) against PyTorch eager + transformers + peft
# (tools/reference/bench_torch.py) on the same training step, alternating A B A B in one run, equal
# threads. Prints one JSON line per run and a table of medians and ratios (tools/reference/compare_table.py,
# which exits 3 when the two sides train different parameter counts).
#
#   bench/compare/run_cpu.sh                 # every row, 3 alternations, threads = nproc
#   ROWS="gpt2-full vit-b16-lora" REPS=5 THREADS=2 bench/compare/run_cpu.sh
#
# Rows (bench/compare/peft/ holds the PEFT configs both sides read):
#   gpt2-full, gpt2-lora (r 16 on c_attn), t5-base-lora, bart-base-lora (r 8 on q, v)
#   gpt2-adapter, t5-base-adapter, bart-base-adapter: VL-Adapter's single bottleneck adapter (d/8, gelu_new)
#     after every attention / cross-attention / feed-forward sublayer (24 / 60 / 30 sites), adapters only
#   vl-bart-base-adapter: VL-BART-base (BART-base + the visual embedding of 36 random 2048-d region features
#     with boxes) with the VL-Adapter single-adapter recipe: adapters + every norm + the visual embedding
#   vit-b16-lora: ViT-B/16 at 224 px, LoRA r 16 on query/value + the classifier, random images and labels
#
# Needs: build/bench/train_step (tools/setup.sh builds it, or configure with -DVLP_BUILD_BENCH=ON) and the
# pinned venv (tools/reference/setup_venv.sh; PY=... to use another interpreter with the same packages).
set -euo pipefail
cd "$(dirname "$0")/../.."
THREADS=${THREADS:-$(nproc)}
REPS=${REPS:-3}
BATCH=${BATCH:-4}
SEQ=${SEQ:-128}
PY=${PY:-tools/reference/.venv/bin/python}
[ -x build/bench/train_step ] || { echo "run_cpu: build/bench/train_step missing: run tools/setup.sh" >&2; exit 1; }
[ -x "$PY" ] || { echo "run_cpu: $PY missing: run tools/reference/setup_venv.sh" >&2; exit 1; }

source bench/compare/rows.sh

export OMP_NUM_THREADS=$THREADS OPENBLAS_NUM_THREADS=$THREADS
log=$(mktemp)
err=$(mktemp)
# Runs one side, prefixing its JSON line with the row; on failure shows that side's stderr and stops.
run() {
  local row=$1
  shift
  if ! out=$("$@" 2>"$err"); then
    echo "run_cpu: row $row failed: $*" >&2
    tail -5 "$err" >&2
    exit 1
  fi
  echo "$out" | sed "s/^{/{\"row\": \"$row\", /" | tee -a "$log"
}
for row in $ROWS; do
  [ -n "${MODEL[$row]:-}" ] || { echo "run_cpu: unknown row $row (${!MODEL[*]})" >&2; exit 2; }
  args=(--model "${MODEL[$row]}" --batch "$BATCH" --seq "$SEQ")
  [ -n "${PEFT[$row]}" ] && args+=(--peft "${PEFT[$row]}")
  # shellcheck disable=SC2206  # EXTRA holds flags split on spaces on purpose
  [ -n "${EXTRA[$row]:-}" ] && args+=(${EXTRA[$row]})
  for _ in $(seq "$REPS"); do
    run "$row" build/bench/train_step "${args[@]}"
    run "$row" "$PY" tools/reference/bench_torch.py "${args[@]}" --threads "$THREADS"
  done
done
"$PY" tools/reference/compare_table.py "$log" --threads "$THREADS"
