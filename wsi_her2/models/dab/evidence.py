"""Evidence images for the DAB scorer: what it counted as DAB, membrane, tumour cell and each cell's class."""

from __future__ import annotations

import cv2
import numpy as np

from wsi_her2.her2 import CLASS_COLORS_RGB, SCORES_4
from wsi_her2.models.dab.classify import MembraneThresholds
from wsi_her2.models.dab.config import DabConfig
from wsi_her2.models.dab.stain import StainVectors
from wsi_her2.models.dab.tile import TileAnalysis, analyse_tile

# DAB-positive pixels are tinted cyan: no class colour is near it, and brown on brown would not show.
DAB_TINT_RGB: tuple[int, int, int] = (0, 200, 220)
# The tumour gate's colours: far from the class colours and from each other.
TUMOUR_RGB: tuple[int, int, int] = (0, 170, 0)
NOT_TUMOUR_RGB: tuple[int, int, int] = (200, 0, 200)
# Cells the gate left out are drawn in grey in the class image: not counted.
NOT_COUNTED_RGB: tuple[int, int, int] = (140, 140, 140)
_CLASS_LUT = np.array([(0, 0, 0), *(CLASS_COLORS_RGB[s] for s in SCORES_4), NOT_COUNTED_RGB], dtype=np.float32)


def _faded(rgb: np.ndarray) -> np.ndarray:
    return rgb[..., :3].astype(np.float32) * 0.75 + 255.0 * 0.25  # so that overlays stand out


def _edges(labels: np.ndarray) -> np.ndarray:
    return (labels > 0) & (cv2.erode(labels.astype(np.float32), np.ones((3, 3), np.uint8)) != labels)


def evidence_images(
    rgb: np.ndarray,
    stains: StainVectors,
    cfg: DabConfig,
    *,
    mpp: float | None = None,
    levels: MembraneThresholds | None = None,
    is_tumour: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, TileAnalysis]:
    """The class image and the gate image of a tile, and the analysis behind them.

    The class image tints DAB-positive tissue (above the 1+ level) cyan and draws each tumour
    cell's nucleus outline and membrane ring in its class colour (QuPath's: 0 blue, 1+ yellow,
    2+ orange, 3+ red), solid where a ring sector is stained and faint where it is not; cells the
    tumour gate left out are grey (not counted). The gate image fills each nucleus green (tumour)
    or magenta (not tumour).

    Args:
        rgb: HxWx3 uint8 tile at about ``cfg.work_mpp``.
        stains: the slide's stain vectors.
        cfg: the scorer's settings.
        mpp: the tile's exact µm/px when it differs from ``cfg.work_mpp``.
        levels: the slide's membrane levels (None: this tile's own background).
        is_tumour: the slide's gate verdict per cell of this tile's analysis (None: gate the tile alone).

    Returns:
        (class image, gate image, analysis); both images HxWx3 uint8 RGB, the size of ``rgb``.
    """
    analysis = analyse_tile(rgb, stains, cfg, mpp=mpp, levels=levels, with_maps=True)
    maps, result = analysis.maps, analysis.result
    assert maps is not None and result.cells is not None  # asked for with_maps
    tumour = analysis.gate.is_tumour if is_tumour is None else np.asarray(is_tumour, bool)
    if len(tumour) != len(result.cells):
        raise ValueError(f"is_tumour has {len(tumour)} entries, the tile has {len(result.cells)} cells")

    out = _faded(rgb)
    dab = (analysis.dab_od > result.levels.od_1plus) & analysis.tissue
    out[dab] = out[dab] * 0.6 + np.asarray(DAB_TINT_RGB, np.float32) * 0.4
    # Colour of every labelled pixel via a per-cell lookup (index 0 is "no cell", 5 "not counted").
    colour = np.where(tumour, result.cells.cell_class.astype(np.int64) + 1, 5)
    colour = np.concatenate([[0], colour])
    ring_col = _CLASS_LUT[colour[maps.ring_label]]
    ring = maps.ring_label > 0
    faint = ring & ~maps.stained
    out[faint] = out[faint] * 0.85 + ring_col[faint] * 0.15
    out[maps.stained] = ring_col[maps.stained]
    edge = _edges(maps.nucleus_label)
    out[edge] = _CLASS_LUT[colour[maps.nucleus_label[edge]]]

    gate_img = _faded(rgb)
    gate_lut = np.array([(0, 0, 0), NOT_TUMOUR_RGB, TUMOUR_RGB], np.float32)
    verdict = np.concatenate([[0], np.where(tumour, 2, 1)])
    nuc = maps.nucleus_label > 0
    gate_img[nuc] = gate_img[nuc] * 0.35 + gate_lut[verdict[maps.nucleus_label[nuc]]] * 0.65
    return _to_u8(out), _to_u8(gate_img), analysis


def _to_u8(img: np.ndarray) -> np.ndarray:
    return np.clip(img, 0, 255).astype(np.uint8)


def render_evidence(rgb: np.ndarray, stains: StainVectors, cfg: DabConfig, *, mpp: float | None = None) -> np.ndarray:
    """The class image of :func:`evidence_images` for a tile analysed alone."""
    return evidence_images(rgb, stains, cfg, mpp=mpp)[0]
