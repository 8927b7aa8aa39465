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
from wsi_her2.slide import SlideInfo, SlideReader, open_slide, read_thumbnail, require_mpp
from wsi_her2.tiling.grid import TileGrid, build_tile_grid
from wsi_her2.tiling.loader import SlideSource, TileBatch, iter_tile_batches
from wsi_her2.tissue import TissueMask, detect_tissue

# Longest side of the overview image used for thumbnails and overlays.
OVERVIEW_SIDE_PX = 2048
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
        overview: (RGB, level-0 px per pixel x, y): the whole slide at most 2048 px wide, for pictures.
        no_tissue: why there is nothing to score, when the grid is empty.
        decode: where the scored tiles were decoded and why (set when they are scored).
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
    overview: tuple[np.ndarray, float, float] | None = None
    no_tissue: str | None = None
    no_tissue_hint: str | None = None
    decode: dict[str, Any] | None = None


def prepare_slide(
    path: str | Path,
    *,
    mpp: float | None = None,
    backend: str = "auto",
    tissue: TissueConfig | None = None,
    grid: GridConfig | None = None,
    roi: MultiPolygon | None = None,
    progress: ProgressCallback | None = None,
    allow_empty: bool = False,
) -> PreparedSlide:
    """Open a slide, find its tissue and lay the tile grid.

    Args:
        path: the slide.
        mpp: µm/px override.
        backend: slide reader to force, or "auto".
        tissue: tissue detection settings.
        grid: tile grid settings.
        roi: regions of interest (level-0 pixels) restricting the grid.
        progress: progress callback.
        allow_empty: return a slide with an empty grid (and ``no_tissue`` saying why) instead of
            raising when there is no tissue.

    Raises:
        MppError: the slide's µm/px is unknown or implausible and ``mpp`` was not given.
        NoTissueError: no tissue, or no tile reaches the tissue threshold (unless ``allow_empty``).
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
        region_mask = None
        roi_area = None
        if roi is not None:
            region_mask = rasterize(roi, mask.mask.shape, mask.scale_x, mask.scale_y)
            roi_area = float(roi.area) * slide_mpp * slide_mpp
        t0 = time.perf_counter()
        tile_grid = build_tile_grid(mask, reader.info, grid, region_mask=region_mask)
        timings["grid_s"] = time.perf_counter() - t0
        report(progress, ProgressEvent("tissue", 1, 1, "steps", f"{len(tile_grid)} tiles on tissue"))
        effective = mask.mask if region_mask is None else mask.mask & region_mask
        scored_area = float(effective.sum()) * mask.mpp * mask.mpp if mask.mpp else None
        info = reader.info
        overview = read_thumbnail(reader, max(1.0, max(info.width, info.height) / OVERVIEW_SIDE_PX))
        problem = _emptiness(path, mask, region_mask, len(tile_grid), grid or GridConfig())
        if problem is not None and not allow_empty:
            raise problem
    except BaseException:
        reader.close()
        raise
    prepared = PreparedSlide(
        source, reader, reader.info, mask, tile_grid, roi, roi_area, scored_area, timings, overview=overview
    )
    if problem is not None:
        prepared.no_tissue, prepared.no_tissue_hint = problem.message, problem.hint
    return prepared


def _emptiness(
    path: str | Path, mask: TissueMask, region_mask: np.ndarray | None, n_tiles: int, grid: GridConfig
) -> NoTissueError | None:
    """Why there is nothing to tile, or None when there are tiles."""
    if mask.is_empty:
        detail = "; ".join(mask.notes) if mask.notes else "no tissue was found"
        return NoTissueError(
            f"{path}: {detail}", hint="check that this is a brightfield (H&E or IHC) slide with tissue on it"
        )
    if region_mask is not None and not (region_mask & mask.mask).any():
        return NoTissueError(
            f"{path}: the regions of interest contain no tissue",
            hint="check that the ROI file belongs to this slide (level-0 pixel coordinates)",
        )
    if n_tiles == 0:
        return NoTissueError(
            f"{path}: tissue was found but no tile has at least {grid.min_tissue_fraction:.0%} tissue",
            hint="lower --min-tissue or use smaller tiles (--tile-size)",
        )
    return None


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
    for batch in iter_tile_batches(prepared.source, prepared.grid, loader, thresholds=prepared.mask.thresholds):
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
        "path_resolved": str(Path(info.path).resolve()),
        "mpp_used": info.mpp,
        "roi_area_um2": prepared.roi_area_um2,
        "scored_tissue_area_um2": prepared.scored_area_um2,
    }


@dataclass
class SlideResult:
    """Everything ``wsi-her2 score`` learned about one slide.

    Attributes:
        slide: the prepared slide (reader closed).
        status: "done", or "no_tissue" when there was nothing to score.
        predictions: per-tile results over the grid (None without tissue).
        score: the slide-level result (None without tissue).
        model: the scorer's identity (name, kind, classes, stain, weight hash).
        model_card: the full card (or the DAB scorer's settings).
        model_facts: what the scorer found preparing the slide (stain check, stain vectors).
        runtime: device and precision used.
        timings_s: seconds per stage, and rates.
        config: the resolved configuration of every stage.
        files: the outputs written, by role (once written).
    """

    slide: PreparedSlide
    status: str
    predictions: Any
    score: Any
    model: dict[str, Any]
    model_card: dict[str, Any]
    model_facts: dict[str, Any]
    runtime: dict[str, Any]
    timings_s: dict[str, float]
    config: dict[str, Any]
    files: dict[str, Path] = field(default_factory=dict)


def score_slide(
    path: str | Path,
    scorer: Any,
    *,
    mpp: float | None = None,
    backend: str = "auto",
    tissue: TissueConfig | None = None,
    grid: GridConfig | None = None,
    grid_user_set: frozenset[str] = frozenset(),
    loader: LoaderConfig | None = None,
    aggregate: Any = None,
    roi: MultiPolygon | None = None,
    check_stain: bool = True,
    progress: ProgressCallback | None = None,
) -> SlideResult:
    """Score one slide: tissue, grid, tiles through the model, slide-level rules.

    Args:
        path: the slide.
        scorer: a :class:`~wsi_her2.models.base.TileScorer` (DAB scorer or trained classifier).
        mpp: µm/px override.
        backend: slide reader to force.
        tissue: tissue detection settings.
        grid: tile grid settings; the model's tile geometry replaces the fields not in ``grid_user_set``.
        grid_user_set: grid fields the user set explicitly.
        loader: loader settings (output size and image return are set from the model).
        aggregate: :class:`~wsi_her2.aggregate.AggregateConfig`.
        roi: regions of interest restricting scoring.
        check_stain: refuse slides whose stain is not the model's.
        progress: progress callback.

    Raises:
        StainMismatchError: the slide's stain is not the model's (unless ``check_stain`` is False).
        MppError, SlideReadError, InputNotFoundError: as for :func:`prepare_slide`.
    """
    from wsi_her2.aggregate import AggregateConfig, aggregate_slide

    aggregate = aggregate or AggregateConfig()
    grid_cfg = scorer.grid_config(grid or GridConfig(), grid_user_set)
    prepared = prepare_slide(
        path,
        mpp=mpp,
        backend=backend,
        tissue=tissue,
        grid=grid_cfg,
        roi=roi,
        progress=progress,
        allow_empty=True,
    )
    loader = loader or LoaderConfig()
    config = {
        "tissue": (tissue or TissueConfig()).to_dict(),
        "grid": grid_cfg.to_dict(),
        "loader": loader.to_dict(),
        "aggregate": aggregate.to_dict(),
        "check_stain": check_stain,
    }
    try:
        if prepared.no_tissue is not None:
            return SlideResult(
                prepared,
                "no_tissue",
                None,
                None,
                scorer.identity(),
                scorer.card(),
                {},
                {},
                prepared.timings_s,
                config,
            )
        t0 = time.perf_counter()
        facts = scorer.prepare(prepared, check_stain=check_stain)
        prepared.timings_s["model_prepare_s"] = time.perf_counter() - t0
        size = scorer.output_size_px(prepared)
        loader = loader.replace(
            output_size_px=size,
            return_images=scorer.kind != "dab",
            batch_size=getattr(scorer, "batch_size", loader.batch_size),
        )
        config["loader"] = loader.to_dict()
        predictions = _run_model(prepared, scorer, loader, progress)
        score = aggregate_slide(predictions, aggregate, label_granularity=scorer.label_granularity)
    finally:
        prepared.reader.close()
    runtime = scorer.runtime() if hasattr(scorer, "runtime") else {"device": "cpu"}
    if prepared.decode is not None:
        runtime = {**runtime, "tile_decode": prepared.decode}
    return SlideResult(
        prepared,
        "done",
        predictions,
        score,
        scorer.identity(),
        scorer.card(),
        facts,
        runtime,
        prepared.timings_s,
        config,
    )


def _tile_batches(prepared: PreparedSlide, scorer: Any, loader: LoaderConfig, tile_function: Any) -> Any:
    """The loader for this slide and scorer: decoded on the model's device, or by the CPU workers.

    The choice (``loader.decode``, see :func:`wsi_her2.tiling.gpu_decode.choose_decode`) is
    recorded in ``prepared.decode``.
    """
    device = getattr(scorer, "device", None)
    if loader.decode != "cpu" and (device is not None or loader.decode == "gpu"):
        from wsi_her2.tiling.gpu_decode import choose_decode, iter_device_tile_batches

        choice = choose_decode(
            loader.decode, device, prepared.info, prepared.grid.tile_size_px, loader.output_size_px,
            needs_workers=tile_function is not None,
        )  # fmt: skip
        prepared.decode = choice.to_dict()
        if choice.on_device:
            return iter_device_tile_batches(choice, prepared.grid, loader, thresholds=prepared.mask.thresholds)
    else:
        prepared.decode = {"decode": "cpu", "reason": "--decode cpu" if loader.decode == "cpu" else "no model device"}
    return iter_tile_batches(
        prepared.source,
        prepared.grid,
        loader,
        thresholds=prepared.mask.thresholds,
        tile_function=tile_function,
        roi=prepared.roi,
    )


def _run_model(prepared: PreparedSlide, scorer: Any, loader: LoaderConfig, progress: ProgressCallback | None) -> Any:
    """Stream the tiles through the model; results are collected one batch late (overlap)."""
    from collections import deque

    from wsi_her2.aggregate import TilePredictions

    grid = prepared.grid
    n, n_classes = len(grid), len(scorer.classes)
    probabilities = np.full((n, n_classes), np.nan, np.float32)
    measurements: dict[str, np.ndarray] = {}
    reasons = np.full(n, "", dtype=object)
    pixel_fraction = np.zeros(n, np.float32)
    blur = np.zeros(n, np.float32)
    pending: deque[tuple[np.ndarray, Any]] = deque()
    waited = 0.0
    done = 0

    def collect(rows: np.ndarray, handle: Any) -> None:
        result = handle.result()
        probabilities[rows] = result.probabilities
        for key, values in result.measurements.items():
            measurements.setdefault(key, np.full(n, np.nan))[rows] = values

    tile_function = scorer.tile_function(prepared, loader.output_size_px)
    report(progress, ProgressEvent("score", 0, n, "tiles", "scoring tiles"))
    t0 = time.perf_counter()
    batches = _tile_batches(prepared, scorer, loader, tile_function)
    while True:
        t_wait = time.perf_counter()
        batch = next(batches, None)
        waited += time.perf_counter() - t_wait
        if batch is None:
            break
        reasons[batch.indices] = drop_reasons(batch, loader)
        pixel_fraction[batch.indices] = batch.pixel_tissue_fraction
        blur[batch.indices] = batch.blur_score
        pending.append((batch.indices[batch.kept], scorer.submit(batch)))
        while len(pending) > scorer.max_in_flight:
            collect(*pending.popleft())
        done += len(batch)
        report(progress, ProgressEvent("score", done, n, "tiles"))
    while pending:
        collect(*pending.popleft())
    elapsed = time.perf_counter() - t0
    scored = ~np.isnan(probabilities).any(axis=1) & (reasons == "")
    reasons[(reasons == "") & ~scored] = "no result"  # e.g. the DAB scorer found no cells
    prepared.timings_s.update(
        {
            "tiles_and_model_s": elapsed,
            "waiting_for_tiles_s": waited,
            "tiles_per_s": n / elapsed if elapsed > 0 else 0.0,
        }
    )
    measurements["pixel_tissue_fraction"] = pixel_fraction
    measurements["blur_score"] = blur
    return TilePredictions(
        classes=tuple(scorer.classes),
        scored=scored,
        probabilities=probabilities,
        predicted=np.where(scored, np.argmax(np.nan_to_num(probabilities, nan=-1.0), axis=1), -1),
        weights=grid.tissue_fraction.astype(np.float64),
        measurements=measurements,
        drop_reason=reasons.astype(str),
    )
