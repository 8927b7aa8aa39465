"""Synthetic cells with known membranes give the expected ASCO/CAP cell, tile and slide classes."""

from __future__ import annotations

import numpy as np
import pytest

from tests.models.dab.conftest import CellSpec, render_tile
from wsi_her2.her2 import classify_by_percentages
from wsi_her2.models.dab import (
    DabConfig,
    classify_cell_counts,
    default_stain_vectors,
    render_evidence,
    score_tile,
)

CFG = DabConfig()
STAINS = default_stain_vectors()


def majority_class(spec: CellSpec) -> tuple[int, np.ndarray]:
    result = score_tile(render_tile([spec]), STAINS, CFG)
    counts = np.asarray(result.counts)
    assert result.n_cells >= 120, "one cell per 20 µm square of a 256 µm tile should be found"
    return int(np.argmax(counts)), counts / counts.sum()


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (CellSpec(membrane_od=0.0), 0),
        (CellSpec(membrane_od=0.12, completeness=0.4), 1),  # faint, incomplete
        (CellSpec(membrane_od=0.2, completeness=1.0), 2),  # weak-moderate, complete
        (CellSpec(membrane_od=0.2, completeness=0.75), 2),  # lateral/basolateral: most of the ring
        (CellSpec(membrane_od=0.35, completeness=1.0), 2),
        (CellSpec(membrane_od=0.6, completeness=1.0), 3),  # intense, complete
        (CellSpec(membrane_od=0.6, completeness=0.3), 1),  # intense but a short arc: incomplete
        (CellSpec(membrane_od=0.6, completeness=1.0, cytoplasm_dab_od=0.3), 3),  # membrane over blush
        (CellSpec(membrane_od=0.2, completeness=1.0, cytoplasm_dab_od=0.15), 2),
    ],
)
def test_synthetic_membranes_give_expected_cell_class(spec: CellSpec, expected: int) -> None:
    cls, fractions = majority_class(spec)
    assert cls == expected, f"{spec}: fractions per class {np.round(fractions, 2)}"
    assert fractions[expected] > 0.9


def test_membrane_od_and_completeness_track_the_rendered_values() -> None:
    faint = score_tile(render_tile([CellSpec(0.15, 1.0)]), STAINS, CFG)
    strong = score_tile(render_tile([CellSpec(0.6, 1.0)]), STAINS, CFG)
    half = score_tile(render_tile([CellSpec(0.6, 0.5)]), STAINS, CFG)
    assert strong.mean_membrane_od > 2 * faint.mean_membrane_od
    assert strong.mean_completeness > 0.9
    assert 0.35 < half.mean_completeness < 0.75


@pytest.mark.parametrize("nuclear_od", [0.5, 0.8, 1.5])
def test_nuclear_dab_ki67_like_is_not_membrane(nuclear_od: float) -> None:
    result = score_tile(render_tile([CellSpec(nuclear_dab_od=nuclear_od), CellSpec()]), STAINS, CFG)
    f = np.asarray(result.fractions)
    assert f[2] + f[3] == 0.0, f"nuclear DAB read as 2+/3+ membrane: {np.round(f, 3)}"
    assert result.tile_class <= 1


@pytest.mark.parametrize("blush_od", [0.15, 0.3])
def test_cytoplasmic_blush_is_not_membrane(blush_od: float) -> None:
    result = score_tile(render_tile([CellSpec(cytoplasm_dab_od=blush_od)]), STAINS, CFG)
    f = np.asarray(result.fractions)
    assert f[2] + f[3] < 0.02, f"cytoplasmic blush read as complete membrane: {np.round(f, 3)}"
    assert result.tile_class <= 1


def test_tile_class_follows_the_percentage_rule() -> None:
    # 1 cell in 4 is 2+ (25% > 10%): the tile is 2+. 1 in 16 is 3+ (6% <= 10%) next to 0s: 2+ (equivocal).
    two = score_tile(render_tile([CellSpec(0.2, 1.0), CellSpec(), CellSpec(), CellSpec()]), STAINS, CFG)
    assert two.tile_class == 2
    assert 0.15 < two.fractions[2] < 0.35
    few3 = score_tile(render_tile([CellSpec(0.6, 1.0)] + [CellSpec()] * 15), STAINS, CFG)
    assert 0.02 < few3.fractions[3] <= 0.10 and few3.tile_class == 2
    one = score_tile(render_tile([CellSpec(0.12, 0.4), CellSpec()]), STAINS, CFG)
    assert one.tile_class == 1
    neg = score_tile(render_tile([CellSpec()]), STAINS, CFG)
    assert neg.tile_class == 0


