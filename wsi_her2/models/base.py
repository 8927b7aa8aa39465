"""The interface every scoring model offers the pipeline: the DAB scorer and trained classifiers alike.

A scorer says how tiles must be cut and delivered (from its card), checks and prepares the slide
(stain check, stain vectors), optionally gives a function run on each tile inside the loader's
workers, and turns delivered batches into class probabilities and measurements.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from wsi_her2.config import GridConfig

if TYPE_CHECKING:
    from wsi_her2.pipeline import PreparedSlide
    from wsi_her2.tiling.loader import TileBatch, TileFunction


@dataclass
class BatchResult:
    """What a scorer returns for one batch (rows = the batch's kept tiles, in order).

    Attributes:
        probabilities: (n_kept, n_classes); NaN rows for tiles with no result (e.g. no cells).
        measurements: per-tile values by name, (n_kept,) each.
    """

    probabilities: np.ndarray
    measurements: dict[str, np.ndarray] = field(default_factory=dict)


class PendingResult(Protocol):
    """A batch result that may still be computing (on a GPU)."""

    def result(self) -> BatchResult:
        """Wait for and return the result."""
        ...


@dataclass
class ReadyResult:
    """A result computed synchronously."""

    value: BatchResult

    def result(self) -> BatchResult:
        """The result."""
        return self.value


class TileScorer(Protocol):
    """A model as the pipeline sees it."""

    kind: str
    classes: tuple[str, ...]
    stain: str
    label_granularity: str | None
    max_in_flight: int

    def grid_config(self, requested: GridConfig, user_set: frozenset[str]) -> GridConfig:
        """The grid to cut: the model's geometry, unless the user set a value explicitly."""
        ...

    def output_size_px(self, prepared: PreparedSlide) -> int:
        """Side in pixels at which the loader must deliver tiles."""
        ...

    def prepare(self, prepared: PreparedSlide, *, check_stain: bool) -> dict[str, Any]:
        """Check and prepare the slide (stain check, stain vectors); returns facts for the report.

        Raises:
            StainMismatchError: the slide's stain is not the model's.
        """
        ...

    def tile_function(self, prepared: PreparedSlide, output_size_px: int) -> TileFunction | None:
        """A function run on each tile inside the loader's workers, or None."""
        ...

    def submit(self, batch: TileBatch) -> PendingResult:
        """Start scoring the kept tiles of ``batch``. The batch's pixels may be reused once this returns."""
        ...

    def identity(self) -> dict[str, Any]:
        """Name, kind, classes, stain and weight hash, for reports."""
        ...

    def card(self) -> dict[str, Any]:
        """The full model card (or the DAB scorer's configuration)."""
        ...

    def close(self) -> None:
        """Release resources (GPU memory)."""
        ...


def apply_card_geometry(
    requested: GridConfig, user_set: frozenset[str], tile_size_px: int, tile_mpp: float | None
) -> GridConfig:
    """Use a model's tile geometry unless the user gave --tile-size / --target-mpp themselves."""
    changes: dict[str, Any] = {}
    if "tile_size_px" not in user_set:
        changes["tile_size_px"] = tile_size_px
    if "target_mpp" not in user_set and tile_mpp is not None:
        changes["target_mpp"] = tile_mpp
    if "overlap_px" not in user_set:
        changes["overlap_px"] = min(requested.overlap_px, (changes.get("tile_size_px") or requested.tile_size_px) - 1)
    return requested.replace(**changes) if changes else requested
