#!/usr/bin/env bash
# One script for a machine with an NVIDIA GPU (sm_90: H100/H200) and nvcc: builds vlpeft with the CUDA
# backend for sm_90, runs every test with the CUDA tests required to run (VLP_REQUIRE_CUDA=1 turns their
# "no CUDA device" skip into a failure), runs the CUDA tests again with plain cudaMalloc, runs
# compute-sanitizer memcheck and racecheck on them, runs the embedded demo with --device cuda, runs the
# CUDA kernel benchmarks, and prints a summary table last. Meant to finish in under 10 minutes on a 16-core machine.
#
#   tools/gpu-check.sh [build-dir]          (default build-gpu)
#
# Time: the whole run keeps within VLP_GPU_CHECK_BUDGET seconds (default 570: the device tool stops a
# command at 600). Steps run most-informative first (build, every test, benchmarks, the demo, then the
# slow sanitizer runs); each step's limit is cut to what is left, and a step with no time left is
# reported NOT RUN (and the script fails), never silently dropped. VLP_GPU_CHECK_STEPS="memcheck
# racecheck" runs only the named steps (configure and build always run; on a warm machine the build
# directory is kept between calls, so a second call spends its time on those steps).
#
# Libraries: when .debs/ holds .deb files (tools/gpu-deps.sh fetches them on a machine with network),
# they are unpacked with `dpkg -x` into /tmp/vlpeft-debs-root and CMake, pkg-config and the loader look there, for
# GPU machines whose image lacks our Debian packages. Logs and results go to $OUT (when set, e.g. by the
# device tool) or <build-dir>/gpu-check: summary.txt, bench.json and one log per step.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
BUILD=${1:-build-gpu}
RESULTS=${OUT:-$BUILD/gpu-check}
mkdir -p "$RESULTS"
JOBS=$(nproc)
T_START=$(date +%s)
STEPS=()

BUDGET=${VLP_GPU_CHECK_BUDGET:-570}
DEADLINE=$((T_START + BUDGET - 15))  # 15 s kept for the summary
ONLY=${VLP_GPU_CHECK_STEPS:-}

# step NAME TIMEOUT_S CMD...: runs CMD with its output in $RESULTS/NAME.log, records PASS/FAIL and seconds.
# The timeout is cut to the time left; with under 20 s left the step is recorded NOT RUN.
step() {
  local name=$1 limit=$2
  shift 2
  if [[ -n $ONLY && $name != configure && $name != build && " $ONLY " != *" $name "* ]]; then return 0; fi
  local t0=$(date +%s) status
  local left=$((DEADLINE - t0))
  if ((left < 20)); then
    STEPS+=("$(printf '%-28s %-12s' "$name" 'NOT RUN')  (no time left in the ${BUDGET} s budget)")
    return 1
  fi
  ((limit > left)) && limit=$left
  echo "== $name (limit ${limit} s): $*"
  if timeout "$limit" "$@" >"$RESULTS/$name.log" 2>&1; then status=PASS; else status="FAIL(rc=$?)"; fi
  local dt=$(($(date +%s) - t0))
  STEPS+=("$(printf '%-28s %-12s %5ss' "$name" "$status" "$dt")")
  tail -n 5 "$RESULTS/$name.log"
  [[ $status == PASS ]]
}

