"""The calibration file: setting overrides by config section, plus where they came from.

``wsi-her2 validate --calibrate`` writes it (JSON); ``score``, ``batch`` and ``explain dab`` read it
with ``--dab-config FILE``. A hand-written TOML/YAML/JSON file with ``[dab]`` and ``[aggregate]``
sections works too; it simply has no provenance. Its layout::

    {"format": "wsi-her2-calibration/1",
     "dab": {...}, "aggregate": {"low_1plus": 0.03, ...},      # the overrides
     "calibration": {"created": ..., "cases": [{"case", "slide", "sha256", ...}], "folds": [...],
                     "cross_validated": {...}, "departs_from": {...}, ...}}

Every report scored with it carries :func:`calibration_block`: the file's SHA-256, its overrides
and a summary of its provenance, so a result can always be traced to the cases it was tuned on.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from wsi_her2.errors import ConfigError, InputNotFoundError

FORMAT = "wsi-her2-calibration/1"
OVERRIDE_SECTIONS = ("dab", "aggregate")
DAB_SECTION, AGGREGATE_SECTION = OVERRIDE_SECTIONS
PROVENANCE = "calibration"
# Provenance entries copied into every report made with the file (the full file has the folds).
SUMMARY_KEYS = (
    "created",
    "wsi_her2_version",
    "space",
    "method",
    "n_cases",
    "cross_validated",
    "departs_from",
    "model",
    "warnings",
)


def sha256_file(path: str | Path, chunk_bytes: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes (a DICOM folder: of its files' names and bytes, in name order)."""
    path = Path(path)
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(file.relative_to(path).as_posix().encode())
        with open(file, "rb") as fh:
            while block := fh.read(chunk_bytes):
                digest.update(block)
    return digest.hexdigest()


