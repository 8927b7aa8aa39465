"""From tile predictions to the slide's HER2 score: pure functions implementing documented rules.

Rules (all are computed and reported; one is the slide's score):

* ``asco_cap`` — ASCO/CAP-style percentages over tissue: the tissue-weighted fraction of scored
  tiles in each class; 3+ if more than 10% of the scored tissue is 3+, otherwise 2+ if more than
  10% is 2+ or above or there is a clear 3+ focus (a tile with p(3+) >= 0.9), otherwise 1+ if more
  than 10% is 1+ or above, otherwise 0. Right for models trained on tile-level labels.
* ``mean_probability`` — the argmax of the tissue-weighted mean of the tile probabilities. Right
  for models trained on slide-level labels, such as BCI's (each patch carries its slide's score).
* ``cells`` — the DAB scorer's: the ASCO/CAP percentages over all scored cells.

``auto`` picks ``cells`` for the DAB scorer, ``mean_probability`` for models whose card says their
labels were slide-level, ``asco_cap`` otherwise. Three-class models (negative, equivocal,
positive) use the same thresholds on their three classes.

The confidence is the share of 200 bootstrap resamples of the scored tiles that give the same
slide score: how stable the call is with respect to which tiles happened to be scored.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from wsi_her2.config import StageConfig, require, require_fraction
from wsi_her2.her2 import (
    CLINICAL_ACTION,
    CLINICAL_GROUP_OF_SCORE,
    SCORES_3,
    SCORES_4,
    PercentageRule,
    classify_3class_by_percentages,
    classify_by_percentages,
    is_her2_low,
)

RULES = ("auto", "asco_cap", "mean_probability", "cells")


@dataclasses.dataclass(frozen=True)
class AggregateConfig(StageConfig):
    """Settings of :func:`aggregate_slide`.

    Attributes:
        rule: the rule that gives the slide score ("auto", "asco_cap", "mean_probability", "cells").
        positive_3plus: 3+ when more than this fraction (of tissue or cells) is 3+.
        equivocal_2plus: 2+ when more than this fraction is 2+ or 3+.
        low_1plus: 1+ when more than this fraction is 1+ or above.
        clear_3plus_probability: a tile with p(3+) at or above this is a clear 3+ focus.
        min_3plus_focus_tiles: clear 3+ tiles needed to call a focus (the tile rule's 2+ clause).
        min_3plus_focus_cells: 3+ cell fraction above which a sub-10% 3+ population makes 2+ (cells rule).
        ultralow_min_fraction: a 0 case with at least this fraction of faint (1+) cells is flagged
            "ultralow-like" (HER2-ultralow needs faint staining in up to 10% of tumour cells).
        bootstrap_samples: resamples for the confidence.
        seed: seed of the bootstrap (results are reproducible).
    """

    rule: str = "auto"
    positive_3plus: float = 0.10
    equivocal_2plus: float = 0.10
    low_1plus: float = 0.10
    clear_3plus_probability: float = 0.9
    min_3plus_focus_tiles: int = 1
    min_3plus_focus_cells: float = 0.02
    ultralow_min_fraction: float = 0.01
    bootstrap_samples: int = 200
    seed: int = 0

    def __post_init__(self) -> None:
        self.check_types()
        require(self.rule in RULES, f"rule must be one of {', '.join(RULES)}, got {self.rule!r}")
        for name in ("positive_3plus", "equivocal_2plus", "low_1plus", "clear_3plus_probability"):
            require_fraction(name, getattr(self, name))
        require_fraction("min_3plus_focus_cells", self.min_3plus_focus_cells)
        require_fraction("ultralow_min_fraction", self.ultralow_min_fraction)
        require(self.min_3plus_focus_tiles >= 1, "min_3plus_focus_tiles must be >= 1")
        require(0 <= self.bootstrap_samples <= 10_000, "bootstrap_samples must be within 0..10000")

    @property
    def percentages(self) -> PercentageRule:
        """The thresholds as a :class:`~wsi_her2.her2.PercentageRule`."""
        return PercentageRule(self.positive_3plus, self.equivocal_2plus, self.low_1plus)


@dataclasses.dataclass(frozen=True)
class TilePredictions:
    """Per-tile results over the whole grid (entries of unscored tiles are NaN / False).

    Attributes:
        classes: class names in probability order.
        scored: True for tiles the model scored (kept by the pixel check, with a result).
        probabilities: (n_tiles, n_classes) class probabilities (DAB: per-tile cell fractions).
        predicted: (n_tiles,) predicted class index, -1 where not scored.
        weights: (n_tiles,) tissue fraction of each tile, the weight of tissue-weighted rules.
        measurements: extra per-tile values by name (DAB: cell counts, membrane OD, ...).
        drop_reason: (n_tiles,) "" for kept tiles, else why the tile was dropped.
    """

    classes: tuple[str, ...]
    scored: np.ndarray
    probabilities: np.ndarray
    predicted: np.ndarray
    weights: np.ndarray
    measurements: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    drop_reason: np.ndarray | None = None

    @property
    def n_scored(self) -> int:
        """Tiles with a result."""
        return int(self.scored.sum())


@dataclasses.dataclass(frozen=True)
class RuleResult:
    """One rule's verdict.

    Attributes:
        rule: the rule's name.
        score: the class name it gives.
        fractions: the class fractions (or mean probabilities) the verdict rests on.
        details: rule-specific values (e.g. clear 3+ tiles).
    """

    rule: str
    score: str
    fractions: dict[str, float]
    details: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class SlideScore:
    """The slide-level result.

    Attributes:
        score: the slide's HER2 class ("0", "1+", "2+", "3+" or the 3-class names).
        rule: the rule that gave it.
        rules: every rule's verdict.
        clinical_group: "negative", "equivocal" or "positive".
        clinical_action: what the group means in practice (e.g. reflex to ISH).
        her2_low: True for 1+ or 2+ (None for 3-class models, which cannot separate 0 from 1+).
        ultralow_like: DAB scorer only: score 0 with some faint membrane staining.
        class_fractions: fractions behind the chosen rule.
        cell_counts: DAB scorer only: cells per class.
        n_tiles_scored: tiles with a result.
        n_tiles_dropped: dropped tiles by reason.
        confidence: share of bootstrap resamples of the tiles giving the same score (None if < 2 tiles).
        notes: caveats worth telling the user.
        no_evidence: why the slide cannot be scored at all (no tile was scored; the cells rule found
            no tumour cell), else None. ``score`` is then the first class only as a placeholder:
            :func:`~wsi_her2.pipeline.score_slide` reports such a slide as not scored, never as 0.
    """

    score: str
    rule: str
    rules: dict[str, RuleResult]
    clinical_group: str
    clinical_action: str
    her2_low: bool | None
    ultralow_like: bool | None
    class_fractions: dict[str, float]
    cell_counts: dict[str, int] | None
    n_tiles_scored: int
    n_tiles_dropped: dict[str, int]
    confidence: float | None
    notes: tuple[str, ...] = ()
    no_evidence: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready result."""
        out = dataclasses.asdict(self)
        out["notes"] = list(self.notes)
        return out


def _is_four_class(classes: Sequence[str]) -> bool:
    return tuple(classes) == SCORES_4


def _percentage_class(fractions: np.ndarray, classes: Sequence[str], cfg: AggregateConfig, focus: bool) -> int:
    if _is_four_class(classes):
        index = classify_by_percentages(fractions, dataclasses.replace(cfg.percentages, any_3plus_is_equivocal=False))
        # The clear-3+-focus clause: a sub-threshold but unmistakable 3+ area makes the case 2+.
        return 2 if index < 2 and focus else index
    if tuple(classes) == SCORES_3:
        return classify_3class_by_percentages(fractions, cfg.percentages)
    return int(np.argmax(fractions))


def tile_fractions(probabilities: np.ndarray, weights: np.ndarray, n_classes: int) -> np.ndarray:
    """Tissue-weighted fraction of tiles predicted in each class."""
    predicted = np.argmax(probabilities, axis=1)
    totals = np.bincount(predicted, weights=weights, minlength=n_classes)
    return totals / max(float(weights.sum()), 1e-12)


def rule_asco_cap(
    probabilities: np.ndarray, weights: np.ndarray, classes: Sequence[str], cfg: AggregateConfig
) -> RuleResult:
    """The ASCO/CAP percentage rule over tissue-weighted tile classes."""
    fractions = tile_fractions(probabilities, weights, len(classes))
    clear = 0
    if _is_four_class(classes):
        clear = int((probabilities[:, 3] >= cfg.clear_3plus_probability).sum())
    index = _percentage_class(fractions, classes, cfg, clear >= cfg.min_3plus_focus_tiles)
    return RuleResult(
        "asco_cap",
        classes[index],
        dict(zip(classes, map(float, fractions), strict=True)),
        {"clear_3plus_tiles": clear, "basis": "tissue-weighted fraction of tiles per predicted class"},
    )


def rule_mean_probability(probabilities: np.ndarray, weights: np.ndarray, classes: Sequence[str]) -> RuleResult:
    """The argmax of the tissue-weighted mean tile probability."""
    mean = (probabilities * weights[:, None]).sum(axis=0) / max(float(weights.sum()), 1e-12)
    return RuleResult(
        "mean_probability",
        classes[int(np.argmax(mean))],
        dict(zip(classes, map(float, mean), strict=True)),
        {"basis": "tissue-weighted mean of tile probabilities"},
    )


def rule_cells(counts: np.ndarray, cfg: AggregateConfig) -> RuleResult:
    """The ASCO/CAP percentage rule over all scored cells (counts: cells x 4 classes summed)."""
    total = float(counts.sum())
    fractions = counts / total if total > 0 else np.zeros(4)
    index = classify_by_percentages(fractions, cfg.percentages, min_3plus_focus=cfg.min_3plus_focus_cells)
    return RuleResult(
        "cells",
        SCORES_4[index],
        dict(zip(SCORES_4, map(float, fractions), strict=True)),
        {"cells": int(total), "basis": "fraction of scored cells per class"},
    )


CELL_COUNT_KEYS = ("n_cells_0", "n_cells_1plus", "n_cells_2plus", "n_cells_3plus")


def _cell_counts(preds: TilePredictions, rows: np.ndarray) -> np.ndarray | None:
    if not all(k in preds.measurements for k in CELL_COUNT_KEYS):
        return None
    per_tile = np.stack([np.nan_to_num(preds.measurements[k][rows]) for k in CELL_COUNT_KEYS], axis=1)
    return per_tile


def resolve_rule(requested: str, preds: TilePredictions, label_granularity: str | None) -> str:
    """The rule ``auto`` stands for, given the model."""
    if requested != "auto":
        return requested
    if all(k in preds.measurements for k in CELL_COUNT_KEYS):
        return "cells"
    return "mean_probability" if label_granularity == "slide" else "asco_cap"


def _verdicts(
    probabilities: np.ndarray,
    weights: np.ndarray,
    counts: np.ndarray | None,
    classes: Sequence[str],
    cfg: AggregateConfig,
) -> dict[str, RuleResult]:
    rules = {"asco_cap": rule_asco_cap(probabilities, weights, classes, cfg)}
    if counts is None:
        rules["mean_probability"] = rule_mean_probability(probabilities, weights, classes)
    else:
        # Cell-class fractions are not probabilities: their mean's argmax means nothing.
        rules["cells"] = rule_cells(counts.sum(axis=0), cfg)
    return rules


def _bootstrap(n: int, cfg: AggregateConfig, score_of: Callable[[np.ndarray], str], observed: str) -> float | None:
    if n < 2 or cfg.bootstrap_samples == 0:
        return None
    rng = np.random.default_rng(cfg.seed)
    same = sum(score_of(rng.integers(0, n, n)) == observed for _ in range(cfg.bootstrap_samples))
    return same / cfg.bootstrap_samples


def aggregate_slide(
    preds: TilePredictions, cfg: AggregateConfig | None = None, *, label_granularity: str | None = None
) -> SlideScore:
    """The slide's HER2 score from its tile predictions.

    Args:
        preds: per-tile results over the grid.
        cfg: rule choice and thresholds.
        label_granularity: the model card's ("slide" or "tile"); steers the ``auto`` rule.

    Returns:
        The score by the chosen rule, with every rule's verdict, the clinical group and flags.
        With no scored tile, or no tumour cell under the cells rule, ``no_evidence`` says so (and
        the score is a placeholder).
    """
    cfg = cfg or AggregateConfig()
    classes = preds.classes
    rows = np.flatnonzero(preds.scored)
    dropped: dict[str, int] = {}
    if preds.drop_reason is not None:
        reasons, reason_counts = np.unique(preds.drop_reason[preds.drop_reason != ""], return_counts=True)
        dropped = {str(r): int(c) for r, c in zip(reasons, reason_counts, strict=True)}
    rule = resolve_rule(cfg.rule, preds, label_granularity)
    probabilities = np.nan_to_num(preds.probabilities[rows])
    weights = preds.weights[rows].astype(np.float64)
    counts = _cell_counts(preds, rows)
    if rule == "cells" and counts is None:
        raise ValueError("the cells rule needs per-tile cell counts (DAB scorer)")
    notes: list[str] = []
    if len(rows) == 0:
        by_reason = ", ".join(f"{reason}: {n}" for reason, n in sorted(dropped.items()))
        why = f"no tile could be scored: all {len(preds.scored)} tiles on tissue were dropped" + (
            f" ({by_reason})" if by_reason else ""
        )
        notes.append(why)
        empty = {c: 0.0 for c in classes}
        verdict = RuleResult(rule, classes[0], empty, {})
        return SlideScore(
            classes[0], rule, {rule: verdict}, CLINICAL_GROUP_OF_SCORE.get(classes[0], "negative"),
            CLINICAL_ACTION[CLINICAL_GROUP_OF_SCORE.get(classes[0], "negative")], None, None, empty,
            None, 0, dropped, None, tuple(notes), no_evidence=why,
        )  # fmt: skip
    rules = _verdicts(probabilities, weights, counts, classes, cfg)
    chosen = rules[rule]

    def score_of(sample: np.ndarray) -> str:
        p, w = probabilities[sample], weights[sample]
        if rule == "cells":
            assert counts is not None
            return rule_cells(counts[sample].sum(axis=0), cfg).score
        if rule == "mean_probability":
            return rule_mean_probability(p, w, classes).score
        return rule_asco_cap(p, w, classes, cfg).score

    confidence = _bootstrap(len(rows), cfg, score_of, chosen.score)
    group = CLINICAL_GROUP_OF_SCORE.get(chosen.score, "negative")
    four = _is_four_class(classes)
    cell_counts = None
    ultralow = None
    if counts is not None:
        totals = counts.sum(axis=0).astype(int)
        cell_counts = dict(zip(SCORES_4, map(int, totals), strict=True))
        faint = rules["cells"].fractions["1+"]
        ultralow = chosen.score == "0" and faint >= cfg.ultralow_min_fraction
        if totals.sum() < 200:
            notes.append(f"only {int(totals.sum())} cells were scored; the percentages are uncertain")
    no_evidence = None
    if rule == "cells" and cell_counts is not None and sum(cell_counts.values()) == 0:
        # The guideline's percentages are over invasive tumour cells: with none, there is no score
        # (not a 0, which would be a clinical call made on nothing).
        no_evidence = f"no tumour cell was found in the {len(rows)} scored tiles: there is nothing to count"
        notes.append(no_evidence)
    if len({r.score for r in rules.values()}) > 1:
        notes.append("the rules disagree (" + ", ".join(f"{name}: {r.score}" for name, r in rules.items()) + ")")
    return SlideScore(
        score=chosen.score,
        rule=rule,
        rules=rules,
        clinical_group=group,
        clinical_action=CLINICAL_ACTION[group],
        her2_low=is_her2_low(chosen.score) if four else None,
        ultralow_like=ultralow,
        class_fractions=chosen.fractions,
        cell_counts=cell_counts,
        n_tiles_scored=len(rows),
        n_tiles_dropped=dropped,
        confidence=confidence,
        notes=tuple(notes),
        no_evidence=no_evidence,
    )
