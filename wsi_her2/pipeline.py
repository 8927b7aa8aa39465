"""The pipeline: slide reader -> tissue mask -> tile grid -> tile loader -> (model) -> aggregator -> writers.

These functions only compose the stages; each stage lives in its own module (streaming a slide's
tiles through a scorer: :mod:`wsi_her2.streaming`), and the results they make are in
:mod:`wsi_her2.results`. :func:`run_score` and :func:`run_tile` are what the
``score``, ``batch`` and ``tile`` commands call: they take the command's settings whole.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from shapely.geometry import MultiPolygon

from wsi_her2.aggregate import aggregate_slide
from wsi_her2.config import GridConfig, LoaderConfig, TissueConfig
from wsi_her2.errors import NoTissueError
from wsi_her2.models import load_scorer
from wsi_her2.models.base import TileScorer
from wsi_her2.outputs.scoring import write_score_outputs
from wsi_her2.outputs.tile_images import TileImageWriter
from wsi_her2.outputs.tiling import write_tiling_outputs
from wsi_her2.progress import ProgressCallback, ProgressEvent, report
from wsi_her2.results import PreparedSlide, SlideResult, TilingResult
from wsi_her2.roi import load_roi, rasterize
from wsi_her2.settings import ScoreSettings, TileSettings
from wsi_her2.slide import open_slide, read_thumbnail, require_mpp
from wsi_her2.streaming import NO_RESULT, drop_reasons, stream_tiles, tile_predictions
from wsi_her2.tiling.grid import build_tile_grid
from wsi_her2.tiling.loader import SlideSource, TileBatch, iter_tile_batches
from wsi_her2.tissue import TissueMask, detect_tissue

# Longest side of the overview image used for thumbnails and overlays.
OVERVIEW_SIDE_PX = 2048
PIXEL_CHECK_HINT = (
    "tiles dropped as glass or blur: check the scan's focus, or keep them with --min-blur 0 or --no-pixel-check"
)


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


def run_tile(
    slide: str | Path,
    out_dir: str | Path,
    settings: TileSettings | None = None,
    *,
    mpp: float | None = None,
    roi_path: str | Path | None = None,
    save_dir: str | Path | None = None,
    save_format: str = "png",
    progress: ProgressCallback | None = None,
) -> TilingResult:
    """Tile one slide and write its outputs folder (``manifest.json`` last): what ``wsi-her2 tile`` does.

    Args:
        slide: the slide file.
        out_dir: its output folder.
        settings: how to tile.
        mpp: µm/px override.
        roi_path: regions of interest (GeoJSON) restricting the grid.
        save_dir: also write the kept tiles as images into this folder (with a ``tiles.csv`` index).
        save_format: "png" or "jpg" for the saved tiles.
        progress: progress callback.

    Raises:
        MppError, SlideReadError, InputNotFoundError, NoTissueError: as for :func:`prepare_slide`.
    """
    settings = settings or TileSettings()
    loader = settings.loader.replace(return_images=save_dir is not None)
    roi = load_roi(roi_path) if roi_path else None
    prepared = prepare_slide(
        slide, mpp=mpp, backend=settings.backend, tissue=settings.tissue, grid=settings.grid, roi=roi,
        progress=progress,
    )  # fmt: skip
    try:
        writer = None
        if save_dir is not None:
            writer = TileImageWriter(save_dir, Path(slide).name.split(".")[0], prepared.grid, f".{save_format}")
        result = tile_slide(prepared, loader, on_batch=writer, progress=progress)
    finally:
        prepared.reader.close()
    if writer is not None:
        writer.finish()
    result.config = {**settings.report_config(loader=loader), "roi": str(roi_path) if roi_path else None}
    result.files = write_tiling_outputs(result, out_dir, result.config)
    return result


def score_slide(
    path: str | Path,
    scorer: TileScorer,
    settings: ScoreSettings | None = None,
    *,
    mpp: float | None = None,
    roi: MultiPolygon | None = None,
    progress: ProgressCallback | None = None,
) -> SlideResult:
    """Score one slide: tissue, grid, tiles through the model, the model's finish, slide-level rules.

    Args:
        path: the slide.
        scorer: a :class:`~wsi_her2.models.base.TileScorer` (DAB scorer or trained classifier).
        settings: how to score; the model's tile geometry replaces the grid fields the user did not set
            (``settings.grid_user_set``), and the model sets the loader's output size and batch size.
        mpp: µm/px override.
        roi: regions of interest restricting scoring.
        progress: progress callback.

    Raises:
        StainMismatchError: the slide's stain is not the model's (unless ``settings.check_stain`` is False).
        MppError, SlideReadError, InputNotFoundError: as for :func:`prepare_slide`.
    """
    settings = settings or ScoreSettings()
    calibration = dict(settings.calibration) if settings.calibration is not None else None
    grid_cfg = scorer.grid_config(settings.grid, settings.grid_user_set)
    prepared = prepare_slide(
        path, mpp=mpp, backend=settings.backend, tissue=settings.tissue, grid=grid_cfg, roi=roi, progress=progress,
        allow_empty=True,
    )  # fmt: skip
    loader = settings.loader
    outputs = scorer.outputs()
    try:
        if prepared.no_tissue is not None:
            config = settings.report_config(grid=grid_cfg)
            return SlideResult(prepared, "no_tissue", None, None, scorer.identity(), scorer.card(), {}, {},
                               prepared.timings_s, config, outputs, calibration=calibration)  # fmt: skip
        t0 = time.perf_counter()
        facts = scorer.prepare(prepared, check_stain=settings.check_stain)
        prepared.timings_s["model_prepare_s"] = time.perf_counter() - t0
        loader = loader.replace(
            output_size_px=scorer.output_size_px(prepared),
            return_images=scorer.needs_pixels,
            batch_size=scorer.batch_size or loader.batch_size,
        )
        streamed = stream_tiles(prepared, scorer, loader, progress)
        tiles = streamed.tiles
        finish = scorer.finish(tiles, prepared)
        predictions = tile_predictions(
            prepared, scorer, tiles, finish.probabilities, finish.measurements, streamed.reasons
        )
        score = aggregate_slide(predictions, settings.aggregate, label_granularity=scorer.label_granularity)
    finally:
        prepared.reader.close()
    runtime = {**scorer.runtime(), "tile_decode": streamed.decode}
    if score.no_evidence is not None:  # nothing to score: reported like a slide without tissue, never as 0
        prepared.no_tissue = f"{path}: {score.no_evidence}"
        prepared.no_tissue_hint = _no_evidence_hint(score.n_tiles_dropped, outputs.no_result_hint)
        return SlideResult(prepared, "no_tissue", None, None, scorer.identity(), scorer.card(), facts, runtime,
                           prepared.timings_s, settings.report_config(grid=grid_cfg, loader=loader), outputs,
                           calibration=calibration)  # fmt: skip
    return SlideResult(
        prepared, "done", predictions, score, scorer.identity(), scorer.card(), facts, runtime,
        prepared.timings_s, settings.report_config(grid=grid_cfg, loader=loader), outputs, finish.summary,
        finish.tables, calibration,
    )  # fmt: skip


def _no_evidence_hint(dropped: dict[str, int], no_result_hint: str) -> str:
    """What to do about a slide none of whose tiles could be scored, by why they were dropped."""
    hints = [PIXEL_CHECK_HINT] if any(reason != NO_RESULT for reason in dropped) else []
    if NO_RESULT in dropped or not dropped:
        hints.append(no_result_hint)
    return "; ".join(hints)


def run_score(
    slide: str | Path,
    out_dir: str | Path,
    settings: ScoreSettings | None = None,
    *,
    mpp: float | None = None,
    roi_path: str | Path | None = None,
    scorer: TileScorer | None = None,
    progress: ProgressCallback | None = None,
) -> SlideResult:
    """Score one slide and write its outputs folder (``report.json`` last): what ``wsi-her2 score`` does.

    Args:
        slide: the slide file.
        out_dir: its output folder.
        settings: how to score.
        mpp: µm/px override for this slide.
        roi_path: regions of interest (GeoJSON) for this slide.
        scorer: an already loaded scorer (batch workers load the model once); None loads it.
        progress: progress callback.

    Returns:
        The :class:`~wsi_her2.results.SlideResult` (status "done" or "no_tissue").
    """
    settings = settings or ScoreSettings()
    own = scorer is None
    if scorer is None:
        scorer = load_scorer(settings.model, inference=settings.inference, dab=settings.dab)
    try:
        roi = load_roi(roi_path) if roi_path else None
        result = score_slide(slide, scorer, settings, mpp=mpp, roi=roi, progress=progress)
    finally:
        if own:
            scorer.close()
    result.config.update({"model": settings.model, "roi": str(roi_path) if roi_path else None,
                          "settings_fingerprint": settings.fingerprint()})  # fmt: skip
    result.files = write_score_outputs(result, out_dir)
    return result
