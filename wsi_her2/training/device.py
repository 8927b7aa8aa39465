"""The compute device and the CUDA speed-ups (bf16 autocast, channels-last) for training and evaluation."""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from wsi_her2.device import resolve_device

__all__ = ["autocast", "resolve_device", "use_bf16"]


def use_bf16(device: torch.device, wanted: bool) -> bool:
    """bf16 autocast only on CUDA GPUs that support it (Ampere and later)."""
    return wanted and device.type == "cuda" and torch.cuda.is_bf16_supported()


def autocast(device: torch.device, enabled: bool) -> Any:
    """A bf16 autocast context on CUDA when enabled, else a no-op context."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
