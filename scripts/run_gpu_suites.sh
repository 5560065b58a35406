#!/usr/bin/env bash
# The CUDA test suites and benchmarks only (no end-to-end runs, no memcheck): gpu_check.sh with fewer parts.
# Kept for habit; see gpu_check.sh and docs/gpu.md.
#   ./run_gpu_suites.sh OUTDIR            # preflight, suites, benchmarks
#   SKIP_BENCH=1 ./run_gpu_suites.sh OUT  # preflight and suites
set -uo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
parts="suites,bench"
[ -n "${SKIP_BENCH:-}" ] && parts="suites"
exec "$HERE/gpu_check.sh" --parts "$parts" "$@"
