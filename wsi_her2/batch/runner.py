"""Run a batch: decide what is already done, score the rest on one machine or a cluster, write the summary.

Executors yield ``("start", task, None)`` when a slide starts (or is queued on a cluster) and
``("done", task, row)`` when it ends; :func:`run_batch` does the bookkeeping around them.

Several runs may share one output folder (two ``batch`` commands, overlapping shards, a cluster and
a workstation): each slide is scored under its lock (:mod:`wsi_her2.batch.locks`). A run that meets
a slide another run is scoring goes on with the others, then waits for that slide and takes the
other run's result, or scores it when that run died or failed to finish it.

On one machine, ``jobs`` slides are scored at once, each in its own process (started with
forkserver, loaded with the model once, kept for every slide it scores). ``jobs=1`` scores in
the calling process. Each slide's tile loader then has its own worker processes prefetching
tiles (``settings.loader.workers``; :func:`loader_workers_per_job` divides the cores).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from wsi_her2.batch.discovery import Discovery
from wsi_her2.batch.locks import run_lock, wait_for_slide
from wsi_her2.batch.manifest import MANIFEST, clean_root_temporaries, done_row, input_key, model_hash
from wsi_her2.batch.summary import count_statuses, empty_row, failed_row, write_summary
from wsi_her2.batch.task import (
    BUSY,
    DONE_ELSEWHERE,
    OUTCOME,
    SlideTask,
    cached_scorer,
    release_scorers,
    score_task,
)
from wsi_her2.errors import WsiHer2Error
from wsi_her2.outputs.atomic import ensure_dir
from wsi_her2.outputs.schema import SUMMARY_STEM
from wsi_her2.progress import ProgressCallback, ProgressEvent, report

Event = tuple[str, SlideTask, dict[str, Any] | None]
SUMMARY_EVERY_S = 10.0
WORKER_DIED = (
    "the process scoring this slide died (out of memory, or a crash inside a slide library); "
    "rerun the same command to retry it"
)


@dataclasses.dataclass
class BatchOutcome:
    """What a batch did.

    Attributes:
        rows: one summary row per slide, sorted by name.
        counts: rows per status.
        scored_now: slides scored (or failed) in this run.
        already_done: slides skipped because an earlier run completed them.
        files: the summary files {"csv": ..., "json": ...}.
        seconds: wall time of the run.
    """

    rows: list[dict[str, Any]]
    counts: dict[str, int]
    scored_now: int
    already_done: int
    files: dict[str, Path]
    seconds: float

    @property
    def failed(self) -> list[dict[str, Any]]:
        """The rows of slides that failed."""
        return [r for r in self.rows if r["status"] == "failed"]


def loader_workers_per_job(jobs: int, cores: int | None = None) -> int:
    """Loader processes per slide when ``jobs`` slides run at once: the cores shared out, at least 1."""
    cores = cores or os.cpu_count() or 1
    return max(1, min(16, cores // max(1, jobs)))


def summary_stem(shard: tuple[int, int] | None) -> str:
    """``summary`` or, for a shard, ``summary-shard-I-of-N`` (shards never write each other's files)."""
    return SUMMARY_STEM if shard is None else f"{SUMMARY_STEM}-shard-{shard[0]}-of-{shard[1]}"


def run_batch(
    discovery: Discovery,
    out_dir: str | Path,
    settings: Any,
    *,
    jobs: int = 1,
    scheduler: str | None = None,
    force: bool = False,
    shard: tuple[int, int] | None = None,
    mpp: float | None = None,
    dask_loader_workers: int | None = None,
    progress: ProgressCallback | None = None,
    on_event: Callable[[Event], None] | None = None,
) -> BatchOutcome:
    """Score every slide of ``discovery`` into ``out_dir``, skipping those an earlier run completed.

    Args:
        discovery: the slides (already split into a shard and with unscorable files skipped).
        out_dir: the batch output folder: one folder per slide (named as the slide) and the summary.
        settings: a :class:`~wsi_her2.settings.ScoreSettings`.
        jobs: slides scored at once on this machine (ignored with ``scheduler``).
        scheduler: a Dask scheduler address ("tcp://host:8786"); slides become cluster tasks.
        force: redo every slide, done or not.
        shard: (I, N) when this run is one shard; names the summary files.
        mpp: µm/px for images, and for slides whose own is missing or implausible.
        dask_loader_workers: loader processes per slide on Dask workers; None lets each worker decide.
        progress: receives ProgressEvent(stage "batch", unit "slides") after every slide.
        on_event: receives every executor event: ("start", task, None), ("done", task, row), and
            ("wait", task, None) when another run is scoring the slide (this run waits for it
            after the others).

    Returns:
        The outcome; the summary files are written.

    Raises:
        ModelError: the model cannot be used (checked once, before any slide).
        OutputError: the output folder or the summary cannot be written.
        ConfigError: the Dask scheduler cannot be reached.
    """
    t_start = time.perf_counter()
    out = ensure_dir(out_dir)
    stem = summary_stem(shard)
    with run_lock(out, stem) as alone:
        if alone:  # nobody else writes this summary: leftovers of interrupted writes are not in use
            clean_root_temporaries(out, (f"{stem}.csv", f"{stem}.json"))
        model_sha = model_hash(settings)
        fingerprint = settings.fingerprint()
        rows: dict[str, dict[str, Any]] = {}
        for skipped in discovery.skipped:
            rows[skipped.name] = empty_row(skipped.name, skipped.path, "skipped", skipped.reason)
        tasks: list[SlideTask] = []
        already = failed_early = 0
        workers = None if scheduler else settings.loader.workers
        if scheduler and dask_loader_workers is not None:
            workers = dask_loader_workers
        for entry in discovery.slides:
            try:
                key = input_key(entry, fingerprint, model_sha, entry.mpp)
            except WsiHer2Error as exc:  # missing or unreadable slide or ROI: failed now, without a task
                rows[entry.name] = failed_row(entry.name, entry.path, exc)
                failed_early += 1
                continue
            folder = out / entry.name
            previous = None if force else done_row(folder, key, mpp)
            if previous is not None:
                rows[entry.name] = previous
                already += 1
                continue
            rows[entry.name] = empty_row(entry.name, entry.path, "pending")
            tasks.append(SlideTask(entry, folder, settings, key, model_sha, mpp, workers, batch_dir=out, force=force))
        total = len(rows)
        done = total - len(tasks)
        scored_now = len(tasks) + failed_early
        report(progress, ProgressEvent("batch", done, total, "slides", f"{already} already done"))

        def run_facts() -> dict[str, Any]:
            return {
                "source": str(discovery.source),
                "out": str(out),
                "shard": None if shard is None else f"{shard[0]}/{shard[1]}",
                "executor": f"dask ({scheduler})" if scheduler else ("processes" if jobs > 1 else "in-process"),
                "jobs": None if scheduler else jobs,
                "scored_now": scored_now,
                "already_done": already,
                "skipped_by_reason": discovery.skip_reasons(),
                "seconds": round(time.perf_counter() - t_start, 3),
                "force": force,
            }

        def summary() -> dict[str, Path]:
            return write_summary(
                out, list(rows.values()), stem=stem, run=run_facts(), settings=settings, model_sha=model_sha
            )

        def events_of(todo: list[SlideTask]) -> Iterator[Event]:
            if scheduler:
                from wsi_her2.batch.dask_executor import run_on_dask

                return run_on_dask(todo, scheduler)
            if jobs > 1 and len(todo) > 1:
                return run_in_processes(todo, min(jobs, len(todo)))
            return run_in_this_process(todo)

        def finish(task: SlideTask, row: dict[str, Any], elsewhere: bool) -> None:
            nonlocal done, already, scored_now
            rows[task.entry.name] = row
            done += 1
            if elsewhere:  # another run scored it while this one ran
                already += 1
                scored_now -= 1
            if on_event is not None:
                on_event(("done", task, row))
            report(progress, ProgressEvent("batch", done, total, "slides", f"{task.entry.name}: {row['status']}"))

        last_write = time.monotonic()
        try:
            while tasks:
                busy: list[SlideTask] = []
                for kind, task, row in events_of(tasks):
                    if kind != "done" or row is None:
                        if on_event is not None:
                            on_event((kind, task, row))
                        continue
                    outcome = row.pop(OUTCOME, None)
                    if outcome == BUSY:
                        busy.append(task)
                        if on_event is not None:
                            on_event(("wait", task, None))
                        continue
                    finish(task, row, outcome == DONE_ELSEWHERE)
                    if time.monotonic() - last_write > SUMMARY_EVERY_S:
                        summary()  # a summary to look at during long runs; pending rows say what is left
                        last_write = time.monotonic()
                # The slides other runs were scoring: wait for each, take its result, or score it
                # (that run died or failed before finishing it; another may take it first again).
                tasks = []
                for task in busy:
                    wait_for_slide(out, task.entry.name)
                    previous = done_row(task.out_dir, task.key, mpp)
                    if previous is not None:
                        finish(task, previous, True)
                    else:
                        tasks.append(dataclasses.replace(task, force=False))
        except BaseException:
            with contextlib.suppress(Exception):
                summary()
            raise
        files = summary()
    ordered = sorted(rows.values(), key=lambda r: r["slide"])
    return BatchOutcome(ordered, count_statuses(ordered), scored_now, already, files, time.perf_counter() - t_start)


def run_in_this_process(tasks: list[SlideTask]) -> Iterator[Event]:
    """Score the slides one after the other here; the model is loaded once."""
    try:
        for task in tasks:
            yield ("start", task, None)
            yield ("done", task, score_task(task))
    finally:
        release_scorers()


def _watch_parent(parent_pid: int) -> None:
    """Exit when the batch process is gone (killed), instead of scoring on as an orphan."""
    while True:
        time.sleep(1.0)
        try:
            os.kill(parent_pid, 0)
        except ProcessLookupError:
            os._exit(1)
        except PermissionError:
            pass


def _init_job_process(parent_pid: int, threads: int, preload: SlideTask | None) -> None:
    import signal

    import cv2

    # Ctrl-C reaches the whole process group: the parent stops the batch and records it; a job
    # process must not die with a traceback of its own.
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    cv2.setNumThreads(threads)
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True, name="wsi-her2-parent-watch").start()
    if preload is not None:  # load the model now, once for this process; it shares the cores with the other jobs
        with contextlib.suppress(WsiHer2Error):
            cached_scorer(preload.settings, preload.model_sha).set_cpu_threads(threads)


