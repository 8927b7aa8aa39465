"""Pictures of explanations: CAM overlays, the paper-style panel and per-class galleries.

Torch-free. Overlays use OpenCV's JET colour map (the one pytorch-grad-cam and the source paper's
Figs. 6-7 use): blue where a map is 0, red at its maximum. Figures are drawn with matplotlib's
object-oriented API (no pyplot state, no backend switching) and written atomically.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from wsi_her2.outputs.atomic import atomic_path

# Weight of the colour map in an overlay (the rest is the image).
CAM_ALPHA = 0.45
# Side of each picture inside a panel or gallery, in pixels (sources are shrunk to it).
CELL_PX = 320


def class_slug(name: str) -> str:
    """A file-name-safe form of a class name: "3+" -> "3plus", "negative" -> "negative"."""
    slug = re.sub(r"[^A-Za-z0-9_-]+", "_", name.replace("+", "plus")).strip("_")
    return slug or "class"


def upsample(cam: np.ndarray, width: int, height: int) -> np.ndarray:
    """Bilinear resize of a (h, w) map to the image size (pixel centres aligned, as OpenCV does)."""
    return cv2.resize(np.asarray(cam, np.float32), (int(width), int(height)), interpolation=cv2.INTER_LINEAR)


def colorize(cam01: np.ndarray) -> np.ndarray:
    """JET colours (RGB uint8) of a 0-1 map."""
    scaled = np.clip(np.nan_to_num(cam01) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return cv2.cvtColor(cv2.applyColorMap(scaled, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)


def cam_overlay(rgb: np.ndarray, cam01: np.ndarray, alpha: float = CAM_ALPHA) -> np.ndarray:
    """Blend a 0-1 CAM (any resolution; upsampled bilinearly) over an RGB uint8 image."""
    h, w = rgb.shape[:2]
    heat = colorize(upsample(cam01, w, h))
    return cv2.addWeighted(np.ascontiguousarray(rgb[..., :3]), 1.0 - alpha, heat, alpha, 0.0)


def shrink(rgb: np.ndarray, side_px: int = CELL_PX) -> np.ndarray:
    """Shrink an image so its longest side is at most ``side_px`` (area interpolation)."""
    h, w = rgb.shape[:2]
    factor = side_px / max(h, w)
    if factor >= 1.0:
        return rgb
    return cv2.resize(rgb, (max(1, round(w * factor)), max(1, round(h * factor))), interpolation=cv2.INTER_AREA)


# Layout in inches (at 100 dpi): picture side, room for a picture's title, margins, colour bar, legend.
SIDE_IN = 2.2
_MIN_WIDTH_IN = 7.0
_TITLE_IN = 0.42
_GAP_IN = 0.08
_TOP_IN = 0.45
_BAR_IN = 0.9
_LEGEND_IN = 0.45


class _Grid:
    """A fixed layout (no constrained layout: it costs seconds per gallery): rows x cols pictures."""

    def __init__(self, n_rows: int, n_cols: int, *, side_in: float, bar: bool, legend: bool, title: bool) -> None:
        from matplotlib.figure import Figure

        self.side = side_in
        self.top = _TOP_IN if title else 0.1
        self.bottom = _LEGEND_IN if legend else 0.1
        self.bar_left = n_cols * (side_in + _GAP_IN) + _GAP_IN
        self.width = max(_MIN_WIDTH_IN, self.bar_left + (_BAR_IN if bar else 0.0))
        self.height = self.top + n_rows * (side_in + _TITLE_IN) + self.bottom
        self.fig = Figure(figsize=(self.width, self.height), dpi=100)

    def axes(self, r: int, c: int) -> Any:
        """The axes of picture (r, c)."""
        left = _GAP_IN + c * (self.side + _GAP_IN)
        bottom = self.height - self.top - (r + 1) * (self.side + _TITLE_IN) + 0.05
        ax = self.fig.add_axes(
            (left / self.width, bottom / self.height, self.side / self.width, self.side / self.height)
        )
        ax.set_axis_off()
        return ax

    def colorbar(self, label: str) -> None:
        """A JET 0-1 colour bar on the right."""
        from matplotlib.cm import ScalarMappable
        from matplotlib.colors import Normalize

        span = min(self.height - self.top - self.bottom, 3.0)
        bottom = self.height - self.top - span
        cax = self.fig.add_axes(
            ((self.bar_left + 0.1) / self.width, bottom / self.height, 0.15 / self.width, span / self.height)
        )
        bar = self.fig.colorbar(ScalarMappable(norm=Normalize(0.0, 1.0), cmap="jet"), cax=cax)
        bar.set_label(label, fontsize=7)
        bar.ax.tick_params(labelsize=7)

    def legend(self, entries: Sequence[tuple[str, tuple[int, int, int]]]) -> None:
        """Colour patches along the bottom."""
        from matplotlib.patches import Patch

        handles = [Patch(color=(rgb[0] / 255.0, rgb[1] / 255.0, rgb[2] / 255.0), label=label) for label, rgb in entries]
        self.fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 5), fontsize=8, frameon=False)

    def title(self, text: str) -> None:
        """The figure title."""
        self.fig.suptitle(text, fontsize=10, y=1.0 - 0.08 / self.height, va="top")

    def save(self, path: str | Path) -> Path:
        """Write the PNG atomically."""
        path = Path(path)
        with atomic_path(path) as tmp:
            self.fig.savefig(tmp, format="png", dpi=100)
        return path


def panel_figure(
    path: str | Path,
    image: np.ndarray,
    maps: Sequence[np.ndarray],
    titles: Sequence[str],
    *,
    title: str = "",
    image_title: str = "input",
    colorbar_label: str | None = "Grad-CAM (each map scaled to its maximum)",
    legend: Sequence[tuple[str, tuple[int, int, int]]] = (),
    side_in: float = SIDE_IN,
) -> Path:
    """One row: the input, then one overlay per layer (the source paper's Figs. 6-7).

    Args:
        path: the PNG to write.
        image: the input, RGB uint8.
        maps: overlays (RGB uint8), one per layer.
        titles: a title per overlay.
        title: the figure title (prediction, explained class).
        image_title: the input's title.
        colorbar_label: what the colours mean (None: no colour bar).
        legend: colour patches (label, RGB) under the row (for evidence images).
        side_in: side of each picture in inches (100 px per inch).
    """
    return gallery_figure(
        path, [[image, *maps]], [[image_title, *titles]], title=title,
        colorbar_label=colorbar_label if maps else None, legend=legend, side_in=side_in,
    )  # fmt: skip


def gallery_figure(
    path: str | Path,
    rows: Sequence[Sequence[np.ndarray]],
    titles: Sequence[Sequence[str]],
    *,
    title: str = "",
    colorbar_label: str | None = None,
    legend: Sequence[tuple[str, tuple[int, int, int]]] = (),
    side_in: float = SIDE_IN,
) -> Path:
    """A grid of pictures, each with its own small title (e.g. one row per tile: the tile, then its maps).

    Args:
        path: the PNG to write.
        rows: the pictures of each row (RGB uint8).
        titles: a title per picture, in the same layout.
        title: the figure title.
        colorbar_label: add a JET colour bar with this label (for CAM overlays).
        legend: colour patches (label, RGB) under the grid (for evidence images).
        side_in: side of each picture in inches (100 px per inch).
    """
    n_cols = max([len(r) for r in rows] + [1])
    grid = _Grid(max(1, len(rows)), n_cols, side_in=side_in, bar=bool(colorbar_label and rows), legend=bool(legend),
                 title=bool(title))  # fmt: skip
    pixels = max(CELL_PX, round(side_in * 100))
    for r, row in enumerate(rows):
        for c, picture in enumerate(row):
            ax = grid.axes(r, c)
            ax.imshow(shrink(picture, pixels), interpolation="antialiased")
            if r < len(titles) and c < len(titles[r]):
                ax.set_title(titles[r][c], fontsize=7)
    if not rows:
        grid.axes(0, 0).text(0.5, 0.5, "no tiles", ha="center", va="center", fontsize=10)
    if colorbar_label and rows:
        grid.colorbar(colorbar_label)
    if legend:
        grid.legend(legend)
    if title:
        grid.title(title)
    return grid.save(path)
