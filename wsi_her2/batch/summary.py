"""The batch summary: one row per slide, as ``summary.csv`` and ``summary.json``.

Rows are sorted by slide name, so the files do not depend on the order slides finished in, and a
rerun that skips done slides reuses their recorded rows: an interrupted-then-resumed batch and an
uninterrupted one give the same summary (apart from timestamps and seconds of rescored slides).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from wsi_her2._version import __version__
from wsi_her2.outputs import schema
from wsi_her2.outputs.atomic import write_json, write_text
from wsi_her2.outputs.tile_table import csv_cell

STATUSES = ("done", "no_tissue", "failed", "skipped", "pending")


def empty_row(name: str, path: str | Path, status: str, message: str = "") -> dict[str, Any]:
    """A row with only the slide, status and message set."""
    return {
        "slide": name,
        "status": status,
        "score": None,
        "clinical_group": None,
        "rule": None,
        "confidence": None,
        schema.ROW_FRACTIONS: {},
        schema.ROW_SCORER_SUMMARY: {},
        "n_tiles_on_tissue": None,
        "n_tiles_scored": None,
        "n_tiles_dropped": None,
        "mpp": None,
        "seconds": None,
        "error_type": None,
        "message": message,
        "output": name,
        "path": str(path),
    }


def failed_row(name: str, path: str | Path, exc: BaseException, seconds: float | None = None) -> dict[str, Any]:
    """The row of a slide that failed: the one-line user message of a wsi-her2 error, else the exception."""
    from wsi_her2.errors import WsiHer2Error

    if isinstance(exc, WsiHer2Error):
        message = exc.user_message()
    else:
        message = f"internal error: {type(exc).__name__}: {exc}"
    row = empty_row(name, path, "failed", message)
    row["error_type"] = type(exc).__name__
    row["seconds"] = None if seconds is None else round(seconds, 3)
    return row


def result_row(name: str, path: str | Path, result: Any, seconds: float) -> dict[str, Any]:
    """The row of a slide scored by :func:`~wsi_her2.settings.run_score` (status done or no_tissue)."""
    prepared = result.slide
    row = empty_row(name, path, result.status, prepared.no_tissue or "")
    row["mpp"] = prepared.info.mpp
    row["n_tiles_on_tissue"] = len(prepared.grid)
    row["seconds"] = round(seconds, 3)
    score = result.score
    if score is not None:
        row.update(
            {
                "score": score.score,
                "clinical_group": score.clinical_group,
                "rule": score.rule,
                "confidence": score.confidence,
                schema.ROW_FRACTIONS: {str(k): float(v) for k, v in score.class_fractions.items()},
                schema.ROW_SCORER_SUMMARY: {
                    f.key: result.scorer_summary.get(f.key) for f in result.outputs.summary_fields
                },
                "n_tiles_scored": int(score.n_tiles_scored),
                "n_tiles_dropped": int(sum(score.n_tiles_dropped.values())),
            }
        )
    return row


def _spread_keys(rows: list[dict[str, Any]], key: str) -> list[str]:
    """The keys of the mappings under ``key``, in the order rows show them."""
    names: list[str] = []
    for row in rows:
        for name in row.get(key) or {}:
            if name not in names:
                names.append(name)
    return names


def csv_columns(rows: list[dict[str, Any]]) -> list[str]:
    """The CSV header: fixed columns around one ``fraction(CLASS)`` column per class and the scorer's fields."""
    fractions = [schema.fraction_column(c) for c in _spread_keys(rows, schema.ROW_FRACTIONS)]
    fields = _spread_keys(rows, schema.ROW_SCORER_SUMMARY)
    return [*schema.SUMMARY_LEADING, *fractions, *fields, *schema.SUMMARY_TRAILING]


def summary_csv_text(rows: list[dict[str, Any]]) -> str:
    """The rows as CSV text (empty cells for missing values)."""
    import csv
    import io

    columns = csv_columns(rows)
    fraction_of = {schema.fraction_column(c): c for c in _spread_keys(rows, schema.ROW_FRACTIONS)}
    fields = set(_spread_keys(rows, schema.ROW_SCORER_SUMMARY))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        values = []
        for column in columns:
            if column in fraction_of:
                values.append(csv_cell((row.get(schema.ROW_FRACTIONS) or {}).get(fraction_of[column])))
            elif column in fields:
                values.append(csv_cell((row.get(schema.ROW_SCORER_SUMMARY) or {}).get(column)))
            else:
                values.append(csv_cell(row.get(column)))
        writer.writerow(values)
    return buffer.getvalue()


def count_statuses(rows: list[dict[str, Any]]) -> dict[str, int]:
    """Rows per status, every status present (0 when none)."""
    counts = Counter(row["status"] for row in rows)
    return {status: counts.get(status, 0) for status in STATUSES}


def write_summary(
    out_dir: Path,
    rows: list[dict[str, Any]],
    *,
    stem: str,
    run: dict[str, Any],
    settings: Any,
    model_sha: str,
) -> dict[str, Path]:
    """Write ``STEM.csv`` and ``STEM.json`` (atomically) into ``out_dir``.

    Args:
        out_dir: the batch output folder.
        rows: one per slide (sorted here by name).
        stem: "summary", or "summary-shard-I-of-N" for a shard.
        run: facts about this run (source, jobs, executor, counts of work done now, seconds).
        settings: the :class:`~wsi_her2.settings.ScoreSettings` used.
        model_sha: the model's hash.

    Returns:
        {"csv": path, "json": path}.
    """
    from wsi_her2.outputs.tiling import now_iso

    ordered = sorted(rows, key=lambda r: r["slide"])
    data = {
        "wsi_her2_version": __version__,
        "command": "batch",
        "created": now_iso(),
        "counts": count_statuses(ordered),
        "model": settings.model,
        "model_sha256": model_sha,
        "settings_fingerprint": settings.fingerprint(),
        "settings": settings.to_dict(),
        "run": run,
        "columns": csv_columns(ordered),
        schema.SUMMARY_ROWS: ordered,
    }
    csv_path = write_text(out_dir / f"{stem}.csv", summary_csv_text(ordered))
    json_path = write_json(out_dir / f"{stem}.json", data)
    return {"csv": csv_path, "json": json_path}
