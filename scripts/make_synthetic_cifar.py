#!/usr/bin/env python3
"""Writes a small learnable dataset in the CIFAR-10 binary layout (no download, no numpy): what the GPU check
trains on, on a machine without the real data.

    scripts/make_synthetic_cifar.py OUT_DIR [--per-file 320] [--seed 5]

OUT_DIR/cifar-10-batches-bin/ gets data_batch_1..5.bin and test_batch.bin, each `per-file` records of one
label byte and 3x32x32 pixel bytes. Each class has its own colour (bits of the label pick a dark or bright
level per channel) and a vertical band whose width grows with the label, plus uniform noise: a small
network learns it in a few dozen steps, so the losses of a run move as on real data.
"""
import argparse
import random
from pathlib import Path


def record(rng):
    label = rng.randrange(10)
    out = bytearray([label])
    for c in range(3):
        base = 190 if (label >> c) & 1 else 60
        if c == 0 and label >= 8:
            base = 128
        width = 4 + 3 * label
        for p in range(1024):
            v = base + (30 if p % 32 < width else 0) + rng.randrange(41) - 20
            out.append(min(255, max(0, v)))
    return bytes(out)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out_dir")
    p.add_argument("--per-file", type=int, default=320)
    p.add_argument("--seed", type=int, default=5)
    a = p.parse_args()
    rng = random.Random(a.seed)
    sub = Path(a.out_dir) / "cifar-10-batches-bin"
    sub.mkdir(parents=True, exist_ok=True)
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        (sub / name).write_bytes(b"".join(record(rng) for _ in range(a.per_file)))
    print(f"wrote {6 * a.per_file} images into {sub}")


if __name__ == "__main__":
    main()
