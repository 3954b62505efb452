#!/usr/bin/env bash
# Side-by-side GPU comparison, the rows of run_cpu.sh on CUDA with three implementations per row,
# alternating A B C in each repetition after warm-up:
#   vlpeft              build/bench/train_step --device cuda, VLP_MODE=autocast (default: F32 parameters,
#                       --autocast bf16, the policy torch.autocast applies) or VLP_MODE=bf16 (--dtype bf16:
#                       bf16 parameters, F32 master weights in the optimizer)
#   torch-eager-bf16    tools/reference/bench_torch.py --device cuda --bf16 --attn sdpa (bf16 autocast, SDPA)
#   torch-compile-bf16  the same under torch.compile
# and prints the table of tokens/s, peak GPU memory and the vlpeft ÷ PyTorch ratios
# (tools/reference/compare_table.py; exits 3 when the sides train different parameter counts).
# A run that fails (vlpeft's CUDA path not complete, out of memory) is listed as failed; the others go on.
#
#   bench/compare/run_gpu.sh
#   ROWS="gpt2-full vl-bart-base-adapter" REPS=5 BATCH=8 SEQ=1024 bench/compare/run_gpu.sh
#
# vl-bart-base-adapter runs at the largest batch that fits, per implementation: doubling from BATCH (one
# short step each) until a run fails or MAX_BATCH is passed.
#
# Needs a CUDA GPU, build/bench/train_step built with the CUDA backend
#   (cmake -S . -B build -G Ninja -DVLP_CUDA=ON -DVLP_BUILD_BENCH=ON && cmake --build build --target train_step)
# and Python with the pinned torch, transformers and peft (tools/reference/requirements.txt): the venv of
# tools/reference/setup_venv.sh when present, else PY=... (nothing is downloaded here).
set -euo pipefail
cd "$(dirname "$0")/../.."
REPS=${REPS:-3}
BATCH=${BATCH:-16}
SEQ=${SEQ:-512}
STEPS=${STEPS:-20}
WARMUP=${WARMUP:-3}
MAX_BATCH=${MAX_BATCH:-1024}
VLP_MODE=${VLP_MODE:-autocast}
case $VLP_MODE in
  autocast) VLP_PRECISION=(--autocast bf16) ;;
  bf16) VLP_PRECISION=(--dtype bf16) ;;
  *) echo "run_gpu: VLP_MODE is autocast or bf16, got $VLP_MODE" >&2; exit 2 ;;
esac
if [ -z "${PY:-}" ]; then
  PY=tools/reference/.venv/bin/python
  [ -x "$PY" ] || PY=python3
fi

if ! { command -v nvidia-smi >/dev/null && nvidia-smi -L 2>/dev/null | grep -q GPU; }; then
  echo "run_gpu: no GPU (nvidia-smi missing or lists none); run bench/compare/run_cpu.sh on a CPU machine" >&2
  exit 1
fi
"$PY" -c "import torch, transformers, peft; assert torch.cuda.is_available()" 2>/dev/null ||
  { echo "run_gpu: $PY lacks torch/transformers/peft or torch sees no GPU" >&2; exit 1; }
[ -x build/bench/train_step ] ||
  { echo "run_gpu: build/bench/train_step missing (configure with -DVLP_CUDA=ON -DVLP_BUILD_BENCH=ON)" >&2; exit 1; }
GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)

source bench/compare/rows.sh
IMPLS=(vlpeft torch-eager-bf16 torch-compile-bf16)

# Runs one implementation with the given arguments.
impl_exec() {
  local impl=$1
  shift
  case $impl in
    vlpeft) build/bench/train_step --device cuda "${VLP_PRECISION[@]}" "$@" ;;
    torch-eager-bf16) "$PY" tools/reference/bench_torch.py --device cuda --bf16 --attn sdpa "$@" ;;
    torch-compile-bf16) "$PY" tools/reference/bench_torch.py --device cuda --bf16 --attn sdpa --compile "$@" ;;
  esac
}

log=$(mktemp)
err=$(mktemp)
# Runs one implementation; appends its JSON line, or an error line with the last stderr line, to the log.
run() {
  local row=$1 impl=$2
  shift 2
  local out
  if out=$(impl_exec "$impl" "$@" 2>"$err"); then
    echo "$out" | sed "s/^{/{\"row\": \"$row\", /" | tee -a "$log"
  else
    local why
    why=$(grep -v '^\s*$' "$err" | tail -1 | tr -d '"' | tr -d '\\' | cut -c1-200)
    echo "{\"row\": \"$row\", \"impl\": \"$impl\", \"error\": \"$why\"}" | tee -a "$log"
  fi
}

# Largest batch (doubling from BATCH) at which one short step of an implementation runs; 0 if none does.
largest_batch() {
  local impl=$1 best=0 b=$BATCH
  shift
  while [ "$b" -le "$MAX_BATCH" ]; do
    impl_exec "$impl" "$@" --batch "$b" --steps 1 --warmup 1 >/dev/null 2>&1 || break
    best=$b
    b=$((b * 2))
  done
  echo "$best"
}

for row in $ROWS; do
  [ -n "${MODEL[$row]:-}" ] || { echo "run_gpu: unknown row $row (${!MODEL[*]})" >&2; exit 2; }
  args=(--model "${MODEL[$row]}" --seq "$SEQ" --steps "$STEPS" --warmup "$WARMUP")
  [ -n "${PEFT[$row]}" ] && args+=(--peft "${PEFT[$row]}")
  # shellcheck disable=SC2206
  [ -n "${EXTRA[$row]:-}" ] && args+=(${EXTRA[$row]})
  declare -A B=()
  for impl in "${IMPLS[@]}"; do
    B[$impl]=$BATCH
    if [ "$row" = vl-bart-base-adapter ]; then
      B[$impl]=$(largest_batch "$impl" "${args[@]}")
      echo "run_gpu: $row $impl: largest batch ${B[$impl]}" >&2
      [ "${B[$impl]}" -gt 0 ] || B[$impl]=$BATCH  # nothing ran: the timed run below records the error
    fi
  done
  for _ in $(seq "$REPS"); do
    for impl in "${IMPLS[@]}"; do run "$row" "$impl" "${args[@]}" --batch "${B[$impl]}"; done
  done
done
"$PY" tools/reference/compare_table.py "$log" --device "$GPU"
