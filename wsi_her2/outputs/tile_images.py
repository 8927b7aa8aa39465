"""Saving tile images (``wsi-her2 tile --save-tiles``), the way users build training sets."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from wsi_her2.outputs.atomic import ensure_dir
from wsi_her2.outputs.images import write_image
from wsi_her2.outputs.tile_table import write_csv_columns
from wsi_her2.tiling.grid import TileGrid
from wsi_her2.tiling.loader import TileBatch


class TileImageWriter:
    """Writes the kept tiles of each batch as image files and indexes them in ``tiles.csv``.

    File names carry the slide name and the level-0 position, e.g. ``slide_x4096_y8192.png``.
    """

    def __init__(self, folder: str | Path, slide_name: str, grid: TileGrid, suffix: str = ".png") -> None:
        """Prepare the folder.

        Args:
            folder: where the images go (created if needed).
            slide_name: prefix of the file names (the slide's file name without extension).
            grid: the grid whose tiles are delivered.
            suffix: ".png" (lossless) or ".jpg".
        """
        self.folder = ensure_dir(folder)
        self.slide_name = slide_name
        self.grid = grid
        self.suffix = suffix
        self.rows: dict[str, list] = {
            "file": [],
            "slide": [],
            "x_level0_px": [],
            "y_level0_px": [],
            "size_level0_px": [],
            "tissue_fraction": [],
            "label": [],
        }

    def __call__(self, batch: TileBatch) -> None:
        """Write the kept tiles of ``batch``."""
        if batch.images is None:
            return
        for k in np.flatnonzero(batch.kept):
            i = int(batch.indices[k])
            x, y = int(self.grid.x[i]), int(self.grid.y[i])
            name = f"{self.slide_name}_x{x}_y{y}{self.suffix}"
            write_image(self.folder / name, batch.images[k])
            self.rows["file"].append(name)
            self.rows["slide"].append(self.slide_name)
            self.rows["x_level0_px"].append(x)
            self.rows["y_level0_px"].append(y)
            self.rows["size_level0_px"].append(self.grid.tile_size_px)
            self.rows["tissue_fraction"].append(float(self.grid.tissue_fraction[i]))
            self.rows["label"].append("")

    def finish(self) -> Path:
        """Write the index (``tiles.csv``; fill in ``label`` to train on these tiles)."""
        return write_csv_columns(self.folder / "tiles.csv", self.rows)