def run_in_processes(tasks: list[SlideTask], jobs: int) -> Iterator[Event]:
    """Score ``jobs`` slides at once, one process each; at most ``jobs`` slides are in flight.

    A process that dies (out of memory) fails the slides in flight, and a fresh pool goes on.
    """
    import multiprocessing as mp

    from wsi_her2.tiling.loader import default_start_method

    method = default_start_method()
    context = mp.get_context(method)
    if method == "forkserver":
        context.set_forkserver_preload(["wsi_her2.batch.task"])
    threads = max(1, (os.cpu_count() or 1) // jobs)
    queue = list(reversed(tasks))

    def new_pool() -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            jobs,
            mp_context=context,
            initializer=_init_job_process,
            initargs=(os.getpid(), threads, tasks[0] if tasks else None),
        )

    pool = new_pool()
    in_flight: dict[Future[dict[str, Any]], SlideTask] = {}
    try:
        while queue or in_flight:
            while queue and len(in_flight) < jobs:
                task = queue.pop()
                in_flight[pool.submit(score_task, task)] = task
                yield ("start", task, None)
            finished, _ = wait(list(in_flight), return_when=FIRST_COMPLETED)
            broken = False
            for future in finished:
                task = in_flight.pop(future)
                try:
                    row = future.result()
                except BrokenProcessPool:
                    broken = True
                    row = failed_row(task.entry.name, task.entry.path, WsiHer2Error(WORKER_DIED))
                    row["error_type"] = "WorkerDied"
                yield ("done", task, row)
            if broken:
                for task in list(in_flight.values()):
                    row = failed_row(task.entry.name, task.entry.path, WsiHer2Error(WORKER_DIED))
                    row["error_type"] = "WorkerDied"
                    yield ("done", task, row)
                in_flight.clear()
                pool.shutdown(wait=False, cancel_futures=True)
                pool = new_pool()
    finally:
        pool.shutdown(wait=not in_flight, cancel_futures=True)


__all__ = ["MANIFEST", "BatchOutcome", "loader_workers_per_job", "run_batch", "summary_stem"]
