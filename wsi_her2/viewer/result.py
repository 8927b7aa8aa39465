"""Result folders as the viewer and the HTML report see them: a ``score`` folder or a ``batch`` folder.

A score folder holds ``report.json`` (its presence means the folder is complete), ``heatmap.zarr``,
``tiles.csv``, ``predictions.geojson`` and ``overlay.png``. A batch folder holds ``summary.json``
(and ``summary.csv``) and one score folder per slide. Everything here reads; nothing writes.
"""

from __future__ import annotations

import json
import math
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wsi_her2.errors import InputNotFoundError
from wsi_her2.slide import SlideReader, open_slide, read_tile
from wsi_her2.viewer.errors import RequestError

REPORT = "report.json"
HEATMAP = "heatmap.zarr"
TILES = "tiles.csv"
OVERLAY = "overlay.png"
SUMMARY_JSON = "summary.json"
SUMMARY_CSV = "summary.csv"
# Files of a result folder the viewer serves as they are (by suffix); nothing else.
SERVED_SUFFIXES = {".json", ".csv", ".geojson", ".png", ".jpg", ".jpeg", ".html", ".txt"}
TOP_TILES_PER_CLASS = 6
# Tile-table columns that hold names, not numbers (a class named "0" stays "0").
TEXT_COLUMNS = {"predicted_class", "drop_reason", "label", "slide", "file"}
# Columns of the DAB scorer's tile table shown in readouts, with labels.
CELL_COLUMNS = {
    "n_cells": "cells",
    "n_cells_0": "cells 0",
    "n_cells_1plus": "cells 1+",
    "n_cells_2plus": "cells 2+",
    "n_cells_3plus": "cells 3+",
    "mean_membrane_dab_od": "mean membrane DAB OD",
    "mean_completeness": "mean membrane completeness",
    "dab_area_fraction": "DAB area fraction",
}


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise InputNotFoundError(f"{path} not found") from exc
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputNotFoundError(f"{path} is not readable JSON ({exc})", hint="run the command again") from exc


def _cell(value: str) -> Any:
    """A CSV cell as a number, a bool, None (empty) or the string."""
    if value == "":
        return None
    if value in ("true", "false"):
        return value == "true"
    try:
        number = float(value)
    except ValueError:
        return value
    if not math.isfinite(number):
        return None
    return int(number) if number.is_integer() and "." not in value and "e" not in value.lower() else number


def safe_child(folder: Path, name: str) -> Path:
    """A regular file directly inside ``folder`` named ``name``, or a 404.

    Refuses names with separators, ``..``, a leading dot or NUL, files of unserved types, and
    anything that resolves (through symlinks) outside ``folder``.

    Raises:
        RequestError: not such a file.
    """
    bad = not name or name.startswith(".") or any(ch in name for ch in "/\\\x00") or ":" in name
    if bad or Path(name).suffix.lower() not in SERVED_SUFFIXES:
        raise RequestError(f"not served: {name!r}")
    root = folder.resolve()
    try:
        target = (root / name).resolve(strict=True)
    except (OSError, RuntimeError) as exc:
        raise RequestError(f"not found: {name!r}") from exc
    if target.parent != root or not target.is_file():
        raise RequestError(f"not served: {name!r}")
    return target


@dataclass
class TileTable:
    """``tiles.csv`` indexed by grid position.

    Attributes:
        columns: the table's columns, parsed.
        by_position: row index of each (col, row) grid position.
    """

    columns: dict[str, list[Any]]
    by_position: dict[tuple[int, int], int] = field(default_factory=dict)

    @classmethod
    def read(cls, path: Path) -> TileTable:
        """Read and index a tile table."""
        from wsi_her2.outputs.tile_table import read_csv_columns

        raw = read_csv_columns(path)
        columns = {
            name: [(v or None) if name in TEXT_COLUMNS else _cell(v) for v in values] for name, values in raw.items()
        }
        table = cls(columns)
        cols, rows = columns.get("col", []), columns.get("row", [])
        for i, (c, r) in enumerate(zip(cols, rows, strict=False)):
            if isinstance(c, int) and isinstance(r, int):
                table.by_position.setdefault((c, r), i)
        return table

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()), []))

    def row(self, index: int) -> dict[str, Any]:
        """One row as a dict."""
        return {name: values[index] for name, values in self.columns.items()}

    def index_of_id(self, tile_id: int) -> int:
        """Row index of a tile id.

        Raises:
            RequestError: no such tile.
        """
        ids = self.columns.get("tile_id")
        if ids is not None and 0 <= tile_id < len(ids) and ids[tile_id] == tile_id:
            return tile_id
        if ids is not None and tile_id in ids:
            return ids.index(tile_id)
        raise RequestError(f"no tile {tile_id}")


