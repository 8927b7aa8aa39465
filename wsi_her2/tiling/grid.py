"""The tile grid: level-0 boxes laid over the slide, kept where enough of the box is tissue.

The grid starts at level-0 (0, 0) so that tiles line up with the slide's stored tiles (the loader
then decodes whole stored tiles, no partial reads). Tiles at the right and bottom edges may run
past the slide; the part outside counts as background (no tissue) and is read as white.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from wsi_her2.config import GridConfig
from wsi_her2.errors import ConfigError, MppError
from wsi_her2.slide.base import SlideInfo
from wsi_her2.tissue import TissueMask


@dataclass(frozen=True)
class TileGrid:
    """The kept tiles of a slide, as parallel arrays (one entry per tile).

    Attributes:
        x: left edges, level-0 pixels.
        y: top edges, level-0 pixels.
        col: grid column of each tile (x = col * stride).
        row: grid row of each tile (y = row * stride).
        tissue_fraction: fraction of each tile on the tissue mask (and inside the ROI, if any).
        tile_size_px: tile side in level-0 pixels.
        stride_px: distance between neighbouring tiles in level-0 pixels.
        n_cols: grid columns over the whole slide.
        n_rows: grid rows over the whole slide.
        slide_width: level-0 width.
        slide_height: level-0 height.
        mpp: µm per level-0 pixel (None when unknown).
        positions_on_tissue: grid positions that touched tissue at all (kept or not).
        config: the settings that made the grid.
    """

    x: np.ndarray
    y: np.ndarray
    col: np.ndarray
    row: np.ndarray
    tissue_fraction: np.ndarray
    tile_size_px: int
    stride_px: int
    n_cols: int
    n_rows: int
    slide_width: int
    slide_height: int
    mpp: float | None
    positions_on_tissue: int
    config: GridConfig = field(default_factory=GridConfig)

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def tile_size_um(self) -> float | None:
        """Tile side in µm."""
        return None if self.mpp is None else self.tile_size_px * self.mpp

    def subset(self, keep: np.ndarray) -> TileGrid:
        """A grid with only the tiles where ``keep`` (bool array or index array) selects."""
        return TileGrid(
            x=self.x[keep],
            y=self.y[keep],
            col=self.col[keep],
            row=self.row[keep],
            tissue_fraction=self.tissue_fraction[keep],
            tile_size_px=self.tile_size_px,
            stride_px=self.stride_px,
            n_cols=self.n_cols,
            n_rows=self.n_rows,
            slide_width=self.slide_width,
            slide_height=self.slide_height,
            mpp=self.mpp,
            positions_on_tissue=self.positions_on_tissue,
            config=self.config,
        )

    def summary(self) -> dict[str, Any]:
        """JSON-ready description of the grid (no per-tile arrays)."""
        return {
            "coordinate_space": "level-0 pixels",
            "tile_size_level0_px": self.tile_size_px,
            "stride_level0_px": self.stride_px,
            "tile_size_um": None if self.tile_size_um is None else round(self.tile_size_um, 3),
            "grid_cols": self.n_cols,
            "grid_rows": self.n_rows,
            "positions_on_tissue": self.positions_on_tissue,
            "tiles_kept": len(self),
        }


def tile_geometry(info: SlideInfo, cfg: GridConfig) -> tuple[int, int]:
    """Tile size and stride in level-0 pixels for this slide.

    Raises:
        MppError: ``target_mpp`` was given but the slide's µm/px is unknown.
    """
    if cfg.target_mpp is None:
        return cfg.tile_size_px, cfg.tile_size_px - cfg.overlap_px
    if not info.has_mpp:
        raise MppError(
            f"{info.path}: --target-mpp needs the slide's µm/px, which is unknown",
            hint="give it with --mpp",
        )
    scale = cfg.target_mpp / info.mpp
    size = max(1, round(cfg.tile_size_px * scale))
    stride = max(1, round((cfg.tile_size_px - cfg.overlap_px) * scale))
    return size, stride


def _summed_area(mask: np.ndarray) -> np.ndarray:
    sat = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), np.float64)
    sat[1:, 1:] = np.cumsum(np.cumsum(mask, axis=0, dtype=np.float64), axis=1)
    return sat


def _sat_bilinear(sat: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Summed area up to fractional (x, y).

    Bilinear interpolation of the table is exact for a piecewise-constant mask.
    """
    h, w = sat.shape[0] - 1, sat.shape[1] - 1
    xs = np.clip(xs, 0, w)
    ys = np.clip(ys, 0, h)
    x0 = np.minimum(np.floor(xs).astype(np.int64), max(w - 1, 0))
    y0 = np.minimum(np.floor(ys).astype(np.int64), max(h - 1, 0))
    fx, fy = xs - x0, ys - y0
    s00, s01 = sat[y0, x0], sat[y0, x0 + 1]
    s10, s11 = sat[y0 + 1, x0], sat[y0 + 1, x0 + 1]
    return s00 * (1 - fx) * (1 - fy) + s01 * fx * (1 - fy) + s10 * (1 - fx) * fy + s11 * fx * fy


