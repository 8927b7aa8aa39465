"""Agreement statistics of a validation: confusion matrix, kappa, binary splits, intervals, Spearman.

Scores are integers 0..3 (IHC 0, 1+, 2+, 3+). Intervals are 95%:

* exact agreement and quadratic-weighted kappa: percentile bootstrap over cases (seeded); below
  :data:`MIN_CASES_FOR_INTERVAL` cases no bootstrap interval is given, because the resampled
  statistic takes only a handful of values and the interval would be far too narrow;
* proportions (agreement, sensitivity, specificity, concordance): also the Wilson score interval,
  which stays honest at small n (it is wide, as it should be).

Kappa is undefined when both raters give one and the same score to every case (no variation to
agree beyond chance on); it is then None in reports and such resamples are left out of intervals.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from wsi_her2.her2 import SCORES_4
from wsi_her2.training.metrics import confusion_matrix, quadratic_weighted_kappa

MIN_CASES_FOR_INTERVAL = 10
BOOTSTRAP_SAMPLES = 2000
Z_95 = 1.959963984540054
# The two cut-offs that matter clinically: any HER2 expression (HER2-low and above, the T-DXd
# question) and IHC 2+ or above (equivocal or positive: ISH or anti-HER2 therapy).
SPLITS = {
    "zero_vs_1plus_or_more": (1, "0 vs ≥1+ (HER2 expression: HER2-low detection)"),
    "1plus_or_less_vs_2plus_or_more": (2, "≤1+ vs ≥2+ (IHC negative vs equivocal or positive)"),
}


def kappa(truth: np.ndarray, predicted: np.ndarray) -> float:
    """Quadratic-weighted kappa of two 0..3 score arrays; NaN when undefined (both constant and equal)."""
    truth, predicted = np.asarray(truth, np.int64), np.asarray(predicted, np.int64)
    if truth.size == 0:
        return float("nan")
    if np.all(truth == truth[0]) and np.all(predicted == predicted[0]) and truth[0] == predicted[0]:
        return float("nan")
    return quadratic_weighted_kappa(confusion_matrix(truth, predicted, len(SCORES_4)))


def exact_agreement(truth: np.ndarray, predicted: np.ndarray) -> float:
    """Share of cases given the same score."""
    truth = np.asarray(truth)
    return float(np.mean(truth == np.asarray(predicted))) if truth.size else float("nan")


def wilson_interval(successes: int, n: int) -> list[float] | None:
    """The Wilson score 95% interval of a proportion (None when n is 0)."""
    if n <= 0:
        return None
    p = successes / n
    centre = (p + Z_95**2 / (2 * n)) / (1 + Z_95**2 / n)
    half = Z_95 * math.sqrt(p * (1 - p) / n + Z_95**2 / (4 * n * n)) / (1 + Z_95**2 / n)
    return [max(0.0, centre - half), min(1.0, centre + half)]


def bootstrap_interval(
    statistic: Callable[[np.ndarray], float], n: int, *, samples: int = BOOTSTRAP_SAMPLES, seed: int = 0
) -> tuple[list[float] | None, int]:
    """Percentile bootstrap 95% interval over cases.

    Args:
        statistic: the statistic of a resample, given the resampled case indices (NaN = undefined).
        n: cases.
        samples: resamples.
        seed: seed of the resampling.

    Returns:
        (interval or None, resamples with a defined statistic). None when fewer than half are defined.
    """
    if n < 1 or samples < 1:
        return None, 0
    rng = np.random.default_rng(seed)
    values = np.array([statistic(rng.integers(0, n, n)) for _ in range(samples)], np.float64)
    values = values[np.isfinite(values)]
    if values.size < samples / 2:
        return None, int(values.size)
    low, high = np.percentile(values, [2.5, 97.5])
    return [float(low), float(high)], int(values.size)


def _with_interval(value: float, statistic: Callable[[np.ndarray], float], n: int, samples: int, seed: int) -> dict:
    out: dict[str, Any] = {
        "value": None if not math.isfinite(value) else value,
        "n": n,
        "ci95": None,
        "ci_method": f"percentile bootstrap, {samples} case resamples, seed {seed}",
    }
    if n < MIN_CASES_FOR_INTERVAL:
        out["note"] = f"n = {n}: too few cases for a meaningful bootstrap interval (needs {MIN_CASES_FOR_INTERVAL})"
        return out
    out["ci95"], used = bootstrap_interval(statistic, n, samples=samples, seed=seed)
    if used < samples:
        out["note"] = f"{samples - used} of {samples} resamples had an undefined value and were left out"
    return out


def _proportion(successes: int, n: int) -> dict[str, Any]:
    return {
        "value": successes / n if n else None,
        "successes": successes,
        "n": n,
        "ci95": wilson_interval(successes, n),
        "ci_method": "Wilson score",
    }


def binary_split(truth: np.ndarray, predicted: np.ndarray, cut: int) -> dict[str, Any]:
    """Sensitivity and specificity of "score >= cut" against the pathologist's (Wilson intervals)."""
    t, p = np.asarray(truth) >= cut, np.asarray(predicted) >= cut
    tp, fn = int((t & p).sum()), int((t & ~p).sum())
    fp, tn = int((~t & p).sum()), int((~t & ~p).sum())
    return {
        "positive_means": f"score ≥ {SCORES_4[cut]}",
        "counts": {"true_positive": tp, "false_negative": fn, "false_positive": fp, "true_negative": tn},
        "sensitivity": _proportion(tp, tp + fn),
        "specificity": _proportion(tn, tn + fp),
        "agreement": _proportion(tp + tn, tp + tn + fp + fn),
    }


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n, ties sharing their average rank."""
    values = np.asarray(values, np.float64)
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(values.size, np.float64)
    sorted_values = values[order]
    start = 0
    for end in range(1, values.size + 1):
        if end == values.size or sorted_values[end] != sorted_values[start]:
            ranks[order[start:end]] = (start + end + 1) / 2.0
            start = end
    return ranks


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rank correlation (Pearson of average ranks); NaN when either side is constant."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.size < 2:
        return float("nan")
    rx, ry = average_ranks(x) - (x.size + 1) / 2, average_ranks(y) - (y.size + 1) / 2
    denominator = math.sqrt(float((rx * rx).sum() * (ry * ry).sum()))
    return float((rx * ry).sum() / denominator) if denominator > 0 else float("nan")


def concordance(
    truth: Sequence[int] | np.ndarray,
    predicted: Sequence[int] | np.ndarray,
    *,
    samples: int = BOOTSTRAP_SAMPLES,
    seed: int = 0,
) -> dict[str, Any]:
    """Agreement of predicted scores with the pathologist's: confusion matrix, agreement, kappa, splits.

    Args:
        truth: pathologist scores 0..3.
        predicted: the tool's scores 0..3, same order.
        samples: bootstrap resamples.
        seed: bootstrap seed.
    """
    t, p = np.asarray(truth, np.int64), np.asarray(predicted, np.int64)
    n = int(t.size)
    agree = int((t == p).sum())
    exact = _with_interval(exact_agreement(t, p), lambda i: exact_agreement(t[i], p[i]), n, samples, seed)
    exact["wilson_ci95"] = wilson_interval(agree, n)
    qwk = _with_interval(kappa(t, p), lambda i: kappa(t[i], p[i]), n, samples, seed)
    if n and qwk["value"] is None:
        qwk["note"] = "undefined: every case has the same score on both sides"
    return {
        "n": n,
        "classes": list(SCORES_4),
        "confusion_matrix": confusion_matrix(t, p, len(SCORES_4)).tolist(),
        "confusion_matrix_axes": "rows: pathologist score, columns: tool score",
        "exact_agreement": exact,
        "within_one_category": _proportion(int((np.abs(t - p) <= 1).sum()), n),
        "quadratic_weighted_kappa": qwk,
        "splits": {name: {"label": label, **binary_split(t, p, cut)} for name, (cut, label) in SPLITS.items()},
    }


def index_correlation(
    index: Sequence[float], truth: Sequence[int], *, samples: int = BOOTSTRAP_SAMPLES, seed: int = 0
) -> dict[str, Any]:
    """Spearman correlation of the continuous index with the pathologist's score (cases with an index)."""
    x, y = np.asarray(index, np.float64), np.asarray(truth, np.float64)
    keep = np.isfinite(x)
    x, y = x[keep], y[keep]
    out = _with_interval(spearman(x, y), lambda i: spearman(x[i], y[i]), int(x.size), samples, seed)
    if x.size >= 2 and out["value"] is None:
        out["note"] = "undefined: the index or the pathologist score is the same for every case"
    return out


