#!/usr/bin/env bash
# The first minutes on a GPU machine, in one call (docs/gpu.md, "The GPU check"). Runs inside gpu-bundle/
# (scripts/gpu_bundle.sh makes it) and writes everything under OUT:
#
#   gpu-bundle/gpu_check.sh OUT                       # every part, in under 8 minutes
#   gpu-bundle/gpu_check.sh --parts suites,bench OUT  # a subset (preflight always runs)
#
# Parts, in this order (each under `timeout`; a global deadline of GPU_CHECK_BUDGET seconds, 450 by default,
# cuts whatever would run past it, and the summary says what was cut):
#   unpack     the payload into OUT/bundle (or $BUNDLE_WORKDIR)
#   preflight  GPU, driver and its CUDA version, the bundle's CUDA runtime, PyTorch and its CUDA, where
#              cuBLAS/cuDNN/NCCL were found, the glibc the binaries need and the one present, what dgpipe's own
#              runtime sees; stops here (exit 3) when the CUDA libraries or the driver are of another major
#              version than the bundle, or glibc is too old
#   suites     every CUDA test suite; a suite that reports no CUDA device while nvidia-smi lists a GPU fails
#   e2e        dgpipe train for 50 steps of a small ResNet on a synthetic CIFAR-10 on cuda:0 with 2 stages (exact
#              fp32) and 3 stages (TF32 convolutions, the default), each against the same run on the CPU (started
#              in the background after preflight): losses within a stated tolerance, allocator flat after the
#              first steps; the same with --precision mixed (against the CPU twin of mixed precision) when
#              dgpipe train has it wired, else "not wired"
#   bench      bench_cuda_ops and the other CUDA benchmarks, then engine_vs_pytorch.py, codecs_vs_pytorch.py and
#              train_step_vs_pytorch.py when PyTorch with CUDA imports
#   memcheck   compute-sanitizer --tool memcheck over the op and codec twin suites, with what time is left
# The summary table is printed last and kept in OUT/summary.txt; logs: OUT/run.log, OUT/preflight.txt,
# OUT/tests/, OUT/e2e/, OUT/bench/, OUT/memcheck/. Exit status: 0 when no part failed, 1 otherwise, 3 when
# preflight stopped the check.
set -uo pipefail

PARTS="suites,e2e,bench,memcheck"
if [ "${1:-}" = "--parts" ]; then
  PARTS="$2"
  shift 2
fi
if [ $# -lt 1 ]; then
  echo "usage: $0 [--parts suites,e2e,bench,memcheck] OUT" >&2
  exit 2
fi
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUT="$(mkdir -p "$1" && cd "$1" && pwd)"
mkdir -p "$OUT/tests" "$OUT/e2e" "$OUT/bench" "$OUT/memcheck"
LOG="$OUT/run.log"
: > "$LOG"
: > "$OUT/summary.tsv"
BUDGET="${GPU_CHECK_BUDGET:-450}"
START=$(date +%s)
DEADLINE=$((START + BUDGET))
FAILED=0

say() { echo "$*" | tee -a "$LOG"; }
wants() { case ",$PARTS," in *",$1,"*) return 0 ;; esac; return 1; }
left() { echo $((DEADLINE - $(date +%s))); }
# One row of the summary: part, status (PASS, FAIL, CUT, SKIP, NOT WIRED, NO GPU), seconds, note.
row() {
  printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >> "$OUT/summary.tsv"
  say "[$2] $1 (${3}s): $4"
  [ "$2" = "FAIL" ] && FAILED=1
  return 0
}
# capped CAP LOG CMD...: runs CMD with stdout and stderr in LOG, for at most min(CAP, time left - 10)
# seconds. Sets RC (124: cut by the cap; 125: not started, no time left), SECS and CAP.
capped() {
  CAP=$1
  local log=$2 avail
  shift 2
  avail=$(($(left) - 10))
  [ "$avail" -lt "$CAP" ] && CAP=$avail
  if [ "$CAP" -lt 5 ]; then
    RC=125
    SECS=0
    return 0
  fi
  local t0
  t0=$(date +%s)
  timeout -k 5 "$CAP" "$@" > "$log" 2>&1
  RC=$?
  [ $RC -eq 137 ] && RC=124
  SECS=$(($(date +%s) - t0))
  return 0
}
finish() {
  local total=$(($(date +%s) - START)) verdict="PASS"
  [ "${GPUS:-0}" -eq 0 ] && verdict="NO GPU"
  [ "$FAILED" -ne 0 ] && verdict="FAIL"
  [ "${1:-}" = "stopped" ] && verdict="STOPPED"
  printf 'total\t%s\t%s\t%s\n' "$verdict" "$total" "budget ${BUDGET}s; logs in $OUT" >> "$OUT/summary.tsv"
  {
    echo
    echo "== gpu_check summary ($(date -u +%Y-%m-%dT%H:%M:%SZ), $(hostname))"
    printf '%-34s %-9s %7s  %s\n' "part" "status" "seconds" "note"
    while IFS=$'\t' read -r part status secs note; do
      printf '%-34s %-9s %7s  %s\n' "$part" "$status" "$secs" "$note"
    done < "$OUT/summary.tsv"
  } | tee "$OUT/summary.txt" | tee -a "$LOG"
}

