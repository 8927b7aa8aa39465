"""The content of a validation report: per-case rows and the summary that ``validation.json`` holds.

Pure functions of the cases, their runs and the check results; the writers put them on disk.
"""

from __future__ import annotations

import math
import platform
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from wsi_her2._version import __version__
from wsi_her2.her2 import SCORES_4
from wsi_her2.outputs.schema import SUMMARY_INDEX as INDEX_SOURCE
from wsi_her2.outputs.tiling import now_iso
from wsi_her2.validation.cases import Case, CaseList
from wsi_her2.validation.scoring import CaseRun, algorithm_metadata, case_cells, case_index
from wsi_her2.validation.statistics import concordance, index_correlation, ish_concordance

# ASCO/CAP 2018 HER2 guideline: initial validation on 20 positive and 20 negative cases for an
# FDA-approved assay, 40 and 40 for a laboratory-developed test (wsi-her2 is not FDA-cleared).
LDT_MIN_PER_CLASS = 40
FEW_CASES = 20

INDEX_DESCRIPTIONS = {
    INDEX_SOURCE: "the scorer's membrane index: H-score-like, 0-300, over tumour cells",
}


def describe_index(source: str) -> str:
    """What an index source means."""
    if source in INDEX_DESCRIPTIONS:
        return INDEX_DESCRIPTIONS[source]
    rule = source.removeprefix("hscore_from_").removesuffix("_rule_fractions").replace("_", " ")
    return (
        f"H-score-like 1 x %1+ + 2 x %2+ + 3 x %3+ (0-300) of the {rule} rule's class fractions (the "
        "scorer reports no index of its own)"
    )


def case_rows(cases: Sequence[Case], runs: Sequence[CaseRun], out_dir: Path) -> list[dict[str, Any]]:
    """One row per case: the pathologist's call, the tool's, the index, cells, where the outputs are."""
    rows = []
    for case, run in zip(cases, runs, strict=True):
        index, source = case_index(run.scores)
        cells, tumour = case_cells(run.scores)
        result = run.scores.result if run.scores is not None else {}
        score = run.score if run.status == "done" else None
        rows.append(
            {
                "case": case.case_id,
                "pathologist_score": case.pathologist_label,
                "ish": case.ish_label,
                "reference_status": case.reference_status,
                "status": run.status,
                "tool_score": SCORES_4[score] if score is not None else None,
                "agree": None if score is None else score == case.pathologist_score,
                "difference": None if score is None else score - case.pathologist_score,
                "index": index,
                "index_source": source,
                "n_cells": cells,
                "n_tumour_cells": tumour,
                "n_tiles_scored": result.get("n_tiles_scored"),
                "confidence": result.get("confidence"),
                "mpp_used": run.mpp_used,
                "seconds": round(run.seconds, 3),
                "message": run.message or None,
                "folder": relative_path(run.folder, out_dir),
                "slide": str(case.slide),
                "roi": str(case.roi) if case.roi else None,
                "line": case.line,
            }
        )
    return rows


