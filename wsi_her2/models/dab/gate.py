"""The tumour-cell gate: which detected cells are invasive carcinoma cells, without trained weights.

The ASCO/CAP guideline counts the percentage of *invasive tumour cells* at each intensity, so
stromal, inflammatory and other non-tumour cells must leave the denominator. The gate looks only
at what the hematoxylin and the geometry show, never at the DAB (an unstained tumour cell must
stay in the denominator):

1. *Epithelial-like nucleus*: at least ``min_nucleus_area_um2`` (larger than a lymphocyte),
   at most ``max_elongation`` long for its width (not a fibroblast, smooth-muscle or endothelial
   spindle), and not much darker than the slide's typical epithelial-sized nucleus (dense
   chromatin: lymphocytes, plasma cells, fibroblasts; carcinoma nuclei are vesicular).
2. *Cohesive*: at least ``min_neighbours`` other epithelial-like nuclei within ``radius_um``,
   forming at least ``min_epithelial_share`` of all nuclei there: a nest or sheet of carcinoma
   cells, not a scattered stromal cell or a large cell inside cellular stroma.

Neighbours are counted over the whole slide at once (level-0 coordinates), so tile borders do not
thin the neighbourhoods; near the tissue edge the counts are scaled by the share of the
neighbourhood that is tissue. The gate cannot tell invasive carcinoma from in-situ carcinoma or
from normal glands: ``--roi`` remains the way to exclude those.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from wsi_her2.models.dab.gate_config import TumourGateConfig

# Raster rows processed at a time when counting neighbours (bounds memory on whole slides).
_BAND_ROWS = 2048
# Near the tissue edge a neighbourhood is partly glass; counts are scaled by its tissue share, but
# never by more than 1 / this (a cell on a thin strand is not made cohesive by scaling).
_MIN_TISSUE_SHARE = 0.4


@dataclasses.dataclass(frozen=True)
class TumourGate:
    """The gate's verdict and the evidence behind it, one entry per cell.

    Attributes:
        is_tumour: counted as an invasive tumour cell.
        epithelial_like: the nucleus alone looks epithelial (size, shape, chromatin).
        epithelial_neighbours: epithelial-like nuclei within ``radius_um`` (edge-corrected).
        epithelial_share: their share of all nuclei within ``radius_um`` (1 when there are none).
        reference_h_od: the slide's median hematoxylin OD over epithelial-sized nuclei (the
            darkness criterion's reference), NaN when there were none.
    """

    is_tumour: np.ndarray
    epithelial_like: np.ndarray
    epithelial_neighbours: np.ndarray
    epithelial_share: np.ndarray
    reference_h_od: float

    @property
    def n_tumour(self) -> int:
        """Number of cells counted as tumour."""
        return int(np.count_nonzero(self.is_tumour))


def count_neighbours(
    x_um: np.ndarray, y_um: np.ndarray, selected: np.ndarray, radius_um: float, cell_um: float
) -> np.ndarray:
    """For every cell, the number of *selected* cells within ``radius_um`` (itself excluded).

    Cells are binned on a raster of ``cell_um`` and the counts summed over a disk, band by band,
    so that memory stays bounded on a whole slide (millions of cells).

    Args:
        x_um: cell x positions in µm.
        y_um: cell y positions in µm.
        selected: bool per cell, the cells to count.
        radius_um: neighbourhood radius.
        cell_um: raster spacing (counts are exact to within about half of it).

    Returns:
        float32 counts, one per cell.
    """
    n = len(x_um)
    out = np.zeros(n, np.float32)
    if n == 0:
        return out
    gx = np.floor((x_um - x_um.min()) / cell_um).astype(np.int64)
    gy = np.floor((y_um - y_um.min()) / cell_um).astype(np.int64)
    r = max(1, round(radius_um / cell_um))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)).astype(np.float32)
    width = int(gx.max()) + 1
    height = int(gy.max()) + 1
    for top in range(0, height, _BAND_ROWS):
        bottom = min(height, top + _BAND_ROWS)
        lo, hi = max(0, top - r), min(height, bottom + r)  # the band plus the disk's reach
        in_raster = selected & (gy >= lo) & (gy < hi)
        raster = np.zeros((hi - lo, width), np.float32)
        np.add.at(raster, (gy[in_raster] - lo, gx[in_raster]), 1.0)
        counts = cv2.filter2D(raster, -1, kernel, borderType=cv2.BORDER_CONSTANT)
        rows = np.flatnonzero((gy >= top) & (gy < bottom))
        out[rows] = np.rint(counts[gy[rows] - lo, gx[rows]])  # filter2D may use the DFT: not exact
    out -= selected.astype(np.float32)  # a cell is not its own neighbour
    return np.maximum(out, 0.0)


def gate_tumour_cells(
    x_um: np.ndarray,
    y_um: np.ndarray,
    nucleus_area_um2: np.ndarray,
    elongation: np.ndarray,
    nucleus_h_od: np.ndarray,
    cfg: TumourGateConfig | None = None,
    *,
    tissue_share: np.ndarray | None = None,
) -> TumourGate:
    """Label each cell tumour or not from its nucleus and its neighbourhood.

    Args:
        x_um: nucleus centroid x in µm (any origin shared by all cells: level-0 px x µm/px).
        y_um: nucleus centroid y in µm.
        nucleus_area_um2: nucleus area.
        elongation: nucleus length over width.
        nucleus_h_od: mean hematoxylin OD over the nucleus.
        cfg: the gate's settings (defaults when None).
        tissue_share: per cell, the fraction of its ``radius_um`` neighbourhood that is tissue
            (None: all of it). Counts near the tissue edge are scaled up by it.

    Returns:
        The verdict per cell and the evidence.
    """
    cfg = cfg or TumourGateConfig()
    n = len(x_um)
    for name, arr in (
        ("y_um", y_um),
        ("nucleus_area_um2", nucleus_area_um2),
        ("elongation", elongation),
        ("nucleus_h_od", nucleus_h_od),
    ):
        if len(arr) != n:
            raise ValueError(f"{name} has {len(arr)} entries, x_um has {n}")
    if n == 0 or not cfg.enabled:
        ones = np.ones(n, bool)
        return TumourGate(ones, ones.copy(), np.zeros(n, np.float32), np.ones(n, np.float32), float("nan"))
    sized = (nucleus_area_um2 >= cfg.min_nucleus_area_um2) & (elongation <= cfg.max_elongation)
    reference = float(np.median(nucleus_h_od[sized])) if sized.any() else float("nan")
    epithelial = sized.copy()
    if cfg.max_relative_darkness > 0 and np.isfinite(reference):
        epithelial &= nucleus_h_od <= cfg.max_relative_darkness * reference
    all_cells = np.ones(n, bool)
    n_epithelial = count_neighbours(x_um, y_um, epithelial, cfg.radius_um, cfg.density_cell_um)
    n_all = count_neighbours(x_um, y_um, all_cells, cfg.radius_um, cfg.density_cell_um)
    share = np.where(n_all > 0, n_epithelial / np.maximum(n_all, 1.0), 1.0).astype(np.float32)
    if tissue_share is not None:
        if len(tissue_share) != n:
            raise ValueError(f"tissue_share has {len(tissue_share)} entries, x_um has {n}")
        n_epithelial = n_epithelial / np.clip(tissue_share, _MIN_TISSUE_SHARE, 1.0).astype(np.float32)
    tumour = epithelial & (n_epithelial >= cfg.min_neighbours) & (share >= cfg.min_epithelial_share)
    return TumourGate(tumour, epithelial, n_epithelial.astype(np.float32), share, reference)
