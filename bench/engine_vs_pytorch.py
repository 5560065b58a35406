#!/usr/bin/env python3
"""Side by side: dgpipe's CUDA kernels (bench_cuda_ops) and PyTorch on the same GPU, same shapes and dtypes.

Runs the engine benchmark binary (or reads its JSON output), runs the PyTorch twin of every benchmark with CUDA-event
timing, and writes a markdown table: GB/s for memory-bound ops (with the fraction of measured copy bandwidth) and
TFLOP/s for GEMM and convolution. TF32 as in both libraries' defaults: off for GEMM, on for fp32 convolutions.

  python3 bench/engine_vs_pytorch.py --engine-bin build-cuda/bench/bench_cuda_ops --out results.md
  python3 bench/engine_vs_pytorch.py --engine-json bench_cuda_ops.json
"""
import argparse
import json
import re
import subprocess
import sys

ELEMENTS = 64 << 20  # keep in sync with kElements in tests/support/cuda_op_cases.cpp


def dtype_of(torch, code):
    return {0: torch.float32, 1: torch.float16, 2: torch.bfloat16}[int(code)]


def time_ms(torch, fn, reps=20):
    fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    best = float("inf")
    for _ in range(reps):
        start.record()
        fn()
        end.record()
        end.synchronize()
        best = min(best, start.elapsed_time(end))
    return best


def torch_twin(torch, name, args):
    """Returns (kind, amount, fn): kind 'bytes' or 'flops', amount per call, fn the PyTorch call."""
    F = torch.nn.functional
    dev = "cuda"
    if name == "BM_Copy":
        a = torch.zeros(ELEMENTS, device=dev)
        return "bytes", 2 * a.numel() * 4, lambda: a.clone()
    if name == "BM_Add":
        t = dtype_of(torch, args[0])
        a, b = torch.zeros(ELEMENTS, device=dev, dtype=t), torch.zeros(ELEMENTS, device=dev, dtype=t)
        return "bytes", 3 * a.numel() * a.element_size(), lambda: a + b
    if name == "BM_Gelu":
        a = torch.zeros(ELEMENTS, device=dev, dtype=dtype_of(torch, args[0]))
        return "bytes", 2 * a.numel() * a.element_size(), lambda: F.gelu(a)
    if name == "BM_SumRows":
        a = torch.zeros(ELEMENTS // args[0], args[0], device=dev)
        return "bytes", a.numel() * 4, lambda: a.sum(1)
    if name == "BM_SumAll":
        a = torch.zeros(ELEMENTS, device=dev)
        return "bytes", a.numel() * 4, lambda: a.sum()
    if name == "BM_Softmax":
        a = torch.zeros(ELEMENTS // 4 // args[0], args[0], device=dev)
        return "bytes", 2 * a.numel() * 4, lambda: torch.softmax(a, -1)
    if name == "BM_LayerNorm":
        c = args[0]
        a = torch.zeros(ELEMENTS // 4 // c, c, device=dev)
        w, b = torch.ones(c, device=dev), torch.zeros(c, device=dev)
        return "bytes", 2 * a.numel() * 4, lambda: F.layer_norm(a, (c,), w, b, 1e-5)
    if name == "BM_SgdStep":
        p = torch.zeros(ELEMENTS // 4, device=dev, requires_grad=True)
        p.grad = torch.zeros_like(p)
        # the options of the "SGD nesterov" case in tests/support/cuda_op_cases.cpp
        opt = torch.optim.SGD([p], lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3, fused=True)
        return "bytes", 5 * p.numel() * 4, opt.step
    if name == "BM_Gemm":
        n, t = args[0], dtype_of(torch, args[1])
        a, b = torch.randn(n, n, device=dev, dtype=t), torch.randn(n, n, device=dev, dtype=t)
        return "flops", 2.0 * n ** 3, lambda: a @ b
    if name == "BM_Conv3x3":
        c, hw, t = args[0], args[1], dtype_of(torch, args[2])
        x = torch.randn(64, c, hw, hw, device=dev, dtype=t)
        w = torch.randn(c, c, 3, 3, device=dev, dtype=t)
        return "flops", 2.0 * 64 * c * hw * hw * c * 9, lambda: F.conv2d(x, w, padding=1)
    return None


def parse_name(full):
    # "BM_Gemm/4096/1/manual_time" -> ("BM_Gemm", [4096, 1])
    parts = full.split("/")
    return parts[0], [int(p) for p in parts[1:] if re.fullmatch(r"-?\d+", p)]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engine-bin", help="path of bench_cuda_ops (runs it)")
    ap.add_argument("--engine-json", help="google-benchmark JSON written by bench_cuda_ops (instead of running it)")
    ap.add_argument("--out", help="write the markdown table here too")
    ap.add_argument("--filter", default="", help="--benchmark_filter for the engine run")
    opts = ap.parse_args()

    if opts.engine_json:
        with open(opts.engine_json) as f:
            engine = json.load(f)
    elif opts.engine_bin:
        cmd = [opts.engine_bin, "--benchmark_format=json"]
        if opts.filter:
            cmd.append("--benchmark_filter=" + opts.filter)
        engine = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    else:
        ap.error("give --engine-bin or --engine-json")

    import torch

    if not torch.cuda.is_available():
        sys.exit("PyTorch sees no CUDA device")
    torch.backends.cuda.matmul.allow_tf32 = False  # the engine: cuda::allow_tf32_matmul() is false by default
    torch.backends.cudnn.allow_tf32 = True  # the engine: cuda::allow_tf32_conv() is true by default
    torch.backends.cudnn.benchmark = True

    copy_bw = None
    rows = []
    for b in engine.get("benchmarks", []):
        if b.get("error_occurred"):
            continue
        name, args = parse_name(b["name"])
        twin = torch_twin(torch, name, args)
        if twin is None:
            continue
        kind, amount, fn = twin
        ms = time_ms(torch, fn)
        torch_rate = amount / (ms * 1e-3)
        if kind == "bytes":
            eng = b.get("GB/s", 0.0)
            copy_bw = b.get("copy_GB/s", copy_bw)
            tor = torch_rate * 1e-9
            unit = "GB/s"
        else:
            eng = b.get("TFLOP/s", 0.0)
            tor = torch_rate * 1e-12
            unit = "TFLOP/s"
        rows.append((b["name"].replace("/manual_time", ""), unit, eng, tor))

    lines = [f"GPU: {torch.cuda.get_device_name(0)}; PyTorch {torch.__version__}; "
             f"engine copy bandwidth {copy_bw:.0f} GB/s" if copy_bw else f"GPU: {torch.cuda.get_device_name(0)}",
             "", "| benchmark | unit | dgpipe | PyTorch | dgpipe/PyTorch | dgpipe of copy bw |", "|---|---|---|---|---|---|"]
    for name, unit, eng, tor in rows:
        frac = f"{eng / copy_bw:.2f}" if unit == "GB/s" and copy_bw else ""
        ratio = f"{eng / tor:.2f}" if tor > 0 else ""
        lines.append(f"| {name} | {unit} | {eng:.1f} | {tor:.1f} | {ratio} | {frac} |")
    text = "\n".join(lines)
    print(text)
    if opts.out:
        with open(opts.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
