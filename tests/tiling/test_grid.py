"""Exact tile geometry: coordinates, sizes at a target µm/px, overlap, edges, tissue fractions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from shapely.geometry import MultiPolygon

from wsi_her2.config import GridConfig
from wsi_her2.errors import MppError
from wsi_her2.slide import LevelInfo, SlideInfo, open_slide
from wsi_her2.tiling.grid import box_fractions, build_tile_grid, tile_geometry
from wsi_her2.tissue import TissueMask, TissueThresholds, detect_tissue


def _info(width: int, height: int, mpp: float | None) -> SlideInfo:
    return SlideInfo(
        path="x.svs",
        backend="test",
        backend_reason="",
        vendor="test",
        width=width,
        height=height,
        levels=(LevelInfo(0, width, height, 1.0),),
        mpp_x=mpp,
        mpp_y=mpp,
        mpp_source="metadata" if mpp else "unknown",
        metadata_mpp=mpp,
        objective_power=None,
    )


def _mask(array: np.ndarray, scale: float, mpp: float = 0.25) -> TissueMask:
    return TissueMask(array, scale, scale, mpp * scale, MultiPolygon(), TissueThresholds())


def test_same_tissue_area_on_20x_and_40x_with_target_mpp() -> None:
    cfg = GridConfig(tile_size_px=224, target_mpp=1.0)
    assert tile_geometry(_info(40000, 30000, 0.25), cfg) == (896, 896)
    assert tile_geometry(_info(20000, 15000, 0.5), cfg) == (448, 448)


def test_target_mpp_needs_the_slide_mpp() -> None:
    with pytest.raises(MppError) as caught:
        tile_geometry(_info(1000, 1000, None), GridConfig(target_mpp=0.5))
    assert "--mpp" in caught.value.user_message()


def test_tiles_start_at_the_origin_on_multiples_of_the_stride_and_cover_the_edges() -> None:
    mask = _mask(np.ones((25, 40), bool), 100.0)  # 4000 x 2500 slide, all tissue
    grid = build_tile_grid(mask, _info(4000, 2500, 0.25), GridConfig(tile_size_px=1024))
    assert (grid.n_cols, grid.n_rows) == (4, 3)
    assert len(grid) == 12
    assert np.array_equal(grid.x, grid.col * 1024) and np.array_equal(grid.y, grid.row * 1024)
    # The last column covers 3072-4096 on a 4000-px slide: 928/1024 of it is slide (all tissue).
    last = grid.x == 3072
    assert np.allclose(grid.tissue_fraction[last & (grid.row < 2)], 928 / 1024, atol=1e-6)
    corner = (grid.x == 3072) & (grid.y == 2048)
    assert grid.tissue_fraction[corner][0] == pytest.approx((928 / 1024) * (452 / 1024), abs=1e-6)


def test_overlap_halves_the_stride_without_redundant_last_tiles() -> None:
    mask = _mask(np.ones((20, 20), bool), 102.4)
    grid = build_tile_grid(mask, _info(2048, 2048, 0.25), GridConfig(tile_size_px=1024, overlap_px=512))
    assert grid.stride_px == 512
    assert sorted(set(grid.x.tolist())) == [0, 512, 1024]


def test_tiles_below_the_tissue_threshold_are_dropped() -> None:
    array = np.zeros((16, 16), bool)
    array[:, :4] = True  # first 256 level-0 px of 1024 are tissue: 25% of the first column's tiles
    grid_25 = build_tile_grid(
        _mask(array, 64.0), _info(1024, 1024, 0.25), GridConfig(tile_size_px=1024, min_tissue_fraction=0.25)
    )
    grid_30 = build_tile_grid(
        _mask(array, 64.0), _info(1024, 1024, 0.25), GridConfig(tile_size_px=1024, min_tissue_fraction=0.30)
    )
    assert len(grid_25) == 1 and grid_25.tissue_fraction[0] == pytest.approx(0.25)
    assert len(grid_30) == 0 and grid_30.positions_on_tissue == 1


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    x=st.floats(0, 90),
    y=st.floats(0, 90),
    w=st.floats(1, 40),
    h=st.floats(1, 40),
)
def test_box_fractions_are_exact_for_any_box(seed: int, x: float, y: float, w: float, h: float) -> None:
    mask = np.random.default_rng(seed).random((100, 100)) > 0.5
    # Brute force: upsample 20x and count.
    k = 20
    up = np.repeat(np.repeat(mask, k, 0), k, 1)
    x0, y0, x1, y1 = (round(v * k) for v in (x, y, x + w, y + h))
    x, y, w, h = x0 / k, y0 / k, (x1 - x0) / k, (y1 - y0) / k
    region = up[y0 : min(y1, 100 * k), x0 : min(x1, 100 * k)]
    expected = region.sum() / ((x1 - x0) * (y1 - y0))
    got = box_fractions(mask, 1.0, 1.0, np.array([x]), np.array([y]), w, h)[0]
    assert got == pytest.approx(expected, abs=1e-9)


def test_grid_on_a_known_half_tissue_slide(half_tissue_slide: Path) -> None:
    with open_slide(half_tissue_slide) as reader:
        mask = detect_tissue(reader)
        grid = build_tile_grid(mask, reader.info, GridConfig(tile_size_px=512))
    # Left half is tissue: columns 0-3 of 8 (512 px tiles on 4096 px).
    assert set(grid.col.tolist()) <= {0, 1, 2, 3, 4}
    assert np.all(grid.tissue_fraction[grid.col <= 2] > 0.95)
    assert len(grid) >= 8 * 4