class ScoreFolder:
    """A ``score`` output folder, with its slide opened on demand.

    Attributes:
        path: the folder (resolved).
        report: ``report.json``.
        name: the slide's file name.
        slide_path: the slide file, or None when it cannot be found.
        slide_message: why the slide is not shown, when it is not.
    """

    def __init__(self, path: str | Path, *, slide: str | Path | None = None) -> None:
        """Read a score folder's report.

        Args:
            path: the folder.
            slide: the slide file, overriding the one named in the report (e.g. after moving it).

        Raises:
            InputNotFoundError: no folder or no ``report.json`` in it.
        """
        folder = Path(path)
        if not folder.is_dir():
            raise InputNotFoundError(
                f"result folder not found: {folder}", hint="give the -o folder of `wsi-her2 score`"
            )
        self.path = folder.resolve()
        report_file = self.path / REPORT
        if not report_file.is_file():
            raise InputNotFoundError(
                f"{folder} has no {REPORT}: not a finished `wsi-her2 score` folder",
                hint="run `wsi-her2 score SLIDE -o OUT` first (report.json is written last)",
            )
        report = _read_json(report_file)
        if not isinstance(report, dict):
            raise InputNotFoundError(f"{report_file} is not a wsi-her2 report")
        self.report: dict[str, Any] = report
        slide_facts = self.slide_facts
        named = slide_facts.get("path_resolved") or slide_facts.get("path") or ""
        self.name = Path(str(named)).name or self.path.name
        self.slide_path, self.slide_message = self._find_slide(slide, named)
        self._reader: SlideReader | None = None
        self._reader_error: str | None = None
        self._lock = threading.Lock()  # lazy loading
        self.read_lock = threading.Lock()  # every use of the slide reader
        self._tiles: TileTable | None = None
        self._layers: Any = None
        self._tiler: Any = None

    # -- facts from the report -------------------------------------------------------------------
    @property
    def slide_facts(self) -> dict[str, Any]:
        """The report's ``slide`` section."""
        slide = self.report.get("slide")
        return slide if isinstance(slide, dict) else {}

    @property
    def status(self) -> str:
        """The report's status: "done", "no_tissue", or what it says."""
        return str(self.report.get("status", "unknown"))

    @property
    def result(self) -> dict[str, Any]:
        """The report's ``result`` section (empty without a score)."""
        result = self.report.get("result")
        return result if isinstance(result, dict) else {}

    @property
    def classes(self) -> tuple[str, ...]:
        """The model's classes."""
        model = self.report.get("model") or {}
        classes = model.get("classes") if isinstance(model, dict) else None
        if classes:
            return tuple(str(c) for c in classes)
        return tuple(self.result.get("class_fractions", {}) or ("0", "1+", "2+", "3+"))

    @property
    def model_kind(self) -> str:
        """The model's kind: "dab" or "deep"."""
        model = self.report.get("model") or {}
        return str(model.get("kind", "deep")) if isinstance(model, dict) else "deep"

    @property
    def width(self) -> int:
        """Level-0 width of the slide (from the report)."""
        return int(self.slide_facts.get("width") or 0)

    @property
    def height(self) -> int:
        """Level-0 height of the slide (from the report)."""
        return int(self.slide_facts.get("height") or 0)

    def probability_column(self, cls: str) -> str:
        """The tile-table / heatmap column of a class's per-tile value."""
        return f"fraction_cells({cls})" if self.model_kind == "dab" else f"p({cls})"

    def summary(self) -> dict[str, Any]:
        """What the page and the report show about the slide's score."""
        result = self.result
        grid = self.report.get("grid") or {}
        return {
            "name": self.name,
            "status": self.status,
            "message": self.report.get("message"),
            "score": result.get("score"),
            "rule": result.get("rule"),
            "rules": {k: (v or {}).get("score") for k, v in (result.get("rules") or {}).items()},
            "clinical_group": result.get("clinical_group"),
            "clinical_action": result.get("clinical_action"),
            "her2_low": result.get("her2_low"),
            "ultralow_like": result.get("ultralow_like"),
            "class_fractions": result.get("class_fractions") or {},
            "cell_counts": result.get("cell_counts") or {},
            "n_tiles_scored": result.get("n_tiles_scored"),
            "n_tiles_dropped": result.get("n_tiles_dropped") or {},
            "confidence": result.get("confidence"),
            "notes": result.get("notes") or [],
            "caveats": self.report.get("caveats") or [],
            "model": self.report.get("model") or {},
            "model_card": self.report.get("model_card") or {},
            "slide": {
                "path": self.slide_facts.get("path"),
                "width": self.width,
                "height": self.height,
                "mpp": self.slide_facts.get("mpp_used"),
                "vendor": self.slide_facts.get("vendor"),
            },
            "grid": {
                "tile_size_level0_px": grid.get("tile_size_level0_px"),
                "stride_level0_px": grid.get("stride_level0_px"),
                "tile_size_um": grid.get("tile_size_um"),
                "cols": grid.get("grid_cols"),
                "rows": grid.get("grid_rows"),
            },
            "created": self.report.get("created"),
            "version": self.report.get("wsi_her2_version"),
        }

    # -- the slide -------------------------------------------------------------------------------
    def _find_slide(self, override: str | Path | None, named: str) -> tuple[Path | None, str | None]:
        if override is not None:
            path = Path(override)
            if not path.exists():
                raise InputNotFoundError(f"slide not found: {path}", hint="check the --slide path")
            return path.resolve(), None
        candidates = [Path(str(named))] if named else []
        original = self.slide_facts.get("path")
        if original and not Path(str(original)).is_absolute():
            candidates.append(self.path / str(original))
        for candidate in candidates:
            if candidate.exists():
                return candidate.resolve(), None
        where = named or "(no path in the report)"
        return None, f"slide file not found: {where}; the heatmap is shown over a blank slide (give --slide PATH)"

    def reader(self) -> SlideReader | None:
        """The open slide, or None when it is missing or unreadable (see :attr:`slide_message`)."""
        with self._lock:
            if self._reader is None and self._reader_error is None and self.slide_path is not None:
                mpp = self.slide_facts.get("mpp_used")
                try:
                    self._reader = open_slide(self.slide_path, mpp=float(mpp) if mpp else None)
                except Exception as exc:  # any unreadable slide: show the heatmap anyway, and say why
                    self._reader_error = f"cannot open the slide {self.slide_path}: {exc}"
                    self.slide_message = self._reader_error
                if (
                    self._reader is not None
                    and self.width
                    and (
                        self._reader.info.width,
                        self._reader.info.height,
                    )
                    != (self.width, self.height)
                ):
                    self.slide_message = (
                        f"the slide is {self._reader.info.width} x {self._reader.info.height} px but the report "
                        f"says {self.width} x {self.height}: is it the slide that was scored?"
                    )
            return self._reader

    def tiler(self) -> Any:
        """The slide's :class:`~wsi_her2.viewer.deepzoom.DeepZoomTiler` (blank when the slide is missing)."""
        from wsi_her2.viewer.deepzoom import DeepZoomTiler

        reader = self.reader()
        with self._lock:
            if self._tiler is None:
                if reader is not None:
                    self._tiler = DeepZoomTiler(reader, read_lock=self.read_lock)
                else:
                    self._tiler = DeepZoomTiler(None, width=max(1, self.width), height=max(1, self.height))
            return self._tiler

    # -- outputs ---------------------------------------------------------------------------------
    def tiles(self) -> TileTable | None:
        """The tile table, or None when there is none (no tissue)."""
        with self._lock:
            if self._tiles is None and (self.path / TILES).is_file():
                self._tiles = TileTable.read(self.path / TILES)
            return self._tiles

    def layers(self) -> Any:
        """The heatmap's :class:`~wsi_her2.viewer.layers.HeatmapLayers`, or None when there is no heatmap."""
        from wsi_her2.viewer.layers import HeatmapLayers

        with self._lock:
            if self._layers is None and (self.path / HEATMAP).is_dir():
                size = (self.width, self.height) if self.width and self.height else None
                self._layers = HeatmapLayers(self.path / HEATMAP, self.classes, slide_size=size)
            return self._layers

    def tile_readout(self, col: int, row: int) -> dict[str, Any]:
        """Everything known about the tile at grid position (col, row): table row and heatmap values.

        Raises:
            RequestError: the position is outside the grid.
        """
        layers = self.layers()
        values = layers.values_at(col, row) if layers is not None else {}
        tiles = self.tiles()
        index = tiles.by_position.get((col, row)) if tiles is not None else None
        if layers is None and index is None:
            grid = self.report.get("grid") or {}
            cols, rows = int(grid.get("grid_cols") or 0), int(grid.get("grid_rows") or 0)
            if not (0 <= col < cols and 0 <= row < rows):
                raise RequestError(f"tile position col={col}, row={row} is outside the grid")
        record = tiles.row(index) if tiles is not None and index is not None else None
        has_values = any(v is not None for k, v in values.items() if k != "tissue_fraction")
        if record is None and not has_values:
            return {"col": col, "row": row, "tile": None}
        return {
            "col": col,
            "row": row,
            "tile": record,
            "values": values,
            "classes": list(self.classes),
            "probability_columns": {c: self.probability_column(c) for c in self.classes},
            "cell_columns": CELL_COLUMNS if self.model_kind == "dab" else {},
        }

    def top_tiles(self, per_class: int = TOP_TILES_PER_CLASS) -> dict[str, list[dict[str, Any]]]:
        """For each class, the scored tiles predicted as it, highest value of that class first."""
        tiles = self.tiles()
        out: dict[str, list[dict[str, Any]]] = {c: [] for c in self.classes}
        if tiles is None or not len(tiles):
            return out
        cols = tiles.columns
        predicted = cols.get("predicted_class", [])
        scored = cols.get("scored", [True] * len(tiles))
        for cls in self.classes:
            column = cols.get(self.probability_column(cls))
            if column is None:
                continue
            picks = [i for i in range(len(tiles)) if predicted[i] == cls and scored[i] is not False]
            picks.sort(key=lambda i: (-(column[i] if isinstance(column[i], (int, float)) else -1.0), i))
            for i in picks[:per_class]:
                row = tiles.row(i)
                out[cls].append(
                    {
                        "tile_id": row.get("tile_id", i),
                        "x": row.get("x_level0_px"),
                        "y": row.get("y_level0_px"),
                        "width": row.get("width_level0_px"),
                        "height": row.get("height_level0_px"),
                        "value": column[i],
                        "column": self.probability_column(cls),
                    }
                )
        return out

    def tile_thumbnail(self, tile_id: int, size_px: int = 192) -> bytes:
        """A JPEG of one tile read from the slide.

        Raises:
            RequestError: no such tile, or the slide is not available.
        """
        from wsi_her2.outputs.images import encode_image

        tiles = self.tiles()
        if tiles is None:
            raise RequestError("this result has no tile table")
        row = tiles.row(tiles.index_of_id(tile_id))
        reader = self.reader()
        if reader is None:
            raise RequestError(self.slide_message or "the slide is not available")
        x, y = int(row["x_level0_px"]), int(row["y_level0_px"])
        w = int(row.get("width_level0_px") or 1)
        h = int(row.get("height_level0_px") or w)
        out_h = max(1, round(size_px * h / w))
        with self.read_lock:
            rgb = read_tile(reader, x, y, w, h, size_px, out_h)
        return encode_image(rgb, ".jpg", 85)

    def close(self) -> None:
        """Close the slide (it is opened again if used again)."""
        with self._lock, self.read_lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None
            self._tiler = None
            self._reader_error = None


