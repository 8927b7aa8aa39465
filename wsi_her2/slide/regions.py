"""Reading at a resolution: pick the pyramid level, read, resize. Shared by every backend."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from wsi_her2.slide.base import LevelInfo, SlideReader

# A level counts as "at least as fine as needed" within this tolerance (downsamples like 4.0002).
_DOWNSAMPLE_TOLERANCE = 1.01
# Strips of the source level read at a time for a thumbnail: bounds memory on huge one-level files.
_STRIP_BYTES = 256 * 1024 * 1024


def best_level(levels: Sequence[LevelInfo], downsample: float) -> LevelInfo:
    """The coarsest level that is still at least as fine as ``downsample`` (never upsample).

    Args:
        levels: the slide's pyramid, level 0 first.
        downsample: level-0 pixels per output pixel wanted.
    """
    chosen = levels[0]
    for level in levels:
        if level.downsample <= downsample * _DOWNSAMPLE_TOLERANCE and level.downsample >= chosen.downsample:
            chosen = level
    return chosen


def resize_area(image: np.ndarray, width: int, height: int, out: np.ndarray | None = None) -> np.ndarray:
    """Resize without aliasing, or return the image itself when the size already matches.

    Strong reductions use area averaging. A reduction by less than 2x (e.g. a 256-px stored tile
    to 224 px) uses bilinear interpolation, whose kernel already spans every source pixel: it
    differs from area averaging by ~0.3 grey levels on average and costs a tenth of the time.
    Exact integer reductions take OpenCV's fast area path. Bilinear resizing of 8-bit RGB runs
    in 16 bits, where OpenCV's kernel is twice as fast as its 8-bit one for 3 channels; it rounds
    instead of using 11-bit fixed-point weights (13% of values differ by one grey level).

    Args:
        image: (h, w, c) array.
        width: output width.
        height: output height.
        out: optional (height, width, c) array of the image's dtype to write into (returned).
    """
    h, w = image.shape[:2]
    if w == width and h == height:
        if out is None:
            return image
        np.copyto(out, image)
        return out
    if width > w or height > h:
        interpolation = cv2.INTER_LINEAR
    elif w % width == 0 and h % height == 0 and w // width == h // height:
        interpolation = cv2.INTER_AREA
    elif width * 2 >= w and height * 2 >= h:
        interpolation = cv2.INTER_LINEAR
    else:
        interpolation = cv2.INTER_AREA
    if interpolation == cv2.INTER_LINEAR and image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3:
        wide = cv2.resize(image.astype(np.uint16), (width, height), interpolation=cv2.INTER_LINEAR)
        if out is None:
            return wide.astype(np.uint8)
        np.copyto(out, wide, casting="unsafe")
        return out
    if out is None:
        return cv2.resize(image, (width, height), interpolation=interpolation)
    result = cv2.resize(image, (width, height), dst=out, interpolation=interpolation)
    if result is not out:  # OpenCV allocated instead (e.g. a non-contiguous out)
        np.copyto(out, result)
    return out


def read_tile(
    reader: SlideReader,
    x: int,
    y: int,
    width: int,
    height: int,
    out_width: int,
    out_height: int,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Read a level-0 box and deliver it at ``out_width`` x ``out_height``, from the best level.

    Args:
        reader: an open slide.
        x: left edge, level-0 pixels.
        y: top edge, level-0 pixels.
        width: box width, level-0 pixels.
        height: box height, level-0 pixels.
        out_width: delivered width in pixels.
        out_height: delivered height in pixels.
        out: optional (out_height, out_width, 3) uint8 array to write into (saves a copy).

    Returns:
        (out_height, out_width, 3) uint8 RGB (may be read-only), ``out`` when given.
    """
    level = best_level(reader.info.levels, min(width / out_width, height / out_height))
    ds = level.downsample
    region = reader.read_region(x, y, max(1, round(width / ds)), max(1, round(height / ds)), level.index)
    return resize_area(region, out_width, out_height, out)


def read_thumbnail(reader: SlideReader, downsample: float) -> tuple[np.ndarray, float, float]:
    """The whole slide at about ``downsample`` level-0 pixels per pixel.

    Returns:
        (rgb, scale_x, scale_y): the image and the exact level-0 pixels per image pixel along x and y.
    """
    info = reader.info
    downsample = max(downsample, 1.0)
    level = best_level(info.levels, downsample)
    out_w = max(1, round(info.width / downsample))
    out_h = max(1, round(info.height / downsample))
    factor = level.downsample / downsample  # output px per level px
    rows_per_strip = max(1, _STRIP_BYTES // max(1, level.width * 3))
    if rows_per_strip >= level.height:
        image = reader.read_region(0, 0, level.width, level.height, level.index)
        thumb = resize_area(image, out_w, out_h)
    else:
        parts = []
        for r0 in range(0, level.height, rows_per_strip):
            r1 = min(level.height, r0 + rows_per_strip)
            o0, o1 = round(r0 * factor), round(r1 * factor)
            if o1 <= o0:
                continue
            strip = reader.read_region(0, round(r0 * level.downsample), level.width, r1 - r0, level.index)
            parts.append(resize_area(strip, out_w, o1 - o0))
        thumb = np.concatenate(parts, axis=0)
    thumb = np.ascontiguousarray(thumb)
    return thumb, info.width / thumb.shape[1], info.height / thumb.shape[0]
