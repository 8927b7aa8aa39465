"""Calibration spaces that need nothing but a finished score folder.

:class:`PercentageSpace` refits the ASCO/CAP percentage cut-offs of the cells rule
(``[aggregate] positive_3plus``, ``equivocal_2plus``, ``low_1plus``) from the per-tile cell counts
in each case's ``tiles.csv``: the cells rule sums those counts over the scored tiles, so a case is
rescored under new cut-offs exactly as ``score`` would score it, without reading the slide again.
The DAB scorer's membrane levels are in :mod:`wsi_her2.validation.levels`; :class:`EitherSpace`
offers the candidates of several spaces at once (``--calibrate both``).

Why refit a guideline's 10%: the DAB scorer's percentages are over the cells its tumour gate
keeps, and a gate that lets stroma or normal glands through dilutes a 1+ tumour's faint fraction.
The grid therefore reaches down to 1% for the 1+ cut-off; it reaches up to 30% for scorers that
over-call faint staining. A calibrated cut-off corrects this scorer on this lab's material; it is
not a new clinical definition, and the report says so.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from wsi_her2.aggregate import CELL_COUNT_KEYS, AggregateConfig, rule_cells
from wsi_her2.errors import DatasetError
from wsi_her2.her2 import SCORES_4
from wsi_her2.outputs.schema import ScoreFolder
from wsi_her2.validation.scoring import case_index

PERCENTAGE_GRID: dict[str, tuple[float, ...]] = {
    "low_1plus": (0.01, 0.02, 0.03, 0.05, 0.075, 0.10, 0.15, 0.20, 0.30),
    "equivocal_2plus": (0.02, 0.05, 0.10, 0.15, 0.20, 0.30),
    "positive_3plus": (0.05, 0.10, 0.20, 0.30),
}


@dataclasses.dataclass(frozen=True)
class CellCounts:
    """A case's cells per class summed over its scored tiles, its reported score and index."""

    counts: np.ndarray
    reported_score: int
    index: float


def require_cells_rule(folder: ScoreFolder) -> None:
    """Refuse a folder whose score was not given by the cells rule (the rule the spaces rescore).

    Raises:
        DatasetError: another rule gave the score (a trained model, or ``--rule``).
    """
    rule = folder.result.get("rule")
    if rule != "cells":
        raise DatasetError(
            f"{folder.path}: scored by the {rule} rule; calibration refits the DAB scorer's cells rule",
            hint="calibrate with the DAB scorer (no --model, no --rule)",
        )


class PercentageSpace:
    """The ASCO/CAP cut-offs of the DAB scorer's cells rule, rescored from tiles.csv.

    Args:
        base: the aggregate settings the cases were scored with (the other thresholds stay as they are).
        grid: candidate values per cut-off (default :data:`PERCENTAGE_GRID`).
    """

    name = "asco_cap_percentages"
    section = "aggregate"

    def __init__(self, base: AggregateConfig | None = None, grid: Mapping[str, Sequence[float]] | None = None) -> None:
        self.base = base or AggregateConfig()
        self.grid = {k: tuple(v) for k, v in (grid or PERCENTAGE_GRID).items()}

    def defaults(self) -> dict[str, float]:
        """The cut-offs of ``base``."""
        return {k: float(getattr(self.base, k)) for k in self.grid}

    def candidates(self) -> list[dict[str, float]]:
        """Every combination of the grid values, the defaults first."""
        keys = list(self.grid)
        out = [self.defaults()]
        for values in itertools.product(*(self.grid[k] for k in keys)):
            candidate = dict(zip(keys, map(float, values), strict=True))
            if candidate != out[0]:
                out.append(candidate)
        return out

    def load_case(self, score_dir: Path) -> CellCounts:
        """Cells per class over the scored tiles of ``score_dir/tiles.csv``.

        Raises:
            DatasetError: the folder is not a DAB score folder scored by the cells rule.
        """
        folder = ScoreFolder(score_dir)
        require_cells_rule(folder)
        counts = np.stack([np.nan_to_num(folder.column(k)) for k in CELL_COUNT_KEYS], axis=1)
        index, _ = case_index(folder)
        return CellCounts(
            counts[folder.scored()].sum(axis=0),
            SCORES_4.index(str(folder.score)),
            float("nan") if index is None else index,
        )

    def rescore(self, case_data: CellCounts, params: Mapping[str, float]) -> tuple[int, float]:
        """The cells rule's score under these cut-offs (the index does not depend on them)."""
        verdict = rule_cells(case_data.counts, self.base.replace(**params))
        return SCORES_4.index(verdict.score), case_data.index

    def check_reproduces(self, case_data: Sequence[CellCounts], case_ids: Sequence[str]) -> None:
        """Rescoring at the defaults must give every case its reported score.

        Raises:
            DatasetError: it does not (the folder was scored with other settings, or edited).
        """
        defaults = self.defaults()
        wrong = [
            f"{cid} ({SCORES_4[d.reported_score]} reported, {SCORES_4[self.rescore(d, defaults)[0]]} rescored)"
            for cid, d in zip(case_ids, case_data, strict=True)
            if self.rescore(d, defaults)[0] != d.reported_score
        ]
        if wrong:
            raise DatasetError(
                f"rescoring from tiles.csv does not reproduce the reported score of {', '.join(wrong[:3])}",
                hint="the score folders must come from this run's settings",
            )


