#!/usr/bin/env bash
# Builds the CUDA binaries, test suites and benchmarks for sm_90 (H100/H200) on this machine and collects them,
# with every non-CUDA shared library they need, into gpu-bundle/ (git-ignored, kept under 64 MiB): the folder to
# send to a GPU machine that has the NVIDIA driver, a CUDA toolkit (or PyTorch's NVIDIA wheels) and nothing else.
# There, `gpu-bundle/gpu_check.sh OUTDIR` runs the whole GPU check (preflight, CUDA suites, end-to-end training
# against the CPU, benchmarks, memcheck) in under 8 minutes (docs/gpu.md).
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

# oneDNN off: on the GPU machine the convolutions run on cuDNN, and the CPU side there (the CUDA twins' oracle,
# the CPU half of the end-to-end check) keeps the hand-written reference convolution, as before. Bundling
# libdnnl.so.2 (40 MB, 6.9 MB under xz -9) with libgomp and libOpenCL would fit the budget but buys nothing there.
echo "== configure $BUILD_DIR (CUDA on, sm_$CUDA_ARCH, static OpenBLAS, no oneDNN)"
cmake -S "$ROOT" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release -DDGPIPE_WITH_CUDA=ON \
  -DCMAKE_CUDA_ARCHITECTURES="$CUDA_ARCH" -DDGPIPE_STATIC_BLAS=ON -DDGPIPE_WITH_ONEDNN=OFF -DDGPIPE_BUILD_TESTS=ON \
  -DDGPIPE_BUILD_BENCH=ON >/dev/null

# What goes in: the dgpipe binary, every test suite that exercises CUDA code (the files that skip themselves without
# a device: DGP_SKIP_WITHOUT_CUDA / have_cuda() / cuda_available()) and the benchmarks that run on CUDA. The
# CPU-only suites run in CI.
mapfile -t TEST_SRCS < <(cd "$ROOT/tests" && grep -lE 'DGP_SKIP_WITHOUT_CUDA|have_cuda\(\)|cuda_available\(\)' */test_*.cpp | grep -v '^support/' | sort -u)
TEST_TARGETS=()
for src in "${TEST_SRCS[@]}"; do
  folder="${src%%/*}"
  stem="$(basename "$src" .cpp)"
  TEST_TARGETS+=("${folder}_${stem}")
done
BENCH_TARGETS=()
for src in $(grep -l "cuda" "$ROOT"/bench/bench_*.cpp); do BENCH_TARGETS+=("$(basename "$src" .cpp)"); done
# The whole-training-step comparison with PyTorch (bench/train_step_vs_pytorch.py drives it), when present.
[ -f "$ROOT/bench/train_step_bench.cpp" ] && BENCH_TARGETS+=(train_step_bench)
TARGETS=(dgpipe "${TEST_TARGETS[@]}" "${BENCH_TARGETS[@]}")

echo "== build ${#TARGETS[@]} targets with $JOBS jobs: ${TARGETS[*]}"
cmake --build "$BUILD_DIR" -j "$JOBS" --target "${TARGETS[@]}"

# Everything is staged as a plain tree, then packed: each binary carries the same statically linked OpenBLAS
# (~25 MiB, kernels for every x86 generation) and the same CUDA fat binaries, which xz with a 64 MiB window stores
# once. Python's lzma unpacks it where xz is missing.
STAGE="$BUILD_DIR/gpu-bundle-stage"
echo "== stage in $STAGE"
rm -rf "$STAGE" "$BUNDLE"
mkdir -p "$STAGE/bin" "$STAGE/tests" "$STAGE/bench" "$STAGE/lib" "$STAGE/src" "$BUNDLE"
cp "$BUILD_DIR/bin/dgpipe" "$STAGE/bin/"
for t in "${TEST_TARGETS[@]}"; do cp "$BUILD_DIR/tests/$t" "$STAGE/tests/"; done
for b in "${BENCH_TARGETS[@]}"; do cp "$BUILD_DIR/bench/$b" "$STAGE/bench/"; done
# Symbols are not needed to run; line tables for CUDA kernels stay inside the fat binaries.
strip --strip-unneeded "$STAGE"/bin/* "$STAGE"/tests/* "$STAGE"/bench/* 2>/dev/null || true

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
for f in "$STAGE"/bin/* "$STAGE"/tests/* "$STAGE"/bench/*; do
  ldd "$f" | awk '/=> \// { print $3 }' | while read -r lib; do
    is_system_or_cuda "$lib" && continue
    [ -e "$STAGE/lib/$(basename "$lib")" ] || cp -L "$lib" "$STAGE/lib/"
  done
done
strip --strip-unneeded "$STAGE"/lib/* 2>/dev/null || true

# Small inputs the suites read at run time (goldens, launcher headers), the PyTorch comparison scripts, and
# what the GPU check's end-to-end part needs (a synthetic dataset maker, the run comparison).
[ -d "$ROOT/tests/data" ] && mkdir -p "$STAGE/src/tests" && cp -r "$ROOT/tests/data" "$STAGE/src/tests/"
mkdir -p "$STAGE/src/bench" "$STAGE/src/scripts"
cp "$ROOT"/bench/*_vs_pytorch.py "$STAGE/src/bench/"
cp "$ROOT/scripts/compare_runs.py" "$ROOT/scripts/make_synthetic_cifar.py" "$STAGE/src/scripts/"
# The launcher headers the CUDA twin suites scan to check that every launcher has a case.
(cd "$ROOT" && find engine compress -name '*_kernels.h' -exec cp --parents {} "$STAGE/src/" \;)
# What gpu_check.sh compares with the GPU machine: the CUDA version of the runtime the binaries link, and the
# newest glibc symbol version any binary or bundled library needs.
cuda_version=$(nvcc --version | grep -o 'V[0-9][0-9.]*' | tail -1 | tr -d V)
glibc_needed=$(for f in "$STAGE"/bin/* "$STAGE"/tests/* "$STAGE"/bench/* "$STAGE"/lib/*; do objdump -T "$f" 2>/dev/null; done |
  grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -1)
{
  echo "dgpipe GPU bundle"
  echo "commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ) for sm_$CUDA_ARCH with $(nvcc --version | tail -1)"
  echo "cuda: $cuda_version"
  echo "glibc: $glibc_needed"
  echo "tests: ${TEST_TARGETS[*]}"
  echo "bench: ${BENCH_TARGETS[*]}"
  echo "bundled libs: $(ls "$STAGE/lib" | tr '\n' ' ')"
  echo "needed from the GPU machine: libcuda (driver), libcublas, libcublasLt, libcudnn (+ its sub-libraries), libnccl"
} > "$STAGE/MANIFEST.txt"
cp "$STAGE/MANIFEST.txt" "$BUNDLE/MANIFEST.txt"
cp "$ROOT/scripts/gpu_check.sh" "$ROOT/scripts/run_gpu_suites.sh" "$BUNDLE/"
chmod +x "$BUNDLE/gpu_check.sh" "$BUNDLE/run_gpu_suites.sh"
echo "== pack $(du -sh "$STAGE" | cut -f1) into $BUNDLE/payload.tar.xz"
tar -C "$STAGE" -cf - . | xz -9 -T"$JOBS" > "$BUNDLE/payload.tar.xz"


size=$(du -sb "$BUNDLE" | cut -f1)
echo "== bundle: $(du -sh "$BUNDLE" | cut -f1) ($size bytes)"
if [ "$size" -ge "$LIMIT_BYTES" ]; then
  echo "error: gpu-bundle is $size bytes, over the 64 MiB budget; drop suites or libraries" >&2
  exit 1
fi
