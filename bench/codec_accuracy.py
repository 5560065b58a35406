#!/usr/bin/env python3
"""The codec accuracy table at CPU scale: one fixed recipe that trains in minutes here, every codec family at 8, 4
and 2 bits per element (or the sparsity / rank that costs as much), several seeds, and an ablation of sort
quantization at 8 and 4 bits (forward only, backward only, both, both with error feedback).

The recipe: ResNet18 at width 0.25 on 5,000 CIFAR-10 training images, 3 epochs, 3 stages client-server with 4
micro-batches (the demo's pipeline), held-out accuracy on 1,000 test images, one process (no link: accuracy does
not depend on the link). Top-k and low rank are set per boundary to the bits of the row: the demo's boundaries
carry [16,16,32,32] and [16,64,8,8] micro-batch tensors, so top-k keeps R = bits / (32 + 18 index bits) of the
values, and power iteration has rank 4/2/1 on the first boundary (16 x 1024 matrices: 2.03 bits per rank) and
8/4/2 on the second (64 x 64: 1 bit per rank). The achieved ratio is measured, not assumed.

Rows for newer codecs (group quantization, top-k then quantization, delta, learned bottlenecks) are run when
this build of dgpipe knows them, and listed as "not in this build" otherwise.

Writes one log folder per run under --out, docs/img/codec_accuracy.png (accuracy against achieved wire ratio,
mean and spread over the seeds) and the "codec-accuracy" section of docs/results.md. Resumable and safe to run in
the background for hours (bench/sweep.py):
  nohup python3 bench/codec_accuracy.py > runs/codec-accuracy.log 2>&1 &
  python3 bench/codec_accuracy.py --report-only
  python3 bench/codec_accuracy.py --quick --out /tmp/ca --results-md /tmp/results.md   # a tiny trial
"""
import argparse
import os
import shlex
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sweep  # noqa: E402

RECIPE = ("--preset demo --train-subset 5000 --eval-subset 1000 --epochs 3 --log-every 0 "
          "--codec-error-every 20")

# (group, label, dgpipe train arguments). A spec for both directions unless it says fwd=/bwd=.
def families():
    rows = [("baseline", "none", "none"), ("baseline", "fp16", "fp16")]
    for bits, q, sq, km, topk, ranks in [(8, 8, "6+2", 8, 0.16, "4;power:8"), (4, 4, "3+1", 4, 0.08, "2;power:4"),
                                         (2, 2, "1+1", 2, 0.04, "1;power:2")]:
        rows += [(f"{bits} bits", f"uniform:{q}", f"uniform:{q}"),
                 (f"{bits} bits", f"sortquant:{sq}", f"sortquant:{sq}"),
                 (f"{bits} bits", f"fastquant:{sq}", f"fastquant:{sq}"),
                 (f"{bits} bits", f"kmeans:{km}", f"kmeans:{km}"),
                 (f"{bits} bits", f"topk:{topk}", f"topk:{topk}"),
                 (f"{bits} bits", f"power:{ranks}", f"power:{ranks}")]
    for sq in ("6+2", "3+1"):
        spec = f"sortquant:{sq}"
        rows += [("ablation", f"{spec} fwd only", f"fwd={spec},bwd=none"),
                 ("ablation", f"{spec} bwd only", f"fwd=none,bwd={spec}"),
                 ("ablation", f"{spec} + error feedback", f"{spec}+ef")]
    return [(g, label, ["--compress", spec]) for g, label, spec in rows]


