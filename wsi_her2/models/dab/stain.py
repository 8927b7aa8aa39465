"""Hematoxylin-DAB colour deconvolution in base-10 optical density, with per-slide stain vectors.

Ruifrok & Johnston (Anal. Quant. Cytol. Histol. 2001): each stain has a unit optical-density
vector in (R, G, B); a pixel's OD vector is their sum weighted by the amounts of stain. Inverting
the 3x3 matrix (hematoxylin, DAB, residual) gives each stain's OD. Everything here is base-10 OD
(``-log10(I / 255)``), the unit QuPath reports; scikit-image's ``rgb2hed`` returns natural-log
values divided by ``log(1e-6)`` (about OD/6), which is why it is not used.

The vectors are estimated per slide with Macenko's method (Macenko et al., ISBI 2009) restricted
to two stains: the plane of the two main directions of the tissue's OD vectors, and the two
extreme angles in that plane. The estimate is rejected in favour of the standard vectors when it
is implausible: too little DAB to have a colour (a HER2-0 slide), vectors far from hematoxylin's
and DAB's usual colours, or two vectors too close to separate.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from wsi_her2.models.dab.config import DabConfig

# Ruifrok & Johnston's H-DAB vectors, as QuPath ships them (normalised below).
_DEFAULT_H = (0.651, 0.701, 0.290)
_DEFAULT_DAB = (0.269, 0.568, 0.778)

# OD of every 8-bit intensity; 0 is clipped to 1 so that black pixels stay finite (OD 2.4).
_OD_LUT = (-np.log10(np.maximum(np.arange(256, dtype=np.float64), 1.0) / 255.0)).astype(np.float32)

# Pixels with less total OD than this are too pale to carry a stain colour (Macenko's beta).
_ESTIMATE_MIN_OD = 0.15
# DAB OD (standard vectors) from which a pixel counts as DAB evidence for the estimate.
_ESTIMATE_DAB_OD = 0.15
# Macenko's robust extremes: the 1st and 99th percentile angles.
_ESTIMATE_PERCENTILE = 1.0
_ESTIMATE_MAX_PIXELS = 250_000


def _unit(v: Any) -> np.ndarray:
    arr = np.asarray(v, dtype=np.float64)
    return arr / np.linalg.norm(arr)


def _angle_deg(a: np.ndarray, b: np.ndarray) -> float:
    return math.degrees(math.acos(float(np.clip(np.dot(_unit(a), _unit(b)), -1.0, 1.0))))


@dataclasses.dataclass(frozen=True)
class StainVectors:
    """Unit optical-density vectors of hematoxylin and DAB, in (R, G, B).

    Attributes:
        hematoxylin: hematoxylin's unit OD vector.
        dab: DAB's unit OD vector.
        source: "estimated", "default", or "default (estimate rejected: <why>)".
    """

    hematoxylin: tuple[float, float, float]
    dab: tuple[float, float, float]
    source: str = "default"

    def __post_init__(self) -> None:
        for name in ("hematoxylin", "dab"):
            vec = np.asarray(getattr(self, name), dtype=np.float64)
            if vec.shape != (3,) or not np.all(np.isfinite(vec)) or np.linalg.norm(vec) == 0:
                raise ValueError(f"{name} must be 3 finite numbers, not all zero; got {vec.tolist()!r}")
            object.__setattr__(self, name, tuple(float(x) for x in _unit(vec)))
        if _angle_deg(np.asarray(self.hematoxylin), np.asarray(self.dab)) < 1.0:
            raise ValueError("hematoxylin and DAB vectors are parallel: the stains cannot be separated")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready values (vectors as lists)."""
        return {"hematoxylin": list(self.hematoxylin), "dab": list(self.dab), "source": self.source}

    def matrix_inverse(self) -> np.ndarray:
        """The 3x3 float32 matrix that turns OD rows (R, G, B) into (H, DAB, residual) amounts."""
        h, d = _unit(self.hematoxylin), _unit(self.dab)
        residual = _unit(np.cross(h, d))
        return np.linalg.inv(np.stack([h, d, residual])).astype(np.float32)


def default_stain_vectors() -> StainVectors:
    """Ruifrok & Johnston's standard hematoxylin and DAB vectors."""
    return StainVectors(hematoxylin=_DEFAULT_H, dab=_DEFAULT_DAB, source="default")


def optical_density(rgb: np.ndarray) -> np.ndarray:
    """Base-10 optical density of an RGB(A) uint8 image (HxWx3 float32; alpha ignored)."""
    check_rgb(rgb)
    return _OD_LUT[rgb[..., :3]]


def separate_stains(rgb: np.ndarray, stains: StainVectors) -> tuple[np.ndarray, np.ndarray]:
    """Colour deconvolution into hematoxylin and DAB optical density.

    Args:
        rgb: HxWx3 uint8 image.
        stains: the stain vectors to unmix with.

    Returns:
        (hematoxylin_od, dab_od): float32 HxW base-10 OD, negatives (noise) clipped to 0.
    """
    od = optical_density(rgb)
    conc = od.reshape(-1, 3) @ stains.matrix_inverse()[:, :2]
    np.maximum(conc, 0.0, out=conc)
    h, w = rgb.shape[:2]
    return (
        np.ascontiguousarray(conc[:, 0]).reshape(h, w),
        np.ascontiguousarray(conc[:, 1]).reshape(h, w),
    )


