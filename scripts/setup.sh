#!/usr/bin/env bash
# Installs the Debian packages dgpipe builds and tests with. Idempotent and quiet when nothing is missing.
set -euo pipefail

packages=(
  cmake g++ make pkg-config ccache
  libgtest-dev libgmock-dev libbenchmark-dev   # tests and benchmarks
  libopenblas-dev                              # CPU GEMM (OpenBLAS, pthread build)
  libdnnl-dev                                  # CPU convolution (oneDNN; DGPIPE_WITH_ONEDNN)
  nlohmann-json3-dev                           # safetensors headers, configs, logs
  libstb-dev                                   # PNG decoding (and JPEG where libjpeg is absent)
  libjpeg-dev                                  # JPEG decoding identical to PIL's (libjpeg-turbo)
  libcli11-dev                                 # command line
  libsentencepiece-dev                         # SentencePiece tokenizers
  libopenmpi-dev openmpi-bin                   # mpi channel
  python3                                      # scripts
  iproute2                                     # ip/tc: the shaped-link tests (scripts/slow_link.sh)
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -gt 0 ]; then
  echo "[setup] installing: ${missing[*]}"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
