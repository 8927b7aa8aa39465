"""The pipeline: slide reader -> tissue mask -> tile grid -> tile loader -> (model) -> outputs.

These functions only compose the stages; each stage lives in its own module.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from shapely.geometry import MultiPolygon

from wsi_her2.config import GridConfig, LoaderConfig, TissueConfig
from wsi_her2.errors import NoTissueError
from wsi_her2.progress import ProgressCallback, ProgressEvent, report
from wsi_her2.roi import rasterize
from wsi_her2.slide import SlideInfo, SlideReader, open_slide, require_mpp
from wsi_her2.tiling.grid import TileGrid, build_tile_grid
from wsi_her2.tiling.loader import SlideSource, TileBatch, iter_tile_batches
from wsi_her2.tissue import TissueMask, detect_tissue

DROP_BACKGROUND = "background"
DROP_BLUR = "blur"


@dataclass
class PreparedSlide:
    """A slide opened and laid out: what every command needs before it reads tiles.

    Attributes:
        source: how workers reopen the slide.
        reader: the open reader (the caller closes it).
        info: the slide's facts.
        mask: the tissue mask.
        grid: tiles on tissue (inside the ROI when one is given).
        roi: the regions of interest, level-0 pixels, or None.
        roi_area_um2: area of the regions of interest in µm², or None.
        scored_area_um2: tissue area inside the regions (or all tissue), µm².
        timings_s: seconds per step.
    """

    source: SlideSource
    reader: SlideReader
    info: SlideInfo
    mask: TissueMask
    grid: TileGrid
    roi: MultiPolygon | None = None
    roi_area_um2: float | None = None
    scored_area_um2: float | None = None
    timings_s: dict[str, float] = field(default_factory=dict)


def prepare_slide(
    path: str | Path,
    *,
    mpp: float | None = None,
    backend: str = "auto",
    tissue: TissueConfig | None = None,
    grid: GridConfig | None = None,
    roi: MultiPolygon | None = None,
    progress: ProgressCallback | None = None,
) -> PreparedSlide:
    """Open a slide, find its tissue and lay the tile grid.

    Raises:
        MppError: the slide's µm/px is unknown or implausible and ``mpp`` was not given.
        NoTissueError: no tissue, or no tile reaches the tissue threshold.
    """
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    source = SlideSource(str(path), mpp, backend)
    reader = open_slide(path, mpp=mpp, backend=backend)  # type: ignore[arg-type]
    try:
        slide_mpp = require_mpp(reader.info)
        timings["open_s"] = time.perf_counter() - t0
        report(progress, ProgressEvent("tissue", 0, 1, "steps", "finding tissue"))
        t0 = time.perf_counter()
        mask = detect_tissue(reader, tissue)
        timings["tissue_s"] = time.perf_counter() - t0
        if mask.is_empty:
            detail = "; ".join(mask.notes) if mask.notes else "no tissue was found"
            raise NoTissueError(
                f"{path}: {detail}",
                hint="check that this is a brightfield (H&E or IHC) slide with tissue on it",
            )
        region_mask = None
        roi_area = None
        if roi is not None:
            region_mask = rasterize(roi, mask.mask.shape, mask.scale_x, mask.scale_y)
            roi_area = float(roi.area) * slide_mpp * slide_mpp
            if not (region_mask & mask.mask).any():
                raise NoTissueError(
                    f"{path}: the regions of interest contain no tissue",
                    hint="check that the ROI file belongs to this slide (level-0 pixel coordinates)",
                )
        t0 = time.perf_counter()
        tile_grid = build_tile_grid(mask, reader.info, grid, region_mask=region_mask)
        timings["grid_s"] = time.perf_counter() - t0
        report(progress, ProgressEvent("tissue", 1, 1, "steps", f"{len(tile_grid)} tiles on tissue"))
        if len(tile_grid) == 0:
            threshold = (grid or GridConfig()).min_tissue_fraction
            raise NoTissueError(
                f"{path}: tissue was found but no tile has at least {threshold:.0%} tissue",
                hint="lower --min-tissue or use smaller tiles (--tile-size)",
            )
        effective = mask.mask if region_mask is None else mask.mask & region_mask
        scored_area = float(effective.sum()) * mask.mpp * mask.mpp if mask.mpp else None
    except BaseException:
        reader.close()
        raise
    return PreparedSlide(source, reader, reader.info, mask, tile_grid, roi, roi_area, scored_area, timings)


@dataclass
class TilingResult:
    """What ``wsi-her2 tile`` found and kept.

    Attributes:
        slide: the prepared slide (grid = tiles that passed the mask threshold).
        kept: per grid tile, True when it also passed the pixel-level check.
        pixel_tissue_fraction: per grid tile, fraction of tissue pixels.
        blur_score: per grid tile, variance of the Laplacian (see the loader).
        drop_reason: per grid tile, "" when kept, else "background" or "blur".
        loader: the loader settings used.
    """

    slide: PreparedSlide
    kept: np.ndarray
    pixel_tissue_fraction: np.ndarray
    blur_score: np.ndarray
    drop_reason: list[str]
    loader: LoaderConfig

    @property
    def kept_grid(self) -> TileGrid:
        """The tiles kept after both checks."""
        return self.slide.grid.subset(self.kept)


def drop_reasons(batch: TileBatch, loader: LoaderConfig) -> list[str]:
    """Why each tile of a batch was dropped ("" for kept tiles)."""
    reasons = []
    for kept, fraction in zip(batch.kept, batch.pixel_tissue_fraction, strict=True):
        if kept:
            reasons.append("")
        elif fraction < loader.min_pixel_tissue_fraction:
            reasons.append(DROP_BACKGROUND)
        else:
            reasons.append(DROP_BLUR)
    return reasons


def tile_slide(
    prepared: PreparedSlide,
    loader: LoaderConfig | None = None,
    *,
    on_batch: Callable[[TileBatch], None] | None = None,
    progress: ProgressCallback | None = None,
) -> TilingResult:
    """Read every tile of the grid, apply the pixel-level check, hand batches to ``on_batch``.

    Args:
        prepared: the slide with its grid.
        loader: output size, workers, pixel-check thresholds.
        on_batch: called with every batch (e.g. to save tile images), in grid order.
        progress: progress callback.
    """
    loader = loader or LoaderConfig()
    n = len(prepared.grid)
    kept = np.zeros(n, bool)
    fractions = np.zeros(n, np.float32)
    blur = np.zeros(n, np.float32)
    reasons = [""] * n
    done = 0
    t0 = time.perf_counter()
    report(progress, ProgressEvent("tiles", 0, n, "tiles", "reading tiles"))
    for batch in iter_tile_batches(
        prepared.source, prepared.grid, loader, thresholds=prepared.mask.thresholds
    ):
        kept[batch.indices] = batch.kept
        fractions[batch.indices] = batch.pixel_tissue_fraction
        blur[batch.indices] = batch.blur_score
        for i, reason in zip(batch.indices, drop_reasons(batch, loader), strict=True):
            reasons[int(i)] = reason
        if on_batch is not None:
            on_batch(batch)
        done += len(batch)
        report(progress, ProgressEvent("tiles", done, n, "tiles"))
    prepared.timings_s["tiles_s"] = time.perf_counter() - t0
    return TilingResult(prepared, kept, fractions, blur, reasons, loader)


def slide_summary(prepared: PreparedSlide) -> dict[str, Any]:
    """JSON-ready facts about the slide as used: file, size, levels, µm/px and where it came from."""
    info = prepared.info
    return {
        **info.to_dict(),
        "mpp_used": info.mpp,
        "roi_area_um2": prepared.roi_area_um2,
        "scored_tissue_area_um2": prepared.scored_area_um2,
    }
