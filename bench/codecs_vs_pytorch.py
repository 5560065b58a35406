#!/usr/bin/env python3
"""Side-by-side benchmark of the boundary codecs: the ORIGINAL (Epipe) codecs re-implemented in PyTorch from
docs/original.md#codecs (not copied code), and dgpipe's own (`dgpipe codec --format json`, same shape, a
standard normal tensor), timed on the same device and sizes in interleaved rounds (best of all rounds, so that
a load spike on a shared machine hits both sides alike). Prints, per codec and shape, encode and decode
milliseconds of both, the speed ratio original/dgpipe (> 1: dgpipe is faster), dgpipe's input-f32 GB/s (the
"GB" counter of bench/bench_codecs.cpp) and the memcpy bandwidth of a buffer of the same size (bytes copied per
second, one thread: what a codec that only touched its input once would approach).

  python3 bench/codecs_vs_pytorch.py --device cpu                 # dgpipe from build/bin/dgpipe
  python3 bench/codecs_vs_pytorch.py --device cpu --shapes 64,32,32,32 --rounds 5
  python3 bench/codecs_vs_pytorch.py --device cuda                # originals only (unless --dgpipe is given)
Timing: CUDA events around each call after warm-up; CPU wall clock. Per round, the minimum over at least
--repeat calls that took at least --min-time-ms in all, on both sides (`dgpipe codec --min-time-ms`): the
minimum of a handful of sub-millisecond calls is mostly page faults and preemptions on a shared machine.
"""
import argparse
import json
import os
import subprocess
import time

import torch


def uniform_encode(x, q):
    m, mx = x.min(), x.max()
    step = (mx - m) / (2 ** q - 1)
    code = torch.round((x - m) / step - 2 ** (q - 1)).to(torch.int8 if q <= 8 else torch.int16)
    return m, step, code


def uniform_decode(m, step, code, q):
    return (code.float() + 2 ** (q - 1)) * step + m


def sort_encode(x, q, s):
    v, idx = torch.sort(x.flatten())
    k, t = 2 ** s, q + s
    base = -(2 ** (t - 1)) if t in (8, 16) else 0
    codes = torch.empty(x.numel(), dtype=torch.int8 if t <= 8 else torch.int16, device=x.device)
    ms = torch.empty(k, 2, device=x.device)
    for i, (vg, ig) in enumerate(zip(torch.tensor_split(v, k), torch.tensor_split(idx, k))):
        m, mx = vg.min(), vg.max()
        step = (mx - m) / (2 ** q - 1)
        qv = torch.where(step > 0, torch.round((vg - m) / step), torch.zeros_like(vg))
        codes[ig] = (qv + 2 ** q * i + base).to(codes.dtype)
        ms[i, 0], ms[i, 1] = m, step
    return ms, codes, base


def sort_decode(ms, codes, base, q, s):
    # the original's sort-based decoder (docs/original.md#sort-quantization)
    k = 2 ** s
    v, idx = torch.sort(codes.to(torch.int32))
    out = torch.empty(codes.numel(), device=codes.device)
    for i, (vg, ig) in enumerate(zip(torch.tensor_split(v, k), torch.tensor_split(idx, k))):
        out[ig] = (vg - base - 2 ** q * i).float() * ms[i, 1] + ms[i, 0]
    return out


