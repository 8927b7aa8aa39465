"""What the stages make: the prepared slide (every model's slide context), tiling and scoring results.

These types sit below the stages that use them: models take a :class:`PreparedSlide` and tile
batches, writers take a :class:`TilingResult` or :class:`SlideResult`, and :mod:`wsi_her2.pipeline`
only composes. Nothing here imports a stage above it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from shapely.geometry import MultiPolygon

from wsi_her2.aggregate import SlideScore, TilePredictions
from wsi_her2.config import LoaderConfig
from wsi_her2.outputs.schema import ScorerOutputs
from wsi_her2.slide import SlideInfo, SlideReader
from wsi_her2.tiling.grid import TileGrid
from wsi_her2.tiling.loader import SlideSource
from wsi_her2.tissue import TissueMask


@dataclass
class PreparedSlide:
    """A slide opened and laid out: what every command, and every model, needs before it reads tiles.

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
        no_tissue_hint: what to do about it.
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

    def summary(self) -> dict[str, Any]:
        """JSON-ready facts about the slide as used: file, size, levels, µm/px and where it came from."""
        return {
            **self.info.to_dict(),
            "path_resolved": str(Path(self.info.path).resolve()),
            "mpp_used": self.info.mpp,
            "roi_area_um2": self.roi_area_um2,
            "scored_tissue_area_um2": self.scored_area_um2,
        }


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
        config: the resolved configuration of every stage (recorded in the manifest).
        files: the outputs written, by role (once written).
    """

    slide: PreparedSlide
    kept: np.ndarray
    pixel_tissue_fraction: np.ndarray
    blur_score: np.ndarray
    drop_reason: list[str]
    loader: LoaderConfig
    config: dict[str, Any] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def kept_grid(self) -> TileGrid:
        """The tiles kept after both checks."""
        return self.slide.grid.subset(self.kept)


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
        outputs: what the scorer adds to the result folder (columns, channels, files, caveat).
        scorer_summary: the scorer's slide-level summary (from its finishing step).
        tables: per file name of ``outputs.files``, the columns to write (e.g. one row per cell).
        calibration: the ``--dab-config`` file the settings applied (its hash, overrides and
            provenance), or None; recorded in the report.
        files: the outputs written, by role (once written).
    """

    slide: PreparedSlide
    status: str
    predictions: TilePredictions | None
    score: SlideScore | None
    model: dict[str, Any]
    model_card: dict[str, Any]
    model_facts: dict[str, Any]
    runtime: dict[str, Any]
    timings_s: dict[str, float]
    config: dict[str, Any]
    outputs: ScorerOutputs = field(default_factory=ScorerOutputs)
    scorer_summary: dict[str, Any] = field(default_factory=dict)
    tables: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    calibration: dict[str, Any] | None = None
    files: dict[str, Path] = field(default_factory=dict)
