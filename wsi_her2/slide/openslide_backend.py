"""Vendor formats through OpenSlide: NDPI, MRXS, SCN, Philips TIFF, DICOM, BIF, VMS.

Also any SVS or generic TIFF that the direct reader declines.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import openslide

from wsi_her2.errors import SlideReadError
from wsi_her2.slide.base import LevelInfo, SlideInfo, finite_float, resolve_mpp, transparent_to_white
from wsi_her2.slide.limits import check_levels


class OpenSlideReader:
    """A :class:`~wsi_her2.slide.base.SlideReader` backed by openslide-python."""

    def __init__(self, path: str | Path, *, mpp: float | None = None, reason: str = "vendor format") -> None:
        """Open ``path`` with OpenSlide.

        Raises:
            SlideReadError: OpenSlide cannot open the file.
        """
        self._path = str(path)
        try:
            self._slide = openslide.OpenSlide(self._path)
        except (openslide.OpenSlideError, OSError, ValueError) as exc:
            raise SlideReadError(f"{path}: OpenSlide cannot open it ({exc})") from exc
        props = dict(self._slide.properties)
        mx, my = (
            finite_float(props.get(openslide.PROPERTY_NAME_MPP_X)),
            finite_float(props.get(openslide.PROPERTY_NAME_MPP_Y)),
        )
        metadata_mpp = (mx, my) if mx and my else None
        mpp_x, mpp_y, source = resolve_mpp(self._path, metadata_mpp, mpp)
        levels = []
        for i, ((w, h), ds) in enumerate(zip(self._slide.level_dimensions, self._slide.level_downsamples, strict=True)):
            tw = int(finite_float(props.get(f"openslide.level[{i}].tile-width")) or 0)
            th = int(finite_float(props.get(f"openslide.level[{i}].tile-height")) or 0)
            levels.append(LevelInfo(i, int(w), int(h), float(ds), tw, th))
        try:
            check_levels(self._path, levels, bytes_per_pixel=4)  # OpenSlide decodes into RGBA
        except BaseException:
            self._slide.close()
            raise
        self._info = SlideInfo(
            path=self._path,
            backend="openslide",
            backend_reason=reason,
            vendor=props.get(openslide.PROPERTY_NAME_VENDOR, "unknown"),
            width=levels[0].width,
            height=levels[0].height,
            levels=tuple(levels),
            mpp_x=mpp_x,
            mpp_y=mpp_y,
            mpp_source=source,
            metadata_mpp=mx,
            objective_power=finite_float(props.get(openslide.PROPERTY_NAME_OBJECTIVE_POWER)),
            associated_images=tuple(self._slide.associated_images.keys()),
            compression=None,
            properties=props,
        )

    @property
    def info(self) -> SlideInfo:
        """Facts about the slide."""
        return self._info

    def read_region(self, x: int, y: int, width: int, height: int, level: int = 0) -> np.ndarray:
        """Read ``width`` x ``height`` pixels of ``level`` at level-0 (x, y); RGB uint8, white outside."""
        try:
            image = self._slide.read_region((int(x), int(y)), int(level), (int(width), int(height)))
        except openslide.OpenSlideError as exc:
            raise SlideReadError(f"{self._path}: cannot read pixels ({exc}); the file is corrupt") from exc
        return transparent_to_white(np.asarray(image))

    def associated_image(self, name: str) -> np.ndarray:
        """An associated image (label, macro, thumbnail) as RGB uint8."""
        return transparent_to_white(np.asarray(self._slide.associated_images[name].convert("RGBA")))

    def close(self) -> None:
        """Close the slide."""
        self._slide.close()

    def __enter__(self) -> OpenSlideReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
