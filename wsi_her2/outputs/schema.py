"""The result-folder schema: every file name, column and report field that writers write and readers read.

A ``score`` folder holds ``report.json`` (written last: its presence means the folder is complete),
``heatmap.zarr``, ``tiles.csv``, ``predictions.geojson``, ``overlay.png`` and the files its scorer
declares (e.g. a per-cell table). A ``tile`` folder holds ``tiles.csv``, ``tissue.geojson``,
``thumbnail.png`` and ``manifest.json``. A ``batch`` folder holds ``summary.csv``,
``summary.json`` and one score folder per slide with its ``batch_manifest.json``. A ``validate``
folder holds one score folder per case under ``cases/``, the checks' under ``checks/``,
``cases.csv``, ``validation.png``, ``validation.html``, ``calibration.json`` (with
``--calibrate``) and ``validation.json`` (written last).

What differs between scorers (the name of the per-class column, extra per-tile values, heatmap
channels, slide-summary fields, extra files) is declared by the scorer as :class:`ScorerOutputs`
and recorded in the report under ``scorer_outputs``; readers take it from there, never from the
scorer's kind. :class:`ScoreFolder` is the one reader of a score folder.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

from wsi_her2.errors import InputNotFoundError
from wsi_her2.outputs.tile_table import read_csv_columns
from wsi_her2.tiling.grid import TileGrid

# -- the score folder ---------------------------------------------------------------------------
REPORT = "report.json"
HEATMAP = "heatmap.zarr"
TILES = "tiles.csv"
PREDICTIONS = "predictions.geojson"
OVERLAY = "overlay.png"
# Files a scorer may add to its score folder (declared in ScorerOutputs.files), by name.
SCORER_FILES = {
    "cells.npz": "one row per cell: the scorer's per-cell table as NumPy arrays (np.load)",
    "cells.csv": "one row per cell: the scorer's per-cell table as CSV",
}
SCORE_FILES = (REPORT, HEATMAP, TILES, PREDICTIONS, OVERLAY, *SCORER_FILES)

# -- the tile folder ----------------------------------------------------------------------------
TISSUE_GEOJSON = "tissue.geojson"
THUMBNAIL = "thumbnail.png"
TILING_MANIFEST = "manifest.json"

# -- the batch folder ---------------------------------------------------------------------------
BATCH_MANIFEST = "batch_manifest.json"
SUMMARY_STEM = "summary"
SUMMARY_JSON = f"{SUMMARY_STEM}.json"
SUMMARY_CSV = f"{SUMMARY_STEM}.csv"
SUMMARY_ROWS = "slides"  # the list of rows in summary.json
# Columns of summary.csv before the per-class fractions, and after the scorer's summary fields.
SUMMARY_LEADING = ("slide", "status", "score", "clinical_group", "rule", "confidence")
SUMMARY_TRAILING = ("n_tiles_on_tissue", "n_tiles_scored", "n_tiles_dropped", "mpp", "seconds", "error_type",
                    "message", "output", "path")  # fmt: skip
# Row keys holding mappings that summary.csv spreads over columns.
ROW_FRACTIONS = "class_fractions"
ROW_SCORER_SUMMARY = "scorer_summary"


def fraction_column(cls: str) -> str:
    """The summary.csv column of a class's fraction: ``fraction(2+)``."""
    return f"fraction({cls})"


# -- the validation folder ------------------------------------------------------------------------
VALIDATION_REPORT = "validation.json"  # written last: its presence means the run completed
VALIDATION_HTML = "validation.html"
VALIDATION_FIGURE = "validation.png"
VALIDATION_CASES_CSV = "cases.csv"
VALIDATION_CASES_DIR = "cases"  # one score folder per case
VALIDATION_CHECKS_DIR = "checks"  # the rerun's and the ROI check's score folders
CALIBRATION_FILE = "calibration.json"  # validate --calibrate; score --dab-config reads it


# -- tile tables and heatmap channels -----------------------------------------------------------
GRID_COLUMNS = ("tile_id", "col", "row", "x_level0_px", "y_level0_px", "width_level0_px", "height_level0_px",
                "tissue_fraction")  # fmt: skip
