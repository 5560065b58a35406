#!/usr/bin/env bash
# `make run`: the main job. A real training run that shows the whole idea in a few minutes on 2 CPU cores:
# CIFAR-10 from ../shared/data (prepared by `make data`), a 3-stage client-server pipeline (the client runs the
# first and the last stage, so images and labels never leave it), 8-bit uniform quantization on every boundary
# in both directions (the codec chosen from the accuracy table in docs/results.md: see README.md), held-out
# accuracy, and the bytes the boundaries saved.
# With a GPU, the stages run on it (and the run uses the whole training set).
set -euo pipefail
BUILD=${1:-build}
cd "$(dirname "$0")/.."
bash scripts/prepare_data.sh --only cifar10-jpg >/dev/null
extra=()
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && "$BUILD/bin/dgpipe" model-info --model resnet18 >/dev/null 2>&1; then
  if grep -q "DGPIPE_WITH_CUDA:BOOL=ON" "$BUILD/CMakeCache.txt" 2>/dev/null; then
    extra=(--devices cuda:0 --train-subset 0 --eval-subset 0 --epochs 5)
    echo "[run] GPU found: stages on cuda:0, full training set"
  fi
fi
exec "$BUILD/bin/dgpipe" train --preset demo "${extra[@]}" "${@:2}"
