"""What ``explain`` returns and writes first: the result object, file names, shared report fields."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from wsi_her2._version import __version__

EXPLANATION = "explanation.json"
PANEL = "panel.png"
INPUT = "input.png"
CAMS = "cams.npz"

CAVEAT_GRADCAM = (
    "Grad-CAM is a coarse localisation of the evidence for a class (one value per feature-map cell: "
    "a 7x7 grid over the tile at the deepest stage of the paper's networks), not a segmentation; models "
    "trained on BCI learn from patches labelled with their slide's score, so a map shows where the model "
    "looks, not where a pathologist would. Not validated for clinical use."
)
CAVEAT_DAB = (
    "The DAB scorer's evidence is what it measured: DAB-positive pixels and each cell's membrane ring "
    "in the colour of its class. Not validated for clinical use."
)


@dataclasses.dataclass
class Explanation:
    """The outcome of ``explain``.

    Attributes:
        mode: "patch" or "slide".
        out_dir: the output folder.
        summary: the content of ``explanation.json``.
        files: the files written, by role.
    """

    mode: str
    out_dir: Path
    summary: dict[str, Any]
    files: dict[str, Path] = dataclasses.field(default_factory=dict)


def gradcam_method(layers: list[dict[str, Any]]) -> dict[str, Any]:
    """How the maps were made, for the report."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        package = f"grad-cam {version('grad-cam')}"
    except PackageNotFoundError:  # pragma: no cover - installed with the models extra
        package = "grad-cam"
    return {
        "name": "Grad-CAM",
        "implementation": f"pytorch-grad-cam ({package}): GradCAM hooks and channel weights",
        "target": "the class's logit (before softmax)",
        "values": "ReLU of the gradient-weighted activations; overlays scale each map to its own maximum",
        "layers": layers,
    }


def report_head(mode: str, model: str | Path) -> dict[str, Any]:
    """The first fields of every ``explanation.json``."""
    from wsi_her2.outputs.tiling import now_iso

    return {
        "wsi_her2_version": __version__,
        "command": "explain",
        "created": now_iso(),
        "mode": mode,
        "model_path": str(model),
        "coordinate_space": "level-0 pixels (origin top-left of the full-resolution image)",
    }
