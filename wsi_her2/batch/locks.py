"""Locks that let several `wsi-her2 batch` runs share one output folder.

Two kinds, both ``flock`` locks on small files in ``OUT``, which the system releases when the
holder exits in any way (``kill -9`` included), so a lock is never stale:

* a **slide lock** (``OUT/.wsi-her2-locks/<hash of the slide's name>.lock``), held exclusively by
  the process that scores the slide, from before its folder is cleared until its manifest is
  written. Another run that reaches the same slide meanwhile leaves it, scores the others, then
  waits for the lock and takes the first run's result (or scores it, if that run died).
* a **run lock** per summary (``OUT/.wsi-her2-<summary>.lock``), held shared by every run writing
  that summary. A run that finds itself alone (it gets the lock exclusively) removes the
  temporaries left by interrupted summary writes; while others run, they might be theirs.

The lock file of a held slide lock says who holds it (host, process id, since when), for people;
the lock itself is the ``flock``, never the file's content or existence. Where the file system
has no ``flock`` (``ENOLCK``, some network mounts), runs are not protected from each other:
:func:`locking_supported` says so and ``wsi-her2 batch`` warns.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from wsi_her2.errors import OutputError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows has no flock: runs are not protected from each other
    fcntl = None  # type: ignore[assignment]

LOCK_FOLDER = ".wsi-her2-locks"
WAIT_POLL_S = 0.2
RUN_LOCK_WAIT_S = 30.0
# errno values meaning "this file system cannot lock": go on unlocked rather than fail the batch.
_NO_LOCKING = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


def slide_lock_path(out_dir: Path, name: str) -> Path:
    """Where the lock of the slide called ``name`` lives (names may hold ``/`` and any character)."""
    digest = hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()[:24]
    return Path(out_dir) / LOCK_FOLDER / f"{digest}.lock"


def _open(path: Path) -> IO[bytes]:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Unbuffered: nothing is left to flush at close, where a full disk would raise.
        return open(path, "a+b", buffering=0)  # held while the lock is
    except OSError as exc:
        raise OutputError(f"cannot write the lock file {path}: {exc.strerror or exc}") from exc


def _flock(handle: IO[bytes], mode: int, wait: bool) -> bool:
    """True when the lock is taken (or the file system cannot lock), False when another holds it."""
    if fcntl is None:  # pragma: no cover
        return True
    try:
        fcntl.flock(handle.fileno(), mode | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        return False
    except OSError as exc:
        if exc.errno in _NO_LOCKING:
            return True
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            return False
        raise OutputError(f"cannot lock {handle.name}: {exc.strerror or exc}") from exc
    return True


def _note_holder(handle: IO[bytes], name: str) -> None:
    with contextlib.suppress(OSError):  # the note is for people; a full disk must not fail the slide
        handle.seek(0)
        handle.truncate()
        note = f"{socket.gethostname()} pid {os.getpid()} since {time.strftime('%Y-%m-%dT%H:%M:%S')}: {name}\n"
        handle.write(note.encode("utf-8", "surrogateescape"))


@contextlib.contextmanager
def slide_lock(out_dir: Path, name: str, *, wait: bool = False) -> Iterator[bool]:
    """Hold the slide's lock for the ``with`` block.

    Args:
        out_dir: the batch output folder.
        name: the slide's name in the batch.
        wait: block until the lock is free (else give up at once).

    Yields:
        True when this process holds the lock, False when another does (only without ``wait``).

    Raises:
        OutputError: the lock file cannot be created.
    """
    handle = _open(slide_lock_path(out_dir, name))
    try:
        held = _flock(handle, fcntl.LOCK_EX if fcntl else 0, wait)
        if held:
            _note_holder(handle, name)
        try:
            yield held
        finally:
            if held:
                with contextlib.suppress(OSError):
                    handle.truncate(0)
    finally:
        handle.close()  # closing releases the flock


def slide_is_locked(out_dir: Path, name: str) -> bool:
    """True while another process holds the slide's lock (a snapshot: it may change at once)."""
    with slide_lock(out_dir, name) as held:
        return not held


def wait_for_slide(out_dir: Path, name: str, timeout_s: float | None = None) -> bool:
    """Wait until no process holds the slide's lock; True unless ``timeout_s`` passed first."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        # Polling, not a blocking flock: a signal (Ctrl-C) must be able to stop the wait.
        if not slide_is_locked(out_dir, name):
            return True
        if deadline is not None and time.monotonic() > deadline:
            return False
        time.sleep(WAIT_POLL_S)


@contextlib.contextmanager
def run_lock(out_dir: Path, stem: str) -> Iterator[bool]:
    """Hold the run lock of summary ``stem`` shared for the ``with`` block.

    Yields:
        True when this run was alone when it started (it held the lock exclusively for a moment:
        leftovers of earlier runs' summary writes may be removed), else False.
    """
    handle = _open(Path(out_dir) / f".wsi-her2-{stem}.lock")
    try:
        alone = _flock(handle, fcntl.LOCK_EX if fcntl else 0, wait=False)
        yield_alone = alone
        if fcntl is not None:
            # Shared from here on: other runs may join. flock converts in place; a run starting in
            # the instant between sees the exclusive lock and counts itself not alone, which only
            # means it leaves old temporaries for a later run.
            deadline = time.monotonic() + RUN_LOCK_WAIT_S
            while not _flock(handle, fcntl.LOCK_SH, wait=False):
                if time.monotonic() > deadline:  # runs hold it exclusively for an instant only
                    raise OutputError(
                        f"{handle.name} has been locked exclusively for {RUN_LOCK_WAIT_S:.0f} s",
                        hint="another program holds it; wsi-her2 runs share it",
                    )
                time.sleep(WAIT_POLL_S)
        yield yield_alone
    finally:
        handle.close()


def locking_supported(out_dir: Path) -> bool:
    """False where the output folder's file system refuses ``flock`` (runs would not see each other)."""
    if fcntl is None:  # pragma: no cover
        return False
    probe = Path(out_dir) / LOCK_FOLDER / ".probe.lock"
    handle = _open(probe)
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        return exc.errno not in _NO_LOCKING
    finally:
        handle.close()
    return True
