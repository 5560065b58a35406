#!/usr/bin/env bash
# Builds the CUDA binaries, test suites and benchmarks for sm_90 (H100/H200) on this machine and collects them,
# with every non-CUDA shared library they need, into gpu-bundle/ (git-ignored, kept under 64 MiB): the folder to
# send to a GPU machine that has the NVIDIA driver, a CUDA toolkit (or PyTorch's NVIDIA wheels) and nothing else.
# There, `gpu-bundle/run_gpu_suites.sh OUTDIR` runs the CUDA suites and the benchmarks (docs/gpu.md).
#
#   scripts/gpu_bundle.sh                 # build dir build-gpu-bundle, output gpu-bundle/
#   BUILD_DIR=build-x JOBS=8 scripts/gpu_bundle.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${BUILD_DIR:-$ROOT/build-gpu-bundle}"
BUNDLE="$ROOT/gpu-bundle"
JOBS="${JOBS:-2}"
LIMIT_BYTES=$((64 * 1024 * 1024))
CUDA_ARCH="${CUDA_ARCH:-90}"

echo "== configure $BUILD_DIR (CUDA on, sm_$CUDA_ARCH, static OpenBLAS)"
cmake -S "$ROOT" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release -DDGPIPE_WITH_CUDA=ON \
  -DCMAKE_CUDA_ARCHITECTURES="$CUDA_ARCH" -DDGPIPE_STATIC_BLAS=ON -DDGPIPE_BUILD_TESTS=ON -DDGPIPE_BUILD_BENCH=ON >/dev/null

# What goes in: the dgpipe binary, every test suite that exercises CUDA code (file names containing "cuda" or
# "gpu", plus the autocast suite), and the CUDA benchmarks. The CPU-only suites run in CI and are left out: with
# the CUDA kernels linked into each of them they would not fit the 64 MiB budget.
mapfile -t TEST_SRCS < <(cd "$ROOT/tests" && ls */test_*cuda*.cpp */test_*gpu*.cpp engine/test_amp.cpp 2>/dev/null | sort -u)
TEST_TARGETS=()
for src in "${TEST_SRCS[@]}"; do
  folder="${src%%/*}"
  stem="$(basename "$src" .cpp)"
  TEST_TARGETS+=("${folder}_${stem}")
done
BENCH_TARGETS=()
for src in "$ROOT"/bench/bench_cuda_*.cpp "$ROOT"/bench/bench_engine.cpp; do
  [ -f "$src" ] && BENCH_TARGETS+=("$(basename "$src" .cpp)")
done
TARGETS=(dgpipe "${TEST_TARGETS[@]}" "${BENCH_TARGETS[@]}")

echo "== build ${#TARGETS[@]} targets with $JOBS jobs: ${TARGETS[*]}"
cmake --build "$BUILD_DIR" -j "$JOBS" --target "${TARGETS[@]}"

echo "== collect into $BUNDLE"
rm -rf "$BUNDLE"
mkdir -p "$BUNDLE/bin" "$BUNDLE/tests" "$BUNDLE/bench" "$BUNDLE/lib" "$BUNDLE/src"
cp "$BUILD_DIR/bin/dgpipe" "$BUNDLE/bin/"
for t in "${TEST_TARGETS[@]}"; do cp "$BUILD_DIR/tests/$t" "$BUNDLE/tests/"; done
for b in "${BENCH_TARGETS[@]}"; do cp "$BUILD_DIR/bench/$b" "$BUNDLE/bench/"; done
# Symbols are not needed to run; line tables for CUDA kernels stay inside the fat binaries.
strip --strip-unneeded "$BUNDLE"/bin/* "$BUNDLE"/tests/* "$BUNDLE"/bench/* 2>/dev/null || true

# Shared libraries the GPU machine lacks: everything the binaries load except the C runtime (which every Linux
# has and must match its kernel) and the CUDA libraries (which must match the machine's driver and are found
# there at run time by run_gpu_suites.sh).
is_system_or_cuda() {
  case "$(basename "$1")" in
    libc.so*|libm.so*|libdl.so*|libpthread.so*|librt.so*|ld-linux*|libresolv.so*|libutil.so*) return 0 ;;
    libcuda.so*|libnvidia*|libcublas*|libcudnn*|libnccl*|libcurand*|libcufft*|libcusparse*|libnvrtc*|libnvJitLink*) return 0 ;;
  esac
  return 1
}
for f in "$BUNDLE"/bin/* "$BUNDLE"/tests/* "$BUNDLE"/bench/*; do
  ldd "$f" | awk '/=> \// { print $3 }' | while read -r lib; do
    is_system_or_cuda "$lib" && continue
    [ -e "$BUNDLE/lib/$(basename "$lib")" ] || cp -L "$lib" "$BUNDLE/lib/"
  done
done
strip --strip-unneeded "$BUNDLE"/lib/* 2>/dev/null || true

# Small inputs the suites read at run time (goldens), the PyTorch comparison script and the runner.
[ -d "$ROOT/tests/data" ] && mkdir -p "$BUNDLE/src/tests" && cp -r "$ROOT/tests/data" "$BUNDLE/src/tests/"
mkdir -p "$BUNDLE/src/bench"
cp "$ROOT/bench/engine_vs_pytorch.py" "$BUNDLE/src/bench/"
cp "$ROOT/scripts/run_gpu_suites.sh" "$BUNDLE/run_gpu_suites.sh"
chmod +x "$BUNDLE/run_gpu_suites.sh"
{
  echo "dgpipe GPU bundle"
  echo "commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ) for sm_$CUDA_ARCH with $(nvcc --version | tail -1)"
  echo "tests: ${TEST_TARGETS[*]}"
  echo "bench: ${BENCH_TARGETS[*]}"
  echo "bundled libs: $(ls "$BUNDLE/lib" | tr '\n' ' ')"
  echo "needed from the GPU machine: libcuda (driver), libcublas, libcublasLt, libcudnn (+ its sub-libraries)"
} > "$BUNDLE/MANIFEST.txt"

size=$(du -sb "$BUNDLE" | cut -f1)
echo "== bundle: $(du -sh "$BUNDLE" | cut -f1) ($size bytes)"
if [ "$size" -ge "$LIMIT_BYTES" ]; then
  echo "error: gpu-bundle is $size bytes, over the 64 MiB budget; drop suites or libraries" >&2
  exit 1
fi
