"""``validate --calibrate``: cross-validate a calibration space on the scored cases, write the file.

Two spaces (:data:`SPACES`): the DAB scorer's membrane levels
(:class:`~wsi_her2.validation.levels.LevelSpace`, rescored from each case's ``cells.npz``; the
default), the ASCO/CAP percentage cut-offs (:class:`~wsi_her2.validation.spaces.PercentageSpace`,
rescored from ``tiles.csv``), or both at once (:class:`~wsi_her2.validation.spaces.EitherSpace`:
either moves, chosen inside each fold; each space is also cross-validated alone, for the report).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from wsi_her2.errors import ConfigError
from wsi_her2.her2 import SCORES_4
from wsi_her2.validation.calibration import CalibrationSpace, CrossValidation, cross_validate
from wsi_her2.validation.calibration_file import provenance, sha256_file, write_calibration
from wsi_her2.validation.cases import Case
from wsi_her2.validation.scoring import CaseRun, algorithm_metadata

LEVELS, PERCENTAGES, BOTH = "levels", "percentages", "both"
SPACES = (LEVELS, PERCENTAGES, BOTH)


def resolve_spaces(requested: str, settings: Any) -> str:
    """The space ``--calibrate`` names; "auto" is the membrane levels for the DAB scorer, else the cut-offs.

    Raises:
        ConfigError: an unknown space.
    """
    from wsi_her2.models import takes_dab_settings

    if requested == "auto":
        return LEVELS if takes_dab_settings(settings.model) else PERCENTAGES
    if requested not in SPACES:
        raise ConfigError(f"unknown calibration space {requested!r}", hint=f"use one of {', '.join(SPACES)}")
    return requested


def calibration_space(settings: Any, name: str = LEVELS) -> CalibrationSpace:
    """The space ``--calibrate NAME`` fits, starting from the settings the cases were scored with."""
    from wsi_her2.validation.levels import LevelSpace
    from wsi_her2.validation.spaces import EitherSpace, PercentageSpace

    if name == LEVELS:
        return LevelSpace(settings.dab)
    if name == PERCENTAGES:
        return PercentageSpace(settings.aggregate)
    if name == BOTH:
        return EitherSpace([LevelSpace(settings.dab), PercentageSpace(settings.aggregate)])
    raise ConfigError(f"unknown calibration space {name!r}", hint=f"use one of {', '.join(SPACES)}")


def space_summary(cv: CrossValidation) -> dict[str, Any]:
    """One space's figures for the report: what it fitted, cross-validated and at its defaults."""
    metrics = cv.metrics
    return {
        "space": cv.space,
        "section": cv.section,
        "n_candidates": cv.n_candidates,
        "defaults": cv.defaults,
        "fitted": cv.fitted,
        "departs_from": cv.departs_from,
        "cross_validated": metrics["cross_validated"],
        "defaults_on_these_cases": metrics["defaults"],
        "fitted_on_all_cases": metrics["fitted_on_all_cases"],
        "selection_stability": cv.selection_stability,
    }


def calibrate_cases(
    cases: Sequence[Case],
    runs: Sequence[CaseRun],
    rows: list[dict[str, Any]],
    path: Path,
    settings: Any,
    options: Any,
) -> tuple[dict[str, Any], Path]:
    """Fit, cross-validate and write the calibration file; add ``cv_score`` and ``calibrated_score`` to rows.

    Returns:
        (the calibration section of the validation report, the file written).

    Raises:
        DatasetError: too few usable cases, or the score folders cannot be rescored.
    """
    t0 = time.perf_counter()
    name = options.calibrate or LEVELS
    space = calibration_space(settings, name)
    done = [i for i, r in enumerate(runs) if r.status == "done"]
    ids = [cases[i].case_id for i in done]
    truth = [cases[i].pathologist_score for i in done]
    data = [space.load_case(runs[i].folder) for i in done]
    check = getattr(space, "check_reproduces", None)
    if check is not None:
        check(data, ids)
    folds = {"folds": options.folds, "seed": options.seed, "bootstrap_samples": options.bootstrap_samples}
    cv = cross_validate(space, data, truth, ids, **folds)  # type: ignore[arg-type]
    spaces = {cv.space: space_summary(cv)}
    compared = {}
    for k, part in enumerate(getattr(space, "spaces", ())):  # both: each space alone, on the same cases
        alone = cross_validate(part, [d[k] for d in data], truth, ids, **folds)  # type: ignore[arg-type]
        spaces[alone.space] = compared[alone.space] = space_summary(alone)
    seconds = time.perf_counter() - t0
    runs_done = [runs[i].scores for i in done]
    metadata = algorithm_metadata(runs_done[0]) if runs_done and runs_done[0] is not None else {}
    prov = provenance(cv, [cases[i] for i in done], metadata, hash_slides=options.hash_slides, compared=compared)
    written = write_calibration(path, cv, prov, settings.calibration)
    for row in rows:
        row.setdefault("cv_score", None)
        row.setdefault("calibrated_score", None)
    for k, i in enumerate(done):
        rows[i]["cv_score"] = SCORES_4[cv.cv_predicted[k]]
        rows[i]["calibrated_score"] = SCORES_4[cv.fitted_predicted[k]]
    summary = {
        "file": written.name,
        "sha256": sha256_file(written),
        "requested": name,
        "space": cv.space,
        "section": cv.section,
        "method": cv.method,
        "defaults": cv.defaults,
        "fitted": cv.fitted,
        "overrides": cv.overrides,
        "departs_from": cv.departs_from,
        "cross_validated": prov["cross_validated"],
        "defaults_on_these_cases": prov["defaults_on_these_cases"],
        "fitted_on_all_cases": prov["fitted_on_all_cases"],
        "selection_stability": cv.selection_stability,
        "n_candidates": cv.n_candidates,
        "folds": len(cv.folds),
        "spaces": spaces,
        "seconds": round(seconds, 3),
        "warnings": prov["warnings"],
        "use": f"wsi-her2 score SLIDE --dab-config {written.name} (and batch, explain dab); validate it on "
        "other cases with validate --dab-config",
    }
    return summary, written
