#!/usr/bin/env python3
"""Time to accuracy per codec over a real slow link, and the break-even bandwidth checked against it.

Trains one recipe (default: the demo, `dgpipe train --preset demo`) as a client and a server process under mpirun,
over a loopback that tc shapes to each bandwidth (scripts/slow_link.sh: needs root and iproute2), once per codec,
evaluating on the held-out set every --eval-every steps with the training wall-clock. Per codec it also trains a
short reference in one process without a link, whose compute, codec time and wire bytes `dgpipe break-even` turns
into predicted times per step and break-even bandwidths; the sweep compares them with the measured runs.

Writes, besides one log folder per run under --out:
  docs/img/time_to_accuracy.png       held-out accuracy against training wall-clock, one panel per bandwidth
  the "time-to-accuracy" section of docs/results.md (--results-md): per bandwidth and codec the final accuracy,
  the time to reach the target accuracy and the time per step; predicted against measured time per step; the
  break-even bandwidths and which side of them the measured runs fell on.

Resumable and safe to run in the background for hours (see bench/sweep.py):
  nohup python3 bench/time_to_accuracy.py > runs/time-to-accuracy.log 2>&1 &
  python3 bench/time_to_accuracy.py --report-only           # tables and plot from what has finished
  python3 bench/time_to_accuracy.py --quick --out /tmp/tta --results-md /tmp/results.md   # a tiny trial
"""
import argparse
import json
import os
import re
import shlex
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sweep  # noqa: E402

# The codecs of the comparison: 16 and 8 bits, 4 bits, sparse and low rank; error feedback (+ef) where the error
# is large enough for it to matter.
CODECS = ["none", "fp16", "uniform:8", "sortquant:6+2", "fastquant:6+2", "uniform:4", "uniform:4+ef",
          "sortquant:3+1", "sortquant:3+1+ef", "topk:0.1", "topk:0.1+ef", "power:4", "power:4+ef"]
BANDWIDTHS = ["1gbit", "100mbit", "20mbit"]


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(sweep.REPO, "runs", "time-to-accuracy"))
    ap.add_argument("--dgpipe", default=os.path.join(sweep.REPO, "build", "bin", "dgpipe"))
    ap.add_argument("--mpiexec", default="mpirun")
    ap.add_argument("--recipe", default="--preset demo",
                    help="dgpipe train arguments of the recipe (default: the make-run demo)")
    ap.add_argument("--codecs", default=",".join(CODECS))
    ap.add_argument("--bandwidths", default=",".join(BANDWIDTHS))
    ap.add_argument("--eval-every", type=int, default=50, help="held-out evaluation every N steps")
    ap.add_argument("--reference-steps", type=int, default=40,
                    help="steps of the one-process reference run per codec (break-even prediction)")
    ap.add_argument("--target", type=float, default=0.0,
                    help="accuracy whose time-to is tabled (default: 90%% of none's final accuracy on the "
                         "fastest link)")
    ap.add_argument("--results-md", default=os.path.join(sweep.REPO, "docs", "results.md"))
    ap.add_argument("--img", default=os.path.join(sweep.REPO, "docs", "img", "time_to_accuracy.png"))
    ap.add_argument("--quick", action="store_true",
                    help="a trial on tiny settings: 2 codecs, 1 bandwidth, a few steps")
    ap.add_argument("--report-only", action="store_true", help="write the tables and the plot, train nothing")
    ap.add_argument("--dry-run", action="store_true", help="print the commands, train nothing")
    args = ap.parse_args()
    if args.quick:
        args.recipe += " --train-subset 512 --eval-subset 128 --epochs 1 --workers 1"
        args.codecs = "none,sortquant:6+2"
        args.bandwidths = "20mbit"
        args.eval_every = 4
        args.reference_steps = 4
    return args


def slug(text):
    return text.replace(":", "").replace("+", "_").replace("/", "-").replace(";", "--").replace(",", "-")


def make_runs(args):
    recipe = shlex.split(args.recipe) + ["--log-every", "0"]
    runs = []
    for codec in args.codecs.split(","):
        runs.append(sweep.Run(f"reference-{slug(codec)}",
                              recipe + ["--compress", codec, "--max-steps", str(args.reference_steps)],
                              meta={"codec": codec, "kind": "reference"}))
        for bw in args.bandwidths.split(","):
            runs.append(sweep.Run(f"{bw}-{slug(codec)}",
                                  recipe + ["--compress", codec, "--eval-every", str(args.eval_every)], link=bw,
                                  meta={"codec": codec, "bandwidth": bw, "kind": "link"}))
    return runs


def time_to(evals, target):
    for e in evals:
        if e["eval_acc"] >= target:
            return e["run"]["train_seconds"]
    return None


def minutes(s):
    return "–" if s is None else f"{s / 60:.1f} min"


def break_even(args, out_dir, run):
    """dgpipe break-even's prediction for a reference run (its JSON), or None."""
    d = os.path.join(out_dir, run.name)
    if not os.path.exists(os.path.join(d, "summary.json")):
        return None
    out = subprocess.run([args.dgpipe, "break-even", d, "--bandwidths", args.bandwidths, "--format", "json"],
                         capture_output=True, text=True, cwd=sweep.REPO)
    return json.loads(out.stdout)[0] if out.returncode == 0 else None


