"""Explaining the weight-free DAB scorer: its own evidence, not Grad-CAM.

The DAB scorer has no network to take gradients of; what it counted is the explanation. For a tile
or a patch, :func:`~wsi_her2.models.dab.render_evidence` draws the DAB-positive tissue (cyan), each
nucleus outline and membrane ring in the colour of the cell's class, solid where the membrane is
stained. Tiles are analysed at the scorer's working resolution with the slide's stain vectors
(from the score report) or, for a lone patch, vectors estimated from the patch.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import cv2
import numpy as np

from wsi_her2.errors import ConfigError
from wsi_her2.her2 import CLASS_COLORS_RGB, SCORES_4
from wsi_her2.models.dab import DabConfig, StainVectors, estimate_stain_vectors, render_evidence, score_tile
from wsi_her2.models.dab.evidence import DAB_TINT_RGB
from wsi_her2.models.dab.scorer import DabScorer
from wsi_her2.models.dab.stain import default_stain_vectors
from wsi_her2.slide import SlideReader, read_tile


def scorer_identity() -> dict[str, Any]:
    """The DAB scorer's identity, as its score reports record it."""
    return DabScorer().identity()


def check_dab_class(target: str | None) -> None:
    """Refuse a ``--class`` that is not one of the DAB scorer's (0, 1+, 2+, 3+).

    Raises:
        ConfigError: an unknown class.
    """
    if target is not None and target not in SCORES_4:
        raise ConfigError(
            f"--class {target!r} is not a class of the DAB scorer", hint=f"its classes are {', '.join(SCORES_4)}"
        )


def evidence_legend() -> list[tuple[str, tuple[int, int, int]]]:
    """Legend entries of evidence images: the cell classes and the DAB tint."""
    return [(f"cell {c}", CLASS_COLORS_RGB[c]) for c in SCORES_4] + [("DAB above the 1+ level", DAB_TINT_RGB)]


def dab_settings(report: dict[str, Any]) -> tuple[DabConfig, StainVectors]:
    """The DAB scorer's settings and the slide's stain vectors, as a score report recorded them."""
    card = report.get("model_card") or {}
    cfg = DabConfig.from_dict(card.get("config") or {})
    vectors = (report.get("model_facts") or {}).get("stain_vectors")
    if not vectors:
        return cfg, default_stain_vectors()
    stains = StainVectors(
        hematoxylin=tuple(vectors["hematoxylin"]),  # type: ignore[arg-type]
        dab=tuple(vectors["dab"]),  # type: ignore[arg-type]
        source=str(vectors.get("source", "estimated")),
    )
    return cfg, stains


def work_size(size_level0_px: int, mpp: float, cfg: DabConfig) -> int:
    """Side in pixels of a tile of ``size_level0_px`` at the scorer's working µm/px."""
    return max(8, round(size_level0_px * mpp / cfg.work_mpp))


def tile_evidence(
    reader: SlideReader, x: int, y: int, size: int, mpp: float, cfg: DabConfig, stains: StainVectors
) -> tuple[np.ndarray, np.ndarray]:
    """A tile at the working resolution and its evidence image."""
    out = work_size(size, mpp, cfg)
    rgb = np.ascontiguousarray(read_tile(reader, x, y, size, size, out, out))
    return rgb, render_evidence(rgb, stains, cfg, mpp=size * mpp / out)


@dataclasses.dataclass
class PatchEvidence:
    """The DAB scorer's view of one patch.

    Attributes:
        image: the patch at the working resolution.
        evidence: its evidence image.
        result: counts per class, means and the patch's class (``DabTileResult.to_dict()``).
        stains: the stain vectors used.
        mpp: µm/px of ``image``.
    """

    image: np.ndarray
    evidence: np.ndarray
    result: dict[str, float]
    stains: StainVectors
    mpp: float


def patch_evidence(rgb: np.ndarray, mpp: float, cfg: DabConfig | None = None) -> PatchEvidence:
    """Resize a patch to the scorer's µm/px, estimate its stain vectors, score and draw it."""
    cfg = cfg or DabConfig()
    scale = mpp / cfg.work_mpp
    image = np.ascontiguousarray(rgb[..., :3])
    if abs(scale - 1.0) > 0.01:
        size = (max(8, round(image.shape[1] * scale)), max(8, round(image.shape[0] * scale)))
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        image = cv2.resize(image, size, interpolation=interp)
    work_mpp = mpp * rgb.shape[1] / image.shape[1]
    stains = estimate_stain_vectors(image, None, cfg)
    result = score_tile(image, stains, cfg, mpp=work_mpp)
    evidence = render_evidence(image, stains, cfg, mpp=work_mpp)
    return PatchEvidence(image, evidence, result.to_dict(), stains, work_mpp)
