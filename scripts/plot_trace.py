#!/usr/bin/env python3
"""Draws a pipeline trace (the Chrome/Perfetto JSON written by `dgpipe train --trace FILE`) as a Gantt chart:
one row per stage, one box per instruction, coloured by kind, micro-batch number inside. Used for docs/pipeline.md.

usage: scripts/plot_trace.py TRACE.json OUT.png [--step N] [--title TEXT]
"""
import argparse
import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

COLOURS = {
    "Forward": "#4c72b0", "Backward": "#dd8452", "SendAct": "#55a868", "RecvAct": "#c7e9c0",
    "SendGrad": "#c44e52", "RecvGrad": "#f4c7c3", "OptimizerStep": "#8172b3",
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("trace")
    ap.add_argument("out")
    ap.add_argument("--step", type=int, default=-1, help="draw only the N-th OptimizerStep window (default: all)")
    ap.add_argument("--title", default="")
    args = ap.parse_args()
    events = json.load(open(args.trace))["traceEvents"]
    if not events:
        raise SystemExit(f"{args.trace}: no events")
    if args.step >= 0:
        # keep the events between the (step)-th and (step+1)-th optimizer step of stage 0
        ends = sorted(e["ts"] + e["dur"] for e in events if e["name"] == "OptimizerStep" and e["tid"] == 0)
        lo = ends[args.step - 1] if args.step > 0 else 0
        hi = ends[args.step]
        events = [e for e in events if e["ts"] >= lo - 1 and e["ts"] < hi]
    t0 = min(e["ts"] for e in events)
    stages = sorted({e["tid"] for e in events})
    fig, ax = plt.subplots(figsize=(12, 0.6 * len(stages) + 1.4))
    for e in events:
        kind, _, mb = e["name"].partition(" ")
        y = stages.index(e["tid"])
        start, dur = (e["ts"] - t0) / 1000.0, e["dur"] / 1000.0
        ax.barh(y, max(dur, 0.05), left=start, height=0.7, color=COLOURS.get(kind, "#999999"), edgecolor="black",
                linewidth=0.3)
        if mb and kind in ("Forward", "Backward") and dur > 0:
            ax.text(start + dur / 2, y, mb, ha="center", va="center", fontsize=7, color="white")
    ax.set_yticks(range(len(stages)))
    ax.set_yticklabels([f"stage {s}" for s in stages])
    ax.invert_yaxis()
    ax.set_xlabel("time (ms)")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in COLOURS.values()]
    ax.legend(handles, COLOURS.keys(), ncol=7, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.25))
    if args.title:
        ax.set_title(args.title, fontsize=9)
    fig.tight_layout()
    fig.savefig(args.out, dpi=130)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
