"""The DAB scorer as a pipeline model: stain check, slide stain vectors, per-tile work in the workers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from wsi_her2.config import GridConfig
from wsi_her2.errors import StainMismatchError
from wsi_her2.her2 import SCORES_4
from wsi_her2.models.base import BatchResult, ReadyResult, apply_card_geometry
from wsi_her2.models.dab.config import DabConfig
from wsi_her2.models.dab.stain import StainVectors, estimate_stain_vectors
from wsi_her2.models.dab.stain_check import check_stain as measure_stain
from wsi_her2.models.dab.tile import TILE_KEYS, DabTileFunction

if TYPE_CHECKING:
    from wsi_her2.pipeline import PreparedSlide
    from wsi_her2.tiling.loader import TileBatch

FRACTION_KEYS = ("frac_0", "frac_1plus", "frac_2plus", "frac_3plus")
# Tiles of 256 µm (1024 px at 0.25 µm/px), the same tissue area as the classifiers' BCI patches.
DAB_TILE_SIZE_UM = 256.0


class DabScorer:
    """The weight-free HER2 IHC scorer behind the pipeline's model interface."""

    kind = "dab"
    classes = SCORES_4
    stain = "ihc"
    label_granularity: str | None = None
    max_in_flight = 1
    batch_size = 16  # ~25 ms of cell analysis per tile: small batches keep progress smooth

    def __init__(self, cfg: DabConfig | None = None) -> None:
        """Use ``cfg`` (defaults when None)."""
        self.cfg = cfg or DabConfig()
        self.stains: StainVectors | None = None

    def grid_config(self, requested: GridConfig, user_set: frozenset[str]) -> GridConfig:
        """256-µm tiles: 512 px at the scorer's 0.5 µm/px."""
        size_px = round(DAB_TILE_SIZE_UM / self.cfg.work_mpp)
        return apply_card_geometry(requested, user_set, size_px, self.cfg.work_mpp)

    def output_size_px(self, prepared: PreparedSlide) -> int:
        """Tiles delivered at the scorer's working resolution."""
        grid = prepared.grid
        return max(8, round(grid.tile_size_px * prepared.info.mpp / self.cfg.work_mpp))

    def prepare(self, prepared: PreparedSlide, *, check_stain: bool) -> dict[str, Any]:
        """Refuse H&E, then estimate this slide's H and DAB colours from its tissue."""
        mask = prepared.mask
        thumb = mask.thumbnail if mask.thumbnail is not None else np.zeros((1, 1, 3), np.uint8)
        verdict = measure_stain(thumb, mask.mask)
        if check_stain and verdict.stain == "he":
            raise StainMismatchError(
                f"{prepared.info.path}: the slide looks like H&E ({verdict.pink_fraction:.0%} of the tissue has "
                "eosin's pink hue) and the DAB scorer reads HER2 IHC only",
                hint="score H&E with a trained model: --model CHECKPOINT (see `wsi-her2 train`), "
                "or --no-stain-check if this is IHC",
            )
        self.stains = estimate_stain_vectors(thumb, mask.mask, self.cfg)
        return {"stain_check": verdict.to_dict(), "stain_vectors": self.stains.to_dict()}

    def tile_function(self, prepared: PreparedSlide, output_size_px: int) -> DabTileFunction:
        """The per-tile cell analysis, run in the loader's worker processes."""
        if self.stains is None:
            raise RuntimeError("prepare() must run before tile_function()")
        mpp = prepared.grid.tile_size_px * prepared.info.mpp / output_size_px
        return DabTileFunction(self.stains, self.cfg, mpp)

    def submit(self, batch: TileBatch) -> ReadyResult:
        """Collect the workers' measurements of the kept tiles."""
        rows = np.flatnonzero(batch.kept)
        measurements = {key: batch.measurements[key][rows] for key in TILE_KEYS if key in batch.measurements}
        n = len(rows)
        if not measurements:
            measurements = {key: np.full(n, np.nan) for key in TILE_KEYS}
        cells = measurements["n_cells"]
        probabilities = np.stack([measurements[k] for k in FRACTION_KEYS], axis=1).astype(np.float32)
        probabilities[~(cells > 0)] = np.nan  # no cells, no result
        return ReadyResult(BatchResult(probabilities, measurements))

    def identity(self) -> dict[str, Any]:
        """What scored the slide."""
        return {
            "name": "dab",
            "kind": "dab",
            "classes": list(self.classes),
            "stain": "ihc",
            "weights_sha256": None,
        }

    def card(self) -> dict[str, Any]:
        """The scorer's settings (it has no weights)."""
        return {
            "name": "DAB membrane scorer (weight-free)",
            "kind": "dab",
            "classes": list(self.classes),
            "stain": "ihc",
            "tile_size_um": DAB_TILE_SIZE_UM,
            "work_mpp": self.cfg.work_mpp,
            "config": self.cfg.to_dict(),
        }

    def close(self) -> None:
        """Nothing to release."""
