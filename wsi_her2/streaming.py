"""A slide's tiles through a scorer: batches submitted as they arrive, results collected one batch late.

:func:`stream_tiles` takes the batches from where the slide's tiles are read or decoded
(:func:`~wsi_her2.tiling.source.scored_tile_batches`), hands each to the scorer, and keeps every
tile's result over the grid with why a tile was dropped; :func:`tile_predictions` turns the
scorer's finished results into what the aggregator and the writers take. The pipeline composes
these (:func:`wsi_her2.pipeline.score_slide`).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from wsi_her2.aggregate import TilePredictions
from wsi_her2.config import LoaderConfig
from wsi_her2.models.base import PendingResult, SlideTiles, TileScorer
from wsi_her2.progress import ProgressCallback, ProgressEvent, report
from wsi_her2.results import PreparedSlide
from wsi_her2.tiling.loader import TileBatch
from wsi_her2.tiling.source import scored_tile_batches

DROP_BACKGROUND = "background"
DROP_BLUR = "blur"
NO_RESULT = "no result"


@dataclass
class StreamedTiles:
    """What streaming a slide through a scorer gave.

    Attributes:
        tiles: every grid tile's result (the scorer's :meth:`~wsi_her2.models.base.TileScorer.finish` takes it).
        reasons: per grid tile, why it was dropped ("" when kept).
        decode: where the tiles were decoded and why (the report's ``runtime.tile_decode``).
    """

    tiles: SlideTiles
    reasons: np.ndarray
    decode: dict[str, Any]


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


def stream_tiles(
    prepared: PreparedSlide, scorer: TileScorer, loader: LoaderConfig, progress: ProgressCallback | None
) -> StreamedTiles:
    """Stream the tiles through the scorer; results are collected one batch late (overlap).

    Raises:
        DeviceError: ``loader.decode`` is "gpu" and the slide or scorer cannot be decoded on the device.
    """
    grid = prepared.grid
    n, n_classes = len(grid), len(scorer.classes)
    probabilities = np.full((n, n_classes), np.nan, np.float32)
    measurements: dict[str, np.ndarray] = {}
    tile_arrays: dict[str, list[np.ndarray | None]] = {}
    reasons = np.full(n, "", dtype=object)
    kept = np.zeros(n, bool)
    pixel_fraction = np.zeros(n, np.float32)
    blur = np.zeros(n, np.float32)
    pending: deque[tuple[np.ndarray, PendingResult]] = deque()
    waited = 0.0
    done = 0

    def collect(rows: np.ndarray, handle: PendingResult) -> None:
        result = handle.result()
        probabilities[rows] = result.probabilities
        for key, values in result.measurements.items():
            measurements.setdefault(key, np.full(n, np.nan))[rows] = values
        for key, arrays in result.tile_arrays.items():
            column = tile_arrays.setdefault(key, [None] * n)
            for row, array in zip(rows, arrays, strict=True):
                column[int(row)] = array

    tile_function = scorer.tile_function(prepared, loader.output_size_px)
    report(progress, ProgressEvent("score", 0, n, "tiles", "scoring tiles"))
    t0 = time.perf_counter()
    batches, decode = scored_tile_batches(prepared, loader, tile_device=scorer.tile_device, tile_function=tile_function)
    while True:
        t_wait = time.perf_counter()
        batch = next(batches, None)
        waited += time.perf_counter() - t_wait
        if batch is None:
            break
        reasons[batch.indices] = drop_reasons(batch, loader)
        kept[batch.indices] = batch.kept
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
    prepared.timings_s.update(
        {
            "tiles_and_model_s": elapsed,
            "waiting_for_tiles_s": waited,
            "tiles_per_s": n / elapsed if elapsed > 0 else 0.0,
        }
    )
    measurements["pixel_tissue_fraction"] = pixel_fraction
    measurements["blur_score"] = blur
    return StreamedTiles(SlideTiles(probabilities, measurements, tile_arrays, kept), reasons, decode)


def tile_predictions(
    prepared: PreparedSlide,
    scorer: TileScorer,
    tiles: SlideTiles,
    probabilities: np.ndarray,
    measurements: dict[str, np.ndarray],
    reasons: np.ndarray,
) -> TilePredictions:
    """The per-tile results the aggregator and the writers take: a tile is scored when it has a result."""
    scored = ~np.isnan(probabilities).any(axis=1) & (reasons == "")
    reasons = reasons.copy()
    reasons[(reasons == "") & ~scored] = NO_RESULT  # e.g. the DAB scorer found no cells
    measurements = {**measurements}
    for key in ("pixel_tissue_fraction", "blur_score"):  # the loader's, whatever the scorer returned
        measurements[key] = tiles.measurements[key]
    return TilePredictions(
        classes=tuple(scorer.classes),
        scored=scored,
        probabilities=probabilities,
        predicted=np.where(scored, np.argmax(np.nan_to_num(probabilities, nan=-1.0), axis=1), -1),
        weights=prepared.grid.tissue_fraction.astype(np.float64),
        measurements=measurements,
        drop_reason=reasons.astype(str),
    )