def box_fractions(
    mask: np.ndarray,
    scale_x: float,
    scale_y: float,
    x: np.ndarray,
    y: np.ndarray,
    width: float,
    height: float,
) -> np.ndarray:
    """Exact fraction of each level-0 box covered by a mask at ``scale`` level-0 px per mask px."""
    sat = _summed_area(mask.astype(bool))
    x0, y0 = x / scale_x, y / scale_y
    x1, y1 = (x + width) / scale_x, (y + height) / scale_y
    area = (
        _sat_bilinear(sat, x1, y1)
        - _sat_bilinear(sat, x0, y1)
        - _sat_bilinear(sat, x1, y0)
        + _sat_bilinear(sat, x0, y0)
    )
    return np.clip(area / ((x1 - x0) * (y1 - y0)), 0.0, 1.0)


def build_tile_grid(
    mask: TissueMask, info: SlideInfo, cfg: GridConfig | None = None, *, region_mask: np.ndarray | None = None
) -> TileGrid:
    """Lay the tile grid over the slide and keep the tiles on tissue.

    Args:
        mask: the tissue mask of the slide.
        info: the slide's facts (size, µm/px).
        cfg: tile size, overlap and the tissue-fraction threshold.
        region_mask: optional bool mask (same shape as ``mask.mask``) restricting tiles to regions
            of interest; the tissue fraction then counts tissue inside the regions only.

    Returns:
        The kept tiles, row by row.
    """
    cfg = cfg or GridConfig()
    size, stride = tile_geometry(info, cfg)
    n_cols = max(1, math.ceil(info.width / stride))
    n_rows = max(1, math.ceil(info.height / stride))
    # Drop trailing positions whose tile would begin inside the previous tile's overlap only.
    n_cols = max(1, min(n_cols, math.ceil(max(info.width - size, 0) / stride) + 1))
    n_rows = max(1, min(n_rows, math.ceil(max(info.height - size, 0) / stride) + 1))
    row_grid, col_grid = np.meshgrid(
        np.arange(n_rows, dtype=np.int64), np.arange(n_cols, dtype=np.int64), indexing="ij"
    )
    rows, cols = row_grid.ravel(), col_grid.ravel()
    xs, ys = cols * stride, rows * stride
    effective = mask.mask
    if region_mask is not None:
        if region_mask.shape != mask.mask.shape:
            raise ConfigError("region mask must have the tissue mask's shape")
        effective = effective & region_mask
    fractions = box_fractions(effective, mask.scale_x, mask.scale_y, xs, ys, size, size).astype(np.float32)
    on_tissue = fractions > 0
    keep = on_tissue & (fractions >= max(cfg.min_tissue_fraction, 1e-6))
    return TileGrid(
        x=xs[keep],
        y=ys[keep],
        col=cols[keep].astype(np.int32),
        row=rows[keep].astype(np.int32),
        tissue_fraction=fractions[keep],
        tile_size_px=size,
        stride_px=stride,
        n_cols=n_cols,
        n_rows=n_rows,
        slide_width=info.width,
        slide_height=info.height,
        mpp=info.mpp if info.has_mpp else None,
        positions_on_tissue=int(on_tissue.sum()),
        config=cfg,
    )
