"""The heatmap is valid OME-NGFF 0.4, and each tile's pixel sits where the tile is."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from wsi_her2.config import GridConfig
from wsi_her2.outputs.heatmap import read_heatmap, write_heatmap
from wsi_her2.tiling.grid import TileGrid


def _grid(n_rows: int = 40, n_cols: int = 50, stride: int = 1024, mpp: float = 0.25) -> TileGrid:
    rows, cols = np.meshgrid(np.arange(n_rows), np.arange(n_cols), indexing="ij")
    keep = (rows + cols) % 3 != 0  # a sparse pattern: some positions have no tile
    r, c = rows[keep], cols[keep]
    return TileGrid(
        x=c * stride, y=r * stride, col=c.astype(np.int32), row=r.astype(np.int32),
        tissue_fraction=np.full(len(r), 0.8, np.float32), tile_size_px=stride, stride_px=stride,
        n_cols=n_cols, n_rows=n_rows, slide_width=n_cols * stride, slide_height=n_rows * stride, mpp=mpp,
        positions_on_tissue=len(r), config=GridConfig(),
    )  # fmt: skip


def _write(tmp_path: Path, grid: TileGrid) -> tuple[Path, np.ndarray]:
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(4), len(grid)).astype(np.float32)
    values = np.column_stack([probs, probs.argmax(1), grid.tissue_fraction])
    path = write_heatmap(
        tmp_path / "h.zarr", grid, ["p(0)", "p(1+)", "p(2+)", "p(3+)", "predicted_class", "tissue_fraction"],
        values, colors=["0000FF", "FFFF00", "FFA500", "FF0000", "FFFFFF", "00FF00"],
        windows=[(0, 1)] * 4 + [(0, 3), (0, 1)], class_channels=range(4), predicted_channel=4,
    )  # fmt: skip
    return path, values


def test_each_tile_value_is_at_its_tile_pixel(tmp_path: Path) -> None:
    grid = _grid()
    path, values = _write(tmp_path, grid)
    heatmap = read_heatmap(path)
    for i in (0, len(grid) // 3, len(grid) - 1):
        row, col = heatmap.pixel_of(grid.x[i] + 10, grid.y[i] + 1000)
        assert (row, col) == (grid.row[i], grid.col[i])
        assert np.allclose(heatmap.data[:, row, col], values[i])
    assert np.isnan(heatmap.data[0, 0, 0])  # (0 + 0) % 3 == 0: no tile there


def test_scale_and_translation_are_micrometres_of_tile_centres(tmp_path: Path) -> None:
    grid = _grid(stride=1024, mpp=0.25)
    heatmap = read_heatmap(_write(tmp_path, grid)[0])
    assert heatmap.scale_um == (256.0, 256.0)
    # Pixel (0, 0)'s centre is the first tile's centre: 512 level-0 px in, as a pixel index (511.5).
    assert heatmap.translation_um == pytest.approx((511.5 * 0.25, 511.5 * 0.25))
    assert heatmap.levels >= 2


def test_the_store_is_valid_ome_ngff_0_4(tmp_path: Path) -> None:
    models = pytest.importorskip("ome_zarr_models.v04.image")
    import zarr

    path, _ = _write(tmp_path, _grid())
    image = models.Image.from_zarr(zarr.open_group(str(path), mode="r"))
    axes = [a.name for a in image.ome_attributes.multiscales[0].axes]
    assert axes == ["c", "y", "x"]
    assert (path / "0" / ".zarray").read_text().count('"dimension_separator": "/"') == 1


def test_coarser_levels_keep_the_class_as_an_argmax(tmp_path: Path) -> None:
    path, _ = _write(tmp_path, _grid())
    level1 = read_heatmap(path, level=1)
    classes = level1.channel("predicted_class")
    valid = ~np.isnan(classes)
    assert np.all(np.isin(classes[valid], [0, 1, 2, 3]))
    argmax = np.nanargmax(np.nan_to_num(level1.data[:4], nan=-1), axis=0)
    assert np.array_equal(classes[valid], argmax[valid])
