"""Explaining one patch (PNG, JPEG, TIFF): Grad-CAM per stage for a trained model, evidence for the DAB scorer.

Outputs, in the output folder:

* ``explanation.json``: probabilities, the predicted and explained class, the layers and their
  peak raw CAM values (trained model); cell counts, fractions and stain vectors (DAB scorer);
* ``input.png``: the patch as shown in the figures;
* ``cam_stage<N>.png``: the Grad-CAM overlay of each stage (trained model), or ``evidence.png``;
* ``panel.png``: one figure like the source paper's Figs. 6-7: the input, then one map per stage;
* ``cams.npz``: the raw CAMs at feature-map resolution, one array per stage (trained model).
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import numpy as np

from wsi_her2.errors import ConfigError
from wsi_her2.explain.figures import cam_overlay, panel_figure, shrink
from wsi_her2.explain.result import (
    CAMS,
    CAVEAT_DAB,
    CAVEAT_GRADCAM,
    EXPLANATION,
    INPUT,
    PANEL,
    Explanation,
    gradcam_method,
    report_head,
)
from wsi_her2.extras import require_matplotlib, require_torch
from wsi_her2.models import EVIDENCE, explanation_of, tile_geometry
from wsi_her2.outputs.atomic import ensure_dir, write_bytes, write_json
from wsi_her2.outputs.images import write_image
from wsi_her2.slide import SlideInfo, open_slide

# A patch larger than this is refused in patch mode (it is a slide or a region: use slide mode).
MAX_PATCH_PIXELS = 64_000_000
# Longest side of input.png and the overlays.
DISPLAY_PX = 1024
# Auto mode calls an image a slide when its longest side exceeds this many model tiles.
SLIDE_TILES = 2.0


def read_patch(path: str | Path, *, mpp: float | None = None, backend: str = "auto") -> tuple[np.ndarray, SlideInfo]:
    """The whole image as RGB uint8, with its facts.

    Raises:
        InputNotFoundError: the file does not exist.
        SlideReadError: it cannot be read.
        ConfigError: it is too large to be a patch.
    """
    reader = open_slide(path, mpp=mpp, backend=backend)  # type: ignore[arg-type]
    try:
        info = reader.info
        if info.width * info.height > MAX_PATCH_PIXELS:
            raise ConfigError(
                f"{path} is {info.width}x{info.height} px, too large to explain as one patch",
                hint="use --mode slide (tiles, top-k galleries) or crop the region first",
            )
        rgb = np.array(reader.read_region(0, 0, info.width, info.height, 0)[..., :3])
    finally:
        reader.close()
    return rgb, info


def tile_side_px(model: str | Path, info: SlideInfo) -> float:
    """The side of one scoring tile of ``model`` in this image's pixels (for choosing the mode)."""
    size_px, tile_mpp = tile_geometry(model)
    if tile_mpp is not None and info.has_mpp:
        return size_px * tile_mpp / info.mpp
    return float(size_px)


def choose_mode(
    model: str | Path,
    image: str | Path,
    *,
    mpp: float | None = None,
    backend: str = "auto",
    scores: str | Path | None = None,
) -> str:
    """The mode for an image: "slide" with a score folder or above two of the model's tiles, else "patch".

    Raises:
        InputNotFoundError, SlideReadError: the image cannot be opened.
        ModelError: the checkpoint's card cannot be read.
    """
    if scores is not None:
        return "slide"
    reader = open_slide(image, mpp=mpp, backend=backend)  # type: ignore[arg-type]
    try:
        info = reader.info
    finally:
        reader.close()
    side = max(info.width, info.height)
    return "slide" if side > SLIDE_TILES * tile_side_px(model, info) else "patch"


