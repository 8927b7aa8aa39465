"""The slide-level rules give the documented answers on hand-made tile sets."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wsi_her2.aggregate import AggregateConfig, TilePredictions, aggregate_slide
from wsi_her2.her2 import SCORES_3, SCORES_4, classify_by_percentages


def _preds(classes_per_tile: list[int], weights: list[float] | None = None, p: float = 0.8, n_classes: int = 4,
           names: tuple[str, ...] = SCORES_4) -> TilePredictions:  # fmt: skip
    n = len(classes_per_tile)
    probs = np.full((n, n_classes), (1 - p) / (n_classes - 1), np.float32)
    probs[np.arange(n), classes_per_tile] = p
    return TilePredictions(
        classes=names,
        scored=np.ones(n, bool),
        probabilities=probs,
        predicted=np.array(classes_per_tile),
        weights=np.array(weights or [1.0] * n),
        drop_reason=np.array([""] * n),
    )


def _score(preds: TilePredictions, **cfg: object) -> str:
    return aggregate_slide(preds, AggregateConfig(**cfg)).score  # type: ignore[arg-type]


def test_more_than_10_percent_3plus_tissue_is_3plus() -> None:
    assert _score(_preds([3] * 11 + [0] * 89), rule="asco_cap") == "3+"


def test_exactly_10_percent_3plus_is_not_3plus_but_a_clear_focus_makes_2plus() -> None:
    preds = _preds([3] * 10 + [1] * 5 + [0] * 85, p=0.95)
    assert _score(preds, rule="asco_cap") == "2+"
    weak = _preds([3] * 10 + [1] * 5 + [0] * 85, p=0.6)  # no tile reaches p(3+) >= 0.9: no clear focus
    assert _score(weak, rule="asco_cap") == "1+"


def test_2plus_or_above_over_10_percent_is_2plus() -> None:
    assert _score(_preds([2] * 6 + [3] * 5 + [0] * 89, p=0.6), rule="asco_cap") == "2+"


def test_1plus_or_above_over_10_percent_is_1plus_else_0() -> None:
    assert _score(_preds([1] * 11 + [0] * 89), rule="asco_cap") == "1+"
    assert _score(_preds([1] * 10 + [0] * 90), rule="asco_cap") == "0"


def test_tissue_weighting_counts_area_not_tiles() -> None:
    # 5 of 10 tiles are 3+, but they carry 5% of the tissue.
    preds = _preds([3] * 5 + [0] * 5, weights=[0.01] * 5 + [0.19] * 5, p=0.6)
    assert _score(preds, rule="asco_cap") == "1+" or _score(preds, rule="asco_cap") == "0"
    result = aggregate_slide(preds, AggregateConfig(rule="asco_cap"))
    assert result.class_fractions["3+"] == pytest.approx(0.05)


def test_mean_probability_takes_the_argmax_of_the_weighted_mean() -> None:
    preds = _preds([2] * 6 + [3] * 4)
    result = aggregate_slide(preds, AggregateConfig(rule="mean_probability"))
    assert result.score == "2+" and result.rules["asco_cap"].score == "3+"
    assert any("disagree" in n for n in result.notes)


def test_auto_rule_follows_the_label_granularity() -> None:
    preds = _preds([2] * 6 + [3] * 4)
    assert aggregate_slide(preds, label_granularity="slide").rule == "mean_probability"
    assert aggregate_slide(preds, label_granularity="tile").rule == "asco_cap"


def test_clinical_group_and_her2_low() -> None:
    r = aggregate_slide(_preds([1] * 20), AggregateConfig(rule="asco_cap"))
    assert (r.score, r.clinical_group, r.her2_low) == ("1+", "negative", True)
    r = aggregate_slide(_preds([2] * 20), AggregateConfig(rule="asco_cap"))
    assert r.clinical_group == "equivocal" and "ISH" in r.clinical_action
    r = aggregate_slide(_preds([3] * 20), AggregateConfig(rule="asco_cap"))
    assert (r.clinical_group, r.her2_low) == ("positive", False)


def test_three_class_models_use_the_same_thresholds() -> None:
    preds = _preds([2] * 11 + [0] * 89, n_classes=3, names=SCORES_3)
    r = aggregate_slide(preds, AggregateConfig(rule="asco_cap"))
    assert r.score == "positive" and r.her2_low is None


def test_dab_cells_rule_pools_cells_over_tiles() -> None:
    preds = _preds([0, 0, 0])
    counts = {
        "n_cells_0": [80, 90, 85],
        "n_cells_1plus": [10, 5, 5],
        "n_cells_2plus": [15, 10, 20],
        "n_cells_3plus": [0, 1, 0],
    }
    measurements = {k: np.array(v, float) for k, v in counts.items()}
    dab = dataclasses.replace(preds, measurements=measurements)
    r = aggregate_slide(dab)
    assert r.rule == "cells" and r.score == "2+"  # 45 of 321 cells are 2+ or 3+: 14%
    assert r.cell_counts == {"0": 255, "1+": 20, "2+": 45, "3+": 1}
    assert "mean_probability" not in r.rules


def test_ultralow_like_flags_a_zero_with_faint_staining() -> None:
    preds = _preds([0, 0])
    measurements = {"n_cells_0": np.array([95.0, 96]), "n_cells_1plus": np.array([5.0, 4]),
                    "n_cells_2plus": np.zeros(2), "n_cells_3plus": np.zeros(2)}  # fmt: skip
    dab = dataclasses.replace(preds, measurements=measurements)
    r = aggregate_slide(dab)
    assert r.score == "0" and r.ultralow_like is True


def test_no_scored_tile_says_so() -> None:
    preds = _preds([0])
    empty = TilePredictions(preds.classes, np.zeros(1, bool), preds.probabilities, preds.predicted, preds.weights,
                            drop_reason=np.array(["background"]))  # fmt: skip
    r = aggregate_slide(empty)
    assert r.n_tiles_scored == 0 and r.n_tiles_dropped == {"background": 1} and r.confidence is None
    assert r.no_evidence == "no tile could be scored: all 1 tiles on tissue were dropped (background: 1)"
    assert r.notes == (r.no_evidence,)


def test_no_tumour_cell_under_the_cells_rule_is_no_evidence_not_a_zero() -> None:
    preds = _preds([0, 0])
    zeros = {k: np.zeros(2) for k in ("n_cells_0", "n_cells_1plus", "n_cells_2plus", "n_cells_3plus")}
    r = aggregate_slide(dataclasses.replace(preds, measurements=zeros))
    assert r.rule == "cells" and r.no_evidence is not None and "no tumour cell" in r.no_evidence
    one = {**zeros, "n_cells_0": np.array([1.0, 0.0])}
    assert aggregate_slide(dataclasses.replace(preds, measurements=one)).no_evidence is None
    # A trained classifier's tiles are evidence by themselves.
    assert aggregate_slide(preds).no_evidence is None


def test_confidence_is_reproducible_and_lower_near_a_threshold() -> None:
    clear = _preds([3] * 50 + [0] * 50)
    borderline = _preds([3] * 11 + [0] * 89, p=0.6)
    a = aggregate_slide(clear, AggregateConfig(rule="asco_cap")).confidence
    b = aggregate_slide(borderline, AggregateConfig(rule="asco_cap")).confidence
    assert a == 1.0 and b is not None and b < 0.9
    assert b == aggregate_slide(borderline, AggregateConfig(rule="asco_cap")).confidence


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=4, max_size=4))
def test_percentage_rule_is_monotone_in_the_3plus_share(raw: list[float]) -> None:
    total = sum(raw) or 1.0
    fractions = [v / total for v in raw]
    score = classify_by_percentages(fractions)
    # Moving share from 0 to 3+ never lowers the score.
    moved = [
        max(fractions[0] - 0.05, 0.0),
        fractions[1],
        fractions[2],
        fractions[3] + min(0.05, fractions[0]),
    ]
    assert classify_by_percentages(moved) >= score


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 3), min_size=1, max_size=60))
def test_asco_rule_matches_the_percentage_rule_on_tile_fractions(tiles: list[int]) -> None:
    preds = _preds(tiles, p=0.7)
    _, f1, f2, f3 = np.bincount(tiles, minlength=4) / len(tiles)
    got = aggregate_slide(preds, AggregateConfig(rule="asco_cap")).score  # p(3+) = 0.7: never a clear focus
    if f3 > 0.10:
        assert got == "3+"
    elif f2 + f3 > 0.10:
        assert got == "2+"
    elif f1 + f2 + f3 > 0.10:
        assert got == "1+"
    else:
        assert got == "0"
