"""Is this slide hematoxylin-DAB IHC (what the DAB scorer reads), H&E, or something else?

The discriminating colour is eosin: it absorbs green far more than red or blue, so eosin-stained
tissue is pink and H&E's hematoxylin, mixed with it, purple. Neither IHC stain does that:
hematoxylin alone is blue (absorbs red and green about equally, blue less) and DAB is brown
(absorbs blue most). So the "pink fraction", the share of stained tissue pixels whose green OD
exceeds both red and blue OD by a clear margin, is near 0 on H-DAB IHC, even on a HER2-0 slide with
no DAB at all (blue hematoxylin only), and high on H&E, whose stroma and cytoplasm are eosin.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from wsi_her2.models.dab.stain import check_mask, default_stain_vectors, optical_density

# A pixel is "pink" when (OD_G - max(OD_R, OD_B)) / |OD| exceeds this. Pure eosin gives about 0.9,
# standard hematoxylin 0.05, DAB below 0; H&E's purple nuclei land around 0.1-0.3.
PINK_MARGIN = 0.2
# Decision limits on the pink fraction: <= IHC_MAX is IHC, >= HE_MIN is H&E, between is unknown.
# Measured: real IHC fixtures 0.000-0.002 (score-0 HER2 core, 2+ core, Ki67, skimage), real H&E 0.34-0.98.
IHC_MAX_PINK_FRACTION = 0.05
HE_MIN_PINK_FRACTION = 0.15
# Pixels must carry this much OD (vector length) to have a reliable hue; fewer than MIN_PIXELS is unknown.
MIN_PIXEL_OD = 0.1
MIN_PIXELS = 200
_DAB_OD = 0.15


@dataclasses.dataclass(frozen=True)
class StainCheck:
    """The stain check's decision and the measurements behind it.

    Attributes:
        stain: "ihc", "he" or "unknown".
        message: one sentence for users explaining the decision.
        pink_fraction: share of stained tissue pixels with eosin's pink/red hue.
        dab_fraction: share of stained tissue pixels with DAB OD above 0.15 (standard vectors).
        median_hue_margin: median (OD_G - max(OD_R, OD_B)) / |OD| over stained tissue pixels.
        n_pixels: stained tissue pixels measured.
    """

    stain: str
    message: str
    pink_fraction: float
    dab_fraction: float
    median_hue_margin: float
    n_pixels: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready values."""
        return dataclasses.asdict(self)


def check_stain(rgb: np.ndarray, tissue_mask: np.ndarray | None = None) -> StainCheck:
    """Decide whether an image is H-DAB IHC, H&E or unknown from its colours.

    Args:
        rgb: HxWx3 (or 4) uint8, best a slide thumbnail at 2-4 µm/px.
        tissue_mask: HxW bool, True on tissue (pen marks excluded); None uses every stained pixel.

    Returns:
        The decision, a one-sentence message, and the measured fractions.
    """
    od = optical_density(rgb).reshape(-1, 3)
    norm = np.linalg.norm(od, axis=1)
    keep = norm > MIN_PIXEL_OD
    if tissue_mask is not None:
        check_mask(tissue_mask, rgb, "tissue_mask")
        keep &= tissue_mask.reshape(-1).astype(bool)
    n = int(np.count_nonzero(keep))
    if n < MIN_PIXELS:
        return StainCheck(
            stain="unknown",
            message=f"Too little stained tissue ({n} pixels) to tell the stain.",
            pink_fraction=float("nan"),
            dab_fraction=float("nan"),
            median_hue_margin=float("nan"),
            n_pixels=n,
        )
    od, norm = od[keep], norm[keep]
    margin = (od[:, 1] - np.maximum(od[:, 0], od[:, 2])) / norm
    pink = float(np.mean(margin > PINK_MARGIN))
    dab = float(np.mean((od @ default_stain_vectors().matrix_inverse())[:, 1] > _DAB_OD))
    median_margin = float(np.median(margin))
    pct_pink, pct_dab = 100 * pink, 100 * dab
    if pink >= HE_MIN_PINK_FRACTION:
        stain = "he"
        message = (
            f"Looks like H&E, not HER2 IHC: {pct_pink:.0f}% of the tissue has eosin's pink hue; the DAB "
            "scorer reads brown HER2 membranes and cannot score H&E (use a trained model with --model)."
        )
    elif pink <= IHC_MAX_PINK_FRACTION:
        stain = "ihc"
        if dab < 0.01:
            message = (
                f"Hematoxylin-DAB IHC: blue counterstain with no eosin and almost no DAB ({pct_dab:.1f}% of "
                "tissue), as on a HER2-negative slide."
            )
        else:
            message = f"Hematoxylin-DAB IHC: no eosin, DAB in {pct_dab:.0f}% of the tissue."
    else:
        stain = "unknown"
        message = (
            f"Stain unclear: {pct_pink:.0f}% of the tissue has a pink hue, too much for hematoxylin-DAB IHC "
            "and too little for H&E."
        )
    return StainCheck(
        stain=stain,
        message=message,
        pink_fraction=pink,
        dab_fraction=dab,
        median_hue_margin=median_margin,
        n_pixels=n,
    )
