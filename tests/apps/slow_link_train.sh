#!/usr/bin/env bash
# `dgpipe train --channel mpi` over a real slow link: the demo model (ResNet18 at width 0.25, uniform:8) as a
# client and a server process under mpirun, inside a network namespace whose loopback tc shapes to 20 Mbit/s
# (scripts/slow_link.sh; rate only, as this kernel has no netem for a delay). Data: a small synthetic CIFAR-10 in
# the binary layout, so the test needs nothing downloaded. No timing is asserted beyond "it ended, not hung".
#
#   matches-local  four steps over the link give the losses, accuracy and wire bytes of the single-process run
#   peer-timeout   the link is cut after a few steps (its token bucket shrunk below the MTU, so no large packet
#                  passes): every rank ends, naming the peer, at the bound that follows the step time (its 30 s
#                  floor here, or more on a busy machine, but under the old fixed 120 s) or at --peer-timeout 5; a
#                  rank killed with SIGKILL ends the job too. Never a crash.
#
# usage: slow_link_train.sh MODE DGPIPE MPIEXEC   (from the repository root; needs root and iproute2, else SKIP)
set -uo pipefail
mode=$1; dgpipe=$(realpath "$2"); mpiexec=$3
repo=$(pwd)
if [ "$(id -u)" -ne 0 ]; then echo "SKIP: needs root (network namespaces and tc)"; exit 0; fi
for tool in ip tc python3; do
  command -v "$tool" >/dev/null || { echo "SKIP: '$tool' not found (scripts/setup.sh installs iproute2)"; exit 0; }
done
if ! "$repo/scripts/slow_link.sh" --rate 20mbit -- true 2>/dev/null; then
  echo "SKIP: cannot create a shaped network namespace here (ip netns / tc tbf refused)"; exit 0
fi

tmp=$(mktemp -d)
ns="dgpipe-link-$$"  # the namespace slow_link.sh makes; this script's pid keeps it unique (and clean-able)
children=()
cleanup() {
  # slow_link.sh passes TERM on to mpirun; what is left after that (this test's processes only: their command
  # lines hold its temporary folder) is killed.
  for pid in "${children[@]}"; do kill -TERM "$pid" 2>/dev/null; done
  for pid in "${children[@]}"; do
    for _ in $(seq 1 75); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  done
  for pid in $(pgrep -f -- "$tmp/"); do kill -9 "$pid" 2>/dev/null; done
  ip netns del "$ns" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# 320 training and 64 test images in the CIFAR-10 binary layout, the class visible in the colours.
python3 - "$tmp/cifar" <<'PY'
import os, random, sys
d = os.path.join(sys.argv[1], "cifar-10-batches-bin")
os.makedirs(d)
rng = random.Random(5)
def write(name, n):
    with open(os.path.join(d, name), "wb") as f:
        for _ in range(n):
            label = rng.randrange(10)
            planes = bytes(min(255, max(0, (190 if (label >> c) & 1 else 60) + rng.randrange(-20, 21)))
                           for c in range(3) for _ in range(1024))
            f.write(bytes([label]) + planes)
for b in range(1, 6):
    write(f"data_batch_{b}.bin", 64)
write("test_batch.bin", 64)
PY

args=(train --preset demo --data-dir "$tmp/cifar" --train-subset 0 --eval-subset 0 --workers 1 --log-every 1)
# One op thread per stage in both layouts: locally the 3 stages share the cores (one thread each), over MPI the
# server's one stage would get every core, and oneDNN's convolutions differ in the last bits between thread
# counts (docs/architecture.md, "CPU convolution backends").
export DGPIPE_THREADS=1
mpi=("$mpiexec" --allow-run-as-root --oversubscribe --bind-to none --mca btl tcp,self --mca btl_tcp_if_include lo -np 2
     -x DGPIPE_THREADS)

# Runs the demo over the shaped link in the background; its pid in $job, its output in $1.log.
start_over_link() {
  local name=$1; shift
  "$repo/scripts/slow_link.sh" --name "$ns" --rate 20mbit -- "${mpi[@]}" "$dgpipe" "${args[@]}" --channel mpi \
    --log-dir "$tmp/$name" "$@" > "$tmp/$name.log" 2>&1 &
  job=$!
  children+=("$job")
}

# Waits until the log shows that `step` steps are done (or the job ended).
wait_for_step() {
  local log=$1 step=$2 job=$3
  for _ in $(seq 1 600); do
    grep -q "step $step/" "$log" && return 0
    kill -0 "$job" 2>/dev/null || return 1
    sleep 0.2
  done
  return 1
}

# The job must end within `limit` seconds with a non-zero status, print `expected`, and not crash.
expect_end() {
  local name=$1 job=$2 limit=$3 expected=$4 start=$SECONDS
  while kill -0 "$job" 2>/dev/null && [ $((SECONDS - start)) -le "$limit" ]; do sleep 0.5; done
  if kill -0 "$job" 2>/dev/null; then echo "FAIL: $name still running ${limit}s after the cut (hung)"; exit 1; fi
  wait "$job"; local rc=$?
  echo "--- $name: exit $rc after $((SECONDS - start))s; its last lines:"
  grep -v '^$' "$tmp/$name.log" | grep -E "dgpipe rank|noticed|signal|Signal|MPI_ABORT" | head -8
  [ "$rc" -ne 0 ] || { echo "FAIL: $name succeeded"; exit 1; }
  grep -q -E -- "$expected" "$tmp/$name.log" || { echo "FAIL: $name: no '$expected' in its output"; cat "$tmp/$name.log"; exit 1; }
  if grep -q -E "Segmentation fault|signal 11|Signal: " "$tmp/$name.log"; then
    echo "FAIL: $name: a process crashed"; cat "$tmp/$name.log"; exit 1
  fi
}

case "$mode" in
  matches-local)
    "$dgpipe" "${args[@]}" --max-steps 4 --log-dir "$tmp/local" > "$tmp/local.log" 2>&1 || { cat "$tmp/local.log"; exit 1; }
    start_over_link mpi --max-steps 4
    wait "$job" || { echo "FAIL: the run over the link failed"; cat "$tmp/mpi.log"; exit 1; }
    grep -E "^\[slow_link\]|step [0-9]+/|^done" "$tmp/mpi.log"
    python3 - "$tmp/local" "$tmp/mpi" "$tmp/local.log" "$tmp/mpi.log" <<'PY'
