"""The outputs of ``wsi-her2 score``: heatmap.zarr, tiles.csv, predictions.geojson, overlay.png, report.json.

``report.json`` is written last: its presence means the folder is complete.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from wsi_her2._version import __version__
from wsi_her2.her2 import CLASS_COLORS_RGB
from wsi_her2.outputs.atomic import ensure_dir, write_json
from wsi_her2.outputs.geojson import write_tiles_geojson
from wsi_her2.outputs.heatmap import write_heatmap
from wsi_her2.outputs.images import write_image
from wsi_her2.outputs.overlay import draw_class_overlay
from wsi_her2.outputs.tile_table import grid_columns, write_csv_columns
from wsi_her2.outputs.tiling import now_iso
from wsi_her2.pipeline import SlideResult, slide_summary

HEATMAP = "heatmap.zarr"
TILES = "tiles.csv"
PREDICTIONS = "predictions.geojson"
OVERLAY = "overlay.png"
REPORT = "report.json"

# The DAB scorer's extra per-tile values, in table order.
DAB_COLUMNS = ("n_cells", "n_cells_0", "n_cells_1plus", "n_cells_2plus", "n_cells_3plus",
               "mean_membrane_dab_od", "mean_completeness", "dab_area_fraction")  # fmt: skip

CAVEATS = {
    "dab": "The DAB scorer counts every cell in the scored tissue; the ASCO/CAP guideline scores invasive "
    "tumour cells only. Outline the invasive tumour (e.g. in QuPath) and pass it with --roi. "
    "Not validated for clinical use.",
    "deep": "Models trained on BCI learn from patches labelled with their slide's score, not their own; "
    "tile-level maps show where the model sees evidence, not pathologist tile labels. "
    "Not validated for clinical use.",
}


def _hex(rgb: tuple[int, int, int] | list[int]) -> str:
    return "".join(f"{int(v):02X}" for v in rgb)


def _probability_columns(result: SlideResult) -> dict[str, str]:
    prefix = "fraction_cells" if result.model.get("kind") == "dab" else "p"
    return {c: f"{prefix}({c})" for c in result.predictions.classes}


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
        files["overlay"] = write_image(out / OVERLAY, overview[0])
    files["report"] = write_json(out / REPORT, build_report(result, files))
    return files


def _write_tile_outputs(result: SlideResult, out: Path) -> dict[str, Path]:
    preds = result.predictions
    grid = result.slide.grid
    classes = preds.classes
    dab = result.model.get("kind") == "dab"
    names = _probability_columns(result)
    probabilities = np.where(preds.scored[:, None], preds.probabilities, np.nan)
    predicted = np.where(preds.scored, preds.predicted, -1)
    files: dict[str, Path] = {}

    channels = [names[c] for c in classes] + ["predicted_class"]
    columns = [probabilities[:, i] for i in range(len(classes))] + [np.where(predicted >= 0, predicted, np.nan)]
    colors = [_hex(CLASS_COLORS_RGB.get(c, (128, 128, 128))) for c in classes] + ["FFFFFF"]
    windows: list[tuple[float, float]] = [(0.0, 1.0)] * len(classes) + [(0.0, float(len(classes) - 1))]
    if dab:
        n_cells = preds.measurements.get("n_cells", np.full(len(grid), np.nan))
        od = preds.measurements.get("mean_membrane_dab_od", np.full(len(grid), np.nan))
        channels += ["mean_membrane_dab_od", "n_cells"]
        columns += [np.where(preds.scored, od, np.nan), np.where(preds.scored, n_cells, np.nan)]
        colors += ["8B4513", "FFFFFF"]
        cells_max = float(np.nanmax(n_cells)) if np.isfinite(n_cells).any() else 1.0
        windows += [(0.0, 0.6), (0.0, max(cells_max, 1.0))]
    channels.append("tissue_fraction")
    columns.append(grid.tissue_fraction.astype(np.float32))
    colors.append("00A000")
    windows.append((0.0, 1.0))
    files["heatmap"] = write_heatmap(
        out / HEATMAP, grid, channels, np.stack(columns, axis=1),
        colors=colors, windows=windows, class_channels=range(len(classes)), predicted_channel=len(classes),
        name=f"HER2 heatmap of {Path(result.slide.info.path).name}",
        attrs={"model": result.model, "classes": list(classes), "slide": Path(result.slide.info.path).name},
    )  # fmt: skip

    table: dict[str, Any] = {
        **grid_columns(grid),
        "pixel_tissue_fraction": preds.measurements["pixel_tissue_fraction"],
        "blur_score": preds.measurements["blur_score"],
        "scored": preds.scored,
        "drop_reason": preds.drop_reason,
        "predicted_class": [classes[k] if k >= 0 else "" for k in predicted],
    }
    for i, c in enumerate(classes):
        table[names[c]] = probabilities[:, i]
    for key in DAB_COLUMNS if dab else ():
        if key in preds.measurements:
            table[key] = np.where(preds.scored, preds.measurements[key], np.nan)
    files["tiles"] = write_csv_columns(out / TILES, table)

    rows = np.flatnonzero(preds.scored)
    measurements = {names[c]: probabilities[rows, i] for i, c in enumerate(classes)}
    measurements["tissue_fraction"] = grid.tissue_fraction[rows]
    for key in DAB_COLUMNS if dab else ():
        if key in preds.measurements:
            measurements[key] = preds.measurements[key][rows]
    files["predictions"] = write_tiles_geojson(
        out / PREDICTIONS, grid.x[rows], grid.y[rows], grid.tile_size_px,
        [classes[k] for k in predicted[rows]], CLASS_COLORS_RGB, measurements,
    )  # fmt: skip

    if result.slide.overview is not None:
        image, sx, sy = result.slide.overview
        score = result.score
        title = f"HER2 {score.score} ({score.clinical_group}); rule {score.rule}"
        overlay = draw_class_overlay(
            image,
            sx,
            sy,
            grid.x,
            grid.y,
            grid.tile_size_px,
            classes,
            predicted,
            CLASS_COLORS_RGB,
            title=title,
        )
        files["overlay"] = write_image(out / OVERLAY, overlay)
    return files


def build_report(result: SlideResult, files: dict[str, Path]) -> dict[str, Any]:
    """The report: result, slide, model identity, every parameter, timings, files."""
    prepared = result.slide
    kind = result.model.get("kind", "deep")
    report: dict[str, Any] = {
        "wsi_her2_version": __version__,
        "command": "score",
        "created": now_iso(),
        "status": result.status,
        "coordinate_space": "level-0 pixels (origin top-left of the full-resolution image)",
        "slide": slide_summary(prepared),
    }
    if result.status == "done":
        report["result"] = result.score.to_dict()
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
            "runtime": result.runtime,
            "tissue": prepared.mask.summary(),
            "grid": prepared.grid.summary(),
            "roi_area_um2": prepared.roi_area_um2,
            "scored_tissue_area_um2": prepared.scored_area_um2,
            "config": result.config,
            "timings_s": {k: round(float(v), 4) for k, v in result.timings_s.items()},
            "caveats": [CAVEATS.get(kind, CAVEATS["deep"])],
            "files": {role: path.name for role, path in files.items()},
        }
    )
    return report
