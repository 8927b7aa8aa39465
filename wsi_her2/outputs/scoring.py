"""The outputs of ``wsi-her2 score``: heatmap.zarr, tiles.csv, predictions.geojson, overlay.png, report.json.

``report.json`` is written last: its presence means the folder is complete. File and column names
come from :mod:`wsi_her2.outputs.schema`; what differs between scorers (the per-class column name,
extra values and heatmap channels, extra files, the caveat) from the result's
:class:`~wsi_her2.outputs.schema.ScorerOutputs`.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from wsi_her2._version import __version__
from wsi_her2.her2 import CLASS_COLORS_RGB
from wsi_her2.outputs import schema
from wsi_her2.outputs.atomic import ensure_dir, write_bytes, write_json
from wsi_her2.outputs.geojson import write_tiles_geojson
from wsi_her2.outputs.heatmap import write_heatmap
from wsi_her2.outputs.images import write_image
from wsi_her2.outputs.overlay import draw_class_overlay
from wsi_her2.outputs.tile_table import write_csv_columns
from wsi_her2.outputs.tiling import now_iso
from wsi_her2.results import SlideResult


def _hex(rgb: tuple[int, int, int] | list[int]) -> str:
    return "".join(f"{int(v):02X}" for v in rgb)


def write_score_outputs(result: SlideResult, out_dir: str | Path) -> dict[str, Path]:
    """Write every output of a scored slide; the report last.

    Returns:
        The written files by role.
    """
    out = ensure_dir(out_dir)
    files: dict[str, Path] = {}
    if result.status == "done":
        files.update(_write_tile_outputs(result, out))
    overview = result.slide.overview
    if overview is not None and result.status != "done":
        files["overlay"] = write_image(out / schema.OVERLAY, overview[0])
    files["report"] = write_json(out / schema.REPORT, build_report(result, files))
    return files


def _write_tile_outputs(result: SlideResult, out: Path) -> dict[str, Path]:
    preds = result.predictions
    assert preds is not None and result.score is not None
    grid = result.slide.grid
    classes = preds.classes
    declared = result.outputs
    names = {c: declared.probability_column(c) for c in classes}
    probabilities = np.where(preds.scored[:, None], preds.probabilities, np.nan)
    predicted = np.where(preds.scored, preds.predicted, -1)
    missing = np.full(len(grid), np.nan)
    files: dict[str, Path] = {}

    channels = [names[c] for c in classes] + [schema.PREDICTED]
    columns = [probabilities[:, i] for i in range(len(classes))] + [np.where(predicted >= 0, predicted, np.nan)]
    colors = [_hex(CLASS_COLORS_RGB.get(c, (128, 128, 128))) for c in classes] + ["FFFFFF"]
    windows: list[tuple[float, float]] = [(0.0, 1.0)] * len(classes) + [(0.0, float(len(classes) - 1))]
    for channel in declared.heatmap_channels:
        values = preds.measurements.get(channel.key, missing)
        channels.append(channel.key)
        columns.append(np.where(preds.scored, values, np.nan))
        colors.append(channel.color)
        windows.append(channel.window_for(values))
    channels.append(schema.TISSUE_FRACTION)
    columns.append(grid.tissue_fraction.astype(np.float32))
    colors.append("00A000")
    windows.append((0.0, 1.0))
    files["heatmap"] = write_heatmap(
        out / schema.HEATMAP, grid, channels, np.stack(columns, axis=1),
        colors=colors, windows=windows, class_channels=range(len(classes)), predicted_channel=len(classes),
        name=f"HER2 heatmap of {Path(result.slide.info.path).name}",
        attrs={"model": result.model, "classes": list(classes), "slide": Path(result.slide.info.path).name},
    )  # fmt: skip

    extra = [c for c in declared.value_columns if c.key in preds.measurements]
    table: dict[str, Any] = {
        **schema.grid_columns(grid),
        schema.PIXEL_FRACTION: preds.measurements[schema.PIXEL_FRACTION],
        schema.BLUR_SCORE: preds.measurements[schema.BLUR_SCORE],
        schema.SCORED: preds.scored,
        schema.DROP_REASON: preds.drop_reason,
        schema.PREDICTED: [classes[k] if k >= 0 else "" for k in predicted],
    }
    for i, c in enumerate(classes):
        table[names[c]] = probabilities[:, i]
    for column in extra:
        table[column.key] = np.where(preds.scored, preds.measurements[column.key], np.nan)
    files["tiles"] = write_csv_columns(out / schema.TILES, table)

    rows = np.flatnonzero(preds.scored)
    measurements = {names[c]: probabilities[rows, i] for i, c in enumerate(classes)}
    measurements[schema.TISSUE_FRACTION] = grid.tissue_fraction[rows]
    for column in extra:
        if column.geojson:
            measurements[column.key] = preds.measurements[column.key][rows]
    files["predictions"] = write_tiles_geojson(
        out / schema.PREDICTIONS, grid.x[rows], grid.y[rows], grid.tile_size_px,
        [classes[k] for k in predicted[rows]], CLASS_COLORS_RGB, measurements,
    )  # fmt: skip

    if result.slide.overview is not None:
        image, sx, sy = result.slide.overview
        score = result.score
        title = f"HER2 {score.score} ({score.clinical_group}); rule {score.rule}"
        overlay = draw_class_overlay(
            image, sx, sy, grid.x, grid.y, grid.tile_size_px, classes, predicted, CLASS_COLORS_RGB, title=title
        )
        files["overlay"] = write_image(out / schema.OVERLAY, overlay)
    files.update(_write_scorer_files(result, out))
    return files


def _write_scorer_files(result: SlideResult, out: Path) -> dict[str, Path]:
    """The files the scorer declared, from its finishing step's tables (.npz arrays or .csv)."""
    files: dict[str, Path] = {}
    for name in result.outputs.files:
        table = result.tables.get(name)
        if table is None:
            raise ValueError(f"the scorer declared {name} but its finish() gave no table for it")
        if name.endswith(".npz"):
            buffer = io.BytesIO()
            np.savez_compressed(buffer, allow_pickle=False, **{k: np.asarray(v) for k, v in table.items()})
            files[Path(name).stem + "_npz"] = write_bytes(out / name, buffer.getvalue())
        else:
            files[Path(name).stem + "_csv"] = write_csv_columns(out / name, table)
    return files


