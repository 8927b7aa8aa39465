"""Reading a ``wsi-her2 score`` folder back for explanation: the top tiles of a class, and checks.

The folder is read by the schema's :class:`~wsi_her2.outputs.schema.ScoreFolder`, never written.
Checks turn a wrong folder into a typed error: a folder that is not a complete score output, one
made by another model, or one of another slide.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from wsi_her2.errors import ConfigError, InputNotFoundError, ModelError, NoTissueError
from wsi_her2.outputs import schema
from wsi_her2.outputs.schema import ScoreFolder
from wsi_her2.slide.base import SlideInfo

__all__ = ["RankedTile", "ScoreFolder", "check_model", "check_slide", "read_score_folder", "top_tiles"]


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


def top_tiles(folder: ScoreFolder, name: str, k: int, *, extra_columns: tuple[str, ...] = ()) -> list[RankedTile]:
    """The ``k`` scored tiles with the highest value for class ``name`` (above 0; ties by tile id)."""
    values = folder.column(folder.probability_column(name))
    valid = folder.scored() & np.isfinite(values) & (values > 0)
    rows = np.flatnonzero(valid)
    order = rows[np.lexsort((rows, -values[rows]))][:k]
    xs, ys = folder.column("x_level0_px"), folder.column("y_level0_px")
    sizes = folder.column("width_level0_px")
    tiles = folder.tiles()
    extras = {c: folder.column(c) for c in extra_columns if c in tiles}
    predicted = tiles.get(schema.PREDICTED, [""] * len(values))
    return [
        RankedTile(
            tile_id=int(tiles["tile_id"][i]),
            x=int(xs[i]),
            y=int(ys[i]),
            size=int(sizes[i]),
            value=float(values[i]),
            predicted_class=predicted[i],
            extra={c: float(v[i]) for c, v in extras.items()},
        )
        for i in order
    ]


def check_model(folder: ScoreFolder, identity: dict[str, Any]) -> None:
    """Refuse a folder scored by another model than ``identity`` (a scorer's ``identity()``).

    Raises:
        ModelError: another kind of model, other weights, or other classes.
    """
    from wsi_her2.models import describe_identity, same_kind

    theirs = folder.model
    hint = "explain with the model that scored the folder, or leave out --scores to score again"
    if not same_kind(theirs, identity):
        raise ModelError(
            f"{folder.path} was scored by {describe_identity(theirs)}, not by "
            f"{describe_identity(identity, definite=False)} given here",
            hint=hint,
        )
    name = theirs.get("name") or theirs.get("architecture") or theirs.get("kind")
    hint = "explain with the checkpoint that scored the folder, or leave out --scores to score again"
    same_weights = theirs.get("weights_sha256") and identity.get("weights_sha256")
    if same_weights and theirs["weights_sha256"] != identity["weights_sha256"]:
        raise ModelError(
            f"{folder.path} was scored by another model ({name!r}, weights "
            f"{str(theirs['weights_sha256'])[:12]}...) than this checkpoint "
            f"({identity.get('name')!r}, weights {str(identity['weights_sha256'])[:12]}...)",
            hint=hint,
        )
    if list(theirs.get("classes") or []) != list(identity.get("classes") or []) or (
        theirs.get("architecture") != identity.get("architecture")
    ):
        raise ModelError(
            f"{folder.path} was scored by a {theirs.get('architecture')} with classes {theirs.get('classes')}, "
            f"not this {identity.get('architecture')} with classes {identity.get('classes')}",
            hint=hint,
        )


def check_slide(folder: ScoreFolder, info: SlideInfo) -> list[str]:
    """Refuse a folder of another slide; returns notes (e.g. the slide was moved).

    Raises:
        ConfigError: the slide's size differs from the scored one's.
    """
    slide = folder.slide_facts
    width, height = slide.get("width"), slide.get("height")
    scored_name = Path(str(slide.get("path", ""))).name
    if (width, height) != (info.width, info.height):
        raise ConfigError(
            f"--scores {folder.path} belongs to another slide ({scored_name}, {width}x{height} px), "
            f"not {Path(info.path).name} ({info.width}x{info.height} px)",
            hint="give the score folder of this slide, or leave out --scores to score it",
        )
    notes = []
    if scored_name and scored_name != Path(info.path).name:
        notes.append(f"the score folder was made from {scored_name}; the slide given has the same size")
    return notes


def read_score_folder(path: str | Path) -> ScoreFolder:
    """Read a complete ``wsi-her2 score`` output folder that has a score to explain.

    Raises:
        InputNotFoundError: the folder, its report or its tile table is missing or unreadable.
        NoTissueError: the report says the slide had no tissue (nothing to explain).
    """
    path = Path(path)
    if not path.is_dir():
        raise InputNotFoundError(f"score folder not found: {path}", hint="give a folder written by `wsi-her2 score`")
    if not (path / schema.REPORT).is_file():
        raise InputNotFoundError(
            f"{path} has no {schema.REPORT}: not a complete `wsi-her2 score` folder",
            hint="score the slide first, or leave out --scores to score it here",
        )
    folder = ScoreFolder(path)
    if folder.status != "done":
        raise NoTissueError(
            f"{path}: the slide was not scored ({folder.report.get('message') or folder.status})",
            hint="there is nothing to explain",
        )
    folder.tiles()  # a missing tile table is an error now, not later
    return folder
