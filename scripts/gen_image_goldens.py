#!/usr/bin/env python3
"""Writes tests/data/cifar/pil_reference.{txt,bin}: reference decodes (PIL) of a fixed sample of the CIFAR-10 JPEG
set in ../shared/data/cifar10-jpg.tar.gz, read straight from the archive.

pil_reference.txt: one line per image, "<path in archive> <height> <width> <label index>"; pil_reference.bin: their
RGB pixels (row-major HWC, uint8) back to back. The C++ decoder (stb_image) must match within 1 per pixel.
Usage: python3 scripts/gen_image_goldens.py [--shared ../shared/data]
"""
import argparse
import io
import os
import tarfile

from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=os.path.join(REPO, "..", "shared", "data"))
    args = ap.parse_args()
    wanted = []
    for i, cls in enumerate(CLASSES):
        wanted.append(f"train/{cls}/{(i * 487 + 13) % 5000:04d}.jpg")
        wanted.append(f"test/{cls}/{(i * 97 + 5) % 1000:04d}.jpg")
    found = {}
    with tarfile.open(os.path.join(args.shared, "cifar10-jpg.tar.gz")) as tar:
        for member in tar:
            if member.name in wanted:
                found[member.name] = tar.extractfile(member).read()
    out_dir = os.path.join(REPO, "tests", "data", "cifar")
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "pil_reference.txt"), "w") as txt, \
            open(os.path.join(out_dir, "pil_reference.bin"), "wb") as binf:
        txt.write(f"# PIL {Image.__version__ if hasattr(Image, '__version__') else ''} decodes, "
                  "written by scripts/gen_image_goldens.py\n")
        for name in wanted:
            img = Image.open(io.BytesIO(found[name])).convert("RGB")
            w, h = img.size
            txt.write(f"{name} {h} {w} {CLASSES.index(name.split('/')[1])}\n")
            binf.write(img.tobytes())
    print(f"wrote {len(wanted)} reference decodes to {os.path.relpath(out_dir, REPO)}")


if __name__ == "__main__":
    main()
