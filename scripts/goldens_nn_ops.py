#!/usr/bin/env python3
"""Writes tests/data/ops_nn.json: PyTorch (CPU, f32) forward values for the engine's nn ops.

Read by tests/engine/test_{elementwise,layer_norm,softmax,embedding}.cpp, which compare the engine's f32 results
within 1e-5 relative. Every case is {"name": {"<tensor>": {"shape": [...], "data": [...]}, ...scalars}}, data
flat in row-major order. Deterministic: fixed seeds, torch CPU, single thread.

Usage: python3 scripts/goldens_nn_ops.py [--out tests/data/ops_nn.json]
"""
import argparse
import json
import os

import torch
import torch.nn.functional as F


def tensor_entry(t):
    t = t.detach().contiguous()
    if t.is_floating_point():
        data = [float(v) for v in t.to(torch.float32).reshape(-1).tolist()]
    else:
        data = [int(v) for v in t.reshape(-1).tolist()]
    return {"shape": list(t.shape), "data": data}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    parser.add_argument("--out", default=os.path.join(root, "tests", "data", "ops_nn.json"))
    args = parser.parse_args()

    torch.manual_seed(20240611)
    torch.set_num_threads(1)
    cases = {}

    # gelu, exact erf form (approximate='none'), over the range where erf matters most and the tails.
    x = torch.cat([torch.linspace(-6, 6, 41), torch.randn(23) * 2]).float()
    cases["gelu"] = {"x": tensor_entry(x), "y": tensor_entry(F.gelu(x))}

    # layer_norm over the last dim and over the last two dims, with and without affine parameters.
    x = (torch.randn(3, 4, 10) * 3 + 1.5).float()
    w = torch.randn(10).float()
    b = torch.randn(10).float()
    cases["layer_norm_last"] = {
        "x": tensor_entry(x), "weight": tensor_entry(w), "bias": tensor_entry(b), "eps": 1e-5,
        "normalized_shape": [10], "y": tensor_entry(F.layer_norm(x, [10], w, b, 1e-5)),
    }
    x2 = torch.randn(2, 3, 4, 5).float()
    cases["layer_norm_last2_noaffine"] = {
        "x": tensor_entry(x2), "eps": 1e-6, "normalized_shape": [4, 5],
        "y": tensor_entry(F.layer_norm(x2, [4, 5], None, None, 1e-6)),
    }

    # softmax / log_softmax along a middle dim and the last dim; one slice shifted by +1000 to test stability.
    x = torch.randn(3, 5, 7).float()
    x[1, :, 2] += 1000.0
    x[2, 3, :] -= 1000.0
    cases["softmax"] = {
        "x": tensor_entry(x),
        "softmax_dim1": tensor_entry(F.softmax(x, dim=1)),
        "softmax_dim2": tensor_entry(F.softmax(x, dim=2)),
        "log_softmax_dim1": tensor_entry(F.log_softmax(x, dim=1)),
        "log_softmax_dim2": tensor_entry(F.log_softmax(x, dim=2)),
    }

    # cross_entropy: label smoothing 0.1 with two ignored targets (ignore_index -100), and a plain one with a
    # custom ignore_index; the loss and the gradient of the logits.
    logits = (torch.randn(8, 6) * 2).float().requires_grad_(True)
    target = torch.tensor([0, 5, -100, 2, 3, -100, 1, 4], dtype=torch.int64)
    loss = F.cross_entropy(logits, target, label_smoothing=0.1, ignore_index=-100)
    (grad,) = torch.autograd.grad(loss, logits)
    cases["cross_entropy_smooth"] = {
        "logits": tensor_entry(logits), "target": tensor_entry(target), "label_smoothing": 0.1,
        "ignore_index": -100, "loss": float(loss.detach()), "grad": tensor_entry(grad),
    }
    target2 = torch.tensor([1, 1, 3, 0, 2, 5, 5, 4], dtype=torch.int64)
    loss2 = F.cross_entropy(logits, target2, ignore_index=5)
    (grad2,) = torch.autograd.grad(loss2, logits)
    cases["cross_entropy_ignore5"] = {
        "logits": tensor_entry(logits), "target": tensor_entry(target2), "label_smoothing": 0.0,
        "ignore_index": 5, "loss": float(loss2.detach()), "grad": tensor_entry(grad2),
    }

    # embedding with a padding row; indices [2,3] -> out [2,3,4].
    weight = torch.randn(10, 4).float()
    indices = torch.tensor([[0, 3, 9], [3, 1, 0]], dtype=torch.int64)
    cases["embedding"] = {
        "weight": tensor_entry(weight), "indices": tensor_entry(indices), "padding_idx": 0,
        "out": tensor_entry(F.embedding(indices, weight, padding_idx=0)),
    }

    doc = {"generator": "scripts/goldens_nn_ops.py", "torch": torch.__version__, "cases": cases}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(doc, f, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {args.out} ({os.path.getsize(args.out)} bytes)")


if __name__ == "__main__":
    main()
