"""Validation statistics against scikit-learn, SciPy and hand-worked cases."""

from __future__ import annotations

import numpy as np
import pytest

from wsi_her2.validation.statistics import (
    MIN_CASES_FOR_INTERVAL,
    average_ranks,
    binary_split,
    bootstrap_interval,
    concordance,
    index_correlation,
    ish_concordance,
    kappa,
    spearman,
    wilson_interval,
)


@pytest.mark.parametrize("seed", range(6))
def test_quadratic_weighted_kappa_matches_scikit_learn(seed: int) -> None:
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 4, 40)
    predicted = np.clip(truth + rng.integers(-1, 2, 40) * (rng.random(40) < 0.4), 0, 3)
    expected = sklearn_metrics.cohen_kappa_score(truth, predicted, weights="quadratic", labels=[0, 1, 2, 3])
    assert kappa(truth, predicted) == pytest.approx(expected, abs=1e-12)
    report = concordance(truth, predicted, samples=200)
    assert report["quadratic_weighted_kappa"]["value"] == pytest.approx(expected, abs=1e-12)
    assert (
        report["confusion_matrix"] == sklearn_metrics.confusion_matrix(truth, predicted, labels=[0, 1, 2, 3]).tolist()
    )


def test_kappa_is_undefined_when_both_sides_give_one_score_and_zero_when_one_side_is_constant() -> None:
    assert np.isnan(kappa(np.zeros(5, int), np.zeros(5, int)))
    assert kappa(np.array([0, 1, 2, 3]), np.zeros(4, int)) == pytest.approx(0.0)


def test_a_two_category_miss_costs_four_times_a_one_category_miss() -> None:
    truth = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    near = truth.copy()
    near[0] = 1
    far = truth.copy()
    far[0] = 2
    # Same marginals apart from the one case: the weighted disagreement grows with the square of the distance.
    assert kappa(truth, far) < kappa(truth, near) < 1.0


@pytest.mark.parametrize("seed", range(4))
def test_spearman_matches_scipy_with_ties(seed: int) -> None:
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 4, 30)  # many ties, as pathologist scores have
    index = scores * 60 + rng.normal(0, 40, 30)
    assert spearman(index, scores) == pytest.approx(stats.spearmanr(index, scores).statistic, abs=1e-12)
    assert average_ranks(np.array([3.0, 1.0, 3.0, 2.0])).tolist() == [3.5, 1.0, 3.5, 2.0]


def test_wilson_interval_matches_worked_values() -> None:
    low, high = wilson_interval(5, 10)
    assert (low, high) == (pytest.approx(0.2366, abs=1e-4), pytest.approx(0.7634, abs=1e-4))
    low, high = wilson_interval(10, 10)
    assert high == pytest.approx(1.0) and low == pytest.approx(0.7225, abs=1e-4)
    assert wilson_interval(0, 0) is None


def test_bootstrap_interval_is_seeded_and_contains_the_estimate() -> None:
    rng = np.random.default_rng(1)
    truth = rng.integers(0, 4, 60)
    predicted = np.where(rng.random(60) < 0.75, truth, rng.integers(0, 4, 60))

    def agreement(i: np.ndarray) -> float:
        return float(np.mean(truth[i] == predicted[i]))

    first, used = bootstrap_interval(agreement, 60, samples=500, seed=3)
    again, _ = bootstrap_interval(agreement, 60, samples=500, seed=3)
    assert first == again and used == 500
    values = rng.normal(size=60)  # a continuous statistic shows that another seed draws other resamples
    assert bootstrap_interval(lambda i: float(values[i].mean()), 60, samples=200, seed=3) != bootstrap_interval(
        lambda i: float(values[i].mean()), 60, samples=200, seed=4
    )
    assert first is not None and first[0] < agreement(np.arange(60)) < first[1]
    # A proportion from 60 cases: the bootstrap interval is about as wide as Wilson's.
    wilson = wilson_interval(int((truth == predicted).sum()), 60)
    assert wilson is not None and abs((first[1] - first[0]) - (wilson[1] - wilson[0])) < 0.06


def test_too_few_cases_give_no_bootstrap_interval_and_say_why() -> None:
    n = MIN_CASES_FOR_INTERVAL - 1
    report = concordance(np.arange(n) % 4, np.arange(n) % 4, samples=200)
    assert report["exact_agreement"]["value"] == 1.0 and report["exact_agreement"]["ci95"] is None
    assert "too few cases" in report["quadratic_weighted_kappa"]["note"]
    assert report["exact_agreement"]["wilson_ci95"] is not None  # Wilson stays meaningful at small n
    enough = concordance(np.arange(40) % 4, np.arange(40) % 4, samples=200)
    assert enough["quadratic_weighted_kappa"]["ci95"] == [1.0, 1.0]


def test_binary_splits_count_her2_low_detection_by_hand() -> None:
    truth = np.array([0, 0, 0, 1, 1, 2, 3])
    tool = np.array([0, 1, 0, 0, 1, 2, 3])
    split = binary_split(truth, tool, 1)  # 0 vs >=1+
    assert split["counts"] == {"true_positive": 3, "false_negative": 1, "false_positive": 1, "true_negative": 2}
    assert split["sensitivity"]["value"] == pytest.approx(3 / 4)
    assert split["specificity"]["value"] == pytest.approx(2 / 3)
    high = binary_split(truth, tool, 2)  # <=1+ vs >=2+
    assert high["sensitivity"]["value"] == 1.0 and high["specificity"]["value"] == 1.0


def test_ish_concordance_of_the_2plus_calls_and_of_the_status_after_reflex_testing() -> None:
    tool = [2, 2, 2, 0, 3, 1]
    pathologist = [2, 2, 1, 0, 3, 2]
    ish = [True, False, False, None, True, True]
    reference = ["positive", "negative", "negative", "negative", "positive", "positive"]
    out = ish_concordance(tool, pathologist, ish, reference)
    assert out["cases_with_ish"] == 5
    assert out["two_plus_calls"]["tool"] == {
        **out["two_plus_calls"]["tool"],
        "with_ish": 3,
        "ish_positive": 1,
        "ish_negative": 2,
    }
    versus = out["tool_vs_ish"]
    # The ISH-positive case called 1+ would never have gone to ISH: the error that matters most.
    assert versus["ish_positive_called_0_or_1plus"] == 1 and versus["ish_negative_called_3plus"] == 0
    status = out["her2_status_after_reflex_ish"]
    assert (status["overall"]["successes"], status["overall"]["n"]) == (5, 6)
    assert status["positive_percent_agreement"]["value"] == pytest.approx(2 / 3)
    assert status["negative_percent_agreement"]["value"] == 1.0


def test_index_correlation_skips_cases_without_an_index() -> None:
    out = index_correlation([0.0, float("nan"), 50.0, 120.0, 250.0], [0, 1, 1, 2, 3], samples=100)
    assert out["n"] == 4 and out["value"] == pytest.approx(1.0)
