"""The heatmap as an OME-NGFF 0.4 (OME-Zarr, Zarr v2) multiscale image, and a reader for it.

One pixel per grid position (the tile stride); channels are the model's per-tile values (class
probabilities or cell-class fractions, the predicted class, ...) and the tissue fraction; NaN where
no tile was scored. Axes are (c, y, x) with y and x in micrometres: the scale is the stride in µm,
and the translation puts each pixel's centre on its tile's centre, so napari (napari-ome-zarr) and
other NGFF viewers lay the heatmap over the slide. NGFF 0.4 is used, not 0.5, because it is what
most viewers read today.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from wsi_her2.errors import InputNotFoundError, OutputError
from wsi_her2.outputs.atomic import atomic_path
from wsi_her2.tiling.grid import TileGrid

NGFF_VERSION = "0.4"
# Levels halve the grid until it is this small (or after this many levels).
_MIN_LEVEL_SIDE = 16
_MAX_LEVELS = 6


@dataclass
class Heatmap:
    """A heatmap read back from disk (level 0 unless asked otherwise).

    Attributes:
        channels: channel names.
        data: (channels, rows, cols) float32.
        scale_um: (y, x) µm per heatmap pixel.
        translation_um: (y, x) µm of the centre of pixel (0, 0).
        attrs: the wsi-her2 metadata stored with it (tile size, stride, model, ...).
        levels: number of resolution levels stored.
    """

    channels: tuple[str, ...]
    data: np.ndarray
    scale_um: tuple[float, float]
    translation_um: tuple[float, float]
    attrs: dict[str, Any] = field(default_factory=dict)
    levels: int = 1

    def channel(self, name: str) -> np.ndarray:
        """One channel as (rows, cols)."""
        return self.data[self.channels.index(name)]

    def pixel_of(self, x_level0_px: float, y_level0_px: float) -> tuple[int, int]:
        """(row, col) of the heatmap pixel whose tile contains level-0 point (x, y), at level 0."""
        stride = self.attrs["stride_level0_px"]
        return int(y_level0_px // stride), int(x_level0_px // stride)


def grid_image(grid: TileGrid, values: np.ndarray) -> np.ndarray:
    """Scatter per-tile values (n_tiles, channels) into a (channels, rows, cols) NaN image."""
    image = np.full((values.shape[1], grid.n_rows, grid.n_cols), np.nan, np.float32)
    image[:, grid.row, grid.col] = values.T
    return image


def _downsample(image: np.ndarray) -> np.ndarray:
    """2x2 NaN-aware mean of a (c, h, w) image (odd edges keep their partial blocks)."""
    c, h, w = image.shape
    padded = np.full((c, h + h % 2, w + w % 2), np.nan, np.float32)
    padded[:, :h, :w] = image
    blocks = padded.reshape(c, padded.shape[1] // 2, 2, padded.shape[2] // 2, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN blocks are expected: no tile there
        return np.nanmean(blocks, axis=(2, 4)).astype(np.float32)


def _pyramid(image: np.ndarray, class_channels: Sequence[int], predicted_channel: int | None) -> list[np.ndarray]:
    levels = [image]
    while len(levels) < _MAX_LEVELS and min(levels[-1].shape[1:]) > _MIN_LEVEL_SIDE:
        smaller = _downsample(levels[-1])
        if predicted_channel is not None and class_channels:
            # The class of a coarser pixel is the argmax of its mean class values, not a mean of labels.
            values = smaller[list(class_channels)]
            valid = ~np.isnan(values).all(axis=0)
            smaller[predicted_channel] = np.where(valid, np.nanargmax(np.nan_to_num(values, nan=-1.0), axis=0), np.nan)
        levels.append(smaller)
    return levels


def write_heatmap(
    path: str | Path,
    grid: TileGrid,
    channels: Sequence[str],
    values: np.ndarray,
    *,
    colors: Sequence[str],
    windows: Sequence[tuple[float, float]],
    class_channels: Sequence[int] = (),
    predicted_channel: int | None = None,
    name: str = "wsi-her2 heatmap",
    attrs: dict[str, Any] | None = None,
) -> Path:
    """Write per-tile values as an OME-NGFF multiscale heatmap (atomically, as a whole folder).

    Args:
        path: the ``.zarr`` folder.
        grid: the tile grid (positions, stride, µm/px).
        channels: channel names.
        values: (n_tiles, channels) per-tile values, NaN where unknown.
        colors: display colour of each channel (hex RGB, e.g. "C83232").
        windows: display range of each channel.
        class_channels: channels holding per-class values (for coarser levels' predicted class).
        predicted_channel: the channel holding the predicted class index.
        name: the image name.
        attrs: extra metadata stored under "wsi_her2".

    Raises:
        OutputError: the grid has no µm/px, or the store cannot be written.
    """
    import numcodecs
    import zarr

    if grid.mpp is None:
        raise OutputError("a heatmap needs the slide's µm/px for its scale", hint="give --mpp")
    image = grid_image(grid, np.asarray(values, np.float32))
    levels = _pyramid(image, class_channels, predicted_channel)
    stride_um = grid.stride_px * grid.mpp
    # Pixel (0, 0) of level 0 is the first tile; its centre is half a tile in, in level-0 pixel
    # centres (index - 0.5), in µm.
    offset_um = (grid.tile_size_px / 2 - 0.5) * grid.mpp
    datasets = []
    for i in range(len(levels)):
        factor = 2**i
        scale = stride_um * factor
        shift = offset_um + (factor - 1) / 2 * stride_um
        datasets.append(
            {
                "path": str(i),
                "coordinateTransformations": [
                    {"type": "scale", "scale": [1.0, scale, scale]},
                    {"type": "translation", "translation": [0.0, shift, shift]},
                ],
            }
        )
    metadata = {
        "multiscales": [
            {
                "version": NGFF_VERSION,
                "name": name,
                "axes": [
                    {"name": "c", "type": "channel"},
                    {"name": "y", "type": "space", "unit": "micrometer"},
                    {"name": "x", "type": "space", "unit": "micrometer"},
                ],
                "datasets": datasets,
                "type": "mean",
                "metadata": {"description": "2x2 NaN-aware mean; predicted class recomputed as the argmax"},
            }
        ],
        "omero": {
            "name": name,
            "version": NGFF_VERSION,
            "channels": [
                {"label": ch, "color": col, "active": True, "window": {"start": lo, "end": hi, "min": lo, "max": hi}}
                for ch, col, (lo, hi) in zip(channels, colors, windows, strict=True)
            ],
            "rdefs": {"model": "color"},
        },
        "wsi_her2": {
            "channels": list(channels),
            "coordinate_space": "level-0 pixels; pixel (r, c) of level 0 is the tile at x = c * stride, y = r * stride",
            "tile_size_level0_px": grid.tile_size_px,
            "stride_level0_px": grid.stride_px,
            "mpp": grid.mpp,
            "grid_shape": [grid.n_rows, grid.n_cols],
            **(attrs or {}),
        },
    }  # fmt: skip
    compressor = numcodecs.Blosc(cname="zstd", clevel=5, shuffle=numcodecs.Blosc.SHUFFLE)
    # The store is made in memory (a heatmap has one pixel per tile: megabytes at most) and then
    # written file by file here. zarr's own local store writes chunks concurrently in its I/O
    # thread, and when one write fails (a full disk) the others go on after the error has reached
    # us, re-creating the temporary folder that the failure has just removed.
    store: dict[str, Any] = {}
    group: Any = zarr.open_group(zarr.storage.MemoryStore(store), mode="w", zarr_format=2)
    for i, level in enumerate(levels):
        chunk = (level.shape[0], min(level.shape[1], 1024), min(level.shape[2], 1024))
        array = group.create_array(
            str(i),
            shape=level.shape,
            chunks=chunk,
            dtype="float32",
            fill_value=float("nan"),
            compressors=[compressor],
            chunk_key_encoding={"name": "v2", "separator": "/"},  # NGFF 0.4 requires "/"
        )
        array[:] = level
    group.attrs.update(metadata)
    with atomic_path(path) as tmp:
        for key, buffer in sorted(store.items()):
            target = tmp.joinpath(*key.split("/"))
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(buffer.to_bytes())
    return Path(path)


def read_heatmap(path: str | Path, level: int = 0) -> Heatmap:
    """Load a heatmap written by :func:`write_heatmap`.

    Raises:
        InputNotFoundError: the store does not exist or is not a wsi-her2 heatmap.
    """
    import zarr

    path = Path(path)
    if not path.exists():
        raise InputNotFoundError(f"heatmap not found: {path}")
    try:
        group: Any = zarr.open_group(str(path), mode="r")
        attrs: dict[str, Any] = dict(group.attrs)
        multiscale: dict[str, Any] = attrs["multiscales"][0]
        dataset: dict[str, Any] = multiscale["datasets"][level]
        data = np.asarray(group[dataset["path"]][:])
    except (KeyError, IndexError, ValueError, FileNotFoundError) as exc:
        raise InputNotFoundError(f"{path} is not a wsi-her2 OME-Zarr heatmap ({exc})") from exc
    transforms = {t["type"]: t for t in dataset["coordinateTransformations"]}
    scale = transforms["scale"]["scale"]
    shift = transforms.get("translation", {"translation": [0, 0, 0]})["translation"]
    extra = attrs.get("wsi_her2", {})
    return Heatmap(
        channels=tuple(extra.get("channels", [])),
        data=data,
        scale_um=(float(scale[1]), float(scale[2])),
        translation_um=(float(shift[1]), float(shift[2])),
        attrs=extra,
        levels=len(multiscale["datasets"]),
    )
