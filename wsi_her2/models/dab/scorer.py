"""The DAB scorer as a pipeline model: stain check, slide stain vectors and stain level, cells in the workers.

The workers measure each tile's cells; once every tile is in, :meth:`DabScorer.finish` sets the
membrane levels above the slide's own background, gates the tumour cells over the whole slide and
classes them (:func:`~wsi_her2.models.dab.slide_cells.finish_slide`). Everything the result folder
shows of the DAB scorer beyond what every scorer writes (its columns, heatmap channels, summary
fields, the per-cell table, its caveat) is declared here, in :meth:`DabScorer.outputs`.
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
)
from wsi_her2.models.dab.config import DabConfig
from wsi_her2.models.dab.intensity import measure_intensity, scaled_config
from wsi_her2.models.dab.slide_cells import finish_slide
from wsi_her2.models.dab.stain import StainVectors, estimate_stain_vectors
from wsi_her2.models.dab.stain_check import check_stain as measure_stain
from wsi_her2.models.dab.tile import CELLS_KEY, DabTileFunction
from wsi_her2.outputs.schema import HeatmapChannel, ScorerOutputs, SummaryField, ValueColumn

if TYPE_CHECKING:
    from wsi_her2.results import PreparedSlide
    from wsi_her2.tiling.loader import TileBatch

FRACTION_KEYS = ("frac_0", "frac_1plus", "frac_2plus", "frac_3plus")
# Tiles of 256 µm (1024 px at 0.25 µm/px), the same tissue area as the classifiers' BCI patches.
DAB_TILE_SIZE_UM = 256.0
KIND = "dab"
NO_RESULT_HINT = (
    "a tile has no result when no tumour cell was found in it: check that the slide (or --roi) holds invasive "
    "carcinoma; docs/dab-scorer.md says what the tumour gate keeps"
)
CAVEAT = (
    "The DAB scorer's percentages are over the cells its tumour gate counts as invasive carcinoma, "
    "judged from nuclear size, shape, chromatin and cohesion without trained weights; it cannot tell "
    "invasive from in-situ carcinoma or normal glands, and gated stroma or missed tumour cells shift "
    "the percentages. Check the gate (wsi-her2 explain dab) and outline the invasive tumour with --roi "
    "where it matters. Not validated for clinical use."
)
CELLS_FILE = "cells.npz"
# The per-tile values in tiles.csv and predictions.geojson, in table order, with their labels.
VALUE_COLUMNS = (
    ValueColumn("n_cells", "cells detected"),
    ValueColumn("n_tumour_cells", "tumour cells"),
    ValueColumn("n_cells_0", "tumour cells 0"),
    ValueColumn("n_cells_1plus", "tumour cells 1+"),
    ValueColumn("n_cells_2plus", "tumour cells 2+"),
    ValueColumn("n_cells_3plus", "tumour cells 3+"),
    ValueColumn("membrane_index", "membrane index (0-300)"),
    ValueColumn("mean_membrane_dab_od", "mean membrane DAB OD"),
    ValueColumn("mean_completeness", "mean membrane completeness"),
    ValueColumn("dab_area_fraction", "DAB area fraction"),
)
HEATMAP_CHANNELS = (
    HeatmapChannel("membrane_index", "8B4513", (0.0, 300.0)),
    HeatmapChannel("mean_membrane_dab_od", "A0522D", (0.0, 0.6)),
    HeatmapChannel("n_tumour_cells", "00A0A0"),  # 0 to the most in a tile
    HeatmapChannel("n_cells", "FFFFFF"),
)
SUMMARY_FIELDS = (
    SummaryField("membrane_index", "membrane index (0-300, tumour cells)"),
    SummaryField("n_tumour_cells", "tumour cells"),
    SummaryField("n_cells_detected", "cells detected"),
    SummaryField("tumour_cell_share", "tumour share of detected cells", percent=True),
    SummaryField("fraction_tumour_1plus_or_more", "tumour cells 1+ or more", percent=True),
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
    max_in_flight = 1
    explanation = EVIDENCE

    def __init__(self, cfg: DabConfig | None = None, *, device: str = "cpu") -> None:
        """Use ``cfg`` (defaults when None) on ``device``.

        Args:
            cfg: the scorer's settings.
            device: "cpu" (OpenCV in the loader's workers), "cuda"/"cuda:N" (the batched torch
                measurement on the GPU, :mod:`~wsi_her2.models.dab.torch_measure`), or "auto"
                (CUDA when torch sees a GPU, else the CPU).

        Raises:
            DeviceError: CUDA was asked for and is absent. ConfigError: another device was asked for.
        """
        self.cfg = cfg or DabConfig()
        self.device = _resolve_device(device)
        # Where the batched torch measurement runs; None: OpenCV in the workers. (Tests set "cpu" to
        # run the GPU code path on CPU tensors.)
        self.torch_device: str | None = None if self.device == "cpu" else self.device
        self._tile_mpp = self.cfg.work_mpp  # the delivered tiles' µm/px, the grid and ROI (tile_function sets them)
        self._grid: Any = None
        self._roi: Any = None
        self.stains: StainVectors | None = None
        # The settings with this slide's stain level applied (set by prepare()).
        self.slide_cfg = self.cfg

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
        tissue = mask.mask if mask.thumbnail is not None else None
        intensity = measure_intensity(thumb, tissue, self.stains, self.cfg)
        self.slide_cfg = scaled_config(self.cfg, intensity)
        return {
            "stain_check": verdict.to_dict(),
            "stain_vectors": self.stains.to_dict(),
            "stain_intensity": intensity.to_dict(),
        }

    @property
    def needs_pixels(self) -> bool:
        """On the CPU the workers analyse the tiles; on a GPU the loader hands the pixels over."""
        return self.torch_device is not None

    @property
    def tile_device(self) -> str | None:
        """On a GPU the batched measurement takes tiles decoded there as they are; on the CPU, none."""
        return self.torch_device

    @property
    def batch_size(self) -> int:  # type: ignore[override]
        """Small batches keep CPU progress smooth (~20 ms of analysis per tile); a GPU wants many tiles at once."""
        return 64 if self.needs_pixels else 16

    def tile_function(self, prepared: PreparedSlide, output_size_px: int) -> DabTileFunction | None:
        """The per-tile cell analysis, run in the loader's worker processes (None on a GPU: :meth:`submit` does it)."""
        if self.stains is None:
            raise RuntimeError("prepare() must run before tile_function()")
        self._tile_mpp = prepared.grid.tile_size_px * prepared.info.mpp / output_size_px
        self._grid, self._roi = prepared.grid, prepared.roi
        if self.needs_pixels:
            return None
        return DabTileFunction(self.stains, self.slide_cfg, self._tile_mpp)

    def submit(self, batch: TileBatch) -> ReadyResult:
        """Keep the kept tiles' cells (measured on the GPU here, or by the workers); classes come in finish."""
        rows = np.flatnonzero(batch.kept)
        probabilities = np.full((len(rows), len(self.classes)), np.nan, np.float32)
        if self.needs_pixels:
            measured = self._measure_on_device(batch, rows)
            arrays = {key: [m[key] for m in measured] for key in (measured[0] if measured else {}) if key != "n_cells"}
            n_cells = np.array([m["n_cells"] for m in measured], np.float64)
            return ReadyResult(BatchResult(probabilities, {"n_cells": n_cells}, arrays))
        n_cells = batch.measurements.get("n_cells", np.full(len(batch), np.nan))[rows]
        arrays = {key: [values[i] for i in rows] for key, values in batch.tile_arrays.items()}
        return ReadyResult(BatchResult(probabilities, {"n_cells": n_cells}, arrays))

    def _measure_on_device(self, batch: TileBatch, rows: np.ndarray) -> list[dict[str, Any]]:
        """The batched torch measurement of the kept tiles.

        Tiles decoded on the device (``batch.device_images``) are measured where they are; the CPU
        loader's pixels are copied to the device at once.
        """
        import torch

        from wsi_her2.models.dab.torch_measure import measure_tiles_torch

        if len(rows) == 0 or self.stains is None:
            return []
        if batch.device_images is not None:
            pixels = batch.device_images
            if len(rows) < len(batch):
                pixels = pixels[torch.as_tensor(rows, device=pixels.device)]
            tiles = pixels.to(self.torch_device).contiguous()
        elif batch.images is not None:
            tiles = torch.from_numpy(np.ascontiguousarray(batch.images[rows])).to(self.torch_device)
        else:
            raise ValueError("the DAB scorer on a torch device needs tile pixels (return_images=True)")
        masks: torch.Tensor | None = None
        if self._roi is not None:
            from wsi_her2.roi import rasterize

            size = tiles.shape[1]
            scale = self._grid.tile_size_px / size
            masks = torch.from_numpy(np.stack([
                rasterize(self._roi, (size, size), scale, scale, offset_xy=(int(self._grid.x[i]), int(self._grid.y[i])))
                for i in batch.indices[rows]
            ])).to(self.torch_device)  # fmt: skip
        return measure_tiles_torch(tiles, self.stains, self.slide_cfg, self._tile_mpp, masks)

    def finish(self, tiles: SlideTiles, prepared: PreparedSlide) -> SlideFinish:
        """One background, one tumour gate and one set of cell classes for the whole slide."""
        cells = tiles.tile_arrays.get(CELLS_KEY, [])
        measured = [i for i, arrays in enumerate(cells) if arrays is not None]
        outputs = [{key: values[i] for key, values in tiles.tile_arrays.items()} for i in measured]
        grid, mask = prepared.grid, prepared.mask
        done = finish_slide(
            measured, grid.x.astype(np.float64), grid.y.astype(np.float64), outputs, len(grid),
            float(prepared.info.mpp), self.slide_cfg, tissue_mask=(mask.mask, mask.scale_x, mask.scale_y),
        )  # fmt: skip
        values = done.tile_values
        probabilities = np.stack([values[k] for k in FRACTION_KEYS], axis=1).astype(np.float32)
        probabilities[~(values["n_tumour_cells"] > 0)] = np.nan  # no tumour cells, no result
        measurements = {**tiles.measurements, **values}
        summary = dict(done.summary)
        fractions = summary["tumour_cells"]["fractions"]
        summary["fraction_tumour_1plus_or_more"] = fractions["1+"] + fractions["2+"] + fractions["3+"]
        table = {**done.cells.columns, "meta": np.asarray(done.cells.meta_json())}
        return SlideFinish(probabilities, measurements, summary, {CELLS_FILE: table})

    def outputs(self) -> ScorerOutputs:
        """Tumour-cell fractions per class, cell counts, the membrane index and membrane measurements."""
        return ScorerOutputs(
            "fraction_cells",
            VALUE_COLUMNS,
            HEATMAP_CHANNELS,
            SUMMARY_FIELDS,
            files=(CELLS_FILE,),
            caveat=CAVEAT,
            no_result_hint=NO_RESULT_HINT,
        )

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
        """Where the cell analysis ran."""
        if self.torch_device is None:
            return {"device": "cpu", "cell_analysis": "OpenCV in the loader's worker processes"}
        return {"device": self.torch_device, "cell_analysis": "batched torch (torch_measure)"}

    def set_cpu_threads(self, threads: int) -> None:
        """OpenCV's threads are the caller's to set; nothing else here."""

    def close(self) -> None:
        """Nothing to release."""


def _resolve_device(device: str) -> str:
    """The DAB scorer's device for a ``--device`` value: "cpu" or a CUDA device (nothing else runs it)."""
    from wsi_her2.errors import ConfigError

    if device == "cpu":
        return "cpu"
    if device == "auto":
        if not _may_have_cuda():  # no GPU here: do not pay torch's import (seconds, gigabytes mapped)
            return "cpu"
        try:
            import torch
        except ImportError:  # the default install: the CPU path needs no torch
            return "cpu"
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        from wsi_her2.extras import require_torch

        require_torch("the DAB scorer on a GPU needs")
        from wsi_her2.device import resolve_device

        return str(resolve_device(device))
    raise ConfigError(
        f"the DAB scorer runs on the CPU or a CUDA GPU, not on {device!r}", hint="use --device cpu or cuda"
    )


def _may_have_cuda() -> bool:
    """Whether a CUDA GPU could be present, without importing torch (Linux: the NVIDIA device nodes)."""
    import os
    import sys

    if not sys.platform.startswith("linux"):
        return sys.platform == "win32"  # no CUDA on macOS; on Windows only torch can tell
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    return os.path.exists("/dev/nvidiactl") or os.path.exists("/dev/dxg")  # WSL exposes the GPU as /dev/dxg