# ---------------- unpack ----------------
if [ -f "$HERE/payload.tar.xz" ]; then
  WORK="${BUNDLE_WORKDIR:-$OUT/bundle}"
  rm -rf "$WORK" && mkdir -p "$WORK"
  if command -v xz > /dev/null 2>&1; then
    capped 60 "$OUT/unpack.log" bash -c 'xz -dc "$1" | tar -C "$2" -xf -' _ "$HERE/payload.tar.xz" "$WORK"
  else
    capped 60 "$OUT/unpack.log" python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1], "r:xz").extractall(sys.argv[2])' \
      "$HERE/payload.tar.xz" "$WORK"
  fi
  if [ $RC -ne 0 ]; then
    row unpack FAIL "$SECS" "cannot unpack $HERE/payload.tar.xz (exit $RC; see unpack.log)"
    finish stopped
    exit 3
  fi
  cp "$HERE/MANIFEST.txt" "$WORK/" 2> /dev/null
  HERE="$WORK"
  row unpack PASS "$SECS" "into $WORK"
fi
[ -d "$HERE/tests" ] || {
  say "error: $HERE holds no tests/ (run gpu_check.sh from gpu-bundle/, next to payload.tar.xz)"
  exit 2
}
manifest() { sed -n "s/^$1: //p" "$HERE/MANIFEST.txt" 2> /dev/null | head -1; }

# ---------------- preflight ----------------
t0=$(date +%s)
PRE="$OUT/preflight.txt"
: > "$PRE"
note() { echo "$*" | tee -a "$PRE" >> "$LOG"; echo "  $*"; }
say "== preflight"
GPUS=0
if command -v nvidia-smi > /dev/null 2>&1; then
  GPUS=$(timeout 20 nvidia-smi -L 2> /dev/null | grep -c '^GPU ')
  timeout 20 nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
  DRIVER_CUDA=$(grep -o 'CUDA Version: *[0-9.]*' "$OUT/nvidia-smi.txt" | grep -o '[0-9.]*$' | head -1)
  note "GPU: $(timeout 20 nvidia-smi --query-gpu=index,name,driver_version,memory.total --format=csv,noheader 2> /dev/null |
    tr '\n' ';' | sed 's/;$//') ($GPUS listed by nvidia-smi -L)"
  note "driver: supports CUDA ${DRIVER_CUDA:-?}"
else
  DRIVER_CUDA=""
  note "GPU: nvidia-smi not found (no NVIDIA driver?)"
fi
BUNDLE_CUDA=$(manifest cuda)
BUNDLE_MAJOR=$(echo "$BUNDLE_CUDA" | grep -o '^[0-9]*')
note "bundle: CUDA runtime ${BUNDLE_CUDA:-?}, built $(manifest built), commit $(manifest commit)"
if [ -n "$DRIVER_CUDA" ] && [ -n "$BUNDLE_MAJOR" ] && [ "${DRIVER_CUDA%%.*}" -lt "$BUNDLE_MAJOR" ]; then
  note "STOP: the driver supports CUDA $DRIVER_CUDA, the bundle's runtime is CUDA $BUNDLE_CUDA: update the driver or build the bundle with a CUDA ${DRIVER_CUDA%%.*} toolkit"
  row preflight FAIL $(($(date +%s) - t0)) "driver supports CUDA $DRIVER_CUDA < bundle's $BUNDLE_CUDA: stopped"
  finish stopped
  exit 3
