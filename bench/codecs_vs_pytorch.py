#!/usr/bin/env python3
"""Side-by-side baseline for bench/bench_codecs.cpp: the ORIGINAL (Epipe) codecs re-implemented in PyTorch from
docs/original.md#codecs (not copied code), timed on the same device and sizes. Prints, per codec and
shape, encode and decode milliseconds and the input-f32 GB/s, in the same units as bench_codecs ("GB" counter).

  python3 bench/codecs_vs_pytorch.py --device cuda        # on the GPU machine, next to build/bench/bench_codecs
  python3 bench/codecs_vs_pytorch.py --device cpu --shapes 64,32,32,32
Timing: CUDA events around each call after warm-up (min of --repeat runs); CPU wall clock.
"""
import argparse
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


def timed(fn, device, repeat):
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    best = float("inf")
    for _ in range(repeat):
        if device.type == "cuda":
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            out = fn()
            b.record()
            torch.cuda.synchronize()
            best = min(best, a.elapsed_time(b))
        else:
            t0 = time.perf_counter()
            out = fn()
            best = min(best, (time.perf_counter() - t0) * 1e3)
    return best, out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--shapes", nargs="*", default=["64,32,32,32", "64,1280,4,4", "32,128,768", "16777216"])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    device = torch.device(args.device)
    print(f"{'codec':<16}{'shape':<18}{'enc ms':>10}{'dec ms':>10}{'enc GB/s':>10}{'dec GB/s':>10}")
    for text in args.shapes:
        shape = [int(v) for v in text.split(",")]
        g = torch.Generator(device=device).manual_seed(7)
        x = torch.randn(*shape, device=device, generator=g)
        gb = x.numel() * 4 * 1e-9
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
        for name, enc, dec in cases:
            te, e = timed(enc, device, args.repeat)
            td, _ = timed(lambda: dec(e), device, args.repeat)
            print(f"{name:<16}{text:<18}{te:>10.3f}{td:>10.3f}{gb / te * 1e3:>10.2f}{gb / td * 1e3:>10.2f}")


if __name__ == "__main__":
    main()
