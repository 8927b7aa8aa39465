"""Hostile files built byte by byte: TIFF headers that declare what their data is not, image bombs.

Everything here is small on disk (kilobytes): the point of a bomb is that its header promises far
more than the file holds, and the reader must notice before it allocates what the header asks for.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import imagecodecs
import numpy as np

SHORT, LONG, ASCII = 3, 4, 2
Tags = dict[int, tuple[int, object]]
_FORMAT = {SHORT: "H", LONG: "I"}

# TIFF tag numbers used below.
WIDTH, LENGTH, BITS, COMPRESSION, PHOTOMETRIC, DESCRIPTION = 256, 257, 258, 259, 262, 270
STRIP_OFFSETS, SAMPLES, ROWS_PER_STRIP, STRIP_COUNTS, PLANAR = 273, 277, 278, 279, 284
TILE_WIDTH, TILE_LENGTH, TILE_OFFSETS, TILE_COUNTS, SUBSAMPLING = 322, 323, 324, 325, 530


def tiff_bytes(ifds: Sequence[Mapping[int, tuple[int, object]]], payload: bytes = b"") -> bytes:
    """A classic little-endian TIFF: ``payload`` at byte 8, then one IFD per mapping of tag -> (type, values)."""
    out = bytearray(b"II*\x00\x00\x00\x00\x00")
    out += payload
    link = 4  # where the offset of the next IFD goes
    for tags in ifds:
        if len(out) % 2:
            out += b"\x00"
        struct.pack_into("<I", out, link, len(out))
        entries = sorted(tags.items())
        extra_at = len(out) + 2 + 12 * len(entries) + 4
        body, extra = bytearray(struct.pack("<H", len(entries))), bytearray()
        for code, (kind, values) in entries:
            if kind == ASCII:
                raw, count = str(values).encode() + b"\x00", len(str(values)) + 1
            else:
                items = list(values)  # type: ignore[call-overload]
                raw, count = b"".join(struct.pack("<" + _FORMAT[kind], v) for v in items), len(items)
            if len(raw) <= 4:
                body += struct.pack("<HHI", code, kind, count) + raw.ljust(4, b"\x00")
            else:
                body += struct.pack("<HHII", code, kind, count, extra_at + len(extra))
                extra += raw + (b"\x00" if len(raw) % 2 else b"")
        link = len(out) + len(body)
        out += body + b"\x00\x00\x00\x00" + extra
    return bytes(out)


def rgb_tags(width: int, height: int, *, compression: int = 1, photometric: int = 2) -> Tags:
    """The tags of an 8-bit RGB image, without its data layout."""
    return {
        WIDTH: (LONG, [width]),
        LENGTH: (LONG, [height]),
        BITS: (SHORT, [8, 8, 8]),
        COMPRESSION: (SHORT, [compression]),
        PHOTOMETRIC: (SHORT, [photometric]),
        SAMPLES: (SHORT, [3]),
        PLANAR: (SHORT, [1]),
    }


def one_strip_tiff(path: Path, width: int, height: int, strip: bytes, *, compression: int = 8) -> Path:
    """An image declared as ``width`` x ``height`` in one strip holding ``strip`` (a few bytes)."""
    tags = rgb_tags(width, height, compression=compression)
    tags.update({STRIP_OFFSETS: (LONG, [8]), ROWS_PER_STRIP: (LONG, [height]), STRIP_COUNTS: (LONG, [len(strip)])})
    path.write_bytes(tiff_bytes([tags], strip))
    return path


def jpeg(rgb: np.ndarray, quality: int = 80) -> bytes:
    """A baseline YCbCr 4:2:0 JPEG stream, as scanners store tiles."""
    return bytes(imagecodecs.jpeg8_encode(np.ascontiguousarray(rgb), level=quality, subsampling="420"))


def declare_jpeg_size(stream: bytes, width: int, height: int) -> bytes:
    """The same JPEG stream with its frame header (SOF0) claiming another size."""
    data = bytearray(stream)
    at = data.find(b"\xff\xc0")
    struct.pack_into(">HH", data, at + 5, height, width)
    return bytes(data)


def png_bomb(path: Path, side: int) -> Path:
    """A valid ``side`` x ``side`` 1-bit PNG of zeros: ~100 KB on disk for 30,000 px, 2.7 GB as RGB."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    row = b"\x00" * (1 + (side + 7) // 8)
    packer = zlib.compressobj(9)
    data = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b""))
    return path


