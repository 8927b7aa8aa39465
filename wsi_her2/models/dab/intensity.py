"""How strongly this slide took up stain, from its counterstain: one factor that scales the levels.

Section thickness, scanner exposure and the overall strength of a staining run scale every
optical density on a slide together (Beer-Lambert). HER2 itself varies from case to case and
cannot serve as its own reference, but the hematoxylin counterstain can: the 90th percentile of
the tissue's hematoxylin OD on the thumbnail (dense nuclei) is nearly the same on the visible
HER2-0 and HER2-2+ cores (0.146 and 0.145) and moves with a uniformly lighter or darker slide.
The DAB scorer multiplies its nucleus-detection and membrane thresholds by the ratio of this
slide's value to the reference, within limits, so that a lighter run does not turn faint 1+
membranes into 0 and a darker one does not turn noise into 1+. A weaker or stronger DAB step
alone, with the counterstain unchanged, is not corrected: no internal reference exists for it
(the guideline's on-slide controls serve that purpose).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from wsi_her2.models.dab.config import DabConfig
from wsi_her2.models.dab.stain import StainVectors, check_mask, deconvolve

# Fewer tissue pixels than this on the thumbnail give no measurement (factor 1).
_MIN_PIXELS = 200
_PERCENTILE = 90.0


@dataclasses.dataclass(frozen=True)
class StainIntensity:
    """The slide's counterstain level and the factor applied to the scorer's thresholds.

    Attributes:
        hematoxylin_p90_od: 90th percentile of the tissue's hematoxylin OD on the thumbnail (NaN if unmeasured).
        factor: multiplier of the nucleus and membrane thresholds (1 when unmeasured or off).
        source: "hematoxylin", "off (intensity_reference = none)" or why it could not be measured.
    """

    hematoxylin_p90_od: float
    factor: float
    source: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready values (NaN as None)."""
        value = self.hematoxylin_p90_od
        return {**dataclasses.asdict(self), "hematoxylin_p90_od": value if np.isfinite(value) else None}


def measure_intensity(
    thumbnail: np.ndarray, tissue_mask: np.ndarray | None, stains: StainVectors, cfg: DabConfig
) -> StainIntensity:
    """The slide's :class:`StainIntensity` from a thumbnail at a few µm/px and its tissue mask.

    Args:
        thumbnail: HxWx3 uint8, the slide at 2-8 µm/px (the tissue mask's image).
        tissue_mask: HxW bool tissue; None uses pixels whose mean OD exceeds ``cfg.tissue_min_od``.
        stains: the slide's stain vectors.
        cfg: the scorer's settings (reference, limits, on/off).
    """
    if cfg.intensity_reference == "none":
        return StainIntensity(float("nan"), 1.0, "off (intensity_reference = none)")
    h_od, _, mean_od = deconvolve(np.ascontiguousarray(thumbnail[..., :3]), stains)
    if tissue_mask is None:
        tissue = mean_od > cfg.tissue_min_od
    else:
        check_mask(tissue_mask, thumbnail, "tissue_mask")
        tissue = tissue_mask.astype(bool)
    if int(np.count_nonzero(tissue)) < _MIN_PIXELS:
        return StainIntensity(float("nan"), 1.0, f"unmeasured (fewer than {_MIN_PIXELS} tissue pixels)")
    level = float(np.percentile(h_od[tissue], _PERCENTILE))
    raw = level / cfg.reference_hematoxylin_od
    factor = float(np.clip(raw, cfg.intensity_factor_min, cfg.intensity_factor_max))
    source = "hematoxylin" if factor == raw else f"hematoxylin (ratio {raw:.2f} limited to {factor:.2f})"
    return StainIntensity(level, factor, source)


def scaled_config(cfg: DabConfig, intensity: StainIntensity) -> DabConfig:
    """The settings with nucleus and membrane thresholds scaled to this slide's stain."""
    f = intensity.factor
    if f == 1.0:
        return cfg
    return cfg.replace(
        nucleus_min_od=cfg.nucleus_min_od * f,
        nucleus_min_contrast=cfg.nucleus_min_contrast * f,
        membrane_od_1plus=cfg.membrane_od_1plus * f,
        membrane_od_2plus=cfg.membrane_od_2plus * f,
        membrane_od_3plus=cfg.membrane_od_3plus * f,
        nuclear_dab_od=cfg.nuclear_dab_od * f,
    )
