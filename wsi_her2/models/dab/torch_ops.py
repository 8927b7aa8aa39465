"""Image operations of the DAB scorer as batched torch tensor operations, matching OpenCV's.

Each function takes an (N, H, W) tensor (a batch of tiles, any device) and reproduces the OpenCV
call :mod:`~wsi_her2.models.dab.cells` makes, border rule included, so that the torch scorer
(:mod:`~wsi_her2.models.dab.torch_measure`) finds the same cells:

* :func:`gaussian_blur`: ``cv2.GaussianBlur(ksize=(0, 0), borderType=BORDER_REFLECT)`` (same kernel:
  ``round(8 sigma + 1) | 1`` taps, normalised in float64).
* :func:`pyr_down`, :func:`resize_linear`: ``cv2.pyrDown`` (BORDER_REFLECT_101) and
  ``cv2.resize(INTER_LINEAR)`` (half-pixel centres, as ``align_corners=False``).
* :func:`dilate_disk`, :func:`erode_disk`: ``cv2.dilate`` / ``cv2.erode`` with OpenCV's own
  ellipse footprint, pixels outside the image ignored (OpenCV's default border value), exactly:
  the footprint is split into the rectangles whose union it is, each a separable max-pool.
* :func:`connected_components`: 8-connected components (``cv2.connectedComponents``), by min-label
  propagation with pointer jumping; a component's label is its first pixel in raster order.
* :func:`chamfer_nearest`: ``cv2.distanceTransformWithLabels(DIST_L2)``, which with labels uses the
  5x5 chamfer metric (1, 1.4, 2.1969) in 16-bit fixed point; exact here (not a jump-flooding
  approximation) up to a radius: the nearest zero of each column by a cumulative max/min, then the
  metric's minimum over the columns within the radius. Ties between equidistant zero pixels go to the
  first in raster order (OpenCV's scan order may pick the other one).

Two implementations of the convolutions and window maxima give the same results: on CUDA one
kernel each (``conv2d``, ``max_pool2d``), the convolutions in float64 because cuDNN would otherwise
use TF32 for float32 (a 10-bit mantissa, which moves seeds and thresholds); on the CPU sums and
maxima of shifted views, many times faster there than those kernels on one channel. Maxima are
exact either way; the two blurs differ by float rounding (about 1e-7 OD). The tests run both on
CPU tensors.
"""

from __future__ import annotations

import functools
import math

import cv2
import numpy as np
import torch
import torch.nn.functional as F

# OpenCV's DIST_L2 5x5 chamfer weights (axial, diagonal, knight's move) in its 16-bit fixed point.
_SHIFT = 16
_AXIAL, _DIAGONAL, _KNIGHT = (round(w * (1 << _SHIFT)) for w in (1.0, 1.4, 2.1969))
_DIST_SCALE = np.float32(1.0 / (1 << _SHIFT))


def _border_index(n: int, pad: int, reflect_101: bool, device: torch.device) -> torch.Tensor:
    """Source index of each padded position: BORDER_REFLECT (``cba|abc``) or BORDER_REFLECT_101 (``cb|abc``)."""
    i = torch.arange(-pad, n + pad, device=device)
    if n == 1:
        return torch.zeros_like(i)
    period = 2 * n - 2 if reflect_101 else 2 * n
    j = torch.remainder(i, period)
    return torch.where(j >= n, period - j - (0 if reflect_101 else 1), j)


@functools.lru_cache(maxsize=32)
def _gaussian_taps(sigma_px: float) -> np.ndarray:
    """OpenCV's float kernel for ``GaussianBlur(ksize=(0, 0), sigma)`` on float32 images."""
    n = round(sigma_px * 8 + 1) | 1  # cvRound, as OpenCV sizes the kernel
    x = np.arange(n) - (n - 1) / 2
    taps = np.exp(-0.5 / (sigma_px * sigma_px) * x * x)
    return (taps / taps.sum()).astype(np.float32)