def build_report(result: SlideResult, files: dict[str, Path]) -> dict[str, Any]:
    """The report: result, slide, model identity, what the scorer added, every parameter, timings, files."""
    prepared = result.slide
    report: dict[str, Any] = {
        "wsi_her2_version": __version__,
        "command": "score",
        "created": now_iso(),
        "status": result.status,
        "coordinate_space": schema.COORDINATE_SPACE,
        "slide": prepared.summary(),
    }
    if result.score is not None and result.predictions is not None:
        report["result"] = {**result.score.to_dict(), schema.RESULT_SCORER_SUMMARY: result.scorer_summary}
        report["tiles"] = {
            "on_tissue": len(prepared.grid),
            "scored": result.predictions.n_scored,
            "dropped": result.score.n_tiles_dropped,
        }
    else:
        report["result"] = None
        report["message"] = prepared.no_tissue
    report.update(
        {
            "model": result.model,
            "model_card": result.model_card,
            "model_facts": result.model_facts,
            schema.REPORT_CALIBRATION: result.calibration,
            schema.REPORT_SCORER_OUTPUTS: result.outputs.to_dict(list(result.model.get("classes") or ())),
            "runtime": result.runtime,
            "tissue": prepared.mask.summary(),
            "grid": prepared.grid.summary(),
            "roi_area_um2": prepared.roi_area_um2,
            "scored_tissue_area_um2": prepared.scored_area_um2,
            "config": result.config,
            "timings_s": {k: round(float(v), 4) for k, v in result.timings_s.items()},
            "caveats": [result.outputs.caveat] if result.outputs.caveat else [],
            "files": {role: path.name for role, path in files.items()},
        }
    )
    return report