# Newer codecs: (group, label, train arguments, what this build must accept for the row to run).
def newer_codecs():
    return [("new", "uniform:8/channel", ["--compress", "uniform:8/channel"], ("codec", "uniform:8/channel")),
            ("new", "uniform:4/channel", ["--compress", "uniform:4/channel"], ("codec", "uniform:4/channel")),
            ("new", "uniform:2/channel", ["--compress", "uniform:2/channel"], ("codec", "uniform:2/channel")),
            ("new", "topk:0.25>uniform:8", ["--compress", "topk:0.25>uniform:8"], ("codec", "topk:0.25>uniform:8")),
            ("new", "delta>uniform:4 (fwd)", ["--compress", "fwd=delta>uniform:4,bwd=uniform:4"],
             ("codec", "delta>uniform:4")),
            ("new", "delta>uniform:2 (fwd)", ["--compress", "fwd=delta>uniform:2,bwd=uniform:2"],
             ("codec", "delta>uniform:2")),
            ("new", "bottleneck conv:4", ["--bottleneck", "conv:4"], ("flag", "--bottleneck"))]


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(sweep.REPO, "runs", "codec-accuracy"))
    ap.add_argument("--dgpipe", default=os.path.join(sweep.REPO, "build", "bin", "dgpipe"))
    ap.add_argument("--recipe", default=RECIPE, help="dgpipe train arguments shared by every run")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--only", default="",
                    help="comma-separated labels to run (default: every row); the report covers every row")
    ap.add_argument("--results-md", default=os.path.join(sweep.REPO, "docs", "results.md"))
    ap.add_argument("--img", default=os.path.join(sweep.REPO, "docs", "img", "codec_accuracy.png"))
    ap.add_argument("--quick", action="store_true", help="a trial on tiny settings: 3 rows, 2 seeds, 8 steps")
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--dry-run", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.recipe = ("--preset demo --train-subset 512 --eval-subset 128 --epochs 1 --log-every 0 --workers 1 "
                       "--codec-error-every 4")
        args.seeds = "0,1"
        args.only = args.only or "none,sortquant:6+2,sortquant:3+1 fwd only"
    return args


def slug(text):
    return "".join(c if c.isalnum() or c in ".-" else "_" for c in text)


def rows_of(args):
    """(group, label, args, available) for every row, newer codecs probed against this build."""
    rows = [(g, label, a, True) for g, label, a in families()]
    for g, label, a, (kind, what) in newer_codecs():
        ok = sweep.accepts_codec(args.dgpipe, what) if kind == "codec" else sweep.train_accepts(args.dgpipe, what)
        rows.append((g, label, a, ok))
    return rows


def rows_to_run(args, rows):
    """The rows --only names (every row without it). The report always covers every row: a run of a few rows
    must not drop the others' results from the table."""
    if not args.only:
        return rows
    wanted = set(args.only.split(","))
    unknown = wanted - {r[1] for r in rows}
    if unknown:
        sys.exit(f"codec_accuracy.py: --only names no row {sorted(unknown)}; rows: {[r[1] for r in rows]}")
    return [r for r in rows if r[1] in wanted]


def make_runs(args, rows):
    runs = []
    for group, label, extra, available in rows:
        if not available:
            continue
        for seed in args.seeds.split(","):
            runs.append(sweep.Run(f"{slug(label)}-seed{seed}", shlex.split(args.recipe) + extra + ["--seed", seed],
                                  meta={"label": label, "group": group, "seed": seed}))
    return runs


def spread(values):
    """mean ± half the range, in percent."""
    mean = statistics.mean(values)
    return f"{100 * mean:.1f} ± {100 * (max(values) - min(values)) / 2:.1f}"


def codec_error_means(records):
    """{(boundary, direction): mean relative L2 error} over a run's codec_error records."""
    sums = {}
    for rec in records:
        if rec.get("record") != "codec_error":
            continue
        for b in rec["boundaries"]:
            key = (b["boundary"], b["direction"])
            total, count = sums.get(key, (0.0, 0))
            sums[key] = (total + b["rel_l2"], count + 1)
    return {k: total / count for k, (total, count) in sums.items()}


