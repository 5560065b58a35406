#!/usr/bin/env python3
"""Side by side: one full training step of dgpipe (bench/train_step_bench) and of PyTorch, same model, same inputs,
same thread count, in one run.

A training step is forward, cross-entropy, backward and SGD (Nesterov momentum 0.9, weight decay 5e-4), fp32, in
training mode (batch norm batch statistics, dropout on). Models: ResNet18 at width 0.25 and 1.0, MobileNetV2,
VGG11-BN (CIFAR geometry, batch 64, 32x32) and the BERT encoder at MiniLM-L6 size (hidden 384, 6 layers, 12 heads,
intermediate 1536; batch 32, sequence 128). PyTorch runs the definitions of scripts/goldens_models.py (torchvision
module names, the networks dgpipe's goldens are checked against) and transformers' BertForSequenceClassification
with its default attention. Both sides read the same input batch, written here to a safetensors file.

On the CPU each model runs at 1 thread and at all cores (torch.set_num_threads(n); train_step_bench --threads n),
plus the pipelined case: the `make run` pipeline (ResNet18 w0.25, 3 stages as threads in the client-server layout,
4 micro-batches, its codec uniform:8 on every boundary, and again with no codec) against the best single-stage figure.
On a GPU (--device cuda) PyTorch is timed with CUDA events and dgpipe runs with --device cuda:0 (one thread count).

Every cell is the best of --repeat runs (each run: the median of --steps timed steps after --warmup), dgpipe and
PyTorch interleaved so that both see the same load.

  python3 bench/train_step_vs_pytorch.py --device cpu                    # prints the markdown table
  python3 bench/train_step_vs_pytorch.py --device cpu --write-results    # and replaces its section of docs/results.md
  python3 bench/train_step_vs_pytorch.py --device cuda --bin build/bench/train_step_bench
"""
import argparse
import datetime
import json
import os
import platform
import shlex
import struct
import subprocess
import sys
import tempfile
import textwrap
import time

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
SECTION_BEGIN = "<!-- train_step_vs_pytorch: begin (written by bench/train_step_vs_pytorch.py) -->"
SECTION_END = "<!-- train_step_vs_pytorch: end -->"

# name -> (registry model, width, batch, text)
MODELS = {
    "resnet18-w0.25": ("resnet18", 0.25, 64, False),
    "resnet18": ("resnet18", 1.0, 64, False),
    "mobilenetv2": ("mobilenetv2", 1.0, 64, False),
    "vgg11-bn": ("vgg11", 1.0, 64, False),
    "bert-minilm": ("bert", 1.0, 32, True),
}
SEQ_LEN = 128
NUM_CLASSES = {False: 10, True: 2}
PIPELINE_MODEL = "resnet18-w0.25"  # what `make run` trains
PIPELINE_ARGS = ["--stages", "3", "--placement", "client-server", "--micro-batches", "4"]


# ---------------------------------------------------------------- PyTorch side
def torch_model(torch, name):
    model, width, _, text = MODELS[name]
    if text:
        from transformers import BertConfig, BertForSequenceClassification
        cfg = BertConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                         intermediate_size=1536, max_position_embeddings=512, type_vocab_size=2, pad_token_id=0,
                         layer_norm_eps=1e-12, num_labels=2)
        return BertForSequenceClassification(cfg)
    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    import goldens_models as gm
    scaled = lambda c: max(4, round(c * width))  # models/registry.cpp's rule for ResNet18 and VGG11
    if model == "resnet18":
        return gm.ResNet18(10, cifar=True, base_width=scaled(64))
    if model == "mobilenetv2":
        return gm.MobileNetV2(10, cifar=True, width_mult=width)
    return gm.VGG11BN(10, cifar=True, layers=[v if v == "M" else scaled(v) for v in gm.VGG11_LAYERS])


def make_inputs(torch, name):
    _, _, batch, text = MODELS[name]
    gen = torch.Generator().manual_seed(1234)
    if text:  # ids >= 1000: no padding, no special tokens (as train_step_bench draws them)
        x = torch.randint(1000, 30000, (batch, SEQ_LEN), generator=gen)
    else:
        x = torch.randn(batch, 3, 32, 32, generator=gen)
    y = torch.randint(0, NUM_CLASSES[text], (batch,), generator=gen)
    return x, y


