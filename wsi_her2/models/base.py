"""The interface every scoring model offers the pipeline: the DAB scorer and trained classifiers alike.

A scorer says how tiles must be cut and delivered (its geometry, whether it needs the pixels, its
batch size), checks and prepares the slide (stain check, stain vectors), optionally gives a
function run on each tile inside the loader's workers, turns delivered batches into class
probabilities and measurements, and finishes the slide once every tile is in (thresholds that
depend on the whole slide, a slide-level summary, per-cell tables). It declares what it adds to
the result folder (:class:`~wsi_her2.outputs.schema.ScorerOutputs`) and who it is (identity, a
fingerprint for resuming batches). Code outside :mod:`wsi_her2.models` asks the scorer, never its
kind.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from wsi_her2.config import GridConfig
from wsi_her2.outputs.schema import ScorerOutputs

if TYPE_CHECKING:
    from wsi_her2.results import PreparedSlide
    from wsi_her2.tiling.loader import TileBatch, TileFunction

# How a scorer is explained (``wsi-her2 explain``): Grad-CAM of a network, or the scorer's own evidence.
GRADCAM = "gradcam"
EVIDENCE = "evidence"


@dataclass
class BatchResult:
    """What a scorer returns for one batch (rows = the batch's kept tiles, in order).

    Attributes:
        probabilities: (n_kept, n_classes); NaN rows for tiles with no result (e.g. no cells).
        measurements: per-tile values by name, (n_kept,) each.
        tile_arrays: per-tile arrays by name (e.g. the tile's cells), one entry per kept tile.
    """

    probabilities: np.ndarray
    measurements: dict[str, np.ndarray] = field(default_factory=dict)
    tile_arrays: dict[str, list[np.ndarray | None]] = field(default_factory=dict)


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


@dataclass
class SlideTiles:
    """Every tile's result, collected over the grid (row i = grid tile i).

    Attributes:
        probabilities: (n_tiles, n_classes); NaN for tiles without a result.
        measurements: per-tile values by name, (n_tiles,) each; NaN where there is none.
        tile_arrays: per-tile arrays by name, one entry per grid tile; None where there is none.
        kept: True for tiles that passed the pixel-level check (the ones the scorer saw).
    """

    probabilities: np.ndarray
    measurements: dict[str, np.ndarray]
    tile_arrays: dict[str, list[np.ndarray | None]]
    kept: np.ndarray


@dataclass
class SlideFinish:
    """A scorer's last word on a slide (see :meth:`TileScorer.finish`).

    Attributes:
        probabilities: (n_tiles, n_classes), possibly revised (NaN = no result).
        measurements: per-tile values by name, possibly revised or added.
        summary: slide-level values for the report (``result.scorer_summary``).
        tables: per file name (one of the scorer's ``outputs().files``), the columns to write.
    """

    probabilities: np.ndarray
    measurements: dict[str, np.ndarray]
    summary: dict[str, Any] = field(default_factory=dict)
    tables: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)


def unchanged(tiles: SlideTiles) -> SlideFinish:
    """The finish of a scorer with nothing to add once the tiles are in."""
    return SlideFinish(tiles.probabilities, tiles.measurements)


class TileScorer(Protocol):
    """A model as the pipeline, the writers, batch and explain see it.

    Attributes:
        classes: class names in probability order.
        stain: "ihc" or "he".
        label_granularity: "slide" or "tile" (steers the ``auto`` rule), or None.
        needs_pixels: the loader must return the tiles' pixels (False: the tile function does the work).
        batch_size: tiles per loader batch (None: the loader's setting).
        tile_device: the torch device where the scorer takes tiles as tensors, or None (host arrays only).
        max_in_flight: batches submitted before the oldest result is collected.
        explanation: how ``explain`` shows its evidence: :data:`GRADCAM` or :data:`EVIDENCE`.
    """

    classes: tuple[str, ...]
    stain: str
    label_granularity: str | None

    @property
    def needs_pixels(self) -> bool:
        """The loader must return the tiles' pixels (False: the tile function does the work)."""
        ...

    @property
    def batch_size(self) -> int | None:
        """Tiles per loader batch (None: the loader's setting)."""
        ...

    @property
    def tile_device(self) -> str | None:
        """The torch device on which :meth:`submit` takes tiles as tensors (``TileBatch.device_images``).

        None: the scorer takes host arrays only. Where it names a device, the loader may decode the
        slide's stored tiles there (``LoaderConfig.decode``) and hand them over without a host copy.
        """
        ...

    max_in_flight: int
    explanation: str

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

    def finish(self, tiles: SlideTiles, prepared: PreparedSlide) -> SlideFinish:
        """Once every tile is in: revise per-tile results if the slide as a whole says so, summarise it."""
        ...

    def outputs(self) -> ScorerOutputs:
        """What the scorer adds to the result folder: column naming, values, channels, files, caveat."""
        ...

    def identity(self) -> dict[str, Any]:
        """Name, kind, classes, stain and weight hash, for reports."""
        ...

    def fingerprint(self) -> str:
        """SHA-256 of what the scorer is (weights and card, or settings and code version): batch resume key."""
        ...

    def card(self) -> dict[str, Any]:
        """The full model card (or the DAB scorer's configuration)."""
        ...

    def runtime(self) -> dict[str, Any]:
        """Device and precision actually used."""
        ...

    def set_cpu_threads(self, threads: int) -> None:
        """Use at most ``threads`` CPU threads (a batch job shares the cores), unless the user set a count."""
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
