"""Opening slides: one call picks the backend and records why.

Arrays returned by readers may be shared with the reader's cache: treat them as read-only.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Literal

from wsi_her2.errors import ConfigError, InputNotFoundError, MalformedSlideError, SlideReadError
from wsi_her2.slide.base import LevelInfo, SlideInfo, SlideReader, require_mpp
from wsi_her2.slide.regions import best_level, read_thumbnail, read_tile

Backend = Literal["auto", "tifffile", "openslide", "image"]
BACKENDS: tuple[str, ...] = ("auto", "tifffile", "openslide", "image")

# OpenSlide vendors whose files are plain TIFF pyramids that the direct reader handles faster.
_DIRECT_TIFF_VENDORS = {"aperio", "generic-tiff"}
SLIDE_SUFFIXES = {
    ".svs",
    ".tif",
    ".tiff",
    ".ndpi",
    ".vms",
    ".vmu",
    ".scn",
    ".mrxs",
    ".svslide",
    ".bif",
    ".dcm",
    ".qptiff",
}

__all__ = [
    "BACKENDS",
    "SLIDE_SUFFIXES",
    "LevelInfo",
    "SlideInfo",
    "SlideReader",
    "best_level",
    "open_slide",
    "read_thumbnail",
    "read_tile",
    "require_mpp",
]


def _check_path(path: Path) -> Path:
    if not path.exists():
        if path.is_symlink():
            try:
                path.resolve(strict=True)
            except RuntimeError:  # Python 3.11-3.12 raise this for a loop; 3.13 an OSError
                why = "which leads round a loop of links"
            except OSError as exc:
                why = "which leads round a loop of links" if exc.errno == errno.ELOOP else "which does not exist"
            else:
                why = "which cannot be followed"
            raise InputNotFoundError(
                f"slide not found: {path} is a symbolic link to {os.readlink(path)}, {why}",
                hint="check the link's target",
            )
        raise InputNotFoundError(f"slide not found: {path}", hint="check the path")
    if path.is_dir():
        dicoms = sorted(path.glob("*.dcm"))
        if dicoms:  # a DICOM WSI series is a folder; OpenSlide opens it from any one instance
            return dicoms[0]
        raise SlideReadError(
            f"{path} is a folder, not a slide",
            hint="give a slide file (use `wsi-her2 batch` to score a whole folder)",
        )
    if not path.is_file():  # a FIFO or a device would block or never end
        raise SlideReadError(f"{path} is not a regular file", hint="give a slide file")
    try:
        with path.open("rb") as fh:
            head = fh.read(16)
    except OSError as exc:
        raise InputNotFoundError(f"cannot read {path}: {exc.strerror}", hint="check its permissions") from exc
    if not head:
        raise SlideReadError(f"{path} is empty (0 bytes)", hint="copy the slide again")
    return path


def open_slide(path: str | Path, *, mpp: float | None = None, backend: Backend = "auto") -> SlideReader:
    """Open a whole-slide image or a plain image with the best backend.

    The choice: OpenSlide's vendor detection first; Aperio SVS and generic tiled TIFF are read
    from their stored tiles directly (tifffile + libjpeg-turbo, the fast path); other vendor
    formats through OpenSlide; TIFFs that OpenSlide rejects (OME-TIFF, one-level or striped TIFF)
    through tifffile; plain JPEG/PNG as one-level slides.

    Args:
        path: slide file (or a DICOM series folder).
        mpp: µm per level-0 pixel, overriding the file's metadata.
        backend: force a backend instead of choosing.

    Returns:
        An open reader; ``reader.info.backend_reason`` says why it was chosen.

    Raises:
        InputNotFoundError: the path does not exist or cannot be read.
        SlideReadError: no backend can read it.
        ConfigError: an unknown backend or a non-positive ``mpp``.
    """
    from wsi_her2.slide.image_backend import IMAGE_SUFFIXES, ImageSlideReader
    from wsi_her2.slide.openslide_backend import OpenSlideReader
    from wsi_her2.slide.tiff_backend import TiffSlideReader, is_tiff

    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}", hint=f"use one of {', '.join(BACKENDS)}")
    if mpp is not None and not mpp > 0:
        raise ConfigError(f"--mpp must be a positive number of µm per pixel, got {mpp!r}")
    file = _check_path(Path(path))
    if backend == "tifffile":
        return TiffSlideReader(file, mpp=mpp, reason="asked for (--backend tifffile)")
    if backend == "openslide":
        return OpenSlideReader(file, mpp=mpp, reason="asked for (--backend openslide)")
    if backend == "image":
        return ImageSlideReader(file, mpp=mpp, reason="asked for (--backend image)")

    import openslide

    try:
        vendor = openslide.OpenSlide.detect_format(str(file))
    except Exception:  # detect_format raises on some unreadable files; treat as "not OpenSlide's"
        vendor = None
    if vendor in _DIRECT_TIFF_VENDORS:
        try:
            return TiffSlideReader(file, mpp=mpp, vendor=vendor, reason=f"{vendor}: stored tiles read directly")
        except MalformedSlideError:
            raise  # unsafe or truncated whatever reads it
        except SlideReadError as exc:
            return OpenSlideReader(file, mpp=mpp, reason=f"{vendor}: direct reader declined ({exc.message})")
    if vendor is not None:
        return OpenSlideReader(file, mpp=mpp, reason=f"{vendor}: vendor format, read by OpenSlide")
    if is_tiff(file):
        return TiffSlideReader(file, mpp=mpp, reason="TIFF that OpenSlide does not open (OME-TIFF or one-level)")
    if file.suffix.lower() in IMAGE_SUFFIXES or file.suffix.lower() not in SLIDE_SUFFIXES:
        try:
            return ImageSlideReader(file, mpp=mpp, reason="plain image, read as a one-level slide")
        except MalformedSlideError:
            raise
        except SlideReadError:
            pass
    raise SlideReadError(
        f"{file}: not a slide format wsi-her2 can read (not OpenSlide's, not TIFF, not an image), "
        "or the file is corrupt",
        hint="supported: SVS, NDPI, MRXS, SCN, Philips/generic/OME-TIFF, DICOM, BIF, VMS, JPEG, PNG",
    )