def relative_path(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` (POSIX separators) when inside it, else as given."""
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path)


def summarise(
    case_list: CaseList,
    runs: Sequence[CaseRun],
    rows: list[dict[str, Any]],
    settings: Any,
    *,
    samples: int,
    seed: int,
    checks: dict[str, Any],
    calibration: dict[str, Any] | None,
    cases_sha256: str,
) -> dict[str, Any]:
    """The validation report (``validation.json``) without its file list."""
    cases = case_list.cases
    done = [i for i, r in enumerate(runs) if r.status == "done"]
    truth = [cases[i].pathologist_score for i in done]
    tool = [int(runs[i].score) for i in done]  # type: ignore[arg-type]
    index = [rows[i]["index"] if rows[i]["index"] is not None else math.nan for i in done]
    sources = sorted({rows[i]["index_source"] for i in done if rows[i]["index_source"]})
    folders = [scores for i in done if (scores := runs[i].scores) is not None]
    fingerprints = sorted({str(f) for r in folders if (f := r.config.get("settings_fingerprint"))})
    metadata = algorithm_metadata(folders[0]) if folders else {
        "wsi_her2_version": __version__, "model": {"name": settings.model}, "settings_fingerprint":
        settings.fingerprint(), "calibration": settings.calibration,
    }  # fmt: skip
    notes = _notes(len(cases), len(done), sources, fingerprints)
    caveats = sorted({c for r in folders for c in r.report.get("caveats") or []})
    return {
        "wsi_her2_version": __version__,
        "command": "validate",
        "created": now_iso(),
        "cases_file": str(case_list.source.resolve()),
        "cases_file_sha256": cases_sha256,
        "columns": case_list.columns,
        "n_cases": len(cases),
        "n_scored": len(done),
        "failed": [
            {"case": r["case"], "status": r["status"], "message": r["message"]} for r in rows if r["status"] != "done"
        ],
        "algorithm": {
            **metadata,
            "settings_fingerprints_seen": fingerprints,
            "settings": settings.to_dict(),
            "python": sys.version.split()[0],
            "platform": platform.platform(),
        },
        "index": {
            "source": sources[0] if len(sources) == 1 else sources,
            "description": "; ".join(describe_index(s) for s in sources) or None,
        },
        "concordance": concordance(truth, tool, samples=samples, seed=seed),
        "index_vs_pathologist_spearman": index_correlation(index, truth, samples=samples, seed=seed),
        "ish": ish_concordance(tool, truth, [cases[i].ish for i in done], [cases[i].reference_status for i in done]),
        "sample_size": _sample_size(cases),
        "checks": checks,
        "calibration": calibration,
        "notes": notes,
        "caveats": caveats,
    }


def _sample_size(cases: Sequence[Case]) -> dict[str, Any]:
    positive = sum(c.reference_status == "positive" for c in cases)
    negative = sum(c.reference_status == "negative" for c in cases)
    per_score = {label: sum(c.pathologist_score == k for c in cases) for k, label in enumerate(SCORES_4)}
    return {
        "per_pathologist_score": per_score,
        "her2_positive": positive,
        "her2_negative": negative,
        "her2_unresolved_2plus_without_ish": sum(c.reference_status is None for c in cases),
        "guideline_minimum_per_class": LDT_MIN_PER_CLASS,
        "meets_guideline_minimum": positive >= LDT_MIN_PER_CLASS and negative >= LDT_MIN_PER_CLASS,
        "basis": "ASCO/CAP 2018 HER2 guideline: 20 positive and 20 negative cases to validate an FDA-approved "
        "assay, 40 and 40 for a laboratory-developed test (which a wsi-her2 workflow is)",
    }


def _notes(n_cases: int, n_done: int, sources: list[str], fingerprints: list[str]) -> list[str]:
    notes = []
    if n_done < n_cases:
        notes.append(f"{n_cases - n_done} of {n_cases} cases have no score; the figures are over {n_done} cases")
    if n_done < FEW_CASES:
        notes.append(f"only {n_done} scored cases: every figure here is indicative, its interval wide or absent")
    if sources and INDEX_SOURCE not in sources:
        notes.append(
            "the index is an H-score computed from the class fractions of the slide rule: the scorer "
            "reports no index of its own over tumour cells"
        )
    if len(fingerprints) > 1:
        notes.append("the cases were not all scored with the same settings (several settings fingerprints)")
    return notes


def algorithm_line(summary: dict[str, Any]) -> str:
    """One line naming the algorithm: model, weights, settings fingerprint, version."""
    algorithm = summary.get("algorithm") or {}
    model = algorithm.get("model") or {}
    sha = model.get("weights_sha256")
    fingerprint = str(algorithm.get("settings_fingerprint") or "")[:12]
    calibrated = " (calibrated)" if algorithm.get("calibration") else ""
    weights = f", weights {sha[:12]}" if sha else ""
    return (
        f"{model.get('name', '?')} ({model.get('kind', '?')}{weights}){calibrated}, settings {fingerprint}, "
        f"wsi-her2 {summary.get('wsi_her2_version')}"
    )
