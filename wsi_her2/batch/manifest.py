"""Resume rules: when is a slide's output folder complete and still valid?

Each slide folder gets ``batch_manifest.json`` after its ``report.json``, both written atomically.
A slide counts as done, and a rerun skips it, only when the manifest

* exists and says "done" or "no_tissue",
* was made from the same inputs: the slide's fingerprint (size, modification time and SHA-256 of
  the first MiB of each of its files), the µm/px and ROI given for it, the settings fingerprint
  (:meth:`~wsi_her2.settings.ScoreSettings.fingerprint`) and the scorer's fingerprint
  (:func:`~wsi_her2.models.model_fingerprint`: a checkpoint's weights and card; for the DAB
  scorer, its configuration and the wsi-her2 version), and
* lists output files that are all present with the recorded sizes, and the report's SHA-256.

Before a slide is scored again its manifest is removed first, then its old outputs, so a run killed
at any instant leaves a folder that is either complete with a valid manifest or has none.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from wsi_her2._version import __version__
from wsi_her2.errors import InputNotFoundError, OutputError
from wsi_her2.outputs.atomic import TMP_PREFIX, clean_temporaries, write_json
from wsi_her2.outputs.schema import BATCH_MANIFEST, REPORT, SCORE_FILES

MANIFEST = BATCH_MANIFEST
MANIFEST_FORMAT = "wsi-her2-batch-manifest"
MANIFEST_VERSION = 1
HEAD_BYTES = 1 << 20
DONE_STATUSES = ("done", "no_tissue")
# Every name `wsi-her2 score` may write into a slide folder (removed before a slide is redone).
OUTPUT_NAMES = SCORE_FILES


def _sha256_head(path: Path, limit: int = HEAD_BYTES) -> str:
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read(limit)).hexdigest()


def _slide_files(path: Path) -> tuple[list[Path], list[Path]]:
    """(files whose head is hashed, companion files recorded by size and time only)."""
    if path.is_dir():  # a DICOM series: every instance
        return sorted(p for p in path.iterdir() if p.suffix.lower() == ".dcm" and p.is_file()), []
    companions: list[Path] = []
    if path.suffix.lower() == ".mrxs":
        data = path.with_suffix("")
        if data.is_dir():
            companions = sorted(p for p in data.iterdir() if p.is_file())
    return [path], companions


def slide_fingerprint(path: str | Path) -> dict[str, Any]:
    """What identifies a slide's content cheaply: per file, size, mtime and the first MiB's SHA-256.

    Returns:
        ``{"sha256": ..., "files": [...]}``; ``sha256`` summarises the list.

    Raises:
        InputNotFoundError: the slide (or a file of it) is missing or unreadable.
    """
    path = Path(path)
    if not path.exists():
        raise InputNotFoundError(f"slide not found: {path}", hint="check the path")
    try:
        hashed, companions = _slide_files(path)
        files = []
        for file in hashed + companions:
            stat = file.stat()
            entry: dict[str, Any] = {"file": file.name, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
            if file in hashed:
                entry["head_sha256"] = _sha256_head(file)
            files.append(entry)
    except OSError as exc:
        raise InputNotFoundError(
            f"cannot read {exc.filename or path}: {exc.strerror or exc}", hint="check its permissions"
        ) from exc
    digest = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()
    return {"sha256": digest, "files": files}


def model_hash(settings: Any) -> str:
    """The scorer's fingerprint for these settings, computed without loading the model.

    Raises:
        ModelError, InputNotFoundError: the checkpoint is missing, unreadable or does not match its card.
    """
    from wsi_her2.models import model_fingerprint

    return model_fingerprint(settings.model, dab=settings.dab)


def input_key(entry: Any, settings_fingerprint: str, model_sha: str, mpp: float | None) -> dict[str, Any]:
    """Everything a slide's result depends on, for the manifest.

    Raises:
        InputNotFoundError: the slide or its ROI file is missing or unreadable.
    """
    roi_sha = None
    if entry.roi is not None:
        roi = Path(entry.roi)
        try:
            roi_sha = hashlib.sha256(roi.read_bytes()).hexdigest()
        except OSError as exc:
            raise InputNotFoundError(f"ROI file not found or unreadable: {roi}", hint="check the roi column") from exc
    return {
        "slide": slide_fingerprint(entry.path)["sha256"],
        "settings": settings_fingerprint,
        "model": model_sha,
        "mpp": mpp,
        "roi": roi_sha,
    }


def _outputs_record(folder: Path, files: dict[str, Path]) -> dict[str, Any]:
    record: dict[str, Any] = {}
    for path in files.values():
        path = Path(path)
        if path.is_dir():
            record[path.name] = {"folder": True}
        else:
            record[path.name] = {"size": path.stat().st_size}
    report = folder / REPORT
    if report.name in record:
        record[report.name]["sha256"] = hashlib.sha256(report.read_bytes()).hexdigest()
    return record


def write_manifest(
    folder: Path,
    *,
    name: str,
    status: str,
    key: dict[str, Any] | None,
    row: dict[str, Any],
    files: dict[str, Path],
    mpp_fallback_used: float | None = None,
) -> Path:
    """Write the slide's manifest (after its outputs).

    ``mpp_fallback_used`` is the batch-wide --mpp when this slide needed it (an image, or a slide
    without µm/px metadata): only those slides depend on its value.
    """
    from wsi_her2.outputs.tiling import now_iso

    data = {
        "format": MANIFEST_FORMAT,
        "format_version": MANIFEST_VERSION,
        "wsi_her2_version": __version__,
        "created": now_iso(),
        "name": name,
        "status": status,
        "key": key,
        "mpp_fallback_used": mpp_fallback_used,
        "outputs": _outputs_record(folder, files) if status in DONE_STATUSES else {},
        "row": row,
    }
    return write_json(folder / MANIFEST, data)


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """The slide folder's manifest, or None when absent or unreadable."""
    try:
        data = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
        return None
    return data


