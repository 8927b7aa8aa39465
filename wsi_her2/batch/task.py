"""One slide of a batch as a picklable task, and the function that runs it anywhere.

:func:`score_task` is what every executor runs (the calling process, a local process pool, a Dask
worker). It never raises for a bad slide: the error becomes the slide's summary row. The model is
loaded once per process and thread (:func:`cached_scorer`, keyed by the settings fingerprint and
the model hash) and kept for the next slides, so it is never reloaded per slide.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import multiprocessing
import os
import threading
import time
from pathlib import Path
from typing import Any

from wsi_her2.batch.discovery import SlideEntry, is_image
from wsi_her2.batch.locks import slide_lock
from wsi_her2.batch.manifest import clear_slide_folder, done_row, remove_partial_outputs, write_manifest
from wsi_her2.batch.summary import empty_row, failed_row, result_row
from wsi_her2.errors import MppError, OutputError

# A row's private key (removed by the batch before the row is kept) saying how the task ended:
# SCORED here, BUSY (another run holds the slide's lock; nothing was done) or DONE_ELSEWHERE (another
# run completed the slide since this run looked: its recorded row).
OUTCOME = "_outcome"
SCORED, BUSY, DONE_ELSEWHERE = "scored", "busy", "done_elsewhere"
_LOCAL = threading.local()
_ALL_SCORERS: list[Any] = []
_ALL_LOCK = threading.Lock()


@dataclasses.dataclass(frozen=True)
class SlideTask:
    """Everything a worker needs to score one slide and write its folder.

    Attributes:
        entry: the slide.
        out_dir: the slide's output folder.
        settings: how to score (a :class:`~wsi_her2.settings.ScoreSettings`).
        key: the inputs fingerprint written into the manifest.
        model_sha: the model's hash (part of the scorer cache key).
        mpp_fallback: µm/px for images and for slides whose own is missing or implausible (--mpp).
        loader_workers: loader processes per slide; None picks on the worker (Dask): cores divided by
            the worker's threads, and 0 inside daemonic processes, which may not have children.
        batch_dir: the batch output folder, whose slide locks keep two runs off one slide at once;
            None scores without a lock.
        force: score even when the folder holds a valid result for the same inputs.
    """

    entry: SlideEntry
    out_dir: Path
    settings: Any
    key: dict[str, Any]
    model_sha: str
    mpp_fallback: float | None = None
    loader_workers: int | None = None
    batch_dir: Path | None = None
    force: bool = False


def cached_scorer(settings: Any, model_sha: str) -> Any:
    """This thread's scorer for ``settings``, loaded on first use and kept.

    A scorer holds per-slide state while it scores, so each thread that scores slides has its own.
    """
    from wsi_her2.models import load_scorer

    cache: dict[tuple[str, str], Any] | None = getattr(_LOCAL, "scorers", None)
    if cache is None:
        cache = _LOCAL.scorers = {}
    key = (settings.fingerprint() + repr(settings.inference.to_dict()), model_sha)
    scorer = cache.get(key)
    if scorer is None:
        scorer = load_scorer(settings.model, inference=settings.inference, dab=settings.dab)
        cache[key] = scorer
        with _ALL_LOCK:
            _ALL_SCORERS.append(scorer)
    return scorer


def release_scorers() -> None:
    """Close every scorer this process loaded (GPU memory is freed)."""
    with _ALL_LOCK:
        scorers = list(_ALL_SCORERS)
        _ALL_SCORERS.clear()
    for scorer in scorers:
        with contextlib.suppress(Exception):  # closing is best effort at exit
            scorer.close()
    _LOCAL.scorers = {}


atexit.register(release_scorers)


def _dask_loader_workers() -> int:
    if multiprocessing.current_process().daemon:
        return 0  # a daemonic process (Dask's default nanny) may not start loader processes
    threads = 1
    try:
        from distributed import get_worker

        worker = get_worker()
        threads = int(getattr(worker.state, "nthreads", None) or getattr(worker, "nthreads", 1) or 1)
    except (ImportError, ValueError, AttributeError):
        pass
    return max(1, (os.cpu_count() or 1) // threads)


def _settings_for(task: SlideTask) -> Any:
    settings = task.settings
    workers = task.loader_workers if task.loader_workers is not None else _dask_loader_workers()
    if multiprocessing.current_process().daemon:
        workers = 0
    if workers != settings.loader.workers:
        settings = dataclasses.replace(settings, loader=settings.loader.replace(workers=workers))
    return settings


def score_task(task: SlideTask) -> dict[str, Any]:
    """Score one slide into its folder and return its summary row; failures become rows too.

    With ``task.batch_dir`` the slide's lock is taken first (without waiting): when another run
    holds it, nothing is touched and the row's :data:`OUTCOME` is :data:`BUSY`; when another run
    completed the slide meanwhile (and not ``task.force``), its recorded row comes back
    (:data:`DONE_ELSEWHERE`). Otherwise the folder's previous result is cleared (manifest first);
    on success the manifest is written after the outputs; on failure partial outputs are removed
    and a "failed" manifest records the error. KeyboardInterrupt and SystemExit are not caught.
    """
    if task.batch_dir is None:
        return _score_unlocked(task)
    entry = task.entry
    try:
        with slide_lock(task.batch_dir, entry.name) as held:
            if not held:
                return {**empty_row(entry.name, entry.path, "pending", "another run is scoring it"), OUTCOME: BUSY}
            previous = None if task.force else done_row(Path(task.out_dir), task.key, task.mpp_fallback)
            if previous is not None:
                return {**previous, OUTCOME: DONE_ELSEWHERE}
            return _score_unlocked(task)
    except OutputError as exc:  # the lock file cannot be made (a full disk): the slide fails, the batch goes on
        return {**failed_row(entry.name, entry.path, exc), OUTCOME: SCORED}


def _score_unlocked(task: SlideTask) -> dict[str, Any]:
    from wsi_her2.pipeline import run_score

    entry = task.entry
    t0 = time.perf_counter()
    folder = Path(task.out_dir)
    try:
        clear_slide_folder(folder)
        settings = _settings_for(task)
        scorer = cached_scorer(settings, task.model_sha)
        mpp, fallback_used = entry.mpp, None
        if mpp is None and task.mpp_fallback is not None and is_image(entry.path):
            mpp = fallback_used = task.mpp_fallback
        try:
            result = run_score(entry.path, folder, settings, mpp=mpp, roi_path=entry.roi, scorer=scorer)
        except MppError:
            if mpp is not None or task.mpp_fallback is None:
                raise
            fallback_used = task.mpp_fallback  # the slide has no (plausible) µm/px of its own
            result = run_score(entry.path, folder, settings, mpp=fallback_used, roi_path=entry.roi, scorer=scorer)
        row = result_row(entry.name, entry.path, result, time.perf_counter() - t0)
        write_manifest(
            folder,
            name=entry.name,
            status=result.status,
            key=task.key,
            row=row,
            files=result.files,
            mpp_fallback_used=fallback_used,
        )
        return {**row, OUTCOME: SCORED}
    except Exception as exc:
        row = failed_row(entry.name, entry.path, exc, time.perf_counter() - t0)
        remove_partial_outputs(folder)
        if folder.is_dir():
            with contextlib.suppress(OutputError):  # e.g. the disk is full: the summary still has the error
                write_manifest(folder, name=entry.name, status="failed", key=task.key, row=row, files={})
        return {**row, OUTCOME: SCORED}
