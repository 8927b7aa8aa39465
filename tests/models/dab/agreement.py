"""How far the torch DAB measurement is from the numpy one: the figures, and the tolerances the tests hold.

Shared by ``test_dab_torch_measure.py`` and ``benchmarks/bench_dab_gpu.py`` (which prints them for
the GPU). The tolerances are the measured disagreement on the real cores with a margin (see
``wsi_her2/models/dab/torch_measure.py`` and ``docs/dab-scorer.md``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from scipy.spatial import cKDTree

# Per tile: |n_torch - n_numpy| <= COUNT_REL * n_numpy + COUNT_ABS.
COUNT_REL = 0.02
COUNT_ABS = 1
MATCH_RADIUS_PX = 2.0  # a cell is matched by the nearest centroid within this many pixels
MIN_MATCHED = 0.99  # of the numpy path's cells
MIN_CLASS_AGREEMENT = 0.98  # of the matched cells of a slide
MIN_TILE_CLASS_AGREEMENT = 0.97  # of one tile's matched cells (a tile has 50-400 cells: one flip is 0.3-2%)
MAX_HISTOGRAM_DIFF = 0.01  # sum of |count differences| over the total, background and DAB histograms
MAX_FRACTION_DIFF = 0.01  # tumour-cell class fractions of the slide
MAX_INDEX_DIFF = 2.0  # membrane index points


@dataclasses.dataclass(frozen=True)
class Agreement:
    """The torch path against the numpy path on one image scored as a slide."""

    tiles: int
    cells_numpy: int
    cells_torch: int
    worst_count_excess: float  # max over tiles of |dn| - (COUNT_REL n + COUNT_ABS); <= 0 passes
    worst_count_rel: float
    matched: float
    class_agreement: float
    fraction_diff: float
    index_diff: float
    score_numpy: int
    score_torch: int

    def failures(self) -> list[str]:
        """What is outside the tolerances (empty when everything agrees)."""
        out = []
        if self.worst_count_excess > 0:
            out.append(f"a tile's cell count differs by {self.worst_count_rel:.1%}")
        if self.matched < MIN_MATCHED:
            out.append(f"only {self.matched:.1%} of the cells matched")
        if self.class_agreement < MIN_CLASS_AGREEMENT:
            out.append(f"classes agree on only {self.class_agreement:.1%} of matched cells")
        if self.fraction_diff > MAX_FRACTION_DIFF:
            out.append(f"class fractions differ by {self.fraction_diff:.3f}")
        if self.index_diff > MAX_INDEX_DIFF:
            out.append(f"membrane index differs by {self.index_diff:.2f}")
        if self.score_numpy != self.score_torch:
            out.append(f"slide score {self.score_numpy} vs {self.score_torch}")
        return out

    def line(self) -> str:
        """One line of figures."""
        return (
            f"{self.tiles} tiles, cells {self.cells_numpy} numpy / {self.cells_torch} torch, worst tile count "
            f"difference {self.worst_count_rel:.2%}, matched {self.matched:.2%}, "
            f"classes agree {self.class_agreement:.2%}, "
            f"fractions within {self.fraction_diff:.4f}, index within {self.index_diff:.2f}, "
            f"score {self.score_numpy}/{self.score_torch}"
        )


def _fractions(summary: dict[str, Any]) -> np.ndarray:
    return np.array(list(summary["tumour_cells"]["fractions"].values()))


def _index_diff(a: float | None, b: float | None) -> float:
    if a is None or b is None:  # no tumour cells
        return 0.0 if a is b else float("inf")
    return abs(a - b)


def compare_slides(numpy_done: Any, torch_done: Any, cfg: Any) -> Agreement:
    """Compare two :class:`~wsi_her2.models.dab.slide_cells.SlideDab` of the same image."""
    from wsi_her2.models.dab import classify_cell_counts

    na, nb = numpy_done.tile_values["n_cells"], torch_done.tile_values["n_cells"]
    measured = np.isfinite(na)
    if not np.array_equal(measured, np.isfinite(nb)):
        raise AssertionError("the two paths measured different tiles")
    ta, tb = na[measured], nb[measured]
    excess = np.abs(ta - tb) - (COUNT_REL * ta + COUNT_ABS)
    ca, cb = numpy_done.cells.columns, torch_done.cells.columns
    pa = np.stack([ca["x_level0_px"], ca["y_level0_px"]], axis=1)
    pb = np.stack([cb["x_level0_px"], cb["y_level0_px"]], axis=1)
    if len(pa) and len(pb):
        dist, j = cKDTree(pb).query(pa)
        ok = dist <= MATCH_RADIUS_PX
        matched = float(ok.mean())
        agree = float((ca["cell_class"][ok] == cb["cell_class"][j[ok]]).mean()) if ok.any() else 0.0
    else:
        matched = agree = float(len(pa) == len(pb))
    sa, sb = numpy_done.summary, torch_done.summary
    counts = [np.array(list(s["tumour_cells"]["counts"].values())) for s in (sa, sb)]
    return Agreement(
        tiles=int(measured.sum()),
        cells_numpy=len(pa),
        cells_torch=len(pb),
        worst_count_excess=float(excess.max()) if len(excess) else 0.0,
        worst_count_rel=float((np.abs(ta - tb) / np.maximum(ta, 1)).max()) if len(ta) else 0.0,
        matched=matched,
        class_agreement=agree,
        fraction_diff=float(np.abs(_fractions(sa) - _fractions(sb)).max()),
        index_diff=_index_diff(sa["membrane_index"], sb["membrane_index"]),
        score_numpy=classify_cell_counts(counts[0].tolist(), cfg),
        score_torch=classify_cell_counts(counts[1].tolist(), cfg),
    )
