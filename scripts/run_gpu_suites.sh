#!/usr/bin/env bash
# Runs inside gpu-bundle/ on a GPU machine (see docs/gpu.md): finds the machine's own CUDA libraries (cuBLAS,
# cuBLASLt, cuDNN, NCCL) in its CUDA toolkit or in a Python environment's NVIDIA wheels, then runs the CUDA test
# suites and the benchmarks and writes every log into OUTDIR.
#
#   ./run_gpu_suites.sh OUTDIR            # all suites + benchmarks (+ PyTorch comparison when torch imports)
#   SKIP_BENCH=1 ./run_gpu_suites.sh OUT  # tests only
set -uo pipefail

if [ $# -lt 1 ]; then
  echo "usage: $0 OUTDIR" >&2
  exit 2
fi
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUT="$(mkdir -p "$1" && cd "$1" && pwd)"
mkdir -p "$OUT/tests" "$OUT/bench"
LOG="$OUT/run.log"
: > "$LOG"
say() { echo "$*" | tee -a "$LOG"; }

# ---- 0. unpack the payload (binaries, libraries, goldens) next to the logs ----
if [ -f "$HERE/payload.tar.xz" ]; then
  WORK="${BUNDLE_WORKDIR:-$OUT/bundle}"
  rm -rf "$WORK" && mkdir -p "$WORK"
  if command -v xz >/dev/null 2>&1; then
    xz -dc "$HERE/payload.tar.xz" | tar -C "$WORK" -xf -
  else
    python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1], "r:xz").extractall(sys.argv[2])' \
      "$HERE/payload.tar.xz" "$WORK"
  fi || { say "error: cannot unpack $HERE/payload.tar.xz"; exit 2; }
  HERE="$WORK"
  say "unpacked the payload into $WORK"
fi

# ---- 1. find the CUDA libraries this machine provides ----
candidates=()
for d in "${CUDA_HOME:-}" "${CUDA_PATH:-}" /usr/local/cuda /usr/local/cuda-* /opt/cuda; do
  [ -n "$d" ] || continue
  for sub in lib64 lib targets/x86_64-linux/lib; do [ -d "$d/$sub" ] && candidates+=("$d/$sub"); done
done
for py in python3 python; do
  command -v "$py" >/dev/null 2>&1 || continue
  while read -r sp; do
    [ -d "$sp" ] || continue
    for d in "$sp"/nvidia/*/lib "$sp"/torch/lib; do [ -d "$d" ] && candidates+=("$d"); done
  done < <("$py" -c 'import site,sys; print("\n".join(site.getsitepackages()+[site.getusersitepackages()]+sys.path))' 2>/dev/null)
done
candidates+=(/usr/lib/x86_64-linux-gnu /usr/lib64)

export LD_LIBRARY_PATH="$HERE/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# The libraries the binaries still cannot resolve, by SONAME.
missing_sonames() {
  for f in "$HERE"/bin/* "$HERE"/tests/* "$HERE"/bench/*; do ldd "$f" 2>/dev/null | awk '/not found/ { print $1 }'; done | sort -u
}
for so in $(missing_sonames); do
  found=""
  for d in "${candidates[@]}"; do
    if [ -e "$d/$so" ]; then found="$d"; break; fi
  done
  if [ -n "$found" ]; then
    say "found $so in $found"
    case ":$LD_LIBRARY_PATH:" in *":$found:"*) ;; *) export LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$found" ;; esac
  else
    say "NOT FOUND: $so (searched: ${candidates[*]})"
  fi
done
# cuDNN 9 loads its engine sub-libraries (libcudnn_cnn, libcudnn_ops, ...) at run time from the same folder.
say "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
still=$(missing_sonames)
if [ -n "$still" ]; then
  say "error: unresolved libraries: $still"
  say "(the bundle was built with $(grep -o 'cuda_[0-9.]*\|release [0-9.]*' "$HERE/MANIFEST.txt" | head -1); a machine with another"
  say " CUDA major version needs a bundle built against it, or the matching nvidia-*-cu1x wheels)"
fi
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || say "warning: nvidia-smi failed (see nvidia-smi.txt)"

# ---- 2. test suites ----
export DGPIPE_SOURCE_DIR="$HERE/src"
failed=0
passed=0
for t in "$HERE"/tests/*; do
  name="$(basename "$t")"
  (cd "$HERE/src" && "$t" --gtest_output="xml:$OUT/tests/$name.xml") > "$OUT/tests/$name.log" 2>&1
  rc=$?
  if [ $rc -eq 0 ]; then
    passed=$((passed + 1))
    say "PASS $name ($(grep -c '^\[       OK \]' "$OUT/tests/$name.log") ok, $(grep -c '^\[  SKIPPED \].*ms)$' "$OUT/tests/$name.log") skipped)"
  else
    failed=$((failed + 1))
    say "FAIL $name (exit $rc): see tests/$name.log"
  fi
done
say "suites: $passed passed, $failed failed"

# ---- 3. benchmarks ----
if [ -z "${SKIP_BENCH:-}" ]; then
  for b in "$HERE"/bench/*; do
    name="$(basename "$b")"
    say "bench $name"
    "$b" --benchmark_format=console --benchmark_out="$OUT/bench/$name.json" --benchmark_out_format=json \
      > "$OUT/bench/$name.log" 2>&1 || say "bench $name exited with $?"
  done
  if python3 -c 'import torch; assert torch.cuda.is_available()' >/dev/null 2>&1; then
    say "engine vs PyTorch"
    python3 "$HERE/src/bench/engine_vs_pytorch.py" --engine-json "$OUT/bench/bench_cuda_ops.json" \
      --out "$OUT/bench/engine_vs_pytorch.md" > "$OUT/bench/engine_vs_pytorch.log" 2>&1 ||
      say "engine_vs_pytorch.py failed (see bench/engine_vs_pytorch.log)"
  else
    say "PyTorch with CUDA not importable: skipping the side-by-side comparison"
  fi
fi
say "logs in $OUT"
[ $failed -eq 0 ]
