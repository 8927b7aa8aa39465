"""Classification metrics in numpy: the ones the paper's tables report, plus kappa and a baseline.

Everything derives from the confusion matrix. Conventions follow scikit-learn (the tests check
equality with it): a class never predicted has precision 0, a class absent from the truth has
recall 0 (``zero_division=0``); "macro" is the unweighted mean over classes, "weighted" the mean
weighted by each class's true count.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts of (true class, predicted class): rows are the truth, columns the prediction."""
    y_true = np.asarray(y_true, np.int64)
    y_pred = np.asarray(y_pred, np.int64)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true and y_pred differ in shape: {y_true.shape} vs {y_pred.shape}")
    flat = y_true * num_classes + y_pred
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def _safe_divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.zeros(num.shape, np.float64), where=den > 0)


def per_class_scores(matrix: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall, F1 and support of each class from a confusion matrix."""
    matrix = np.asarray(matrix, np.float64)
    tp = np.diag(matrix)
    predicted = matrix.sum(axis=0)
    support = matrix.sum(axis=1)
    precision = _safe_divide(tp, predicted)
    recall = _safe_divide(tp, support)
    f1 = _safe_divide(2 * precision * recall, precision + recall)
    return {"precision": precision, "recall": recall, "f1": f1, "support": support.astype(np.int64)}


def quadratic_weighted_kappa(matrix: np.ndarray) -> float:
    """Cohen's kappa with quadratic weights: agreement beyond chance, near misses cost less.

    1 is perfect agreement, 0 chance level; confusing 0 with 3+ costs nine times a 2+/3+ mix-up.
    """
    matrix = np.asarray(matrix, np.float64)
    k = matrix.shape[0]
    total = matrix.sum()
    if total == 0:
        return float("nan")
    i, j = np.indices((k, k))
    weights = (i - j) ** 2 / max(1, (k - 1) ** 2)
    expected = np.outer(matrix.sum(axis=1), matrix.sum(axis=0)) / total
    denominator = float((weights * expected).sum())
    if denominator == 0:
        return 1.0 if float((weights * matrix).sum()) == 0 else 0.0
    return float(1.0 - (weights * matrix).sum() / denominator)


def classification_report(y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """Every metric of a set of predictions, JSON-ready.

    Returns:
        A dict with accuracy, macro and weighted precision/recall/F1, quadratic-weighted kappa,
        per-class precision/recall/F1/support, the confusion matrix (rows = truth), the true
        class counts, and the majority-class baseline (the accuracy of always predicting the
        most frequent true class) for comparison.
    """
    k = len(classes)
    matrix = confusion_matrix(y_true, y_pred, k)
    scores = per_class_scores(matrix)
    support = scores["support"].astype(np.float64)
    total = float(support.sum())
    weights = support / total if total else np.zeros(k)
    majority = int(np.argmax(support)) if total else 0
    out: dict[str, Any] = {
        "images": int(total),
        "accuracy": float(np.trace(matrix) / total) if total else float("nan"),
        "majority_class": classes[majority],
        "majority_baseline_accuracy": float(support[majority] / total) if total else float("nan"),
    }
    for name in ("precision", "recall", "f1"):
        out[f"macro_{name}"] = float(scores[name].mean())
        out[f"weighted_{name}"] = float((scores[name] * weights).sum())
    out["quadratic_weighted_kappa"] = quadratic_weighted_kappa(matrix)
    out["per_class"] = {
        name: {
            "precision": float(scores["precision"][c]),
            "recall": float(scores["recall"][c]),
            "f1": float(scores["f1"][c]),
            "support": int(scores["support"][c]),
        }
        for c, name in enumerate(classes)
    }
    out["class_counts"] = {name: int(scores["support"][c]) for c, name in enumerate(classes)}
    out["classes"] = list(classes)
    out["confusion_matrix"] = matrix.tolist()
    return out
