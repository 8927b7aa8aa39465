"""A slide's cells pooled from its tiles: one background, one tumour gate and one set of classes.

Workers measure each tile's cells (:func:`~wsi_her2.models.dab.tile.measure_tile`); once every
tile is in, :func:`finish_slide` sets the membrane levels above the slide's pooled background,
gates all the cells at once (neighbourhoods cross tile borders), classes them, and sums each
tile's tumour cells: the values the tile table, heatmap and report carry.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from wsi_her2.her2 import SCORES_4
from wsi_her2.models.dab.background import BIN_OD, N_BINS, background_from_histogram
from wsi_her2.models.dab.classify import MembraneThresholds, classify_cells, membrane_index, resolve_thresholds
from wsi_her2.models.dab.config import DabConfig
from wsi_her2.models.dab.gate import TumourGate, gate_tumour_cells
from wsi_her2.models.dab.tile import CELL_COLUMNS, TILE_KEYS, classify_cell_counts, tile_values

# Measures a list of same-shape tiles (stains, cfg, mpp) as measure_tile measures one.
MeasureTiles = Callable[[list[np.ndarray], Any, DabConfig, float], list[dict[str, Any]]]

# The columns of cells.npz, in order (positions in level-0 pixels, as every output of wsi-her2).
SAVED_COLUMNS: tuple[str, ...] = (
    "x_level0_px",
    "y_level0_px",
    "tile_index",
    *CELL_COLUMNS[2:],  # the workers' per-cell measurements, after their tile-relative position
    "completeness",
    "epithelial_like",
    "is_tumour",
    "cell_class",
)


@dataclasses.dataclass(frozen=True)
class SlideCells:
    """Every cell of a slide (arrays of equal length) and what was decided about it.

    Attributes:
        columns: per-cell arrays by name (:data:`SAVED_COLUMNS`).
        levels: the membrane levels the cells were classed with.
        gate_reference_h_od: the gate's darkness reference (median nuclear hematoxylin OD).
    """

    columns: dict[str, np.ndarray]
    levels: MembraneThresholds
    gate_reference_h_od: float

    def __len__(self) -> int:
        return len(self.columns["x_level0_px"])

    def meta_json(self) -> str:
        """The levels and the gate's reference as JSON (stored beside the columns in ``cells.npz``)."""
        import json

        return json.dumps({"levels": self.levels.to_dict(), "gate_reference_h_od": self.gate_reference_h_od,
                           "coordinate_space": "level-0 pixels"})  # fmt: skip

    @classmethod
    def load(cls, path: str | Path) -> SlideCells:
        """Read a slide's ``cells.npz`` (as ``wsi-her2 score`` writes it)."""
        import json

        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            columns = {name: data[name] for name in SAVED_COLUMNS}
        return cls(columns, MembraneThresholds(**meta["levels"]), float(meta["gate_reference_h_od"]))


@dataclasses.dataclass(frozen=True)
class SlideDab:
    """The DAB scorer's finished view of a slide.

    Attributes:
        tile_values: per grid tile, the values of :data:`TILE_KEYS` (NaN for tiles not measured).
        cells: every cell with its gate verdict and class.
        summary: the slide-level figures for the report (:func:`slide_summary`).
    """

    tile_values: dict[str, np.ndarray]
    cells: SlideCells
    summary: dict[str, Any]


def tissue_share_at(
    mask: np.ndarray, scale_x: float, scale_y: float, x_level0: np.ndarray, y_level0: np.ndarray, radius_px0: float
) -> np.ndarray:
    """The tissue fraction of a disk of ``radius_px0`` level-0 pixels around each point, from a tissue mask.

    Only the part of the mask around the points is filtered, in 8 bits (shares to 1/255): a whole
    slide's mask in floating point would cost hundreds of megabytes for a few tiles of cells.
    """
    if len(x_level0) == 0:
        return np.zeros(0, np.float32)
    r = max(1, round(radius_px0 / max(scale_x, scale_y)))
    xi = np.clip((x_level0 / scale_x).astype(np.intp), 0, mask.shape[1] - 1)
    yi = np.clip((y_level0 / scale_y).astype(np.intp), 0, mask.shape[0] - 1)
    x0, x1 = max(0, int(xi.min()) - r), min(mask.shape[1], int(xi.max()) + r + 1)
    y0, y1 = max(0, int(yi.min()) - r), min(mask.shape[0], int(yi.max()) + r + 1)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)).astype(np.float32)
    crop = mask[y0:y1, x0:x1].astype(np.uint8) * 255
    share = cv2.filter2D(crop, cv2.CV_8U, kernel / kernel.sum(), borderType=cv2.BORDER_CONSTANT)
    return share[yi - y0, xi - x0].astype(np.float32) / 255.0