def load_dab_config(path: str | Path) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Read a ``--dab-config`` file.

    Returns:
        (the override sections ``dab`` and ``aggregate``, the block every report made with it records).

    Raises:
        InputNotFoundError: the file does not exist.
        ConfigError: it cannot be parsed, or holds a section other than dab, aggregate and calibration.
    """
    path = Path(path)
    if not path.is_file():
        raise InputNotFoundError(f"--dab-config file not found: {path}", hint="give a calibration file from validate")
    data = _read(path)
    unknown = sorted(set(data) - {*OVERRIDE_SECTIONS, PROVENANCE, "format"})
    if unknown:
        raise ConfigError(
            f"{path}: section(s) {', '.join(unknown)} do not belong in a --dab-config file",
            hint="it holds [dab] and [aggregate] overrides (other settings go in --config)",
        )
    fmt = data.get("format")
    if fmt is not None and fmt != FORMAT:
        raise ConfigError(f"{path}: unknown calibration format {fmt!r}", hint=f"this wsi-her2 reads {FORMAT}")
    sections: dict[str, dict[str, Any]] = {}
    for name in OVERRIDE_SECTIONS:
        section = data.get(name) or {}
        if not isinstance(section, Mapping):
            raise ConfigError(f"{path}: [{name}] must be a table of settings")
        sections[name] = dict(section)
    provenance = data.get(PROVENANCE)
    return sections, calibration_block(path, sections, provenance if isinstance(provenance, Mapping) else None)


def _read(path: Path) -> dict[str, Any]:
    """The file's mapping, read as validate writes it (JSON) or as every config file (TOML, YAML).

    A calibration (JSON) holds its format and provenance beside the sections; a hand-written file
    of [dab]/[aggregate] settings is a config file.
    """
    if path.suffix.lower() != ".json":
        from wsi_her2.config import load_config_file

        return load_config_file(path)
    import json

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"cannot parse --dab-config file {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"--dab-config file {path} must hold a mapping of sections, not {type(data).__name__}")
    return data


def provenance(
    cv: Any,
    cases: Sequence[Any],
    metadata: Mapping[str, Any],
    *,
    hash_slides: bool = True,
    compared: Mapping[str, Any] | None = None,
) -> dict:
    """The ``calibration`` section of a calibration file: how the overrides were chosen, on what.

    Args:
        cv: the :class:`~wsi_her2.validation.calibration.CrossValidation`.
        cases: the :class:`~wsi_her2.validation.cases.Case` objects it was fitted on, in its order.
        metadata: the algorithm the cases were scored with (:func:`~wsi_her2.validation.scoring.algorithm_metadata`).
        hash_slides: record each slide's SHA-256 (reads every slide once).
        compared: other spaces cross-validated on the same cases (``--calibrate both``), by name.
    """
    from wsi_her2._version import __version__
    from wsi_her2.outputs.tiling import now_iso

    metrics = cv.metrics
    cross, default = metrics["cross_validated"], metrics["defaults"]
    warnings = []
    if len(cases) < 20:
        warnings.append(f"fitted on {len(cases)} cases: the cross-validated figures are themselves very uncertain")
    moved = {section for section, values in cv.overrides.items() if set(values) & set(cv.departs_from)}
    if AGGREGATE_SECTION in moved:
        warnings.append(
            "the cut-offs depart from the ASCO/CAP 10% definition: they correct this scorer (its tumour "
            "gate's denominator, its membrane measurement) on this lab's material; they are not a new "
            "clinical definition"
        )
    if DAB_SECTION in moved:
        warnings.append(
            "the membrane levels depart from the defaults chosen on the reference cores: they tune what "
            "this scorer calls faint, weak and intense staining to this lab's stain, scanner and pathologists"
        )
    if cv.selection_stability < 0.5:
        warnings.append(
            f"only {cv.selection_stability:.0%} of the folds chose the final settings: the choice is unstable"
        )
    cv_kappa, default_kappa = cross["quadratic_weighted_kappa"]["value"], default["quadratic_weighted_kappa"]["value"]
    if not cv.departs_from:
        warnings.append("the fit kept the defaults: these cases give no reason to change them")
    elif cv_kappa is not None and default_kappa is not None and cv_kappa <= default_kappa:
        warnings.append("the cross-validated kappa is not above the defaults': calibration does not help")
    return {
        "created": now_iso(),
        "wsi_her2_version": __version__,
        "space": cv.space,
        "section": cv.section,
        "method": cv.method,
        "selection": "in each fold, the candidate with the highest quadratic-weighted kappa on the training "
        "cases; ties to the candidate nearest the defaults, then the first",
        "n_cases": len(cases),
        "cases": [
            {
                "case": c.case_id,
                "slide": Path(c.slide).name,
                "sha256": sha256_file(c.slide) if hash_slides else None,
                "pathologist_score": c.pathologist_label,
                "ish": c.ish_label,
            }
            for c in cases
        ],
        "defaults": cv.defaults,
        "fitted": cv.fitted,
        "departs_from": cv.departs_from,
        "cross_validated": {
            "label": "each case predicted by settings fitted without it: the agreement to expect",
            **cross,
        },
        "defaults_on_these_cases": default,
        "fitted_on_all_cases": {
            "label": "apparent: the fit scored on the cases it was fitted to; optimistic, not a performance estimate",
            **metrics["fitted_on_all_cases"],
        },
        "selection_stability": cv.selection_stability,
        "n_candidates": cv.n_candidates,
        "spaces_compared": dict(compared or {}),
        "folds": cv.folds,
        "model": metadata.get("model"),
        "settings_fingerprint": metadata.get("settings_fingerprint"),
        "warnings": warnings,
    }


def write_calibration(
    path: str | Path, cv: Any, prov: Mapping[str, Any], base: Mapping[str, Any] | None = None
) -> Path:
    """Write the calibration file: the fitted overrides in their sections, and the provenance.

    Args:
        path: the file.
        cv: the :class:`~wsi_her2.validation.calibration.CrossValidation`.
        prov: its provenance (:func:`provenance`).
        base: the ``calibration`` block of a ``--dab-config`` file the cases were scored with: its
            overrides are kept where the fit does not replace them, so the new file alone scores as
            the cases were scored plus the fit.
    """
    from wsi_her2.outputs.atomic import write_json

    sections: dict[str, Any] = {name: {} for name in OVERRIDE_SECTIONS}
    for name, values in ((base or {}).get("overrides") or {}).items():
        sections[name] = dict(values)
    for name, values in cv.overrides.items():
        sections[name] = {**sections.get(name, {}), **values}
    record = {**prov, "based_on": None if base is None else {k: base.get(k) for k in ("file", "sha256")}}
    return write_json(path, {"format": FORMAT, **sections, PROVENANCE: record})


def calibration_block(
    path: Path, overrides: Mapping[str, Mapping[str, Any]], provenance: Mapping[str, Any] | None
) -> dict[str, Any]:
    """What a report made with a calibration file says about it."""
    summary = None if provenance is None else {k: provenance[k] for k in SUMMARY_KEYS if k in provenance}
    if summary is not None and provenance is not None:
        summary["case_ids"] = [c.get("case") for c in provenance.get("cases") or [] if isinstance(c, Mapping)]
        cross = summary.get("cross_validated")
        if isinstance(cross, Mapping):  # the headline figures; the file has the rest
            summary["cross_validated"] = {
                k: (cross.get(k) or {}).get("value") if isinstance(cross.get(k), Mapping) else cross.get(k)
                for k in ("n", "exact_agreement", "quadratic_weighted_kappa")
            }
    return {
        "file": str(path.resolve()),
        "sha256": sha256_file(path),
        "overrides": {k: dict(v) for k, v in overrides.items() if v},
        "provenance": summary,
        "note": None if summary is not None else "hand-written settings file: no record of how they were chosen",
    }


def check_applies_to(model: str) -> None:
    """A calibration file is the DAB scorer's: refuse it with a trained model.

    Raises:
        ConfigError: ``model`` is not tuned by the DAB settings.
    """
    from wsi_her2.settings import require_dab_model

    require_dab_model(model)