fi
GLIBC_NEED=$(manifest glibc)
GLIBC_HAVE=$(getconf GNU_LIBC_VERSION 2> /dev/null | grep -o '[0-9.]*$')
note "glibc: the binaries need ${GLIBC_NEED:-?}, this machine has ${GLIBC_HAVE:-?}"
if [ -n "$GLIBC_NEED" ] && [ -n "$GLIBC_HAVE" ] &&
  [ "$(printf '%s\n%s\n' "$GLIBC_NEED" "$GLIBC_HAVE" | sort -V | head -1)" != "$GLIBC_NEED" ]; then
  note "STOP: glibc $GLIBC_HAVE is older than the $GLIBC_NEED the binaries need: build the bundle on an older distribution"
  row preflight FAIL $(($(date +%s) - t0)) "glibc $GLIBC_HAVE < $GLIBC_NEED: stopped"
  finish stopped
  exit 3
fi

# The CUDA libraries this machine provides: its toolkit, or a Python environment's NVIDIA wheels.
candidates=()
for d in "${CUDA_HOME:-}" "${CUDA_PATH:-}" /usr/local/cuda /usr/local/cuda-* /opt/cuda; do
  [ -n "$d" ] || continue
  for sub in lib64 lib targets/x86_64-linux/lib; do [ -d "$d/$sub" ] && candidates+=("$d/$sub"); done
