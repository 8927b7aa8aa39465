"""``wsi-her2 validate``: score a lab's cases, compare with the pathologist and ISH, run the CAP checks.

Output folder::

    OUT/cases/<case>/            each case's score folder (``wsi-her2 view`` opens it)
    OUT/checks/rerun/<case>/     the rerun check's score folders
    OUT/checks/roi/<case>/<v>/   the ROI check's score folders, beside <v>.geojson
    OUT/calibration.json         with calibrate: the fitted settings and their provenance
    OUT/cases.csv                the per-case table
    OUT/validation.png           confusion matrix, index by score, ROI stability
    OUT/validation.html          the report on one self-contained page
    OUT/validation.json          everything, written last: its presence means the run completed

A case that fails to score is recorded (status "failed" and its one-line error) and the run goes on.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from wsi_her2 import extras
from wsi_her2.errors import DatasetError
from wsi_her2.outputs.atomic import ensure_dir, write_json
from wsi_her2.outputs.schema import (
    CALIBRATION_FILE,
    VALIDATION_CASES_CSV,
    VALIDATION_CASES_DIR,
    VALIDATION_CHECKS_DIR,
    VALIDATION_FIGURE,
    VALIDATION_HTML,
    VALIDATION_REPORT,
)
from wsi_her2.progress import ProgressCallback, ProgressEvent, report
from wsi_her2.validation.calibration_file import sha256_file
from wsi_her2.validation.cases import Case, CaseList
from wsi_her2.validation.checks import DEFAULT_JITTER_UM, rerun_check, roi_check
from wsi_her2.validation.report import case_rows, relative_path, summarise
from wsi_her2.validation.scoring import CaseRun, load_validation_scorer, score_case
from wsi_her2.validation.statistics import BOOTSTRAP_SAMPLES


@dataclasses.dataclass(frozen=True)
class ValidationOptions:
    """How much to check and how.

    Attributes:
        rerun: cases to score again for the rerun check (None: all scored cases; 0: no check).
        roi_check: cases to score with perturbed ROIs (None: all; 0: no check).
        jitter_um: how far the ROI is shrunk, grown and shifted.
        calibrate: the calibration space(s) to fit by cross-validation and write ``calibration.json``
            for: "levels", "percentages" or "both" (:data:`~wsi_her2.validation.calibrate.SPACES`);
            None: no calibration.
        folds: k of k-fold cross-validation (None: leave-one-out up to 50 cases, else 10).
        bootstrap_samples: resamples of the bootstrap intervals.
        seed: seed of the bootstrap, the check subsets and the folds.
        mpp_fallback: µm/px of images and of slides without their own (``--mpp``).
        hash_slides: record each calibration slide's SHA-256.
    """

    rerun: int | None = None
    roi_check: int | None = None
    jitter_um: float = DEFAULT_JITTER_UM
    calibrate: str | None = None
    folds: int | None = None
    bootstrap_samples: int = BOOTSTRAP_SAMPLES
    seed: int = 0
    mpp_fallback: float | None = None
    hash_slides: bool = True

    @classmethod
    def from_options(cls, options: Mapping[str, Any], settings: Any) -> ValidationOptions:
        """From ``validate``'s option values; ``--calibrate`` alone ("auto") picks the space the model has.

        Raises:
            ConfigError: an unknown calibration space.
        """
        from wsi_her2.validation.calibrate import resolve_spaces

        calibrate = options.get("calibrate")
        return cls(
            rerun=options.get("rerun"),
            roi_check=options.get("roi_check"),
            jitter_um=float(options.get("roi_jitter_um") or DEFAULT_JITTER_UM),
            calibrate=None if calibrate is None else resolve_spaces(calibrate, settings),
            folds=options.get("folds"),
            bootstrap_samples=int(options.get("bootstrap_samples") or BOOTSTRAP_SAMPLES),
            seed=int(options.get("seed") or 0),
            mpp_fallback=options.get("mpp"),
        )


@dataclasses.dataclass
class ValidationResult:
    """What :func:`run_validation` wrote.

    Attributes:
        out_dir: the output folder.
        summary: the content of ``validation.json``.
        files: the files written, by role.
        runs: each case's first scoring.
        calibration_error: why the calibration asked for could not be made, or None.
    """

    out_dir: Path
    summary: dict[str, Any]
    files: dict[str, Path]
    runs: list[CaseRun]
    calibration_error: DatasetError | None = None

    @property
    def failed(self) -> list[str]:
        """Ids of the cases without a score."""
        return [row["case"] for row in self.summary["failed"]]


def run_validation(
    case_list: CaseList,
    out_dir: str | Path,
    settings: Any,
    options: ValidationOptions | None = None,
    *,
    progress: ProgressCallback | None = None,
) -> ValidationResult:
    """Score every case, compare, check and (optionally) calibrate; write the report last.

    Raises:
        ModelError: the model cannot be loaded or is not a four-class HER2 model.
        OutputError: the output folder cannot be written.

    A calibration that cannot be made (too few usable cases, a model without cell counts) does not
    lose the validation: the report records why and ``calibration_error`` holds the error.
    """
    options = options or ValidationOptions()
    out = ensure_dir(out_dir)
    cases = list(case_list.cases)
    scorer = load_validation_scorer(settings)
    try:
        runs = []
        for k, case in enumerate(cases):
            report(progress, ProgressEvent("cases", k, len(cases), "cases", case.case_id))
            runs.append(
                score_case(
                    case.slide,
                    out / VALIDATION_CASES_DIR / case.case_id,
                    settings,
                    scorer=scorer,
                    mpp=case.mpp,
                    mpp_fallback=options.mpp_fallback,
                    roi=case.roi,
                )
            )
        report(progress, ProgressEvent("cases", len(cases), len(cases), "cases"))
        checks = _run_checks(cases, runs, out / VALIDATION_CHECKS_DIR, settings, scorer, options, progress)
    finally:
        scorer.close()
    rows = case_rows(cases, runs, out)
    files: dict[str, Path] = {}
    calibration: dict[str, Any] | None = None
    calibration_error = None
    if options.calibrate is not None:
        from wsi_her2.validation.calibrate import calibrate_cases

        try:
            calibration, files["calibration"] = calibrate_cases(
                cases, runs, rows, out / CALIBRATION_FILE, settings, options
            )
        except DatasetError as exc:
            calibration, calibration_error = {"error": exc.user_message()}, exc
    _relative_folders(checks, out)
    _merge_check_columns(rows, checks)
    summary = summarise(
        case_list,
        runs,
        rows,
        settings,
        samples=options.bootstrap_samples,
        seed=options.seed,
        checks=checks,
        calibration=calibration,
        cases_sha256=sha256_file(case_list.source),
    )
    summary["cases"] = rows
    from wsi_her2.validation.writers import write_case_table, write_figure, write_html

    files["cases_csv"] = write_case_table(out / VALIDATION_CASES_CSV, rows)
    if extras.missing("matplotlib"):  # the core install has no matplotlib: the report goes on without its figure
        summary["notes"].append(f"{VALIDATION_FIGURE} was not drawn: matplotlib is not installed "
                                "(pip install 'wsi-her2[explain]')")  # fmt: skip
    else:
        files["figure"] = write_figure(out / VALIDATION_FIGURE, summary)
    files["html"] = write_html(out / VALIDATION_HTML, summary, files.get("figure"))
    summary["files"] = {role: path.name for role, path in files.items()} | {"report": VALIDATION_REPORT}
    files["report"] = write_json(out / VALIDATION_REPORT, summary)
    return ValidationResult(out, summary, files, runs, calibration_error)


def _run_checks(
    cases: list[Case],
    runs: list[CaseRun],
    out: Path,
    settings: Any,
    scorer: Any,
    options: ValidationOptions,
    progress: ProgressCallback | None,
) -> dict[str, Any]:
    checks: dict[str, Any] = {"rerun": None, "roi": None}

    def scorer_for(model: Any) -> Any:
        def score(case: Case, folder: Path, roi: Path | None) -> CaseRun:
            return score_case(
                case.slide, folder, settings, scorer=model, mpp=case.mpp, mpp_fallback=options.mpp_fallback, roi=roi
            )

        return score

    if options.rerun != 0:
        fresh = load_validation_scorer(settings)  # a new scorer: nothing carried over from the first pass
        try:
            checks["rerun"] = rerun_check(
                cases, runs, out / "rerun", scorer_for(fresh), n=options.rerun, seed=options.seed, progress=progress
            )
        finally:
            fresh.close()
    if options.roi_check != 0:
        checks["roi"] = roi_check(
            cases,
            runs,
            out / "roi",
            scorer_for(scorer),
            settings,
            n=options.roi_check,
            seed=options.seed,
            jitter_um=options.jitter_um,
            progress=progress,
        )
    return checks


def _relative_folders(value: Any, root: Path) -> None:
    # Check records name their score folders relative to OUT, so the folder can be moved whole.
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "folder" and isinstance(item, str):
                value[key] = relative_path(Path(item), root)
            else:
                _relative_folders(item, root)
    elif isinstance(value, list):
        for item in value:
            _relative_folders(item, root)


def _merge_check_columns(rows: list[dict[str, Any]], checks: dict[str, Any]) -> None:
    by_case = {row["case"]: row for row in rows}
    for row in rows:
        row.setdefault("rerun_identical", None)
        row.setdefault("roi_score_changed", None)
        row.setdefault("roi_index_spread", None)
    for entry in (checks.get("rerun") or {}).get("per_case", []):
        by_case[entry["case"]]["rerun_identical"] = entry["identical"]
    for entry in (checks.get("roi") or {}).get("per_case", []):
        by_case[entry["case"]]["roi_score_changed"] = entry["score_changed"]
        by_case[entry["case"]]["roi_index_spread"] = entry["index_spread"]
