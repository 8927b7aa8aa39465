"""Score one tile: cells per class, membrane DAB, completeness and the tile's own class."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import cv2
import numpy as np

from wsi_her2.errors import ConfigError
from wsi_her2.her2 import classify_by_percentages
from wsi_her2.models.dab.cells import CellMaps, CellTable, measure_cells
from wsi_her2.models.dab.config import DabConfig
from wsi_her2.models.dab.stain import StainVectors, check_mask, check_rgb, deconvolve

# Keys of DabTileFunction's output, in order.
TILE_KEYS: tuple[str, ...] = (
    "n_cells",
    "n_cells_0",
    "n_cells_1plus",
    "n_cells_2plus",
    "n_cells_3plus",
    "frac_0",
    "frac_1plus",
    "frac_2plus",
    "frac_3plus",
    "mean_membrane_dab_od",
    "mean_completeness",
    "dab_area_fraction",
    "tile_class",
)


@dataclasses.dataclass(frozen=True)
class DabTileResult:
    """What the DAB scorer measured on one tile.

    Attributes:
        counts: cells per class 0, 1+, 2+, 3+.
        mean_membrane_od: mean membrane DAB OD over cells (nan if none).
        mean_completeness: mean fraction of each membrane that is stained (nan if none).
        dab_area_fraction: fraction of tissue pixels with DAB above ``membrane_od_1plus``.
        tile_class: the percentage rule over this tile's cells (0 when no cells).
        cells: per-cell table, only when asked for.
    """

    counts: tuple[int, int, int, int]
    mean_membrane_od: float
    mean_completeness: float
    dab_area_fraction: float
    tile_class: int
    cells: CellTable | None = None

    @property
    def n_cells(self) -> int:
        """Number of cells scored."""
        return int(sum(self.counts))

    @property
    def fractions(self) -> tuple[float, float, float, float]:
        """Fraction of cells in each class (zeros when there are no cells)."""
        n = self.n_cells
        if n == 0:
            return (0.0, 0.0, 0.0, 0.0)
        return tuple(c / n for c in self.counts)  # type: ignore[return-value]

    def to_dict(self) -> dict[str, float]:
        """The flat JSON-ready measurements (the keys of :data:`TILE_KEYS`; counts and class as int)."""
        f = self.fractions
        return {
            "n_cells": self.n_cells,
            "n_cells_0": self.counts[0],
            "n_cells_1plus": self.counts[1],
            "n_cells_2plus": self.counts[2],
            "n_cells_3plus": self.counts[3],
            "frac_0": f[0],
            "frac_1plus": f[1],
            "frac_2plus": f[2],
            "frac_3plus": f[3],
            "mean_membrane_dab_od": float(self.mean_membrane_od),
            "mean_completeness": float(self.mean_completeness),
            "dab_area_fraction": float(self.dab_area_fraction),
            "tile_class": self.tile_class,
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


def analyse_tile(
    rgb: np.ndarray,
    stains: StainVectors,
    cfg: DabConfig,
    *,
    mpp: float | None = None,
    valid_mask: np.ndarray | None = None,
    with_maps: bool = False,
) -> tuple[DabTileResult, CellTable, CellMaps | None, np.ndarray, np.ndarray]:
    """:func:`score_tile` plus what evidence images need: the cells, maps, DAB OD and tissue mask."""
    _check_inputs(rgb, valid_mask)
    mpp = float(mpp if mpp is not None else cfg.work_mpp)
    if not (math.isfinite(mpp) and mpp > 0):
        raise ValueError(f"mpp must be a positive number, got {mpp!r}")
    rgb = np.ascontiguousarray(rgb[..., :3])
    h_od, dab_od, mean_od = deconvolve(rgb, stains)
    tissue = mean_od > cfg.tissue_min_od
    if valid_mask is not None:
        # Seeds near but outside the region still shape their neighbours' rings; only counting is clipped.
        region = valid_mask.astype(bool)
        tissue_counted = tissue & region
    else:
        region = None
        tissue_counted = tissue
    cells, maps = measure_cells(h_od, dab_od, tissue, cfg, mpp, with_maps=with_maps)
    if region is not None and len(cells):
        xi = np.clip(np.rint(cells.x_px).astype(np.intp), 0, rgb.shape[1] - 1)
        yi = np.clip(np.rint(cells.y_px).astype(np.intp), 0, rgb.shape[0] - 1)
        inside = region[yi, xi]
        cells = CellTable(*(getattr(cells, f.name)[inside] for f in dataclasses.fields(CellTable)))
    counts = np.bincount(cells.cell_class.astype(np.intp), minlength=4)[:4]
    n = int(counts.sum())
    n_tissue = int(np.count_nonzero(tissue_counted))
    n_dab = int(np.count_nonzero(dab_od[tissue_counted] > cfg.membrane_od_1plus))
    dab_frac = n_dab / n_tissue if n_tissue else 0.0
    tile_class = classify_cell_counts([int(c) for c in counts], cfg)
    result = DabTileResult(
        counts=tuple(int(c) for c in counts),  # type: ignore[arg-type]
        mean_membrane_od=float(cells.membrane_od.mean()) if n else math.nan,
        mean_completeness=float(cells.completeness.mean()) if n else math.nan,
        dab_area_fraction=dab_frac,
        tile_class=int(tile_class),
        cells=None,
    )
    return result, cells, maps, dab_od, tissue


def score_tile(
    rgb: np.ndarray,
    stains: StainVectors,
    cfg: DabConfig,
    *,
    mpp: float | None = None,
    valid_mask: np.ndarray | None = None,
    return_cells: bool = False,
) -> DabTileResult:
    """Score the HER2 membrane staining of one tile, cell by cell.

    Args:
        rgb: HxWx3 uint8 tile at about ``cfg.work_mpp``.
        stains: the slide's stain vectors (:func:`estimate_stain_vectors`).
        cfg: thresholds and sizes.
        mpp: the tile's exact µm/px when it differs from ``cfg.work_mpp``.
        valid_mask: HxW bool; cells whose nucleus centroid is outside it are not counted.
        return_cells: also return the per-cell table.

    Returns:
        Counts per class, means, DAB area fraction and the tile class.
    """
    result, cells, _, _, _ = analyse_tile(rgb, stains, cfg, mpp=mpp, valid_mask=valid_mask)
    return dataclasses.replace(result, cells=cells) if return_cells else result


# Tiles coarser than this many times work_mpp cannot show membranes: refuse rather than guess.
_MAX_COARSENING = 2.0


class DabTileFunction:
    """Picklable callable run inside loader worker processes (one call per tile).

    Tiles arrive at the loader's resolution ``mpp``; they are resized to ``cfg.work_mpp`` first
    when that differs by more than 10% (a 1024-px tile at 0.25 µm/px becomes 512 px).

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

    def __call__(self, rgb: np.ndarray, valid_mask: np.ndarray | None = None) -> dict[str, float]:
        """Measure one tile; returns the flat dict with exactly the keys of :data:`TILE_KEYS`."""
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
        return score_tile(rgb, self.stains, self.cfg, mpp=mpp, valid_mask=valid_mask).to_dict()
