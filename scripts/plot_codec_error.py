#!/usr/bin/env python3
"""Figure for docs/codecs.md: relative L2 error against wire bits per element, per codec family, on real boundary
tensors, measured with `dgpipe codec`.

Boundary tensors: MobileNetV2 (torchvision, CIFAR geometry 32x32, random init with seed 0 — no pretrained weights
are available offline; BatchNorm in training mode, so activations are batch-normalised as in training) on 64 real
CIFAR-10 training images from ../shared/data/cifar10-jpg.tar.gz:
  A      features[0] conv+BN output before ReLU6 (boundary A of docs/original.md#partitions) [64, 32, 16, 16]
  A.grad gradient of a cross-entropy loss w.r.t. A (what the backward codec carries)      [64, 32, 16, 16]
  B      features[0:4] output (a post-ReLU6 inverted-residual boundary)                   [64, 24, 8, 8]
Usage: python3 scripts/plot_codec_error.py [--dgpipe build-codecs/bin/dgpipe]
Writes docs/img/codec_error.png and docs/img/codec_error.csv.
"""
import argparse
import csv
import io
import os
import subprocess
import tarfile
import tempfile

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torchvision  # noqa: E402
from PIL import Image  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPECS = ["fp16", "bf16"] + [f"uniform:{q}" for q in (2, 3, 4, 5, 6, 8, 10, 12)] + \
        [f"sortquant:{q}+{s}" for q, s in ((1, 1), (2, 1), (3, 1), (4, 2), (6, 2), (7, 3), (9, 3), (12, 4))] + \
        [f"fastquant:{q}+{s}" for q, s in ((2, 1), (3, 1), (4, 2), (6, 2), (9, 3))] + \
        [f"topk:{r}" for r in (0.02, 0.05, 0.1, 0.2, 0.4)] + \
        [f"power:{r}" for r in (1, 2, 4, 8)] + [f"svd:{r}" for r in (1, 2, 4, 8)] + \
        [f"kmeans:{b}" for b in (1, 2, 3, 4, 5)]


def load_cifar(n):
    path = os.path.join(ROOT, "..", "shared", "data", "cifar10-jpg.tar.gz")
    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    wanted = {f"train/{c}/{i:04d}.jpg": k for k, c in enumerate(classes) for i in range(n // 10 + 1)}
    imgs, labels = [], []
    with tarfile.open(path) as tar:
        for m in tar:
            if m.name in wanted and len(imgs) < n:
                img = Image.open(io.BytesIO(tar.extractfile(m).read())).convert("RGB")
                imgs.append(torch.from_numpy(np.array(img)).permute(2, 0, 1).float() / 255)
                labels.append(wanted[m.name])
    x = torch.stack(imgs)
    mean = torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1)
    std = torch.tensor([0.2023, 0.1994, 0.2010]).view(1, 3, 1, 1)
    return (x - mean) / std, torch.tensor(labels)


def boundary_tensors():
    torch.manual_seed(0)
    net = torchvision.models.mobilenet_v2(num_classes=10)
    net.train()
    x, y = load_cifar(64)
    a = net.features[0][1](net.features[0][0](x))  # conv + BN, before ReLU6
    a.retain_grad()
    h = net.features[0][2](a)
    b = net.features[1:4](h)
    out = net.classifier(torch.nn.functional.adaptive_avg_pool2d(net.features[4:](b), 1).flatten(1))
    torch.nn.functional.cross_entropy(out, y).backward()
    return {"A": a.detach().contiguous(), "A.grad": a.grad.detach().contiguous(), "B": b.detach().contiguous()}


def family(spec):
    return spec.split(":")[0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dgpipe", default=os.path.join(ROOT, "build-codecs", "bin", "dgpipe"))
    args = ap.parse_args()
    tensors = boundary_tensors()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "boundaries.safetensors")
        save_file(tensors, path)
        for name in tensors:
            out = subprocess.run([args.dgpipe, "codec", "--input", path, "--tensor", name, "--format", "csv",
                                  "--repeat", "1", "--codecs", ",".join(SPECS)], check=True, capture_output=True,
                                 text=True).stdout
            for r in csv.DictReader(io.StringIO(out)):
                r["source"] = name
                rows.append(r)
    with open(os.path.join(ROOT, "docs", "img", "codec_error.csv"), "w", newline="") as f:
        keys = ["source", "shape", "spec", "wire_bytes", "bits_per_element", "max_abs", "mean_abs", "rel_l2", "cosine"]
        w = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    fig, axes = plt.subplots(1, len(tensors), figsize=(5.2 * len(tensors), 4.4), sharey=True)
    markers = {"fp16": "s", "bf16": "D", "uniform": "o", "sortquant": "^", "fastquant": "v", "topk": "x",
               "power": "P", "svd": "*", "kmeans": "d"}
    for ax, name in zip(axes, tensors):
        sub = [r for r in rows if r["source"] == name]
        for fam in markers:
            pts = sorted((float(r["bits_per_element"]), float(r["rel_l2"])) for r in sub if family(r["spec"]) == fam)
            if pts:
                ax.plot([p[0] for p in pts], [max(p[1], 1e-6) for p in pts], marker=markers[fam], label=fam)
        shape = sub[0]["shape"] if sub else ""
        ax.set_title(f"{name} {shape}")
        ax.set_xlabel("wire bits per element (header + statistics included)")
        ax.set_yscale("log")
        ax.set_xlim(0, 17)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("relative L2 error ||x - x̂|| / ||x||")
    axes[-1].legend(fontsize=8)
    fig.suptitle("Codec error vs bits: MobileNetV2 boundaries on 64 CIFAR-10 images (dgpipe codec)")
    fig.tight_layout()
    out = os.path.join(ROOT, "docs", "img", "codec_error.png")
    fig.savefig(out, dpi=110)
    print("wrote", out)


if __name__ == "__main__":
    main()