# ---- libraries carried as .deb files --------------------------------------------------------------
CMAKE_EXTRA=()
if compgen -G ".debs/*.deb" >/dev/null; then
  DEPS="${TMPDIR:-/tmp}/vlpeft-debs-root"  # outside the tree: the unpacked files must not travel
  mkdir -p "$DEPS"
  for f in .debs/*.deb; do dpkg -x "$f" "$DEPS"; done
  ARCH_LIB="$DEPS/usr/lib/x86_64-linux-gnu"
  export LD_LIBRARY_PATH="$ARCH_LIB:$ARCH_LIB/openblas-pthread${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  export PKG_CONFIG_LIBDIR="$ARCH_LIB/pkgconfig:$DEPS/usr/share/pkgconfig"
  export PKG_CONFIG_SYSROOT_DIR="$DEPS"
  export CMAKE_PREFIX_PATH="$DEPS/usr${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
  CMAKE_EXTRA+=(-DGTest_DIR="$ARCH_LIB/cmake/GTest" -Dbenchmark_DIR="$ARCH_LIB/cmake/benchmark"
                -Dnlohmann_json_DIR="$DEPS/usr/share/cmake/nlohmann_json"
                -DVLP_OPENBLAS="$ARCH_LIB/openblas-pthread/libopenblas.so"
                -DVLP_CBLAS_INCLUDE="$DEPS/usr/include/x86_64-linux-gnu/openblas-pthread"
                -DVLP_STB_INCLUDE="$DEPS/usr/include/stb")
  command -v pkg-config >/dev/null || CMAKE_EXTRA+=(-DPKG_CONFIG_EXECUTABLE="$DEPS/usr/bin/pkgconf")
  echo "using the libraries unpacked from .debs into $DEPS"
fi

# ---- cuDNN from PyTorch's pip wheel (nvidia-cudnn-cu13), when python3 has it -------------------------
# Headers and library for the cuDNN attention (VLP_ATTENTION=cudnn, BM_CudnnAttentionFwdBwd); its lib dir
# goes on the loader path (cuDNN loads its engine libraries from there at run time).
CUDNN_ROOT=$(python3 -c "import os, nvidia.cudnn as m; f = getattr(m, '__file__', None); \
print(os.path.dirname(f) if f else list(m.__path__)[0])" 2>/dev/null || true)
if [[ -n $CUDNN_ROOT && -f $CUDNN_ROOT/include/cudnn.h ]]; then
  CMAKE_EXTRA+=(-DVLP_CUDNN_ROOT="$CUDNN_ROOT")
  export LD_LIBRARY_PATH="$CUDNN_ROOT/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  echo "using cuDNN from $CUDNN_ROOT"
else
  echo "python3 has no nvidia.cudnn: CMake looks for cuDNN in the CUDA toolkit, /usr/local and /usr"
fi

export PATH="$PATH:/usr/local/cuda/bin"  # compute-sanitizer lives beside nvcc
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader >"$RESULTS/device.txt" 2>&1
else
  echo "no nvidia-smi (no NVIDIA driver?)" >"$RESULTS/device.txt"
fi
echo "device: $(cat "$RESULTS/device.txt")"

# ---- build ---------------------------------------------------------------------------------------
step configure 300 cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DVLP_CUDA=ON \
  -DCMAKE_CUDA_ARCHITECTURES=90 -DVLP_BUILD_TESTS=ON -DVLP_BUILD_BENCH=ON "${CMAKE_EXTRA[@]}"
BUILD_OK=0
step build 420 cmake --build "$BUILD" -j "$JOBS" && BUILD_OK=1

if [[ $BUILD_OK == 1 ]]; then
  # ---- tests: all of them, CUDA tests required to run ---------------------------------------------
  export OMP_NUM_THREADS=4
  step ctest_all_cuda_required 400 env VLP_REQUIRE_CUDA=1 ctest --test-dir "$BUILD" -j 8 --output-on-failure \
    --timeout 300
  # ---- benchmarks -------------------------------------------------------------------------------------
  # Google Benchmark exits 0 even when benchmarks report errors (no device): fail on any.
  run_bench() {
    "$BUILD/bench/bench_cuda" --benchmark_min_time=0.1 --benchmark_out="$RESULTS/bench.json" \
      --benchmark_out_format=json && ! grep -q "ERROR OCCURRED" "$RESULTS/bench_cuda.log"
  }
  export BUILD RESULTS
  export -f run_bench
  step bench_cuda 300 bash -c run_bench
  # PyTorch's SDPA (cuDNN) on the same attention shapes, for the 1.5x target; the GPU image has PyTorch.
  if python3 -c "import torch; assert torch.cuda.is_available()" 2>/dev/null; then
    step bench_torch_sdpa 200 python3 tools/reference/bench_sdpa.py "$RESULTS/bench.json"
  fi
  # ---- the embedded demo end to end on the GPU (bf16 autocast), its table kept in the log ------------
  step demo_cuda 240 "$BUILD/bin/vlpeft" --device cuda --out "$BUILD/demo_cuda"
  step test_cuda_plain_malloc 200 env VLP_REQUIRE_CUDA=1 VLP_CUDA_MALLOC=plain "$BUILD/tests/test_cuda"
  # ---- compute-sanitizer ----------------------------------------------------------------------------
  if command -v compute-sanitizer >/dev/null; then
    # Plain cudaMalloc so that an access past a tensor's end leaves its allocation and is caught.
    step memcheck 300 env VLP_REQUIRE_CUDA=1 VLP_CUDA_MALLOC=plain compute-sanitizer --tool memcheck \
      --error-exitcode 1 --leak-check no "$BUILD/tests/test_cuda" \
      --gtest_filter='-CudaAttention.EveryMaskBiasDropoutAndDtypeCombination:CudaAttentionCudnn.CrossAttention*:CudaAttentionCudnn.Causal*'
    step racecheck 300 env VLP_REQUIRE_CUDA=1 compute-sanitizer --tool racecheck --error-exitcode 1 \
      "$BUILD/tests/test_cuda" \
      --gtest_filter='CudaSoftmax.*:CudaLoss.*:CudaNorm.*:CudaReduce.*:CudaOptim.*:CudaAttention.CrossAttention*'
  else
    STEPS+=("$(printf '%-28s %-12s' compute-sanitizer 'NOT FOUND')")
  fi
fi

# ---- summary (last) ----------------------------------------------------------------------------------
{
  echo
  echo "==================== vlpeft gpu-check summary ===================="
  echo "device:  $(cat "$RESULTS/device.txt")"
  echo "commit:  $(git rev-parse --short HEAD 2>/dev/null || echo unknown)   date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  printf '%-28s %-12s %6s\n' step result time
  for s in "${STEPS[@]}"; do echo "$s"; done
  if [[ -f "$RESULTS/ctest_all_cuda_required.log" ]]; then
    echo
    grep -E "tests passed|tests failed|Total Test time" "$RESULTS/ctest_all_cuda_required.log" | sed 's/^/ctest: /'
    grep -cE "^\s*[0-9]+/[0-9]+ Test +#[0-9]+: Cuda" "$RESULTS/ctest_all_cuda_required.log" | sed 's/^/CUDA tests run by ctest: /'
  fi
  if [[ -f "$RESULTS/bench.json" ]]; then
    echo
    python3 - "$RESULTS/bench.json" <<'PY'
import json, sys
data = json.load(open(sys.argv[1]))
print(f"{'benchmark':52} {'time/iter':>12} {'GB/s':>8} {'of copy':>8} {'TFLOP/s':>8} {'of gemm':>8}")
for b in data.get("benchmarks", []):
    if b.get("error_occurred"):
        print(f"{b['name']:52} ERROR {b.get('error_message', '')}")
        continue
    t = f"{b['real_time']:.1f} {b['time_unit']}"
    f = lambda k, fmt: format(b[k], fmt) if k in b else ""
    print(f"{b['name']:52} {t:>12} {f('GB/s', '.0f'):>8} {f('of_copy_bw', '.2f'):>8} "
          f"{f('TFLOP/s', '.1f'):>8} {f('of_gemm_peak', '.2f'):>8}")
# Our attention against cuDNN's on the same inputs (issue #3's target: ratio <= 1.5).
times = {}
for b in data.get("benchmarks", []):
    parts = b["name"].split("/")
    if parts[0] in ("BM_AttentionFwdBwd", "BM_CudnnAttentionFwdBwd") and not b.get("error_occurred"):
        times[(parts[0], tuple(parts[1:3]))] = (b["real_time"], b.get("label", ""))
for args, what in ((("1024", "0"), "GPT-2 causal T=1024"), (("512", "1"), "T5 bias+padding T=512")):
    ours, cudnn = times.get(("BM_AttentionFwdBwd", args)), times.get(("BM_CudnnAttentionFwdBwd", args))
    if ours and cudnn:
        print(f"attention fwd+bwd {what}: ours ({ours[1]}) {ours[0]:.2f} ms / cuDNN {cudnn[0]:.2f} ms "
              f"= {ours[0] / cudnn[0]:.2f}x")
    else:
        print(f"attention fwd+bwd {what}: ratio unavailable (ours {ours}, cuDNN {cudnn})")
PY
  fi
  if [[ -f "$RESULTS/demo_cuda.log" ]]; then
    echo
    grep -A14 "^Base model" "$RESULTS/demo_cuda.log" | sed 's/^/demo: /'
  fi
  if [[ -f "$RESULTS/bench_torch_sdpa.log" ]]; then
    echo
    grep -A6 "attention fwd+bwd" "$RESULTS/bench_torch_sdpa.log"
  fi
  echo
  echo "total: $(($(date +%s) - T_START)) s"
} | tee "$RESULTS/summary.txt"

for s in "${STEPS[@]}"; do [[ $s == *PASS* ]] || exit 1; done
exit 0