done
for py in python3 python; do
  command -v "$py" > /dev/null 2>&1 || continue
  while read -r sp; do
    [ -d "$sp" ] || continue
    for d in "$sp"/nvidia/*/lib "$sp"/torch/lib; do [ -d "$d" ] && candidates+=("$d"); done
  done < <(timeout 20 "$py" -c 'import site,sys; print("\n".join(site.getsitepackages()+[site.getusersitepackages()]+sys.path))' 2> /dev/null)
done
candidates+=(/usr/lib/x86_64-linux-gnu /usr/lib64)
export LD_LIBRARY_PATH="$HERE/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
missing_sonames() {
  for f in "$HERE"/bin/* "$HERE"/tests/* "$HERE"/bench/*; do ldd "$f" 2> /dev/null | awk '/not found/ { print $1 }'; done | sort -u
}
for so in $(missing_sonames); do
  found=""
  for d in "${candidates[@]}"; do [ -e "$d/$so" ] && found="$d" && break; done
  if [ -n "$found" ]; then
    case ":$LD_LIBRARY_PATH:" in *":$found:"*) ;; *) export LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$found" ;; esac
    continue
  fi
  # Not there: another major version of the same library means a bundle for the wrong CUDA.
  stem="${so%.so.*}"
  other=""
  for d in "${candidates[@]}"; do
    other=$(ls "$d/$stem".so.[0-9]* 2> /dev/null | head -1)
    [ -n "$other" ] && break
  done
  if [ -n "$other" ]; then
    note "STOP: this machine's $stem is $(basename "$other") ($(dirname "$other")), the bundle needs $so (CUDA $BUNDLE_CUDA): build the bundle with the machine's CUDA major version, or install the matching nvidia-*-cu$BUNDLE_MAJOR wheels"
    row preflight FAIL $(($(date +%s) - t0)) "CUDA libraries of another major version ($(basename "$other"), bundle needs $so): stopped"
    finish stopped
    exit 3
  fi
  note "NOT FOUND: $so (searched: ${candidates[*]})"
done
still=$(missing_sonames | tr '\n' ' ')
for lib in libcudart libcublas libcublasLt libcudnn libnccl; do
  path=$(ldd "$HERE/bin/dgpipe" 2> /dev/null | awk -v l="$lib.so" 'index($1, l) == 1 && $3 ~ /^\// { print $3; exit }')
  [ -n "$path" ] && note "$lib: $path -> $(basename "$(readlink -f "$path")")"
done
note "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
TORCH=$(timeout 60 python3 -c 'import torch; print(torch.__version__, torch.version.cuda, torch.cuda.is_available())' 2> /dev/null)
TORCH_CUDA_OK=0
if [ -n "$TORCH" ]; then
  set -- $TORCH
  note "PyTorch $1, built with CUDA $2, sees a GPU: $3"
  [ "$3" = "True" ] && TORCH_CUDA_OK=1
else
  note "PyTorch: not importable"
fi
# What dgpipe's own runtime sees (the line every suite prints first).
capped 60 "$OUT/tests/preflight_runtime.log" bash -c 'cd "$1/src" && exec "$1/tests/engine_test_cuda_runtime" --gtest_filter="CudaDeviceStatus.*:CudaRuntime.*"' _ "$HERE"
SEEN=$(grep -m1 '^\[dgpipe\]' "$OUT/tests/preflight_runtime.log" | sed 's/^\[dgpipe\] //; s/: CUDA tests in this suite are skipped$//')
note "dgpipe sees: ${SEEN:-nothing (see tests/preflight_runtime.log)}"
pre_status=PASS
pre_note="$GPUS GPU(s), driver CUDA ${DRIVER_CUDA:-?}, bundle CUDA ${BUNDLE_CUDA:-?}, torch ${TORCH:-none}"
if [ -n "$still" ]; then
  pre_status=FAIL
  pre_note="unresolved libraries: $still"
elif [ "$GPUS" -gt 0 ] && ! echo "$SEEN" | grep -q 'CUDA device(s)'; then
  pre_status=FAIL
  pre_note="nvidia-smi lists $GPUS GPU(s) but dgpipe sees none: $SEEN"
elif [ $RC -ne 0 ]; then
  pre_status=FAIL
  pre_note="the runtime checks failed (tests/preflight_runtime.log): $SEEN"
fi
row preflight "$pre_status" $(($(date +%s) - t0)) "$pre_note"

# ---------------- e2e, CPU half (in the background from here on) ----------------
# GPU_CHECK_E2E_DEVICE (cuda:0) is where the "GPU" runs go: a machine without a GPU rehearses the logic with cpu.
E2E="$OUT/e2e"
DATA="$E2E/data"
E2E_DEVICE="${GPU_CHECK_E2E_DEVICE:-cuda:0}"
TRAIN_ARGS=(--model resnet18 --width 0.125 --dataset cifar10 --data-dir "$DATA" --batch 32 --chunks 4 --epochs 1
  --max-steps 50 --lr 0.05 --workers 4 --log-every 10 --checkpoint-every 0 --seed 1)
if wants e2e; then
  (
    cd "$HERE/src" || exit 1
    timeout 60 python3 "$HERE/src/scripts/make_synthetic_cifar.py" "$DATA" --per-file 320 > "$E2E/data.log" 2>&1 &&
      touch "$E2E/data.ready"
    for ref in cpu2 cpu3 cpu2-mixed; do
      extra=()
      [ "$ref" = cpu2-mixed ] && extra=(--precision mixed)  # the CPU twin of mixed precision
      OPENBLAS_NUM_THREADS=8 timeout 150 "$HERE/bin/dgpipe" train "${TRAIN_ARGS[@]}" --stages "${ref:3:1}" \
        --devices cpu "${extra[@]}" --log-dir "$E2E/$ref" > "$E2E/$ref.log" 2>&1
      echo $? > "$E2E/$ref.rc"
    done
  ) &
  CPU_JOB=$!
fi

# ---------------- suites ----------------
if wants suites; then
  say "== suites"
  export DGPIPE_SOURCE_DIR="$HERE/src"
  suites_end=$(($(date +%s) + 200))
  for t in "$HERE"/tests/*; do
    name="$(basename "$t")"
    cap=$((suites_end - $(date +%s)))
    [ $cap -gt 120 ] && cap=120
    capped "$cap" "$OUT/tests/$name.log" bash -c 'cd "$1" && exec "$2" --gtest_output="xml:$3"' _ "$HERE/src" "$t" "$OUT/tests/$name.xml"
    log="$OUT/tests/$name.log"
    ok=$(grep -c '^\[       OK \]' "$log" 2> /dev/null)
    skipped=$(grep -c '^\[  SKIPPED \].*ms)$' "$log" 2> /dev/null)
    seen=$(grep -m1 '^\[dgpipe\]' "$log" 2> /dev/null | sed 's/^\[dgpipe\] //; s/: CUDA tests in this suite are skipped$//')
    if [ $RC -eq 125 ]; then
      row "suite $name" CUT 0 "not run: no time left (the suites' 200 s or the budget)"
    elif [ $RC -eq 124 ]; then
      row "suite $name" FAIL "$SECS" "cut after ${CAP}s (a hang?): see tests/$name.log"
    elif [ $RC -ne 0 ]; then
      row "suite $name" FAIL "$SECS" "exit $RC ($ok ok, $(grep -c '^\[  FAILED  \].*ms)$' "$log") failed): see tests/$name.log"
    elif [ "$GPUS" -gt 0 ] && ! echo "$seen" | grep -q 'CUDA device(s)'; then
      # Point of the check: skipped CUDA tests on a machine with a GPU are a failure, not a pass.
      row "suite $name" FAIL "$SECS" "nvidia-smi lists a GPU but the suite reports none: ${seen:-no [dgpipe] line}"
    elif [ "$GPUS" -eq 0 ]; then
      row "suite $name" "NO GPU" "$SECS" "$ok ok, $skipped skipped (no GPU on this machine)"
    else
      row "suite $name" PASS "$SECS" "$ok ok, $skipped skipped"
    fi
  done
fi

# ---------------- e2e, GPU half ----------------
# The runs on the GPU go first; their comparison with the CPU runs (still going in the background) comes after
# the benchmarks. Tolerances on every step's loss (atol 1e-4 + rtol * |loss|): exact fp32 (DGPIPE_TF32=0) 5e-3,
# TF32 convolutions 3e-2, mixed precision against the CPU's mixed precision 5e-2; the worst difference is
# printed, to tighten them.
E2E_RUNS=()  # "name stages rtol reference" of the runs that finished, to compare later
gpu_run() {  # NAME STAGES RTOL REFERENCE TF32 [EXTRA ARGS...]
  local name=$1 stages=$2 rtol=$3 ref=$4 tf32=$5
  shift 5
  capped 90 "$E2E/$name.log" env DGPIPE_TF32="$tf32" "$HERE/bin/dgpipe" train "${TRAIN_ARGS[@]}" \
    --stages "$stages" --devices "$E2E_DEVICE" --log-dir "$E2E/$name" "$@"
  case $RC in
    0) E2E_RUNS+=("$name $stages $rtol $ref $SECS") && say "e2e $name: trained in ${SECS}s on $E2E_DEVICE" ;;
    124) row "e2e $name" FAIL "$SECS" "cut after ${CAP}s: see e2e/$name.log" ;;
    125) row "e2e $name" CUT 0 "not run: no time left" ;;
    *) row "e2e $name" FAIL "$SECS" "dgpipe train exit $RC: $(grep -m1 -i 'error\|what()' "$E2E/$name.log" | cut -c1-150)" ;;
  esac
}
if wants e2e; then
  say "== e2e (runs on $E2E_DEVICE)"
  for _ in $(seq 1 60); do [ -f "$E2E/data.ready" ] && break; sleep 1; done
  if [ ! -f "$E2E/data.ready" ]; then
    row "e2e data" FAIL 0 "no synthetic data (see e2e/data.log)"
  elif [ "$GPUS" -eq 0 ] && [ "$E2E_DEVICE" != "cpu" ]; then
    row "e2e" "NO GPU" 0 "no GPU on this machine (GPU_CHECK_E2E_DEVICE=cpu rehearses the runs on the CPU)"
  else
    gpu_run fp32-2stages 2 5e-3 cpu2 0
    gpu_run tf32-3stages 3 3e-2 cpu3 1
    # Mixed precision: run it once dgpipe train has it wired (the help lists it and a one-step probe is not
    # refused).
    if ! "$HERE/bin/dgpipe" train --help 2>&1 | grep -- '--precision' | grep -q 'mixed'; then
      row "e2e mixed-2stages" "NOT WIRED" 0 "dgpipe train --help does not list --precision mixed"
    else
      capped 30 "$E2E/mixed-probe.log" "$HERE/bin/dgpipe" train "${TRAIN_ARGS[@]}" --stages 2 --devices "$E2E_DEVICE" \
        --precision mixed --max-steps 1 --log-dir "$E2E/mixed-probe"
      if grep -q 'not wired' "$E2E/mixed-probe.log"; then
        row "e2e mixed-2stages" "NOT WIRED" "$SECS" "$(grep -m1 -o 'precision.*not wired[^;(]*' "$E2E/mixed-probe.log" | cut -c1-100)"
      else
        gpu_run mixed-2stages 2 5e-2 cpu2-mixed 1 --precision mixed
      fi
    fi
  fi
fi

# ---------------- bench ----------------
if wants bench; then
  say "== bench"
  for b in "$HERE"/bench/*; do
    name="$(basename "$b")"
    [ "$name" = "train_step_bench" ] && continue  # run by train_step_vs_pytorch.py below
    # bench_cuda_ops is all CUDA; the others time the CPU too, whose rows CI has.
    filter=()
    [ "$name" != "bench_cuda_ops" ] && filter=(--benchmark_filter=cuda)
    capped 60 "$OUT/bench/$name.log" "$b" "${filter[@]}" --benchmark_min_time=0.05 \
      --benchmark_out="$OUT/bench/$name.json" --benchmark_out_format=json
    errors=$(grep -c 'ERROR OCCURRED' "$OUT/bench/$name.log")
    count="$(grep -c '^BM_\|/cuda' "$OUT/bench/$name.log") benchmarks, $errors with errors"
    [ "$RC" -eq 0 ] && [ "$GPUS" -eq 0 ] && RC=no_gpu
    [ "$RC" = 0 ] && [ "$errors" -gt 0 ] && RC=errors
    [ "$RC" = 0 ] && ! grep -q '^BM_\|/cuda' "$OUT/bench/$name.log" && RC=none
    case $RC in
      no_gpu) row "bench $name" "NO GPU" "$SECS" "$count (no GPU on this machine)" ;;
      errors) row "bench $name" FAIL "$SECS" "$count: $(grep -m1 -o 'ERROR OCCURRED.*' "$OUT/bench/$name.log")" ;;
      none) row "bench $name" FAIL "$SECS" "no CUDA benchmark ran on a machine with a GPU: bench/$name.log" ;;
      0) row "bench $name" PASS "$SECS" "$count: bench/$name.json" ;;
      124) row "bench $name" CUT "$SECS" "cut after ${CAP}s: bench/$name.json holds what finished" ;;
      125) row "bench $name" CUT 0 "not run: no time left" ;;
      *) row "bench $name" FAIL "$SECS" "exit $RC: see bench/$name.log" ;;
    esac
  done
  py_bench() {  # NAME CAP ARGS...
    local name=$1 cap=$2
    shift 2
    if [ "$TORCH_CUDA_OK" -ne 1 ]; then
      row "$name" SKIP 0 "PyTorch with CUDA is not importable"
      return
    fi
    capped "$cap" "$OUT/bench/$name.log" python3 "$@"
    case $RC in
      0) row "$name" PASS "$SECS" "bench/$name.log" ;;
      124) row "$name" CUT "$SECS" "cut after ${CAP}s: bench/$name.log" ;;
      125) row "$name" CUT 0 "not run: no time left" ;;
      *) row "$name" FAIL "$SECS" "exit $RC: $(tail -1 "$OUT/bench/$name.log" | cut -c1-120)" ;;
    esac
  }
  if [ -f "$OUT/bench/bench_cuda_ops.json" ]; then
    py_bench engine_vs_pytorch 60 "$HERE/src/bench/engine_vs_pytorch.py" --engine-json "$OUT/bench/bench_cuda_ops.json" \
      --out "$OUT/bench/engine_vs_pytorch.md"
  else
    row engine_vs_pytorch SKIP 0 "no bench_cuda_ops.json"
  fi
  py_bench codecs_vs_pytorch 45 "$HERE/src/bench/codecs_vs_pytorch.py" --device cuda --repeat 3
  if [ -f "$HERE/src/bench/train_step_vs_pytorch.py" ] && [ -x "$HERE/bench/train_step_bench" ]; then
    py_bench train_step_vs_pytorch 90 "$HERE/src/bench/train_step_vs_pytorch.py" --device cuda \
      --bin "$HERE/bench/train_step_bench" --warmup 1 --steps 3 --repeat 1 --no-pipeline \
      --json-out "$OUT/bench/train_step_vs_pytorch.json"
  else
    row train_step_vs_pytorch SKIP 0 "not in this bundle (bench/train_step_vs_pytorch.py and train_step_bench)"
  fi
fi

# ---------------- e2e, the comparisons ----------------
if [ ${#E2E_RUNS[@]} -gt 0 ]; then
  say "== e2e comparisons"
  # The CPU references have been running in the background since preflight: wait while the budget allows.
  while kill -0 "$CPU_JOB" 2> /dev/null && [ "$(left)" -gt 60 ]; do sleep 1; done
  require=(--require-memory)
  [ "$E2E_DEVICE" = "cpu" ] && require=()
  for run in "${E2E_RUNS[@]}"; do
    read -r name stages rtol ref secs <<< "$run"
    if [ "$(cat "$E2E/$ref.rc" 2> /dev/null)" != "0" ]; then
      state="exit $(cat "$E2E/$ref.rc" 2> /dev/null)"
      [ -f "$E2E/$ref.rc" ] || state="still running"
      [ "$(cat "$E2E/$ref.rc" 2> /dev/null)" = "124" ] && state="cut by its 150 s cap"
      row "e2e $name" CUT "$secs" "trained; the CPU reference $ref did not finish ($state): e2e/$ref.log"
      continue
    fi
    python3 "$HERE/src/scripts/compare_runs.py" "$E2E/$ref" "$E2E/$name" --rtol "$rtol" --atol 1e-4 --warmup 5 \
      "${require[@]}" --name "$name" > "$E2E/$name.compare" 2>&1
    verdict=$(head -1 "$E2E/$name.compare")
    case "$verdict" in
      OK*) row "e2e $name" PASS "$secs" "${verdict#OK "$name": }; $(sed -n 4p "$E2E/$name.compare" | sed 's/^ *//')" ;;
      *) row "e2e $name" FAIL "$secs" "${verdict#FAIL "$name": }" ;;
    esac
  done