def test_slide_score_pools_cells_over_tiles() -> None:
    # Three tiles: all negative, one mostly 3+, one negative: 3+ cells are ~1/3 of the pooled cells.
    tiles = [
        render_tile([CellSpec()], seed=1),
        render_tile([CellSpec(0.6, 1.0)], seed=2),
        render_tile([CellSpec()], seed=3),
    ]
    counts = np.sum([score_tile(t, STAINS, CFG).counts for t in tiles], axis=0)
    fractions = counts / counts.sum()
    assert 0.25 < fractions[3] < 0.4
    assert classify_by_percentages(fractions) == 3
    assert classify_cell_counts(counts.tolist(), CFG) == 3


def test_pooling_ignores_a_few_stray_3plus_cells() -> None:
    # 1% 3+ among 0s: the guideline's "any 3+ focus" clause would say 2+; the scorer's focus floor says 0.
    counts = [990, 0, 0, 10]
    assert classify_by_percentages([c / 1000 for c in counts]) == 2
    assert classify_cell_counts(counts, CFG) == 0
    assert classify_cell_counts([970, 0, 0, 30], CFG) == 2
    assert classify_cell_counts([0, 0, 0, 0], CFG) == 0


def test_valid_mask_clips_counted_cells_to_the_region() -> None:
    tile = render_tile([CellSpec(0.2, 1.0)])
    full = score_tile(tile, STAINS, CFG)
    mask = np.zeros(tile.shape[:2], bool)
    mask[:, :256] = True
    half = score_tile(tile, STAINS, CFG, valid_mask=mask, return_cells=True)
    assert 0.4 * full.n_cells < half.n_cells < 0.6 * full.n_cells
    assert half.cells is not None and np.all(half.cells.x_px < 256)


@pytest.mark.parametrize("value", [245, 255])
def test_blank_glass_tile_has_no_cells(value: int) -> None:
    result = score_tile(np.full((256, 256, 3), value, np.uint8), STAINS, CFG)
    assert result.n_cells == 0 and result.tile_class == 0 and result.dab_area_fraction == 0.0
    assert np.isnan(result.mean_membrane_od) and np.isnan(result.mean_completeness)


def test_return_cells_table_is_consistent() -> None:
    result = score_tile(render_tile([CellSpec(0.6, 1.0), CellSpec()]), STAINS, CFG, return_cells=True)
    cells, tumour = result.cells, result.is_tumour
    assert cells is not None and tumour is not None
    assert len(cells) == len(tumour) == result.n_cells_all >= result.n_cells == int(tumour.sum())
    assert np.array_equal(np.bincount(cells.cell_class, minlength=4), result.counts_all)
    assert np.array_equal(np.bincount(cells.cell_class[tumour], minlength=4), result.counts)
    assert np.all((cells.completeness >= 0) & (cells.completeness <= 1))
    assert np.all(cells.membrane_partial_od >= cells.membrane_complete_od)
    assert set(cells.to_dict()) >= {"x_px", "y_px", "cell_class", "membrane_od", "completeness", "nucleus_h_od"}


def test_other_resolution_via_mpp_gives_same_classes() -> None:
    import cv2

    tile = render_tile([CellSpec(0.6, 1.0), CellSpec()])
    finer = cv2.resize(tile, (1024, 1024), interpolation=cv2.INTER_LINEAR)  # as if 0.25 µm/px
    a = score_tile(tile, STAINS, CFG)
    b = score_tile(finer, STAINS, CFG, mpp=0.25)
    assert abs(a.fractions[3] - b.fractions[3]) < 0.1


def test_evidence_image_shows_classes_in_qupath_colours() -> None:
    from wsi_her2.her2 import CLASS_COLORS_RGB

    tile = render_tile([CellSpec(0.6, 1.0), CellSpec()])
    img = render_evidence(tile, STAINS, CFG)
    assert img.shape == tile.shape and img.dtype == np.uint8
    pixels = {tuple(p) for p in img.reshape(-1, 3)[::7]}
    assert CLASS_COLORS_RGB["3+"] in pixels
    assert not np.array_equal(img, tile)


def test_bad_inputs_raise_value_error() -> None:
    with pytest.raises(ValueError):
        score_tile(np.zeros((10, 10), np.uint8), STAINS, CFG)
    with pytest.raises(ValueError):
        score_tile(np.zeros((10, 10, 3), np.float32), STAINS, CFG)
    with pytest.raises(ValueError):
        score_tile(np.zeros((10, 10, 3), np.uint8), STAINS, CFG, valid_mask=np.ones((5, 5), bool))