def _group(score: int) -> str:
    return "negative" if score <= 1 else ("equivocal" if score == 2 else "positive")


def _two_plus(scores: np.ndarray, ish: list[bool | None]) -> dict[str, Any]:
    rows = [i for i, s in enumerate(scores) if s == 2 and ish[i] is not None]
    positive = sum(bool(ish[i]) for i in rows)
    return {
        "with_ish": len(rows),
        "ish_positive": positive,
        "ish_negative": len(rows) - positive,
        "share_ish_positive": _proportion(positive, len(rows)),
        "without_ish": int(sum(1 for i, s in enumerate(scores) if s == 2 and ish[i] is None)),
    }


def _versus_ish(scores: np.ndarray, ish: list[bool | None]) -> dict[str, Any]:
    rows = [i for i in range(len(scores)) if ish[i] is not None]
    table = {g: {"ish_positive": 0, "ish_negative": 0} for g in ("negative", "equivocal", "positive")}
    for i in rows:
        table[_group(int(scores[i]))]["ish_positive" if ish[i] else "ish_negative"] += 1
    decided = table["negative"]["ish_negative"] + table["positive"]["ish_positive"]
    n_decided = sum(table[g][k] for g in ("negative", "positive") for k in ("ish_positive", "ish_negative"))
    return {
        "by_ihc_group": table,
        "concordance_of_negative_and_positive_calls": _proportion(decided, n_decided),
        "ish_positive_called_0_or_1plus": table["negative"]["ish_positive"],
        "ish_negative_called_3plus": table["positive"]["ish_negative"],
    }