def fast_encode(x, q, s):
    # quantiles of sample 0 by kthvalue, then masked range bucketing (docs/original.md#fast-quantization)
    k, t = 2 ** s, q + s
    base = -(2 ** (t - 1)) if t in (8, 16) else 0
    row = x.reshape(x.shape[0], -1)[0].double()
    L = row.numel()
    bounds = [row.kthvalue(max(1, L * (i + 1) // k)).values.float() for i in range(k - 1)] + [x.max()]
    codes = torch.empty(x.numel(), dtype=torch.int8 if t <= 8 else torch.int16, device=x.device)
    flat = x.flatten()
    ms = torch.empty(k, 2, device=x.device)
    prev = torch.tensor(-1e9, device=x.device)
    for i in range(k):
        mask = (flat > prev) & (flat <= bounds[i])
        vals = flat[mask]
        m = vals.min() if vals.numel() else bounds[i]
        step = (bounds[i] - m) / (2 ** q - 1)
        qv = torch.where(step > 0, torch.round((vals - m) / step), torch.zeros_like(vals))
        codes[mask] = (qv + 2 ** q * i + base).to(codes.dtype)
        ms[i, 0], ms[i, 1] = m, step
        prev = bounds[i]
    return ms, codes, base


def mask_decode(ms, codes, base, q, s):
    out = torch.zeros(codes.numel(), device=codes.device)
    c = codes.to(torch.int32) - base
    for i in range(2 ** s):
        mask = (c >> q) == i
        out[mask] = (c[mask] - 2 ** q * i).float() * ms[i, 1] + ms[i, 0]
    return out


class Power:
    def __init__(self, r):
        self.r, self.p = r, None

    def encode(self, x):
        a = x.reshape(x.shape[0], x.shape[1], -1)
        if self.p is None:
            self.p = torch.rand(a.shape[0], a.shape[2], self.r, device=x.device)
        for it in range(3):
            if it == 2:
                self.p = torch.linalg.qr(self.p).Q
            qm = a @ self.p
            if it == 2:
                qm = torch.linalg.qr(qm).Q
            self.p = a.transpose(1, 2) @ qm
        return self.p, qm

    @staticmethod
    def decode(p, qm, shape):
        return (qm @ p.transpose(1, 2)).reshape(shape)


def topk_encode(x, r):
    flat = x.flatten()
    k = int(r * flat.numel())
    _, idx = flat.abs().topk(k)
    return flat[idx], idx


def timed(fn, device, repeat, min_ms=0.0):
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    best, spent, calls = float("inf"), 0.0, 0
    while calls < repeat or spent < min_ms:
        calls += 1
        if device.type == "cuda":
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            out = fn()
            b.record()
            torch.cuda.synchronize()
            ms = a.elapsed_time(b)
        else:
            t0 = time.perf_counter()
            out = fn()
            ms = (time.perf_counter() - t0) * 1e3
        best, spent = min(best, ms), spent + ms
    return best, out


def memcpy_gbps(numel, device, repeat):
    """Bytes copied per second by one thread for a buffer of numel f32 (numpy's copyto is a memcpy)."""
    if device.type == "cuda":
        a = torch.empty(numel, device=device)
        b = torch.empty_like(a)
        t, _ = timed(lambda: b.copy_(a), device, repeat)
        return numel * 4 * 1e-9 / t * 1e3
    import numpy as np

    a = np.ones(numel, dtype=np.float32)
    b = np.empty_like(a)
    best = float("inf")
    for _ in range(repeat + 1):
        t0 = time.perf_counter()
        np.copyto(b, a)
        best = min(best, time.perf_counter() - t0)
    return numel * 4 * 1e-9 / best


def dgpipe_times(binary, device, text, specs, repeat, min_ms):
    """{spec: (encode ms, decode ms)} from one `dgpipe codec` run (the same timing rule as `timed`)."""
    cmd = [binary, "codec", "--synthetic", "normal", "--seed", "7", "--shape", text, "--device", device.type,
           "--repeat", str(repeat), "--min-time-ms", str(min_ms), "--format", "json", "--codecs", ",".join(specs)]
    rows = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    return {r["spec"]: (r["encode_ms"], r["decode_ms"]) for r in rows}


def original_cases(x, shape, device):
    cases = []
    for q in (4, 8, 12):
        cases.append((f"uniform:{q}", lambda q=q: uniform_encode(x, q), lambda e, q=q: uniform_decode(*e, q)))
    for q, s in ((3, 1), (6, 2), (9, 3), (12, 4)):
        cases.append((f"sortquant:{q}+{s}", lambda q=q, s=s: sort_encode(x, q, s),
                      lambda e, q=q, s=s: sort_decode(*e, q, s)))
    if len(shape) > 1:
        for q, s in ((6, 2), (9, 3)):
            cases.append((f"fastquant:{q}+{s}", lambda q=q, s=s: fast_encode(x, q, s),
                          lambda e, q=q, s=s: mask_decode(*e, q, s)))
        pw = Power(4)
        cases.append(("power:4", lambda: pw.encode(x), lambda e: Power.decode(*e, x.shape)))
        cases.append(("svd:4", lambda: torch.svd_lowrank(x.reshape(shape[0], shape[1], -1), q=4, niter=2),
                      lambda e: (e[0] * e[1].unsqueeze(1)) @ e[2].transpose(1, 2)))
    cases.append(("topk:0.1", lambda: topk_encode(x, 0.1),
                  lambda e: torch.zeros(x.numel(), device=device).scatter_(0, e[1], e[0])))
    cases.append(("fp16", lambda: x.half(), lambda e: e.float()))
    return cases


def ratio(orig, ours):
    return f"{orig / ours:.2f}x" if ours > 0 else "-"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--shapes", nargs="*", default=["64,32,32,32", "64,1280,4,4", "32,128,768", "16777216"])
    ap.add_argument("--repeat", type=int, default=5, help="timed calls per round (the minimum counts)")
    ap.add_argument("--min-time-ms", type=float, default=100.0,
                    help="timed calls per round go on until they took this long in all (ms)")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds of original and dgpipe")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--dgpipe", default=None,
                    help="dgpipe binary to compare (default on --device cpu: build/bin/dgpipe of this checkout)")
    args = ap.parse_args()
    device = torch.device(args.device)
    binary = args.dgpipe
    if binary is None and device.type == "cpu":
        binary = os.path.join(root, "build", "bin", "dgpipe")
    if binary and not os.path.exists(binary):
        print(f"# {binary} not found: the original codecs only")
        binary = None
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads; dgpipe: {binary or '-'}; "
          f"best of {args.rounds} rounds x (>= {args.repeat} calls and >= {args.min_time_ms:g} ms); x = original ms / dgpipe ms (> 1: dgpipe faster); "
          f"GB/s: input f32 bytes per second of {'dgpipe' if binary else 'the original'}; memcpy: GB/s copied")
    print(f"{'codec':<16}{'shape':<14}{'enc ms':>9}{'orig':>9}{'enc x':>8}{'dec ms':>9}{'orig':>9}{'dec x':>8}"
          f"{'enc GB/s':>10}{'dec GB/s':>10}{'memcpy':>9}")
    for text in args.shapes:
        shape = [int(v) for v in text.split(",")]
        g = torch.Generator(device=device).manual_seed(7)
        x = torch.randn(*shape, device=device, generator=g)
        gb = x.numel() * 4 * 1e-9
        cases = original_cases(x, shape, device)
        names = [c[0] for c in cases]
        orig = {n: [float("inf"), float("inf")] for n in names}
        ours = {n: [float("inf"), float("inf")] for n in names}
        copy = 0.0
        for _ in range(args.rounds):
            for name, enc, dec in cases:
                te, e = timed(enc, device, args.repeat, args.min_time_ms)
                td, _ = timed(lambda: dec(e), device, args.repeat, args.min_time_ms)
                orig[name] = [min(orig[name][0], te), min(orig[name][1], td)]
            if binary:
                for name, (te, td) in dgpipe_times(binary, device, text, names, args.repeat,
                                                         args.min_time_ms).items():
                    ours[name] = [min(ours[name][0], te), min(ours[name][1], td)]
            copy = max(copy, memcpy_gbps(x.numel(), device, args.repeat))
        for name in names:
            (oe, od), (de, dd) = orig[name], ours[name]
            if binary:
                print(f"{name:<16}{text:<14}{de:>9.3f}{oe:>9.3f}{ratio(oe, de):>8}{dd:>9.3f}{od:>9.3f}"
                      f"{ratio(od, dd):>8}{gb / de * 1e3:>10.2f}{gb / dd * 1e3:>10.2f}{copy:>9.2f}")
            else:
                print(f"{name:<16}{text:<14}{'-':>9}{oe:>9.3f}{'-':>8}{'-':>9}{od:>9.3f}{'-':>8}"
                      f"{gb / oe * 1e3:>10.2f}{gb / od * 1e3:>10.2f}{copy:>9.2f}")


if __name__ == "__main__":
    main()
