"""Synthetic whole-slide images for tests, benchmarks and trying the tool without data.

``write_synthetic_slide`` writes an Aperio-style SVS (tiled JPEG pyramid, µm/px and magnification in
the ImageDescription, a thumbnail page) that OpenSlide recognises as "aperio". Tissue is drawn
where a low-resolution tissue map says, with an H&E-like or HER2-IHC-like texture; the map is
returned so tests know the truth.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import tifffile

_GLASS_RGB = (242, 242, 245)


def random_tissue_map(shape_hw: tuple[int, int], fraction: float, seed: int = 0) -> np.ndarray:
    """A blobby bool map with about ``fraction`` of it True (smoothed noise, thresholded)."""
    rng = np.random.default_rng(seed)
    noise = rng.random((max(2, shape_hw[0] // 8), max(2, shape_hw[1] // 8))).astype(np.float32)
    smooth = cv2.resize(noise, (shape_hw[1], shape_hw[0]), interpolation=cv2.INTER_CUBIC)
    smooth = cv2.GaussianBlur(smooth, (0, 0), max(shape_hw) / 40)
    return smooth > np.quantile(smooth, 1.0 - fraction)


def _textures(tile_px: int, stain: str, rng: np.random.Generator, count: int = 8) -> list[np.ndarray]:
    """A few tissue textures: cytoplasm and stroma with fibres, dark nuclei (brown rings for IHC).

    The detail (noise at several scales, many nuclei) makes the JPEG tiles about as large and as
    slow to decode as real scanned tissue, which matters for benchmarks.
    """
    out = []
    for _ in range(count):
        if stain == "he":
            base = np.array([225, 160, 195], np.float32)  # eosin pink
            nucleus = np.array([85, 55, 140], np.float32)  # hematoxylin purple
        else:
            base = np.array([222, 218, 232], np.float32)  # pale counterstained cytoplasm
            nucleus = np.array([105, 115, 170], np.float32)  # hematoxylin blue
        coarse = cv2.GaussianBlur(rng.normal(0, 1, (tile_px, tile_px)).astype(np.float32), (0, 0), 6)
        fibres = cv2.GaussianBlur(rng.normal(0, 1, (tile_px, tile_px)).astype(np.float32), (0, 0), 1.2)
        shade = 1.0 + 0.9 * coarse[..., None] + 0.25 * fibres[..., None]
        img = base * np.clip(shade, 0.6, 1.2) + rng.normal(0, 7, (tile_px, tile_px, 3)).astype(np.float32)
        n = max(4, tile_px * tile_px // 500)
        centers = rng.integers(0, tile_px, (n, 2))
        radii = rng.integers(max(2, tile_px // 80), max(3, tile_px // 40), n)
        for (cx, cy), radius in zip(centers, radii, strict=True):
            if stain == "ihc":
                ring = (170, 115, 65)
                cv2.circle(img, (int(cx), int(cy)), int(radius * 2), ring, max(1, int(radius) // 2))
            tone = nucleus * float(rng.uniform(0.8, 1.15))
            cv2.circle(img, (int(cx), int(cy)), int(radius), tuple(float(v) for v in tone), -1)
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return out


def _level_tiles(
    width: int, height: int, tile_px: int, tissue_map: np.ndarray, textures: list[np.ndarray], seed: int
) -> Iterator[np.ndarray]:
    rng = np.random.default_rng(seed)
    glass = np.empty((tile_px, tile_px, 3), np.uint8)
    glass[:] = _GLASS_RGB
    map_h, map_w = tissue_map.shape
    for ty in range(0, height, tile_px):
        for tx in range(0, width, tile_px):
            # Tissue map cells under this tile, nearest-neighbour upsampled to the tile.
            xs = np.minimum(((tx + np.arange(tile_px)) * map_w) // width, map_w - 1)
            ys = np.minimum(((ty + np.arange(tile_px)) * map_h) // height, map_h - 1)
            local = tissue_map[np.ix_(ys, xs)]
            if not local.any():
                yield glass
                continue
            texture = textures[int(rng.integers(len(textures)))]
            yield np.where(local[..., None], texture, glass)


def _aperio_description(width: int, height: int, tile_px: int, jpeg_quality: int, mpp: float) -> str:
    return (
        f"Aperio Image Library v12.0.15 \r\n{width}x{height} ({tile_px}x{tile_px}) JPEG/RGB Q={jpeg_quality}"
        f"|AppMag = {round(10.0 / mpp)}|MPP = {mpp}|Filename = synthetic|ScanScope ID = WSI-HER2-SYNTHETIC"
    )


def _jpeg_tile_options(tile_px: int, jpeg_quality: int, photometric: str) -> dict:
    # tifffile takes RGB pixels either way; "outcolorspace" is what the JPEG stream stores.
    options: dict = {"tile": (tile_px, tile_px), "compression": "jpeg", "photometric": "rgb", "dtype": np.uint8}
    if photometric == "ycbcr":
        options.update(compressionargs={"level": jpeg_quality}, subsampling=(2, 2))
    else:
        options.update(compressionargs={"level": jpeg_quality, "outcolorspace": "rgb"}, subsampling=(1, 1))
    return options


def write_image_slide(
    path: str | Path,
    rgb: np.ndarray,
    *,
    mpp: float = 0.25,
    tile_px: int = 256,
    downsamples: tuple[int, ...] = (1, 4),
    jpeg_quality: int = 90,
    photometric: str = "ycbcr",
) -> None:
    """Write an RGB image (e.g. a real TMA core) as an Aperio-style pyramidal SVS of JPEG tiles.

    What reads stored tiles (the direct TIFF reader, GPU decoding) can then be tried on real tissue.

    Args:
        path: the .svs file to write.
        rgb: (h, w, 3) uint8, level 0.
        mpp: µm per level-0 pixel written into the description.
        tile_px: stored tile size.
        downsamples: pyramid levels (1 first), each reduced from level 0 by area averaging.
        jpeg_quality: JPEG quality of the tiles.
        photometric: "ycbcr" (subsampled) or "rgb", as for :func:`write_synthetic_slide`.
    """
    height, width = rgb.shape[:2]
    options = _jpeg_tile_options(tile_px, jpeg_quality, photometric)
    with tifffile.TiffWriter(path, bigtiff=width * height * 3 > 2**31) as tif:
        for i, ds in enumerate(downsamples):
            w, h = max(1, width // ds), max(1, height // ds)
            level = rgb if ds == 1 else cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
            description = _aperio_description(width, height, tile_px, jpeg_quality, mpp) if i == 0 else None
            tif.write(np.ascontiguousarray(level), description=description or f"{width}x{height} -> {w}x{h} - ",
                      subfiletype=0, metadata=None, **options)  # fmt: skip


def write_synthetic_slide(
    path: str | Path,
    *,
    width: int = 8192,
    height: int = 6144,
    mpp: float = 0.25,
    tile_px: int = 256,
    downsamples: tuple[int, ...] = (1, 4, 16),
    tissue_fraction: float = 0.4,
    tissue_map: np.ndarray | None = None,
    stain: str = "he",
    jpeg_quality: int = 80,
    photometric: str = "ycbcr",
    seed: int = 0,
) -> np.ndarray:
    """Write an Aperio-style pyramidal SVS and return its tissue map.

    Args:
        path: the .svs file to write.
        width: level-0 width in pixels.
        height: level-0 height in pixels.
        mpp: µm per level-0 pixel written into the description.
        tile_px: stored tile size.
        downsamples: pyramid levels (1 first).
        tissue_fraction: share of the slide covered by tissue when ``tissue_map`` is None.
        tissue_map: bool map of where tissue is, any resolution (stretched over the slide).
        stain: "he" or "ihc" texture.
        jpeg_quality: JPEG quality of the tiles.
        photometric: "ycbcr" (subsampled, as most scanners) or "rgb" (as older Aperio files).
        seed: random seed of the texture.

    Returns:
        The tissue map used.
    """
    rng = np.random.default_rng(seed)
    if tissue_map is None:
        tissue_map = random_tissue_map((max(8, height // 64), max(8, width // 64)), tissue_fraction, seed)
    tissue_map = np.asarray(tissue_map, bool)
    textures = _textures(tile_px, stain, rng)
    description = _aperio_description(width, height, tile_px, jpeg_quality, mpp)
    options = _jpeg_tile_options(tile_px, jpeg_quality, photometric)
    bigtiff = width * height * 3 > 2**31
    with tifffile.TiffWriter(path, bigtiff=bigtiff) as tif:
        for i, ds in enumerate(downsamples):
            w, h = max(1, width // ds), max(1, height // ds)
            tif.write(
                _level_tiles(w, h, tile_px, tissue_map, textures, seed + i),
                shape=(h, w, 3),
                description=description if i == 0 else f"{width}x{height} -> {w}x{h} - ",
                subfiletype=0,  # as Aperio writes: levels are not flagged "reduced"
                metadata=None,
                **options,
            )
            if i == 0:  # Aperio puts a small stripped thumbnail second
                thumb = np.where(
                    cv2.resize(
                        tissue_map.astype(np.uint8),
                        (max(1, width // 64), max(1, height // 64)),
                        interpolation=cv2.INTER_NEAREST,
                    )[..., None]
                    > 0,
                    np.array([200, 150, 190], np.uint8),
                    np.array(_GLASS_RGB, np.uint8),
                ).astype(np.uint8)
                tif.write(thumb, description=f"{width}x{height} -> thumbnail", photometric="rgb", metadata=None)
    return tissue_map