def done_row(folder: Path, key: dict[str, Any], mpp_fallback: float | None = None) -> dict[str, Any] | None:
    """The recorded summary row when ``folder`` holds a complete, valid result for ``key``; else None.

    A slide that was scored with the batch-wide --mpp is done only while that value is the same.
    """
    manifest = read_manifest(folder)
    if manifest is None or manifest.get("status") not in DONE_STATUSES or manifest.get("key") != key:
        return None
    used = manifest.get("mpp_fallback_used")
    if used is not None and used != mpp_fallback:
        return None
    outputs = manifest.get("outputs") or {}
    if REPORT not in outputs:
        return None
    for file_name, facts in outputs.items():
        path = folder / file_name
        if facts.get("folder"):
            if not path.is_dir():
                return None
        elif not path.is_file() or path.stat().st_size != facts.get("size"):
            return None
    try:
        report_sha = hashlib.sha256((folder / REPORT).read_bytes()).hexdigest()
    except OSError:
        return None
    if report_sha != outputs[REPORT].get("sha256"):
        return None
    row = manifest.get("row")
    return row if isinstance(row, dict) else None


def clear_slide_folder(folder: Path) -> None:
    """Forget a slide's earlier result: the manifest first, then the report, other outputs, temporaries.

    Raises:
        OutputError: an old output cannot be removed.
    """
    if not folder.is_dir():
        return
    try:
        for file_name in (MANIFEST, REPORT, *OUTPUT_NAMES):
            path = folder / file_name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
    except OSError as exc:
        raise OutputError(f"cannot remove the old outputs in {folder}: {exc.strerror or exc}") from exc
    clean_temporaries(folder)


def remove_partial_outputs(folder: Path) -> None:
    """After a failure: remove whatever outputs were written (best effort; never raises)."""
    with contextlib.suppress(OutputError, OSError):
        clear_slide_folder(folder)


def clean_root_temporaries(out_dir: Path, names: tuple[str, ...]) -> int:
    """Remove leftovers of interrupted summary writes (``.tmp-*-summary.csv``) of this run's own files."""
    count = 0
    if out_dir.is_dir():
        for entry in out_dir.iterdir():
            if entry.name.startswith(TMP_PREFIX) and any(entry.name.endswith(f"-{n}") for n in names):
                with contextlib.suppress(OSError):
                    entry.unlink()
                    count += 1
    return count
