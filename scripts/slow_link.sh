#!/usr/bin/env bash
# Runs a command over a real slow link: a private network namespace whose loopback is shaped by tc, so that
# everything the command sends to 127.0.0.1 (MPI's TCP transport between the ranks of one mpirun, say) crosses a
# link of the given rate, and optionally delay and loss. The namespace is removed when the command ends, fails or
# is interrupted. Needs root and iproute2 (`ip`, `tc`).
#
#   scripts/slow_link.sh --rate 20mbit [--delay 5ms] [--loss 0.1%] [--burst 256kb] -- COMMAND [ARGS...]
#
# Example (client + one server process, every boundary crossing the 100 Mbit/s link):
#   scripts/slow_link.sh --rate 100mbit -- mpirun --allow-run-as-root --mca btl tcp,self \
#       --mca btl_tcp_if_include lo -np 2 build/bin/dgpipe train --preset demo --channel mpi
#
# The rate is a token bucket (tc tbf). Its burst must exceed the loopback MTU (64 KiB): with a smaller bucket every
# full-size packet is dropped and TCP stalls (the script warns; tests use it on purpose to cut a link). Delay and loss
# need the kernel's netem scheduler; where the kernel has none the script says so and stops rather than run an
# unshaped link. The namespace is named dgpipe-link-<pid of this script> unless --name says otherwise; namespaces of
# that form whose script is gone (killed with SIGKILL, say) are removed on the next run.
set -euo pipefail

usage() {
  sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

rate="" delay="" loss="" burst="256kb" name="dgpipe-link-$$"
while [ $# -gt 0 ]; do
  case "$1" in
    --rate) rate=${2:?--rate needs a value, e.g. 20mbit}; shift 2 ;;
    --delay) delay=${2:?--delay needs a value, e.g. 5ms}; shift 2 ;;
    --loss) loss=${2:?--loss needs a value, e.g. 0.1%}; shift 2 ;;
    --burst) burst=${2:?--burst needs a value, e.g. 256kb}; shift 2 ;;
    --name) name=${2:?--name needs a value}; shift 2 ;;
    --) shift; break ;;
    -h|--help) usage ;;
    *) echo "slow_link.sh: unknown argument '$1' (expected --rate, --delay, --loss, --burst, --name, --)" >&2; exit 2 ;;
  esac
done
[ $# -gt 0 ] || { echo "slow_link.sh: no command given after --" >&2; exit 2; }
[ -n "$rate" ] || { echo "slow_link.sh: --rate is required (e.g. --rate 20mbit)" >&2; exit 2; }
[ "$(id -u)" -eq 0 ] || { echo "slow_link.sh: needs root (network namespaces and tc)" >&2; exit 2; }
for tool in ip tc; do
  command -v "$tool" >/dev/null || { echo "slow_link.sh: '$tool' not found (install iproute2)" >&2; exit 2; }
done

if [[ "$burst" =~ ^([0-9]+)(b|kb|k|kbit|mb|m)?$ ]]; then
  case "${BASH_REMATCH[2]}" in
    kb|k) scale=1024 ;; kbit) scale=128 ;; mb|m) scale=1048576 ;; *) scale=1 ;;
  esac
  if [ $(( BASH_REMATCH[1] * scale )) -lt 65536 ]; then
    echo "slow_link.sh: warning: burst $burst is below the loopback MTU (64 KiB): full-size packets will be dropped" >&2
  fi
fi

# Namespaces left behind by runs of this script that were killed before they could clean up.
for stale in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E '^dgpipe-link-[0-9]+$' || true); do
  kill -0 "${stale#dgpipe-link-}" 2>/dev/null || ip netns del "$stale" 2>/dev/null || true
done

cleanup() { ip netns del "$name" 2>/dev/null || true; }
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM  # until the command runs (below)

ip netns add "$name"
ip netns exec "$name" ip link set lo up
if [ -n "$delay$loss" ]; then
  netem=(netem)
  [ -n "$delay" ] && netem+=(delay "$delay")
  [ -n "$loss" ] && netem+=(loss "$loss")
  if ! ip netns exec "$name" tc qdisc add dev lo root handle 1: "${netem[@]}" 2>/dev/null; then
    echo "slow_link.sh: this kernel has no netem qdisc, so --delay/--loss cannot be shaped; run with --rate only" >&2
    exit 2
  fi
  ip netns exec "$name" tc qdisc add dev lo parent 1: handle 2: tbf rate "$rate" burst "$burst" latency 200ms
elif ! ip netns exec "$name" tc qdisc add dev lo root tbf rate "$rate" burst "$burst" latency 200ms; then
  echo "slow_link.sh: cannot shape the loopback with tc tbf (rate '$rate', burst '$burst'; is the kernel's sch_tbf there?)" >&2
  exit 2
fi
echo "[slow_link] namespace $name: lo shaped to $rate${delay:+, delay $delay}${loss:+, loss $loss}" >&2
# Not exec: the namespace must be removed after the command. The command runs in the background so that INT or
# TERM reach this script at once (bash runs traps only between commands) and are passed on to the command (mpirun
# passes them on to its ranks), which gets 10 s to end before it is killed.
set +e
ip netns exec "$name" "$@" <&0 &
child=$!
stop_child() {
  kill -TERM "$child" 2>/dev/null
  for _ in $(seq 1 50); do kill -0 "$child" 2>/dev/null || return; sleep 0.2; done
  kill -KILL "$child" 2>/dev/null
}
trap 'stop_child; exit 130' INT
trap 'stop_child; exit 143' TERM
wait "$child"
exit $?
