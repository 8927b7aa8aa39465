"""HER2 scoring vocabulary shared by every model: classes, clinical groups, colours and the ASCO/CAP rule.

The percentage rule follows the 2018 ASCO/CAP breast guideline (and its 2023 update) as applied to
a set of scored units: cells for the DAB scorer, tissue area for tile classifiers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# Four-class HER2 IHC scores, in order.
SCORES_4: tuple[str, ...] = ("0", "1+", "2+", "3+")
# Three-class grouping used by the paper: negative (0/1+), equivocal (2+), positive (3+).
SCORES_3: tuple[str, ...] = ("negative", "equivocal", "positive")

# QuPath's default intensity-class colours (Negative blue, 1+ yellow, 2+ orange, 3+ red), RGB.
CLASS_COLORS_RGB: dict[str, tuple[int, int, int]] = {
    "0": (112, 112, 225),
    "1+": (255, 215, 0),
    "2+": (225, 150, 50),
    "3+": (200, 50, 50),
    "negative": (112, 112, 225),
    "equivocal": (225, 150, 50),
    "positive": (200, 50, 50),
}

CLINICAL_GROUP_OF_SCORE: dict[str, str] = {
    "0": "negative",
    "1+": "negative",
    "2+": "equivocal",
    "3+": "positive",
    "negative": "negative",
    "equivocal": "equivocal",
    "positive": "positive",
}

CLINICAL_ACTION: dict[str, str] = {
    "negative": "HER2 negative",
    "equivocal": "HER2 equivocal: reflex to in situ hybridisation (ISH)",
    "positive": "HER2 positive",
}


@dataclass(frozen=True)
class PercentageRule:
    """The ASCO/CAP percentage thresholds (fractions of scored units, strictly greater than).

    Attributes:
        positive_3plus: 3+ when more than this fraction is 3+ (guideline: 10%).
        equivocal_2plus: 2+ when more than this fraction is 2+ or 3+ (guideline: 10%).
        low_1plus: 1+ when more than this fraction is 1+ or above (guideline: 10%).
        any_3plus_is_equivocal: 3+ in at most ``positive_3plus`` of units still makes the case 2+
            (the guideline's "complete intense staining in <=10% of cells" equivocal clause).
    """

    positive_3plus: float = 0.10
    equivocal_2plus: float = 0.10
    low_1plus: float = 0.10
    any_3plus_is_equivocal: bool = True


def classify_by_percentages(
    fractions: Sequence[float] | np.ndarray, rule: PercentageRule | None = None, *, min_3plus_focus: float = 0.0
) -> int:
    """Apply the ASCO/CAP percentage rule to class fractions.

    Args:
        fractions: the fraction of scored units in each class, in the order 0, 1+, 2+, 3+
            (need not sum to 1; units with no class are simply not counted).
        rule: thresholds; the guideline's 10% by default.
        min_3plus_focus: the 3+ fraction above which a sub-threshold 3+ focus makes the case 2+
            (0 means any 3+ unit at all counts).

    Returns:
        The score index: 0, 1, 2 or 3.
    """
    rule = rule or PercentageRule()
    if len(fractions) != 4:
        raise ValueError(f"need 4 class fractions (0, 1+, 2+, 3+), got {len(fractions)}")
    f0, f1, f2, f3 = (float(v) for v in fractions)
    del f0
    if f3 > rule.positive_3plus:
        return 3
    if f2 + f3 > rule.equivocal_2plus or (rule.any_3plus_is_equivocal and f3 > min_3plus_focus):
        return 2
    if f1 + f2 + f3 > rule.low_1plus:
        return 1
    return 0


def classify_3class_by_percentages(fractions: Sequence[float] | np.ndarray, rule: PercentageRule | None = None) -> int:
    """The percentage rule for 3-class models (negative, equivocal, positive).

    Returns:
        0 (negative), 1 (equivocal) or 2 (positive).
    """
    rule = rule or PercentageRule()
    if len(fractions) != 3:
        raise ValueError(f"need 3 class fractions (negative, equivocal, positive), got {len(fractions)}")
    _, fe, fp = (float(v) for v in fractions)
    if fp > rule.positive_3plus:
        return 2
    if fe + fp > rule.equivocal_2plus:
        return 1
    return 0


def is_her2_low(score: str) -> bool:
    """HER2-low: IHC 1+, or 2+ (the 2+ case only when ISH is negative, which IHC alone cannot tell)."""
    return score in ("1+", "2+")
