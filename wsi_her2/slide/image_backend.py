"""Plain images (JPEG, PNG, BMP, one-level TIFF that tifffile declines) as one-level slides.

The image is decoded once into memory and a small in-memory pyramid (4x steps) is built, so the
tissue detector and the loader read low resolutions as cheaply as from a real pyramid. Plain
images carry no trustworthy µm/px (a JPEG's 72 dpi is not the microscope's), so ``--mpp`` is needed.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from wsi_her2.errors import MalformedSlideError, SlideReadError
from wsi_her2.slide.base import LevelInfo, SlideInfo, resolve_mpp, transparent_to_white
from wsi_her2.slide.limits import check_image_size

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp"}


def _open_image(path: str) -> Image.Image:
    """Open an image's header (nothing decoded yet), with our own size limit instead of PIL's.

    PIL warns above 89 megapixels and refuses above 179; the limit here
    (:data:`~wsi_her2.slide.limits.MAX_IMAGE_PIXELS`, checked by the caller) is lower, so PIL's
    refusal only comes first when its global limit was lowered, and it is reported the same way.
    PIL's global setting is left as it is: it belongs to whoever else uses PIL in the process.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(path)
    except Image.DecompressionBombError as exc:
        raise MalformedSlideError(
            f"{path}: its header declares a plain image of more than {2 * (Image.MAX_IMAGE_PIXELS or 0) / 1e6:.0f} "
            "megapixels, too large to decode into memory",
            hint="convert it to a tiled pyramidal TIFF (e.g. vips tiffsave IN OUT.tif --tile --pyramid)",
        ) from exc


class ImageSlideReader:
    """A :class:`~wsi_her2.slide.base.SlideReader` over an image decoded into memory."""

    def __init__(self, path: str | Path, *, mpp: float | None = None, reason: str = "plain image") -> None:
        """Decode ``path``.

        Raises:
            SlideReadError: the file is not a decodable image or is too large for memory.
        """
        self._path = str(path)
        try:
            with _open_image(self._path) as image:
                check_image_size(self._path, image.width, image.height)
                fmt = (image.format or Path(self._path).suffix.lstrip(".")).lower()
                image.load()
                if image.mode in ("RGBA", "LA", "P", "PA"):
                    rgb = transparent_to_white(np.asarray(image.convert("RGBA")))
                elif image.mode == "RGB":
                    rgb = np.ascontiguousarray(np.asarray(image))  # no intermediate copy of a large image
                else:
                    rgb = np.ascontiguousarray(np.asarray(image.convert("RGB")))
        except SlideReadError:
            raise
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
            raise SlideReadError(f"{path}: not a readable image ({exc})") from exc
        self._levels_px = [rgb]
        while min(self._levels_px[-1].shape[:2]) >= 2048:
            prev = self._levels_px[-1]
            self._levels_px.append(
                cv2.resize(prev, (prev.shape[1] // 4, prev.shape[0] // 4), interpolation=cv2.INTER_AREA)
            )
        for array in self._levels_px:
            array.flags.writeable = False  # regions are views into these
        h, w = rgb.shape[:2]
        levels = tuple(LevelInfo(i, a.shape[1], a.shape[0], w / a.shape[1]) for i, a in enumerate(self._levels_px))
        mpp_x, mpp_y, source = resolve_mpp(self._path, None, mpp)
        self._info = SlideInfo(
            path=self._path,
            backend="image",
            backend_reason=reason,
            vendor="jpeg" if fmt in ("jpeg", "jpg", "mpo") else fmt,
            width=w,
            height=h,
            levels=levels,
            mpp_x=mpp_x,
            mpp_y=mpp_y,
            mpp_source=source,
            metadata_mpp=None,
            objective_power=None,
        )

    @property
    def info(self) -> SlideInfo:
        """Facts about the slide."""
        return self._info

    def read_region(self, x: int, y: int, width: int, height: int, level: int = 0) -> np.ndarray:
        """Read ``width`` x ``height`` pixels of ``level`` at level-0 (x, y); RGB uint8, white outside."""
        src = self._levels_px[level]
        ds = self._info.levels[level].downsample
        lx, ly = math.floor(x / ds + 0.5), math.floor(y / ds + 0.5)
        if lx >= 0 and ly >= 0 and lx + width <= src.shape[1] and ly + height <= src.shape[0]:
            return src[ly : ly + height, lx : lx + width]
        out = np.full((height, width, 3), 255, np.uint8)
        x0, y0 = max(lx, 0), max(ly, 0)
        x1, y1 = min(lx + width, src.shape[1]), min(ly + height, src.shape[0])
        if x0 < x1 and y0 < y1:
            out[y0 - ly : y1 - ly, x0 - lx : x1 - lx] = src[y0:y1, x0:x1]
        return out

    def associated_image(self, name: str) -> np.ndarray:
        """Plain images have no associated images."""
        raise KeyError(name)

    def close(self) -> None:
        """Free the decoded pixels."""
        self._levels_px = []

    def __enter__(self) -> ImageSlideReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
