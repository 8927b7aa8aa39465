"""What a slide may declare before anything is decoded: the guard against resource bombs.

A slide's header says how large its levels, tiles and strips are, and every later allocation
follows those numbers. A few hundred bytes can declare a 200,000 x 200,000 image in one strip, a
tile of 65,536 x 65,536 pixels, a JPEG tile whose own header says 60,000 x 60,000, or a pyramid
whose levels contradict each other. Each backend checks its slide here once, when it opens it
(and the direct TIFF reader checks each encoded tile before decoding it), so such a file stops
with one :class:`~wsi_her2.errors.MalformedSlideError` instead of allocating gigabytes or running
for hours. The limits are far beyond real slides: a 75 x 25 mm slide scanned at 0.1 µm/px is
750,000 x 250,000 pixels, stored in tiles of at most a few thousand pixels with a pyramid whose
coarsest level is a few thousand pixels wide.
"""

from __future__ import annotations

from collections.abc import Sequence

from wsi_her2.errors import MalformedSlideError
from wsi_her2.slide.base import LevelInfo

# Longest side of any level: beyond a whole 75-mm slide at 0.07 µm/px.
MAX_SIDE_PX = 1 << 20
# One decoded stored tile or strip. Real tiles are 0.2-12 MB; one-strip images up to ~9,000 px square fit.
MAX_TILE_BYTES = 256 << 20
# The coarsest level is read whole (in strips) for the tissue mask and the overview; a slide without
# a pyramid must be small enough for that to take seconds, not hours (1 gigapixel: ~10 s of decoding).
MAX_COARSEST_LEVEL_PX = 1 << 30
# Pyramid levels: 2**32 between the first and the last is more than any slide has.
MAX_LEVELS = 32
# Plain images are decoded whole into memory: 150 megapixels are 450 MB of RGB.
MAX_IMAGE_PIXELS = 150_000_000
# A level's width and height must shrink by the same factor, up to rounding.
_ASPECT_TOLERANCE = 0.05
_ROUNDING_PX = 2

_PYRAMID_HINT = "convert it to a tiled pyramidal TIFF (e.g. vips tiffsave IN OUT.tif --tile --pyramid)"
_CORRUPT_HINT = "the file is damaged or was not written by a scanner; copy or export the slide again"


def check_levels(path: str, levels: Sequence[LevelInfo], *, bytes_per_pixel: int = 3) -> None:
    """Refuse a pyramid whose declared geometry would need unbounded memory or time, or contradicts itself.

    Args:
        path: the slide (for the message).
        levels: the levels as the file declares them, level 0 first (tile sizes 0 when not tiled).
        bytes_per_pixel: bytes of one decoded pixel (3 for RGB, 4 for OpenSlide's RGBA).

    Raises:
        MalformedSlideError: a limit is exceeded or the levels contradict each other.
    """
    if not levels:
        raise MalformedSlideError(f"{path}: the file declares no image", hint=_CORRUPT_HINT)
    if len(levels) > MAX_LEVELS:
        raise MalformedSlideError(
            f"{path}: the file declares {len(levels)} pyramid levels (at most {MAX_LEVELS} are read)",
            hint=_CORRUPT_HINT,
        )
    base = levels[0]
    previous = base
    for level in levels:
        name = f"level {level.index}"
        if not (1 <= level.width <= MAX_SIDE_PX and 1 <= level.height <= MAX_SIDE_PX):
            raise MalformedSlideError(
                f"{path}: {name} declares {level.width} x {level.height} pixels "
                f"(each side must be 1-{MAX_SIDE_PX:,} px)",
                hint=_CORRUPT_HINT,
            )
        tile_bytes = level.tile_width * level.tile_height * bytes_per_pixel
        if tile_bytes > MAX_TILE_BYTES:
            raise MalformedSlideError(
                f"{path}: {name} declares stored tiles of {level.tile_width} x {level.tile_height} pixels "
                f"({tile_bytes / 2**20:,.0f} MiB each decoded; at most {MAX_TILE_BYTES >> 20} MiB are read at once)",
                hint=_PYRAMID_HINT,
            )
        if level is not base:
            _check_level_shape(path, base, previous, level)
        previous = level
    coarsest = min(levels, key=lambda lv: lv.width * lv.height)
    if coarsest.width * coarsest.height > MAX_COARSEST_LEVEL_PX:
        what = "has no pyramid" if len(levels) == 1 else f"has no level smaller than level {coarsest.index}"
        raise MalformedSlideError(
            f"{path}: {base.width:,} x {base.height:,} pixels and {what} "
            f"({coarsest.width:,} x {coarsest.height:,}); reading it whole for the tissue mask would take too long",
            hint=_PYRAMID_HINT,
        )


