"""The one device resolver: ``--device auto|cpu|cuda|cuda:N`` -> a torch.device."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from umust_cli.errors import BadInputError

if TYPE_CHECKING:
    import torch


def resolve_device(name: str) -> "torch.device":
    """"auto" (CUDA when available, else the CPU), "cpu", "cuda" or "cuda:N".

    BadInputError for another name, or for CUDA (or GPU N) that this machine lacks.
    """
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    match = re.fullmatch(r"cuda(?::(\d+))?", name)
    if match is None:
        raise BadInputError(f"unknown device {name!r} (auto, cpu, cuda or cuda:N)")
    if not torch.cuda.is_available():
        raise BadInputError(f"--device {name} asked for, but no CUDA device is available")
    if match.group(1) is not None and int(match.group(1)) >= torch.cuda.device_count():
        raise BadInputError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return torch.device(name)


def fast_bf16(device: "torch.device") -> bool:
    """Whether bf16 autocast speeds ``device`` up: a CUDA device that supports bf16, or a CPU
    with bf16 instructions (AVX512-BF16 or AMX). Elsewhere (e.g. an AVX2-only CPU) bf16 is
    emulated and several times slower than fp32, so ``--precision auto`` picks fp32 there."""
    import torch

    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = set(f.read().split())
    except OSError:
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16"})