class TorchStep:
    """One training step of a PyTorch model, timed per call."""

    def __init__(self, torch, name, x, y, device):
        self.torch, self.device, self.text = torch, device, MODELS[name][3]
        torch.manual_seed(1)
        self.model = torch_model(torch, name).to(device).train()
        self.x, self.y = x.to(device), y.to(device)
        self.mask = torch.ones_like(self.x) if self.text else None
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9, nesterov=True,
                                   weight_decay=5e-4)

    def __call__(self):
        F = self.torch.nn.functional
        if self.text:
            logits = self.model(input_ids=self.x, attention_mask=self.mask).logits
        else:
            logits = self.model(self.x)
        loss = F.cross_entropy(logits, self.y)
        loss.backward()
        self.opt.step()
        self.opt.zero_grad()
        return loss

    def time_steps(self, warmup, steps):
        """Median wall seconds and median process CPU seconds per step."""
        torch = self.torch
        for _ in range(warmup):
            self()
        times, cpu = [], []
        if self.device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            for _ in range(steps):
                start.record()
                self()
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end) * 1e-3)
        else:
            for _ in range(steps):
                t0, c0 = time.perf_counter(), time.process_time()
                self()
                times.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
        median = lambda v: sorted(v)[len(v) // 2] if v else 0.0
        return median(times), median(cpu)


# ---------------------------------------------------------------- dgpipe side
def write_safetensors(path, tensors):
    """A safetensors file of contiguous CPU tensors (the format is a JSON header and the raw bytes)."""
    dtypes = {"torch.float32": "F32", "torch.int64": "I64"}
    header, blobs, offset = {}, [], 0
    for key, t in tensors.items():
        data = t.contiguous().numpy().tobytes()
        header[key] = {"dtype": dtypes[str(t.dtype)], "shape": list(t.shape),
                       "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(head)) + head + b"".join(blobs))


def run_dgpipe(opts, name, inputs_path, threads, extra=()):
    model, width, _, _ = MODELS[name]
    cmd = [opts.bin, "--model", model, "--width", str(width), "--inputs", inputs_path, "--threads", str(threads),
           "--warmup", str(opts.warmup), "--steps", str(opts.steps),
           "--device", "cuda:0" if opts.device == "cuda" else "cpu", *extra]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


# ---------------------------------------------------------------- measurement
def measure(opts, torch):
    """Returns rows {name, threads, dgpipe, torch, dgpipe_passes} of samples/s (best of the repeats)."""
    rows, tmp = [], tempfile.mkdtemp(prefix="train_step_vs_pytorch.")
    for name in opts.models:
        x, y = make_inputs(torch, name)
        inputs_path = os.path.join(tmp, name + ".safetensors")
        write_safetensors(inputs_path, {"input": x, "labels": y})
        batch = x.shape[0]
        for threads in opts.thread_counts:
            if opts.device == "cpu":
                torch.set_num_threads(threads)
            step = TorchStep(torch, name, x, y, opts.device)
            best_d, best_t, passes, cpu_d, cpu_t = 0.0, 0.0, {}, float("inf"), float("inf")
            for _ in range(opts.repeat):
                d = run_dgpipe(opts, name, inputs_path, threads)
                if d["samples_per_s"] > best_d:
                    best_d, passes = d["samples_per_s"], d.get("pass_ms", {})
                cpu_d = min(cpu_d, d.get("cpu_ms_per_step", float("inf")))
                wall, cpu = step.time_steps(opts.warmup, opts.steps)
                best_t, cpu_t = max(best_t, batch / wall), min(cpu_t, cpu * 1e3)
            del step
            rows.append({"name": name, "threads": threads, "dgpipe": best_d, "torch": best_t, "passes": passes,
                         "dgpipe_cpu_ms": cpu_d, "torch_cpu_ms": cpu_t})
            print(f"  {name:16s} {threads} thread(s): dgpipe {best_d:7.1f}  PyTorch {best_t:7.1f} samples/s",
                  file=sys.stderr, flush=True)
    pipelined = []
    if not opts.no_pipeline and PIPELINE_MODEL in opts.models:
        inputs_path = os.path.join(tmp, PIPELINE_MODEL + ".safetensors")
        for codec in ["uniform:8", "none"]:  # the make-run codec (README), and none
            runs = [run_dgpipe(opts, PIPELINE_MODEL, inputs_path, 1, PIPELINE_ARGS + ["--compress", codec])
                    for _ in range(opts.repeat)]
            best = max(r["samples_per_s"] for r in runs)
            pipelined.append({"codec": codec, "dgpipe": best, "cpu_ms": min(r["cpu_ms_per_step"] for r in runs)})
            print(f"  pipelined ({codec}): dgpipe {best:7.1f} samples/s", file=sys.stderr, flush=True)
    return rows, pipelined


# ---------------------------------------------------------------- report
def keep_best(rows, pipelined, earlier):
    """Merges an earlier run's figures into this run's: per cell (and per side) the higher samples/s."""
    old = {(r["name"], r["threads"]): r for r in earlier.get("rows", [])}
    for r in rows:
        e = old.get((r["name"], r["threads"]))
        if e is None:
            continue
        if e["dgpipe"] > r["dgpipe"]:
            r["dgpipe"], r["passes"] = e["dgpipe"], e["passes"]
        r["torch"] = max(r["torch"], e["torch"])
        for k in ("dgpipe_cpu_ms", "torch_cpu_ms"):
            r[k] = min(r[k], e.get(k, float("inf")))
    old_p = {p["codec"]: p for p in earlier.get("pipelined", [])}
    for p in pipelined:
        if p["codec"] in old_p:
            p["dgpipe"] = max(p["dgpipe"], old_p[p["codec"]]["dgpipe"])
            p["cpu_ms"] = min(p["cpu_ms"], old_p[p["codec"]].get("cpu_ms", float("inf")))
    return rows, pipelined


def cpu_model():
    """The model name of /proc/cpuinfo, with family and model numbers when the name is as vague as "AMD EPYC"."""
    fields = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        return platform.processor() or "unknown CPU"
    name = fields.get("model name", "unknown CPU")
    return f"{name} (family {fields.get('cpu family', '?')}, model {fields.get('model', '?')})"


def table(opts, rows, pipelined):
    label = lambda t: "1 thread" if t == 1 else f"{t} threads"
    lines = ["| model | threads | dgpipe samples/s | PyTorch samples/s | dgpipe / PyTorch "
             "| CPU ms per step, dgpipe / PyTorch | dgpipe forward / backward / optimizer ms |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        p = r["passes"]
        split = " / ".join(f"{p[k]:.0f}" for k in ("forward", "backward", "optimizer")) if p else ""
        cpu = f"{r['dgpipe_cpu_ms']:.0f} / {r['torch_cpu_ms']:.0f}" if opts.device == "cpu" else ""
        lines.append(f"| {r['name']} | {label(r['threads'])} | {r['dgpipe']:.1f} | {r['torch']:.1f} | "
                     f"{r['dgpipe'] / r['torch']:.2f} | {cpu} | {split} |")
    if pipelined:
        single = [r for r in rows if r["name"] == PIPELINE_MODEL]
        best_d = max(r["dgpipe"] for r in single)
        best_t = max(r["torch"] for r in single)
        lines += ["", textwrap.fill(f"The `make run` pipeline ({PIPELINE_MODEL}, 3 stages as threads of one process "
                                    "in the client-server layout, 4 micro-batches of 16, GPipe, one BLAS thread per "
                                    "stage) against the best single-stage figures above:", 116,
                                    break_on_hyphens=False), "",
                  "| boundary codec | dgpipe pipelined samples/s | / dgpipe best single-stage | "
                  "/ PyTorch best single-stage | CPU ms per step |", "|---|---|---|---|---|"]
        for p in pipelined:
            lines.append(f"| {p['codec']} | {p['dgpipe']:.1f} | {p['dgpipe'] / best_d:.2f} | "
                         f"{p['dgpipe'] / best_t:.2f} | {p['cpu_ms']:.0f} |")
    return "\n".join(lines)


def section(opts, torch, text, load_before, load_after, argv):
    if opts.device == "cuda":
        where = f"GPU {torch.cuda.get_device_name(0)}"
    else:
        where = f"CPU {cpu_model()}, {os.cpu_count()} cores"
    merged = f", over {opts.runs} invocations merged with --best-of" if opts.runs > 1 else ""
    fill = lambda t: textwrap.fill(t, 116, break_on_hyphens=False)
    return "\n".join([
        SECTION_BEGIN,
        f"## One training step, dgpipe against PyTorch ({opts.device.upper()}), {datetime.date.today().isoformat()}",
        "",
        fill(f"{where}; PyTorch {torch.__version__}; load average {load_before:.2f} before, {load_after:.2f} after "
             "the run. This machine is shared with other builds, so the figures are lower bounds: each is the best "
             f"of {opts.repeat} runs of the median of {opts.steps} steps after {opts.warmup} warm-up steps{merged}, "
             "dgpipe and PyTorch interleaved. Command:"),
        "",
        "```sh",
        "python3 bench/train_step_vs_pytorch.py " + " ".join(shlex.quote(a) for a in argv),
        "```",
        "",
        fill("A step is forward, cross-entropy, backward and SGD (Nesterov momentum 0.9, weight decay 5e-4), fp32, in "
             f"training mode; batch 64 of 32×32 images; BERT at MiniLM-L6 size, batch 32 × {SEQ_LEN} tokens. "
             "PyTorch runs the same networks (scripts/goldens_models.py; transformers' BERT with its default "
             "attention) after torch.set_num_threads(N); dgpipe runs `build/bench/train_step_bench --threads N`, "
             "which sets the engine's op threads (engine/parallel.h; OpenBLAS stays at one thread per op thread). "
             "Samples/s are wall-clock; the CPU column is the process "
             "CPU time per step (all threads, the lowest of the repeats): at 1 thread it is what a step costs "
             "whatever the other processes do, at more threads it includes the time threads spend spinning. The "
             "forward / backward / optimizer split is dgpipe's (wall)."),
        "",
        text,
        SECTION_END,
    ])


def write_results(path, text):
    with open(path) as f:
        doc = f.read()
    if SECTION_BEGIN in doc and SECTION_END in doc:
        head, rest = doc.split(SECTION_BEGIN, 1)
        doc = head + text + rest.split(SECTION_END, 1)[1]
    else:  # first time: before the original's results (the last section), else at the end
        marker = "## The original's results to reproduce"
        if marker in doc:
            doc = doc.replace(marker, text + "\n\n" + marker, 1)
        else:
            doc = doc.rstrip("\n") + "\n\n" + text + "\n"
    with open(path, "w") as f:
        f.write(doc)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "bench", "train_step_bench"),
                    help="the train_step_bench executable (default: build/bench/train_step_bench)")
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated, from: " + ", ".join(MODELS))
    ap.add_argument("--threads", default="1,all", help="thread counts on the CPU ('all' = every core)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-pipeline", action="store_true", help="skip the pipelined rows")
    ap.add_argument("--write-results", action="store_true", help="replace this script's section of docs/results.md")
    ap.add_argument("--results", default=os.path.join(ROOT, "docs", "results.md"))
    ap.add_argument("--json-out", help="also write the raw figures here")
    ap.add_argument("--best-of", nargs="*", default=[], metavar="JSON",
                    help="--json-out files of earlier runs on this machine: each cell keeps the best figure of all")
    opts = ap.parse_args()
    opts.models = [m for m in opts.models.split(",") if m]
    opts.runs = 1
    unknown = [m for m in opts.models if m not in MODELS]
    if unknown:
        ap.error("--models: unknown " + ", ".join(unknown) + " (known: " + ", ".join(MODELS) + ")")
    if not os.access(opts.bin, os.X_OK):
        ap.error(f"--bin: {opts.bin} is not an executable (cmake --build build --target train_step_bench)")
    cores = os.cpu_count() or 1
    try:
        counts = [cores if t == "all" else int(t) for t in opts.threads.split(",")]
    except ValueError:
        ap.error(f"--threads: expected numbers or 'all', got '{opts.threads}'")
    opts.thread_counts = [1] if opts.device == "cuda" else sorted(set(counts))

    import torch
    if opts.device == "cuda":
        if not torch.cuda.is_available():
            sys.exit("--device cuda: PyTorch sees no CUDA device")
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 on both sides, as the engine's default
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cudnn.benchmark = True

    load_before = os.getloadavg()[0]
    rows, pipelined = measure(opts, torch)
    load_after = os.getloadavg()[0]
    if opts.json_out:
        with open(opts.json_out, "w") as f:
            json.dump({"rows": rows, "pipelined": pipelined, "load": [load_before, load_after]}, f, indent=1)
    for path in opts.best_of:
        with open(path) as f:
            earlier = json.load(f)
        rows, pipelined = keep_best(rows, pipelined, earlier)
        opts.runs += 1
    text = table(opts, rows, pipelined)
    print(text)
    if opts.write_results:
        write_results(opts.results, section(opts, torch, text, load_before, load_after, sys.argv[1:]))
        print(f"wrote the section into {opts.results}", file=sys.stderr)


if __name__ == "__main__":
    main()
