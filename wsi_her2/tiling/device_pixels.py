"""The CPU loader's pixel work as torch operations on a batch, on any device (for GPU decoding).

Tiles decoded on the GPU are resized and checked there, so they must come out as the CPU loader
makes them: :func:`resize_tiles` follows :func:`wsi_her2.slide.regions.resize_area` (the same
choice of area or bilinear, OpenCV's rounding) and :func:`pixel_check_tiles` follows
:func:`wsi_her2.tiling.pixel_check.pixel_check` operation by operation (OpenCV's fixed-point grey,
its 8-bit saturation, reflected borders), so the same pixels give the same kept tiles. Tensors are
(n, 3, h, w) uint8; tests run everything on CPU tensors against the OpenCV code.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

from wsi_her2.tiling.pixel_check import _MIN_FRACTION_FOR_BLUR, BLUR_CHECK_PX, TISSUE_CHECK_PX
from wsi_her2.tissue import TissueThresholds

# OpenCV's 8-bit RGB -> grey: (9798 R + 19235 G + 3735 B + 2^14) >> 15.
_GREY = (9798, 19235, 3735)
_LAPLACIAN = ((0.0, 1.0, 0.0), (1.0, -4.0, 1.0), (0.0, 1.0, 0.0))


def shrink_integer(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Area reduction by an integer factor, rounded as OpenCV's fast INTER_AREA path rounds."""
    h, w = x.shape[-2] // factor, x.shape[-1] // factor
    sums = F.avg_pool2d(x[..., : h * factor, : w * factor].float(), factor) * (factor * factor)
    if factor == 2:
        return torch.floor((sums + 2.0) / 4.0).to(torch.uint8)  # (a + b + c + d + 2) >> 2
    return torch.round(sums / (factor * factor)).to(torch.uint8)


@functools.lru_cache(maxsize=64)
def _on(device: torch.device, name: str, *args: int | bool) -> torch.Tensor:
    """A constant on ``device``, made once (no host-to-device copy per batch)."""
    if name == "laplacian":
        return torch.tensor(_LAPLACIAN, device=device).view(1, 1, 3, 3)
    if name == "saturation":
        return torch.as_tensor(_saturation_scale(), device=device)
    n_in, n_out, linear = args
    return torch.as_tensor(_weights(int(n_in), int(n_out), bool(linear)), dtype=torch.float32, device=device)


@functools.lru_cache(maxsize=32)
def _weights(n_in: int, n_out: int, linear: bool) -> np.ndarray:
    """(n_out, n_in) interpolation weights along one axis, as OpenCV computes them."""
    weights = np.zeros((n_out, n_in), np.float64)
    scale = n_in / n_out
    for i in range(n_out):
        if linear:
            fx = (i + 0.5) * scale - 0.5
            sx = int(np.floor(fx))
            fx -= sx
            if sx < 0:
                fx, sx = 0.0, 0
            if sx >= n_in - 1:
                fx, sx = 0.0, n_in - 1
            weights[i, sx] += 1.0 - fx
            if fx:
                weights[i, sx + 1] += fx
        else:  # area: the share of each source pixel under the output pixel's footprint
            lo, hi = i * scale, (i + 1) * scale
            for j in range(int(np.floor(lo)), min(n_in, int(np.ceil(hi)))):
                weights[i, j] = (min(hi, j + 1) - max(lo, j)) / scale
    return weights


def resize_tiles(x: torch.Tensor, size: int) -> torch.Tensor:
    """(n, 3, h, w) uint8 tiles to (n, 3, size, size), as :func:`~wsi_her2.slide.regions.resize_area` does."""
    h, w = x.shape[-2:]
    if h == size and w == size:
        return x
    if h % size == 0 and w % size == 0 and h // size == w // size and size <= h:
        return shrink_integer(x, h // size)
    linear = size > w or size > h or (size * 2 >= w and size * 2 >= h)
    wy, wx = _on(x.device, "weights", h, size, linear), _on(x.device, "weights", w, size, linear)
    out = torch.einsum("oh,nchw,pw->ncop", wy, x.float(), wx)
    return torch.round(out).clamp_(0, 255).to(torch.uint8)


def _grey(x: torch.Tensor) -> torch.Tensor:
    rgb = x.to(torch.int32)
    value = rgb[:, 0] * _GREY[0] + rgb[:, 1] * _GREY[1] + rgb[:, 2] * _GREY[2] + (1 << 14)
    return (value >> 15).to(torch.uint8)  # (n, h, w)


@functools.lru_cache(maxsize=8)
def _saturation_scale() -> np.ndarray:
    scale = np.zeros(256, np.int32)
    scale[1:] = np.round((255 << 12) / np.arange(1, 256))
    return scale


def _tissue(x: torch.Tensor, thresholds: TissueThresholds) -> torch.Tensor:
    """:func:`wsi_her2.tissue.tissue_pixels` of each tile: (n, h, w) bool."""
    rgb = x.to(torch.int32)
    high, low = rgb.amax(dim=1), rgb.amin(dim=1)
    scale = _on(x.device, "saturation")
    saturation = ((high - low) * scale[high.long()] + 2048) >> 12  # OpenCV's 8-bit HSV saturation
    grey = _grey(x)
    dense = grey.float() < thresholds.glass_gray * 10.0 ** (-thresholds.optical_density)
    g = F.pad(grey.float().unsqueeze(1), (2, 2, 2, 2), mode="reflect")
    mean = F.avg_pool2d(g, 5, stride=1)
    variance = (F.avg_pool2d(g * g, 5, stride=1) - mean * mean).squeeze(1)
    return (saturation > thresholds.saturation) | dense | (variance > thresholds.texture**2)


def _shrink_to(x: torch.Tensor, target_px: int) -> torch.Tensor:
    factor = round(x.shape[-1] / target_px)
    return x if factor <= 1 else shrink_integer(x, factor)


def pixel_check_tiles(x: torch.Tensor, thresholds: TissueThresholds) -> tuple[torch.Tensor, torch.Tensor]:
    """Tissue fraction and blur score of each tile, as :func:`~wsi_her2.tiling.pixel_check.pixel_check`.

    Returns:
        (fractions, blur scores): float64 tensors of n values on the tiles' device.
    """
    blur_image = _shrink_to(x, BLUR_CHECK_PX)
    small = _shrink_to(blur_image, TISSUE_CHECK_PX)
    tissue = _tissue(small, thresholds)
    fractions = tissue.flatten(1).sum(dim=1).double() / (small.shape[-2] * small.shape[-1])
    grey = F.pad(_grey(blur_image).float().unsqueeze(1), (1, 1, 1, 1), mode="reflect")
    laplacian = F.conv2d(grey, _on(x.device, "laplacian")).flatten(1).double()
    variance = (laplacian * laplacian).mean(dim=1) - laplacian.mean(dim=1) ** 2
    blur = torch.where(fractions >= _MIN_FRACTION_FOR_BLUR, variance.clamp(min=0) / fractions.clamp(min=1e-12), 0.0)
    return fractions, blur
