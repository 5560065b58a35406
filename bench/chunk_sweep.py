#!/usr/bin/env python3
"""The chunk sweep: time per mini-batch against the number of micro-batches, pipelined over the stages.

For each model and micro-batch count M, `dgpipe train` runs two short epochs on CIFAR-10 over S stages (stage
threads of one process, the local channel, balance by measured block time) and the second epoch is measured from
the per-stage counters of metrics.jsonl: wall time per step (from a stage's first to its last instruction, so the
data loader is not in it) and busy time (forward, backward, codecs, optimizer; not the waits). The first epoch
warms up (allocations, BLAS). Reported per (model, M), the best of --repeats runs:

  time per mini-batch = max over stages of (wall time of epoch 2) / steps
  measured bubble     = 1 - (sum of busy) / (sum of wall) over the stages
  theory              = (S - 1) / (M + S - 1), the idle share of fill-drain with equal stages

The research notes measured the same against micro-batches ("chunks") for MobileNetV2, ResNet18 and VGG11
(docs/original.md, R4). Results go into a marked section of docs/results.md (--out), with date, machine and command.

  bench/chunk_sweep.py --build build --out docs/results.md
  bench/chunk_sweep.py --build build --models resnet18 --micro-batches 1,4 --repeats 1   # quick look, printed
"""
import argparse
import datetime
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile

BEGIN = "<!-- chunk-sweep:begin (written by bench/chunk_sweep.py) -->"
END = "<!-- chunk-sweep:end -->"


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--build", default="build", help="build folder holding bin/dgpipe")
    p.add_argument("--models", default="mobilenetv2,resnet18,vgg11")
    p.add_argument("--width", type=float, default=0.25, help="width multiplier (reduced for a CPU)")
    p.add_argument("--stages", type=int, default=2)
    p.add_argument("--micro-batches", default="1,2,4,8")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=6, help="steps per epoch (two epochs: warm-up, measured)")
    p.add_argument("--repeats", type=int, default=2, help="runs per point; the fastest is kept")
    p.add_argument("--devices", default="cpu")
    p.add_argument("--data-dir", default="", help="CIFAR-10 folder (default: dgpipe train's)")
    p.add_argument("--out", default="", help="write the table into this markdown file's marked section")
    return p.parse_args()


def run_point(args, model, m, log_dir):
    cmd = [os.path.join(args.build, "bin", "dgpipe"), "train", "--model", model, "--width", str(args.width),
           "--dataset", "cifar10", "--train-subset", str(args.batch * args.steps), "--eval-subset", "16",
           "--batch", str(args.batch), "--epochs", "2", "--stages", str(args.stages), "--balance", "auto",
           "--micro-batches", str(m), "--devices", args.devices, "--augment", "false", "--workers", "1",
           "--log-every", "0", "--checkpoint-every", "0", "--codec-error-every", "0", "--log-dir", log_dir]
    if args.data_dir:
        cmd += ["--data-dir", args.data_dir]
    done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if done.returncode != 0:
        sys.exit("chunk_sweep: %s failed:\n%s" % (" ".join(map(shlex.quote, cmd)), done.stdout[-3000:]))
    with open(os.path.join(log_dir, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f if line.strip()]
    epochs = [r for r in records if "stages" in r]  # the epoch records (other lines: codec error, ...)
    if len(epochs) < 2:
        sys.exit("chunk_sweep: %s wrote %d epochs, expected 2" % (log_dir, len(epochs)))
    first, second = epochs[0], epochs[1]
    steps = second["step"] - first["step"]
    wall = [b["wall_s"] - a["wall_s"] for a, b in zip(first["stages"], second["stages"])]
    busy = [b["busy_s"] - a["busy_s"] for a, b in zip(first["stages"], second["stages"])]
    return {"step_s": max(wall) / steps, "bubble": 1.0 - sum(busy) / sum(wall)}


def machine():
    cpu = platform.processor() or "CPU"
    try:
        with open("/proc/cpuinfo") as f:
            names = re.findall(r"model name\s*:\s*(.*)", f.read())
            if names:
                cpu = names[0].strip()
    except OSError:
        pass
    return "%s, %d cores (os.cpu_count)" % (cpu, os.cpu_count() or 0)


def table(args, results):
    s = args.stages
    lines = ["| model (width %g) | micro-batches M | micro-batch | time per mini-batch | speed-up over M=1 | "
             "measured bubble | theory (S-1)/(M+S-1) |" % args.width,
             "|---|---|---|---|---|---|---|"]
    for model, points in results:
        base = points[0][1]["step_s"]
        for m, r in points:
            lines.append("| %s | %d | %d | %.3f s | %.2f | %.2f | %.2f |" % (
                model, m, args.batch // m, r["step_s"], base / r["step_s"], r["bubble"], (s - 1) / (m + s - 1)))
    return "\n".join(lines)


def write_section(path, text):
    old = open(path).read() if os.path.exists(path) else ""
    block = BEGIN + "\n" + text + "\n" + END
    if BEGIN in old and END in old:
        new = old[:old.index(BEGIN)] + block + old[old.index(END) + len(END):]
    else:
        new = old.rstrip("\n") + "\n\n## Time per mini-batch against micro-batches (the chunk sweep)\n\n" + block + "\n"
    with open(path, "w") as f:
        f.write(new)


def main():
    args = parse_args()
    ms = [int(v) for v in args.micro_batches.split(",")]
    load_before = os.getloadavg()[0]
    results = []
    with tempfile.TemporaryDirectory(prefix="chunk_sweep_") as tmp:
        for model in args.models.split(","):
            points = []
            for m in ms:
                runs = [run_point(args, model, m, os.path.join(tmp, "%s_%d_%d" % (model, m, k)))
                        for k in range(args.repeats)]
                best = min(runs, key=lambda r: r["step_s"])
                print("%-12s M=%d  %.3f s per mini-batch  bubble %.2f  (runs: %s)" % (
                    model, m, best["step_s"], best["bubble"], ", ".join("%.3f" % r["step_s"] for r in runs)),
                    flush=True)
                points.append((m, best))
            results.append((model, points))
    body = table(args, results)
    command = "bench/chunk_sweep.py " + " ".join(map(shlex.quote, sys.argv[1:]))
    text = ("Measured %s on %s with `%s`: %d stages on the local channel (threads of one process), "
            "`--balance auto`, batch %d, CIFAR-10 without augmentation, %d steps per epoch; the second of two "
            "epochs is measured and the fastest of %d runs per point is kept. Load average (1 min) %.1f before "
            "and %.1f after: other jobs shared the machine." % (
                datetime.date.today().isoformat(), machine(), command, args.stages, args.batch, args.steps,
                args.repeats, load_before, os.getloadavg()[0]))
    print("\n" + body)
    if args.out:
        write_section(args.out, text + "\n\n" + body)
        print("written into " + args.out)


if __name__ == "__main__":
    main()
