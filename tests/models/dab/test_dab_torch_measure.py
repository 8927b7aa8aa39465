"""The batched torch measurement gives the numpy scorer's cells, classes and slide score (on CPU tensors)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import require_models

require_models()

import torch
from scipy.spatial import cKDTree

from tests.models.dab.agreement import (
    COUNT_ABS,
    COUNT_REL,
    MATCH_RADIUS_PX,
    MAX_FRACTION_DIFF,
    MAX_HISTOGRAM_DIFF,
    MAX_INDEX_DIFF,
    MIN_MATCHED,
    MIN_TILE_CLASS_AGREEMENT,
    compare_slides,
)
from tests.models.dab.conftest import MPP, CellSpec, RealImage, render_tile, render_tissue
from wsi_her2.models.dab import DabConfig, default_stain_vectors
from wsi_her2.models.dab import torch_ops as torch_ops_module
from wsi_her2.models.dab.background import N_BINS, background_from_histogram
from wsi_her2.models.dab.classify import classify_cells, resolve_thresholds
from wsi_her2.models.dab.slide_cells import finish_slide, score_image
from wsi_her2.models.dab.tile import BACKGROUND_KEY, CELL_COLUMNS, CELLS_KEY, DAB_HIST_KEY, SECTORS_KEY, measure_tile
from wsi_her2.models.dab.torch_measure import measure_tile_list, measure_tiles_torch

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CFG = DabConfig()
STAINS = default_stain_vectors()
MIXES = [
    [CellSpec(0.6, 1.0), CellSpec()],
    [CellSpec(0.2, 0.8), CellSpec(0.12, 0.4), CellSpec()],
    [CellSpec(nuclear_dab_od=0.8), CellSpec()],
    [CellSpec(0.25, 1.0, cytoplasm_dab_od=0.15)],
]


@pytest.fixture(scope="module")
def synthetic_tiles() -> np.ndarray:
    return np.stack([render_tile(mix, seed=i) for i, mix in enumerate(MIXES)])


def _measure_torch(tiles: np.ndarray, **kw) -> list[dict]:
    return measure_tiles_torch(torch.from_numpy(np.ascontiguousarray(tiles)), STAINS, CFG, MPP, **kw)


def test_each_tile_gets_measure_tiles_keys_columns_and_dtypes(synthetic_tiles: np.ndarray) -> None:
    outputs = _measure_torch(synthetic_tiles)
    assert len(outputs) == len(synthetic_tiles)
    for tile, out in zip(synthetic_tiles, outputs):
        ref = measure_tile(tile, STAINS, CFG, MPP)
        assert set(out) == set(ref)
        assert isinstance(out["n_cells"], float) and out["n_cells"] == len(out[CELLS_KEY]) > 100
        assert out[CELLS_KEY].dtype == np.float32 and out[CELLS_KEY].shape[1] == len(CELL_COLUMNS)
        assert out[SECTORS_KEY].dtype == np.float16 and out[SECTORS_KEY].shape == (len(out[CELLS_KEY]), CFG.n_sectors)
        for key in (BACKGROUND_KEY, DAB_HIST_KEY):
            assert out[key].dtype == np.int64 and out[key].shape == (N_BINS,)


def _assert_same_tile(ref: dict, out: dict) -> None:
    """measure_tile's cells within the stated tolerances (``tests/models/dab/agreement.py``)."""
    a, b = ref[CELLS_KEY], out[CELLS_KEY]
    assert abs(len(a) - len(b)) <= COUNT_REL * len(a) + COUNT_ABS
    if len(a) == 0:
        return
    dist, j = cKDTree(b[:, :2]).query(a[:, :2])
    ok = dist <= MATCH_RADIUS_PX * MPP
    assert ok.mean() >= MIN_MATCHED
    # Classes with this tile's own levels (a slide's differ only by its pooled background).
    levels = resolve_thresholds(CFG, background_from_histogram(ref[BACKGROUND_KEY]), "tile nuclei")
    mine = classify_cells(b[j[ok], 6], b[j[ok], 7], levels)
    assert (classify_cells(a[ok, 6], a[ok, 7], levels) == mine).mean() >= MIN_TILE_CLASS_AGREEMENT
    # Most cells are identical: no column is shifted (ties move a few cells' rings, not all).
    assert np.all(np.median(np.abs(a[ok] - b[j[ok]]), axis=0) <= 1e-5)
    for key in (BACKGROUND_KEY, DAB_HIST_KEY):
        assert np.abs(ref[key] - out[key]).sum() <= MAX_HISTOGRAM_DIFF * ref[key].sum()


def test_synthetic_tiles_match_the_numpy_measurement(synthetic_tiles: np.ndarray) -> None:
    tissue, _ = render_tissue(membrane_od=0.3)
    quarters = np.stack([tissue[y : y + 512, x : x + 512] for y in (0, 512) for x in (0, 512)])
    for batch in (synthetic_tiles, quarters):
        for tile, out in zip(batch, _measure_torch(batch)):
            _assert_same_tile(measure_tile(tile, STAINS, CFG, MPP), out)


def test_synthetic_tissue_scores_the_same_slide(synthetic_tiles: np.ndarray) -> None:
    tissue, _ = render_tissue(membrane_od=0.3)
    a = score_image(tissue, STAINS, CFG, min_tissue_fraction=0.0)
    b = score_image(tissue, STAINS, CFG, min_tissue_fraction=0.0, measure_tiles=measure_tile_list)
    agreement = compare_slides(a, b, CFG)
    assert agreement.failures() == [], agreement.line()