def codec_error_table(rows, results_by_label):
    """The mean relative L2 error of what each boundary's receiver decodes, per boundary and direction, over the
    run and the seeds, for every row that compresses a boundary: which boundary and direction a codec hurts most."""
    keys, table = [], []
    for group, label, _, _ in rows:
        if label == "none" or not results_by_label.get(label):
            continue
        per_run = [codec_error_means(res[1]) for res in results_by_label[label]]
        if not any(per_run):
            continue  # no codec on the boundaries (a learned bottleneck's own layers)
        merged = {}
        for means in per_run:
            for k, v in means.items():
                merged.setdefault(k, []).append(v)
        for k in sorted(merged):
            if k not in keys:
                keys.append(k)
        table.append((label, {k: statistics.mean(v) for k, v in merged.items()}))
    keys.sort()
    return (["codec"] + [f"{b} {d}" for b, d in keys],
            [[f"`{label}`"] + [f"{100 * m[k]:.2f}%" if k in m else "–" for k in keys] for label, m in table])


def report(args, rows, runs):
    table, points, results_by_label = [], [], {}
    for group, label, extra, available in rows:
        results = [sweep.result_of(args.out, r) for r in runs if r.meta["label"] == label]
        done = [res[0] for res in results if res]
        results_by_label[label] = [res for res in results if res]
        if not available:
            table.append([group, f"`{label}`", "not in this build", "", "", ""])
            continue
        if not done:
            table.append([group, f"`{label}`", "not run yet", "", "", ""])
            continue
        accs = [s["final_eval_acc"] for s in done]
        ratio = statistics.mean(s["compression_ratio"] for s in done)
        table.append([group, f"`{label}`", f"{spread(accs)}%", f"{ratio:.4f} ({32 * ratio:.2f} bits)",
                      f"{len(done)}", " ".join(f"{100 * a:.1f}" for a in accs)])
        points.append((label, group, ratio, accs))
    body = [sweep.provenance(sys.argv), "",
            f"Recipe: `dgpipe train {args.recipe} --compress SPEC --seed S` in one process, seeds {args.seeds}. "
            "Accuracy: final held-out accuracy, mean ± half the range over the seeds. Wire ratio: wire bytes / f32 "
            "bytes over both directions and both boundaries, as sent (headers and statistics included); bits = "
            "32 x ratio. Top-k and low rank are sized per boundary to the row's bits (see the script). The "
            "ablation's \"both directions\" rows are the sort quantization rows of the 8- and 4-bit groups.", "",
            sweep.markdown_table(["group", "codec", "accuracy (%)", "wire ratio", "seeds", "per seed (%)"], table),
            "", "![accuracy against wire ratio](img/codec_accuracy.png)", "",
            "Codec error during training (`--codec-error-every 20`): the relative L2 error of what each boundary's "
            "receiver decodes against what its sender encoded, mean over the run's samples and the seeds, per "
            "boundary (0->1: client to server, 1->2: server to the client's last stage) and direction. A direction "
            "a row does not compress shows 0.00%.", "",
            sweep.markdown_table(*codec_error_table(rows, results_by_label))]
    sweep.write_section(args.results_md, "codec-accuracy", "Codec accuracy at CPU scale", "\n".join(body))
    plot(args, points)
    sweep.log(f"wrote the codec-accuracy section of {args.results_md}")


def plot(args, points):
    plt = sweep.pyplot()
    if plt is None or not points:
        return
    fig, ax = plt.subplots(figsize=(8, 5))
    for label, group, ratio, accs in points:
        mean = 100 * statistics.mean(accs)
        ax.errorbar([ratio], [mean], yerr=[[mean - 100 * min(accs)], [100 * max(accs) - mean]], fmt="o",
                    capsize=3, color={"baseline": "black", "ablation": "tab:gray", "new": "tab:red"}.get(group))
        ax.annotate(label, (ratio, mean), fontsize=6, xytext=(4, 2), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("achieved wire ratio (wire bytes / f32 bytes)")
    ax.set_ylabel("final held-out accuracy (%)")
    ax.set_title("codecs at CPU scale (mean and range over seeds)", fontsize=9)
    sweep.save_figure(fig, args.img)


def main():
    args = parse_args()
    rows = rows_of(args)
    if not args.report_only:
        sweep.Sweep(args.out, args.dgpipe, dry_run=args.dry_run).run_all(make_runs(args, rows_to_run(args, rows)))
    if not args.dry_run:
        report(args, rows, make_runs(args, rows))


if __name__ == "__main__":
    main()
