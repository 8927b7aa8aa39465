"""The DAB scorer's membrane levels as a calibration space, rescored from each case's per-cell table.

The DAB scorer classes a cell from two membrane signals it measures once (``cells.npz``:
``membrane_partial_od``, ``membrane_complete_od``) against three levels set per slide: level_k =
the slide's background (``result.scorer_summary.membrane_levels.background_od``) + its stain
factor (``model_facts.stain_intensity.factor``) x the contrast ``[dab] membrane_od_k``. Neither
the signals nor the tumour gate depend on the contrasts, so a case is rescored under other
contrasts exactly as ``score`` would score it: the cells classed with
:func:`~wsi_her2.models.dab.classify.classify_cells`, the tumour cells counted per class, the
slide score by the aggregator's cells rule (:func:`~wsi_her2.aggregate.rule_cells`, with the
``[aggregate]`` cut-offs and 3+ focus the case was scored with) and the index by
:func:`~wsi_her2.models.dab.classify.membrane_index`, without reading the slide again.

Why these parameters: they decide faint (1+) against no staining and weak (2+) against intense
(3+) staining; a lab's scanner, chromogen and section thickness move the membrane signal of a
given HER2 level, and its pathologists' reading of "faint, barely perceptible" is what
validation measures the scorer against.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from wsi_her2.aggregate import AggregateConfig, rule_cells
from wsi_her2.errors import DatasetError
from wsi_her2.her2 import SCORES_4
from wsi_her2.models.dab.classify import MembraneThresholds, classify_cells, membrane_index
from wsi_her2.models.dab.config import DabConfig
from wsi_her2.models.dab.scorer import CELLS_FILE
from wsi_her2.outputs.schema import ScoreFolder
from wsi_her2.validation.spaces import require_cells_rule

LEVEL_KEYS = ("membrane_od_1plus", "membrane_od_2plus", "membrane_od_3plus")
# Candidate contrasts: the setting in use plus or minus up to N steps. 0.005 OD is about the
# smallest change of the 1+ contrast (0.045) that moves a faint cell across it on the real cores;
# the 2+ and 3+ steps are a similar share of their contrasts. 13 x 7 x 5 = 455 combinations, less
# those out of order: leave-one-out on 50 cases of ~5,000 tumour cells takes a few seconds.
LEVEL_STEPS: dict[str, tuple[float, int]] = {
    "membrane_od_1plus": (0.005, 6),
    "membrane_od_2plus": (0.015, 3),
    "membrane_od_3plus": (0.04, 2),
}


@dataclasses.dataclass(frozen=True)
class CaseCells:
    """What rescoring one case needs: its tumour cells' membrane signals and how its levels were set.

    Attributes:
        partial_od: per tumour cell, the membrane signal reached by part of its ring.
        complete_od: per tumour cell, the signal reached nearly all round.
        background_od: the slide's background the levels sit on.
        factor: the slide's stain factor that scaled the contrasts.
        aggregate: the slide-rule settings the case was scored with.
        reported_score: the case's score, 0..3.
        reported_counts: its tumour cells per class, as reported.
        reported_levels: its three levels, as reported.
    """

    partial_od: np.ndarray
    complete_od: np.ndarray
    background_od: float
    factor: float
    aggregate: AggregateConfig
    reported_score: int
    reported_counts: tuple[int, ...]
    reported_levels: tuple[float, float, float]


def level_grid(base: DabConfig, steps: Mapping[str, tuple[float, int]] | None = None) -> dict[str, tuple[float, ...]]:
    """Candidate contrasts per level: the value in ``base`` and ``n`` steps either side (positive only)."""
    out = {}
    for key, (step, n) in (steps or LEVEL_STEPS).items():
        centre = float(getattr(base, key))
        values = [centre + k * step for k in range(-n, n + 1)]
        out[key] = tuple(centre if k == 0 else round(v, 6) for k, v in zip(range(-n, n + 1), values) if v > 0)
    return out


class LevelSpace:
    """The DAB scorer's three membrane contrasts, rescored from ``cells.npz``.

    Args:
        base: the DAB settings the cases were scored with (the grid is centred on its contrasts).
        steps: per contrast, (step, steps either side) (default :data:`LEVEL_STEPS`).
    """

    name = "dab_membrane_levels"
    section = "dab"

    def __init__(self, base: DabConfig | None = None, steps: Mapping[str, tuple[float, int]] | None = None) -> None:
        self.base = base or DabConfig()
        self.grid = level_grid(self.base, steps)

    def defaults(self) -> dict[str, float]:
        """The contrasts of ``base``."""
        return {k: float(getattr(self.base, k)) for k in LEVEL_KEYS}

    def candidates(self) -> list[dict[str, float]]:
        """Every combination of the grid that keeps 1+ < 2+ < 3+, the defaults first."""
        out = [self.defaults()]
        for a, b, c in itertools.product(*(self.grid[k] for k in LEVEL_KEYS)):
            candidate = dict(zip(LEVEL_KEYS, (a, b, c), strict=True))
            if a < b < c and candidate != out[0]:
                out.append(candidate)
        return out

    def load_case(self, score_dir: Path) -> CaseCells:
        """The tumour cells of ``score_dir/cells.npz`` and the levels, factor and rule of its report.

        Raises:
            DatasetError: not a DAB score folder scored by the cells rule.
            InputNotFoundError: the folder or its per-cell table is missing.
        """
        from wsi_her2.models.dab.slide_cells import SlideCells

        folder = ScoreFolder(score_dir)
        require_cells_rule(folder)
        summary = folder.scorer_summary
        levels, counts = summary.get("membrane_levels"), (summary.get("tumour_cells") or {}).get("counts")
        intensity = folder.model_facts.get("stain_intensity") or {}
        if not isinstance(levels, Mapping) or not isinstance(counts, Mapping) or "factor" not in intensity:
            raise DatasetError(
                f"{folder.path}: the report has no membrane levels, stain factor or tumour-cell counts",
                hint="score the case again with this version of wsi-her2",
            )
        cells = SlideCells.load(folder.scorer_file(CELLS_FILE)).columns
        tumour = cells["is_tumour"].astype(bool)
        return CaseCells(
            partial_od=cells["membrane_partial_od"][tumour],
            complete_od=cells["membrane_complete_od"][tumour],
            background_od=float(levels["background_od"]),
            factor=float(intensity["factor"]),
            aggregate=AggregateConfig.from_dict(folder.config.get("aggregate")),
            reported_score=SCORES_4.index(str(folder.score)),
            reported_counts=tuple(int(counts[c]) for c in SCORES_4),
            reported_levels=(float(levels["od_1plus"]), float(levels["od_2plus"]), float(levels["od_3plus"])),
        )

    @staticmethod
    def levels(case: CaseCells, params: Mapping[str, float]) -> MembraneThresholds:
        """The case's levels under these contrasts: background + factor x contrast, as the scorer sets them."""
        od_1plus, od_2plus, od_3plus = (case.background_od + params[k] * case.factor for k in LEVEL_KEYS)
        return MembraneThresholds(od_1plus, od_2plus, od_3plus, background_od=case.background_od)

    def counts(self, case: CaseCells, params: Mapping[str, float]) -> np.ndarray:
        """Tumour cells per class under these contrasts."""
        classes = classify_cells(case.partial_od, case.complete_od, self.levels(case, params))
        return np.bincount(classes.astype(np.intp), minlength=4)[:4]

    def rescore(self, case_data: CaseCells, params: Mapping[str, float]) -> tuple[int, float]:
        """The cells rule's score and the membrane index under these contrasts."""
        counts = self.counts(case_data, params)
        verdict = rule_cells(counts, case_data.aggregate)
        return SCORES_4.index(verdict.score), float(membrane_index(counts))

    def check_reproduces(self, case_data: Sequence[CaseCells], case_ids: Sequence[str]) -> None:
        """At the defaults, every case must get its reported levels, tumour-cell counts and score.

        Raises:
            DatasetError: one does not (scored with other contrasts, or the folder was edited).
        """
        defaults = self.defaults()
        wrong = []
        for case_id, case in zip(case_ids, case_data, strict=True):
            levels = self.levels(case, defaults)
            counts = tuple(int(v) for v in self.counts(case, defaults))
            score = self.rescore(case, defaults)[0]
            if (levels.od_1plus, levels.od_2plus, levels.od_3plus) != case.reported_levels:
                wrong.append(f"{case_id} (levels {case.reported_levels} reported, not those of these contrasts)")
            elif counts != case.reported_counts or score != case.reported_score:
                wrong.append(
                    f"{case_id} ({SCORES_4[case.reported_score]} and {case.reported_counts} reported, "
                    f"{SCORES_4[score]} and {counts} rescored)"
                )
        if wrong:
            raise DatasetError(
                f"rescoring from {CELLS_FILE} does not reproduce {', '.join(wrong[:3])}",
                hint="the score folders must come from this run's settings",
            )
