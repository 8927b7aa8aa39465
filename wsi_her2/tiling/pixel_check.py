"""The pixel-level tile check: is a delivered tile tissue, and is it in focus?

The mask that laid the grid is coarse (~4 µm/px), so every delivered tile is looked at again:
the fraction of its pixels that are tissue (the mask's own thresholds) and a blur score. The
check works on small copies, reduced by an integer factor (OpenCV's fast area path): tissue at
~64 px across (a 256-µm tile becomes ~4 µm/px, the resolution the thresholds were set at), blur
at ~128 px across (~2 µm/px: enough to see whether nuclei have edges).

:func:`pixel_check_batch` gives the same numbers as :func:`pixel_check` tile by tile, in a handful
of OpenCV calls for a whole batch (the tiles stacked one above the other, each filter padded per
tile): per tile, the Python and call overhead of some twenty small operations was most of the cost.
"""

from __future__ import annotations

import cv2
import numpy as np

from wsi_her2.tissue import TissueThresholds, tissue_pixels

TISSUE_CHECK_PX = 64
BLUR_CHECK_PX = 128
# Below this tissue fraction there is no tissue whose focus could be judged: blur score 0.
_MIN_FRACTION_FOR_BLUR = 0.01


def _shrink(rgb: np.ndarray, target_px: int) -> np.ndarray:
    factor = round(rgb.shape[1] / target_px)
    if factor <= 1:
        return rgb
    h, w = rgb.shape[0] // factor, rgb.shape[1] // factor
    return cv2.resize(rgb[: h * factor, : w * factor], (w, h), interpolation=cv2.INTER_AREA)


def pixel_check(rgb: np.ndarray, thresholds: TissueThresholds) -> tuple[float, float]:
    """Tissue fraction and blur score of one tile.

    Returns:
        (fraction of pixels that are tissue, blur score). The blur score is the variance of the
        Laplacian of the grey tile at ~2 µm/px, divided by the tissue fraction (glass adds no
        edges, so this is about the variance over the tissue alone); 0 when there is no tissue.
    """
    blur_image = _shrink(rgb, BLUR_CHECK_PX)
    small = _shrink(blur_image, TISSUE_CHECK_PX)
    fraction = float(np.count_nonzero(tissue_pixels(small, thresholds))) / (small.shape[0] * small.shape[1])
    if fraction < _MIN_FRACTION_FOR_BLUR:
        return fraction, 0.0
    laplacian = cv2.Laplacian(cv2.cvtColor(blur_image, cv2.COLOR_RGB2GRAY), cv2.CV_16S, ksize=1)
    _, std = cv2.meanStdDev(laplacian)
    return fraction, float(std[0, 0]) ** 2 / fraction


def _shrink_stack(images: np.ndarray, target_px: int) -> np.ndarray:
    """:func:`_shrink` of every tile of an (n, h, w, 3) stack in one call."""
    n, height, width = images.shape[:3]
    factor = round(width / target_px)
    if factor <= 1:
        return images
    h, w = height // factor, width // factor
    crop = images[:, : h * factor, : w * factor]
    # Tiles one above the other: a block of factor x factor pixels never straddles two tiles.
    tall = np.ascontiguousarray(crop).reshape(n * h * factor, w * factor, -1)
    return cv2.resize(tall, (w, n * h), interpolation=cv2.INTER_AREA).reshape(n, h, w, -1)


def pixel_check_batch(images: np.ndarray, thresholds: TissueThresholds) -> tuple[np.ndarray, np.ndarray]:
    """:func:`pixel_check` of every tile of an (n, h, w, 3) uint8 stack.

    Returns:
        (tissue fractions, blur scores), float32 arrays of n values.
    """
    n = images.shape[0]
    fractions = np.zeros(n, np.float32)
    blur = np.zeros(n, np.float32)
    if n == 0:
        return fractions, blur
    blur_images = _shrink_stack(images, BLUR_CHECK_PX)
    small = _shrink_stack(blur_images, TISSUE_CHECK_PX)
    sh, sw = small.shape[1:3]
    tissue = tissue_pixels(small.reshape(n * sh, sw, 3), thresholds, tile_rows=sh)
    exact = np.count_nonzero(tissue.reshape(n, -1), axis=1) / (sh * sw)
    fractions[:] = exact
    judged = np.flatnonzero(exact >= _MIN_FRACTION_FOR_BLUR)
    if len(judged) == 0:
        return fractions, blur
    bh, bw = blur_images.shape[1:3]
    grey = cv2.cvtColor(np.ascontiguousarray(blur_images[judged]).reshape(-1, bw, 3), cv2.COLOR_RGB2GRAY)
    # One-pixel reflected border per tile (OpenCV's default), so the Laplacian stays inside each.
    padded = np.pad(grey.reshape(len(judged), bh, bw), ((0, 0), (1, 1), (1, 1)), mode="reflect")
    laplacian = cv2.Laplacian(padded.reshape(-1, bw + 2), cv2.CV_16S, ksize=1)
    inner = laplacian.reshape(len(judged), bh + 2, bw + 2)[:, 1:-1, 1:-1]
    values = inner.astype(np.float32).reshape(len(judged), -1)  # exact: |values| <= 1020
    # Row sums in float64, as cv2.meanStdDev accumulates (numpy's var is twice as slow here).
    mean = cv2.reduce(values, 1, cv2.REDUCE_SUM, dtype=cv2.CV_64F)[:, 0] / values.shape[1]
    mean_square = cv2.reduce(cv2.multiply(values, values), 1, cv2.REDUCE_SUM, dtype=cv2.CV_64F)[:, 0]
    variance = np.maximum(mean_square / values.shape[1] - mean * mean, 0.0)
    blur[judged] = variance / exact[judged]
    return fractions, blur
