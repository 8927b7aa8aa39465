"""Atomic outputs: everything is written under a temporary name in the same folder, then renamed.

A crash, a kill or a full disk therefore never leaves a file (or a zarr folder) with the final
name and half the content. Temporary names start with ``.tmp-`` so they are easy to spot and clean.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from wsi_her2.errors import OutputError

TMP_PREFIX = ".tmp-"
REMOVE_ATTEMPTS = 20


def _tmp_sibling(path: Path) -> Path:
    return path.with_name(f"{TMP_PREFIX}{uuid.uuid4().hex[:8]}-{path.name}")


def _output_error(path: Path, exc: OSError) -> OutputError:
    if exc.errno == errno.ENOSPC:
        return OutputError(f"disk full while writing {path}", hint="free some space and run again")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return OutputError(f"cannot write {path}: permission denied", hint="choose another output folder")
    return OutputError(f"cannot write {path}: {exc.strerror or exc}")


def ensure_dir(path: str | Path) -> Path:
    """Create an output folder (and its parents).

    Raises:
        OutputError: it exists as a file or cannot be created.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"output path {path} exists and is not a folder", hint="choose a folder name")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _output_error(path, exc) from exc
    return path


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``.

    Works for files and folders (e.g. a zarr store). On failure the temporary is removed and the
    previous ``path``, if any, is left untouched.

    Raises:
        OutputError: the output cannot be written (disk full, permissions).
    """
    path = Path(path)
    if path.parent.exists() and not path.parent.is_dir():
        raise OutputError(
            f"cannot write {path}: {path.parent} is a file, not a folder", hint="choose another output path"
        )
    tmp = _tmp_sibling(path)
    try:
        yield tmp
        if tmp.is_dir():
            _replace_dir(tmp, path)
        else:
            if tmp.exists():
                with open(tmp, "rb+") as fh:
                    os.fsync(fh.fileno())
            os.replace(tmp, path)
    except OSError as exc:
        _remove(tmp)
        raise _output_error(path, exc) from exc
    except BaseException:
        _remove(tmp)
        raise


def _replace_dir(tmp: Path, path: Path) -> None:
    # Folders cannot be replaced in one rename when the target exists: move the old one aside
    # first, so at every instant `path` is either the complete old or the complete new folder.
    if path.exists():
        old = _tmp_sibling(path)
        os.replace(path, old)
        os.replace(tmp, path)
        _remove(old)
    else:
        os.replace(tmp, path)


def _remove(path: Path) -> None:
    # Cleanup after a failure must never raise a second error (e.g. the parent is not a folder).
    if path.is_dir() and not path.is_symlink():
        # A folder may still be growing for a moment: when one of zarr's concurrent chunk writes
        # fails (a full disk), the others run on in its I/O thread after the error has reached
        # us, so one pass can leave a folder behind. Try again briefly.
        for attempt in range(REMOVE_ATTEMPTS):
            shutil.rmtree(path, ignore_errors=True)
            if not os.path.lexists(path):
                break
            time.sleep(0.02 * (attempt + 1))
    else:
        with contextlib.suppress(OSError):
            path.unlink()


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return write_bytes(path, text.encode("utf-8"))


def _json_default(value: Any) -> Any:
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "to_dict"):
        return value.to_dict()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def to_json(data: Any) -> str:
    """JSON text with numpy values converted; NaN and infinities become null (strict JSON)."""
    return json.dumps(_nan_to_none(data), indent=2, default=_json_default, allow_nan=False, ensure_ascii=False)


def _nan_to_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_nan_to_none(v) for v in value]
    try:
        import numpy as np

        if isinstance(value, np.floating) and not np.isfinite(value):
            return None
    except ImportError:  # pragma: no cover
        pass
    return value


def write_json(path: str | Path, data: Any) -> Path:
    """Write ``data`` as indented JSON atomically."""
    return write_text(path, to_json(data) + "\n")


def clean_temporaries(folder: str | Path) -> int:
    """Remove leftovers of interrupted writes (``.tmp-*``) in ``folder``; returns how many."""
    count = 0
    folder = Path(folder)
    if folder.is_dir():
        for entry in folder.iterdir():
            if entry.name.startswith(TMP_PREFIX):
                _remove(entry)
                count += 1
    return count
