"""Result folders as the viewer and the HTML report see them: a ``score`` folder or a ``batch`` folder.

Names, columns and fields come from :mod:`wsi_her2.outputs.schema` (one schema, no guessing); a
score folder is read by the schema's :class:`~wsi_her2.outputs.schema.ScoreFolder`, which
:class:`ScoreView` extends with the slide (opened on demand), the heatmap layers and readouts. A
batch folder is read from its ``summary.json``. Everything here reads; nothing writes.
"""

from __future__ import annotations

import json
import math
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wsi_her2.errors import InputNotFoundError
from wsi_her2.outputs import schema
from wsi_her2.outputs.schema import HEATMAP, OVERLAY, REPORT, SUMMARY_JSON, TILES, ScoreFolder
from wsi_her2.slide import SlideReader, open_slide, read_tile
from wsi_her2.viewer.errors import RequestError

__all__ = ["HEATMAP", "OVERLAY", "REPORT", "TILES", "BatchEntry", "BatchFolder", "ScoreView", "load_result"]

# Files of a result folder the viewer serves as they are (by suffix); nothing else.
SERVED_SUFFIXES = {".json", ".csv", ".geojson", ".png", ".jpg", ".jpeg", ".html", ".txt"}
TOP_TILES_PER_CLASS = 6


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
            name: [(v or None) if name in schema.TEXT_COLUMNS else _cell(v) for v in values]
            for name, values in raw.items()
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


class ScoreView(ScoreFolder):
    """A ``score`` output folder as the viewer shows it, with its slide opened on demand.

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
        super().__init__(path)
        slide_facts = self.slide_facts
        named = slide_facts.get("path_resolved") or slide_facts.get("path") or ""
        self.name = Path(str(named)).name or self.path.name
        self.slide_path, self.slide_message = self._find_slide(slide, named)
        self._reader: SlideReader | None = None
        self._reader_error: str | None = None
        self._lock = threading.Lock()  # lazy loading
        self.read_lock = threading.Lock()  # every use of the slide reader
        self._table: TileTable | None = None
        self._layers: Any = None
        self._tiler: Any = None

    @property
    def width(self) -> int:
        """Level-0 width of the slide (from the report)."""
        return int(self.slide_facts.get("width") or 0)

    @property
    def height(self) -> int:
        """Level-0 height of the slide (from the report)."""
        return int(self.slide_facts.get("height") or 0)

    def summary(self) -> dict[str, Any]:
        """What the page and the report show about the slide's score."""
        result = self.result
        grid = self.grid_facts
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
            "scorer_summary": result.get(schema.RESULT_SCORER_SUMMARY) or {},
            "n_tiles_scored": result.get("n_tiles_scored"),
            "n_tiles_dropped": result.get("n_tiles_dropped") or {},
            "confidence": result.get("confidence"),
            "notes": result.get("notes") or [],
            "caveats": self.report.get("caveats") or [],
            "model": self.model,
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
    def table(self) -> TileTable | None:
        """The tile table, parsed and indexed, or None when there is none (no tissue)."""
        with self._lock:
            if self._table is None and self.has_tiles:
                self._table = TileTable.read(self.path / TILES)
            return self._table

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
        tiles = self.table()
        index = tiles.by_position.get((col, row)) if tiles is not None else None
        if layers is None and index is None:
            grid = self.grid_facts
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
            "value_columns": {c.key: c.label for c in self.outputs.value_columns},
        }

    def top_tiles(self, per_class: int = TOP_TILES_PER_CLASS) -> dict[str, list[dict[str, Any]]]:
        """For each class, the scored tiles predicted as it, highest value of that class first."""
        tiles = self.table()
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

        tiles = self.table()
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
    """One slide of a batch, as its summary row says.

    Attributes:
        name: the slide's name (its path under the batch's input folder, e.g. ``caseA/ihc.svs``).
        status: done, failed, skipped, no_tissue, pending.
        row: the summary row as written.
        folder: its score folder, when it has a finished one inside the batch folder.
    """

    name: str
    status: str
    row: dict[str, Any]
    folder: Path | None


class BatchFolder:
    """A ``batch`` output folder: ``summary.json`` and one score folder per slide.

    Each row of ``summary.json`` names its slide ("slide"), its status and its folder ("output",
    relative to the batch folder); the slide's report fills in what a row leaves empty (e.g. a
    row written while the slide was pending).

    Attributes:
        path: the folder (resolved).
        summary: ``summary.json`` as read.
        entries: one per slide, in the summary's order.
    """

    def __init__(self, path: str | Path) -> None:
        """Read a batch folder.

        Raises:
            InputNotFoundError: no (readable) summary.json in the folder.
        """
        folder = Path(path)
        self.path = folder.resolve()
        if not (self.path / SUMMARY_JSON).is_file():
            raise InputNotFoundError(f"{folder} has no {SUMMARY_JSON}: not a `wsi-her2 batch` folder")
        data = _read_json(self.path / SUMMARY_JSON)
        rows = data.get(schema.SUMMARY_ROWS) if isinstance(data, dict) else None
        if not isinstance(rows, list):
            raise InputNotFoundError(f"{self.path / SUMMARY_JSON} is not a `wsi-her2 batch` summary")
        self.summary: dict[str, Any] = data
        self.entries: list[BatchEntry] = []
        for row in (r for r in rows if isinstance(r, dict)):
            name = str(row.get("slide") or "?")
            found = self._folder_of(row)
            self.entries.append(BatchEntry(name, str(row.get("status") or "unknown"), row, found))

    def _folder_of(self, row: dict[str, Any]) -> Path | None:
        output = row.get("output")
        if not isinstance(output, str) or not output:
            return None
        try:
            resolved = (self.path / output).resolve()
        except (OSError, RuntimeError):
            return None
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


def is_batch_folder(path: str | Path) -> bool:
    """True for a ``batch`` output folder (it has ``summary.json`` and no ``report.json``)."""
    folder = Path(path)
    return not (folder / REPORT).is_file() and (folder / SUMMARY_JSON).is_file()


def load_result(path: str | Path, *, slide: str | Path | None = None) -> ScoreView | BatchFolder:
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
    return ScoreView(folder, slide=slide)