def report(args, runs):
    codecs, bandwidths = args.codecs.split(","), args.bandwidths.split(",")
    results = {(r.meta["codec"], r.meta.get("bandwidth")): sweep.result_of(args.out, r) for r in runs}
    evals = {k: [m for m in v[1] if m.get("record") == "eval"] for k, v in results.items() if v}
    target = args.target
    if not target and results.get(("none", bandwidths[0])):
        target = 0.9 * results[("none", bandwidths[0])][0]["final_eval_acc"]
    per_step = {k: v[0]["train_seconds"] / max(1, v[0]["steps"]) for k, v in results.items() if v}
    rows = []
    for codec in codecs:
        row = [f"`{codec}`"]
        for bw in bandwidths:
            res = results.get((codec, bw))
            if not res:
                row.append("not run yet")
                continue
            row.append(f"{100 * res[0]['final_eval_acc']:.1f}% · {minutes(time_to(evals[(codec, bw)], target))}"
                       f" · {per_step[(codec, bw)]:.2f} s/step")
        rows.append(row)
    body = [sweep.provenance(sys.argv), "",
            f"Recipe: `dgpipe train {args.recipe}` with `--eval-every {args.eval_every}`, as a client and a server "
            "process under mpirun over a loopback shaped by `scripts/slow_link.sh` (tc tbf, rate only). Each cell: "
            f"final held-out accuracy · training wall-clock to reach {100 * target:.1f}% held-out accuracy "
            "(evaluation time excluded) · seconds per step.", "",
            sweep.markdown_table(["codec"] + [f"{bw}" for bw in bandwidths], rows), "",
            "![accuracy against wall-clock](img/time_to_accuracy.png)", ""]
    body += prediction_section(args, runs, codecs, bandwidths, per_step)
    sweep.write_section(args.results_md, "time-to-accuracy", "Time to accuracy over a real slow link", "\n".join(body))
    plot(args, codecs, bandwidths, evals)
    sweep.log(f"wrote the time-to-accuracy section of {args.results_md}")


def prediction_section(args, runs, codecs, bandwidths, per_step):
    """Predicted (dgpipe break-even on the one-process reference) against measured time per step."""
    rows = []
    for codec in codecs:
        ref = next(r for r in runs if r.meta["codec"] == codec and r.meta["kind"] == "reference")
        pred = break_even(args, args.out, ref)
        if not pred:
            rows.append([f"`{codec}`", "reference not run yet"] + [""] * len(bandwidths))
            continue
        be = pred["break_even_bits_per_s"]
        row = [f"`{codec}`", f"{be['overlapped'] / 1e6:.0f}–{be['serial'] / 1e6:.0f} Mbit/s"
               if codec != "none" else "–"]
        for bw in bandwidths:
            p = pred["predicted_s_per_step"][bw]["codec"]
            measured = per_step.get((codec, bw))
            m = f"{measured:.2f}" if measured else "?"
            against_none = ""
            if measured and codec != "none" and per_step.get(("none", bw)):
                against_none = "; " + verdict(bits_per_s(bw), be, measured < per_step[("none", bw)])
            row.append(f"{p['overlapped']:.2f}–{p['serial']:.2f} → {m}{against_none}")
        rows.append(row)
    return ["Predicted against measured seconds per step. The prediction is `dgpipe break-even` on a "
            f"{args.reference_steps}-step run of each codec in one process without a link: the range runs from "
            "transfers hidden behind compute to transfers not overlapped at all (apps/link_cost.h). The break-even "
            "bandwidth is the link speed below which the codec beats `none`; \"wins, predicted wins\" says the "
            "codec was faster per step than `none` on that link, as both models said (\"either\": the link lies "
            "between the two break-evens; ✗: the models were wrong).", "",
            sweep.markdown_table(["codec", "break-even"] + [f"{bw}: predicted → measured s/step" for bw in bandwidths],
                                 rows)]


def bits_per_s(text):
    m = re.match(r"([0-9.]+)(g|m|k)?bit$", text.lower())
    if not m:
        sys.exit(f"--bandwidths: '{text}' is not like 1gbit, 100mbit or 20mbit")
    return float(m.group(1)) * {"g": 1e9, "m": 1e6, "k": 1e3, None: 1}[m.group(2)]


def verdict(bits, be, wins):
    """Whether the codec beat none on this link, against what the two models predicted."""
    predicted = "wins" if bits < be["overlapped"] else "loses" if bits > be["serial"] else "either"
    measured = "wins" if wins else "loses"
    return f"{measured}, predicted {predicted}" + ("" if predicted in (measured, "either") else " ✗")


def plot(args, codecs, bandwidths, evals):
    plt = sweep.pyplot()
    if plt is None:
        return
    fig, axes = plt.subplots(1, len(bandwidths), figsize=(5 * len(bandwidths), 4), squeeze=False, sharey=True)
    for ax, bw in zip(axes[0], bandwidths):
        for codec in codecs:
            rows = evals.get((codec, bw))
            if rows:
                ax.plot([e["run"]["train_seconds"] / 60 for e in rows], [100 * e["eval_acc"] for e in rows],
                        marker=".", label=codec, linestyle="--" if codec.endswith("+ef") else "-")
        ax.set_title(f"over a {bw} link")
        ax.set_xlabel("training wall-clock (min)")
    axes[0][0].set_ylabel("held-out accuracy (%)")
    axes[0][-1].legend(fontsize=7)
    sweep.save_figure(fig, args.img)


def main():
    args = parse_args()
    runs = make_runs(args)
    if not args.report_only:
        if os.geteuid() != 0 and not args.dry_run:
            sys.exit("time_to_accuracy.py: the shaped link needs root (network namespaces and tc)")
        sweep.Sweep(args.out, args.dgpipe, args.mpiexec, args.dry_run).run_all(runs)
    if not args.dry_run:
        report(args, runs)


if __name__ == "__main__":
    main()