import json, re, sys
local, mpi, local_log, mpi_log = sys.argv[1:5]
a, b = (json.load(open(f"{d}/summary.json")) for d in (local, mpi))
for key in ("steps", "wire_bytes", "raw_bytes", "final_eval_acc"):
    if a[key] != b[key]:
        sys.exit(f"FAIL: {key} differs: local {a[key]} vs over the link {b[key]}")
def epochs(d):
    return [json.loads(l) for l in open(f"{d}/metrics.jsonl") if '"record":"epoch"' in l]
for x, y in zip(epochs(local), epochs(mpi)):
    for key in ("train_loss", "eval_loss", "eval_acc", "wire_bytes"):
        if x[key] != y[key]:
            sys.exit(f"FAIL: epoch {x['epoch']} {key} differs: local {x[key]} vs over the link {y[key]}")
def step_losses(log):
    return re.findall(r"step \d+/\d+\s+loss (\S+)", open(log).read())
if step_losses(local_log) != step_losses(mpi_log) or not step_losses(local_log):
    sys.exit(f"FAIL: step losses differ: {step_losses(local_log)} vs {step_losses(mpi_log)}")
print(f"OK: over the 20 Mbit/s link as in one process: losses {step_losses(mpi_log)}, "
      f"{b['wire_bytes']} wire bytes, {b['steps']} steps, eval acc {b['final_eval_acc']:.4f}")
PY
    ;;
  peer-timeout)
    # The bound that follows the step time: steps of about a second give the 30 s floor.
    start_over_link adaptive --epochs 100
    wait_for_step "$tmp/adaptive.log" 3 "$job" || { echo "FAIL: no step 3"; cat "$tmp/adaptive.log"; exit 1; }
    ip netns exec "$ns" tc qdisc change dev lo root tbf rate 20mbit burst 1kb latency 200ms
    expect_end adaptive "$job" 150 "within [0-9.]+ s \(peer dead or stuck; the bound: [0-9.]+ s \(10 x the slowest of"
    bound=$(grep -o -E "within [0-9.]+ s \(peer dead" "$tmp/adaptive.log" | head -1 | grep -o -E "[0-9.]+")
    python3 -c "import sys; b = float('$bound'); sys.exit(0 if 30 <= b < 120 else 1)" ||
      { echo "FAIL: the bound that follows the step time was $bound s, not in [30, 120)"; exit 1; }
    grep -q -E "from stage [0-9] \(rank [01]\)" "$tmp/adaptive.log" || { echo "FAIL: the peer is not named"; exit 1; }
    # A fixed bound.
    start_over_link fixed --epochs 100 --peer-timeout 5
    wait_for_step "$tmp/fixed.log" 3 "$job" || { echo "FAIL: no step 3"; cat "$tmp/fixed.log"; exit 1; }
    ip netns exec "$ns" tc qdisc change dev lo root tbf rate 20mbit burst 1kb latency 200ms
    expect_end fixed "$job" 40 "within 5 s \(peer dead or stuck; the bound: 5 s \(fixed by --peer-timeout\)\)"
    # A dead peer: the server process killed.
    start_over_link dead --epochs 100
    wait_for_step "$tmp/dead.log" 3 "$job" || { echo "FAIL: no step 3"; cat "$tmp/dead.log"; exit 1; }
    for pid in $(pgrep -f -- "--log-dir $tmp/dead"); do
      if tr '\0' '\n' < "/proc/$pid/environ" 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=1"; then kill -9 "$pid"; fi
    done
    expect_end dead "$job" 60 "rank 1"
    echo "OK: every cut or dead peer ended the job, naming the peer, without a crash"
    ;;
  *) echo "usage: slow_link_train.sh matches-local|peer-timeout DGPIPE MPIEXEC"; exit 2 ;;
esac
