"""Nuclei of a batch of tiles as torch tensor operations: ``cells._find_nuclei`` and the per-nucleus sums.

Cells are numbered across the whole batch (tile-major, then by the raster position of their seed),
so that one ``index_add`` / ``scatter_reduce`` over the batch gives every cell's sums at once.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F

# cells.py's own constants, so that the two paths cannot drift apart.
from wsi_her2.models.dab.cells import _CLOSE_UM, _CLUSTER_NUCLEI, _COMPACT_SIGMA_UM
from wsi_her2.models.dab.config import DabConfig
from wsi_her2.models.dab.torch_ops import (
    chamfer_nearest,
    connected_components,
    dilate_disk,
    dilate_mask,
    erode_disk,
    erode_mask,
    gaussian_blur,
    pyr_down,
    resize_linear,
)

# A distance standing for "no seed within the searched radius" (finite, so that resizing stays finite).
_FAR_PX = 1e6


@dataclasses.dataclass(frozen=True)
class Nuclei:
    """What :func:`find_nuclei` found on a batch of tiles.

    Attributes:
        seed_label: (N, H, W) int64 cell of the nearest seed, -1 where no seed is near.
        nucleus: (N, H, W) bool nucleus pixels.
        excluded: (N, H, W) bool brown-nucleus (compact DAB) pixels, kept out of the rings.
        seeds: (N, H, W) bool seed pixels.
        cell_tile: (K,) int64 tile of each cell.
    """

    seed_label: torch.Tensor
    nucleus: torch.Tensor
    excluded: torch.Tensor
    seeds: torch.Tensor
    cell_tile: torch.Tensor


def _background(img: torch.Tensor, sigma_px: float) -> torch.Tensor:
    """``cells._background``: the wide blur at a quarter of the resolution, resized back."""
    small = gaussian_blur(pyr_down(pyr_down(img)), sigma_px / 4)
    return resize_linear(small, (img.shape[1], img.shape[2]))


def _nearest_seed(seeds: torch.Tensor, reach_px: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``cells._nearest_seed`` (half resolution, scaled back) up to ``reach_px``: distance, cell, tile of cell.

    A seed's cell is its 8-connected plateau at half resolution (OpenCV's ``DIST_LABEL_CCOMP``).
    """
    n, h, w = seeds.shape
    half = F.max_pool2d(seeds.unsqueeze(1).to(torch.float32), 2, stride=2, ceil_mode=True).squeeze(1) > 0
    hh, wh = half.shape[1:]
    plateau = connected_components(half)
    # Exact to a margin past reach (the resize mixes neighbours up to 1.4 px apart at half resolution).
    dist, nearest = chamfer_nearest(half, math.ceil(reach_px / 2) + 3)
    plateau_flat = plateau.view(n, -1)
    offsets = torch.arange(n, device=seeds.device).view(n, 1, 1) * (hh * wh)
    root = torch.gather(plateau_flat, 1, nearest.clamp_min(0).view(n, -1)).view(n, hh, wh)
    root = torch.where(nearest >= 0, root, -1)
    roots = torch.unique(plateau[half] + offsets.expand(n, hh, wh)[half])  # sorted: tile-major, raster order
    cell_half = torch.where(root >= 0, torch.searchsorted(roots, root + offsets), -1)
    ys = torch.arange(h, device=seeds.device) // 2
    xs = torch.arange(w, device=seeds.device) // 2
    label = cell_half.index_select(1, ys).index_select(2, xs)  # INTER_NEAREST from half resolution
    dist = resize_linear(torch.where(torch.isfinite(dist), dist, _FAR_PX), (h, w)) * 2.0
    return dist, label, torch.div(roots, hh * wh, rounding_mode="floor")


def find_nuclei(
    h_od: torch.Tensor, dab_od: torch.Tensor, tissue: torch.Tensor, cfg: DabConfig, px: float
) -> Nuclei | None:
    """``cells._find_nuclei`` on (N, H, W) maps; None when no tile has a seed."""
    fine = gaussian_blur(h_od, cfg.nucleus_sigma_um * px)
    mid = gaussian_blur(h_od, cfg.seed_sigma_um * px)
    local_bg = _background(h_od, cfg.background_sigma_um * px)
    blob = mid - local_bg  # difference of Gaussians: nucleus-sized hematoxylin blobs
    peak_img = dilate_disk(blob, max(1, round(cfg.seed_radius_um * px)))
    seeds = (blob >= peak_img) & (blob >= cfg.nucleus_min_contrast) & (mid >= cfg.nucleus_min_od) & tissue
    if not bool(seeds.any()):
        return None
    reach = cfg.nucleus_max_radius_um * px
    dist_seed, seed_label, cell_tile = _nearest_seed(seeds, reach)
    n_cells = len(cell_tile)
    peak = torch.zeros(n_cells, dtype=blob.dtype, device=blob.device)
    peak.scatter_reduce_(0, seed_label[seeds], blob[seeds], "amax")
    near = dist_seed <= reach
    threshold = (cfg.nucleus_rel_threshold * peak)[seed_label.clamp_min(0)]
    nucleus = ((fine - local_bg) > threshold) & near
    close = max(1, round(_CLOSE_UM * px))
    nucleus = erode_mask(dilate_mask(nucleus, close), close) & near
    excluded = _brown_nuclei(dab_od, seeds, seed_label, nucleus, n_cells, cfg, px)
    nucleus |= excluded & near & (seed_label >= 0)
    return Nuclei(seed_label, nucleus, excluded, seeds, cell_tile)


