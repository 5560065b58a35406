"""What the experiment sweeps (bench/time_to_accuracy.py, bench/codec_accuracy.py) share: running `dgpipe train`
runs resumably, reading their results, and writing a section of docs/results.md that the sweep owns.

A sweep is a list of runs, each with its own log folder under the sweep's output folder. A run whose folder holds
summary.json is done and skipped; one that holds a checkpoint (killed part-way) continues with --resume, which
keeps its step count, traffic and wall-clock whole (dgpipe train counts every segment); a run that failed is
tried again on the next invocation. So a sweep can be stopped (SIGINT/SIGTERM, or killed) and started again at
any time, and run for hours in the background:

    nohup python3 bench/codec_accuracy.py > runs/codec-accuracy.log 2>&1 &
"""
import datetime
import fcntl
import json
import os
import platform
import re
import shlex
import signal
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Run:
    """One `dgpipe train` run: a name (its folder), its arguments, and where it trains: in one process (link None),
    or as client and server processes under mpirun over a real link shaped to `link` (scripts/slow_link.sh)."""

    def __init__(self, name, args, link=None, meta=None):
        self.name, self.args, self.link, self.meta = name, list(args), link, dict(meta or {})

    def command(self, dgpipe, mpiexec, log_dir, resume):
        train = [dgpipe, "train", *self.args, "--log-dir", log_dir] + (["--resume"] if resume else [])
        if self.link is None:
            return train
        return [os.path.join(REPO, "scripts", "slow_link.sh"), "--rate", self.link, "--",
                mpiexec, "--allow-run-as-root", "--oversubscribe", "--bind-to", "none",
                "--mca", "btl", "tcp,self", "--mca", "btl_tcp_if_include", "lo", "-np", "2",
                *train, "--channel", "mpi"]


def load_jsonl(path):
    rows = []
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line:
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError:
                        pass  # a line cut short by a kill
    return rows


def result_of(out_dir, run):
    """(summary, metrics records) of a finished run, or None."""
    d = os.path.join(out_dir, run.name)
    path = os.path.join(d, "summary.json")
    if not os.path.exists(path):
        return None
    return json.load(open(path)), load_jsonl(os.path.join(d, "metrics.jsonl"))


class Sweep:
    """Runs a list of Runs one after the other, skipping finished ones; one sweep per output folder at a time."""

    def __init__(self, out_dir, dgpipe, mpiexec="mpirun", dry_run=False):
        self.out_dir, self.dgpipe, self.mpiexec, self.dry_run = out_dir, dgpipe, mpiexec, dry_run
        os.makedirs(out_dir, exist_ok=True)
        self.lock = open(os.path.join(out_dir, ".sweep.lock"), "w")
        try:
            fcntl.flock(self.lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            sys.exit(f"{out_dir}: another sweep is running there (it holds {out_dir}/.sweep.lock)")
        self.child = None
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._stop)

    def _stop(self, signum, frame):
        if self.child and self.child.poll() is None:
            self.child.send_signal(signal.SIGTERM)  # slow_link.sh passes it on to mpirun and the ranks
            try:
                self.child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.child.kill()
        log(f"stopped by signal {signum}; run the same command again to continue")
        sys.exit(128 + signum)

    def run_all(self, runs):
        for i, run in enumerate(runs, 1):
            self.run_one(run, f"[{i}/{len(runs)}]")

    def run_one(self, run, progress=""):
        d = os.path.join(self.out_dir, run.name)
        if os.path.exists(os.path.join(d, "summary.json")):
            return True
        resume = os.path.exists(os.path.join(d, "checkpoint.safetensors"))
        cmd = run.command(self.dgpipe, self.mpiexec, d, resume)
        log(f"{progress} {run.name}: {'resuming' if resume else 'starting'}"
            + (f" over a {run.link} link" if run.link else ""))
        if self.dry_run:
            print("  " + shlex.join(cmd))
            return False
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "command.txt"), "a") as f:
            f.write(shlex.join(cmd) + "\n")
        start = time.time()
        with open(os.path.join(d, "train.log"), "a") as out:
            self.child = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
            rc = self.child.wait()
            self.child = None
        if rc != 0 or not os.path.exists(os.path.join(d, "summary.json")):
            tail = open(os.path.join(d, "train.log")).read().splitlines()[-5:]
            log(f"{progress} {run.name}: FAILED (exit {rc}); it is tried again next time. Last lines:\n    "
                + "\n    ".join(tail))
            return False
        log(f"{progress} {run.name}: done in {time.time() - start:.0f}s")
        return True


def log(text):
    print(f"{datetime.datetime.now():%H:%M:%S} {text}", flush=True)


def machine_description():
    cpu = platform.processor() or "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    text = f"{os.cpu_count()} cores of {cpu}, {platform.system()} {platform.release()}"
    try:
        gpus = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10).stdout.strip()
        if gpus:
            text += "; " + "; ".join(gpus.splitlines())
    except (OSError, subprocess.TimeoutExpired):
        text += "; no GPU"
    return text


def write_section(results_md, key, title, body):
    """Replaces the section between <!-- BEGIN key --> and <!-- END key --> of results_md (or appends it)."""
    begin, end = f"<!-- BEGIN {key} (written by a script: edits are overwritten) -->", f"<!-- END {key} -->"
    block = f"{begin}\n## {title}\n\n{body.rstrip()}\n{end}\n"
    text = open(results_md).read() if os.path.exists(results_md) else "# Measured results\n"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end) + r"\n?", re.S)
    text = pattern.sub(lambda m: block, text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + block
    with open(results_md, "w") as f:
        f.write(text)


def provenance(argv):
    """The line every written section starts with: when, where, with which command."""
    return (f"Written {datetime.datetime.now():%Y-%m-%d %H:%M} on {machine_description()} by "
            f"`{shlex.join(['python3', os.path.relpath(argv[0], REPO), *argv[1:]])}`.")


def markdown_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def accepts_codec(dgpipe, spec):
    """Whether this build of dgpipe knows a codec spec (composed and newer codecs may not exist yet)."""
    return subprocess.run([dgpipe, "codec", "--synthetic", "normal", "--shape", "2,4,4,4", "--codecs", spec],
                          capture_output=True, cwd=REPO).returncode == 0


def train_accepts(dgpipe, flag):
    """Whether this build's dgpipe train has a flag."""
    text = subprocess.run([dgpipe, "train", "--help"], capture_output=True, text=True, cwd=REPO).stdout
    return flag in text


def save_figure(fig, path):
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    log(f"wrote {path}")


def pyplot():
    """matplotlib's pyplot, or None (the tables are written without it)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        return plt
    except ImportError:
        log("matplotlib is not installed: no plot (pip install matplotlib)")
        return None