def _patch_notes(info: SlideInfo, card: Any) -> list[str]:
    notes = []
    w, h = info.width, info.height
    if max(w, h) > 2 * min(w, h):
        raise ConfigError(
            f"the patch is {w}x{h} px: squeezing it into the model's square input would distort it",
            hint="crop a square patch, or use --mode slide",
        )
    if w != h:
        notes.append(f"the {w}x{h} patch was resized to the model's square input, as scoring resizes tiles")
    if card.tile_mpp is not None and info.has_mpp:
        field_um, trained_um = max(w, h) * info.mpp, card.tile_size_px * card.tile_mpp
        if not 0.5 <= field_um / trained_um <= 2.0:
            notes.append(
                f"the patch covers {field_um:.0f} µm, the model's training tiles {trained_um:.0f} µm: "
                "its predictions and maps are less reliable at this scale"
            )
    elif not 0.5 <= max(w, h) / card.tile_size_px <= 2.0:
        notes.append(
            f"the patch is {max(w, h)} px, the model's training tiles {card.tile_size_px} px (its card gives no "
            "µm/px): its predictions and maps are less reliable at another scale"
        )
    return notes


def explain_patch(
    model: str | Path,
    image: str | Path,
    out_dir: str | Path,
    *,
    target: str | None = None,
    mpp: float | None = None,
    backend: str = "auto",
    device: str = "auto",
    explainer: Any = None,
    settings: Any = None,
) -> Explanation:
    """Explain one patch.

    Args:
        model: "dab" or a checkpoint folder / weight file.
        image: the patch.
        out_dir: the output folder.
        target: the class to explain (default: the predicted class); a trained model's only.
        mpp: µm/px of the patch (needed by the DAB scorer when the file does not say).
        backend: image reader to force.
        device: "auto", "cpu", "cuda", ...
        explainer: an already loaded :class:`~wsi_her2.explain.gradcam.GradCamExplainer`.
        settings: :class:`~wsi_her2.settings.ScoreSettings` whose DAB settings (and calibration) a DAB
            patch is scored with (default: the DAB scorer's defaults).

    Raises:
        InputNotFoundError: the checkpoint or image does not exist.
        ModelError: the checkpoint cannot be used.
        ConfigError: ``target`` is not a class of the model, or the patch is unusable.
        MppError: the DAB scorer needs the patch's µm/px.
        DeviceError: the device is unavailable.
    """
    require_matplotlib("the figures of `wsi-her2 explain` need")
    if explanation_of(model) == EVIDENCE:
        from wsi_her2.explain.dab import check_dab_class

        check_dab_class(target)
        return _explain_dab_patch(image, out_dir, mpp=mpp, backend=backend, target=target, settings=settings)
    require_torch("Grad-CAM of a trained model needs")
    from wsi_her2.explain.gradcam import load_explainer, normalise

    explainer = explainer or load_explainer(str(model), device)
    card = explainer.card
    target_index = explainer.class_index(target) if target is not None else None
    rgb, info = read_patch(image, mpp=mpp, backend=backend)
    notes = _patch_notes(info, card)
    out = ensure_dir(out_dir)
    batch = explainer.explain(rgb[None], None if target_index is None else [target_index])
    probabilities = batch.probabilities[0]
    predicted = card.classes[int(np.argmax(probabilities))]
    explained = card.classes[int(batch.targets[0, 0])]

    display = shrink(rgb, DISPLAY_PX)
    files: dict[str, Path] = {"input": write_image(out / INPUT, display)}
    overlays, titles, layers = [], [], []
    for layer, cams in zip(batch.layers, batch.cams, strict=True):
        raw = cams[0, 0]
        overlay = cam_overlay(display, normalise(raw))
        files[layer.label] = write_image(out / f"cam_{layer.label}.png", overlay)
        overlays.append(overlay)
        peak = float(raw.max())
        titles.append(
            f"{layer.label}: {layer.path.removeprefix('backbone.')}\n{raw.shape[0]}x{raw.shape[1]}, peak {peak:.3g}"
        )
        layers.append({"stage": layer.stage, "module": layer.path, "feature_size": list(raw.shape),
                       "peak_raw_cam": peak, "file": files[layer.label].name})  # fmt: skip
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **{layer.label: cams[0, 0] for layer, cams in zip(batch.layers, batch.cams)})
    files["cams"] = write_bytes(out / CAMS, buffer.getvalue())
    title = (
        f"{Path(image).name}: predicted {predicted} (p={probabilities.max():.2f}); "
        f"Grad-CAM for {explained} (p={probabilities[card.classes.index(explained)]:.2f})"
    )
    files["panel"] = panel_figure(out / PANEL, display, overlays, titles, title=title)
    summary: dict[str, Any] = {
        **report_head("patch", model),
        "image": {
            "path": str(image),
            "width": info.width,
            "height": info.height,
            "mpp": info.mpp if info.has_mpp else None,
        },
        "model": card.scorer_identity(),
        "input_size_px": card.input_size_px,
        "probabilities": {c: float(p) for c, p in zip(card.classes, probabilities, strict=True)},
        "predicted_class": predicted,
        "explained_class": explained,
        "method": gradcam_method(layers),
        "device": str(explainer.device),
        "timings_s": {"gradcam_s": round(batch.seconds, 4)},
        "notes": notes + list(explainer.notes),
        "caveats": [CAVEAT_GRADCAM],
    }
    summary["files"] = {role: path.name for role, path in files.items()} | {"explanation": EXPLANATION}
    files["explanation"] = write_json(out / EXPLANATION, summary)
    return Explanation("patch", out, summary, files)


