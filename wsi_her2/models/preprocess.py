"""The one preprocessing path from uint8 RGB tiles to network input.

Training, evaluation, scoring and explanation all use it, so a model always sees what it was
trained on.
Resizing (when tiles are not already at the card's input size) and normalisation run on the
target device: on a GPU the CPU only moves uint8 bytes.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from wsi_her2.models.card import ModelCard


def normalisation(card: ModelCard, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std of the card as (1, 3, 1, 1) tensors on ``device``, scaled to 0-255 input."""
    mean = torch.tensor(card.mean, dtype=torch.float32, device=device).view(1, 3, 1, 1) * 255.0
    std = torch.tensor(card.std, dtype=torch.float32, device=device).view(1, 3, 1, 1) * 255.0
    return mean, std


def to_input(
    images: np.ndarray | torch.Tensor,
    card: ModelCard,
    device: torch.device | str = "cpu",
    *,
    channels_last: bool = False,
    non_blocking: bool = False,
    stats: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Turn (B, H, W, 3) uint8 RGB tiles into normalised float (B, 3, S, S) network input.

    Args:
        images: uint8 tiles, numpy or a (possibly pinned) CPU tensor.
        card: the model card (input size, mean, std).
        device: where the network runs.
        channels_last: return channels-last memory format (faster convolutions on CUDA).
        non_blocking: asynchronous host-to-device copy (with pinned memory).
        stats: precomputed :func:`normalisation` (saves a tiny allocation per batch).
    """
    tensor = torch.from_numpy(np.ascontiguousarray(images)) if isinstance(images, np.ndarray) else images
    x = tensor.to(device, non_blocking=non_blocking).permute(0, 3, 1, 2).float()
    size = card.input_size_px
    if x.shape[-1] != size or x.shape[-2] != size:
        # Antialiased bilinear ~ area averaging for downscales; the same on CPU and GPU.
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    mean, std = stats if stats is not None else normalisation(card, x.device)
    x = (x - mean) / std
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x.contiguous()
