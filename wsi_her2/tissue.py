"""Tissue detection on a low-resolution image of the slide: a brightfield mask and its polygons.

Otsu on HSV saturation finds stained tissue, mean optical density rescues pale tissue (faint
hematoxylin, score-0 IHC), pen ink and very dark debris are rejected by colour, then morphology
joins fragments, fills small holes and drops specks. OpenCV does the pixel work: on a 2500x1875
thumbnail this takes milliseconds, where scikit-image's rgb2hsv alone takes about a second.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, field
from typing import Any

import cv2
import numpy as np
import shapely
from shapely.geometry import MultiPolygon, Polygon

from wsi_her2.config import TissueConfig
from wsi_her2.slide.base import SlideReader
from wsi_her2.slide.regions import read_thumbnail

# Longest side of the detection image when the slide's µm/px is unknown, and at most.
_FALLBACK_SIDE_PX = 2048
_MAX_SIDE_PX = 8192


@dataclass(frozen=True)
class TissueThresholds:
    """The thresholds a mask was made with, reused by the loader's pixel-level tile check.

    Attributes:
        saturation: HSV saturation (0-255) above which a pixel is stained tissue.
        glass_gray: grey level of the glass (background) of this slide.
        optical_density: optical density above the glass's above which a pixel is tissue.
        texture: local grey-level standard deviation above which a pixel is tissue.
    """

    saturation: float = 20.0
    glass_gray: float = 235.0
    optical_density: float = 0.06
    texture: float = 3.0


def tissue_pixels(
    rgb: np.ndarray, thresholds: TissueThresholds, *, denoise: bool = False, tile_rows: int | None = None
) -> np.ndarray:
    """Bool map of the tissue pixels of an RGB image: stained, absorbing or textured.

    Args:
        rgb: (h, w, 3) uint8.
        thresholds: the slide's thresholds.
        denoise: median-filter the saturation first (JPEG chroma noise on glass in thumbnails).
        tile_rows: ``rgb`` is a stack of tiles this many rows tall, one above the other: the
            texture is measured within each tile, as if each were passed alone (one call for a
            whole batch of tiles).
    """
    if denoise and min(rgb.shape[:2]) >= 3:
        saturation = cv2.medianBlur(cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)[..., 1], 3)
        stained = saturation > thresholds.saturation
    else:
        stained = _saturation_above(rgb, thresholds.saturation)
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    # Optical density above the glass's, log10(glass / grey) > t, is a plain grey-level threshold.
    dense = gray < thresholds.glass_gray * 10.0 ** (-thresholds.optical_density)
    # Local contrast: tissue has cells and fibres, glass is smooth. This finds very pale tissue
    # (score-0 IHC with faint hematoxylin) that neither saturation nor density separates.
    variance = _local_variance(gray.astype(np.float32), tile_rows)
    return stained | dense | (variance > thresholds.texture**2)


@functools.lru_cache(maxsize=8)
def _min_chroma(threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Per value V = max(R, G, B): the least max - min whose HSV saturation exceeds ``threshold``.

    OpenCV's 8-bit saturation is ``(diff * round((255 << 12) / V) + 2048) >> 12``; it grows with
    diff, so "saturation > threshold" is "diff >= a per-V bound", a table lookup.
    """
    v = np.arange(256, dtype=np.int64)
    scale = np.zeros(256, np.int64)
    scale[1:] = np.round((255 << 12) / v[1:])
    diff = np.arange(256, dtype=np.int64)[None, :]
    saturation = (diff * scale[:, None] + 2048) >> 12
    passes = (saturation > threshold) & (diff <= v[:, None])
    bound = np.where(passes.any(axis=1), passes.argmax(axis=1), 255).astype(np.uint8)
    never = np.logical_not(passes.any(axis=1))
    return bound, never


def _saturation_above(rgb: np.ndarray, threshold: float) -> np.ndarray:
    """``cvtColor(rgb, RGB2HSV)[..., 1] > threshold``, exactly, without computing hue (10x cheaper)."""
    r, g, b = cv2.split(np.ascontiguousarray(rgb))
    high = cv2.max(cv2.max(r, g), b)
    chroma = cv2.subtract(high, cv2.min(cv2.min(r, g), b))
    bound, never = _min_chroma(float(threshold))
    above = cv2.compare(chroma, cv2.LUT(high, bound), cv2.CMP_GE) > 0
    if never.any():
        above &= ~never[high]
    return above


