"""The slide's own unstained background of the membrane measurement, measured inside nuclei.

HER2 is a membrane protein: the inside of a (blue) nucleus carries none. Whatever the membrane
line signal reads there is the floor of the measurement on this slide: JPEG and sensor noise,
hematoxylin and grey refraction edges leaking into the DAB channel after colour deconvolution,
and any non-specific background staining. Each tile histograms the line signal over the eroded
interiors of its blue nuclei (brown, Ki67-like nuclei are excluded); the slide's background is
the median of the pooled histogram. Membrane levels are set as contrasts above it
(:func:`~wsi_her2.models.dab.classify.resolve_thresholds`).
"""

from __future__ import annotations

import numpy as np

# Histogram of line-signal OD: fine bins up to 0.3 OD (well above any background); the last bin
# takes everything above.
BIN_OD = 0.0025
N_BINS = 120
# Fewer nucleus-interior pixels than this (about five nuclei at 0.5 µm/px) give no background.
MIN_PIXELS = 500


def line_histogram(values: np.ndarray) -> np.ndarray:
    """Counts of line-signal values in the background histogram's bins (int64, ``N_BINS``)."""
    idx = np.clip((np.asarray(values, np.float64) / BIN_OD).astype(np.int64), 0, N_BINS - 1)
    return np.bincount(idx, minlength=N_BINS).astype(np.int64)


def background_from_histogram(hist: np.ndarray) -> float | None:
    """The median line signal of a (pooled) histogram, or None with fewer than ``MIN_PIXELS``."""
    hist = np.asarray(hist, dtype=np.int64)
    total = int(hist.sum())
    if total < MIN_PIXELS:
        return None
    cumulative = np.cumsum(hist)
    k = int(np.searchsorted(cumulative, total / 2.0))
    below = cumulative[k - 1] if k > 0 else 0
    within = (total / 2.0 - below) / max(int(hist[k]), 1)  # linear within the bin
    return float((k + within) * BIN_OD)
