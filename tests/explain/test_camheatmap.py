"""Pooling tile CAMs into cells: exact area weights, overlap, edges; written with the heatmap's conventions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from wsi_her2.explain.camheatmap import CamAccumulator, _overlaps, write_cam_heatmap
from wsi_her2.outputs.heatmap import read_heatmap
from wsi_her2.tiling.grid import TileGrid


def _grid(n_cols: int, n_rows: int, tile: int, stride: int, xs: list[int], ys: list[int]) -> TileGrid:
    n = len(xs)
    return TileGrid(
        x=np.array(xs), y=np.array(ys), col=np.array(xs) // stride, row=np.array(ys) // stride,
        tissue_fraction=np.ones(n, np.float32), tile_size_px=tile, stride_px=stride, n_cols=n_cols, n_rows=n_rows,
        slide_width=(n_cols - 1) * stride + tile, slide_height=(n_rows - 1) * stride + tile, mpp=0.5,
        positions_on_tissue=n,
    )  # fmt: skip


def test_overlaps_split_feature_cells_exactly() -> None:
    first, w = _overlaps(0.0, 256.0, 4, 64)
    assert first == 0 and np.allclose(w, np.eye(4) * 64)
    first, w = _overlaps(100.0, 200.0, 2, 64)  # features [100, 200) and [200, 300); cells from 64
    assert first == 1
    assert np.allclose(w.sum(axis=0), [100, 100]) and np.allclose(w.sum(axis=1), [28, 64, 64, 44])


def test_each_cell_gets_the_mean_of_the_feature_cells_it_covers() -> None:
    grid = _grid(2, 1, 256, 256, [0, 256], [0, 0])
    acc = CamAccumulator(grid, 4, 1)
    cam = np.arange(16, dtype=np.float32).reshape(1, 4, 4)
    acc.add(0, 0, cam)
    values = acc.values()
    assert values.shape == (1, 4, 8)
    np.testing.assert_allclose(values[0, :, :4], cam[0])
    assert np.isnan(values[0, :, 4:]).all()  # the second tile was never added
    coarse = CamAccumulator(grid, 2, 1)  # 2 cells per tile: 2x2 means of the 4x4 map
    coarse.add(0, 0, cam)
    np.testing.assert_allclose(coarse.values()[0, :, :2], [[2.5, 4.5], [10.5, 12.5]])


def test_overlapping_tiles_are_averaged_by_covered_area() -> None:
    grid = _grid(2, 1, 256, 128, [0, 128], [0, 0])  # 50% overlap
    acc = CamAccumulator(grid, 2, 1)
    acc.add(0, 0, np.full((1, 7, 7), 1.0, np.float32))
    acc.add(128, 0, np.full((1, 7, 7), 3.0, np.float32))
    values = acc.values()[0, 0]
    np.testing.assert_allclose(values, [1, 1, 2, 2, 3, 3])


def test_written_cells_keep_the_score_heatmap_coordinates(tmp_path: Path) -> None:
    grid = _grid(2, 2, 256, 256, [0, 256, 0], [0, 0, 256])
    acc = CamAccumulator(grid, 4, 2)
    for x, y in zip(grid.x, grid.y, strict=True):
        cam = np.zeros((2, 4, 4), np.float32)
        cam[1, 3, 1] = 5.0  # one hot feature cell per tile, at its (row 3, col 1)
        acc.add(int(x), int(y), cam)
    path = write_cam_heatmap(tmp_path / "gradcam.zarr", acc, ["gradcam(0)", "gradcam(3+)"], ["0", "3+"])
    heat = read_heatmap(path)
    assert heat.channels == ("gradcam(0)", "gradcam(3+)", "coverage")
    assert heat.scale_um == (32.0, 32.0)  # 64 px at 0.5 µm/px
    assert heat.translation_um == pytest.approx((15.75, 15.75))  # the centre of the first cell, in µm
    hot = heat.channel("gradcam(3+)")
    # The hot cell of the tile at (256, 0) covers level-0 x 256+64..256+128, y 192..256.
    assert heat.pixel_of(256 + 64 + 10, 192 + 10) == (3, 5)
    assert hot[3, 5] == 5.0 and np.nansum(hot) == pytest.approx(15.0)
    assert np.isnan(hot[4:, 4:]).all()  # no tile at (256, 256)
    assert heat.attrs["cell_size_level0_px"] == 64 and heat.attrs["source_tile_size_level0_px"] == 256