def finish_slide(
    tiles: Sequence[int],
    tile_x_level0: np.ndarray,
    tile_y_level0: np.ndarray,
    outputs: Sequence[dict[str, Any]],
    n_grid_tiles: int,
    slide_mpp: float,
    cfg: DabConfig,
    *,
    tissue_mask: tuple[np.ndarray, float, float] | None = None,
) -> SlideDab:
    """Pool the tiles' measurements, set the levels, gate and class the cells, sum them per tile.

    Args:
        tiles: grid index of each measured tile.
        tile_x_level0: level-0 x of every grid tile's top-left corner (indexed by grid index).
        tile_y_level0: level-0 y of every grid tile's corner.
        outputs: per measured tile, what :func:`~wsi_her2.models.dab.tile.measure_tile` returned.
        n_grid_tiles: tiles in the grid (rows of ``tile_values``).
        slide_mpp: µm per level-0 pixel.
        cfg: the scorer's settings.
        tissue_mask: (mask, level-0 px per mask px in x, in y): corrects neighbour counts at the
            tissue edge; None counts as if every neighbourhood were all tissue.

    Returns:
        Per-tile values, the cells, and the slide summary.
    """
    from wsi_her2.models.dab.tile import BACKGROUND_KEY, CELLS_KEY, SECTORS_KEY

    n_sec = cfg.n_sectors
    packed = [np.asarray(o[CELLS_KEY], np.float32).reshape(-1, len(CELL_COLUMNS)) for o in outputs]
    sectors = [np.asarray(o[SECTORS_KEY], np.float32).reshape(-1, n_sec) for o in outputs]
    per_tile_n = np.array([len(p) for p in packed], np.int64)
    table = np.concatenate(packed) if packed else np.zeros((0, len(CELL_COLUMNS)), np.float32)
    sector_table = np.concatenate(sectors) if sectors else np.zeros((0, n_sec), np.float32)
    col = {name: table[:, i] for i, name in enumerate(CELL_COLUMNS)}
    tile_of_cell = np.repeat(np.asarray(tiles, np.int64), per_tile_n)
    x0 = tile_x_level0[tile_of_cell] + col["x_um"] / slide_mpp
    y0 = tile_y_level0[tile_of_cell] + col["y_um"] / slide_mpp

    background_hist = np.sum([o[BACKGROUND_KEY] for o in outputs], axis=0) if outputs else np.zeros(N_BINS)
    levels = resolve_thresholds(cfg, background_from_histogram(background_hist), "slide nuclei")
    share = None
    if tissue_mask is not None and len(x0):
        radius_px0 = cfg.tumour_gate.radius_um / slide_mpp
        share = tissue_share_at(tissue_mask[0], tissue_mask[1], tissue_mask[2], x0, y0, radius_px0)
    gate = gate_tumour_cells(
        x0 * slide_mpp,
        y0 * slide_mpp,
        col["nucleus_area_um2"],
        col["elongation"],
        col["nucleus_h_od"],
        cfg.tumour_gate,
        tissue_share=share,
    )
    cls = classify_cells(col["membrane_partial_od"], col["membrane_complete_od"], levels)
    present = np.isfinite(sector_table).sum(axis=1)
    with np.errstate(invalid="ignore"):
        completeness = (sector_table >= levels.od_1plus).sum(axis=1) / np.maximum(present, 1)

    cells = SlideCells(
        {
            "x_level0_px": x0.astype(np.float32),
            "y_level0_px": y0.astype(np.float32),
            "tile_index": tile_of_cell.astype(np.int32),
            "nucleus_area_um2": col["nucleus_area_um2"],
            "elongation": col["elongation"],
            "nucleus_h_od": col["nucleus_h_od"],
            "membrane_od": col["membrane_od"],
            "membrane_partial_od": col["membrane_partial_od"],
            "membrane_complete_od": col["membrane_complete_od"],
            "completeness": completeness.astype(np.float32),
            "epithelial_like": gate.epithelial_like,
            "is_tumour": gate.is_tumour,
            "cell_class": cls,
        },
        levels,
        gate.reference_h_od,
    )
    values = _tile_values(cells, tiles, outputs, n_grid_tiles, levels, cfg)
    return SlideDab(values, cells, slide_summary(cells, gate, cfg))