@pytest.mark.parametrize("core", ["core0", "core2"])
def test_real_cores_give_the_numpy_paths_cells_classes_and_slide_score(core: str, request) -> None:
    image: RealImage = request.getfixturevalue(core)
    a = score_image(image.work, image.stains, CFG, mpp=MPP)
    b = score_image(image.work, image.stains, CFG, mpp=MPP, measure_tiles=measure_tile_list)
    agreement = compare_slides(a, b, CFG)
    assert agreement.tiles >= 10 and agreement.cells_numpy > 1000
    assert agreement.failures() == [], agreement.line()
    assert agreement.fraction_diff <= MAX_FRACTION_DIFF and agreement.index_diff <= MAX_INDEX_DIFF
    assert b.summary["membrane_levels"]["od_1plus"] == pytest.approx(a.summary["membrane_levels"]["od_1plus"], abs=1e-3)


def test_cuda_kernels_give_the_same_cells_as_the_cpu_ones(
    synthetic_tiles: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    tiles = synthetic_tiles[:2]
    cpu = _measure_torch(tiles)
    monkeypatch.setattr(torch_ops_module, "_fused", lambda t: True)  # conv2d / max_pool2d, as on CUDA
    fused = _measure_torch(tiles)
    for a, b in zip(cpu, fused):
        _assert_same_tile(a, b)


def test_a_tile_measures_the_same_alone_in_a_batch_and_twice(synthetic_tiles: np.ndarray) -> None:
    batch = _measure_torch(synthetic_tiles)
    again = _measure_torch(synthetic_tiles)
    alone = _measure_torch(synthetic_tiles[2:3])[0]
    for key in (CELLS_KEY, BACKGROUND_KEY, DAB_HIST_KEY):
        assert all(np.array_equal(x[key], y[key]) for x, y in zip(batch, again))
        assert np.array_equal(alone[key], batch[2][key])
    assert np.array_equal(alone[SECTORS_KEY], batch[2][SECTORS_KEY], equal_nan=True)


def test_valid_masks_leave_out_cells_and_tissue_as_measure_tile_does(synthetic_tiles: np.ndarray) -> None:
    masks = np.zeros((len(synthetic_tiles), 512, 512), bool)
    masks[:, :, :300] = True
    masks[1] = True
    outputs = _measure_torch(synthetic_tiles, valid_masks=torch.from_numpy(masks))
    for tile, mask, out in zip(synthetic_tiles, masks, outputs):
        ref = measure_tile(tile, STAINS, CFG, MPP, valid_mask=mask)
        _assert_same_tile(ref, out)
        assert mask.all() or np.all(out[CELLS_KEY][:, 0] / MPP <= 300.5)
    assert outputs[0]["n_cells"] < outputs[1]["n_cells"]


def test_glass_gives_no_cells_and_empty_histograms() -> None:
    glass = np.full((2, 256, 256, 3), 242, np.uint8)
    for out in _measure_torch(glass):
        assert out["n_cells"] == 0.0 and out[CELLS_KEY].shape == (0, len(CELL_COLUMNS))
        assert out[SECTORS_KEY].shape == (0, CFG.n_sectors)
        assert out[BACKGROUND_KEY].sum() == 0 and out[DAB_HIST_KEY].sum() == 0
    done = finish_slide([0, 1], np.zeros(2), np.zeros(2), _measure_torch(glass), 2, MPP, CFG)
    assert done.summary["n_cells_detected"] == 0


def test_bad_tiles_masks_and_mpp_raise_value_error() -> None:
    with pytest.raises(ValueError, match="uint8"):
        measure_tiles_torch(torch.zeros((1, 64, 64, 3)), STAINS, CFG, MPP)
    with pytest.raises(ValueError, match="uint8"):
        measure_tiles_torch(torch.zeros((64, 64, 3), dtype=torch.uint8), STAINS, CFG, MPP)
    with pytest.raises(ValueError, match="valid_masks"):
        measure_tiles_torch(torch.zeros((2, 64, 64, 3), dtype=torch.uint8), STAINS, CFG, MPP, torch.ones(1, 64, 64))
    with pytest.raises(ValueError, match="mpp"):
        measure_tiles_torch(torch.zeros((1, 64, 64, 3), dtype=torch.uint8), STAINS, CFG, 0.0)
    assert measure_tiles_torch(torch.zeros((0, 64, 64, 3), dtype=torch.uint8), STAINS, CFG, MPP) == []


@pytest.mark.models
def test_the_scorer_s_gpu_code_path_scores_a_real_core_like_the_workers(tmp_path) -> None:
    # The pipeline with the pixels handed to the batched torch measurement (CPU tensors here, CUDA on a
    # GPU): the same slide score and tumour-cell fractions within the stated tolerance.
    import json

    from tests.conftest import fixture_path
    from wsi_her2.models.dab.scorer import DabScorer
    from wsi_her2.pipeline import run_score
    from wsi_her2.settings import ScoreSettings

    core = fixture_path("ihc", "her2-tma-core-score2plus.jpg")
    settings = ScoreSettings(loader=ScoreSettings().loader.replace(workers=0))
    on_cpu = run_score(core, tmp_path / "cpu", settings, mpp=0.25, scorer=DabScorer())
    torch_scorer = DabScorer()
    torch_scorer.torch_device = "cpu"
    on_torch = run_score(core, tmp_path / "torch", settings, mpp=0.25, scorer=torch_scorer)
    assert on_torch.score.score == on_cpu.score.score == "2+"
    a, b = on_cpu.scorer_summary, on_torch.scorer_summary
    for cls in ("0", "1+", "2+", "3+"):
        assert abs(a["tumour_cells"]["fractions"][cls] - b["tumour_cells"]["fractions"][cls]) < 0.01
    assert abs(a["membrane_index"] - b["membrane_index"]) < 2
    report = json.loads((tmp_path / "torch" / "report.json").read_text())
    assert report["runtime"]["cell_analysis"].startswith("batched torch")