def _local_variance(g: np.ndarray, tile_rows: int | None, k: int = 5) -> np.ndarray:
    """Grey-level variance in a k x k window; per tile of ``tile_rows`` rows when given."""
    if tile_rows is None or tile_rows == g.shape[0]:
        mean = cv2.blur(g, (k, k))
        return cv2.blur(g * g, (k, k)) - mean * mean
    # Each tile is padded with its own reflected border (OpenCV's default border, reflect-101),
    # so no window reaches into the tile above or below.
    r = k // 2
    n, w = g.shape[0] // tile_rows, g.shape[1]
    padded = np.pad(g.reshape(n, tile_rows, w), ((0, 0), (r, r), (r, r)), mode="reflect")
    tall = padded.reshape(n * (tile_rows + 2 * r), w + 2 * r)
    mean = cv2.blur(tall, (k, k))
    variance = cv2.blur(tall * tall, (k, k)) - mean * mean
    return variance.reshape(n, tile_rows + 2 * r, w + 2 * r)[:, r:-r, r:-r].reshape(g.shape)


@dataclass(frozen=True)
class TissueMask:
    """Where the tissue is.

    Attributes:
        mask: (h, w) bool, True on tissue, at ``scale_x`` x ``scale_y`` level-0 pixels per pixel.
        scale_x: level-0 pixels per mask pixel along x.
        scale_y: level-0 pixels per mask pixel along y.
        mpp: µm per mask pixel (None when the slide's µm/px is unknown).
        polygons: the tissue outline in level-0 pixel coordinates.
        thresholds: the thresholds used, reused by the pixel-level tile check.
        notes: observations worth telling the user (e.g. "looks like fluorescence").
        thumbnail: the RGB image the mask was computed on (kept for overlays).
    """

    mask: np.ndarray
    scale_x: float
    scale_y: float
    mpp: float | None
    polygons: MultiPolygon
    thresholds: TissueThresholds
    notes: tuple[str, ...] = ()
    thumbnail: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def tissue_fraction(self) -> float:
        """Fraction of the slide area that is tissue."""
        return float(self.mask.mean()) if self.mask.size else 0.0

    @property
    def tissue_area_um2(self) -> float | None:
        """Tissue area in µm² (None when µm/px is unknown)."""
        if self.mpp is None:
            return None
        return float(self.mask.sum()) * self.mpp * self.mpp

    @property
    def is_empty(self) -> bool:
        """True when no tissue was found."""
        return not bool(self.mask.any())

    def summary(self) -> dict[str, Any]:
        """JSON-ready facts about the mask (no pixels)."""
        return {
            "mask_shape_px": list(self.mask.shape),
            "mask_scale_level0_px": [self.scale_x, self.scale_y],
            "mask_mpp": self.mpp,
            "tissue_fraction_of_slide": round(self.tissue_fraction, 5),
            "tissue_area_mm2": None if self.tissue_area_um2 is None else round(self.tissue_area_um2 / 1e6, 4),
            "tissue_pieces": len(self.polygons.geoms),
            "thresholds": {k: round(float(v), 4) for k, v in asdict(self.thresholds).items()},
            "notes": list(self.notes),
        }


def _disk(radius_px: float) -> np.ndarray | None:
    r = round(radius_px)
    if r < 1:
        return None
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))


def pen_ink_mask(hsv: np.ndarray) -> np.ndarray:
    """Marker ink by colour: green and saturated blue (never tissue stains), saturated red, black.

    Thresholds are in OpenCV HSV (H 0-179, S and V 0-255). Eosin and DAB are far less saturated
    than marker ink; hematoxylin is blue-violet (H ~115-140) and pale.
    """
    h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    green = (h >= 35) & (h <= 95) & (s > 60) & (v > 30)
    blue = (h > 95) & (h <= 122) & (s > 120) & (v > 30)
    red = ((h <= 4) | (h >= 176)) & (s > 180) & (v > 60)  # eosin leans magenta (H ~165-175)
    black = (v < 45) & (s < 90)  # dark DAB is brown, i.e. saturated; ink is neutral
    return green | blue | red | black