PIXEL_FRACTION = "pixel_tissue_fraction"
BLUR_SCORE = "blur_score"
SCORED = "scored"
KEPT = "kept"
DROP_REASON = "drop_reason"
PREDICTED = "predicted_class"
TISSUE_FRACTION = "tissue_fraction"
# Tile-table columns that hold names, not numbers (a class named "0" stays "0").
TEXT_COLUMNS = frozenset({PREDICTED, DROP_REASON, "label", "slide", "file"})


def grid_columns(grid: TileGrid) -> dict[str, np.ndarray]:
    """The first columns of every tile table (:data:`GRID_COLUMNS`): id, grid position, level-0 box, tissue."""
    n = len(grid)
    values = (np.arange(n), grid.col, grid.row, grid.x, grid.y, np.full(n, grid.tile_size_px),
              np.full(n, grid.tile_size_px), grid.tissue_fraction)  # fmt: skip
    return dict(zip(GRID_COLUMNS, values, strict=True))


# -- report fields ------------------------------------------------------------------------------
REPORT_SCORER_OUTPUTS = "scorer_outputs"
REPORT_CALIBRATION = "calibration"  # the --dab-config file applied (hash, overrides, provenance), or null
RESULT_SCORER_SUMMARY = "scorer_summary"
# Scorer-summary fields that readers beyond the viewer rely on, where a scorer declares them
# (``ScorerOutputs.summary_fields``): the continuous index over the scored cells, the cells the
# score's percentages are over, and every cell detected.
SUMMARY_INDEX = "membrane_index"
SUMMARY_TUMOUR_CELLS = "n_tumour_cells"
SUMMARY_CELLS_DETECTED = "n_cells_detected"
COORDINATE_SPACE = "level-0 pixels (origin top-left of the full-resolution image)"


@dataclasses.dataclass(frozen=True)
class ValueColumn:
    """A per-tile value a scorer adds: a ``tiles.csv`` column and a GeoJSON measurement.

    Attributes:
        key: the measurement's name (the column's name).
        label: a human label, for readouts.
        geojson: also a measurement of the tile objects in ``predictions.geojson``.
    """

    key: str
    label: str
    geojson: bool = True


@dataclasses.dataclass(frozen=True)
class HeatmapChannel:
    """A per-tile value a scorer adds to ``heatmap.zarr``.

    Attributes:
        key: the measurement's name (the channel's name).
        color: display colour, hex ``RRGGBB``.
        window: display range; None: 0 to the largest value on the slide (at least 1).
    """

    key: str
    color: str
    window: tuple[float, float] | None = None

    def window_for(self, values: np.ndarray) -> tuple[float, float]:
        """The display range for these values."""
        if self.window is not None:
            return self.window
        top = float(np.nanmax(values)) if np.isfinite(values).any() else 1.0
        return 0.0, max(top, 1.0)


@dataclasses.dataclass(frozen=True)
class SummaryField:
    """A slide-summary value (from the scorer's finishing step) that batch summaries carry.

    Attributes:
        key: its key in the slide summary (and its summary.csv column).
        label: a human label.
        percent: a fraction (0-1) shown as a percentage.
    """

    key: str
    label: str
    percent: bool = False


