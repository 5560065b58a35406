#!/usr/bin/env python3
"""Writes tests/data/python_written.safetensors with the Python `safetensors` package (the reference writer):
a few small tensors of several dtypes and a metadata map. tests/engine/test_safetensors.cpp reads it and checks
the exact values listed here. Deterministic; a few hundred bytes."""
import os

import torch
from safetensors.torch import save_file

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "python_written.safetensors")


def main():
    tensors = {
        # values chosen to be exact in every dtype they are stored in
        "weight.f32": torch.arange(6, dtype=torch.float32).reshape(2, 3) * 0.5 - 1.0,   # -1.0 .. 1.5
        "weight.f64": torch.tensor([1.0 / 3.0, -2.5e-300], dtype=torch.float64),
        "half.f16": torch.tensor([[0.5, -2.0], [65504.0, 1.0 / 1024.0]], dtype=torch.float16),
        "half.bf16": torch.tensor([3.0, -0.15625, 2.0 ** 100], dtype=torch.bfloat16),
        "ids.i64": torch.tensor([[0, -1], [2**40, 7]], dtype=torch.int64),
        "ids.i32": torch.tensor([-2147483648, 5, 2147483647], dtype=torch.int32),
        "small.i16": torch.tensor([-300, 300], dtype=torch.int16),
        "small.i8": torch.tensor([-128, 127, 0], dtype=torch.int8),
        "bytes.u8": torch.tensor([0, 255, 17], dtype=torch.uint8),
        "mask.bool": torch.tensor([True, False, True, True], dtype=torch.bool),
        "scalar": torch.tensor(42.0, dtype=torch.float32),
        "empty": torch.zeros(0, 3, dtype=torch.float32),
    }
    save_file(tensors, OUT, metadata={"format": "pt", "written_by": "make_safetensors_fixture.py"})
    print("wrote", os.path.normpath(OUT), os.path.getsize(OUT), "bytes")


if __name__ == "__main__":
    main()
