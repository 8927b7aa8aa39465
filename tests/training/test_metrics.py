"""The numpy metrics equal scikit-learn's on hand-made and generated predictions."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wsi_her2.training.metrics import classification_report, confusion_matrix, quadratic_weighted_kappa

sklearn_metrics = pytest.importorskip("sklearn.metrics")
CLASSES = ("0", "1+", "2+", "3+")


def _sklearn(y_true: np.ndarray, y_pred: np.ndarray, k: int) -> dict[str, float]:
    labels = list(range(k))
    out = {"accuracy": sklearn_metrics.accuracy_score(y_true, y_pred)}
    for average in ("macro", "weighted"):
        p, r, f, _ = sklearn_metrics.precision_recall_fscore_support(
            y_true, y_pred, labels=labels, average=average, zero_division=0
        )
        out |= {f"{average}_precision": p, f"{average}_recall": r, f"{average}_f1": f}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out["quadratic_weighted_kappa"] = sklearn_metrics.cohen_kappa_score(
            y_true, y_pred, labels=labels, weights="quadratic"
        )
    return out


def _check_equal(y_true: list[int], y_pred: list[int], k: int = 4) -> None:
    t, p = np.asarray(y_true), np.asarray(y_pred)
    mine = classification_report(t, p, CLASSES[:k] if k <= 4 else tuple(map(str, range(k))))
    ref = _sklearn(t, p, k)
    for key, value in ref.items():
        if key == "quadratic_weighted_kappa" and not np.isfinite(value):
            continue  # scikit-learn divides 0 by 0 when every label is one class
        assert mine[key] == pytest.approx(value, abs=1e-12), key
    assert np.array_equal(
        np.asarray(mine["confusion_matrix"]), sklearn_metrics.confusion_matrix(t, p, labels=list(range(k)))
    )
    per_p, per_r, per_f, support = sklearn_metrics.precision_recall_fscore_support(
        t, p, labels=list(range(k)), zero_division=0
    )
    for c, name in enumerate(mine["per_class"]):
        row = mine["per_class"][name]
        assert (row["precision"], row["recall"], row["f1"], row["support"]) == pytest.approx(
            (per_p[c], per_r[c], per_f[c], support[c])
        )


def test_hand_made_predictions_match_sklearn() -> None:
    _check_equal([0, 0, 1, 1, 2, 2, 2, 3, 3, 3], [0, 1, 1, 1, 2, 3, 2, 3, 3, 2])


def test_a_class_never_predicted_and_one_absent_match_sklearn() -> None:
    # class 0 is never predicted; class 3 never occurs in the truth but is predicted once
    _check_equal([0, 0, 1, 1, 2, 2], [1, 1, 1, 2, 2, 3])


def test_perfect_and_opposite_predictions() -> None:
    _check_equal([0, 1, 2, 3], [0, 1, 2, 3])
    _check_equal([0, 1, 2, 3], [3, 2, 1, 0])
    assert quadratic_weighted_kappa(confusion_matrix(np.arange(4), np.arange(4), 4)) == 1.0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3)), min_size=1, max_size=60))
def test_generated_predictions_match_sklearn(pairs: list[tuple[int, int]]) -> None:
    y_true, y_pred = zip(*pairs)
    _check_equal(list(y_true), list(y_pred))


def test_three_classes_and_the_majority_baseline() -> None:
    # 21 of 46 test images are 2+ (45.65%): always answering 2+ scores that accuracy
    y_true = np.array([0] * 2 + [1] * 10 + [2] * 21 + [3] * 13)
    report = classification_report(y_true, np.full(46, 2), CLASSES)
    assert report["majority_class"] == "2+"
    assert report["majority_baseline_accuracy"] == pytest.approx(21 / 46)
    assert report["accuracy"] == report["majority_baseline_accuracy"]
    assert report["class_counts"] == {"0": 2, "1+": 10, "2+": 21, "3+": 13}
    _check_equal([0, 1, 2, 2, 1, 0], [0, 2, 2, 1, 1, 0], k=3)