def _explain_dab_patch(
    image: str | Path, out_dir: str | Path, *, mpp: float | None, backend: str, target: str | None, settings: Any
) -> Explanation:
    from wsi_her2.explain.dab import evidence_legend, patch_evidence, scorer_identity
    from wsi_her2.her2 import SCORES_4
    from wsi_her2.slide import require_mpp

    rgb, info = read_patch(image, mpp=mpp, backend=backend)
    patch_mpp = require_mpp(info)
    evidence = patch_evidence(rgb, patch_mpp, settings.dab if settings is not None else None)
    out = ensure_dir(out_dir)
    files: dict[str, Path] = {
        "input": write_image(out / INPUT, evidence.image),
        "evidence": write_image(out / "evidence.png", evidence.evidence),
        "gate": write_image(out / "gate.png", evidence.gate),
    }
    result = evidence.result
    tile_class = SCORES_4[int(result["tile_class"])]
    n, n_tumour = int(result["n_cells"]), int(result["n_tumour_cells"])
    title = f"{Path(image).name}: DAB scorer, {n_tumour} tumour cells of {n}, patch class {tile_class}"
    files["panel"] = panel_figure(
        out / PANEL, evidence.image, [evidence.evidence, evidence.gate],
        ["evidence: DAB, membranes, cell classes", "tumour gate: tumour (green) / not (magenta)"],
        title=title, image_title=f"input ({evidence.mpp:.2f} µm/px)", colorbar_label=None, legend=evidence_legend(),
        side_in=5.0,
    )  # fmt: skip
    fractions = {c: float(result[k]) for c, k in zip(SCORES_4, ("frac_0", "frac_1plus", "frac_2plus", "frac_3plus"))}
    summary: dict[str, Any] = {
        **report_head("patch", scorer_identity()["name"]),
        "image": {"path": str(image), "width": info.width, "height": info.height, "mpp": patch_mpp},
        "model": scorer_identity(),
        "work_mpp": evidence.mpp,
        "patch_class": tile_class,
        "cell_counts": {
            c: int(result[k])
            for c, k in zip(SCORES_4, ("n_cells_0", "n_cells_1plus", "n_cells_2plus", "n_cells_3plus"))
        },
        "cell_fractions": fractions,
        "measurements": {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in result.items()},
        "stain_vectors": evidence.stains.to_dict(),
        "calibration": getattr(settings, "calibration", None),
        "method": {"name": "DAB scorer evidence", "legend": {label: list(rgb) for label, rgb in evidence_legend()}},
        "notes": [] if target is None else [f"--class {target} does not change a DAB patch explanation"],
        "caveats": [CAVEAT_DAB],
    }
    summary["files"] = {role: path.name for role, path in files.items()} | {"explanation": EXPLANATION}
    files["explanation"] = write_json(out / EXPLANATION, summary)
    return Explanation("patch", out, summary, files)