def deconvolve(rgb: np.ndarray, stains: StainVectors) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hematoxylin OD, DAB OD (negatives clipped) and mean RGB OD in one pass (float32 HxW each)."""
    od = optical_density(rgb)
    unmix = np.empty((3, 3), dtype=np.float32)
    unmix[:, :2] = stains.matrix_inverse()[:, :2]
    unmix[:, 2] = 1.0 / 3.0
    out = od.reshape(-1, 3) @ unmix
    h, w = rgb.shape[:2]
    h_od = np.maximum(out[:, 0], 0.0).reshape(h, w)
    dab_od = np.maximum(out[:, 1], 0.0).reshape(h, w)
    return h_od, dab_od, np.ascontiguousarray(out[:, 2]).reshape(h, w)


def estimate_stain_vectors(
    rgb: np.ndarray, tissue_mask: np.ndarray | None = None, cfg: DabConfig | None = None
) -> StainVectors:
    """Estimate a slide's own hematoxylin and DAB vectors from its tissue (Macenko, two stains).

    Args:
        rgb: HxWx3 uint8, a slide thumbnail at a few µm/px or a tile.
        tissue_mask: HxW bool, True on tissue; None uses every pixel dark enough to be stained.
        cfg: plausibility limits; the defaults when None.

    Returns:
        The estimated vectors (``source="estimated"``), or the standard ones with
        ``source="default (estimate rejected: <why>)"`` when the estimate is implausible.
    """
    cfg = cfg or DabConfig()
    od = optical_density(rgb).reshape(-1, 3).astype(np.float64)
    keep = (od.sum(axis=1) > _ESTIMATE_MIN_OD * math.sqrt(3)) & (od.min(axis=1) > 0)
    if tissue_mask is not None:
        check_mask(tissue_mask, rgb, "tissue_mask")
        keep &= tissue_mask.reshape(-1).astype(bool)
    od = od[keep]
    if len(od) > _ESTIMATE_MAX_PIXELS:  # a regular subsample: deterministic and plenty for 2 vectors
        od = od[:: math.ceil(len(od) / _ESTIMATE_MAX_PIXELS)]
    if len(od) < 500:
        return _rejected(f"only {len(od)} stained tissue pixels")
    default = default_stain_vectors()
    dab_fraction = float(np.mean((od @ default.matrix_inverse().astype(np.float64))[:, 1] > _ESTIMATE_DAB_OD))
    if dab_fraction < cfg.estimate_min_dab_fraction:
        pct = 100 * dab_fraction
        return _rejected(f"too little DAB to estimate its colour ({pct:.1f}% of tissue pixels)")

    _, eigvecs = np.linalg.eigh(np.cov(od.T))
    plane = eigvecs[:, [2, 1]]  # the two main directions
    plane *= np.where(plane.sum(axis=0) < 0, -1.0, 1.0)  # point into positive OD
    proj = od @ plane
    phi = np.arctan2(proj[:, 1], proj[:, 0])
    lo, hi = np.percentile(phi, [_ESTIMATE_PERCENTILE, 100.0 - _ESTIMATE_PERCENTILE])
    v1 = _unit(plane @ np.array([math.cos(lo), math.sin(lo)]))
    v2 = _unit(plane @ np.array([math.cos(hi), math.sin(hi)]))
    ref_h, ref_d = np.asarray(default.hematoxylin), np.asarray(default.dab)
    # The vector nearer hematoxylin than DAB is hematoxylin.
    v1_is_h = np.dot(v1, ref_h) - np.dot(v1, ref_d) >= np.dot(v2, ref_h) - np.dot(v2, ref_d)
    h, d = (v1, v2) if v1_is_h else (v2, v1)
    if np.any(h < 0) or np.any(d < 0):
        return _rejected("a vector has negative optical density")
    h_angle, d_angle, separation = _angle_deg(h, ref_h), _angle_deg(d, ref_d), _angle_deg(h, d)
    if h_angle > cfg.estimate_max_angle_deg:
        return _rejected(f"hematoxylin {h_angle:.0f}° from the standard colour")
    if d_angle > cfg.estimate_max_angle_deg:
        return _rejected(f"DAB {d_angle:.0f}° from the standard colour")
    if separation < cfg.estimate_min_separation_deg:
        return _rejected(f"hematoxylin and DAB only {separation:.0f}° apart")
    return StainVectors(hematoxylin=tuple(h), dab=tuple(d), source="estimated")  # type: ignore[arg-type]


def _rejected(why: str) -> StainVectors:
    default = default_stain_vectors()
    return dataclasses.replace(default, source=f"default (estimate rejected: {why})")


def check_rgb(rgb: np.ndarray) -> None:
    """Raise ValueError unless ``rgb`` is an HxWx3 (or HxWx4) uint8 array."""
    ok = isinstance(rgb, np.ndarray) and rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] in (3, 4)
    if not ok:
        shape, dtype = getattr(rgb, "shape", None), getattr(rgb, "dtype", None)
        raise ValueError(f"expected an HxWx3 uint8 RGB image, got shape {shape} dtype {dtype}")


def check_mask(mask: np.ndarray, rgb: np.ndarray, name: str) -> None:
    """Raise ValueError unless ``mask`` is an array of the image's height and width."""
    if getattr(mask, "shape", None) != rgb.shape[:2]:
        raise ValueError(f"{name} shape {getattr(mask, 'shape', None)} differs from the image's {rgb.shape[:2]}")