def _tile_values(
    cells: SlideCells,
    tiles: Sequence[int],
    outputs: Sequence[dict[str, Any]],
    n_grid_tiles: int,
    levels: MembraneThresholds,
    cfg: DabConfig,
) -> dict[str, np.ndarray]:
    from wsi_her2.models.dab.tile import DAB_HIST_KEY

    c = cells.columns
    tile, tumour, cls = c["tile_index"].astype(np.int64), c["is_tumour"], c["cell_class"].astype(np.int64)
    counts = np.zeros((n_grid_tiles, 4), np.int64)
    np.add.at(counts, (tile[tumour], cls[tumour]), 1)
    n_all = np.bincount(tile, minlength=n_grid_tiles)
    membrane_sum = np.bincount(tile[tumour], weights=c["membrane_od"][tumour], minlength=n_grid_tiles)
    complete_sum = np.bincount(tile[tumour], weights=c["completeness"][tumour], minlength=n_grid_tiles)
    out = {key: np.full(n_grid_tiles, np.nan) for key in TILE_KEYS}
    first_bin = min(N_BINS - 1, int(np.ceil(levels.od_1plus / BIN_OD)))  # DAB above the 1+ level
    for i, output in zip(tiles, outputs, strict=True):
        n = int(counts[i].sum())
        hist = np.asarray(output[DAB_HIST_KEY])
        tissue_px = int(hist.sum())
        values = tile_values(
            counts[i],
            int(n_all[i]),
            membrane_sum[i] / n if n else np.nan,
            complete_sum[i] / n if n else np.nan,
            float(hist[first_bin:].sum()) / tissue_px if tissue_px else 0.0,
            classify_cell_counts(counts[i].tolist(), cfg),
        )
        for key, value in values.items():
            out[key][i] = value
    return out


def slide_summary(cells: SlideCells, gate: TumourGate, cfg: DabConfig) -> dict[str, Any]:
    """The report's DAB block: both denominators, tumour cells, the index, background and levels."""
    c = cells.columns
    cls = c["cell_class"].astype(np.int64)
    tumour = c["is_tumour"]
    all_counts = np.bincount(cls, minlength=4)[:4]
    tumour_counts = np.bincount(cls[tumour], minlength=4)[:4]

    def fractions(counts: np.ndarray) -> dict[str, float]:
        total = counts.sum()
        return {s: float(v / total) if total else 0.0 for s, v in zip(SCORES_4, counts, strict=True)}

    n_all, n_tumour = int(all_counts.sum()), int(tumour_counts.sum())
    return {
        "denominator": "tumour cells" if cfg.tumour_gate.enabled else "all detected cells (tumour gate off)",
        "n_cells_detected": n_all,
        "n_tumour_cells": n_tumour,
        "tumour_cell_share": n_tumour / n_all if n_all else 0.0,
        "tumour_cells": {
            "counts": dict(zip(SCORES_4, map(int, tumour_counts), strict=True)),
            "fractions": fractions(tumour_counts),
        },
        "all_cells": {
            "counts": dict(zip(SCORES_4, map(int, all_counts), strict=True)),
            "fractions": fractions(all_counts),
        },
        "membrane_index": _finite_or_none(membrane_index(tumour_counts)),
        "membrane_index_all_cells": _finite_or_none(membrane_index(all_counts)),
        "membrane_index_definition": "1 x %1+ + 2 x %2+ + 3 x %3+ of tumour cells (0-300, H-score-like)",
        "membrane_levels": cells.levels.to_dict(),
        "tumour_gate": {
            **cfg.tumour_gate.to_dict(),
            "reference_h_od": gate.reference_h_od,
            "epithelial_like_cells": int(np.count_nonzero(gate.epithelial_like)),
        },
    }


