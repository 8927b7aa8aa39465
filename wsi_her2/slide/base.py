"""The slide-reader interface every backend implements, and the facts a reader knows about its slide.

Coordinates are level-0 pixels everywhere: ``read_region`` takes the top-left corner in level-0
pixels and a size in pixels of the level asked for, like OpenSlide.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from wsi_her2.config import MAX_PLAUSIBLE_MPP, MIN_PLAUSIBLE_MPP
from wsi_her2.errors import MppError


@dataclass(frozen=True)
class LevelInfo:
    """One pyramid level.

    Attributes:
        index: level number, 0 = full resolution.
        width: level width in pixels.
        height: level height in pixels.
        downsample: level-0 pixels per pixel of this level.
        tile_width: stored tile width in pixels (0 when the level is not tiled).
        tile_height: stored tile height in pixels (0 when not tiled).
    """

    index: int
    width: int
    height: int
    downsample: float
    tile_width: int = 0
    tile_height: int = 0


@dataclass(frozen=True)
class SlideInfo:
    """What a reader knows about its slide.

    Attributes:
        path: the slide file.
        backend: the reader that opened it ("tifffile", "openslide" or "image").
        backend_reason: why that reader was chosen.
        vendor: format or vendor name (OpenSlide's vendor, "ome-tiff", "tiff", "jpeg", "png", ...).
        width: level-0 width in pixels.
        height: level-0 height in pixels.
        levels: the pyramid, level 0 first.
        mpp_x: µm per level-0 pixel along x actually used (None when unknown).
        mpp_y: µm per level-0 pixel along y actually used (None when unknown).
        mpp_source: "metadata", "override" or "unknown".
        metadata_mpp: the µm/px the file itself states, even if implausible (None when absent).
        objective_power: the scanner's nominal objective magnification, when known.
        associated_images: names of the non-pyramid images (label, macro, thumbnail, ...).
        compression: how level 0 is stored (e.g. "JPEG", "JPEG2000", "deflate"), when known.
        properties: raw key/value metadata from the file.
    """

    path: str
    backend: str
    backend_reason: str
    vendor: str
    width: int
    height: int
    levels: tuple[LevelInfo, ...]
    mpp_x: float | None
    mpp_y: float | None
    mpp_source: str
    metadata_mpp: float | None
    objective_power: float | None
    associated_images: tuple[str, ...] = ()
    compression: str | None = None
    properties: dict[str, str] = field(default_factory=dict)

    @property
    def mpp(self) -> float:
        """Mean µm per level-0 pixel; raises :class:`MppError` when unknown."""
        if self.mpp_x is None or self.mpp_y is None:
            raise MppError(
                f"{self.path}: the slide's µm/px is unknown",
                hint="give it with --mpp (e.g. --mpp 0.25 for a 40x scan, 0.5 for 20x)",
            )
        return (self.mpp_x + self.mpp_y) / 2.0

    @property
    def has_mpp(self) -> bool:
        """True when µm/px is known."""
        return self.mpp_x is not None and self.mpp_y is not None

    def to_dict(self, *, with_properties: bool = False) -> dict[str, Any]:
        """JSON-ready description (coordinates and sizes are level-0 pixels)."""
        out = asdict(self)
        out["levels"] = [asdict(level) for level in self.levels]
        out["associated_images"] = list(self.associated_images)
        out["coordinate_space"] = "level-0 pixels"
        if not with_properties:
            out.pop("properties")
        return out


@runtime_checkable
class SlideReader(Protocol):
    """What the rest of wsi-her2 needs from a slide backend."""

    @property
    def info(self) -> SlideInfo:
        """Facts about the slide."""
        ...

    def read_region(self, x: int, y: int, width: int, height: int, level: int = 0) -> np.ndarray:
        """Read pixels.

        Args:
            x: left edge in level-0 pixels.
            y: top edge in level-0 pixels.
            width: width in pixels of ``level``.
            height: height in pixels of ``level``.
            level: pyramid level to read.

        Returns:
            (height, width, 3) uint8 RGB; parts outside the slide are white.
        """
        ...

    def associated_image(self, name: str) -> np.ndarray:
        """An associated image (label, macro, thumbnail) as RGB uint8."""
        ...

    def close(self) -> None:
        """Release file handles."""
        ...

    def __enter__(self) -> SlideReader:
        """Use as a context manager that closes the slide."""
        ...

    def __exit__(self, *exc: object) -> None:
        """Close the slide."""
        ...


def finite_float(value: object) -> float | None:
    """A metadata value as a finite float, or None when absent, not a number, NaN or infinite."""
    if value is None or value == "":
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def resolve_mpp(
    path: str, metadata_mpp: tuple[float, float] | None, override: float | None
) -> tuple[float | None, float | None, str]:
    """Pick the µm/px to use: the override, else the file's when plausible.

    Returns:
        (mpp_x, mpp_y, source); (None, None, "unknown") when nothing usable exists.
    """
    if override is not None:
        return float(override), float(override), "override"
    if metadata_mpp is None:
        return None, None, "unknown"
    mx, my = metadata_mpp
    if all(MIN_PLAUSIBLE_MPP <= v <= MAX_PLAUSIBLE_MPP for v in (mx, my)):
        return float(mx), float(my), "metadata"
    return None, None, "unknown"


def require_mpp(info: SlideInfo) -> float:
    """The slide's µm/px, or a one-line error naming ``--mpp``.

    Raises:
        MppError: the µm/px is absent or implausible and was not overridden.
    """
    if info.has_mpp:
        return info.mpp
    if info.metadata_mpp is not None:
        raise MppError(
            f"{info.path}: implausible µm/px in the slide's metadata ({info.metadata_mpp:g} µm/px; "
            f"expected {MIN_PLAUSIBLE_MPP:g}-{MAX_PLAUSIBLE_MPP:g})",
            hint="give the true value with --mpp (e.g. --mpp 0.25 for a 40x scan, 0.5 for 20x)",
        )
    return info.mpp  # raises the "unknown" MppError


def transparent_to_white(rgba: np.ndarray) -> np.ndarray:
    """Composite an RGBA (straight alpha) array over white, as brightfield background is white."""
    rgb = rgba[..., :3]
    alpha = rgba[..., 3]
    if alpha.min() == 255:
        return np.ascontiguousarray(rgb)
    a = alpha.astype(np.float32)[..., None] / 255.0
    out = rgb.astype(np.float32) * a + 255.0 * (1.0 - a)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)
