"""Reading a ``wsi-her2 score`` folder back for explanation: its report, tile table and checks.

The folder is only read, never written. Checks turn a wrong folder into a typed error: a folder
that is not a complete score output, one made by another model, or one of another slide.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

from wsi_her2.errors import ConfigError, InputNotFoundError, ModelError, NoTissueError
from wsi_her2.outputs.tile_table import read_csv_columns
from wsi_her2.slide.base import SlideInfo
from wsi_her2.tiling.grid import TileGrid

REPORT = "report.json"
TILES = "tiles.csv"


@dataclasses.dataclass(frozen=True)
class RankedTile:
    """A tile chosen for a class's gallery.

    Attributes:
        tile_id: its row in ``tiles.csv``.
        x: left edge, level-0 pixels.
        y: top edge, level-0 pixels.
        size: side, level-0 pixels.
        value: the ranking value: p(class) of a trained model, the fraction of cells of the class
            for the DAB scorer.
        predicted_class: the tile's predicted class in the score folder.
        extra: other numeric columns of the tile (n_cells, ...), by name.
    """

    tile_id: int
    x: int
    y: int
    size: int
    value: float
    predicted_class: str
    extra: dict[str, float] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description."""
        return {
            "tile_id": self.tile_id,
            "x_level0_px": self.x,
            "y_level0_px": self.y,
            "size_level0_px": self.size,
            "value": self.value,
            "predicted_class": self.predicted_class,
            **self.extra,
        }


def _float(text: str) -> float:
    try:
        return float(text) if text != "" else float("nan")
    except ValueError:
        return float("nan")


