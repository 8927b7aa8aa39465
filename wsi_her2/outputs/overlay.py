"""overlay.png: the slide thumbnail with the per-tile classes blended over it, and a legend."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import cv2
import numpy as np

from wsi_her2.outputs.images import fit_width

_ALPHA = 0.45
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def draw_class_overlay(
    thumbnail: np.ndarray,
    scale_x: float,
    scale_y: float,
    xs: np.ndarray,
    ys: np.ndarray,
    size_px: int,
    classes: Sequence[str],
    predicted: np.ndarray,
    colors: Mapping[str, Sequence[int]],
    *,
    title: str = "",
    max_side_px: int = 2048,
) -> np.ndarray:
    """Blend tile classes over the thumbnail and add a legend.

    Args:
        thumbnail: RGB image of the slide.
        scale_x: level-0 pixels per thumbnail pixel along x.
        scale_y: level-0 pixels per thumbnail pixel along y.
        xs: level-0 left edges of the tiles.
        ys: level-0 top edges.
        size_px: tile side in level-0 pixels.
        classes: class names (index = predicted value).
        predicted: class index per tile, -1 for tiles with no result (left uncoloured).
        colors: RGB colour of each class name.
        title: a line printed above the legend (e.g. the slide score).
        max_side_px: longest side of the picture.
    """
    image, factor = fit_width(thumbnail, max_side_px)
    layer = image.copy()
    painted = np.zeros(image.shape[:2], bool)
    fx, fy = factor / scale_x, factor / scale_y
    for x, y, k in zip(xs, ys, predicted, strict=True):
        if k < 0:
            continue
        x0, y0 = int(x * fx), int(y * fy)
        x1, y1 = max(x0 + 1, int((x + size_px) * fx)), max(y0 + 1, int((y + size_px) * fy))
        cv2.rectangle(layer, (x0, y0), (x1 - 1, y1 - 1), tuple(int(c) for c in colors[classes[int(k)]]), -1)
        painted[y0:y1, x0:x1] = True
    blended = image.copy()
    blended[painted] = (image[painted] * (1 - _ALPHA) + layer[painted] * _ALPHA).astype(np.uint8)
    return _with_legend(blended, classes, colors, title)


def _with_legend(
    image: np.ndarray, classes: Sequence[str], colors: Mapping[str, Sequence[int]], title: str
) -> np.ndarray:
    """Append a white legend band below the image."""
    width = max(image.shape[1], 360)
    line = 28
    band = np.full((line * (len(classes) + (2 if title else 1)), width, 3), 255, np.uint8)
    y = line - 8
    if title:
        cv2.putText(band, title, (10, y), _FONT, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
        y += line
    for name in classes:
        cv2.rectangle(band, (10, y - 14), (34, y + 4), tuple(int(c) for c in colors[name]), -1)
        cv2.putText(band, name, (44, y), _FONT, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
        y += line
    if image.shape[1] < width:
        pad = np.full((image.shape[0], width - image.shape[1], 3), 255, np.uint8)
        image = np.concatenate([image, pad], axis=1)
    return np.concatenate([image, band], axis=0)
