#!/usr/bin/env python3
"""Writes tests/data/optim.json: optimizer updates, LR schedules and gradient clipping computed by PyTorch and
Hugging Face transformers, which the C++ tests (tests/engine/test_sgd.cpp, test_adamw.cpp, test_lr_schedule.cpp,
test_clip_grad.cpp) compare against. Deterministic and small (a few KB)."""
import json
import math
import os
import sys

import torch

try:
    import transformers
except ImportError:  # the schedule goldens need transformers; everything else works without it
    transformers = None

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "optim.json")


def flat(t):
    return [float(v) for v in t.detach().reshape(-1).tolist()]


def make_problem():
    """Two f32 parameters and three steps of gradients; parameter 1 gets no gradient on step 2 (index 1),
    which checks that optimizers skip it and keep its state."""
    g = torch.Generator().manual_seed(20240611)
    shapes = [(2, 3), (4,)]
    params = [torch.randn(s, generator=g, dtype=torch.float32) for s in shapes]
    grads = []
    for step in range(3):
        step_grads = []
        for i, s in enumerate(shapes):
            if i == 1 and step == 1:
                step_grads.append(None)
            else:
                step_grads.append(torch.randn(s, generator=g, dtype=torch.float32))
        grads.append(step_grads)
    return shapes, params, grads


def run(make_optimizer, shapes, init, grads):
    params = [p.clone().requires_grad_(True) for p in init]
    opt = make_optimizer(params)
    after = []
    for step_grads in grads:
        for p, gr in zip(params, step_grads):
            p.grad = None if gr is None else gr.clone()
        opt.step()
        after.append([flat(p) for p in params])
    return after


def schedules():
    if transformers is None:
        sys.exit("goldens_optim.py: transformers is needed for the schedule goldens")
    from transformers import (get_cosine_schedule_with_warmup, get_linear_schedule_with_warmup,
                              get_polynomial_decay_schedule_with_warmup)

    def trace(make, base_lr, steps):
        p = torch.nn.Parameter(torch.zeros(1))
        opt = torch.optim.SGD([p], lr=base_lr)
        sched = make(opt)
        lrs = []
        for _ in range(steps):
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        return lrs

    out = {}
    out["cosine"] = {"base_lr": 0.1, "warmup": 5, "total": 20,
                     "lrs": trace(lambda o: get_cosine_schedule_with_warmup(o, 5, 20), 0.1, 25)}
    out["polynomial"] = {"base_lr": 0.01, "warmup": 3, "total": 15, "lr_end": 1e-4, "power": 2.0,
                         "lrs": trace(lambda o: get_polynomial_decay_schedule_with_warmup(o, 3, 15, lr_end=1e-4,
                                                                                         power=2.0), 0.01, 20)}
    out["linear"] = {"base_lr": 0.05, "warmup": 4, "total": 12,
                     "lrs": trace(lambda o: get_linear_schedule_with_warmup(o, 4, 12), 0.05, 16)}
    out["step"] = {"base_lr": 0.2, "step_size": 3, "gamma": 0.5,
                   "lrs": trace(lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=3, gamma=0.5), 0.2, 11)}
    return out


def clipping():
    g = torch.Generator().manual_seed(7)
    cases = []
    for max_norm in (0.5, 100.0):
        params = [torch.nn.Parameter(torch.zeros(s)) for s in [(3, 2), (5,)]]
        for p in params:
            p.grad = torch.randn(p.shape, generator=g, dtype=torch.float32)
        before = [flat(p.grad) for p in params]
        total = torch.nn.utils.clip_grad_norm_(params, max_norm)
        cases.append({"max_norm": max_norm, "shapes": [list(p.shape) for p in params], "grads": before,
                      "total_norm": float(total), "clipped": [flat(p.grad) for p in params]})
    return cases


def main():
    torch.manual_seed(0)
    shapes, init, grads = make_problem()
    sgd_cfg = {"lr": 0.1, "momentum": 0.9, "dampening": 0.0, "weight_decay": 0.01, "nesterov": True}
    sgd_damp_cfg = {"lr": 0.05, "momentum": 0.8, "dampening": 0.3, "weight_decay": 0.02, "nesterov": False}
    adamw_cfg = {"lr": 0.01, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.1}
    golden = {
        "generated_by": "scripts/goldens_optim.py with torch " + torch.__version__ +
                        (", transformers " + transformers.__version__ if transformers else ""),
        "shapes": [list(s) for s in shapes],
        "init": [flat(p) for p in init],
        # null marks a missing gradient
        "grads": [[None if gr is None else flat(gr) for gr in step] for step in grads],
        "sgd": {"config": sgd_cfg,
                "after": run(lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, dampening=0.0, weight_decay=0.01,
                                                        nesterov=True, foreach=False), shapes, init, grads)},
        "sgd_dampening": {"config": sgd_damp_cfg,
                          "after": run(lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.8, dampening=0.3,
                                                                  weight_decay=0.02, foreach=False),
                                       shapes, init, grads)},
        "adamw": {"config": adamw_cfg,
                  "after": run(lambda ps: torch.optim.AdamW(ps, lr=0.01, betas=(0.9, 0.999), eps=1e-8,
                                                            weight_decay=0.1, foreach=False), shapes, init, grads)},
        "schedules": schedules(),
        "clip_grad_norm": clipping(),
    }
    with open(OUT, "w") as f:
        json.dump(golden, f, indent=1)
        f.write("\n")
    print("wrote", os.path.normpath(OUT), os.path.getsize(OUT), "bytes")


if __name__ == "__main__":
    main()
