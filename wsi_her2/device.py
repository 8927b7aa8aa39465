"""Choosing the torch device (one place for scoring, training, evaluation and explanation)."""

from __future__ import annotations

import torch

from wsi_her2.errors import DeviceError


def resolve_device(name: str) -> torch.device:
    """The torch device for a --device value.

    Raises:
        DeviceError: CUDA or MPS was asked for and is not available.
    """
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError(
                "CUDA was asked for (--device cuda) but no CUDA GPU is available",
                hint="use --device cpu or auto",
            )
        device = torch.device(name)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceError(f"{name} does not exist: {torch.cuda.device_count()} GPU(s) found")
        return device
    if name == "mps":
        if not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
            raise DeviceError("MPS was asked for (--device mps) but is not available", hint="use --device cpu or auto")
        return torch.device("mps")
    if name != "cpu":
        raise DeviceError(f"unknown device {name!r}", hint="use auto, cpu, cuda, cuda:N or mps")
    return torch.device("cpu")
