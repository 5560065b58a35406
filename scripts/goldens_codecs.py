#!/usr/bin/env python3
"""Golden codes for dgpipe's uniform and sort quantization, from a PyTorch re-implementation of the ORIGINAL
(Epipe) codecs as described in docs/original.md#uniform-quantization and #sort-quantization (written from that
description).

The original stores signed/offset codes; dgpipe sends unsigned codes. The mapping compared by the tests:
  uniform:   original code c = round((x - m)/Δ - 2^(Q-1))         -> dgpipe code = c + 2^(Q-1)
  sortquant: original code c = q + 2^Q·i + base, base = -2^(T-1) if T = Q+S in {8, 16} else 0
                                                                   -> dgpipe code = c - base = (i << Q) | q
Ties: the original's torch.sort is unstable; dgpipe splits equal values across a group boundary in stable (flat
index) order. Inputs here are continuous random values without ties, so codes must match exactly.

Output: tests/data/codecs/goldens.json (deterministic; ~75 KB). Run: python3 scripts/goldens_codecs.py
"""
import json
import os

import torch


def original_uniform(x, q_bits):
    m, mx = x.min(), x.max()
    step = (mx - m) / (2 ** q_bits - 1)
    code = torch.round((x - m) / step - 2 ** (q_bits - 1))
    code = code.to(torch.int8 if q_bits <= 8 else torch.int16)
    return code.to(torch.int64), float(m), float(step)


def original_sortquant(x, q_bits, s_bits):
    flat = x.flatten()
    v, idx = torch.sort(flat)
    k = 2 ** s_bits
    t = q_bits + s_bits
    base = -(2 ** (t - 1)) if t in (8, 16) else 0
    codes = torch.empty_like(flat, dtype=torch.int64)
    stats = []
    for i, (vg, ig) in enumerate(zip(torch.tensor_split(v, k), torch.tensor_split(idx, k))):
        if vg.numel() == 0:
            stats.append((0.0, 0.0))
            continue
        m, mx = vg.min(), vg.max()
        step = (mx - m) / (2 ** q_bits - 1)
        if float(step) == 0.0:
            q = torch.zeros_like(vg)
        else:
            q = torch.round((vg - m) / step)
        codes[ig] = q.to(torch.int64) + (2 ** q_bits) * i + base
        stats.append((float(m), float(step)))
    return codes, base, stats


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out_dir = os.path.join(root, "tests", "data", "codecs")
    os.makedirs(out_dir, exist_ok=True)
    g = torch.Generator().manual_seed(20240611)
    n = 384
    u = torch.rand(n, generator=g) - 0.5
    inputs = {
        "normal": torch.randn(n, generator=g),
        "laplace": -u.sign() * torch.log1p(-2 * u.abs()),  # heavy-tailed, by inverting the Laplace CDF
        "shifted": torch.randn(n, generator=g) * 3.0 + 7.5,
    }
    inputs = {k: v.to(torch.float32) for k, v in inputs.items()}
    cases = []
    for name, x in inputs.items():
        for q in (2, 4, 8, 12, 16):
            code, m, step = original_uniform(x, q)
            cases.append({"method": "uniform", "input": name, "q": q, "s": 0,
                          "codes": (code + 2 ** (q - 1)).tolist(), "stats": [[m, step]]})
        for q, s in ((3, 1), (6, 2), (9, 3), (12, 4), (4, 4), (5, 2)):
            code, base, stats = original_sortquant(x, q, s)
            cases.append({"method": "sortquant", "input": name, "q": q, "s": s,
                          "codes": (code - base).tolist(), "stats": stats})
    doc = {"note": "see scripts/goldens_codecs.py", "inputs": {k: v.tolist() for k, v in inputs.items()}, "cases": cases}
    path = os.path.join(out_dir, "goldens.json")
    with open(path, "w") as f:
        json.dump(doc, f, separators=(",", ":"))
    print(f"wrote {path}: {len(cases)} cases, {os.path.getsize(path)} bytes")


if __name__ == "__main__":
    main()
