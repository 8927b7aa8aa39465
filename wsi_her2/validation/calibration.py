"""Fitting scorer settings to a lab's cases, honestly: cross-validation over a space of candidates.

A :class:`CalibrationSpace` says which settings may change (``candidates``, defaults included),
loads what it needs from each case's score folder once (``load_case``) and rescores a case under a
parameter set without reading the slide again (``rescore``). :func:`cross_validate` then, in each
fold, picks the candidate with the highest quadratic-weighted kappa on the training cases (ties go
to the candidate nearest the defaults, then to the earliest candidate), and predicts the held-out
cases with it. The cross-validated predictions, each made by a fit that never saw its case, give
the agreement to expect on new cases. The fit on all cases (the settings written to the
calibration file) is reported too, labelled as what it is: an apparent, optimistic figure.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from wsi_her2.errors import DatasetError
from wsi_her2.validation.statistics import BOOTSTRAP_SAMPLES, concordance, kappa

# Leave-one-out up to this many cases; stratified k-fold above (LOO's n fits stay cheap, since
# every candidate's prediction of every case is computed once, but its estimate gets noisy).
LOO_MAX_CASES = 50
DEFAULT_FOLDS = 10
MIN_CASES = 4
_TIE = 1e-12


@runtime_checkable
class CalibrationSpace(Protocol):
    """Settings a calibration may change, and how to rescore a case under them.

    Attributes:
        name: short name recorded in the calibration file.
        section: the config section the parameters belong to ("dab", "aggregate").
    """

    name: str
    section: str

    def defaults(self) -> dict[str, float]:
        """The parameter values in effect before calibration."""
        ...

    def candidates(self) -> list[dict[str, float]]:
        """Every parameter set to try (the defaults among them), in a fixed order."""
        ...

    def load_case(self, score_dir: Path) -> Any:
        """What rescoring needs from one case's score folder (read once, kept in memory)."""
        ...

    def rescore(self, case_data: Any, params: Mapping[str, float]) -> tuple[int, float]:
        """The case's score (0..3) and continuous index under ``params``."""
        ...


@dataclasses.dataclass(frozen=True)
class Fold:
    """One split: indices of the training and the held-out cases."""

    index: int
    train: tuple[int, ...]
    test: tuple[int, ...]


def plan_folds(truth: Sequence[int], *, folds: int | None = None, seed: int = 0) -> tuple[str, list[Fold]]:
    """Leave-one-out for small sets (or when ``folds`` >= n), else stratified k-fold.

    Args:
        truth: the pathologist scores (k-fold deals each score's cases round-robin over the folds).
        folds: k; None picks leave-one-out up to :data:`LOO_MAX_CASES` cases, else :data:`DEFAULT_FOLDS`.
        seed: seed of the shuffle within each score (k-fold only).

    Returns:
        ("leave-one-out" or "k-fold (k=..)", the folds).
    """
    n = len(truth)
    k = folds if folds is not None else (n if n <= LOO_MAX_CASES else DEFAULT_FOLDS)
    if k >= n:
        return "leave-one-out", [Fold(i, tuple(j for j in range(n) if j != i), (i,)) for i in range(n)]
    rng = np.random.default_rng(seed)
    assignment = np.empty(n, np.int64)
    offset = 0
    for score in sorted(set(truth)):
        members = np.flatnonzero(np.asarray(truth) == score)
        members = members[rng.permutation(members.size)]
        assignment[members] = (np.arange(members.size) + offset) % k
        offset += members.size
    plan = [
        Fold(f, tuple(np.flatnonzero(assignment != f).tolist()), tuple(np.flatnonzero(assignment == f).tolist()))
        for f in range(k)
    ]
    return f"stratified {k}-fold", plan


def _distance_to_defaults(candidates: list[dict[str, float]], defaults: Mapping[str, float]) -> np.ndarray:
    # Unit-free: the number of grid steps between each parameter and its default, summed.
    out = np.zeros(len(candidates))
    for key, default in defaults.items():
        grid = sorted({c[key] for c in candidates} | {default})
        position = {v: i for i, v in enumerate(grid)}
        out += np.array([abs(position[c[key]] - position[default]) for c in candidates], np.float64)
    return out


def select_candidate(predictions: np.ndarray, truth: np.ndarray, distance: np.ndarray) -> tuple[int, float]:
    """The candidate with the best kappa on these cases; ties to the nearest the defaults, then the first.

    Args:
        predictions: (candidates, cases) scores.
        truth: (cases,) pathologist scores.
        distance: (candidates,) distance of each candidate to the defaults.

    Returns:
        (candidate index, its kappa; NaN when kappa is undefined for every candidate).
    """
    kappas = np.array([kappa(truth, p) for p in predictions], np.float64)
    finite = np.where(np.isfinite(kappas), kappas, -np.inf)
    best = float(finite.max())
    tied = np.flatnonzero(finite >= best - _TIE) if math.isfinite(best) else np.arange(len(kappas))
    nearest = tied[distance[tied] == distance[tied].min()]
    chosen = int(nearest[0])
    return chosen, float(kappas[chosen])