def _status(score: int, ish: bool | None) -> str | None:
    if score == 2:
        return None if ish is None else ("positive" if ish else "negative")
    return "positive" if score == 3 else "negative"


def ish_concordance(
    tool: Sequence[int], pathologist: Sequence[int], ish: Sequence[bool | None], reference: Sequence[str | None]
) -> dict[str, Any]:
    """The tool's and the pathologist's IHC calls against ISH, and the HER2 status after reflex ISH.

    Args:
        tool: the tool's scores 0..3.
        pathologist: the pathologist's scores 0..3.
        ish: per case True (amplified), False or None (not done).
        reference: per case the lab's HER2 status (:attr:`~wsi_her2.validation.cases.Case.reference_status`).
    """
    t, p, ish_list = np.asarray(tool, np.int64), np.asarray(pathologist, np.int64), list(ish)
    statuses = [(_status(int(s), ish_list[i]), reference[i]) for i, s in enumerate(t)]
    both = [(a, b) for a, b in statuses if a is not None and b is not None]
    pos = [(a, b) for a, b in both if b == "positive"]
    neg = [(a, b) for a, b in both if b == "negative"]
    return {
        "cases_with_ish": sum(v is not None for v in ish_list),
        "two_plus_calls": {"tool": _two_plus(t, ish_list), "pathologist": _two_plus(p, ish_list)},
        "tool_vs_ish": _versus_ish(t, ish_list),
        "pathologist_vs_ish": _versus_ish(p, ish_list),
        "her2_status_after_reflex_ish": {
            "basis": "tool: 0/1+ negative, 3+ positive, 2+ the case's ISH; reference: ISH when done, else "
            "the pathologist's 3+ positive and 0/1+ negative; cases unresolved on either side are left out",
            "overall": _proportion(sum(a == b for a, b in both), len(both)),
            "positive_percent_agreement": _proportion(sum(a == b for a, b in pos), len(pos)),
            "negative_percent_agreement": _proportion(sum(a == b for a, b in neg), len(neg)),
            "unresolved": len(statuses) - len(both),
        },
    }