@dataclasses.dataclass
class ScoreFolder:
    """A complete score folder.

    Attributes:
        path: the folder.
        report: ``report.json``.
        tiles: ``tiles.csv`` as columns of strings.
    """

    path: Path
    report: dict[str, Any]
    tiles: dict[str, list[str]]

    @property
    def model(self) -> dict[str, Any]:
        """The scorer's identity (kind, name, architecture, classes, stain, weights hash)."""
        return dict(self.report.get("model") or {})

    @property
    def kind(self) -> str:
        """The scorer's kind: "deep" or "dab"."""
        return str(self.model.get("kind", "deep"))

    @property
    def classes(self) -> tuple[str, ...]:
        """The classes scored."""
        return tuple(self.model.get("classes") or ())

    @property
    def mpp(self) -> float | None:
        """µm/px the slide was scored at."""
        value = (self.report.get("slide") or {}).get("mpp_used")
        return float(value) if value else None

    @property
    def score(self) -> str | None:
        """The slide's HER2 score."""
        return (self.report.get("result") or {}).get("score")

    def value_column(self, name: str) -> str:
        """The tiles.csv column ranking a class: ``p(<class>)`` or ``fraction_cells(<class>)``."""
        return f"fraction_cells({name})" if self.kind == "dab" else f"p({name})"

    def _column(self, name: str) -> np.ndarray:
        if name not in self.tiles:
            raise InputNotFoundError(f"{self.path / TILES} has no column {name!r}", hint="score the slide again")
        return np.array([_float(v) for v in self.tiles[name]], np.float64)

    def _scored(self) -> np.ndarray:
        return np.array([v == "true" for v in self.tiles.get("scored", [])], bool)

    def top_tiles(self, name: str, k: int, *, extra_columns: tuple[str, ...] = ()) -> list[RankedTile]:
        """The ``k`` scored tiles with the highest value for class ``name`` (above 0; ties by tile id)."""
        values = self._column(self.value_column(name))
        valid = self._scored() & np.isfinite(values) & (values > 0)
        rows = np.flatnonzero(valid)
        order = rows[np.lexsort((rows, -values[rows]))][:k]
        xs, ys = self._column("x_level0_px"), self._column("y_level0_px")
        sizes = self._column("width_level0_px")
        extras = {c: self._column(c) for c in extra_columns if c in self.tiles}
        predicted = self.tiles.get("predicted_class", [""] * len(values))
        return [
            RankedTile(
                tile_id=int(self.tiles["tile_id"][i]),
                x=int(xs[i]),
                y=int(ys[i]),
                size=int(sizes[i]),
                value=float(values[i]),
                predicted_class=predicted[i],
                extra={c: float(v[i]) for c, v in extras.items()},
            )
            for i in order
        ]

    def scored_grid(self) -> TileGrid:
        """The scored tiles as a :class:`~wsi_her2.tiling.grid.TileGrid` (for reading them all again)."""
        grid = self.report.get("grid") or {}
        slide = self.report.get("slide") or {}
        keep = self._scored()
        return TileGrid(
            x=self._column("x_level0_px")[keep].astype(np.int64),
            y=self._column("y_level0_px")[keep].astype(np.int64),
            col=self._column("col")[keep].astype(np.int64),
            row=self._column("row")[keep].astype(np.int64),
            tissue_fraction=self._column("tissue_fraction")[keep].astype(np.float32),
            tile_size_px=int(grid["tile_size_level0_px"]),
            stride_px=int(grid["stride_level0_px"]),
            n_cols=int(grid["grid_cols"]),
            n_rows=int(grid["grid_rows"]),
            slide_width=int(slide["width"]),
            slide_height=int(slide["height"]),
            mpp=self.mpp,
            positions_on_tissue=int(grid.get("positions_on_tissue", int(keep.sum()))),
        )

    def check_model(self, identity: dict[str, Any]) -> None:
        """Refuse a folder scored by another model than ``identity`` (a scorer's ``identity()``).

        Raises:
            ModelError: another kind of model, other weights, or other classes.
        """
        theirs = self.model
        name = theirs.get("name") or theirs.get("architecture") or theirs.get("kind")
        if theirs.get("kind", "deep") != identity.get("kind", "deep"):
            mine = "the DAB scorer" if identity.get("kind") == "dab" else "a trained model"
            other = "the DAB scorer" if theirs.get("kind") == "dab" else f"the trained model {name!r}"
            raise ModelError(
                f"{self.path} was scored by {other}, not by {mine} given here",
                hint="explain with the model that scored the folder, or leave out --scores to score again",
            )
        if identity.get("kind") == "dab":
            return
        same_weights = theirs.get("weights_sha256") and identity.get("weights_sha256")
        if same_weights and theirs["weights_sha256"] != identity["weights_sha256"]:
            raise ModelError(
                f"{self.path} was scored by another model ({name!r}, weights "
                f"{str(theirs['weights_sha256'])[:12]}...) than this checkpoint "
                f"({identity.get('name')!r}, weights {str(identity['weights_sha256'])[:12]}...)",
                hint="explain with the checkpoint that scored the folder, or leave out --scores to score again",
            )
        if list(theirs.get("classes") or []) != list(identity.get("classes") or []) or (
            theirs.get("architecture") != identity.get("architecture")
        ):
            raise ModelError(
                f"{self.path} was scored by a {theirs.get('architecture')} with classes {theirs.get('classes')}, "
                f"not this {identity.get('architecture')} with classes {identity.get('classes')}",
                hint="explain with the checkpoint that scored the folder, or leave out --scores to score again",
            )

    def check_slide(self, info: SlideInfo) -> list[str]:
        """Refuse a folder of another slide; returns notes (e.g. the slide was moved).

        Raises:
            ConfigError: the slide's size differs from the scored one's.
        """
        slide = self.report.get("slide") or {}
        width, height = slide.get("width"), slide.get("height")
        scored_name = Path(str(slide.get("path", ""))).name
        if (width, height) != (info.width, info.height):
            raise ConfigError(
                f"--scores {self.path} belongs to another slide ({scored_name}, {width}x{height} px), "
                f"not {Path(info.path).name} ({info.width}x{info.height} px)",
                hint="give the score folder of this slide, or leave out --scores to score it",
            )
        notes = []
        if scored_name and scored_name != Path(info.path).name:
            notes.append(f"the score folder was made from {scored_name}; the slide given has the same size")
        return notes


def read_score_folder(path: str | Path) -> ScoreFolder:
    """Read a complete ``wsi-her2 score`` output folder.

    Raises:
        InputNotFoundError: the folder, its report or its tile table is missing or unreadable.
        NoTissueError: the report says the slide had no tissue (nothing to explain).
    """
    path = Path(path)
    if not path.is_dir():
        raise InputNotFoundError(f"score folder not found: {path}", hint="give a folder written by `wsi-her2 score`")
    report_path = path / REPORT
    if not report_path.is_file():
        raise InputNotFoundError(
            f"{path} has no {REPORT}: not a complete `wsi-her2 score` folder",
            hint="score the slide first, or leave out --scores to score it here",
        )
    try:
        report = json.loads(report_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputNotFoundError(f"{report_path} is not valid JSON ({exc})") from exc
    if not isinstance(report, dict) or report.get("command") != "score":
        raise InputNotFoundError(f"{report_path} is not a `wsi-her2 score` report")
    if report.get("status") != "done":
        raise NoTissueError(
            f"{path}: the slide was not scored ({report.get('message') or report.get('status')})",
            hint="there is nothing to explain",
        )
    tiles_path = path / TILES
    if not tiles_path.is_file():
        raise InputNotFoundError(f"{path} has no {TILES}", hint="score the slide again")
    return ScoreFolder(path, report, read_csv_columns(tiles_path))