def _brown_nuclei(
    dab_od: torch.Tensor,
    seeds: torch.Tensor,
    seed_label: torch.Tensor,
    nucleus: torch.Tensor,
    n_cells: int,
    cfg: DabConfig,
    px: float,
) -> torch.Tensor:
    """Compact DAB blobs that are brown nuclei (``_find_nuclei``'s exclusion mask)."""
    radius = round(cfg.dab_blob_radius_um * px)
    none = torch.zeros_like(nucleus)
    if radius < 1:
        return none
    smooth = gaussian_blur(dab_od, _COMPACT_SIGMA_UM * px)
    compact = dilate_disk(erode_disk(smooth, radius), radius) > cfg.nuclear_dab_od
    if not bool(compact.any()):
        return none
    n, h, w = compact.shape
    cc = connected_components(compact)
    offsets = torch.arange(n, device=cc.device).view(n, 1, 1) * (h * w)
    blobs, blob_of = torch.unique(cc[compact] + offsets.expand(n, h, w)[compact], return_inverse=True)
    blob_map = torch.full_like(cc, -1)
    blob_map[compact] = blob_of
    n_blobs = len(blobs)
    size = torch.bincount(blob_of, minlength=n_blobs)
    # Brown nuclei: mean DAB over the whole nucleus.
    lab = seed_label[nucleus]
    nuc_sum = torch.zeros(n_cells, dtype=torch.float64, device=cc.device).index_add_(0, lab, dab_od[nucleus].double())
    nuc_dab = nuc_sum / torch.bincount(lab, minlength=n_cells).clamp_min(1)
    on_blob = nucleus & compact
    blob_nuc = blob_map[on_blob]
    overlap = torch.bincount(blob_nuc, minlength=n_blobs)
    on_brown = torch.bincount(blob_nuc, weights=(nuc_dab[seed_label[on_blob]] >= cfg.nuclear_dab_od).double(),
                              minlength=n_blobs)  # fmt: skip
    seed_on = seeds & compact
    brown_seed = torch.bincount(blob_map[seed_on], weights=(dab_od[seed_on] >= cfg.nuclear_dab_od).double(),
                                minlength=n_blobs) > 0  # fmt: skip
    max_nucleus = cfg.nucleus_max_area_um2 * px * px
    nuclear = ((brown_seed | (on_brown > overlap / 2)) & (size <= _CLUSTER_NUCLEI * max_nucleus)) | (
        (overlap == 0) & (size <= max_nucleus)
    )
    return compact & nuclear[blob_map.clamp_min(0)]


@dataclasses.dataclass(frozen=True)
class NucleusStats:
    """Per cell (float64, (K,)): area (px), centroid, mean hematoxylin, elongation, and whether it is scored."""

    area: torch.Tensor
    cx: torch.Tensor
    cy: torch.Tensor
    h_mean: torch.Tensor
    elongation: torch.Tensor
    good: torch.Tensor


def nucleus_stats(found: Nuclei, h_od: torch.Tensor, cfg: DabConfig, px: float) -> NucleusStats:
    """Per-nucleus area, centroid, elongation and hematoxylin from the nucleus pixels (``measure_cells``)."""
    n, _, w = h_od.shape
    k = len(found.cell_tile)
    t, pix = torch.nonzero(found.nucleus.view(n, -1), as_tuple=True)
    lab = found.seed_label.view(n, -1)[t, pix]
    yf, xf = (pix // w).double(), (pix % w).double()

    def total(values: torch.Tensor) -> torch.Tensor:
        return torch.zeros(k, dtype=torch.float64, device=h_od.device).index_add_(0, lab, values)

    area = torch.bincount(lab, minlength=k).double()
    cx, cy = total(xf) / area, total(yf) / area
    h_mean = total(h_od.view(n, -1)[t, pix].double()) / area
    # Elongation from second moments: fibroblast and smooth-muscle nuclei are long and thin.
    sxx = total(xf * xf) / area - cx * cx
    syy = total(yf * yf) / area - cy * cy
    sxy = total(xf * yf) / area - cx * cy
    half_trace, root = (sxx + syy) / 2, torch.sqrt(((sxx - syy) / 2) ** 2 + sxy * sxy)
    elongation = torch.sqrt((half_trace + root) / torch.clamp(half_trace - root, min=1e-6))
    px2 = px * px
    good = (
        (area >= cfg.nucleus_min_area_um2 * px2)
        & (area <= cfg.nucleus_max_area_um2 * px2)
        & (elongation <= cfg.nucleus_max_elongation)
    )
    return NucleusStats(area, cx, cy, h_mean, elongation, good)
