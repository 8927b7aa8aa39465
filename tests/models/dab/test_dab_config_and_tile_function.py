"""DabConfig validation and the picklable DabTileFunction the loader workers run."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.models.dab.conftest import CellSpec, render_tile
from wsi_her2.errors import ConfigError
from wsi_her2.models.dab import TILE_KEYS, DabConfig, DabTileFunction, default_stain_vectors, score_tile

EXPECTED_KEYS = {
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
}


def test_defaults_are_valid_and_round_trip() -> None:
    cfg = DabConfig()
    assert cfg.work_mpp == 0.5
    assert DabConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.replace(membrane_od_3plus=0.4).membrane_od_3plus == 0.4


@pytest.mark.parametrize(
    "bad",
    [
        {"work_mpp": 0},
        {"work_mpp": -1.0},
        {"work_mpp": 10.0},
        {"membrane_od_1plus": 0.2, "membrane_od_2plus": 0.1},
        {"membrane_od_3plus": 0.1},
        {"complete_fraction": 1.5},
        {"partial_fraction": 0.9, "complete_fraction": 0.5},
        {"n_sectors": 3},
        {"n_sectors": 16.5},
        {"ring_gap_um": -1},
        {"nucleus_min_area_um2": 400.0},
        {"ring_width_um": float("nan")},
        {"nucleus_max_elongation": 0.5},
        {"seed_sigma_um": 10.0},
    ],
)
def test_invalid_config_raises_config_error(bad: dict) -> None:
    with pytest.raises(ConfigError):
        DabConfig(**bad)


def test_unknown_config_key_raises_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown"):
        DabConfig.from_dict({"membrane_od_4plus": 1.0})


def test_tile_function_output_keys_and_types() -> None:
    fn = DabTileFunction(default_stain_vectors(), DabConfig(), mpp=0.5)
    out = fn(render_tile([CellSpec(0.2, 1.0), CellSpec()]))
    assert set(out) == EXPECTED_KEYS == set(TILE_KEYS)
    for key, value in out.items():
        assert isinstance(value, (int, float)) and not isinstance(value, bool), key
    assert isinstance(out["tile_class"], int) and out["tile_class"] == 2
    assert out["n_cells"] == sum(out[k] for k in ("n_cells_0", "n_cells_1plus", "n_cells_2plus", "n_cells_3plus"))
    assert math.isclose(sum(out[k] for k in ("frac_0", "frac_1plus", "frac_2plus", "frac_3plus")), 1.0)


def test_tile_function_no_cells_gives_zero_fractions_and_nan_means() -> None:
    fn = DabTileFunction(default_stain_vectors(), DabConfig(), mpp=0.5)
    out = fn(np.full((128, 128, 3), 250, np.uint8))
    assert out["n_cells"] == 0 and out["tile_class"] == 0
    assert out["frac_0"] == out["frac_3plus"] == 0.0
    assert math.isnan(out["mean_membrane_dab_od"]) and math.isnan(out["mean_completeness"])


def test_tile_function_pickles_and_gives_the_same_result() -> None:
    fn = DabTileFunction(default_stain_vectors(), DabConfig(), mpp=0.5)
    tile = render_tile([CellSpec(0.6, 1.0), CellSpec()])
    clone = pickle.loads(pickle.dumps(fn))
    assert clone(tile) == fn(tile)


def test_tile_function_resizes_finer_tiles_and_masks() -> None:
    import cv2

    tile = render_tile([CellSpec(0.6, 1.0), CellSpec()])
    fine = cv2.resize(tile, (1024, 1024), interpolation=cv2.INTER_LINEAR)
    fn = DabTileFunction(default_stain_vectors(), DabConfig(), mpp=0.25)
    out = fn(fine)
    assert abs(out["frac_3plus"] - 0.5) < 0.1
    mask = np.zeros((1024, 1024), bool)
    mask[:512] = True
    half = fn(fine, mask)
    assert 0.35 * out["n_cells"] < half["n_cells"] < 0.65 * out["n_cells"]


def test_tile_function_refuses_tiles_too_coarse_for_membranes() -> None:
    with pytest.raises(ConfigError, match="too coarse"):
        DabTileFunction(default_stain_vectors(), DabConfig(), mpp=256 / 224)
    with pytest.raises(ValueError):
        DabTileFunction(default_stain_vectors(), DabConfig(), mpp=0)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    size=st.integers(16, 160),
    level=st.integers(0, 255),
    spread=st.integers(0, 120),
)
def test_score_tile_is_total_on_arbitrary_images(seed: int, size: int, level: int, spread: int) -> None:
    rng = np.random.default_rng(seed)
    rgb = np.clip(rng.normal(level, spread, (size, size, 3)), 0, 255).astype(np.uint8)
    result = score_tile(rgb, default_stain_vectors(), DabConfig())
    assert result.n_cells == sum(result.counts) >= 0
    assert 0.0 <= result.dab_area_fraction <= 1.0
    assert result.tile_class in (0, 1, 2, 3)
    assert all(0.0 <= f <= 1.0 for f in result.fractions)