class EitherSpace:
    """Several spaces' candidates in one list: each moves its own parameters, the others stay at their defaults.

    ``validate --calibrate both``: the choice between moving the membrane levels and moving the
    cut-offs is made inside each fold like any other, so the cross-validated agreement covers it.
    (A product of the two grids would be ~100,000 candidates: slow, and a licence to overfit.)
    The spaces' parameter names must differ.

    Args:
        spaces: the spaces, each with ``check_reproduces`` when it has one.
    """

    def __init__(self, spaces: Sequence[Any]) -> None:
        names = [k for space in spaces for k in space.defaults()]
        if len(names) != len(set(names)):
            raise ValueError(f"the spaces share parameter names: {names}")
        self.spaces = tuple(spaces)
        self.name = "_or_".join(space.name for space in spaces)
        self.section = "+".join(space.section for space in spaces)

    def defaults(self) -> dict[str, float]:
        """Every space's defaults."""
        return {k: v for space in self.spaces for k, v in space.defaults().items()}

    def candidates(self) -> list[dict[str, float]]:
        """The defaults, then each space's other candidates with the other spaces at their defaults."""
        defaults = self.defaults()
        out = [defaults]
        for space in self.spaces:
            out += [{**defaults, **c} for c in space.candidates() if {**defaults, **c} != defaults]
        return out

    def load_case(self, score_dir: Path) -> tuple[Any, ...]:
        """Each space's data of the case."""
        return tuple(space.load_case(score_dir) for space in self.spaces)

    def _moving(self, params: Mapping[str, float]) -> int:
        moved = [i for i, s in enumerate(self.spaces) if any(params[k] != v for k, v in s.defaults().items())]
        if len(moved) > 1:
            raise ValueError("a candidate of EitherSpace moves one space's parameters only")
        return moved[0] if moved else 0

    def rescore(self, case_data: tuple[Any, ...], params: Mapping[str, float]) -> tuple[int, float]:
        """The score and index by the space whose parameters move (the first when none does)."""
        i = self._moving(params)
        space = self.spaces[i]
        return space.rescore(case_data[i], {k: params[k] for k in space.defaults()})

    def overrides(self, params: Mapping[str, float]) -> dict[str, dict[str, float]]:
        """The parameters by config section."""
        return {space.section: {k: params[k] for k in space.defaults()} for space in self.spaces}

    def check_reproduces(self, case_data: Sequence[tuple[Any, ...]], case_ids: Sequence[str]) -> None:
        """Each space must reproduce every case at its defaults.

        Raises:
            DatasetError: one does not.
        """
        for i, space in enumerate(self.spaces):
            check = getattr(space, "check_reproduces", None)
            if check is not None:
                check([data[i] for data in case_data], case_ids)