@dataclass
class BatchEntry:
    """One slide of a batch, as its summary row says (tolerating missing columns).

    Attributes:
        name: the slide's name.
        status: done, failed, skipped, no tissue, ...
        row: the summary row as written.
        folder: its score folder, when it has a finished one inside the batch folder.
    """

    name: str
    status: str
    row: dict[str, Any]
    folder: Path | None


_FOLDER_KEYS = ("out_dir", "output_dir", "output", "out", "folder", "result_dir", "dir")
_ROW_LIST_KEYS = ("slides", "rows", "results", "items")


class BatchFolder:
    """A ``batch`` output folder: ``summary.json`` (or ``summary.csv``) and one score folder per slide.

    Each summary row names its slide ("slide"), its status and its folder ("output", relative to the
    batch folder, e.g. ``caseA/ihc.svs``); other columns (score, clinical_group, class_fractions or
    fraction(C), n_tiles_scored, seconds, message) are shown when present and read from the slide's
    report when not.

    Attributes:
        path: the folder (resolved).
        summary: ``summary.json`` as read (empty when only the CSV exists).
        entries: one per slide, in the summary's order, then finished folders the summary misses.
    """

    def __init__(self, path: str | Path) -> None:
        """Read a batch folder.

        Raises:
            InputNotFoundError: no summary.json / summary.csv in the folder.
        """
        folder = Path(path)
        self.path = folder.resolve()
        rows: list[dict[str, Any]] = []
        self.summary: dict[str, Any] = {}
        if (self.path / SUMMARY_JSON).is_file():
            data = _read_json(self.path / SUMMARY_JSON)
            if isinstance(data, list):
                rows = [r for r in data if isinstance(r, dict)]
            elif isinstance(data, dict):
                self.summary = data
                rows = _rows_of(data)
        if not rows and (self.path / SUMMARY_CSV).is_file():
            from wsi_her2.outputs.tile_table import read_csv_columns

            columns = read_csv_columns(self.path / SUMMARY_CSV)
            n = len(next(iter(columns.values()), []))
            rows = [{k: _cell(v[i]) for k, v in columns.items()} for i in range(n)]
        if not rows and not self.summary and not (self.path / SUMMARY_CSV).is_file():
            raise InputNotFoundError(f"{folder} has no {SUMMARY_JSON}: not a `wsi-her2 batch` folder")
        self.entries: list[BatchEntry] = []
        claimed: set[Path] = set()
        for row in rows:
            slide = str(row.get("slide") or row.get("path") or row.get("name") or "")
            # The batch names slides by their path under the input folder ("caseA/ihc.svs"); keep that.
            name = str(row.get("name") or (Path(slide).name if Path(slide).is_absolute() else slide) or "?")
            found = self._folder_of(row, slide)
            if found is not None:
                claimed.add(found)
            status = str(row.get("status") or ("done" if found else "unknown"))
            self.entries.append(BatchEntry(name, status, row, found))
        if not rows:  # no rows to go by: every finished score folder inside, at any depth
            for report in sorted(self.path.rglob(REPORT)):
                resolved = report.parent.resolve()
                if resolved not in claimed and resolved != self.path and resolved.is_relative_to(self.path):
                    name = resolved.relative_to(self.path).as_posix()
                    self.entries.append(BatchEntry(name, "done", {"slide": name, "output": name}, resolved))

    def _folder_of(self, row: dict[str, Any], slide: str) -> Path | None:
        candidates: list[Path] = []
        for key in _FOLDER_KEYS:
            value = row.get(key)
            if isinstance(value, str) and value:
                candidates.append(self.path / value)  # an absolute value stays absolute (and must be inside)
        if slide:
            candidates += [self.path / slide, self.path / Path(slide).name, self.path / Path(slide).stem]
            if Path(slide).name.count("."):
                candidates.append(self.path / Path(slide).name.split(".")[0])
        for candidate in candidates:
            try:
                resolved = candidate.resolve()
            except (OSError, RuntimeError):
                continue
            # Only folders inside the batch folder are ever opened (the viewer serves nothing else).
            if resolved != self.path and resolved.is_relative_to(self.path) and (resolved / REPORT).is_file():
                return resolved
        return None

    def counts(self) -> dict[str, int]:
        """Slides per status."""
        out: dict[str, int] = {}
        for entry in self.entries:
            out[entry.status] = out.get(entry.status, 0) + 1
        return out