@dataclasses.dataclass
class CrossValidation:
    """What :func:`cross_validate` found.

    Attributes:
        space: the space's name.
        section: its config section.
        method: "leave-one-out" or "stratified k-fold".
        defaults: the parameters before calibration.
        fitted: the parameters chosen on all cases (what the calibration file applies).
        folds: per fold: chosen parameters, training kappa, held-out predictions.
        cv_predicted: per case, the score predicted by the fold that held it out.
        cv_index: per case, the index under that fold's parameters.
        fitted_predicted: per case, the score under ``fitted`` (apparent).
        default_predicted: per case, the score under ``defaults``.
        metrics: "cross_validated", "fitted_on_all_cases" and "defaults" concordance figures.
        selection_stability: share of folds that chose ``fitted``.
        overrides: ``fitted`` by config section (what the calibration file applies).
        n_candidates: the candidates compared in each fold.
    """

    space: str
    section: str
    method: str
    defaults: dict[str, float]
    fitted: dict[str, float]
    folds: list[dict[str, Any]]
    cv_predicted: list[int]
    cv_index: list[float]
    fitted_predicted: list[int]
    default_predicted: list[int]
    metrics: dict[str, Any]
    selection_stability: float
    overrides: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)
    n_candidates: int = 0

    @property
    def departs_from(self) -> dict[str, dict[str, float]]:
        """The parameters whose fitted value differs from the default."""
        return {
            k: {"default": self.defaults[k], "calibrated": v}
            for k, v in self.fitted.items()
            if v != self.defaults.get(k)
        }


def cross_validate(
    space: CalibrationSpace,
    case_data: Sequence[Any],
    truth: Sequence[int],
    case_ids: Sequence[str],
    *,
    folds: int | None = None,
    seed: int = 0,
    bootstrap_samples: int = BOOTSTRAP_SAMPLES,
) -> CrossValidation:
    """Cross-validate the choice of a candidate of ``space`` on these cases.

    Args:
        space: the calibration space.
        case_data: per case, what ``space.load_case`` returned.
        truth: per case, the pathologist's score 0..3.
        case_ids: per case, its id (for the fold records).
        folds: k of k-fold; None for the default plan (:func:`plan_folds`).
        seed: seed of the fold shuffle and of the bootstrap intervals.
        bootstrap_samples: resamples of the intervals.

    Raises:
        DatasetError: fewer than :data:`MIN_CASES` cases, or all with the same pathologist score.
    """
    n = len(case_data)
    y = np.asarray(truth, np.int64)
    if n < MIN_CASES:
        raise DatasetError(f"calibration needs at least {MIN_CASES} scored cases, got {n}")
    if len(set(y.tolist())) < 2:
        raise DatasetError(
            "calibration needs cases of at least two different pathologist scores",
            hint="with one score there is nothing to separate",
        )
    defaults = dict(space.defaults())
    candidates = [dict(c) for c in space.candidates()]
    if defaults not in candidates:
        candidates.insert(0, defaults)
    distance = _distance_to_defaults(candidates, defaults)
    # Every candidate's score and index for every case, once; folds only select among them.
    rescored = [[space.rescore(data, c) for data in case_data] for c in candidates]
    scores = np.array([[s for s, _ in row] for row in rescored], np.int64)
    index = np.array([[v for _, v in row] for row in rescored], np.float64)
    method, plan = plan_folds(y.tolist(), folds=folds, seed=seed)
    cv_predicted = np.zeros(n, np.int64)
    cv_index = np.zeros(n, np.float64)
    fold_records = []
    for fold in plan:
        train, test = np.asarray(fold.train), np.asarray(fold.test)
        chosen, train_kappa = select_candidate(scores[:, train], y[train], distance)
        cv_predicted[test] = scores[chosen, test]
        cv_index[test] = index[chosen, test]
        fold_records.append(
            {
                "fold": fold.index,
                "held_out": [
                    {
                        "case": case_ids[i],
                        "pathologist_score": int(y[i]),
                        "predicted": int(scores[chosen, i]),
                        "index": float(index[chosen, i]),
                    }
                    for i in test
                ],
                "chosen": candidates[chosen],
                "chosen_is_default": candidates[chosen] == defaults,
                "training_cases": len(train),
                "training_kappa": None if not math.isfinite(train_kappa) else train_kappa,
            }
        )
    final, _ = select_candidate(scores, y, distance)
    default_row = candidates.index(defaults)
    metrics = {
        "cross_validated": concordance(y, cv_predicted, samples=bootstrap_samples, seed=seed),
        "fitted_on_all_cases": concordance(y, scores[final], samples=bootstrap_samples, seed=seed),
        "defaults": concordance(y, scores[default_row], samples=bootstrap_samples, seed=seed),
    }
    stability = float(np.mean([r["chosen"] == candidates[final] for r in fold_records]))
    return CrossValidation(
        space.name,
        space.section,
        method,
        defaults,
        candidates[final],
        fold_records,
        cv_predicted.tolist(),
        cv_index.tolist(),
        scores[final].tolist(),
        scores[default_row].tolist(),
        metrics,
        stability,
        space_overrides(space, candidates[final]),
        len(candidates),
    )


def space_overrides(space: Any, params: Mapping[str, float]) -> dict[str, dict[str, float]]:
    """A space's parameters by config section (one section unless the space says otherwise)."""
    split = getattr(space, "overrides", None)
    return split(params) if split is not None else {space.section: dict(params)}
