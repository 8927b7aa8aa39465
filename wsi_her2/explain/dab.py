"""Explaining the weight-free DAB scorer: its own evidence, not Grad-CAM.

The DAB scorer has no network to take gradients of; what it counted is the explanation. For a tile
or a patch, :func:`~wsi_her2.models.dab.evidence.evidence_images` draws two images: the class image
(DAB-positive tissue cyan, each counted cell's nucleus outline and membrane ring in the colour of its
class, solid where the membrane is stained, cells the tumour gate left out grey) and the gate image
(nuclei green for tumour cells, magenta for the rest). Tiles of a scored slide are analysed at the
scorer's working resolution with the slide's stain vectors, stain level and membrane levels (from
the score report) and the slide's gate verdicts (from ``cells.npz``); a lone patch is analysed alone.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import cv2
import numpy as np

from wsi_her2.errors import ConfigError
from wsi_her2.her2 import CLASS_COLORS_RGB, SCORES_4
from wsi_her2.models.dab import DabConfig, StainVectors, estimate_stain_vectors
from wsi_her2.models.dab.classify import MembraneThresholds
from wsi_her2.models.dab.evidence import DAB_TINT_RGB, NOT_COUNTED_RGB, NOT_TUMOUR_RGB, TUMOUR_RGB, evidence_images
from wsi_her2.models.dab.intensity import StainIntensity, scaled_config
from wsi_her2.models.dab.scorer import DabScorer
from wsi_her2.models.dab.slide_cells import SlideCells
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
    """Legend entries of evidence images: the cell classes, the gate's colours and the DAB tint."""
    return [(f"tumour cell {c}", CLASS_COLORS_RGB[c]) for c in SCORES_4] + [
        ("not counted (not tumour)", NOT_COUNTED_RGB),
        ("gate: tumour cell", TUMOUR_RGB),
        ("gate: not tumour", NOT_TUMOUR_RGB),
        ("DAB above the 1+ level", DAB_TINT_RGB),
    ]


@dataclasses.dataclass(frozen=True)
class SlideDabSettings:
    """How a score report says the DAB scorer saw its slide.

    Attributes:
        cfg: the settings with the slide's stain level applied.
        stains: the slide's stain vectors.
        levels: the slide's membrane levels (None for a report without them).
    """

    cfg: DabConfig
    stains: StainVectors
    levels: MembraneThresholds | None


def dab_settings(report: dict[str, Any]) -> SlideDabSettings:
    """The DAB scorer's settings, stain vectors, stain level and membrane levels, as a score report recorded them."""
    card = report.get("model_card") or {}
    cfg = DabConfig.from_dict(card.get("config") or {})
    facts = report.get("model_facts") or {}
    intensity = facts.get("stain_intensity")
    if intensity:
        p90 = intensity.get("hematoxylin_p90_od")
        level = float("nan") if p90 is None else float(p90)
        cfg = scaled_config(cfg, StainIntensity(level, float(intensity["factor"]), str(intensity["source"])))
    summary = (report.get("result") or {}).get("scorer_summary") or {}
    levels = MembraneThresholds(**summary["membrane_levels"]) if summary.get("membrane_levels") else None
    vectors = facts.get("stain_vectors")
    if not vectors:
        return SlideDabSettings(cfg, default_stain_vectors(), levels)
    stains = StainVectors(
        hematoxylin=tuple(vectors["hematoxylin"]),  # type: ignore[arg-type]
        dab=tuple(vectors["dab"]),  # type: ignore[arg-type]
        source=str(vectors.get("source", "estimated")),
    )
    return SlideDabSettings(cfg, stains, levels)


def work_size(size_level0_px: int, mpp: float, cfg: DabConfig) -> int:
    """Side in pixels of a tile of ``size_level0_px`` at the scorer's working µm/px."""
    return max(8, round(size_level0_px * mpp / cfg.work_mpp))


def tile_evidence(
    reader: SlideReader,
    x: int,
    y: int,
    size: int,
    mpp: float,
    settings: SlideDabSettings,
    *,
    cells: SlideCells | None = None,
    tile_index: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """A tile at the working resolution, its class image and its gate image.

    The tile is read as the scorer read it, so its analysis finds the same cells in the same order
    as the slide's ``cells.npz``: those rows give the slide's gate verdicts (neighbours across tile
    borders counted). Where they do not line up (e.g. a slide scored with ``--roi``), the tile is
    gated on its own and the returned note says so.

    Returns:
        (tile, class image, gate image, where the gate verdicts came from).
    """
    out = work_size(size, mpp, settings.cfg)
    rgb = np.ascontiguousarray(read_tile(reader, x, y, size, size, out, out))
    work_mpp = size * mpp / out
    verdicts, source = None, "the tile alone (no cells.npz)"
    if cells is not None and tile_index is not None:
        rows = cells.columns["tile_index"] == tile_index
        verdicts, source = cells.columns["is_tumour"][rows], "the slide (cells.npz)"
    try:
        classes, gate, _ = evidence_images(rgb, settings.stains, settings.cfg, mpp=work_mpp, levels=settings.levels,
                                           is_tumour=verdicts)  # fmt: skip
    except ValueError:  # the rows do not line up with this tile's cells
        source = "the tile alone (its cells differ from cells.npz)"
        classes, gate, _ = evidence_images(rgb, settings.stains, settings.cfg, mpp=work_mpp, levels=settings.levels)
    return rgb, classes, gate, source


@dataclasses.dataclass
class PatchEvidence:
    """The DAB scorer's view of one patch.

    Attributes:
        image: the patch at the working resolution.
        evidence: its class image.
        gate: its tumour-gate image.
        result: tumour-cell counts per class, means, index and the patch's class (``DabTileResult.to_dict()``).
        stains: the stain vectors used.
        mpp: µm/px of ``image``.
    """

    image: np.ndarray
    evidence: np.ndarray
    gate: np.ndarray
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
    evidence, gate, analysis = evidence_images(image, stains, cfg, mpp=work_mpp)
    return PatchEvidence(image, evidence, gate, analysis.result.to_dict(), stains, work_mpp)
