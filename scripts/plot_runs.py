#!/usr/bin/env python3
"""Plots `dgpipe train` runs from their log dirs (metrics.jsonl + summary.json):

  curves.png            training loss and held-out accuracy per epoch, one line per run
  accuracy_vs_ratio.png final held-out accuracy (or MCC for CoLA) against the compression ratio the
                        boundaries achieved (wire bytes / f32 bytes), one point per run, labelled by codec

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
    metrics_path = os.path.join(run, "metrics.jsonl")
    if not os.path.exists(metrics_path):
        sys.exit(f"{run}: no metrics.jsonl (is it a dgpipe train --log-dir?)")
    rows = []
    with open(metrics_path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                sys.exit(f"{metrics_path}:{n}: not JSON ({e})")
    summary = {}
    if os.path.exists(os.path.join(run, "summary.json")):
        summary = json.load(open(os.path.join(run, "summary.json")))
    config = {}
    if os.path.exists(os.path.join(run, "config.json")):
        config = json.load(open(os.path.join(run, "config.json")))
    return rows, summary, config


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    runs = [(r, *load(r)) for r in args.runs]

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    for run, rows, summary, config in runs:
        label = f"{os.path.basename(os.path.normpath(run))} ({config.get('compress', '?')})"
        epochs = [r["epoch"] + 1 for r in rows]
        ax_loss.plot(epochs, [r["train_loss"] for r in rows], marker="o", label=label)
        metric = "eval_mcc" if config.get("dataset") == "cola" else "eval_acc"
        ax_acc.plot(epochs, [100 * r[metric] for r in rows], marker="o", label=label)
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("training loss")
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("held-out accuracy (%) / MCC x100 for CoLA")
    ax_acc.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "curves.png"), dpi=120)

    fig, ax = plt.subplots(figsize=(6, 4))
    for run, rows, summary, config in runs:
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
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "accuracy_vs_ratio.png"), dpi=120)
    print(f"wrote {args.out}/curves.png and {args.out}/accuracy_vs_ratio.png")


if __name__ == "__main__":
    main()
