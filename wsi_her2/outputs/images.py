"""PNG/JPEG writing and the tiling overview picture (thumbnail, tissue outline, kept and dropped tiles)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from wsi_her2.outputs.atomic import write_bytes

# Kept tiles blue, tiles dropped by the pixel check red, tissue outline green (RGB).
KEPT_RGB = (40, 90, 220)
DROPPED_RGB = (220, 40, 40)
TISSUE_RGB = (0, 170, 0)


def encode_image(rgb: np.ndarray, suffix: str = ".png", quality: int = 90) -> bytes:
    """Encode an RGB uint8 image as PNG or JPEG bytes."""
    bgr = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR)
    params = (
        [cv2.IMWRITE_JPEG_QUALITY, quality] if suffix.lower() in (".jpg", ".jpeg") else [cv2.IMWRITE_PNG_COMPRESSION, 3]
    )
    ok, data = cv2.imencode(suffix, bgr, params)
    if not ok:  # pragma: no cover - OpenCV only fails on unsupported suffixes
        raise ValueError(f"cannot encode an image as {suffix}")
    return data.tobytes()


def write_image(path: str | Path, rgb: np.ndarray, quality: int = 90) -> Path:
    """Write an RGB uint8 image atomically; the format follows the suffix."""
    path = Path(path)
    return write_bytes(path, encode_image(rgb, path.suffix or ".png", quality))


def fit_width(rgb: np.ndarray, max_side_px: int) -> tuple[np.ndarray, float]:
    """Shrink an image so its longest side is at most ``max_side_px``; returns it and the factor."""
    h, w = rgb.shape[:2]
    factor = min(1.0, max_side_px / max(h, w))
    if factor >= 1.0:
        return rgb.copy(), 1.0
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA), factor


def draw_tiling_overview(
    thumbnail: np.ndarray,
    mask: np.ndarray,
    scale_x: float,
    scale_y: float,
    xs: np.ndarray,
    ys: np.ndarray,
    size_px: int,
    kept: np.ndarray,
    *,
    max_side_px: int = 2048,
) -> np.ndarray:
    """The slide thumbnail with the tissue outline and every tile (blue kept, red dropped).

    Args:
        thumbnail: RGB image of the whole slide.
        mask: tissue mask of the same shape.
        scale_x: level-0 pixels per thumbnail pixel along x.
        scale_y: level-0 pixels per thumbnail pixel along y.
        xs: level-0 left edges of the tiles.
        ys: level-0 top edges of the tiles.
        size_px: tile side in level-0 pixels.
        kept: True for tiles kept after the pixel check.
        max_side_px: the picture's longest side.
    """
    image, factor = fit_width(thumbnail, max_side_px)
    if image.shape[:2] != mask.shape:
        mask = cv2.resize(mask.astype(np.uint8), (image.shape[1], image.shape[0]), interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(image, contours, -1, TISSUE_RGB, 2)
    fx, fy = factor / scale_x, factor / scale_y
    for x, y, keep in zip(xs, ys, kept, strict=True):
        p0 = (int(x * fx), int(y * fy))
        p1 = (int((x + size_px) * fx) - 1, int((y + size_px) * fy) - 1)
        cv2.rectangle(image, p0, p1, KEPT_RGB if keep else DROPPED_RGB, 1)
    return image
