"""How validation scores a case and reads its result: the only place it touches the scorer.

A case is scored with :func:`wsi_her2.pipeline.run_score` into its own folder (a complete ``score``
output, openable with ``wsi-her2 view``); everything validation needs afterwards is read back
from that folder through :class:`~wsi_her2.outputs.schema.ScoreFolder`, so calibration and
rechecks work on exactly what a user can inspect.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wsi_her2.errors import ModelError, MppError, WsiHer2Error
from wsi_her2.her2 import SCORES_4
from wsi_her2.outputs import schema
from wsi_her2.outputs.schema import ScoreFolder
from wsi_her2.slide.image_backend import IMAGE_SUFFIXES


@dataclass
class CaseRun:
    """One scoring of one case.

    Attributes:
        folder: the score folder.
        status: "done", "no_tissue" or "failed".
        scores: the folder as read back (None when failed).
        message: why it failed or has no score.
        error_type: the exception's class name when failed.
        seconds: wall time.
        mpp_used: the µm/px the slide was scored at.
    """

    folder: Path
    status: str
    scores: ScoreFolder | None = None
    message: str = ""
    error_type: str | None = None
    seconds: float = 0.0
    mpp_used: float | None = None

    @classmethod
    def read(cls, folder: Path, seconds: float = 0.0) -> CaseRun:
        """The run whose finished score folder is ``folder``."""
        scores = ScoreFolder(folder)
        run = cls(Path(folder), scores.status, scores, seconds=seconds, mpp_used=scores.mpp)
        if scores.status != "done":
            run.message = str(scores.report.get("message") or "no score")
        return run

    @property
    def report(self) -> dict[str, Any]:
        """The folder's ``report.json`` (empty when failed)."""
        return self.scores.report if self.scores is not None else {}

    @property
    def score(self) -> int | None:
        """The tool's score 0..3, or None."""
        label = self.scores.score if self.scores is not None else None
        return SCORES_4.index(label) if label in SCORES_4 else None


def load_validation_scorer(settings: Any) -> Any:
    """Load the scorer the settings name, once for all cases; refuse models that are not 0/1+/2+/3+.

    Raises:
        ModelError: the model cannot be loaded or does not give the four IHC scores.
    """
    from wsi_her2.models import load_scorer

    scorer = load_scorer(settings.model, inference=settings.inference, dab=settings.dab)
    if tuple(scorer.classes) != SCORES_4:
        scorer.close()
        raise ModelError(
            f"validate compares 0/1+/2+/3+ scores, and the model {settings.model} gives {', '.join(scorer.classes)}",
            hint="validate a four-class model or the DAB scorer",
        )
    return scorer


def score_case(
    slide: Path,
    folder: Path,
    settings: Any,
    *,
    scorer: Any,
    mpp: float | None = None,
    mpp_fallback: float | None = None,
    roi: Path | None = None,
) -> CaseRun:
    """Score one slide into ``folder`` (its earlier outputs cleared first); failures become a CaseRun.

    ``mpp_fallback`` (``--mpp``) is used for images and for slides whose own µm/px is missing or
    implausible, as ``batch`` does. KeyboardInterrupt is not caught.
    """
    from wsi_her2.batch.manifest import clear_slide_folder, remove_partial_outputs
    from wsi_her2.pipeline import run_score

    t0 = time.perf_counter()
    try:
        clear_slide_folder(folder)
        if mpp is None and mpp_fallback is not None and slide.suffix.lower() in IMAGE_SUFFIXES:
            mpp = mpp_fallback
        try:
            run_score(slide, folder, settings, mpp=mpp, roi_path=roi, scorer=scorer)
        except MppError:
            if mpp is not None or mpp_fallback is None:
                raise
            run_score(slide, folder, settings, mpp=mpp_fallback, roi_path=roi, scorer=scorer)
        return CaseRun.read(folder, time.perf_counter() - t0)
    except Exception as exc:
        remove_partial_outputs(folder)
        message = (
            exc.user_message() if isinstance(exc, WsiHer2Error) else f"internal error: {type(exc).__name__}: {exc}"
        )
        return CaseRun(folder, "failed", None, message, type(exc).__name__, time.perf_counter() - t0)


def case_index(scores: ScoreFolder | None) -> tuple[float | None, str | None]:
    """The case's continuous index (0-300) and what it is.

    The scorer's own index (the DAB scorer's membrane index over tumour cells) wherever the scorer
    declares one, null included (no tumour cells). A scorer without one (a trained classifier)
    gets an H-score-like value from the class fractions of the rule that gave the score,
    100 x (1 x f(1+) + 2 x f(2+) + 3 x f(3+)).
    """
    if scores is None or scores.status != "done":
        return None, None
    if scores.declares(schema.SUMMARY_INDEX):
        value = scores.scorer_summary.get(schema.SUMMARY_INDEX)
        return (float(value) if isinstance(value, (int, float)) else None), schema.SUMMARY_INDEX
    result = scores.result
    fractions = result.get("class_fractions") or {}
    if not all(c in fractions for c in SCORES_4):
        return None, None
    hscore = 100.0 * sum(k * float(fractions[c]) for k, c in enumerate(SCORES_4))
    return hscore, f"hscore_from_{str(result.get('rule')).replace(' ', '_')}_rule_fractions"


def case_cells(scores: ScoreFolder | None) -> tuple[int | None, int | None]:
    """(cells detected, tumour cells the percentages are over), where the scorer reports them."""
    if scores is None:
        return None, None
    summary = scores.scorer_summary

    def count(key: str) -> int | None:
        value = summary.get(key) if scores.declares(key) else None
        return int(value) if isinstance(value, (int, float)) else None

    return count(schema.SUMMARY_CELLS_DETECTED), count(schema.SUMMARY_TUMOUR_CELLS)


def case_fractions(scores: ScoreFolder | None) -> dict[str, float]:
    """The class fractions behind the score."""
    fractions = (scores.result.get("class_fractions") or {}) if scores is not None else {}
    return {k: float(v) for k, v in fractions.items()}


def algorithm_metadata(scores: ScoreFolder) -> dict[str, Any]:
    """What identifies the algorithm that produced a score folder (the CAP guideline's metadata)."""
    card = scores.report.get("model_card") or {}
    return {
        "wsi_her2_version": scores.report.get("wsi_her2_version"),
        "model": scores.model,
        "model_card_name": card.get("name"),
        "settings_fingerprint": scores.config.get("settings_fingerprint"),
        "rule": scores.result.get("rule"),
        "calibration": scores.calibration,
    }
