"""The DAB scorer's per-tile measurement on a batch of tiles as torch tensor operations (GPU or CPU).

:func:`measure_tiles_torch` is :func:`~wsi_her2.models.dab.tile.measure_tile` for N tiles at once:
the same stages (:mod:`~wsi_her2.models.dab.cells`), each a batched tensor operation that
reproduces its OpenCV call (:mod:`~wsi_her2.models.dab.torch_ops`), and per-cell sums, sector
maxima and histograms by ``index_add`` / ``scatter_reduce`` / ``bincount`` over cell labels that
are unique across the batch. It returns, per tile, exactly what ``measure_tile`` returns (same keys,
columns and dtypes, numpy on the host), so :func:`~wsi_her2.models.dab.slide_cells.finish_slide`
pools its outputs unchanged.

Use it when the scorer's device is CUDA: the loader delivers pixels (uint8 tiles at the scorer's
``work_mpp``, as ``DabScorer.output_size_px`` asks) instead of running
:class:`~wsi_her2.models.dab.tile.DabTileFunction` in its workers, and the batch goes to the GPU::

    tiles = torch.from_numpy(batch_rgb).to("cuda", non_blocking=True)  # (N, H, W, 3) uint8
    outputs = measure_tiles_torch(tiles, scorer.stains, scorer.cfg, mpp)
    # ... one dict per tile, as measure_tile's, for finish_slide

It does not resize: tiles must already be at ``mpp`` (``DabTileFunction`` resizes tiles that are
more than 10% off ``cfg.work_mpp``; do that on the GPU before calling, or deliver them at it), and
all tiles of a call share one shape (call once per shape for smaller edge tiles). The peak of the
working tensors is a few tens of MB per 512-px tile (about 25 MB measured on the CPU;
``benchmarks/bench_dab_gpu.py`` prints the CUDA peak per tile): split large batches.

**Agreement with the numpy path** (``tests/models/dab/test_dab_torch_measure.py`` on CPU tensors,
tolerances in ``tests/models/dab/agreement.py``; ``docs/dab-scorer.md``, "The scorer on the GPU").
Each stage reproduces its OpenCV call: blurs, pyramid and resize to float32 rounding (under 4e-7
OD), morphology, connected components and the chamfer distances exactly. Two things remain:
(a) float32 rounding in the unmixing and blurs, which flips a seed or a threshold where two values
tie within 1e-7; (b) ties between equidistant pixels in the two labelled distance transforms (a
Voronoi pixel between two seeds, a ring pixel between two nuclei), where OpenCV's sequential
two-pass scan picks one cell and this code the first in raster order. Both move a few pixels of
some cells (6% of the cells of the HER2-0 core differ in area, 1.5% by more than 1 µm²), rarely a
whole cell. Measured on the two real cores (0.5 µm/px, 512-px tiles, as ``score_image`` cuts
them) after ``finish_slide``:

============================  ===============  ================  =================
figure                        HER2-0 core      HER2-2+ core      tolerance tested
============================  ===============  ================  =================
worst tile's count change     0 cells          1 cell (0.46%)    2% + 1 cell
cells matched (≤ 2 px)        100%             99.97%            ≥ 99%
same class (matched cells)    100%             99.44%            ≥ 98% (≥ 97% per tile)
tumour-class fractions        equal            within 0.0029     within 0.01
membrane index                equal            within 0.07       within 2 points
slide score                   0 = 0            2+ = 2+           equal
============================  ===============  ================  =================

The synthetic tiles (``render_tile``, ``render_tissue``) agree exactly in counts and classes. The
tolerances leave 2-3x the measured disagreement, for other slides' ties; they are far inside what
would change a slide (one class step of 1% of the cells moves the index by 1 point).

The result is deterministic on CPU, and a tile's result does not depend on the batch it is in. On
CUDA, float64 sums by atomic adds may differ in the last bits between runs.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
import torch

from wsi_her2.models.dab.background import BIN_OD, N_BINS
from wsi_her2.models.dab.cells import _INTERIOR_UM
from wsi_her2.models.dab.config import DabConfig
from wsi_her2.models.dab.stain import _OD_LUT, StainVectors
from wsi_her2.models.dab.tile import BACKGROUND_KEY, CELL_COLUMNS, CELLS_KEY, DAB_HIST_KEY, SECTORS_KEY
from wsi_her2.models.dab.torch_cells import NucleusStats, find_nuclei, nucleus_stats
from wsi_her2.models.dab.torch_ops import chamfer_nearest, dilate_3x3, dilate_disk, dilate_mask, erode_disk, erode_mask
from wsi_her2.models.dab.torch_ops import gaussian_blur as blur


def deconvolve_torch(rgb: torch.Tensor, stains: StainVectors) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`~wsi_her2.models.dab.stain.deconvolve` of (N, H, W, 3) uint8: H OD, DAB OD (clipped), mean OD."""
    lut = torch.as_tensor(_OD_LUT, device=rgb.device)
    od = lut[rgb.long()]
    unmix = stains.matrix_inverse()
    third = float(np.float32(1.0 / 3.0))
    r, g, b = od.unbind(-1)

    def mix(c0: float, c1: float, c2: float) -> torch.Tensor:
        return r * float(c0) + g * float(c1) + b * float(c2)

    h_od = mix(*unmix[:, 0]).clamp_min_(0.0)
    dab_od = mix(*unmix[:, 1]).clamp_min_(0.0)
    return h_od, dab_od, mix(third, third, third)


