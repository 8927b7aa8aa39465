"""Shared builders for the training tests: synthetic BCI folders and a trained checkpoint, made once per session.

Built with ``functools.cache`` keyed by the session's base temporary folder, so test modules in
``tests/training`` and ``tests/cli`` share one copy instead of training twice.
"""

from __future__ import annotations

import functools
import shutil
from pathlib import Path
from typing import Any

from wsi_her2.outputs.tile_table import write_csv_columns
from wsi_her2.training.config import DataConfig, TrainConfig

SIZE_PX = 64


def tiny_train(**changes: Any) -> TrainConfig:
    """The tiny test network on the CPU, no pretrained weights, a fast learning rate."""
    values: dict[str, Any] = {
        "architecture": "test_resnet",
        "pretrained": False,
        "epochs": 1,
        "lr": 1e-3,
        "batch_size": 16,
        "workers": 0,
        "device": "cpu",
    }
    values.update(changes)
    return TrainConfig(**values)


def tiny_data(**changes: Any) -> DataConfig:
    """64-px network input, a quarter of the images for validation."""
    values: dict[str, Any] = {"input_size_px": SIZE_PX, "val_fraction": 0.25}
    values.update(changes)
    return DataConfig(**values)


@functools.cache
def synthetic_bci(base: Path, n_per_class: int) -> Path:
    """A synthetic BCI folder with ``n_per_class`` training images per score (test: a quarter)."""
    from wsi_her2.training.synthetic import write_synthetic_bci

    return write_synthetic_bci(base / f"bci-{n_per_class}", n_per_class, SIZE_PX, seed=0)


@functools.cache
def trained_checkpoint(base: Path) -> Path:
    """test_resnet trained 6 epochs on 32 IHC images per class; the output folder."""
    from wsi_her2.training.fit import train

    out = base / "trained"
    train(synthetic_bci(base, 32), out, tiny_data(), tiny_train(epochs=6))
    return out


def make_tile_set(source_bci: Path, folder: Path, *, slides_per_class: int = 2, label_column: bool = True) -> Path:
    """A `wsi-her2 tile --save-tiles`-style folder from synthetic IHC images, one score per slide."""
    folder.mkdir(parents=True, exist_ok=True)
    rows: dict[str, list[Any]] = {
        name: []
        for name in ("file", "slide", "x_level0_px", "y_level0_px", "size_level0_px", "tissue_fraction", "label")
    }
    images = sorted((source_bci / "IHC" / "train").glob("*.png"))
    per_slide: dict[str, int] = {}
    for path in images:
        score = path.stem.split("_")[-1]
        k = per_slide.get(score, 0)
        per_slide[score] = k + 1
        slide = f"case{score.rstrip('+')}{k % slides_per_class}"
        x = 1024 * (k // slides_per_class)
        name = f"{slide}_x{x}_y0.png"
        shutil.copy(path, folder / name)
        for column, value in zip(rows, (name, slide, x, 0, 1024, 0.9, score if label_column else "")):
            rows[column].append(value)
    write_csv_columns(folder / "tiles.csv", rows)
    return folder
