#!/usr/bin/env bash
# Runs every google-benchmark executable in BUILD_DIR/bench and prints its results.
#   scripts/run_bench.sh BUILD_DIR [extra benchmark flags, e.g. --benchmark_filter=sgemm]
# Each benchmark runs for at least MIN_TIME seconds (default 0.2). google-benchmark 1.7 takes a plain number of
# seconds (--benchmark_min_time=0.2); 1.8 and later spell it with a unit (0.2s) and warn about the bare form,
# so the syntax is picked from the executable's --help.
set -euo pipefail

if [ $# -lt 1 ]; then
  echo "usage: $0 BUILD_DIR [benchmark flags...]" >&2
  exit 2
fi
build_dir=$1
shift
bench_dir="$build_dir/bench"
min_time=${MIN_TIME:-0.2}

if [ ! -d "$bench_dir" ]; then
  echo "run_bench: $bench_dir does not exist (build the bench_* targets first)" >&2
  exit 1
fi

shopt -s nullglob
found=0
status=0
for exe in "$bench_dir"/bench_*; do
  [ -f "$exe" ] && [ -x "$exe" ] || continue
  found=1
  help_text=$("$exe" --help 2>&1 || true)
  if [[ "$help_text" == *"<float>s"* ]]; then
    min_flag="--benchmark_min_time=${min_time}s"
  else
    min_flag="--benchmark_min_time=${min_time}"
  fi
  echo "=== $(basename "$exe") ==="
  if ! "$exe" "$min_flag" "$@"; then
    echo "run_bench: $(basename "$exe") failed" >&2
    status=1
  fi
  echo
done

if [ $found -eq 0 ]; then
  echo "run_bench: no bench_* executables in $bench_dir" >&2
  exit 1
fi
exit $status