def _rows_of(data: dict[str, Any]) -> list[dict[str, Any]]:
    for key in _ROW_LIST_KEYS:
        value = data.get(key)
        if isinstance(value, list):
            return [r for r in value if isinstance(r, dict)]
        if isinstance(value, dict) and all(isinstance(v, dict) for v in value.values()):
            return [{"slide": k, **v} for k, v in value.items()]
    for value in data.values():
        if isinstance(value, list) and value and all(isinstance(r, dict) for r in value):
            return value
    return []


def is_batch_folder(path: str | Path) -> bool:
    """True for a ``batch`` output folder (it has ``summary.json`` or ``summary.csv`` and no ``report.json``)."""
    folder = Path(path)
    return not (folder / REPORT).is_file() and ((folder / SUMMARY_JSON).is_file() or (folder / SUMMARY_CSV).is_file())


def load_result(path: str | Path, *, slide: str | Path | None = None) -> ScoreFolder | BatchFolder:
    """Open a ``score`` or ``batch`` output folder.

    Args:
        path: the folder.
        slide: the slide file of a score folder, overriding the report's path.

    Raises:
        InputNotFoundError: not a finished score folder nor a batch folder.
        ConfigError: ``slide`` given for a batch folder.
    """
    from wsi_her2.errors import ConfigError

    folder = Path(path)
    if not folder.exists():
        raise InputNotFoundError(f"result folder not found: {folder}", hint="give the -o folder of score or batch")
    if is_batch_folder(folder):
        if slide is not None:
            raise ConfigError("--slide applies to one score folder, not to a batch folder")
        return BatchFolder(folder)
    return ScoreFolder(folder, slide=slide)
