"""Explaining a scored slide: the top-k tiles of each class, their maps, and an optional slide-wide CAM.

A slide is scored once: an existing ``wsi-her2 score`` folder is read and never written (its
model and slide are checked); without one, the slide is scored first into ``OUT/score``. For
each class, the ``k`` scored tiles with the highest p(class) (trained model) or fraction of cells
of the class (DAB scorer) are read again and explained for that class.

Outputs, in the output folder:

* ``explanation.json``: the tiles of each class (position, ranking value, probabilities now,
  peak CAM per stage, files), the layers, settings, timings;
* ``gallery_<class>.png``: one row per tile: the tile, then its Grad-CAM at each stage (or its
  DAB evidence);
* ``tiles/<class>/tile-<id>.png`` and ``tile-<id>_stage<N>.png`` (or ``_evidence.png``);
* ``gradcam.zarr`` (``cam_heatmap=True``): the deepest stage's CAM of every scored tile, per class,
  in cells finer than a tile (:mod:`wsi_her2.explain.camheatmap`);
* ``score/``: the score folder, when the slide was scored here.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from wsi_her2.errors import ConfigError, NoTissueError, OutputError
from wsi_her2.explain.figures import cam_overlay, class_slug, gallery_figure
from wsi_her2.explain.result import (
    CAVEAT_DAB,
    CAVEAT_GRADCAM,
    EXPLANATION,
    Explanation,
    gradcam_method,
    report_head,
)
from wsi_her2.explain.scores import RankedTile, ScoreFolder, check_model, check_slide, read_score_folder, top_tiles
from wsi_her2.extras import require_matplotlib, require_torch
from wsi_her2.models import EVIDENCE, explanation_of
from wsi_her2.outputs.atomic import ensure_dir, write_json
from wsi_her2.outputs.images import write_image
from wsi_her2.progress import ProgressCallback, ProgressEvent, report
from wsi_her2.slide import SlideReader, open_slide, read_tile, require_mpp

SCORE_SUBDIR = "score"
TILES_SUBDIR = "tiles"
# Largest side of the tiles read for galleries and overlays (the network input is resized from it, as on a GPU).
DISPLAY_PX = 512


def explain_slide(
    model: str | Path,
    slide: str | Path,
    out_dir: str | Path,
    *,
    scores: str | Path | None = None,
    settings: Any = None,
    top_k: int = 8,
    target: str | None = None,
    cam_heatmap: bool = False,
    cam_cells: int = 4,
    mpp: float | None = None,
    backend: str = "auto",
    device: str = "auto",
    batch_size: int | None = None,
    workers: int = 0,
    explainer: Any = None,
    progress: ProgressCallback | None = None,
) -> Explanation:
    """Explain a slide's score with the top-k tiles of each class.

    Args:
        model: "dab" or a checkpoint folder / weight file (the one that scored the slide).
        slide: the slide (or a large image).
        out_dir: the output folder (not the score folder).
        scores: an existing ``wsi-her2 score`` folder of this slide and model; None scores here.
        settings: :class:`~wsi_her2.settings.ScoreSettings` for scoring here (default: the model's).
        top_k: tiles per class.
        target: explain only this class (default: every class).
        cam_heatmap: also write ``gradcam.zarr`` (trained models only).
        cam_cells: cells per tile stride along each axis in ``gradcam.zarr``.
        mpp: µm/px override of the slide.
        backend: slide reader to force.
        device: "auto", "cpu", "cuda", ...
        batch_size: tiles per Grad-CAM pass.
        workers: loader processes reading tiles for ``gradcam.zarr`` (0 = this process).
        explainer: an already loaded :class:`~wsi_her2.explain.gradcam.GradCamExplainer`.
        progress: progress callback.

    Raises:
        InputNotFoundError: the checkpoint, slide or score folder does not exist.
        ModelError: the checkpoint cannot be used, or the score folder is another model's.
        ConfigError: a bad option, or the score folder is another slide's.
        NoTissueError: the slide has no tissue to explain.
        OutputError: the output folder is the score folder, or cannot be written.
    """
    if top_k < 1:
        raise ConfigError(f"--top-k must be at least 1, got {top_k}")
    if cam_cells < 1:
        raise ConfigError(f"--cam-cells must be at least 1, got {cam_cells}")
    require_matplotlib("the figures of `wsi-her2 explain` need")
    evidence = explanation_of(model) == EVIDENCE  # the DAB scorer's own evidence, not Grad-CAM
    if evidence:
        from wsi_her2.explain.dab import check_dab_class, scorer_identity

        check_dab_class(target)
        if cam_heatmap:
            raise ConfigError(
                "--cam-heatmap needs a trained model: the DAB scorer has no Grad-CAM",
                hint="its per-tile measurements are already channels of heatmap.zarr in the score folder",
            )
    else:
        require_torch("Grad-CAM of a trained model needs")
        from wsi_her2.explain.gradcam import load_explainer

        explainer = explainer or load_explainer(str(model), device, batch_size=batch_size)
        if target is not None:
            explainer.class_index(target)
    out = ensure_dir(out_dir)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    if scores is None:
        folder = _score_here(model, slide, out / SCORE_SUBDIR, settings, mpp, device, progress)
        timings["score_s"] = time.perf_counter() - t0
    else:
        if out.resolve() == Path(scores).resolve():
            raise OutputError(
                f"the output folder {out} is the score folder", hint="write explanations to another folder (-o)"
            )
        folder = read_score_folder(scores)
    check_model(folder, scorer_identity() if evidence else explainer.card.scorer_identity())
    classes = [target] if target is not None else list(folder.classes)

    t0 = time.perf_counter()
    reader = open_slide(slide, mpp=mpp or folder.mpp, backend=backend)  # type: ignore[arg-type]
    info = reader.info
    try:
        notes = check_slide(folder, info)
        slide_mpp = require_mpp(reader.info)
        galleries: dict[str, Any] = {}
        files: dict[str, Path] = {}
        for i, name in enumerate(classes):
            report(progress, ProgressEvent("explain", i, len(classes), "classes", f"top {top_k} tiles of {name}"))
            if evidence:
                entry = _dab_gallery(reader, folder, name, top_k, out, slide_mpp)
            else:
                entry = _cam_gallery(explainer, reader, folder, name, top_k, out)
            galleries[name] = entry
            files[f"gallery_{name}"] = out / entry["gallery"]
        report(progress, ProgressEvent("explain", len(classes), len(classes), "classes"))
    finally:
        reader.close()
    timings["galleries_s"] = time.perf_counter() - t0

    heatmap = None
    if cam_heatmap:
        t0 = time.perf_counter()
        heatmap = _write_cam_heatmap(
            explainer, folder, slide, classes, cam_cells, out, mpp=mpp or folder.mpp, backend=backend,
            workers=workers, progress=progress,
        )  # fmt: skip
        files["gradcam"] = out / heatmap["file"]
        timings["cam_heatmap_s"] = time.perf_counter() - t0

    summary: dict[str, Any] = {
        **report_head("slide", model),
        "slide": {"path": str(slide), "mpp_used": slide_mpp, "width": info.width, "height": info.height},
        "scores": {
            "folder": str(folder.path),
            "reused": scores is not None,
            "score": folder.score,
            "rule": (folder.report.get("result") or {}).get("rule"),
        },
        "model": folder.model,
        "calibration": folder.calibration,
        "top_k": top_k,
        "classes": galleries,
        "cam_heatmap": heatmap,
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
        "notes": notes,
        "caveats": [CAVEAT_DAB if evidence else CAVEAT_GRADCAM],
    }
    if evidence:
        from wsi_her2.explain.dab import evidence_legend

        summary["method"] = {"name": "DAB scorer evidence", "ranked_by": "fraction of the tile's cells in the class",
                             "legend": {label: list(rgb) for label, rgb in evidence_legend()}}  # fmt: skip
    else:
        layers = [{"stage": layer.stage, "module": layer.path} for layer in explainer.layers]
        summary["method"] = {**gradcam_method(layers), "ranked_by": "p(class) in the score folder's tiles.csv"}
        summary["device"] = str(explainer.device)
        summary["notes"] = notes + list(explainer.notes)
    summary["files"] = {role: str(path.relative_to(out)) for role, path in files.items()} | {"explanation": EXPLANATION}
    files["explanation"] = write_json(out / EXPLANATION, summary)
    return Explanation("slide", out, summary, files)


def _score_here(
    model: str | Path,
    slide: str | Path,
    score_dir: Path,
    settings: Any,
    mpp: float | None,
    device: str,
    progress: ProgressCallback | None,
) -> ScoreFolder:
    from wsi_her2.config import InferenceConfig
    from wsi_her2.pipeline import run_score
    from wsi_her2.settings import ScoreSettings

    settings = settings or ScoreSettings(model=str(model), inference=InferenceConfig(device=device))
    if str(settings.model) != str(model):
        raise ConfigError(f"the score settings name the model {settings.model!r}, not {str(model)!r}")
    result = run_score(slide, score_dir, settings, mpp=mpp, progress=progress)
    if result.status != "done":
        raise NoTissueError(
            str(result.slide.no_tissue), hint=f"{result.slide.no_tissue_hint}; nothing to explain (see {score_dir})"
        )
    return read_score_folder(score_dir)


def _tile_label(tile: RankedTile, column: str) -> str:
    return f"tile {tile.tile_id} (x {tile.x}, y {tile.y})\n{column} {tile.value:.2f}, predicted {tile.predicted_class}"


def _cam_gallery(
    explainer: Any, reader: SlideReader, folder: ScoreFolder, name: str, k: int, out: Path
) -> dict[str, Any]:
    from wsi_her2.explain.gradcam import normalise

    slug = class_slug(name)
    tiles = top_tiles(folder, name, k)
    column = folder.probability_column(name)
    size = max(explainer.card.input_size_px, min(DISPLAY_PX, tiles[0].size if tiles else DISPLAY_PX))
    folder_out = ensure_dir(out / "tiles" / slug) if tiles else out
    rows, titles, described = [], [], []
    if tiles:
        images = np.stack([np.array(read_tile(reader, t.x, t.y, t.size, t.size, size, size)) for t in tiles])
        batch = explainer.explain(images, [explainer.class_index(name)])
        for i, tile in enumerate(tiles):
            stem = f"tile-{tile.tile_id:06d}"
            written = [write_image(folder_out / f"{stem}.png", images[i])]
            row, row_titles, peaks = [images[i]], [_tile_label(tile, column)], {}
            for layer, cams in zip(batch.layers, batch.cams, strict=True):
                overlay = cam_overlay(images[i], normalise(cams[i, 0]))
                written.append(write_image(folder_out / f"{stem}_{layer.label}.png", overlay))
                row.append(overlay)
                peaks[layer.label] = float(cams[i, 0].max())
                row_titles.append(f"{layer.label} (peak {peaks[layer.label]:.3g})")
            rows.append(row)
            titles.append(row_titles)
            now = {c: float(p) for c, p in zip(explainer.classes, batch.probabilities[i], strict=True)}
            described.append({**tile.to_dict(), "probabilities_now": now, "peak_raw_cam": peaks,
                              "files": [str(p.relative_to(out)) for p in written]})  # fmt: skip
    gallery = out / f"gallery_{slug}.png"
    title = f"{Path(str(folder.report['slide']['path'])).name}: top {len(tiles)} tiles by {column}; Grad-CAM for {name}"
    gallery_figure(gallery, rows, titles, title=title, colorbar_label="Grad-CAM (each map scaled to its maximum)")
    entry: dict[str, Any] = {"ranked_by": column, "gallery": gallery.name, "tiles": described}
    if not tiles or tiles[0].value < 0.5:
        entry["note"] = (f"no scored tile has {column} of 0.5 or more: these are the tiles nearest to {name}, "
                         "not tiles the model calls so")  # fmt: skip
    return entry


def _dab_gallery(
    reader: SlideReader, folder: ScoreFolder, name: str, k: int, out: Path, slide_mpp: float
) -> dict[str, Any]:
    from wsi_her2.explain.dab import dab_settings, evidence_legend, tile_evidence
    from wsi_her2.models.dab.slide_cells import SlideCells

    settings = dab_settings(folder.report)
    cells_file = folder.path / "cells.npz"
    cells = SlideCells.load(cells_file) if cells_file.exists() else None
    slug = class_slug(name)
    tiles = top_tiles(folder, name, k, extra_columns=tuple(c.key for c in folder.outputs.value_columns))
    folder_out = ensure_dir(out / "tiles" / slug) if tiles else out
    rows: list[list[np.ndarray]] = []
    titles: list[list[str]] = []
    described = []
    for tile in tiles:
        rgb, evidence, gate, gate_source = tile_evidence(
            reader, tile.x, tile.y, tile.size, slide_mpp, settings, cells=cells, tile_index=tile.tile_id
        )
        stem = f"tile-{tile.tile_id:06d}"
        written = [
            write_image(folder_out / f"{stem}.png", rgb),
            write_image(folder_out / f"{stem}_evidence.png", evidence),
            write_image(folder_out / f"{stem}_gate.png", gate),
        ]
        n_tumour = int(tile.extra.get("n_tumour_cells", tile.extra.get("n_cells", 0)))
        n_cells = int(tile.extra.get("n_cells", 0))
        label = (f"tile {tile.tile_id} (x {tile.x}, y {tile.y})\n"
                 f"{tile.value:.0%} of {n_tumour} tumour cells {name}; tile {tile.predicted_class}")  # fmt: skip
        rows.append([rgb, evidence, gate])
        titles.append([label, "evidence (counted cells by class)", f"tumour gate ({n_tumour} of {n_cells} cells)"])
        described.append({**tile.to_dict(), "gate_from": gate_source,
                          "files": [str(p.relative_to(out)) for p in written]})  # fmt: skip
    gallery = out / f"gallery_{slug}.png"
    title = (f"{Path(str(folder.report['slide']['path'])).name}: top {len(tiles)} tiles by fraction of {name} "
             f"tumour cells; DAB scorer evidence ({settings.stains.source} stain vectors)")  # fmt: skip
    gallery_figure(gallery, rows, titles, title=title, legend=evidence_legend(), side_in=3.2)
    return {"ranked_by": folder.probability_column(name), "gallery": gallery.name, "tiles": described}


def _write_cam_heatmap(
    explainer: Any,
    folder: ScoreFolder,
    slide: str | Path,
    classes: list[str],
    cells: int,
    out: Path,
    *,
    mpp: float | None,
    backend: str,
    workers: int,
    progress: ProgressCallback | None,
) -> dict[str, Any]:
    from wsi_her2.config import LoaderConfig
    from wsi_her2.explain.camheatmap import FILE, CamAccumulator, write_cam_heatmap
    from wsi_her2.tiling.loader import SlideSource, iter_tile_batches

    grid = folder.scored_grid()
    indices = [explainer.class_index(c) for c in classes]
    accumulator = CamAccumulator(grid, cells, len(classes))
    loader = LoaderConfig(output_size_px=explainer.card.input_size_px, batch_size=explainer.batch_size,
                          workers=workers, pixel_check=False)  # fmt: skip
    done, seconds = 0, 0.0
    report(progress, ProgressEvent("gradcam", 0, len(grid), "tiles", "Grad-CAM of every scored tile"))
    for batch in iter_tile_batches(SlideSource(str(slide), mpp, backend), grid, loader):
        if batch.images is None:  # pragma: no cover - images are asked for
            continue
        cams = explainer.explain(batch.images, indices, layers=[-1])
        seconds += cams.seconds
        for row, index in enumerate(batch.indices):
            accumulator.add(int(grid.x[index]), int(grid.y[index]), cams.cams[0][row])
        done += len(batch)
        report(progress, ProgressEvent("gradcam", done, len(grid), "tiles"))
    layer = explainer.layers[-1]
    channels = [f"gradcam({c})" for c in classes]
    path = write_cam_heatmap(
        out / FILE, accumulator, channels, classes,
        attrs={"layer": layer.path, "classes": classes, "model": folder.model,
               "slide": Path(str(slide)).name, "score_folder": str(folder.path)},
        name=f"Grad-CAM of {Path(str(slide)).name}",
    )  # fmt: skip
    return {
        "file": path.name,
        "layer": layer.path,
        "channels": [*channels, "coverage"],
        "cell_size_level0_px": accumulator.cell_px,
        "cells_per_tile": cells,
        "tiles": len(grid),
        "gradcam_seconds_per_tile": seconds / max(1, len(grid)),
    }