@dataclasses.dataclass(frozen=True)
class ScorerOutputs:
    """What a scorer adds to the result folder, beyond what every scorer writes.

    Attributes:
        probability_prefix: names the per-class columns: ``p`` gives ``p(2+)``, ``fraction_cells``
            gives ``fraction_cells(2+)``.
        value_columns: extra per-tile values, in table order.
        heatmap_channels: extra heatmap channels, in channel order.
        summary_fields: slide-summary values shown in batch summaries.
        files: extra files (names from :data:`SCORER_FILES`), written from the finishing step's tables.
        caveat: what the user must know about this scorer's results.
        no_result_hint: what to do when no tile gave a result (the scorer found nothing to score).
    """

    probability_prefix: str = "p"
    value_columns: tuple[ValueColumn, ...] = ()
    heatmap_channels: tuple[HeatmapChannel, ...] = ()
    summary_fields: tuple[SummaryField, ...] = ()
    files: tuple[str, ...] = ()
    caveat: str = ""
    no_result_hint: str = "the scorer found nothing to score in them"

    def __post_init__(self) -> None:
        unknown = [name for name in self.files if name not in SCORER_FILES]
        if unknown:
            raise ValueError(f"scorer files unknown to the schema: {unknown} (add them to SCORER_FILES)")

    def probability_column(self, cls: str) -> str:
        """The ``tiles.csv`` column / heatmap channel of a class's per-tile value."""
        return f"{self.probability_prefix}({cls})"

    def to_dict(self, classes: tuple[str, ...] | list[str]) -> dict[str, Any]:
        """The report's ``scorer_outputs`` section."""
        return {
            "probability_prefix": self.probability_prefix,
            "probability_columns": {c: self.probability_column(c) for c in classes},
            "value_columns": [dataclasses.asdict(c) for c in self.value_columns],
            "heatmap_channels": [
                {"key": c.key, "color": c.color, "window": list(c.window) if c.window else None}
                for c in self.heatmap_channels
            ],
            "summary_fields": [dataclasses.asdict(f) for f in self.summary_fields],
            "files": list(self.files),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ScorerOutputs:
        """Read the report's ``scorer_outputs`` section back."""
        channels = tuple(
            HeatmapChannel(c["key"], c["color"], tuple(c["window"]) if c.get("window") else None)  # type: ignore[arg-type]
            for c in data.get("heatmap_channels") or ()
        )
        return cls(
            probability_prefix=str(data.get("probability_prefix") or "p"),
            value_columns=tuple(ValueColumn(**c) for c in data.get("value_columns") or ()),
            heatmap_channels=channels,
            summary_fields=tuple(SummaryField(**f) for f in data.get("summary_fields") or ()),
            files=tuple(data.get("files") or ()),
        )


def _float(text: str) -> float:
    try:
        return float(text) if text != "" else float("nan")
    except ValueError:
        return float("nan")


class ScoreFolder:
    """A finished ``score`` folder, read (never written): its report and, on demand, its tile table.

    Attributes:
        path: the folder (resolved).
        report: ``report.json``.
    """

    def __init__(self, path: str | Path) -> None:
        """Read the report of a score folder.

        Raises:
            InputNotFoundError: no folder, no ``report.json`` in it, or not a wsi-her2 score report.
        """
        folder = Path(path)
        if not folder.is_dir():
            raise InputNotFoundError(f"score folder not found: {folder}", hint="give the -o folder of `wsi-her2 score`")
        self.path = folder.resolve()
        report_file = self.path / REPORT
        if not report_file.is_file():
            raise InputNotFoundError(
                f"{folder} has no {REPORT}: not a finished `wsi-her2 score` folder",
                hint="run `wsi-her2 score SLIDE -o OUT` first (report.json is written last)",
            )
        try:
            report = json.loads(report_file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise InputNotFoundError(
                f"{report_file} is not readable JSON ({exc})", hint="score the slide again"
            ) from exc
        if not isinstance(report, dict) or report.get("command") != "score":
            raise InputNotFoundError(f"{report_file} is not a `wsi-her2 score` report")
        self.report: dict[str, Any] = report
        self._tiles: dict[str, list[str]] | None = None

    # -- report fields ---------------------------------------------------------------------------
    def _section(self, name: str) -> dict[str, Any]:
        value = self.report.get(name)
        return value if isinstance(value, dict) else {}

    @property
    def status(self) -> str:
        """The status: "done", "no_tissue", or what the report says."""
        return str(self.report.get("status", "unknown"))

    @property
    def result(self) -> dict[str, Any]:
        """The ``result`` section (empty without a score)."""
        return self._section("result")

    @property
    def slide_facts(self) -> dict[str, Any]:
        """The ``slide`` section."""
        return self._section("slide")

    @property
    def grid_facts(self) -> dict[str, Any]:
        """The ``grid`` section."""
        return self._section("grid")

    @property
    def model(self) -> dict[str, Any]:
        """The scorer's identity (name, kind, classes, stain, weights hash)."""
        return self._section("model")

    @property
    def classes(self) -> tuple[str, ...]:
        """The classes scored."""
        return tuple(str(c) for c in self.model.get("classes") or ())

    @property
    def outputs(self) -> ScorerOutputs:
        """What the scorer added to the folder."""
        return ScorerOutputs.from_dict(self._section(REPORT_SCORER_OUTPUTS))

    @property
    def scorer_summary(self) -> dict[str, Any]:
        """The scorer's slide summary (``result.scorer_summary``; empty without a score)."""
        value = self.result.get(RESULT_SCORER_SUMMARY)
        return value if isinstance(value, dict) else {}

    def declares(self, summary_field: str) -> bool:
        """True when the scorer declares this slide-summary field (its value may still be null)."""
        return any(f.key == summary_field for f in self.outputs.summary_fields)

    @property
    def model_facts(self) -> dict[str, Any]:
        """What the scorer found preparing the slide (stain check, stain vectors, stain level)."""
        return self._section("model_facts")

    @property
    def config(self) -> dict[str, Any]:
        """The resolved configuration the slide was scored with."""
        return self._section("config")

    @property
    def calibration(self) -> dict[str, Any] | None:
        """The calibration (``--dab-config``) the slide was scored with, or None."""
        value = self.report.get(REPORT_CALIBRATION)
        return value if isinstance(value, dict) else None

    def scorer_file(self, name: str) -> Path:
        """A file the scorer declared (e.g. ``cells.npz``).

        Raises:
            InputNotFoundError: the scorer did not declare it, or it is missing.
        """
        if name not in self.outputs.files:
            raise InputNotFoundError(f"{self.path} has no {name}: its scorer does not write one")
        path = self.path / name
        if not path.is_file():
            raise InputNotFoundError(f"{path} is missing", hint="score the slide again")
        return path

    @property
    def mpp(self) -> float | None:
        """µm/px the slide was scored at."""
        value = self.slide_facts.get("mpp_used")
        return float(value) if value else None

    @property
    def score(self) -> str | None:
        """The slide's HER2 score."""
        return self.result.get("score")

    def probability_column(self, cls: str) -> str:
        """The ``tiles.csv`` column / heatmap channel of a class's per-tile value."""
        return self.outputs.probability_column(cls)

    # -- the tile table --------------------------------------------------------------------------
    @property
    def has_tiles(self) -> bool:
        """True when the folder has a tile table (not for a slide without tissue)."""
        return (self.path / TILES).is_file()

    def tiles(self) -> dict[str, list[str]]:
        """``tiles.csv`` as columns of strings (read once).

        Raises:
            InputNotFoundError: the folder has no tile table.
        """
        if self._tiles is None:
            if not self.has_tiles:
                raise InputNotFoundError(f"{self.path} has no {TILES}", hint="score the slide again")
            self._tiles = read_csv_columns(self.path / TILES)
        return self._tiles

    def column(self, name: str) -> np.ndarray:
        """A numeric column of the tile table (NaN for empty cells).

        Raises:
            InputNotFoundError: no such column.
        """
        tiles = self.tiles()
        if name not in tiles:
            raise InputNotFoundError(f"{self.path / TILES} has no column {name!r}", hint="score the slide again")
        return np.array([_float(v) for v in tiles[name]], np.float64)

    def scored(self) -> np.ndarray:
        """Per tile, True when it was scored."""
        return np.array([v == "true" for v in self.tiles().get(SCORED, [])], bool)

    def scored_grid(self) -> TileGrid:
        """The scored tiles as a :class:`~wsi_her2.tiling.grid.TileGrid` (for reading them again)."""
        grid, slide, keep = self.grid_facts, self.slide_facts, self.scored()
        return TileGrid(
            x=self.column("x_level0_px")[keep].astype(np.int64),
            y=self.column("y_level0_px")[keep].astype(np.int64),
            col=self.column("col")[keep].astype(np.int64),
            row=self.column("row")[keep].astype(np.int64),
            tissue_fraction=self.column(TISSUE_FRACTION)[keep].astype(np.float32),
            tile_size_px=int(grid["tile_size_level0_px"]),
            stride_px=int(grid["stride_level0_px"]),
            n_cols=int(grid["grid_cols"]),
            n_rows=int(grid["grid_rows"]),
            slide_width=int(slide["width"]),
            slide_height=int(slide["height"]),
            mpp=self.mpp,
            positions_on_tissue=int(grid.get("positions_on_tissue", int(keep.sum()))),
        )
