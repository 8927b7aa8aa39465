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
from wsi_her2.models.dab.background import N_BINS
from wsi_her2.models.dab.slide_cells import finish_slide
from wsi_her2.models.dab.tile import BACKGROUND_KEY, CELL_COLUMNS, CELLS_KEY, DAB_HIST_KEY, SECTORS_KEY


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


def _finish_one(out: dict, cfg: DabConfig | None = None) -> dict[str, float]:
    """The tile's values once the slide (this one tile) is finished, as the pipeline does."""
    done = finish_slide([0], np.zeros(1), np.zeros(1), [out], 1, 0.5, cfg or DabConfig())
    return {key: float(values[0]) for key, values in done.tile_values.items()}


def test_tile_function_returns_cells_and_histograms_for_the_slide() -> None:
    cfg = DabConfig()
    fn = DabTileFunction(default_stain_vectors(), cfg, mpp=0.5)
    out = fn(render_tile([CellSpec(0.2, 1.0), CellSpec()]))
    assert set(out) == {"n_cells", CELLS_KEY, SECTORS_KEY, BACKGROUND_KEY, DAB_HIST_KEY}
    cells, sectors = out[CELLS_KEY], out[SECTORS_KEY]
    assert cells.shape == (int(out["n_cells"]), len(CELL_COLUMNS)) and cells.dtype == np.float32
    assert sectors.shape == (len(cells), cfg.n_sectors)
    assert len(out[BACKGROUND_KEY]) == len(out[DAB_HIST_KEY]) == N_BINS
    values = _finish_one(out)
    assert set(values) == set(TILE_KEYS)
    assert values["tile_class"] == 2 and values["n_cells"] == len(cells)
    counted = sum(values[k] for k in ("n_cells_0", "n_cells_1plus", "n_cells_2plus", "n_cells_3plus"))
    assert counted == values["n_tumour_cells"] <= values["n_cells"]
    assert math.isclose(sum(values[k] for k in ("frac_0", "frac_1plus", "frac_2plus", "frac_3plus")), 1.0)


def test_a_finished_single_tile_equals_the_tile_scored_alone() -> None:
    tile = render_tile([CellSpec(0.12, 0.4), CellSpec(0.6, 1.0), CellSpec()])
    alone = score_tile(tile, default_stain_vectors(), DabConfig())
    values = _finish_one(DabTileFunction(default_stain_vectors(), DabConfig(), mpp=0.5)(tile))
    assert [values[k] for k in ("n_cells_0", "n_cells_1plus", "n_cells_2plus", "n_cells_3plus")] == list(alone.counts)
    assert math.isclose(values["membrane_index"], alone.membrane_index)


def test_tile_function_no_cells_gives_zero_fractions_and_nan_means() -> None:
    fn = DabTileFunction(default_stain_vectors(), DabConfig(), mpp=0.5)
    out = fn(np.full((128, 128, 3), 250, np.uint8))
    assert out["n_cells"] == 0 and out[CELLS_KEY].shape == (0, len(CELL_COLUMNS))
    values = _finish_one(out)
    assert values["n_cells"] == 0 and values["tile_class"] == 0
    assert values["frac_0"] == values["frac_3plus"] == 0.0
    assert math.isnan(values["mean_membrane_dab_od"]) and math.isnan(values["membrane_index"])


def test_tile_function_pickles_and_gives_the_same_result() -> None:
    fn = DabTileFunction(default_stain_vectors(), DabConfig(), mpp=0.5)
    tile = render_tile([CellSpec(0.6, 1.0), CellSpec()])
    clone, mine = pickle.loads(pickle.dumps(fn))(tile), fn(tile)
    assert set(clone) == set(mine)
    for key, value in mine.items():
        assert np.array_equal(np.asarray(clone[key]), np.asarray(value), equal_nan=True), key


def test_tile_function_resizes_finer_tiles_and_masks() -> None:
    import cv2

    tile = render_tile([CellSpec(0.6, 1.0), CellSpec()])
    fine = cv2.resize(tile, (1024, 1024), interpolation=cv2.INTER_LINEAR)
    fn = DabTileFunction(default_stain_vectors(), DabConfig(), mpp=0.25)
    out = _finish_one(fn(fine))
    assert abs(out["frac_3plus"] - 0.5) < 0.1
    mask = np.zeros((1024, 1024), bool)
    mask[:512] = True
    half = _finish_one(fn(fine, mask))
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
