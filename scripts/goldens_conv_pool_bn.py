#!/usr/bin/env python3
"""Writes tests/data/ops_conv_pool_bn.json: PyTorch (CPU, float64) forward values for conv2d, pooling and
batch norm, read by tests/engine/test_{conv,pool,batch_norm}.cpp.

Inputs are random with fixed seeds and rounded to 6 decimals, so the JSON holds them exactly and the C++ tests
feed the very same numbers to the engine (in f64, and in f32 where rounding stays far below the 1e-5 tolerance).
Outputs are written with 10 significant digits. Every tensor is {"shape": [...], "data": [flat row-major]}.

Usage: python3 scripts/goldens_conv_pool_bn.py  (from anywhere; writes into the repository's tests/data/)
"""
import json
import pathlib

import torch
import torch.nn.functional as F

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "data" / "ops_conv_pool_bn.json"


def rnd(*shape, scale=1.0, shift=0.0, gen):
    t = torch.randn(*shape, generator=gen, dtype=torch.float64) * scale + shift
    return torch.round(t * 1e6) / 1e6


def enc(t, digits=10):
    t = t.detach().to(torch.float64).contiguous()
    return {"shape": list(t.shape), "data": [float(f"{v:.{digits}g}") for v in t.flatten().tolist()]}


def conv_case(gen, x_shape, w_shape, stride, padding, dilation, groups, bias=True):
    x = rnd(*x_shape, gen=gen)
    w = rnd(*w_shape, scale=0.5, gen=gen)
    b = rnd(w_shape[0], scale=0.5, gen=gen) if bias else None
    y = F.conv2d(x, w, b, stride=stride, padding=padding, dilation=dilation, groups=groups)
    case = {
        "params": {"stride": list(stride), "padding": list(padding), "dilation": list(dilation), "groups": groups},
        "input": enc(x), "weight": enc(w), "output": enc(y),
    }
    if b is not None:
        case["bias"] = enc(b)
    return case


def main():
    torch.use_deterministic_algorithms(True)
    gen = torch.Generator().manual_seed(20240611)
    cases = {}
    # Non-square stride/padding/dilation so that an h/w mix-up cannot pass.
    cases["conv_groups_dilation"] = conv_case(gen, (2, 4, 9, 8), (6, 2, 3, 3), stride=(2, 1), padding=(1, 2),
                                              dilation=(2, 1), groups=2)
    # Depthwise with a channel multiplier of 2 (MobileNet uses 1; both take the direct loop).
    cases["conv_depthwise"] = conv_case(gen, (2, 3, 7, 7), (6, 1, 3, 3), stride=(2, 2), padding=(1, 1),
                                        dilation=(1, 1), groups=3)
    cases["conv_pointwise"] = conv_case(gen, (2, 5, 4, 3), (4, 5, 1, 1), stride=(1, 1), padding=(0, 0),
                                        dilation=(1, 1), groups=1, bias=False)
    cases["conv_3x3"] = conv_case(gen, (1, 3, 6, 5), (4, 3, 3, 3), stride=(1, 1), padding=(1, 1),
                                  dilation=(1, 1), groups=1)

    x = rnd(2, 3, 7, 7, gen=gen)
    cases["max_pool"] = {"params": {"kernel": 3, "stride": 2, "padding": 1}, "input": enc(x),
                         "output": enc(F.max_pool2d(x, 3, 2, 1))}
    cases["max_pool_k2"] = {"params": {"kernel": 2, "stride": 2, "padding": 0}, "input": enc(x),
                            "output": enc(F.max_pool2d(x, 2, 2, 0))}
    cases["avg_pool"] = {"params": {"kernel": 3, "stride": 2, "padding": 1}, "input": enc(x),
                         "output": enc(F.avg_pool2d(x, 3, 2, 1, count_include_pad=True))}
    xa = rnd(2, 3, 7, 5, gen=gen)
    cases["adaptive_3x2"] = {"params": {"out_h": 3, "out_w": 2}, "input": enc(xa),
                             "output": enc(F.adaptive_avg_pool2d(xa, (3, 2)))}
    cases["adaptive_4x4"] = {"params": {"out_h": 4, "out_w": 4}, "input": enc(xa),
                             "output": enc(F.adaptive_avg_pool2d(xa, (4, 4)))}
    cases["adaptive_1x1"] = {"params": {"out_h": 1, "out_w": 1}, "input": enc(xa),
                             "output": enc(F.adaptive_avg_pool2d(xa, (1, 1)))}

    # Batch norm: one training step (batch stats, running stats updated with the unbiased variance), then eval
    # with the updated running stats on a second input.
    xb = rnd(4, 3, 5, 5, scale=2.0, shift=1.0, gen=gen)
    w = rnd(3, scale=0.5, shift=1.0, gen=gen)
    b = rnd(3, scale=0.5, gen=gen)
    rm0 = rnd(3, scale=0.2, gen=gen)
    rv0 = torch.round((torch.rand(3, generator=gen, dtype=torch.float64) + 0.5) * 1e6) / 1e6
    rm, rv = rm0.clone(), rv0.clone()
    momentum, eps = 0.1, 1e-5
    y_train = F.batch_norm(xb, rm, rv, w, b, training=True, momentum=momentum, eps=eps)
    xe = rnd(2, 3, 5, 5, gen=gen)
    y_eval = F.batch_norm(xe, rm, rv, w, b, training=False, momentum=momentum, eps=eps)
    y_train_noaffine = F.batch_norm(xb, None, None, None, None, training=True, momentum=momentum, eps=eps)
    cases["batch_norm"] = {
        "params": {"momentum": momentum, "eps": eps},
        "input": enc(xb), "weight": enc(w), "bias": enc(b),
        "running_mean": enc(rm0), "running_var": enc(rv0),
        "output_train": enc(y_train), "running_mean_after": enc(rm), "running_var_after": enc(rv),
        "eval_input": enc(xe), "output_eval": enc(y_eval),
        "output_train_noaffine": enc(y_train_noaffine),
    }

    doc = {"generator": "scripts/goldens_conv_pool_bn.py", "torch": torch.__version__, "cases": cases}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(doc, separators=(",", ":")) + "\n")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