def _check_level_shape(path: str, base: LevelInfo, previous: LevelInfo, level: LevelInfo) -> None:
    """A lower level is no larger than the one before it and shrinks both sides alike."""
    name = f"level {level.index}"
    if level.width > previous.width or level.height > previous.height:
        raise MalformedSlideError(
            f"{path}: {name} ({level.width} x {level.height} px) is larger than level {previous.index} "
            f"({previous.width} x {previous.height} px)",
            hint=_CORRUPT_HINT,
        )
    ds_x, ds_y = base.width / level.width, base.height / level.height
    close = max(ds_x, ds_y) / min(ds_x, ds_y) <= 1 + _ASPECT_TOLERANCE
    ds = (ds_x + ds_y) / 2
    rounded = max(abs(level.width - base.width / ds), abs(level.height - base.height / ds)) <= _ROUNDING_PX
    if not (close or rounded):
        raise MalformedSlideError(
            f"{path}: {name} ({level.width} x {level.height} px) is not a reduction of level 0 "
            f"({base.width} x {base.height} px): its sides shrink by {ds_x:.3g} and {ds_y:.3g}",
            hint=_CORRUPT_HINT,
        )


def check_image_size(path: str, width: int, height: int) -> None:
    """Refuse a plain image too large to decode into memory (a decompression bomb, or a slide exported whole).

    Raises:
        MalformedSlideError: more than :data:`MAX_IMAGE_PIXELS` pixels, or a non-positive side.
    """
    if width < 1 or height < 1 or width * height > MAX_IMAGE_PIXELS:
        raise MalformedSlideError(
            f"{path}: a plain image of {width:,} x {height:,} pixels is too large to decode into memory "
            f"(at most {MAX_IMAGE_PIXELS / 1e6:.0f} megapixels)",
            hint=_PYRAMID_HINT,
        )


def check_stream_size(path: str, data: bytes, tile_width: int, tile_height: int, where: str) -> None:
    """Refuse an encoded tile whose own header declares more pixels than the tile it is stored as.

    Decoders allocate what the stream's header says, so a 256-px tile holding a JPEG that declares
    60,000 x 60,000 pixels would allocate 10 GB before failing. JPEG, JPEG 2000 and WebP headers
    are read; the other codecs in TIFF (deflate, LZW, zstd, none) are decoded into a buffer of the
    declared tile size and need no check.

    Raises:
        MalformedSlideError: the stream declares a larger image than the tile.
    """
    size = encoded_size(data)
    if size is None:
        return
    width, height = size
    if width > tile_width or height > tile_height:
        raise MalformedSlideError(
            f"{path}: {where} holds an encoded image of {width} x {height} pixels in a {tile_width} x {tile_height} "
            "tile; the file is corrupt or crafted",
            hint=_CORRUPT_HINT,
        )


def encoded_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG, JPEG 2000 or WebP stream's header; None for other or unreadable data."""
    head = bytes(data[:2])
    if head == b"\xff\xd8":
        return _jpeg_size(data)
    if bytes(data[:4]) == b"RIFF" and bytes(data[8:12]) == b"WEBP":
        return _webp_size(data)
    at = bytes(data[:65536]).find(b"\xff\x4f\xff\x51")  # J2K codestream start + SIZ (also inside a JP2 box)
    if at >= 0:
        return _j2k_size(data, at + 4)
    return None


# SOFn markers (frame headers), not DHT (C4), JPG (C8) or DAC (CC).
_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            i += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image or start of scan before any frame header
            return None
        if marker in _SOF_MARKERS:
            if i + 9 > n:
                return None
            height = int.from_bytes(data[i + 5 : i + 7], "big")
            width = int.from_bytes(data[i + 7 : i + 9], "big")
            return width, height
        i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    return None


def _j2k_size(data: bytes, at: int) -> tuple[int, int] | None:
    # SIZ: Lsiz(2) Rsiz(2) Xsiz(4) Ysiz(4) XOsiz(4) YOsiz(4) ...
    if at + 20 > len(data):
        return None
    x, y, x0, y0 = (int.from_bytes(data[at + k : at + k + 4], "big") for k in (4, 8, 12, 16))
    return max(0, x - x0), max(0, y - y0)


def _webp_size(data: bytes) -> tuple[int, int] | None:
    kind = bytes(data[12:16])
    if kind == b"VP8 " and len(data) >= 30:
        return int.from_bytes(data[26:28], "little") & 0x3FFF, int.from_bytes(data[28:30], "little") & 0x3FFF
    if kind == b"VP8L" and len(data) >= 25:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if kind == b"VP8X" and len(data) >= 30:
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    return None
