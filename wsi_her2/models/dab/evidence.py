"""Evidence images for the DAB scorer: what it counted as DAB, membrane and each cell's class."""

from __future__ import annotations

import cv2
import numpy as np

from wsi_her2.her2 import CLASS_COLORS_RGB, SCORES_4
from wsi_her2.models.dab.config import DabConfig
from wsi_her2.models.dab.stain import StainVectors
from wsi_her2.models.dab.tile import analyse_tile

# DAB-positive pixels are tinted cyan: no class colour is near it, and brown on brown would not show.
DAB_TINT_RGB: tuple[int, int, int] = (0, 200, 220)
_CLASS_LUT = np.array([(0, 0, 0), *(CLASS_COLORS_RGB[s] for s in SCORES_4)], dtype=np.float32)


def render_evidence(rgb: np.ndarray, stains: StainVectors, cfg: DabConfig, *, mpp: float | None = None) -> np.ndarray:
    """Overlay the scorer's evidence on a tile (no legend: the caller adds one).

    DAB-positive tissue (above ``membrane_od_1plus``) is tinted cyan; each cell's nucleus is
    outlined and its membrane ring drawn in its class colour (QuPath's: 0 blue, 1+ yellow,
    2+ orange, 3+ red), solid where the ring's sector is stained and faint where it is not.

    Args:
        rgb: HxWx3 uint8 tile at about ``cfg.work_mpp``.
        stains: the slide's stain vectors.
        cfg: the scorer's settings.
        mpp: the tile's exact µm/px when it differs from ``cfg.work_mpp``.

    Returns:
        HxWx3 uint8 RGB image, the same size as ``rgb``.
    """
    _, cells, maps, dab_od, tissue = analyse_tile(rgb, stains, cfg, mpp=mpp, with_maps=True)
    assert maps is not None  # asked for with_maps
    out = rgb[..., :3].astype(np.float32) * 0.75 + 255.0 * 0.25  # faded, so that overlays stand out

    dab = (dab_od > cfg.membrane_od_1plus) & tissue
    out[dab] = out[dab] * 0.6 + np.asarray(DAB_TINT_RGB, np.float32) * 0.4

    # Class of every labelled pixel via a per-cell lookup (index 0 is "no cell").
    cell_class = np.concatenate([[-1], cells.cell_class.astype(np.int64)]) + 1
    ring_col = _CLASS_LUT[cell_class[maps.ring_label]]
    ring = maps.ring_label > 0
    faint = ring & ~maps.stained
    out[faint] = out[faint] * 0.85 + ring_col[faint] * 0.15
    out[maps.stained] = ring_col[maps.stained]

    nuc = maps.nucleus_label
    edge = (nuc > 0) & (cv2.erode(nuc.astype(np.float32), np.ones((3, 3), np.uint8)) != nuc)
    out[edge] = _CLASS_LUT[cell_class[nuc[edge]]]
    return np.clip(out, 0, 255).astype(np.uint8)
