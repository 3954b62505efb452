#!/usr/bin/env bash
# Side-by-side CPU comparison: vlpeft (build/bench/train_step) against PyTorch eager + transformers + peft
# (tools/reference/bench_torch.py) on the same training step, alternating A B A B in one run, equal
# threads. Prints one JSON line per run and a table of medians and ratios (tools/reference/compare_table.py).
#
#   bench/compare/run_cpu.sh                 # every row, 3 alternations, threads = nproc
#   ROWS="gpt2-full" REPS=5 THREADS=2 bench/compare/run_cpu.sh
#
# Needs: build/bench/train_step (tools/setup.sh builds it) and the pinned venv (tools/reference/setup_venv.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
THREADS=${THREADS:-$(nproc)}
REPS=${REPS:-3}
BATCH=${BATCH:-4}
SEQ=${SEQ:-128}
PY=tools/reference/.venv/bin/python
[ -x build/bench/train_step ] || { echo "run_cpu: build/bench/train_step missing: run tools/setup.sh" >&2; exit 1; }
[ -x "$PY" ] || { echo "run_cpu: $PY missing: run tools/reference/setup_venv.sh" >&2; exit 1; }

declare -A MODEL PEFT
MODEL[gpt2-full]=configs/hf/gpt2.json;      PEFT[gpt2-full]=
MODEL[gpt2-lora]=configs/hf/gpt2.json;      PEFT[gpt2-lora]=bench/compare/peft/gpt2_lora_r16.json
MODEL[t5-base-lora]=configs/hf/t5-base.json;   PEFT[t5-base-lora]=bench/compare/peft/t5_lora_r8.json
MODEL[bart-base-lora]=configs/hf/bart-base.json; PEFT[bart-base-lora]=bench/compare/peft/bart_lora_r8.json
ROWS=${ROWS:-"gpt2-full gpt2-lora t5-base-lora bart-base-lora"}

export OMP_NUM_THREADS=$THREADS OPENBLAS_NUM_THREADS=$THREADS
log=$(mktemp)
for row in $ROWS; do
  args=(--model "${MODEL[$row]}" --batch "$BATCH" --seq "$SEQ")
  [ -n "${PEFT[$row]}" ] && args+=(--peft "${PEFT[$row]}")
  for rep in $(seq "$REPS"); do
    build/bench/train_step "${args[@]}" | sed "s/^{/{\"row\": \"$row\", /" | tee -a "$log"
    "$PY" tools/reference/bench_torch.py "${args[@]}" --threads "$THREADS" 2>/dev/null \
      | sed "s/^{/{\"row\": \"$row\", /" | tee -a "$log"
  done
done
"$PY" tools/reference/compare_table.py "$log" --threads "$THREADS"
