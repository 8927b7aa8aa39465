"""Score one tile: cells per class, membrane DAB, completeness and the tile's own class."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import cv2
import numpy as np

from wsi_her2.errors import ConfigError
from wsi_her2.her2 import classify_by_percentages
from wsi_her2.models.dab.background import line_histogram
from wsi_her2.models.dab.cells import CellMaps, CellTable, measure_cells
from wsi_her2.models.dab.classify import MembraneThresholds, membrane_index
from wsi_her2.models.dab.config import DabConfig
from wsi_her2.models.dab.gate import TumourGate, gate_tumour_cells
from wsi_her2.models.dab.stain import StainVectors, check_mask, check_rgb, deconvolve

# Per-tile values the DAB scorer reports (tile table, GeoJSON, heatmap), in order. Counts per class
# and fractions are over the tile's *tumour* cells (the guideline's denominator); ``n_cells`` counts
# every detected cell.
TILE_KEYS: tuple[str, ...] = (
    "n_cells",
    "n_tumour_cells",
    "n_cells_0",
    "n_cells_1plus",
    "n_cells_2plus",
    "n_cells_3plus",
    "frac_0",
    "frac_1plus",
    "frac_2plus",
    "frac_3plus",
    "membrane_index",
    "mean_membrane_dab_od",
    "mean_completeness",
    "dab_area_fraction",
    "tile_class",
)


@dataclasses.dataclass(frozen=True)
class DabTileResult:
    """What the DAB scorer measured on one tile (or one region analysed alone).

    Attributes:
        counts: tumour cells per class 0, 1+, 2+, 3+ (all cells when the gate is off).
        counts_all: every detected cell per class.
        mean_membrane_od: mean membrane DAB OD over the tumour cells (nan if none).
        mean_completeness: mean fraction of each tumour cell's membrane stained at the 1+ level.
        dab_area_fraction: fraction of tissue pixels with DAB above the 1+ level.
        tile_class: the percentage rule over the tumour cells (0 when there are none).
        membrane_index: H-score-like 0-300 over the tumour cells (nan if none).
        levels: the membrane levels the cells were classed with.
        cells: per-cell table, only when asked for.
        is_tumour: per cell of ``cells``, the tumour gate's verdict, only when asked for.
    """

    counts: tuple[int, int, int, int]
    counts_all: tuple[int, int, int, int]
    mean_membrane_od: float
    mean_completeness: float
    dab_area_fraction: float
    tile_class: int
    membrane_index: float
    levels: MembraneThresholds
    cells: CellTable | None = None
    is_tumour: np.ndarray | None = None

    @property
    def n_cells(self) -> int:
        """Number of tumour cells scored (the guideline's denominator)."""
        return int(sum(self.counts))

    @property
    def n_cells_all(self) -> int:
        """Number of cells detected, tumour or not."""
        return int(sum(self.counts_all))

    @property
    def fractions(self) -> tuple[float, float, float, float]:
        """Fraction of tumour cells in each class (zeros when there are none)."""
        n = self.n_cells
        if n == 0:
            return (0.0, 0.0, 0.0, 0.0)
        return tuple(c / n for c in self.counts)  # type: ignore[return-value]

    def to_dict(self) -> dict[str, float]:
        """The flat JSON-ready measurements (the keys of :data:`TILE_KEYS`; counts and class as int)."""
        return tile_values(
            np.asarray(self.counts),
            self.n_cells_all,
            self.mean_membrane_od,
            self.mean_completeness,
            self.dab_area_fraction,
            self.tile_class,
        )


def tile_values(
    counts: np.ndarray,
    n_cells_all: int,
    mean_membrane_od: float,
    mean_completeness: float,
    dab_area_fraction: float,
    tile_class: int,
) -> dict[str, float]:
    """One tile's :data:`TILE_KEYS` values from its tumour-cell counts and means."""
    n = int(np.sum(counts))
    fractions = counts / n if n else np.zeros(4)
    return {
        "n_cells": int(n_cells_all),
        "n_tumour_cells": n,
        "n_cells_0": int(counts[0]),
        "n_cells_1plus": int(counts[1]),
        "n_cells_2plus": int(counts[2]),
        "n_cells_3plus": int(counts[3]),
        "frac_0": float(fractions[0]),
        "frac_1plus": float(fractions[1]),
        "frac_2plus": float(fractions[2]),
        "frac_3plus": float(fractions[3]),
        "membrane_index": float(membrane_index(counts)),
        "mean_membrane_dab_od": float(mean_membrane_od),
        "mean_completeness": float(mean_completeness),
        "dab_area_fraction": float(dab_area_fraction),
        "tile_class": int(tile_class),
    }


def classify_cell_counts(counts: Sequence[int], cfg: DabConfig) -> int:
    """The ASCO/CAP percentage rule over pooled cell counts (a tile's, a region's or a slide's).

    Use this, not ``classify_by_percentages`` alone, to pool DAB-scorer cells: it applies the
    scorer's ``min_3plus_focus``, so that a few stray 3+ cells do not make a case 2+.

    Args:
        counts: cells per class 0, 1+, 2+, 3+ (e.g. the sum of the tiles' ``counts``).
        cfg: the scorer's settings.

    Returns:
        0, 1, 2 or 3; 0 when there are no cells.
    """
    if len(counts) != 4:
        raise ValueError(f"need 4 class counts (0, 1+, 2+, 3+), got {len(counts)}")
    n = float(sum(counts))
    if n <= 0:
        return 0
    return classify_by_percentages([c / n for c in counts], min_3plus_focus=cfg.min_3plus_focus)


def _check_inputs(rgb: np.ndarray, valid_mask: np.ndarray | None) -> None:
    check_rgb(rgb)
    if valid_mask is not None:
        check_mask(valid_mask, rgb, "valid_mask")


@dataclasses.dataclass(frozen=True)
class TileAnalysis:
    """Everything :func:`analyse_tile` computed: the result and what evidence images need.

    Attributes:
        result: counts, means and class (with ``cells`` and ``is_tumour`` set).
        gate: the tumour gate's verdict on the cells.
        maps: pixel maps of the cells (when asked for).
        dab_od: HxW DAB OD.
        tissue: HxW tissue pixels.
        background_hist: the line-signal histogram inside this tile's nuclei.
    """

    result: DabTileResult
    gate: TumourGate
    maps: CellMaps | None
    dab_od: np.ndarray
    tissue: np.ndarray
    background_hist: np.ndarray


def analyse_tile(
    rgb: np.ndarray,
    stains: StainVectors,
    cfg: DabConfig,
    *,
    mpp: float | None = None,
    valid_mask: np.ndarray | None = None,
    levels: MembraneThresholds | None = None,
    with_maps: bool = False,
) -> TileAnalysis:
    """:func:`score_tile` plus what evidence images need: the gate, maps, DAB OD and tissue mask."""
    _check_inputs(rgb, valid_mask)
    mpp = float(mpp if mpp is not None else cfg.work_mpp)
    if not (math.isfinite(mpp) and mpp > 0):
        raise ValueError(f"mpp must be a positive number, got {mpp!r}")
    rgb = np.ascontiguousarray(rgb[..., :3])
    h_od, dab_od, mean_od = deconvolve(rgb, stains)
    tissue = mean_od > cfg.tissue_min_od
    measured = measure_cells(h_od, dab_od, tissue, cfg, mpp, levels=levels, with_maps=with_maps)
    cells, levels = measured.cells, measured.levels
    # The gate sees every cell of the tile (neighbours outside the ROI still make a cluster).
    gate = gate_tumour_cells(
        cells.x_px * mpp,
        cells.y_px * mpp,
        cells.nucleus_area_um2,
        cells.elongation,
        cells.nucleus_h_od,
        cfg.tumour_gate,
    )
    tissue_counted = tissue
    if valid_mask is not None:
        # Seeds near but outside the region still shape their neighbours' rings; only counting is clipped.
        region = valid_mask.astype(bool)
        tissue_counted = tissue & region
        xi = np.clip(np.rint(cells.x_px).astype(np.intp), 0, rgb.shape[1] - 1)
        yi = np.clip(np.rint(cells.y_px).astype(np.intp), 0, rgb.shape[0] - 1)
        inside = region[yi, xi]
        cells, gate = cells.subset(inside), _subset_gate(gate, inside)
    counts_all = np.bincount(cells.cell_class.astype(np.intp), minlength=4)[:4]
    tumour = gate.is_tumour
    counts = np.bincount(cells.cell_class[tumour].astype(np.intp), minlength=4)[:4]
    n = int(counts.sum())
    n_tissue = int(np.count_nonzero(tissue_counted))
    n_dab = int(np.count_nonzero(dab_od[tissue_counted] > levels.od_1plus))
    result = DabTileResult(
        counts=tuple(int(c) for c in counts),  # type: ignore[arg-type]
        counts_all=tuple(int(c) for c in counts_all),  # type: ignore[arg-type]
        mean_membrane_od=float(cells.membrane_od[tumour].mean()) if n else math.nan,
        mean_completeness=float(cells.completeness[tumour].mean()) if n else math.nan,
        dab_area_fraction=n_dab / n_tissue if n_tissue else 0.0,
        tile_class=classify_cell_counts([int(c) for c in counts], cfg),
        membrane_index=float(membrane_index(counts)),
        levels=levels,
        cells=cells,
        is_tumour=tumour,
    )
    return TileAnalysis(result, gate, measured.maps, dab_od, tissue, measured.background_hist)


def _subset_gate(gate: TumourGate, keep: np.ndarray) -> TumourGate:
    return dataclasses.replace(
        gate,
        is_tumour=gate.is_tumour[keep],
        epithelial_like=gate.epithelial_like[keep],
        epithelial_neighbours=gate.epithelial_neighbours[keep],
        epithelial_share=gate.epithelial_share[keep],
    )


def score_tile(
    rgb: np.ndarray,
    stains: StainVectors,
    cfg: DabConfig,
    *,
    mpp: float | None = None,
    valid_mask: np.ndarray | None = None,
    levels: MembraneThresholds | None = None,
    return_cells: bool = False,
) -> DabTileResult:
    """Score the HER2 membrane staining of one tile (or a region analysed alone), cell by cell.

    Alone, a tile sets its membrane levels above its own nuclei's background and gates its cells
    on their neighbours within the tile (cells near the edge have fewer). A slide is scored as a
    whole by :class:`~wsi_her2.models.dab.scorer.DabScorer`: one background and one gate for all
    its cells.

    Args:
        rgb: HxWx3 uint8 tile at about ``cfg.work_mpp``.
        stains: the slide's stain vectors (:func:`estimate_stain_vectors`).
        cfg: thresholds and sizes.
        mpp: the tile's exact µm/px when it differs from ``cfg.work_mpp``.
        valid_mask: HxW bool; cells whose nucleus centroid is outside it are not counted.
        levels: membrane levels to use (e.g. a slide's); None measures this tile's background.
        return_cells: also return the per-cell table and the gate's verdict.

    Returns:
        Tumour-cell counts per class (and all cells), means, DAB area fraction, index and class.
    """
    result = analyse_tile(rgb, stains, cfg, mpp=mpp, valid_mask=valid_mask, levels=levels).result
    return result if return_cells else dataclasses.replace(result, cells=None, is_tumour=None)


# Tiles coarser than this many times work_mpp cannot show membranes: refuse rather than guess.
_MAX_COARSENING = 2.0

# Names of the tile function's array outputs (``TileBatch.tile_arrays``).
CELLS_KEY = "dab_cells"
SECTORS_KEY = "dab_sectors"
BACKGROUND_KEY = "dab_background_hist"
DAB_HIST_KEY = "dab_tissue_hist"
# Columns of the per-cell array a worker sends for each tile (positions in µm from the tile's corner).
CELL_COLUMNS: tuple[str, ...] = (
    "x_um",
    "y_um",
    "nucleus_area_um2",
    "elongation",
    "nucleus_h_od",
    "membrane_od",
    "membrane_partial_od",
    "membrane_complete_od",
)


class DabTileFunction:
    """Picklable callable run inside loader worker processes (one call per tile).

    Tiles arrive at the loader's resolution ``mpp``; they are resized to ``cfg.work_mpp`` first
    when that differs by more than 10% (a 1024-px tile at 0.25 µm/px becomes 512 px). Each call
    returns the tile's cells (:data:`CELL_COLUMNS`), their ring sectors, and histograms of the
    background line signal and of the tissue's DAB: the slide's levels, gate and classes are set
    once every tile is in (:func:`~wsi_her2.models.dab.slide_cells.finish_slide`).

    Raises:
        ConfigError: ``mpp`` is more than twice ``cfg.work_mpp`` (e.g. 224-px tiles of a 256 µm
            field, 1.14 µm/px): membranes are 1-2 µm and would not be resolved.
    """

    def __init__(self, stains: StainVectors, cfg: DabConfig, mpp: float) -> None:
        if not (isinstance(mpp, (int, float)) and math.isfinite(mpp) and mpp > 0):
            raise ValueError(f"mpp must be a positive number, got {mpp!r}")
        if mpp > _MAX_COARSENING * cfg.work_mpp:
            raise ConfigError(
                f"tiles at {mpp:.2f} µm/px are too coarse for the DAB scorer (membranes are 1-2 µm)",
                hint=f"deliver tiles at {cfg.work_mpp:g} µm/px or finer, e.g. 512-px outputs of 256-µm tiles",
            )
        self.stains = stains
        self.cfg = cfg
        self.mpp = float(mpp)

    def __call__(self, rgb: np.ndarray, valid_mask: np.ndarray | None = None) -> dict[str, float | np.ndarray]:
        """Measure one tile: ``n_cells`` plus the arrays named by the ``*_KEY`` constants."""
        _check_inputs(rgb, valid_mask)
        mpp = self.mpp
        scale = mpp / self.cfg.work_mpp
        if abs(scale - 1.0) > 0.1:
            size = (max(8, round(rgb.shape[1] * scale)), max(8, round(rgb.shape[0] * scale)))
            interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
            mpp = self.mpp * rgb.shape[1] / size[0]
            rgb = cv2.resize(np.ascontiguousarray(rgb[..., :3]), size, interpolation=interp)
            if valid_mask is not None:
                mask8 = valid_mask.astype(np.uint8)
                valid_mask = cv2.resize(mask8, size, interpolation=cv2.INTER_NEAREST) > 0
        return measure_tile(rgb, self.stains, self.cfg, mpp, valid_mask)


def measure_tile(
    rgb: np.ndarray, stains: StainVectors, cfg: DabConfig, mpp: float, valid_mask: np.ndarray | None = None
) -> dict[str, float | np.ndarray]:
    """A tile's cells and histograms, for pooling over a slide (what :class:`DabTileFunction` returns).

    Cells whose nucleus centroid lies outside ``valid_mask`` are left out; so are tissue pixels
    outside it from the DAB histogram.
    """
    rgb = np.ascontiguousarray(rgb[..., :3])
    h_od, dab_od, mean_od = deconvolve(rgb, stains)
    tissue = mean_od > cfg.tissue_min_od
    measured = measure_cells(h_od, dab_od, tissue, cfg, mpp, levels=None)  # provisional: the slide sets the levels
    cells = measured.cells
    if valid_mask is not None:
        region = valid_mask.astype(bool)
        tissue &= region
        xi = np.clip(np.rint(cells.x_px).astype(np.intp), 0, rgb.shape[1] - 1)
        yi = np.clip(np.rint(cells.y_px).astype(np.intp), 0, rgb.shape[0] - 1)
        inside = region[yi, xi]
        cells = cells.subset(inside)
        sectors = measured.sectors[inside] if measured.sectors is not None else None
    else:
        sectors = measured.sectors
    packed = np.stack(
        [
            cells.x_px * mpp,
            cells.y_px * mpp,
            cells.nucleus_area_um2,
            cells.elongation,
            cells.nucleus_h_od,
            cells.membrane_od,
            cells.membrane_partial_od,
            cells.membrane_complete_od,
        ],
        axis=1,
    ).astype(np.float32)
    return {
        "n_cells": float(len(cells)),
        CELLS_KEY: packed,
        SECTORS_KEY: sectors if sectors is not None else np.zeros((0, cfg.n_sectors), np.float16),
        BACKGROUND_KEY: measured.background_hist,
        DAB_HIST_KEY: line_histogram(dab_od[tissue]),
    }