def _fused(t: torch.Tensor) -> bool:
    """Whether to use single-kernel convolutions and max-pools (on CUDA) rather than shifted views (CPU)."""
    return t.is_cuda


def _along(t: torch.Tensor, dim: int, start: int, count: int, step: int = 1) -> torch.Tensor:
    """``count`` entries of ``t`` along ``dim`` from ``start``, every ``step``-th (a view)."""
    index: list[slice] = [slice(None)] * t.ndim
    index[dim] = slice(start, start + (count - 1) * step + 1, step)
    return t[tuple(index)]


def _correlate(padded: torch.Tensor, taps: np.ndarray, dim: int, count: int, stride: int = 1) -> torch.Tensor:
    """Correlate (N, H', W') with ``taps`` along ``dim``, no padding, ``count`` outputs every ``stride``.

    One convolution on CUDA, in float64 (cuDNN would use TF32 for float32); on the CPU, a sum of
    shifted views in float32, which is many times faster there than ``conv2d`` on one channel.
    """
    if _fused(padded):
        weight = torch.as_tensor(taps, dtype=torch.float64, device=padded.device)
        weight = weight.view(1, 1, -1, 1) if dim == 1 else weight.view(1, 1, 1, -1)
        step = (stride, 1) if dim == 1 else (1, stride)
        return F.conv2d(padded.unsqueeze(1).double(), weight, stride=step).squeeze(1).float()
    out = _along(padded, dim, 0, count, stride) * float(taps[0])
    for k in range(1, len(taps)):
        out.add_(_along(padded, dim, k, count, stride), alpha=float(taps[k]))
    return out


def gaussian_blur(x: torch.Tensor, sigma_px: float) -> torch.Tensor:
    """``cv2.GaussianBlur(x, (0, 0), sigma_px, borderType=cv2.BORDER_REFLECT)`` of each (H, W) image.

    Like ``cells._blur``, a sigma under 0.3 px returns the input unchanged.
    """
    if sigma_px < 0.3:
        return x
    taps = _gaussian_taps(float(sigma_px))
    pad = len(taps) // 2
    _, h, w = x.shape
    out = _correlate(x.index_select(2, _border_index(w, pad, False, x.device)), taps, 2, w)
    return _correlate(out.index_select(1, _border_index(h, pad, False, x.device)), taps, 1, h)


_PYR_TAPS = np.array([1, 4, 6, 4, 1], np.float32) / 16