def _finite_or_none(value: float | np.ndarray) -> float | None:
    value = float(value)
    return value if np.isfinite(value) else None


def score_image(
    rgb: np.ndarray,
    stains: Any,
    cfg: DabConfig,
    *,
    mpp: float | None = None,
    tile_px: int = 512,
    min_tissue_fraction: float = 0.5,
    measure_tiles: MeasureTiles | None = None,
) -> SlideDab:
    """Score an in-memory image as the pipeline scores a slide: tiles, one background, one gate.

    Args:
        rgb: HxWx3 uint8 image at about ``cfg.work_mpp`` (e.g. a TMA core or a crop).
        stains: its stain vectors (:func:`~wsi_her2.models.dab.stain.estimate_stain_vectors`).
        cfg: the scorer's settings.
        mpp: the image's exact µm/px (default ``cfg.work_mpp``).
        tile_px: tile side; edge tiles under a quarter of it are skipped.
        min_tissue_fraction: tiles with less tissue (mean OD above ``cfg.tissue_min_od``) are skipped.
        measure_tiles: measures a list of tiles of one shape, as ``measure_tile`` measures one
            (e.g. :func:`~wsi_her2.models.dab.torch_measure.measure_tile_list`); None runs
            ``measure_tile`` on each tile.

    Returns:
        As :func:`finish_slide`, with "level-0" meaning this image's pixels.
    """
    from wsi_her2.models.dab.intensity import measure_intensity, scaled_config
    from wsi_her2.models.dab.stain import optical_density
    from wsi_her2.models.dab.tile import measure_tile

    mpp = float(mpp if mpp is not None else cfg.work_mpp)
    # The counterstain level on a ~4 µm/px view with its tissue mask, as the pipeline measures it.
    from wsi_her2.config import TissueConfig
    from wsi_her2.tissue import tissue_mask_from_rgb

    step = max(1, round(4.0 / mpp))
    small = (max(1, rgb.shape[1] // step), max(1, rgb.shape[0] // step))
    thumb = cv2.resize(np.ascontiguousarray(rgb[..., :3]), small, interpolation=cv2.INTER_AREA)
    mask, _, _ = tissue_mask_from_rgb(thumb, mpp * rgb.shape[1] / small[0], TissueConfig())
    intensity = measure_intensity(thumb, mask if mask.any() else None, stains, cfg)
    cfg = scaled_config(cfg, intensity)
    h, w = rgb.shape[:2]
    xs, ys, measured, tiles = [], [], [], []
    for y in range(0, h, tile_px):
        for x in range(0, w, tile_px):
            tile = np.ascontiguousarray(rgb[y : y + tile_px, x : x + tile_px, :3])
            xs.append(x)
            ys.append(y)
            if min(tile.shape[:2]) < tile_px // 4:
                continue
            if (optical_density(tile).mean(axis=2) > cfg.tissue_min_od).mean() < min_tissue_fraction:
                continue
            measured.append(len(xs) - 1)
            tiles.append(tile)
    if measure_tiles is None:
        outputs = [measure_tile(tile, stains, cfg, mpp) for tile in tiles]
    else:
        outputs = [{} for _ in tiles]
        for shape in dict.fromkeys(t.shape for t in tiles):  # edge tiles are smaller: one call per shape
            same = [i for i, t in enumerate(tiles) if t.shape == shape]
            for i, out in zip(same, measure_tiles([tiles[i] for i in same], stains, cfg, mpp), strict=True):
                outputs[i] = out
    done = finish_slide(measured, np.asarray(xs, np.float64), np.asarray(ys, np.float64), outputs, len(xs), mpp, cfg)
    done.summary["stain_intensity"] = intensity.to_dict()
    return done