def _histograms(values: torch.Tensor, tile: torch.Tensor, n_tiles: int) -> torch.Tensor:
    """Per tile, :func:`~wsi_her2.models.dab.background.line_histogram` of ``values`` (int64, (N, N_BINS))."""
    idx = torch.clamp((values.double() / BIN_OD).long(), 0, N_BINS - 1)
    return torch.bincount(tile * N_BINS + idx, minlength=n_tiles * N_BINS).view(n_tiles, N_BINS)


@dataclasses.dataclass(frozen=True)
class _Sectors:
    """Per kept cell: its index, sorted sector signals, partial and complete signals, mean membrane."""

    idx: torch.Tensor
    ordered: torch.Tensor
    partial: torch.Tensor
    complete: torch.Tensor
    membrane: torch.Tensor


def _quantile(ordered: torch.Tensor, n_present: torch.Tensor, fraction: float) -> torch.Tensor:
    k = torch.clamp(torch.ceil(fraction * n_present - 1e-6).long(), 1, ordered.shape[1])
    return torch.gather(ordered, 1, (k - 1).unsqueeze(1)).squeeze(1)


def _ring_sectors(
    dab_od: torch.Tensor,
    seed_label: torch.Tensor,
    nucleus: torch.Tensor,
    excluded: torch.Tensor,
    stats: NucleusStats,
    cfg: DabConfig,
    px: float,
) -> tuple[_Sectors, torch.Tensor]:
    """Ring, sectors and their line signal (``measure_cells``), and the line signal map."""
    n, _, w = dab_od.shape
    n_sec = cfg.n_sectors
    gap = cfg.ring_gap_um * px
    outer = gap + cfg.ring_width_um * px
    dist, nearest = chamfer_nearest(nucleus, math.floor(outer) + 1)
    ring = (dist >= max(gap, 1.0)) & (dist <= outer)
    ring &= ~dilate_mask(excluded, max(1, round(2 * gap)))
    t, pix = torch.nonzero(ring.view(n, -1), as_tuple=True)
    owner = seed_label.view(n, -1)[t, nearest.view(n, -1)[t, pix]]
    on_good = stats.good[owner]
    t, pix, owner = t[on_good], pix[on_good], owner[on_good]
    ry, rx = (pix // w).double(), (pix % w).double()

    dab_smooth = blur(dab_od, cfg.membrane_sigma_um * px)
    radius = max(1, int(cfg.membrane_max_width_um * px / 2))
    line = dab_smooth - dilate_disk(erode_disk(dab_smooth, radius), radius)
    dab_peak = dilate_3x3(line)
    angle = torch.atan2(ry - stats.cy[owner], rx - stats.cx[owner])
    sector = ((angle + math.pi) * (n_sec / (2 * math.pi))).long() % n_sec
    n_cells = len(stats.area)
    sec_max = torch.full((n_cells * n_sec,), -math.inf, dtype=torch.float32, device=dab_od.device)
    sec_max.scatter_reduce_(0, owner * n_sec + sector, dab_peak.view(n, -1)[t, pix], "amax")
    sec_max = sec_max.view(n_cells, n_sec)
    n_present = torch.isfinite(sec_max).sum(dim=1)

    keep = stats.good & (n_present >= max(3, n_sec // 4))
    idx = torch.nonzero(keep).squeeze(1)
    sig = sec_max[idx]
    npres = n_present[idx].to(torch.float32)
    ordered = torch.sort(sig, dim=1, descending=True).values  # absent sectors (-inf) last
    finite = torch.where(torch.isfinite(sig), sig, 0.0)
    sectors = _Sectors(
        idx=idx,
        ordered=ordered,
        partial=_quantile(ordered, npres, cfg.partial_fraction),
        complete=_quantile(ordered, npres, cfg.complete_fraction),
        membrane=finite.sum(dim=1) / npres,
    )
    return sectors, dab_peak


def measure_tiles_torch(
    tiles_uint8: torch.Tensor,
    stains: StainVectors,
    cfg: DabConfig,
    mpp: float,
    valid_masks: torch.Tensor | None = None,
) -> list[dict[str, float | np.ndarray]]:
    """Measure a batch of tiles as :func:`~wsi_her2.models.dab.tile.measure_tile` measures one.

    Args:
        tiles_uint8: (N, H, W, 3) or (N, H, W, 4) uint8 tiles on any device (alpha ignored).
        stains: the slide's stain vectors.
        cfg: the scorer's settings (after ``scaled_config``, as the tile function gets them).
        mpp: µm/px of the tiles (about ``cfg.work_mpp``; they are not resized here).
        valid_masks: (N, H, W) bool (tensor or array), or None; cells whose nucleus centroid is
            outside a tile's mask are left out, and so are its tissue pixels outside it from the
            DAB histogram. Pass an all-True mask for tiles without one.

    Returns:
        One dict per tile with ``measure_tile``'s keys: ``n_cells`` (float) and the arrays
        ``CELLS_KEY`` (float32, (n, len(CELL_COLUMNS))), ``SECTORS_KEY`` (float16,
        (n, cfg.n_sectors)), ``BACKGROUND_KEY`` and ``DAB_HIST_KEY`` (int64, (N_BINS,)), on the host.

    Raises:
        ValueError: the tiles are not (N, H, W, 3|4) uint8, a mask does not match them, or ``mpp``
            is not a positive number.
    """
    tiles = torch.as_tensor(tiles_uint8)
    if tiles.dtype != torch.uint8 or tiles.ndim != 4 or tiles.shape[3] not in (3, 4):
        raise ValueError(f"expected (N, H, W, 3) uint8 tiles, got shape {tuple(tiles.shape)} dtype {tiles.dtype}")
    if not (isinstance(mpp, (int, float)) and math.isfinite(mpp) and mpp > 0):
        raise ValueError(f"mpp must be a positive number, got {mpp!r}")
    n, h, w = tiles.shape[:3]
    region = None
    if valid_masks is not None:
        region = torch.as_tensor(valid_masks, device=tiles.device).to(torch.bool)
        if tuple(region.shape) != (n, h, w):
            raise ValueError(f"valid_masks shape {tuple(region.shape)} differs from the tiles' {(n, h, w)}")
    if n == 0:
        return []
    with torch.no_grad():
        return _measure(tiles[..., :3], stains, cfg, float(mpp), region)


def measure_tile_list(
    tiles: Sequence[np.ndarray],
    stains: StainVectors,
    cfg: DabConfig,
    mpp: float,
    *,
    device: str | torch.device = "cpu",
    batch_tiles: int = 64,
) -> list[dict[str, float | np.ndarray]]:
    """:func:`measure_tiles_torch` over host tiles of one shape, ``batch_tiles`` at a time on ``device``.

    The ``measure_tiles`` hook of :func:`~wsi_her2.models.dab.slide_cells.score_image`.
    """
    out: list[dict[str, float | np.ndarray]] = []
    for start in range(0, len(tiles), batch_tiles):
        batch = torch.from_numpy(np.stack(tiles[start : start + batch_tiles])).to(device)
        out.extend(measure_tiles_torch(batch, stains, cfg, mpp))
    return out


def _measure(
    rgb: torch.Tensor, stains: StainVectors, cfg: DabConfig, mpp: float, region: torch.Tensor | None
) -> list[dict[str, float | np.ndarray]]:
    n, h, w = rgb.shape[:3]
    px = 1.0 / mpp
    h_od, dab_od, mean_od = deconvolve_torch(rgb, stains)
    tissue = mean_od > cfg.tissue_min_od
    counted = tissue if region is None else tissue & region
    tile_of_pixel = torch.arange(n, device=rgb.device).view(n, 1, 1).expand(n, h, w)
    dab_hist = _histograms(dab_od[counted], tile_of_pixel[counted], n)

    found = find_nuclei(h_od, dab_od, tissue, cfg, px)
    n_sec = cfg.n_sectors
    if found is None:
        zero = torch.zeros((n, N_BINS), dtype=torch.int64)
        return _split(n, torch.zeros(0, dtype=torch.int64), torch.zeros((0, len(CELL_COLUMNS))),
                      torch.zeros((0, n_sec)), zero, dab_hist, n_sec)  # fmt: skip
    stats = nucleus_stats(found, h_od, cfg, px)
    sectors, dab_peak = _ring_sectors(dab_od, found.seed_label, found.nucleus, found.excluded, stats, cfg, px)

    # The background: the line signal inside blue nuclei, away from their edges.
    interior = erode_mask(found.nucleus & ~found.excluded, max(1, round(_INTERIOR_UM * px)))
    background_hist = _histograms(dab_peak[interior], tile_of_pixel[interior], n)

    idx = sectors.idx
    x_px, y_px = stats.cx[idx].to(torch.float32), stats.cy[idx].to(torch.float32)
    tile = found.cell_tile[idx]
    if region is not None:
        xi = torch.clamp(torch.round(x_px).long(), 0, w - 1)
        yi = torch.clamp(torch.round(y_px).long(), 0, h - 1)
        inside = region[tile, yi, xi]
        idx, tile, x_px, y_px = idx[inside], tile[inside], x_px[inside], y_px[inside]
        sectors = _Sectors(*(getattr(sectors, f.name)[inside] for f in dataclasses.fields(_Sectors)))
    packed = torch.stack(
        [
            x_px * mpp,
            y_px * mpp,
            (stats.area[idx] / (px * px)).to(torch.float32),
            stats.elongation[idx].to(torch.float32),
            stats.h_mean[idx].to(torch.float32),
            sectors.membrane,
            sectors.partial,
            sectors.complete,
        ],
        dim=1,
    ).to(torch.float32)
    ordered = torch.where(torch.isfinite(sectors.ordered), sectors.ordered, math.nan)
    return _split(n, tile, packed, ordered, background_hist, dab_hist, n_sec)


def _split(
    n: int,
    tile: torch.Tensor,
    packed: torch.Tensor,
    ordered: torch.Tensor,
    background_hist: torch.Tensor,
    dab_hist: torch.Tensor,
    n_sec: int,
) -> list[dict[str, float | np.ndarray]]:
    """Per-tile dicts from the batch's cell rows (tile-major order), copied to the host once."""
    counts = torch.bincount(tile.cpu(), minlength=n).tolist()
    packed_np = packed.cpu().numpy().astype(np.float32)
    sectors_np = ordered.to(torch.float16).cpu().numpy().reshape(-1, n_sec)
    bg_np, dab_np = background_hist.cpu().numpy(), dab_hist.cpu().numpy()
    bounds = np.cumsum([0, *counts])
    return [
        {
            "n_cells": float(counts[i]),
            CELLS_KEY: packed_np[bounds[i] : bounds[i + 1]],
            SECTORS_KEY: sectors_np[bounds[i] : bounds[i + 1]],
            BACKGROUND_KEY: bg_np[i].astype(np.int64),
            DAB_HIST_KEY: dab_np[i].astype(np.int64),
        }
        for i in range(n)
    ]