def pyr_down(x: torch.Tensor) -> torch.Tensor:
    """``cv2.pyrDown``: 5x5 binomial blur (BORDER_REFLECT_101), every other pixel, ``(n + 1) // 2`` out."""
    _, h, w = x.shape
    out = _correlate(x.index_select(2, _border_index(w, 2, True, x.device)), _PYR_TAPS, 2, (w + 1) // 2, 2)
    return _correlate(out.index_select(1, _border_index(h, 2, True, x.device)), _PYR_TAPS, 1, (h + 1) // 2, 2)


def resize_linear(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``cv2.resize(INTER_LINEAR)`` of each image to ``size`` = (H, W)."""
    return F.interpolate(x.unsqueeze(1), size=size, mode="bilinear", align_corners=False).squeeze(1)


def _window_max(x: torch.Tensor, dim: int, half: int) -> torch.Tensor:
    """Max over ``i - half .. i + half`` along ``dim`` of (N, H, W), positions outside ignored.

    One max-pool on CUDA; on the CPU by doubling windows over shifted views (log2 steps, far
    faster there than ``max_pool2d``).
    """
    if half == 0:
        return x
    if _fused(x):
        kernel, padding = ((2 * half + 1, 1), (half, 0)) if dim == 1 else ((1, 2 * half + 1), (0, half))
        return F.max_pool2d(x.unsqueeze(1), kernel, stride=1, padding=padding).squeeze(1)
    n, size = x.shape[dim], 2 * half + 1
    pad = (half, half) if dim == 2 else (0, 0, half, half)
    m = F.pad(x, pad, value=-math.inf)
    span = 1
    while 2 * span <= size:
        length = m.shape[dim] - span
        m = torch.maximum(_along(m, dim, 0, length), _along(m, dim, span, length))
        span *= 2
    return torch.maximum(_along(m, dim, 0, n), _along(m, dim, size - span, n))


@functools.lru_cache(maxsize=32)
def _disk_rectangles(radius_px: int) -> tuple[tuple[int, int], ...]:
    """OpenCV's ellipse footprint of side ``2 r + 1`` as the union of centred rectangles (half-width, half-height)."""
    size = 2 * radius_px + 1
    se = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size)).astype(bool)
    if not (np.array_equal(se, se[::-1]) and np.array_equal(se, se[:, ::-1])):
        raise AssertionError("OpenCV's ellipse footprint is expected to be symmetric")
    half_width = [int(row.sum()) // 2 for row in se]  # rows are centred runs
    rects = []
    for w in sorted(set(half_width), reverse=True):
        h = max(abs(dy - radius_px) for dy, hw in enumerate(half_width) if hw >= w)
        rects.append((w, h))
    return tuple(rects)


def dilate_disk(x: torch.Tensor, radius_px: int) -> torch.Tensor:
    """``cv2.dilate`` of float (N, H, W) images with the ellipse of side ``2 r + 1`` (borders ignored)."""
    out: torch.Tensor | None = None
    for w, h in _disk_rectangles(int(radius_px)):
        part = _window_max(_window_max(x, 2, w), 1, h)
        out = part if out is None else torch.maximum(out, part)
    assert out is not None
    return out


def erode_disk(x: torch.Tensor, radius_px: int) -> torch.Tensor:
    """``cv2.erode`` with the ellipse of side ``2 r + 1`` (pixels outside the image ignored)."""
    return -dilate_disk(-x, radius_px)


def dilate_mask(mask: torch.Tensor, radius_px: int) -> torch.Tensor:
    """:func:`dilate_disk` of a bool mask."""
    return dilate_disk(mask.to(torch.float32), radius_px) > 0.5


def erode_mask(mask: torch.Tensor, radius_px: int) -> torch.Tensor:
    """:func:`erode_disk` of a bool mask (True outside the image, as OpenCV's default border)."""
    return erode_disk(mask.to(torch.float32), radius_px) > 0.5


def dilate_3x3(x: torch.Tensor) -> torch.Tensor:
    """``cv2.dilate`` with a 3x3 square."""
    return _window_max(_window_max(x, 2, 1), 1, 1)


def connected_components(mask: torch.Tensor) -> torch.Tensor:
    """8-connected components of each (H, W) bool mask.

    Returns:
        int64 (N, H, W): the raster index (``y * W + x``) of each component's first pixel, the
        same for all its pixels; -1 outside the mask.
    """
    n, h, w = mask.shape
    if h * w >= 1 << 24:  # labels travel as exact float32 integers through max-pooling
        raise ValueError(f"tiles of {h}x{w} px are too large for connected_components")
    inf = torch.tensor(math.inf, device=mask.device)
    index = torch.arange(h * w, device=mask.device, dtype=torch.float32).view(1, h, w)
    label = torch.where(mask, index, inf)
    while True:
        low = -dilate_3x3(-label)
        low = torch.where(mask, low, inf)
        # Pointer jumping: take the label of the pixel the label names (a pixel of the same component).
        target = torch.where(mask, low, 0).long().view(n, -1)
        low = torch.where(mask, torch.gather(low.view(n, -1), 1, target).view(n, h, w), inf)
        if torch.equal(low, label):
            break
        label = low
    return torch.where(mask, label, -1).long()


@functools.lru_cache(maxsize=16)
def _chamfer_keys(radius_px: int) -> tuple[np.ndarray, int, int]:
    """Search keys of each offset (dx row, dy column, both shifted by r), their shift and the sentinel.

    A key is ``distance << bits | rank``: the fixed-point chamfer distance, OpenCV's two-pass 5x5
    result (the cheapest path of axial, diagonal and knight's moves), then the offset's raster rank,
    so that the smallest key is the nearest pixel and, among equidistant ones, the first in raster
    order. Column ``2 r + 1`` stands for "no True pixel within r in that column" and holds the
    sentinel, larger than every key. Keys are int32 when they fit (half the memory traffic of int64,
    which matters on the GPU), else int64.
    """
    r = radius_px
    side = 2 * r + 1
    dx = np.arange(-r, r + 1)[:, None]
    dy = np.arange(-r, r + 1)[None, :]
    big, small = np.maximum(abs(dx), abs(dy)), np.minimum(abs(dx), abs(dy))
    d = np.where(
        2 * small <= big,
        _KNIGHT * small + _AXIAL * (big - 2 * small),
        _KNIGHT * (big - small) + _DIAGONAL * (2 * small - big),
    ).astype(np.int64)
    bits = (side * side - 1).bit_length()
    wide = int(d.max()).bit_length() + bits > 30
    sentinel = int(np.iinfo(np.int64 if wide else np.int32).max)
    keys = np.full((side, side + 1), sentinel, np.int64)
    keys[:, :side] = (d << bits) | ((dy + r) * side + (dx + r))
    return keys.astype(np.int64 if wide else np.int32), bits, sentinel


def chamfer_nearest(zero: torch.Tensor, radius_px: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Chamfer distance to, and raster index of, the nearest True pixel of each (H, W) mask.

    ``cv2.distanceTransformWithLabels(~zero, DIST_L2, 3, DIST_LABEL_PIXEL)`` for every pixel within
    ``radius_px`` of a True pixel (the chamfer distance is at least the larger of |dx| and |dy|, so
    no nearer one lies outside the window searched). Ties go to the first pixel in raster order.

    Returns:
        (float32 distance, int64 ``y * W + x`` of the nearest True pixel): exact within
        ``radius_px``; beyond it the distance is larger than ``radius_px`` (inf where no True pixel
        lies within the window) and the index is -1 where the distance is inf.
    """
    n, h, w = zero.shape
    r = int(radius_px)
    side = 2 * r + 1
    dev = zero.device
    # The nearest True pixel of each column, above or below (above on a tie: raster order).
    rows = torch.arange(h, device=dev, dtype=torch.int32).view(1, h, 1)
    far = torch.tensor(1 << 30, device=dev, dtype=torch.int32)
    above = torch.cummax(torch.where(zero, rows, -far), dim=1).values
    below = torch.cummin(torch.where(zero, rows, far).flip(1), dim=1).values.flip(1)
    up, down = rows - above, below - rows
    offset = torch.where(up <= down, -up, down)  # row of the column's nearest, minus this row
    column = torch.where(offset.abs() <= r, offset + r, side).long()
    column = F.pad(column, (r, r), value=side)
    # The cheapest of the columns within r: one gather and one minimum per column offset.
    keys_np, bits, sentinel = _chamfer_keys(r)
    keys = torch.as_tensor(keys_np, device=dev)
    best = torch.full((n, h, w), sentinel, dtype=keys.dtype, device=dev)
    for dx in range(-r, r + 1):
        torch.minimum(best, torch.take(keys[dx + r], column[..., r + dx : r + dx + w]), out=best)
    found = best != sentinel
    rank = (best & ((1 << bits) - 1)).long()
    dy, dx_best = rank // side - r, rank % side - r
    index = (rows.long() + dy) * w + torch.arange(w, device=dev).view(1, 1, w) + dx_best
    dist = torch.where(found, (best >> bits).to(torch.float32) * float(_DIST_SCALE), math.inf)
    return dist, torch.where(found, index, -1)