def tissue_mask_from_rgb(
    rgb: np.ndarray, mpp: float | None, cfg: TissueConfig
) -> tuple[np.ndarray, TissueThresholds, list[str]]:
    """Compute a tissue mask on an RGB image of a brightfield slide.

    Args:
        rgb: (h, w, 3) uint8.
        mpp: µm per pixel of ``rgb`` (sizes in ``cfg`` are in µm); None uses a nominal 4 µm/px.
        cfg: thresholds and sizes.

    Returns:
        (mask, thresholds used, notes).
    """
    notes: list[str] = []
    px_um = mpp if mpp else 4.0
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    if rgb.size == 0 or float(np.percentile(hsv[..., 2], 75)) < 100:
        notes.append(
            "the image is mostly dark: this looks like a fluorescence or darkfield slide, "
            "and brightfield tissue detection found no tissue"
        )
        return np.zeros(rgb.shape[:2], bool), TissueThresholds(), notes
    saturation = cv2.medianBlur(hsv[..., 1], 3) if min(rgb.shape[:2]) >= 3 else hsv[..., 1]
    otsu, _ = cv2.threshold(saturation, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    thresholds = TissueThresholds(
        saturation=max(float(otsu), float(cfg.min_saturation)),
        glass_gray=float(np.clip(np.percentile(gray, 99), 200.0, 255.0)),
        optical_density=cfg.min_optical_density,
        texture=cfg.min_texture,
    )
    tissue = tissue_pixels(rgb, thresholds, denoise=True)
    if cfg.reject_pen:
        # Ink strokes are wide; a few dark or blue pixels are nuclei, not a pen.
        pen = _drop_small_pieces(pen_ink_mask(hsv).astype(np.uint8), cfg.min_pen_area_um2 / (px_um * px_um)) > 0
        if pen.any():
            grow = _disk(max(1.0, 8.0 / px_um))  # ink edges are paler than the stroke
            if grow is not None:
                pen = cv2.dilate(pen.astype(np.uint8), grow) > 0
            share = float((pen & tissue).sum()) / max(1, int(tissue.sum()))
            if share > 0.01:
                notes.append(f"rejected marker ink covering {share:.0%} of the detected tissue")
            tissue &= ~pen
    mask: np.ndarray = tissue.astype(np.uint8)
    kernel = _disk(1.0)
    if kernel is not None and min(mask.shape) > 8:
        mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, kernel)  # isolated noisy pixels
    kernel = _disk(cfg.close_um / px_um)
    if kernel is not None:
        mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, kernel)
    mask = _fill_small_holes(mask, cfg.max_hole_um2 / (px_um * px_um))
    mask = _drop_small_pieces(mask, cfg.min_area_um2 / (px_um * px_um))
    return mask.astype(bool), thresholds, notes


def _fill_small_holes(mask: np.ndarray, max_hole_px: float) -> np.ndarray:
    inverse = (mask == 0).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(inverse, connectivity=4)
    h, w = mask.shape
    fill = np.zeros(count, bool)
    for i in range(1, count):
        x, y, bw, bh, area = stats[i]
        touches_border = x == 0 or y == 0 or x + bw == w or y + bh == h
        fill[i] = (not touches_border) and area <= max_hole_px
    out = mask.copy()
    out[fill[labels]] = 1
    return out


def _drop_small_pieces(mask: np.ndarray, min_area_px: float) -> np.ndarray:
    _, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    keep = stats[:, cv2.CC_STAT_AREA] >= max(min_area_px, 1)
    keep[0] = False
    return keep[labels].astype(np.uint8)


def mask_to_polygons(mask: np.ndarray, scale_x: float, scale_y: float, tolerance_px: float) -> MultiPolygon:
    """Outline a mask as polygons (with holes) in level-0 pixel coordinates."""
    contours, hierarchy = cv2.findContours(mask.astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    if hierarchy is None:
        return MultiPolygon()
    hierarchy = hierarchy[0]
    scale = np.array([scale_x, scale_y])
    polygons = []
    for i, contour in enumerate(contours):
        if hierarchy[i][3] != -1 or len(contour) < 3:
            continue  # holes are collected under their outer contour
        shell = (contour[:, 0, :] + 0.5) * scale
        holes = []
        child = hierarchy[i][2]
        while child != -1:
            if len(contours[child]) >= 3:
                holes.append((contours[child][:, 0, :] + 0.5) * scale)
            child = hierarchy[child][0]
        polygon = shapely.make_valid(Polygon(shell, holes))
        if tolerance_px > 0:
            polygon = polygon.simplify(tolerance_px, preserve_topology=True)
        for part in getattr(polygon, "geoms", [polygon]):
            if isinstance(part, Polygon) and not part.is_empty and part.area > 0:
                polygons.append(part)
    return MultiPolygon(polygons)


def detect_tissue(reader: SlideReader, cfg: TissueConfig | None = None) -> TissueMask:
    """Find the tissue of a brightfield slide (H&E or IHC).

    Args:
        reader: an open slide.
        cfg: detection settings (defaults when None).

    Returns:
        The mask at about ``cfg.mask_mpp`` µm/px, with its level-0 polygons.
    """
    cfg = cfg or TissueConfig()
    info = reader.info
    longest = max(info.width, info.height)
    if info.has_mpp:
        downsample = cfg.mask_mpp / info.mpp
    else:
        downsample = longest / _FALLBACK_SIDE_PX
    downsample = max(1.0, downsample, longest / _MAX_SIDE_PX)
    thumb, scale_x, scale_y = read_thumbnail(reader, downsample)
    mask_mpp = info.mpp * (scale_x + scale_y) / 2 if info.has_mpp else None
    mask, thresholds, notes = tissue_mask_from_rgb(thumb, mask_mpp, cfg)
    tolerance = cfg.simplify_um / info.mpp if info.has_mpp else (scale_x + scale_y) / 2
    polygons = mask_to_polygons(mask, scale_x, scale_y, tolerance)
    return TissueMask(
        mask=mask,
        scale_x=scale_x,
        scale_y=scale_y,
        mpp=mask_mpp,
        polygons=polygons,
        thresholds=thresholds,
        notes=tuple(notes),
        thumbnail=thumb,
    )