def jpeg_bomb(path: Path, side: int) -> Path:
    """A tiny JPEG whose frame header declares ``side`` x ``side`` pixels."""
    path.write_bytes(declare_jpeg_size(jpeg(np.full((16, 16, 3), 200, np.uint8)), side, side))
    return path


def write_svs(
    path: Path,
    sizes: Sequence[tuple[int, int]],
    tile_px: int,
    blobs: Sequence[bytes],
    choose: Callable[[int, int, int], int],
    *,
    mpp: float = 0.25,
    lies: Mapping[int, Tags] | None = None,
) -> Path:
    """An Aperio-style SVS (tiled JPEG levels, a thumbnail page second) whose tiles share a few encoded blobs.

    Args:
        path: the file to write.
        sizes: (width, height) of each level, level 0 first.
        tile_px: stored tile side.
        blobs: the encoded tiles; tiles that share content share bytes, so a 200,000-px level stays small.
        choose: (level, col, row) -> index into ``blobs``.
        mpp: µm/px written into the description.
        lies: per level, tags that replace the true ones (to declare what the data is not).
    """
    offsets, at = [], 8
    for blob in blobs:
        offsets.append(at)
        at += len(blob) + len(blob) % 2
    payload = b"".join(blob + b"\x00" * (len(blob) % 2) for blob in blobs)
    description = f"Aperio Image Library v12.0.15 \r\n{sizes[0][0]}x{sizes[0][1]}|AppMag = 40|MPP = {mpp}"
    ifds = []
    for level, (width, height) in enumerate(sizes):
        cols, rows = math.ceil(width / tile_px), math.ceil(height / tile_px)
        picks = [choose(level, c, r) for r in range(rows) for c in range(cols)]
        tags = rgb_tags(width, height, compression=7, photometric=6)
        tags.update({
            TILE_WIDTH: (LONG, [tile_px]), TILE_LENGTH: (LONG, [tile_px]), SUBSAMPLING: (SHORT, [2, 2]),
            TILE_OFFSETS: (LONG, [offsets[k] for k in picks]), TILE_COUNTS: (LONG, [len(blobs[k]) for k in picks]),
            DESCRIPTION: (ASCII, description if level == 0 else f"{sizes[0][0]}x{sizes[0][1]} -> {width}x{height}"),
        })  # fmt: skip
        tags.update((lies or {}).get(level, {}))
        ifds.append(tags)
        if level == 0:  # Aperio's thumbnail page: 8 x 8 uncompressed, one strip at the start of the payload
            thumb = rgb_tags(8, 8)
            thumb.update({STRIP_OFFSETS: (LONG, [8]), ROWS_PER_STRIP: (LONG, [8]), STRIP_COUNTS: (LONG, [192])})
            ifds.append(thumb)
    if len(payload) < 192:
        payload += b"\xff" * (192 - len(payload))
    path.write_bytes(tiff_bytes(ifds, payload))
    return path


def tissue_rgb(side: int, seed: int = 0) -> np.ndarray:
    """A ``side`` x ``side`` IHC-like tissue image (the synthetic slide writer's own texture)."""
    import tempfile

    import tifffile

    from wsi_her2.synthetic import write_synthetic_slide

    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / "t.svs"
        write_synthetic_slide(file, width=side, height=side, mpp=0.25, stain="ihc",
                              tissue_map=np.ones((4, 4), bool), downsamples=(1,), seed=seed)  # fmt: skip
        return np.asarray(tifffile.imread(file, series=0, level=0))
