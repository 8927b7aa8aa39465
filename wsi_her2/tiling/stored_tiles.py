"""Compressed stored tiles, read as bytes for a decoder elsewhere (the GPU): where they are, what covers a tile.

A TIFF-family slide (Aperio SVS, generic tiled TIFF, OME-TIFF) stores each pyramid level as
tiles with their byte offsets in the file. For the GPU decode path the host only reads those
bytes (``os.pread``, a few microseconds a tile) and makes each a complete JPEG stream: where the
format shares its quantisation and Huffman tables in the JPEGTables tag (Aperio, most tiled
TIFF), they are spliced in front of the tile's scan; where the tiles are RGB-coded (Aperio's
photometric RGB without JFIF), an Adobe marker says so, since a decoder would otherwise take the
three components for YCbCr. Levels stored otherwise (JPEG 2000, LZW, deflate, ...) are reported
as not decodable here, with the reason, and are read by the CPU loader.

Torch-free; :mod:`wsi_her2.tiling.gpu_decode` decodes and assembles.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

from wsi_her2.errors import SlideReadError
from wsi_her2.slide.base import SlideInfo
from wsi_her2.slide.limits import MAX_TILE_BYTES, check_stream_size
from wsi_her2.slide.regions import best_level

_JPEG = 7
# APP14 "Adobe", version 100, no flags, transform 0: three components are RGB, not YCbCr.
_ADOBE_RGB = b"\xff\xee\x00\x0eAdobe\x00\x64\x00\x00\x00\x00\x00"


@dataclass(frozen=True)
class StoredLevel:
    """One pyramid level's stored JPEG tiles.

    Attributes:
        path: the slide file.
        index: level number.
        downsample: level-0 pixels per pixel of this level.
        width: level width in pixels.
        height: level height in pixels.
        tile_width: stored tile width.
        tile_height: stored tile height.
        offsets: byte offset of each stored tile, row-major.
        bytecounts: byte count of each stored tile (0: absent, i.e. white).
        tables: the shared JPEG tables (JPEGTables tag), or None when each tile is complete.
        rgb_coded: the tiles' components are R, G, B (no colour transform), not YCbCr.
    """

    path: str
    index: int
    downsample: float
    width: int
    height: int
    tile_width: int
    tile_height: int
    offsets: np.ndarray
    bytecounts: np.ndarray
    tables: bytes | None
    rgb_coded: bool

    @property
    def columns(self) -> int:
        """Stored tiles per row."""
        return -(-self.width // self.tile_width)


@dataclass(frozen=True)
class TilePlan:
    """Where one delivered tile comes from: a box of a stored level.

    Attributes:
        x: left edge of the box in the level's pixels (may be negative or past the edge: white).
        y: top edge of the box in the level's pixels.
        width: box width in the level's pixels.
        height: box height in the level's pixels.
        single: the box is exactly one whole stored tile (no assembly needed).
    """

    x: int
    y: int
    width: int
    height: int
    single: bool


def stored_jpeg_level(info: SlideInfo, tile_size_px: int, output_size_px: int) -> StoredLevel | str:
    """The level a tile of ``tile_size_px`` level-0 pixels is read from at ``output_size_px``, if JPEG.

    The level is the one the CPU loader reads (:func:`~wsi_her2.slide.regions.read_tile`).

    Returns:
        The level, or why its tiles cannot be handed to a JPEG decoder as they are.
    """
    if info.backend != "tifffile":
        return f"read through {info.backend} ({info.vendor}): only TIFF-family stored tiles are read directly"
    level = best_level(info.levels, tile_size_px / output_size_px)
    import tifffile

    with tifffile.TiffFile(info.path) as tif:
        pages = [lv.keyframe for lv in tif.series[0].levels]  # indexed as the reader's levels
        page = pages[level.index]
        if int(page.compression) != _JPEG:
            from wsi_her2.slide.tiff_backend import _COMPRESSION_NAMES

            name = _COMPRESSION_NAMES.get(int(page.compression), f"TIFF compression {int(page.compression)}")
            return f"level {level.index} is stored as {name}, not JPEG"
        if not page.is_tiled:
            return f"level {level.index} is stored in strips, not tiles"
        if int(page.samplesperpixel) != 3 or page.dtype != np.uint8 or int(page.planarconfig) != 1:
            return f"level {level.index} is not 8-bit interleaved RGB"
        offsets = np.asarray(page.dataoffsets, np.int64)
        bytecounts = np.asarray(page.databytecounts, np.int64)
        tiles = -(-int(page.imagewidth) // int(page.tilewidth)) * -(-int(page.imagelength) // int(page.tilelength))
        if len(offsets) != tiles or len(bytecounts) != tiles or bytecounts.max(initial=0) > MAX_TILE_BYTES:
            # The reader refused such a file at open: it changed since. The CPU loader says what is wrong.
            return f"level {level.index}'s tile table does not match its size"
        tables = bytes(page.jpegtables) if page.jpegtables is not None else None
        return StoredLevel(
            path=info.path,
            index=level.index,
            downsample=level.downsample,
            width=int(page.imagewidth),
            height=int(page.imagelength),
            tile_width=int(page.tilewidth),
            tile_height=int(page.tilelength),
            offsets=offsets,
            bytecounts=bytecounts,
            tables=tables,
            # As the CPU reader decides (tiff_backend): photometric RGB without JFIF is RGB-coded.
            rgb_coded=int(page.photometric) == 2 and not page.is_jfif,
        )


def plan_tile(level: StoredLevel, x: int, y: int, tile_size_px: int) -> TilePlan:
    """The box of ``level`` that a level-0 tile at (x, y) covers (as the CPU reader rounds it)."""
    ds = level.downsample
    lx, ly = math.floor(x / ds + 0.5), math.floor(y / ds + 0.5)
    size = max(1, round(tile_size_px / ds))
    tw, th = level.tile_width, level.tile_height
    single = lx % tw == 0 and ly % th == 0 and size == tw == th and lx + tw <= level.width and ly + th <= level.height
    return TilePlan(lx, ly, size, size, single)


def covering_tiles(level: StoredLevel, plan: TilePlan) -> list[int]:
    """Indices of the stored tiles that overlap the box (inside the level), row-major."""
    x0, y0 = max(plan.x, 0), max(plan.y, 0)
    x1, y1 = min(plan.x + plan.width, level.width), min(plan.y + plan.height, level.height)
    if x0 >= x1 or y0 >= y1:
        return []
    cols = range(x0 // level.tile_width, (x1 - 1) // level.tile_width + 1)
    rows = range(y0 // level.tile_height, (y1 - 1) // level.tile_height + 1)
    return [r * level.columns + c for r in rows for c in cols]


def complete_jpeg(data: bytes, tables: bytes | None, rgb_coded: bool) -> bytes:
    """One stored tile as a stream any JPEG decoder reads: shared tables spliced in, RGB marked.

    Raises:
        SlideReadError: the bytes are not a JPEG stream.
    """
    if data[:2] != b"\xff\xd8":
        raise SlideReadError("a stored tile does not start with a JPEG marker; the file is corrupt")
    body = data[2:]
    if tables is not None and len(tables) > 4:
        body = tables[2:-2] + body  # the tables' stream without its own start and end markers
    return b"\xff\xd8" + (_ADOBE_RGB if rgb_coded else b"") + body


def read_stored(fd: int, level: StoredLevel, index: int) -> bytes | None:
    """The complete JPEG stream of stored tile ``index``, or None for an absent (white) tile.

    The stream's own header is checked against the level's tile size before any decoder sees it
    (:func:`~wsi_her2.slide.limits.check_stream_size`: decoders allocate what the header declares).

    Raises:
        SlideReadError: the file is truncated or the tile is not JPEG.
        MalformedSlideError: the stream declares a larger image than the tile.
    """
    nbytes = int(level.bytecounts[index])
    if nbytes == 0:
        return None
    data = os.pread(fd, nbytes, int(level.offsets[index]))
    if len(data) != nbytes:
        raise SlideReadError(f"{level.path}: file is truncated (tile {index} of level {level.index})")
    check_stream_size(level.path, data, level.tile_width, level.tile_height, f"tile {index} of level {level.index}")
    return complete_jpeg(data, level.tables, level.rgb_coded)
