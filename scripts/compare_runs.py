#!/usr/bin/env python3
"""Compares two `dgpipe train` runs step by step, from the steps.jsonl of their log dirs.

    scripts/compare_runs.py REFERENCE_DIR RUN_DIR [--rtol 1e-3] [--atol 1e-4] [--warmup 5] [--name NAME]
                            [--require-memory]

Losses: every step of RUN must be within atol + rtol * |reference| of REFERENCE (the same steps must exist).
Memory: for every CUDA device RUN logs, after the first `warmup` steps the allocator must not grow: reserved
bytes and driver allocations unchanged, allocated bytes at most 1 MiB above their value at the end of the
warm-up. Prints one line `OK NAME: ...` or `FAIL NAME: ...` (the reasons), then details; exit status 0 or 1.
"""
import argparse
import json
import sys
from pathlib import Path

MIB = 1 << 20


def read_steps(log_dir):
    path = Path(log_dir) / "steps.jsonl"
    if not path.exists():
        raise SystemExit(f"FAIL: {path} does not exist (did the run start?)")
    steps = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            steps.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise SystemExit(f"FAIL: {path}:{number}: not JSON ({e})")
    return steps


def compare_losses(ref, run, rtol, atol):
    """(problems, details): the steps whose losses differ by more than the tolerance."""
    problems, details = [], []
    ref_by_step = {s["step"]: s["loss"] for s in ref}
    run_by_step = {s["step"]: s["loss"] for s in run}
    missing = sorted(set(ref_by_step) - set(run_by_step))
    if missing:
        problems.append(f"{len(missing)} reference steps missing from the run (first: {missing[0]})")
    worst_abs, worst_rel, worst_step, bad = 0.0, -1.0, None, 0
    for step in sorted(set(ref_by_step) & set(run_by_step)):
        a, b = run_by_step[step], ref_by_step[step]
        diff = abs(a - b)
        if not diff == diff or diff > atol + rtol * abs(b):  # NaN counts as a mismatch
            bad += 1
        rel = diff / max(abs(b), 1e-12)
        if not rel <= worst_rel:
            worst_abs, worst_rel, worst_step = diff, rel, step
    common = len(set(ref_by_step) & set(run_by_step))
    if bad:
        problems.append(f"{bad} of {common} steps differ by more than {atol:g} + {rtol:g} * |loss| "
                        f"(worst: step {worst_step}, |diff| {worst_abs:.3g}, relative {worst_rel:.3g})")
    first = min(ref_by_step) if ref_by_step else None
    if first is not None and first in run_by_step:
        details.append(f"step {first}: loss {run_by_step[first]:.6f} vs {ref_by_step[first]:.6f}")
    last = max(set(ref_by_step) & set(run_by_step), default=None)
    if last is not None:
        details.append(f"step {last}: loss {run_by_step[last]:.6f} vs {ref_by_step[last]:.6f}")
    details.append(f"{common} steps compared; largest relative difference {max(worst_rel, 0):.3g} "
                   f"(step {worst_step})")
    return problems, details


def check_memory(run, warmup, required):
    """(problems, details): allocator growth after the warm-up, per CUDA device."""
    problems, details = [], []
    per_device = {}
    for s in run:
        for m in s.get("cuda_memory", []):
            per_device.setdefault(m["device"], []).append((s["step"], m))
    if not per_device:
        if required:
            problems.append("the run logged no CUDA allocator statistics (did it run on a CUDA device?)")
        return problems, ["no CUDA allocator statistics in the run (a CPU run)"]
    for device, series in per_device.items():
        if len(series) <= warmup:
            problems.append(f"{device}: only {len(series)} steps, not more than the {warmup} warm-up steps")
            continue
        base_step, base = series[warmup - 1] if warmup > 0 else series[0]
        later = [m for _, m in series[warmup:]]
        grew = []
        for field in ("reserved", "device_mallocs"):
            top = max(m[field] for m in later)
            if top > base[field]:
                grew.append(f"{field} {base[field]} -> {top}")
        top_alloc = max(m["allocated"] for m in later)
        if top_alloc > base["allocated"] + MIB:
            grew.append(f"allocated {base['allocated']} -> {top_alloc} bytes")
        if grew:
            problems.append(f"{device} grew after step {base_step}: " + ", ".join(grew))
        last = series[-1][1]
        details.append(f"{device}: after step {base_step} allocated {base['allocated'] / MIB:.1f} MiB, "
                       f"reserved {base['reserved'] / MIB:.1f} MiB, {base['device_mallocs']} driver allocations; "
                       f"at step {series[-1][0]}: {last['allocated'] / MIB:.1f} MiB, "
                       f"{last['reserved'] / MIB:.1f} MiB, {last['device_mallocs']}")
    return problems, details


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("reference")
    p.add_argument("run")
    p.add_argument("--rtol", type=float, default=1e-3)
    p.add_argument("--atol", type=float, default=1e-4)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--name", default=None)
    p.add_argument("--require-memory", action="store_true", help="fail when the run logged no CUDA memory")
    a = p.parse_args()
    name = a.name or f"{a.run} vs {a.reference}"
    ref, run = read_steps(a.reference), read_steps(a.run)
    problems, details = [], []
    if not run:
        problems.append("the run logged no step")
    if not ref:
        problems.append("the reference logged no step")
    lp, ld = compare_losses(ref, run, a.rtol, a.atol)
    mp, md = check_memory(run, a.warmup, a.require_memory)
    problems += lp + mp
    details += ld + md
    memory = ("allocator flat after the warm-up" if any("cuda_memory" in s for s in run)
              else "no allocator statistics (a CPU run)")
    verdict = "; ".join(problems) if problems else f"losses within {a.atol:g} + {a.rtol:g} * |loss|, {memory}"
    print(("FAIL " if problems else "OK ") + name + ": " + verdict)
    for d in details:
        print("  " + d)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
