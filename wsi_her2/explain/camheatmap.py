"""The slide-level Grad-CAM map: every scored tile's CAM, pooled into cells finer than a tile.

The cells form a regular grid of side ``cell = stride // cells_per_tile`` level-0 pixels, starting
at level-0 (0, 0) like the tile grid. Each tile's CAM (one value per feature-map cell, covering
``tile / h`` level-0 pixels) is spread over the cells by exact area overlap, and a cell's value is
the area-weighted mean over every tile covering it (tiles overlap when the grid has overlap).
Cells no scored tile covers are NaN.

The map is written with :func:`wsi_her2.outputs.heatmap.write_heatmap`, treating each cell as a
"tile" of side ``cell``: the same OME-NGFF 0.4 layout and coordinate convention as the score
folder's ``heatmap.zarr`` (scale = cell in µm, pixel centres on cell centres), so both lie on the
slide and on each other in napari or QuPath.

Values are raw Grad-CAM (ReLU of the gradient-weighted activations, in logit units per feature
cell), so cells are comparable across the slide for one model; the display window of each
channel runs to its 99th percentile.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from wsi_her2.her2 import CLASS_COLORS_RGB
from wsi_her2.outputs.heatmap import write_heatmap
from wsi_her2.tiling.grid import TileGrid

FILE = "gradcam.zarr"


def _overlaps(start: float, length: float, n_features: int, cell_px: int) -> tuple[int, np.ndarray]:
    """First cell index and the (cells, features) overlap lengths of one tile side with the cells."""
    edges = start + np.arange(n_features + 1, dtype=np.float64) * (length / n_features)
    first = int(start // cell_px)
    last = max(first + 1, math.ceil((start + length) / cell_px))
    lo = np.arange(first, last, dtype=np.float64)[:, None] * cell_px
    hi = lo + cell_px
    overlap = np.minimum(hi, edges[None, 1:]) - np.maximum(lo, edges[None, :-1])
    return first, np.clip(overlap, 0.0, None)


class CamAccumulator:
    """Sums tile CAMs into cells (area-weighted), for any tile size, stride and CAM resolution.

    Args:
        grid: the tile grid (stride, tile size, extent).
        cells_per_tile: cells along a stride (the cell side is ``stride // cells_per_tile``).
        n_channels: CAM channels (e.g. one per class).
    """

    def __init__(self, grid: TileGrid, cells_per_tile: int, n_channels: int) -> None:
        self.grid = grid
        self.cell_px = max(1, grid.stride_px // max(1, cells_per_tile))
        extent_x = (grid.n_cols - 1) * grid.stride_px + grid.tile_size_px
        extent_y = (grid.n_rows - 1) * grid.stride_px + grid.tile_size_px
        self.n_cols = math.ceil(extent_x / self.cell_px)
        self.n_rows = math.ceil(extent_y / self.cell_px)
        self.num = np.zeros((n_channels, self.n_rows, self.n_cols), np.float64)
        self.area = np.zeros((self.n_rows, self.n_cols), np.float64)

    def add(self, x: int, y: int, cams: np.ndarray) -> None:
        """Add one tile at level-0 (x, y): ``cams`` is (channels, h, w)."""
        size = self.grid.tile_size_px
        c0, wx = _overlaps(float(x), float(size), cams.shape[2], self.cell_px)
        r0, wy = _overlaps(float(y), float(size), cams.shape[1], self.cell_px)
        r1, c1 = min(self.n_rows, r0 + wy.shape[0]), min(self.n_cols, c0 + wx.shape[0])
        wy, wx = wy[: r1 - r0], wx[: c1 - c0]
        self.num[:, r0:r1, c0:c1] += np.einsum("yh,chw,xw->cyx", wy, cams.astype(np.float64), wx)
        self.area[r0:r1, c0:c1] += wy.sum(axis=1)[:, None] * wx.sum(axis=1)[None, :]

    def values(self) -> np.ndarray:
        """(channels, rows, cols) area-weighted means; NaN where no tile covers a cell."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.area > 0, self.num / self.area, np.nan).astype(np.float32)

    def cell_grid(self) -> tuple[TileGrid, np.ndarray]:
        """The covered cells as a grid of "tiles" of side ``cell_px``, and their rows/cols index."""
        rows, cols = np.nonzero(self.area > 0)
        coverage = (self.area[rows, cols] / float(self.cell_px * self.cell_px)).astype(np.float32)
        grid = TileGrid(
            x=cols.astype(np.int64) * self.cell_px,
            y=rows.astype(np.int64) * self.cell_px,
            col=cols.astype(np.int64),
            row=rows.astype(np.int64),
            tissue_fraction=np.minimum(coverage, 1.0),
            tile_size_px=self.cell_px,
            stride_px=self.cell_px,
            n_cols=self.n_cols,
            n_rows=self.n_rows,
            slide_width=self.grid.slide_width,
            slide_height=self.grid.slide_height,
            mpp=self.grid.mpp,
            positions_on_tissue=len(rows),
        )
        return grid, np.stack([rows, cols])


def write_cam_heatmap(
    path: str | Path,
    accumulator: CamAccumulator,
    channels: Sequence[str],
    classes: Sequence[str],
    *,
    attrs: dict[str, Any] | None = None,
    name: str = "wsi-her2 Grad-CAM",
) -> Path:
    """Write the accumulated map as an OME-NGFF multiscale image (channels plus ``coverage``).

    Args:
        path: the ``.zarr`` folder (written atomically).
        accumulator: the pooled CAMs.
        channels: a name per CAM channel, e.g. ``gradcam(3+)``.
        classes: the class of each CAM channel (for its colour).
        attrs: extra metadata stored under "wsi_her2".
        name: the image name.

    Raises:
        OutputError: the slide has no µm/px, or the store cannot be written.
    """
    grid, (rows, cols) = accumulator.cell_grid()
    values = accumulator.values()[:, rows, cols].T
    coverage = np.minimum(accumulator.area[rows, cols] / float(accumulator.cell_px**2), 1.0)
    table = np.concatenate([values, coverage[:, None].astype(np.float32)], axis=1)
    windows = []
    for i in range(values.shape[1]):
        finite = values[:, i][np.isfinite(values[:, i])]
        top = float(np.percentile(finite, 99)) if finite.size else 1.0
        windows.append((0.0, top if top > 0 else 1.0))
    colors = ["".join(f"{v:02X}" for v in CLASS_COLORS_RGB.get(c, (255, 255, 255))) for c in classes]
    return write_heatmap(
        path,
        grid,
        [*channels, "coverage"],
        table,
        colors=[*colors, "00A000"],
        windows=[*windows, (0.0, 1.0)],
        name=name,
        attrs={
            "cell_size_level0_px": accumulator.cell_px,
            "source_tile_size_level0_px": accumulator.grid.tile_size_px,
            "source_stride_level0_px": accumulator.grid.stride_px,
            "values": "raw Grad-CAM: ReLU of the gradient-weighted activations (logit units per feature cell), "
            "area-weighted mean over the tiles covering each cell; coverage = covered fraction of the cell",
            **(attrs or {}),
        },
    )
