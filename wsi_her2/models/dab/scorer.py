"""The DAB scorer as a pipeline model: stain check, slide stain vectors, per-tile work in the workers.

Everything the result folder shows of the DAB scorer beyond what every scorer writes (its cell
columns, heatmap channels, caveat) is declared here, in :meth:`DabScorer.outputs`.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

import numpy as np

from wsi_her2._version import __version__
from wsi_her2.config import GridConfig
from wsi_her2.errors import StainMismatchError
from wsi_her2.her2 import SCORES_4
from wsi_her2.models.base import (
    EVIDENCE,
    BatchResult,
    ReadyResult,
    SlideFinish,
    SlideTiles,
    apply_card_geometry,
    unchanged,
)
from wsi_her2.models.dab.config import DabConfig
from wsi_her2.models.dab.stain import StainVectors, estimate_stain_vectors
from wsi_her2.models.dab.stain_check import check_stain as measure_stain
from wsi_her2.models.dab.tile import TILE_KEYS, DabTileFunction
from wsi_her2.outputs.schema import HeatmapChannel, ScorerOutputs, ValueColumn

if TYPE_CHECKING:
    from wsi_her2.results import PreparedSlide
    from wsi_her2.tiling.loader import TileBatch

FRACTION_KEYS = ("frac_0", "frac_1plus", "frac_2plus", "frac_3plus")
# Tiles of 256 µm (1024 px at 0.25 µm/px), the same tissue area as the classifiers' BCI patches.
DAB_TILE_SIZE_UM = 256.0
KIND = "dab"
CAVEAT = (
    "The DAB scorer counts every cell in the scored tissue; the ASCO/CAP guideline scores invasive "
    "tumour cells only. Outline the invasive tumour (e.g. in QuPath) and pass it with --roi. "
    "Not validated for clinical use."
)
# The per-tile values in tiles.csv and predictions.geojson, in table order, with their labels.
VALUE_COLUMNS = (
    ValueColumn("n_cells", "cells"),
    ValueColumn("n_cells_0", "cells 0"),
    ValueColumn("n_cells_1plus", "cells 1+"),
    ValueColumn("n_cells_2plus", "cells 2+"),
    ValueColumn("n_cells_3plus", "cells 3+"),
    ValueColumn("mean_membrane_dab_od", "mean membrane DAB OD"),
    ValueColumn("mean_completeness", "mean membrane completeness"),
    ValueColumn("dab_area_fraction", "DAB area fraction"),
)
HEATMAP_CHANNELS = (
    HeatmapChannel("mean_membrane_dab_od", "8B4513", (0.0, 0.6)),
    HeatmapChannel("n_cells", "FFFFFF"),  # 0 to the most cells in a tile
)


def dab_fingerprint(cfg: DabConfig) -> str:
    """What the DAB scorer is: its settings and the code version (it has no weights)."""
    payload = {"model": KIND, "dab": cfg.to_dict(), "wsi_her2_version": __version__}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


class DabScorer:
    """The weight-free HER2 IHC scorer behind the pipeline's model interface."""

    kind = KIND
    classes = SCORES_4
    stain = "ihc"
    label_granularity: str | None = None
    needs_pixels = False  # the cell analysis runs in the loader's workers
    max_in_flight = 1
    batch_size: int | None = 16  # ~25 ms of cell analysis per tile: small batches keep progress smooth
    explanation = EVIDENCE

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
        arrays = {key: [values[i] for i in rows] for key, values in batch.tile_arrays.items()}
        return ReadyResult(BatchResult(probabilities, measurements, arrays))

    def finish(self, tiles: SlideTiles, prepared: PreparedSlide) -> SlideFinish:
        """Every tile is scored on its own: nothing to revise."""
        return unchanged(tiles)

    def outputs(self) -> ScorerOutputs:
        """Cell fractions per class, cell counts and membrane measurements per tile."""
        return ScorerOutputs("fraction_cells", VALUE_COLUMNS, HEATMAP_CHANNELS, caveat=CAVEAT)

    def identity(self) -> dict[str, Any]:
        """What scored the slide."""
        return {
            "name": KIND,
            "kind": KIND,
            "classes": list(self.classes),
            "stain": "ihc",
            "weights_sha256": None,
        }

    def card(self) -> dict[str, Any]:
        """The scorer's settings (it has no weights)."""
        return {
            "name": "DAB membrane scorer (weight-free)",
            "kind": KIND,
            "classes": list(self.classes),
            "stain": "ihc",
            "tile_size_um": DAB_TILE_SIZE_UM,
            "work_mpp": self.cfg.work_mpp,
            "config": self.cfg.to_dict(),
        }

    def fingerprint(self) -> str:
        """Its settings and the code version."""
        return dab_fingerprint(self.cfg)

    def runtime(self) -> dict[str, Any]:
        """The cell analysis runs on the CPU, in the loader's workers."""
        return {"device": "cpu"}

    def set_cpu_threads(self, threads: int) -> None:
        """OpenCV's threads are the caller's to set; nothing else here."""

    def close(self) -> None:
        """Nothing to release."""
