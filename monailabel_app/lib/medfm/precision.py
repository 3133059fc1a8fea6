"""The number format the FM runs in: bf16 where the hardware does it natively, fp32 everywhere else.

bf16 is the largest measured speed-up on both targets (about 2x on the 2-core AVX-512-BF16 CPU for the encoder)
and changes zero-shot Dice on the sample lesions by at most 0.03 (README, benchmarks). A site that wants the
reference numerics sets `--conf precision fp32`.
"""

from __future__ import annotations

import contextlib
import typing
from functools import lru_cache
from pathlib import Path
from typing import Literal

import torch

from .errors import InputError

Precision = Literal["auto", "bf16", "fp32"]  # the server setting's type: its choices are written here only
PRECISIONS = typing.get_args(Precision)
_CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # without them, CPU bf16 is emulated and slower than fp32


@lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: be conservative
        return False
    return any(flag in flags for flag in _CPU_BF16_FLAGS)


def resolve(requested: str, device: torch.device | str) -> str:
    """'auto' becomes 'bf16' or 'fp32' for this device; an explicit choice is checked, not second-guessed."""
    if requested not in PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {requested!r}")
    device_type = torch.device(device).type
    native = (torch.cuda.is_available() and torch.cuda.is_bf16_supported()) if device_type == "cuda" \
        else device_type == "cpu" and cpu_has_native_bf16()
    if requested == "auto":
        return "bf16" if native else "fp32"
    return requested


def autocast(device: torch.device | str, precision: str):
    """A context that runs matmuls and convolutions in `precision` (already resolved) on `device`."""
    device_type = torch.device(device).type
    if precision == "bf16" and device_type in ("cuda", "cpu"):
        return torch.autocast(device_type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def decoder_precision(device: torch.device | str, precision: str) -> str:
    """The mask decoder's number format: fp32 on the CPU whatever the encoder runs in.

    A decoder pass is a few small products per prompt; on the CPU, with the image tokens never projected
    (backends/sam_transformer.py), fp32 is the faster of the two and gives the reference numerics (2-core Intel
    Xeon, 1 thread, 2026-12-07: one box-and-click pass 34 ms fp32, 42 ms bf16 autocast).
    """
    return "fp32" if torch.device(device).type == "cpu" else precision