fi

# ---------------- memcheck ----------------
if wants memcheck; then
  say "== memcheck"
  SANITIZER=$(command -v compute-sanitizer 2> /dev/null)
  for d in "${CUDA_HOME:-}" /usr/local/cuda /usr/local/cuda-*; do
    [ -n "$SANITIZER" ] && break
    for c in "$d/bin/compute-sanitizer" "$d/compute-sanitizer/compute-sanitizer"; do
      [ -x "$c" ] && SANITIZER="$c" && break
    done
  done
  if [ -z "$SANITIZER" ]; then
    row memcheck SKIP 0 "compute-sanitizer not found (PATH, \$CUDA_HOME, /usr/local/cuda*)"
  else
    for suite in engine_test_cuda_ops compress_test_cuda_codecs; do
      [ -x "$HERE/tests/$suite" ] || continue
      capped 120 "$OUT/memcheck/$suite.log" bash -c 'cd "$1" && exec "$2" --tool memcheck --error-exitcode 99 --print-limit 20 "$3"' \
        _ "$HERE/src" "$SANITIZER" "$HERE/tests/$suite"
      errors=$(grep -m1 'ERROR SUMMARY' "$OUT/memcheck/$suite.log")
      found=$(grep -c '^========= Invalid\|^========= Program hit' "$OUT/memcheck/$suite.log")
      case $RC in
        0) row "memcheck $suite" PASS "$SECS" "${errors:-no errors}" ;;
        124) if [ "$found" -gt 0 ]; then row "memcheck $suite" FAIL "$SECS" "$found errors before the cut at ${CAP}s"; else
          row "memcheck $suite" CUT "$SECS" "cut at ${CAP}s with no error so far ($(grep -c '^\[       OK \]' "$OUT/memcheck/$suite.log") tests done)"; fi ;;
        125) row "memcheck $suite" CUT 0 "not run: no time left" ;;
        *) row "memcheck $suite" FAIL "$SECS" "exit $RC: ${errors:-see memcheck/$suite.log}" ;;
      esac
    done
  fi
fi

if [ -n "${CPU_JOB:-}" ] && kill -0 "$CPU_JOB" 2> /dev/null; then
  pkill -TERM -P "$CPU_JOB" 2> /dev/null  # its `timeout` passes the signal on to dgpipe
  kill "$CPU_JOB" 2> /dev/null
fi
finish
[ "$FAILED" -eq 0 ]
