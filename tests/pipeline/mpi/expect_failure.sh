#!/usr/bin/env bash
# Runs an MPI job that must fail: it has to exit non-zero within LIMIT seconds and print the expected text,
# and no process may crash (a segmentation fault is never an acceptable way to fail).
# usage: expect_failure.sh LIMIT "expected text" mpirun args...
limit=$1; expected=$2; shift 2
start=$(date +%s)
out=$(timeout "$((limit + 30))" "$@" 2>&1)
rc=$?
elapsed=$(( $(date +%s) - start ))
echo "$out" | tail -20
echo "exit code $rc after ${elapsed}s"
if [ "$rc" -eq 0 ]; then echo "FAIL: the job succeeded"; exit 1; fi
if [ "$rc" -eq 124 ]; then echo "FAIL: the job hung"; exit 1; fi
if [ "$elapsed" -gt "$limit" ]; then echo "FAIL: took ${elapsed}s > ${limit}s"; exit 1; fi
if ! echo "$out" | grep -q -- "$expected"; then echo "FAIL: output lacks '$expected'"; exit 1; fi
if echo "$out" | grep -q -E "Segmentation fault|signal 11|Signal: "; then echo "FAIL: a process crashed"; exit 1; fi
echo "OK"
