#!/usr/bin/env python3
"""Plots `dgpipe train` runs from their log dirs (metrics.jsonl + summary.json):

  curves.png            training loss and held-out accuracy per epoch, one line per run
  accuracy_vs_ratio.png final held-out accuracy (or MCC for CoLA) against the compression ratio the
                        boundaries achieved (wire bytes / f32 bytes), one point per run, labelled by codec
  accuracy_vs_time.png  held-out accuracy against training wall-clock (runs trained with --eval-every)
  codec_error.png       relative L2 error and cosine of decode(encode(x)) against x, per boundary and direction,
                        against the step (runs trained with --codec-error-every, on by default)

usage: scripts/plot_runs.py RUN_DIR [RUN_DIR ...] --out DIR
"""
import argparse
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def load(run):
    """(records by kind, summary, config) of a run; lines without a "record" key are epoch lines."""
    metrics_path = os.path.join(run, "metrics.jsonl")
    if not os.path.exists(metrics_path):
        sys.exit(f"{run}: no metrics.jsonl (is it a dgpipe train --log-dir?)")
    records = {"epoch": [], "eval": [], "codec_error": []}
    with open(metrics_path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                sys.exit(f"{metrics_path}:{n}: not JSON ({e})")
            records.setdefault(row.get("record", "epoch"), []).append(row)
    summary, config = {}, {}
    if os.path.exists(os.path.join(run, "summary.json")):
        summary = json.load(open(os.path.join(run, "summary.json")))
    if os.path.exists(os.path.join(run, "config.json")):
        config = json.load(open(os.path.join(run, "config.json")))
    return records, summary, config


def save(fig, out, name):
    fig.tight_layout()
    fig.savefig(os.path.join(out, name), dpi=120)
    plt.close(fig)
    return name


def label_of(run, config):
    return f"{os.path.basename(os.path.normpath(run))} ({config.get('compress', '?')})"


def metric_of(config):
    return "eval_mcc" if config.get("dataset") == "cola" else "eval_acc"


def plot_curves(runs, out):
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    for run, records, summary, config in runs:
        rows = records["epoch"]
        epochs = [r["epoch"] + 1 for r in rows]
        ax_loss.plot(epochs, [r["train_loss"] for r in rows], marker="o", label=label_of(run, config))
        ax_acc.plot(epochs, [100 * r[metric_of(config)] for r in rows], marker="o", label=label_of(run, config))
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("training loss")
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("held-out accuracy (%) / MCC x100 for CoLA")
    ax_acc.legend(fontsize=7)
    return save(fig, out, "curves.png")


def plot_accuracy_vs_ratio(runs, out):
    fig, ax = plt.subplots(figsize=(6, 4))
    for run, records, summary, config in runs:
        if not summary:
            continue
        metric = summary.get("final_eval_mcc") if config.get("dataset") == "cola" else summary.get("final_eval_acc")
        ratio = summary.get("compression_ratio", 1.0)
        ax.scatter([ratio], [100 * metric])
        ax.annotate(config.get("compress", "?"), (ratio, 100 * metric), fontsize=7, xytext=(4, 2),
                    textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("wire bytes / f32 bytes (both directions, all boundaries)")
    ax.set_ylabel("final held-out accuracy (%)")
    return save(fig, out, "accuracy_vs_ratio.png")


def plot_accuracy_vs_time(runs, out):
    fig, ax = plt.subplots(figsize=(7, 4))
    drawn = False
    for run, records, summary, config in runs:
        rows = records["eval"]
        if not rows:
            continue
        drawn = True
        ax.plot([r["run"]["train_seconds"] / 60 for r in rows], [100 * r[metric_of(config)] for r in rows],
                marker=".", label=label_of(run, config))
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xlabel("training wall-clock (minutes; held-out evaluation excluded)")
    ax.set_ylabel("held-out accuracy (%)")
    ax.legend(fontsize=7)
    return save(fig, out, "accuracy_vs_time.png")


def plot_codec_error(runs, out):
    series = {}  # (run label, boundary, direction, codec) -> [(step, rel_l2, cosine)]
    for run, records, summary, config in runs:
        for rec in records["codec_error"]:
            for b in rec["boundaries"]:
                key = (label_of(run, config), b["boundary"], b["direction"], b["codec"])
                series.setdefault(key, []).append((rec["step"], b["rel_l2"], b["cosine"]))
    if not series:
        return None
    fig, (ax_err, ax_cos) = plt.subplots(1, 2, figsize=(12, 4.5))
    for (label, boundary, direction, codec), points in sorted(series.items()):
        steps = [p[0] for p in points]
        name = f"{label} {boundary} {direction} {codec}" if len(runs) > 1 else f"{boundary} {direction} {codec}"
        style = "-" if direction == "fwd" else "--"
        ax_err.plot(steps, [p[1] for p in points], style, marker=".", label=name)
        ax_cos.plot(steps, [p[2] for p in points], style, marker=".", label=name)
    ax_err.set_xlabel("step")
    ax_err.set_ylabel("relative L2 error |decode(encode(x)) - x| / |x|")
    ax_err.set_yscale("log")
    ax_cos.set_xlabel("step")
    ax_cos.set_ylabel("cosine(decode(encode(x)), x)")
    ax_cos.legend(fontsize=7)
    fig.suptitle("codec error during training (fwd: activations, solid; bwd: gradients, dashed)", fontsize=9)
    return save(fig, out, "codec_error.png")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    runs = [(r, *load(r)) for r in args.runs]
    written = [plot_curves(runs, args.out), plot_accuracy_vs_ratio(runs, args.out),
               plot_accuracy_vs_time(runs, args.out), plot_codec_error(runs, args.out)]
    print("wrote " + ", ".join(f"{args.out}/{w}" for w in written if w))


if __name__ == "__main__":
    main()
