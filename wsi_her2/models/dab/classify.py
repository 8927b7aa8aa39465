"""From membrane signals to ASCO/CAP cell classes, against the slide's own unstained background.

Each cell carries two numbers from :mod:`~wsi_her2.models.dab.cells`: the membrane signal reached
by at least ``partial_fraction`` of its ring (*partial*: is any clear arc stained?) and by at least
``complete_fraction`` of it (*complete*: is the membrane stained nearly all round?). The class is

* 3+ when the complete signal reaches the 3+ level (intense, complete);
* 2+ when it reaches the 2+ level (weak to moderate, complete);
* 1+ when the partial signal reaches the 1+ level (faint, barely perceptible, or incomplete);
* 0 otherwise.

The levels are the configured contrasts (``membrane_od_*``) *above the slide's own background*:
the same line signal measured inside nuclei, where HER2 is never found (see
:mod:`~wsi_her2.models.dab.background`). A scanner, stain or JPEG setting that raises the floor of
the measurement raises the levels with it; a faint membrane is one that stands out from that floor.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from wsi_her2.models.dab.config import DabConfig


@dataclasses.dataclass(frozen=True)
class MembraneThresholds:
    """The membrane signal levels (line-signal OD, base 10) one slide's cells are classed with.

    Attributes:
        od_1plus: the partial signal from which a cell is 1+.
        od_2plus: the complete signal from which a cell is 2+.
        od_3plus: the complete signal from which a cell is 3+.
        background_od: the slide's background the levels were set above (0 when absolute).
        source: how the background was obtained ("slide nuclei", "tile nuclei", "absolute", ...).
    """

    od_1plus: float
    od_2plus: float
    od_3plus: float
    background_od: float = 0.0
    source: str = "absolute"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready values."""
        return dataclasses.asdict(self)


def resolve_thresholds(cfg: DabConfig, background_od: float | None, source: str) -> MembraneThresholds:
    """The levels for a slide (or a lone tile) whose measured background is ``background_od``.

    Args:
        cfg: the scorer's settings (contrasts above background, the reference mode, the cap).
        background_od: the median line signal inside nuclei, or None when it could not be measured.
        source: where the background came from, for the report.

    Returns:
        Absolute levels. With ``cfg.membrane_reference == "absolute"`` (or no measurement) the
        background is ``cfg.background_default_od``; a measured background is capped at
        ``cfg.background_max_od`` so that contamination by strong staining cannot hide membranes.
    """
    if cfg.membrane_reference == "absolute":
        background, source = cfg.background_default_od, "absolute (membrane_reference = absolute)"
    elif background_od is None or not math.isfinite(background_od):
        background, source = cfg.background_default_od, f"default ({source}: too few nucleus pixels to measure)"
    elif background_od > cfg.background_max_od:
        background, source = cfg.background_max_od, f"{source}, capped at background_max_od"
    else:
        background = float(background_od)
    return MembraneThresholds(
        od_1plus=background + cfg.membrane_od_1plus,
        od_2plus=background + cfg.membrane_od_2plus,
        od_3plus=background + cfg.membrane_od_3plus,
        background_od=background,
        source=source,
    )


def classify_cells(partial_od: np.ndarray, complete_od: np.ndarray, levels: MembraneThresholds) -> np.ndarray:
    """ASCO/CAP class (0, 1, 2, 3 as int8) of each cell from its partial and complete signals."""
    cls = np.zeros(len(partial_od), dtype=np.int8)
    cls[partial_od >= levels.od_1plus] = 1
    cls[complete_od >= levels.od_2plus] = 2
    cls[complete_od >= levels.od_3plus] = 3
    return cls


def membrane_index(counts: np.ndarray) -> float | np.ndarray:
    """The H-score-like membrane index: 1 x %1+ + 2 x %2+ + 3 x %3+ of the cells, 0-300.

    Args:
        counts: cells per class 0, 1+, 2+, 3+ (a slide's or a region's tumour cells), or an
            (n, 4) array of such counts (one row per tile).

    Returns:
        The index (an array for an (n, 4) input); NaN where there are no cells.
    """
    arr = np.asarray(counts, dtype=np.float64)
    total = arr.sum(axis=-1)
    weighted = arr[..., 1] + 2 * arr[..., 2] + 3 * arr[..., 3]
    with np.errstate(invalid="ignore", divide="ignore"):
        index = np.where(total > 0, 100.0 * weighted / np.maximum(total, 1e-12), np.nan)
    return float(index) if index.ndim == 0 else index
