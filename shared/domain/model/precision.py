"""Mixed precision: bfloat16 arithmetic where the hardware does it natively, float32 elsewhere.

On CPUs with AVX-512 BF16 (or AMX) oneDNN runs bfloat16 convolutions natively, faster than float32.
Without those instructions oneDNN still accepts bfloat16 on any AVX-512 CPU (its own "supported" check says
yes) but emulates it, *slower* than float32, so `auto` asks for the instructions themselves (the measured
steps: shared/weights/MODEL_CARD.md, "Mixed precision").
"""
from __future__ import annotations

import contextlib

import torch

from shared.domain.model.options import PRECISIONS as CHOICES


def native_bf16(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return any(getattr(torch.cpu, probe, lambda: False)()
                   for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))
    return False


def resolve(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for `precision` on `device`, or None for plain float32."""
    if precision not in CHOICES:
        raise ValueError(f"precision must be one of {', '.join(CHOICES)}, not {precision!r}")
    if precision == "fp32" or (precision == "auto" and not native_bf16(device)):
        return None
    return torch.bfloat16


def autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)
