"""The cross-validation engine on toy spaces whose right answer is known."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from wsi_her2.errors import DatasetError
from wsi_her2.validation.calibration import CalibrationSpace, cross_validate, plan_folds, select_candidate
from wsi_her2.validation.spaces import PercentageSpace


class ThresholdSpace:
    """A case is a number x; score 1 when x >= t. The truth is x >= 0.5, the default t is wrong."""

    name = "toy_threshold"
    section = "aggregate"

    def __init__(self, grid: tuple[float, ...] = (0.2, 0.5, 0.8), default: float = 0.2) -> None:
        self.grid, self.default = grid, default

    def defaults(self) -> dict[str, float]:
        return {"t": self.default}

    def candidates(self) -> list[dict[str, float]]:
        return [{"t": t} for t in self.grid]

    def load_case(self, score_dir: Path) -> Any:
        raise NotImplementedError

    def rescore(self, case_data: float, params: Mapping[str, float]) -> tuple[int, float]:
        return int(case_data >= params["t"]), 100.0 * case_data


class LookupSpace:
    """Each candidate is an arbitrary labelling of the cases: pure overfitting material."""

    name = "toy_lookup"
    section = "aggregate"

    def __init__(self, n_cases: int, n_candidates: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.tables = [rng.integers(0, 4, n_cases).astype(float) for _ in range(n_candidates)]

    def defaults(self) -> dict[str, float]:
        return {"table": 0.0}

    def candidates(self) -> list[dict[str, float]]:
        return [{"table": float(i)} for i in range(len(self.tables))]

    def load_case(self, score_dir: Path) -> Any:
        raise NotImplementedError

    def rescore(self, case_data: int, params: Mapping[str, float]) -> tuple[int, float]:
        return int(self.tables[int(params["table"])][case_data]), 0.0


def test_toy_spaces_and_the_percentage_space_follow_the_protocol() -> None:
    assert isinstance(ThresholdSpace(), CalibrationSpace)
    assert isinstance(PercentageSpace(), CalibrationSpace)


def test_cross_validation_finds_the_separating_threshold_and_predicts_held_out_cases() -> None:
    x = [0.05, 0.15, 0.25, 0.35, 0.45, 0.55, 0.65, 0.75, 0.85, 0.95]
    truth = [int(v >= 0.5) for v in x]
    cv = cross_validate(ThresholdSpace(), x, truth, [f"c{i}" for i in range(10)], bootstrap_samples=100)
    assert cv.method == "leave-one-out" and len(cv.folds) == 10
    assert cv.fitted == {"t": 0.5} and cv.departs_from == {"t": {"default": 0.2, "calibrated": 0.5}}
    assert cv.cv_predicted == truth  # every held-out case predicted by a fit that never saw it
    assert cv.default_predicted == [int(v >= 0.2) for v in x]
    assert cv.metrics["cross_validated"]["exact_agreement"]["value"] == 1.0
    assert cv.metrics["defaults"]["exact_agreement"]["value"] == pytest.approx(0.7)  # 0.25, 0.35, 0.45 called 1
    assert cv.selection_stability == 1.0
    assert cv.cv_index == pytest.approx([100 * v for v in x])
    fold = cv.folds[4]
    assert fold["held_out"] == [{"case": "c4", "pathologist_score": 0, "predicted": 0, "index": pytest.approx(45.0)}]
    assert fold["training_cases"] == 9 and fold["chosen"] == {"t": 0.5}


def test_cross_validated_agreement_is_below_the_fitted_one_when_the_space_overfits() -> None:
    rng = np.random.default_rng(7)
    n = 30
    truth = rng.integers(0, 4, n).tolist()  # unrelated to any candidate
    cv = cross_validate(
        LookupSpace(n, 80, seed=8), list(range(n)), truth, [str(i) for i in range(n)], bootstrap_samples=100
    )
    fitted = cv.metrics["fitted_on_all_cases"]["quadratic_weighted_kappa"]["value"]
    cross = cv.metrics["cross_validated"]["quadratic_weighted_kappa"]["value"]
    assert fitted > 0.3, "the best of 80 random labellings fits 30 cases well by chance"
    assert cross < fitted - 0.3, f"cross-validated kappa {cross:.2f} should expose the overfit (fitted {fitted:.2f})"
    assert cv.selection_stability < 1.0


def test_ties_go_to_the_defaults_then_to_the_first_candidate() -> None:
    truth = np.array([0, 1, 0, 1])
    same = np.array([[0, 1, 0, 1]] * 3)
    assert select_candidate(same, truth, np.array([2.0, 0.0, 1.0]))[0] == 1
    assert select_candidate(same, truth, np.array([1.0, 1.0, 3.0]))[0] == 0
    better = np.array([[0, 0, 0, 1], [0, 1, 0, 1], [0, 1, 0, 1]])
    assert select_candidate(better, truth, np.array([0.0, 5.0, 4.0]))[0] == 2


def test_a_space_that_cannot_improve_keeps_the_defaults_in_every_fold() -> None:
    x = [0.1, 0.3, 0.6, 0.9, 0.2, 0.7]
    truth = [0, 0, 1, 1, 0, 1]
    cv = cross_validate(ThresholdSpace(grid=(0.5, 0.4), default=0.5), x, truth, list("abcdef"), bootstrap_samples=100)
    assert cv.fitted == {"t": 0.5} and cv.departs_from == {}
    assert all(f["chosen_is_default"] for f in cv.folds)


def test_large_sets_use_stratified_k_fold_that_partitions_the_cases() -> None:
    truth = [0] * 30 + [1] * 20 + [2] * 15 + [3] * 5
    method, folds = plan_folds(truth, seed=1)
    assert method == "stratified 10-fold" and len(folds) == 10
    held = sorted(i for f in folds for i in f.test)
    assert held == list(range(70))
    for fold in folds:
        assert set(fold.train).isdisjoint(fold.test) and len(fold.train) + len(fold.test) == 70
        assert sum(truth[i] == 0 for i in fold.test) == 3  # 30 zeros over 10 folds
    assert plan_folds(truth, seed=1) == (method, folds)
    assert plan_folds(truth[:40], seed=1)[0] == "leave-one-out"
    assert plan_folds(truth[:40], folds=5)[0] == "stratified 5-fold"


def test_too_few_or_uniform_cases_cannot_be_calibrated() -> None:
    with pytest.raises(DatasetError, match="at least 4"):
        cross_validate(ThresholdSpace(), [0.1, 0.9, 0.2], [0, 1, 0], list("abc"))
    with pytest.raises(DatasetError, match="two different pathologist scores"):
        cross_validate(ThresholdSpace(), [0.1, 0.9, 0.2, 0.3], [1, 1, 1, 1], list("abcd"))
