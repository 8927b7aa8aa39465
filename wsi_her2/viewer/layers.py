"""The heatmap layers: one transparent PNG per channel of ``heatmap.zarr``, laid over the slide.

The heatmap has one pixel per tile, so each channel is one small image that OpenSeadragon places
as a simple image in level-0 coordinates (no tile pyramid needed). The predicted class is drawn in
the QuPath-like class colours; every other channel (class probabilities, DAB cell fractions, mean
membrane DAB, cell counts, tissue fraction) through the viridis colour map over its display window
(the window stored in the store's OMERO metadata). Pixels with no tile are transparent.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from wsi_her2.her2 import CLASS_COLORS_RGB
from wsi_her2.outputs.heatmap import Heatmap, read_heatmap
from wsi_her2.viewer.errors import RequestError

PREDICTED = "predicted_class"
# Viridis at 9 evenly spaced stops (matplotlib's values); linear interpolation between them is
# indistinguishable from the full table at heatmap scale, and needs no matplotlib import.
VIRIDIS_STOPS: tuple[tuple[int, int, int], ...] = (
    (68, 1, 84),
    (71, 44, 122),
    (59, 81, 139),
    (44, 113, 142),
    (33, 144, 141),
    (39, 173, 129),
    (92, 200, 99),
    (170, 220, 50),
    (253, 231, 37),
)
# Long side the overlay images are enlarged to (nearest neighbour), so that the browser's smoothing
# only blurs a thin band at tile edges instead of smearing whole tiles into each other.
_TARGET_SIDE_PX = 2048
_MAX_FACTOR = 64


def viridis_lut() -> np.ndarray:
    """(256, 3) uint8 viridis lookup table."""
    stops = np.asarray(VIRIDIS_STOPS, np.float32)
    positions = np.linspace(0.0, 1.0, len(stops))
    t = np.linspace(0.0, 1.0, 256)
    return np.stack([np.interp(t, positions, stops[:, k]) for k in range(3)], axis=1).round().astype(np.uint8)


def _hex(rgb: Sequence[int]) -> str:
    return "#" + "".join(f"{int(v):02x}" for v in rgb)


def channel_label(name: str) -> str:
    """A human label of a heatmap channel name."""
    if name == PREDICTED:
        return "predicted class"
    if name.startswith("p(") and name.endswith(")"):
        return f"probability of {name[2:-1]}"
    if name.startswith("fraction_cells(") and name.endswith(")"):
        return f"fraction of cells {name[15:-1]}"
    return name.replace("_", " ")


class HeatmapLayers:
    """The channels of a ``heatmap.zarr`` as coloured, transparent PNG images (cached, thread-safe).

    Attributes:
        heatmap: level 0 of the heatmap.
        classes: the class names (index = predicted class value).
        stride: level-0 pixels between tiles.
        tile_size: tile side in level-0 pixels.
    """

    def __init__(
        self, path: str | Path, classes: Sequence[str] | None = None, slide_size: tuple[int, int] | None = None
    ) -> None:
        """Read the heatmap store.

        Args:
            path: the ``heatmap.zarr`` folder.
            classes: class names; the store's own list when None.
            slide_size: level-0 (width, height) of the slide; the images stop at its edges (edge tiles
                run past them). None draws every tile whole.

        Raises:
            InputNotFoundError: the store is missing or not a wsi-her2 heatmap.
        """
        self.path = Path(path)
        self.heatmap: Heatmap = read_heatmap(self.path, 0)
        attrs = self.heatmap.attrs
        self.classes: tuple[str, ...] = tuple(classes or attrs.get("classes") or ("0", "1+", "2+", "3+"))
        self.stride = int(attrs.get("stride_level0_px") or 1)
        self.tile_size = int(attrs.get("tile_size_level0_px") or self.stride)
        self.slide_size = slide_size if slide_size and min(slide_size) > 0 else None
        self._windows = _omero_windows(self.path)
        self._pngs: dict[str, bytes] = {}
        self._lock = threading.Lock()

    @property
    def channels(self) -> tuple[str, ...]:
        """Channel names, the predicted class first."""
        names = list(self.heatmap.channels)
        if PREDICTED in names:
            names.remove(PREDICTED)
            names.insert(0, PREDICTED)
        return tuple(names)

    @property
    def grid_shape(self) -> tuple[int, int]:
        """(rows, cols) of the heatmap."""
        return int(self.heatmap.data.shape[1]), int(self.heatmap.data.shape[2])

    @property
    def factor(self) -> int:
        """Image pixels per heatmap pixel of the PNGs."""
        rows, cols = self.grid_shape
        return max(1, min(_MAX_FACTOR, _TARGET_SIDE_PX // max(rows, cols, 1)))

    def _image_size(self) -> tuple[int, int]:
        """(width, height) of the PNGs: the grid enlarged, cut at the slide's edges."""
        rows, cols = self.grid_shape
        k = self.factor
        width, height = cols * k, rows * k
        if self.slide_size is not None:
            offset = (self.tile_size - self.stride) / 2.0
            width = max(1, min(width, math.ceil((self.slide_size[0] - offset) / self.stride * k)))
            height = max(1, min(height, math.ceil((self.slide_size[1] - offset) / self.stride * k)))
        return width, height

    def placement(self) -> dict[str, float]:
        """Where the overlay images go, in level-0 pixels.

        Pixel (r, c) is the tile at (c, r) x stride; it is drawn as the stride-sized square centred
        on its tile (the whole tile when tiles do not overlap), cut at the slide's edges.
        """
        offset = (self.tile_size - self.stride) / 2.0
        width, height = self._image_size()
        scale = self.stride / self.factor
        return {"x": offset, "y": offset, "width": width * scale, "height": height * scale}

    def window(self, channel: str) -> tuple[float, float]:
        """The display range of a continuous channel."""
        if channel in self._windows:
            return self._windows[channel]
        values = self._channel(channel)
        finite = values[np.isfinite(values)]
        if finite.size == 0:
            return 0.0, 1.0
        lo, hi = float(finite.min()), float(finite.max())
        return (lo, hi if hi > lo else lo + 1.0)

    def legend(self, channel: str) -> dict[str, Any]:
        """How the page draws a channel's legend: class swatches, or a colour bar and its range."""
        self._channel(channel)
        if channel == PREDICTED:
            return {
                "kind": "classes",
                "classes": [{"name": c, "color": _hex(CLASS_COLORS_RGB.get(c, (128, 128, 128)))} for c in self.classes],
            }
        lo, hi = self.window(channel)
        return {"kind": "continuous", "min": lo, "max": hi, "colors": [_hex(c) for c in VIRIDIS_STOPS]}

    def describe(self) -> list[dict[str, Any]]:
        """Every channel: name, label and legend."""
        return [{"name": c, "label": channel_label(c), "legend": self.legend(c)} for c in self.channels]

    def rgba(self, channel: str) -> np.ndarray:
        """A channel as (rows, cols, 4) RGBA uint8, one pixel per tile, transparent where no tile.

        Raises:
            RequestError: no such channel.
        """
        values = self._channel(channel)
        rows, cols = values.shape
        out = np.zeros((rows, cols, 4), np.uint8)
        finite = np.isfinite(values)
        if channel == PREDICTED:
            index = np.where(finite, values, -1).round().astype(np.int64)
            for k, name in enumerate(self.classes):
                out[index == k] = (*CLASS_COLORS_RGB.get(name, (128, 128, 128)), 255)
            return out
        lo, hi = self.window(channel)
        t = np.clip((np.where(finite, values, lo) - lo) / (hi - lo if hi > lo else 1.0), 0.0, 1.0)
        out[..., :3] = viridis_lut()[(t * 255).round().astype(np.int64)]
        out[..., 3] = np.where(finite, 255, 0)
        return out

    def png(self, channel: str) -> bytes:
        """A channel as a PNG, enlarged by whole pixels (see the module notes); cached.

        Raises:
            RequestError: no such channel.
        """
        with self._lock:
            cached = self._pngs.get(channel)
        if cached is not None:
            return cached
        rgba = self.rgba(channel)
        factor = self.factor
        width, height = self._image_size()
        big = np.repeat(np.repeat(rgba, factor, axis=0), factor, axis=1)[:height, :width]
        ok, data = cv2.imencode(".png", cv2.cvtColor(big, cv2.COLOR_RGBA2BGRA), [cv2.IMWRITE_PNG_COMPRESSION, 6])
        if not ok:  # pragma: no cover - OpenCV always encodes RGBA PNG
            raise RuntimeError("cannot encode the overlay PNG")
        with self._lock:
            self._pngs[channel] = data.tobytes()
        return self._pngs[channel]

    def values_at(self, col: int, row: int) -> dict[str, float | None]:
        """Every channel's value at heatmap pixel (row, col); None where NaN.

        Raises:
            RequestError: the position is outside the grid.
        """
        rows, cols = self.grid_shape
        if not (0 <= row < rows and 0 <= col < cols):
            raise RequestError(f"tile position col={col}, row={row} is outside the {cols} x {rows} grid")
        out: dict[str, float | None] = {}
        for i, name in enumerate(self.heatmap.channels):
            v = float(self.heatmap.data[i, row, col])
            out[name] = v if math.isfinite(v) else None
        return out

    def _channel(self, channel: str) -> np.ndarray:
        if channel not in self.heatmap.channels:
            raise RequestError(f"unknown heatmap channel {channel!r}; channels: {', '.join(self.heatmap.channels)}")
        return self.heatmap.channel(channel)


def _omero_windows(path: Path) -> dict[str, tuple[float, float]]:
    """Display windows by channel label from the store's OMERO metadata (empty when absent)."""
    try:
        attrs = json.loads((path / ".zattrs").read_text(encoding="utf-8"))
        out = {}
        for ch in attrs.get("omero", {}).get("channels", []):
            window = ch.get("window") or {}
            lo, hi = float(window["start"]), float(window["end"])
            if math.isfinite(lo) and math.isfinite(hi) and hi > lo:
                out[str(ch["label"])] = (lo, hi)
        return out
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}
