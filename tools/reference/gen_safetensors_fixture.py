"""Writes tests/fixtures/runtime/reference.safetensors with the reference safetensors writer.

One small tensor of every dtype vlpeft supports (plus a 0-dim and a zero-size tensor) and PEFT's
metadata, so the C++ reader is checked on a file it did not write and the C++ writer is checked to
reproduce the reference bytes. Run with the pinned venv:
    tools/reference/.venv/bin/python tools/reference/gen_safetensors_fixture.py
"""
from pathlib import Path

import torch
from safetensors.torch import save_file

OUT = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "runtime" / "reference.safetensors"

tensors = {
    "weight": torch.arange(6, dtype=torch.float32).reshape(2, 3),
    "double": torch.tensor([0.5, -1.5], dtype=torch.float64),
    "half": torch.tensor([1.0, -2.0, 0.5], dtype=torch.float16),
    "brain": torch.tensor([1.0, -2.0, 0.5], dtype=torch.bfloat16),
    "ids": torch.tensor([7, -8], dtype=torch.int32),
    "ids64": torch.tensor([9, -10, 11], dtype=torch.int64),
    "bytes": torch.tensor([0, 255], dtype=torch.uint8),
    "mask": torch.tensor([True, False, True]),
    "scalar": torch.tensor(3.0, dtype=torch.float32),
    "empty": torch.zeros(0, 4, dtype=torch.float32),
}

OUT.parent.mkdir(parents=True, exist_ok=True)
save_file(tensors, str(OUT), metadata={"format": "pt"})
print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")
