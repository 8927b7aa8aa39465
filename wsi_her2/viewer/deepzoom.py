"""Deep Zoom (DZI) tiles of any slide the project reads, for OpenSeadragon.

One tiler over :class:`~wsi_her2.slide.SlideReader` covers every format (OpenSlide vendor formats,
TIFF/OME-TIFF, plain JPEG/PNG) with one code path, instead of OpenSlide's ``DeepZoomGenerator``
for some formats and something else for the rest.

Deep Zoom level ``L`` of ``max_level + 1`` levels is the slide shrunk by ``2 ** (max_level - L)``
(the last level is full resolution); a tile is ``tile_size`` pixels plus ``overlap`` on each inner
side. Fine levels are read with :func:`~wsi_her2.slide.read_tile` (best pyramid level, then resize).
Levels at or coarser than an overview image (the whole slide shrunk by a power of two to at most
``overview_side_px`` on its long side, read once) are cut from that overview: zoomed-out views then
cost no slide reads, even for one-level files with no pyramid. Encoded tiles are kept in a small LRU cache.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict

import cv2
import numpy as np

from wsi_her2.outputs.images import encode_image
from wsi_her2.slide import SlideReader, read_thumbnail, read_tile
from wsi_her2.slide.regions import resize_area
from wsi_her2.viewer.errors import RequestError

# What a slide that cannot be opened is drawn as (light grey, so the heatmap still shows where it is).
BLANK_RGB = (236, 236, 236)


class DeepZoomTiler:
    """DZI descriptor and JPEG tiles of one slide (thread-safe: the reader is used under a lock).

    Attributes:
        width: level-0 width in pixels.
        height: level-0 height in pixels.
        tile_size: Deep Zoom tile side without overlap.
        overlap: pixels each tile shares with its neighbours.
        max_level: the full-resolution Deep Zoom level.
    """

    def __init__(
        self,
        reader: SlideReader | None,
        *,
        width: int | None = None,
        height: int | None = None,
        tile_size: int = 254,
        overlap: int = 1,
        quality: int = 85,
        overview_side_px: int = 2048,
        cache_tiles: int = 1024,
        read_lock: threading.Lock | None = None,
    ) -> None:
        """Prepare a tiler.

        Args:
            reader: an open slide, or None for a blank (grey) slide of ``width`` x ``height``
                (the viewer still shows the heatmap when the slide file is gone).
            width: level-0 width when ``reader`` is None.
            height: level-0 height when ``reader`` is None.
            tile_size: tile side without overlap (254 + 2 x 1 overlap gives 256-px tiles).
            overlap: overlap in pixels.
            quality: JPEG quality of the tiles.
            overview_side_px: long side of the overview the coarse levels are cut from.
            cache_tiles: encoded tiles kept in memory.
            read_lock: the lock that guards every use of ``reader`` (shared with its other users).

        Raises:
            ValueError: a blank tiler without a size, or a non-positive tile size.
        """
        if tile_size < 1 or overlap < 0:
            raise ValueError(f"bad Deep Zoom geometry: tile_size={tile_size}, overlap={overlap}")
        self.reader = reader
        if reader is not None:
            width, height = reader.info.width, reader.info.height
        if width is None or height is None or width < 1 or height < 1:
            raise ValueError("a blank Deep Zoom tiler needs a positive width and height")
        self.width = int(width)
        self.height = int(height)
        self.tile_size = int(tile_size)
        self.overlap = int(overlap)
        self.quality = int(quality)
        self.max_level = max(0, math.ceil(math.log2(max(self.width, self.height))))
        self._overview_side_px = int(overview_side_px)
        self._overview: tuple[np.ndarray, float, float] | None = None
        self._read_lock = read_lock or threading.Lock()
        self._cache_lock = threading.Lock()
        self._cache: OrderedDict[tuple[int, int, int], bytes] = OrderedDict()
        self._cache_size = int(cache_tiles)

    @property
    def level_count(self) -> int:
        """Number of Deep Zoom levels."""
        return self.max_level + 1

    def scale(self, level: int) -> int:
        """Level-0 pixels per pixel of Deep Zoom ``level``."""
        return 2 ** (self.max_level - level)

    def level_size(self, level: int) -> tuple[int, int]:
        """(width, height) of a Deep Zoom level in its own pixels.

        Raises:
            RequestError: no such level.
        """
        if not 0 <= level <= self.max_level:
            raise RequestError(f"Deep Zoom level {level} does not exist (0-{self.max_level})")
        s = self.scale(level)
        return max(1, math.ceil(self.width / s)), max(1, math.ceil(self.height / s))

    def tile_grid(self, level: int) -> tuple[int, int]:
        """(columns, rows) of tiles at ``level``."""
        w, h = self.level_size(level)
        return math.ceil(w / self.tile_size), math.ceil(h / self.tile_size)

    def dzi(self, image_format: str = "jpeg") -> str:
        """The DZI XML descriptor."""
        return (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<Image xmlns="http://schemas.microsoft.com/deepzoom/2008" Format="{image_format}" '
            f'Overlap="{self.overlap}" TileSize="{self.tile_size}">'
            f'<Size Width="{self.width}" Height="{self.height}"/></Image>\n'
        )

    def tile_bounds(self, level: int, col: int, row: int) -> tuple[int, int, int, int]:
        """(x, y, width, height) of a tile in pixels of its level, overlap included.

        Raises:
            RequestError: the level or tile does not exist.
        """
        w, h = self.level_size(level)
        cols, rows = self.tile_grid(level)
        if not (0 <= col < cols and 0 <= row < rows):
            raise RequestError(f"tile {col}_{row} does not exist at level {level} ({cols} x {rows} tiles)")
        x0 = col * self.tile_size - (self.overlap if col > 0 else 0)
        y0 = row * self.tile_size - (self.overlap if row > 0 else 0)
        x1 = min(w, (col + 1) * self.tile_size + self.overlap)
        y1 = min(h, (row + 1) * self.tile_size + self.overlap)
        return x0, y0, x1 - x0, y1 - y0

    def tile_rgb(self, level: int, col: int, row: int) -> np.ndarray:
        """One tile as RGB uint8 (level-0 area outside the slide is white).

        Raises:
            RequestError: the level or tile does not exist.
        """
        x, y, w, h = self.tile_bounds(level, col, row)
        s = self.scale(level)
        if self.reader is None:
            tile = np.empty((h, w, 3), np.uint8)
            tile[:] = BLANK_RGB
            return tile
        with self._read_lock:
            image, sx, sy = self._get_overview()
            if s >= min(sx, sy):
                return _crop_resized(image, x * s / sx, y * s / sy, w * s / sx, h * s / sy, w, h)
            return np.ascontiguousarray(read_tile(self.reader, x * s, y * s, w * s, h * s, w, h))

    def tile_jpeg(self, level: int, col: int, row: int) -> bytes:
        """One tile as JPEG bytes (cached).

        Raises:
            RequestError: the level or tile does not exist.
        """
        key = (level, col, row)
        with self._cache_lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                return cached
        data = encode_image(self.tile_rgb(level, col, row), ".jpg", self.quality)
        with self._cache_lock:
            self._cache[key] = data
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return data

    def overview(self) -> tuple[np.ndarray, float, float]:
        """The whole slide small: (RGB, level-0 px per pixel along x, along y)."""
        with self._read_lock:
            return self._get_overview()

    def _get_overview(self) -> tuple[np.ndarray, float, float]:
        if self._overview is None:
            if self.reader is None:
                factor = max(1.0, max(self.width, self.height) / self._overview_side_px)
                w, h = max(1, round(self.width / factor)), max(1, round(self.height / factor))
                blank = np.empty((h, w, 3), np.uint8)
                blank[:] = BLANK_RGB
                self._overview = (blank, self.width / w, self.height / h)
            else:
                # A power of two, so that Deep Zoom levels are exact crops or integer shrinks of it.
                ratio = max(self.width, self.height) / self._overview_side_px
                downsample = float(2 ** max(0, math.ceil(math.log2(ratio)))) if ratio > 1 else 1.0
                thumb, sx, sy = read_thumbnail(self.reader, downsample)
                exact = _exact_overview(thumb, sx, sy, downsample, self.width, self.height)
                self._overview = (exact, downsample, downsample)
        return self._overview


def _crop_resized(image: np.ndarray, x: float, y: float, w: float, h: float, out_w: int, out_h: int) -> np.ndarray:
    """The box (x, y, w, h) of ``image`` (pixels, rounded; white where it runs past the edges) at out_w x out_h."""
    x0, y0, x1, y1 = round(x), round(y), max(round(x) + 1, round(x + w)), max(round(y) + 1, round(y + h))
    crop = np.full((y1 - y0, x1 - x0, 3), 255, np.uint8)
    ix0, iy0 = max(0, x0), max(0, y0)
    ix1, iy1 = min(image.shape[1], x1), min(image.shape[0], y1)
    if ix1 > ix0 and iy1 > iy0:
        crop[iy0 - y0 : iy1 - y0, ix0 - x0 : ix1 - x0] = image[iy0:iy1, ix0:ix1]
    return resize_area(crop, out_w, out_h)


def _exact_overview(thumb: np.ndarray, sx: float, sy: float, downsample: float, width: int, height: int) -> np.ndarray:
    """The thumbnail on the grid of exactly ``downsample`` level-0 px per pixel (white past the slide).

    ``read_thumbnail`` rounds its size, so its scale is a hair off ``downsample`` when the slide's size is
    not a multiple of it; one near-identity warp puts it on the exact grid, so that every Deep Zoom level
    cut from it is an aligned crop and an integer shrink.
    """
    out_w, out_h = math.ceil(width / downsample), math.ceil(height / downsample)
    if abs(sx - downsample) < 1e-9 and abs(sy - downsample) < 1e-9 and thumb.shape[:2] == (out_h, out_w):
        return thumb
    fx, fy = downsample / sx, downsample / sy  # thumbnail px per exact px
    matrix = np.array([[fx, 0.0, 0.5 * fx - 0.5], [0.0, fy, 0.5 * fy - 0.5]], np.float64)
    return cv2.warpAffine(
        np.ascontiguousarray(thumb), matrix, (out_w, out_h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_CONSTANT, borderValue=(255, 255, 255),
    )  # fmt: skip
