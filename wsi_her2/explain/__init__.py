"""Explanations of HER2 calls: Grad-CAM per network stage for trained models, evidence for the DAB scorer.

``wsi-her2 explain CHECKPOINT IMAGE -o OUT`` calls :func:`explain`. A patch gets the predicted class
with probabilities and Grad-CAM at the last block of each stage (the source paper's Figs. 6-7); a
slide gets, after scoring (or from an existing score folder), the top-k tiles of each class with
their maps as galleries, and optionally a slide-wide Grad-CAM image (``gradcam.zarr``). The DAB
scorer is explained by its own evidence: DAB and membrane masks with cells coloured by class.

Only :mod:`wsi_her2.explain.gradcam` needs torch; it is imported when a trained model is used.
See ``docs/explain.md`` for how to read the figures and their limits.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from wsi_her2.errors import ConfigError
from wsi_her2.explain.patch import choose_mode, explain_patch
from wsi_her2.explain.result import Explanation
from wsi_her2.explain.slide import explain_slide
from wsi_her2.progress import ProgressCallback

MODES = ("auto", "patch", "slide")

__all__ = ["MODES", "Explanation", "choose_mode", "explain", "explain_patch", "explain_slide"]


def explain(
    model: str | Path,
    image: str | Path,
    out_dir: str | Path,
    *,
    mode: str = "auto",
    scores: str | Path | None = None,
    target: str | None = None,
    mpp: float | None = None,
    backend: str = "auto",
    device: str = "auto",
    progress: ProgressCallback | None = None,
    **slide_options: Any,
) -> Explanation:
    """Explain a patch or a slide (see :func:`explain_patch` and :func:`explain_slide`).

    Args:
        model: "dab" or a checkpoint folder / weight file.
        image: a patch (PNG, JPEG, TIFF) or a slide.
        out_dir: the output folder.
        mode: "patch", "slide", or "auto" (:func:`choose_mode`: slide when ``scores`` is given or
            the image is larger than two of the model's tiles).
        scores: an existing score folder of this slide and model (slide mode).
        target: the class to explain (default: predicted for a patch, every class for a slide).
        mpp: µm/px override.
        backend: image reader to force.
        device: "auto", "cpu", "cuda", ...
        progress: progress callback (slide mode).
        **slide_options: ``top_k``, ``cam_heatmap``, ``cam_cells``, ``settings``, ``batch_size``,
            ``workers`` of :func:`explain_slide`.

    Raises:
        ConfigError: an unknown mode, or slide options with patch mode.
    """
    if mode not in MODES:
        raise ConfigError(f"unknown mode {mode!r}", hint=f"use one of {', '.join(MODES)}")
    if mode == "auto":
        mode = choose_mode(model, image, mpp=mpp, backend=backend, scores=scores)
    if mode == "patch":
        if scores is not None:
            raise ConfigError("--scores is for slide mode", hint="leave out --mode patch, or --scores")
        if slide_options.get("cam_heatmap"):
            raise ConfigError("--cam-heatmap is for slide mode", hint="use --mode slide")
        return explain_patch(
            model, image, out_dir, target=target, mpp=mpp, backend=backend, device=device,
            settings=slide_options.get("settings"),
        )  # fmt: skip
    return explain_slide(
        model, image, out_dir, scores=scores, target=target, mpp=mpp, backend=backend, device=device,
        progress=progress, **slide_options,
    )  # fmt: skip
