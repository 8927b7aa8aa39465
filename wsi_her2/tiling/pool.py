"""The loader's worker processes: one pool per process, kept warm across slides.

Starting workers costs a few tenths of a second (the forkserver imports the loader once, then
forks each worker). A pool is created once and reused by every later slide of the process (a
``batch`` run, a notebook), and it counts as *warm* once its workers have answered: until then
the loader reads in its own process rather than wait for them (see
:func:`wsi_her2.tiling.loader.iter_tile_batches`).
"""

from __future__ import annotations

import atexit
import multiprocessing as mp
import multiprocessing.util
import os
import signal
import threading
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from multiprocessing.context import BaseContext
from typing import Any

import numpy as np


def default_start_method() -> str:
    """Forkserver where it exists, else spawn.

    Plain fork is not safe here: a child forked after OpenCV (or torch) has started its thread
    pool in the parent can deadlock on the first resize, which is exactly what the loader does.
    """
    return "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"


def init_worker() -> None:
    """Run once in every worker process."""
    import cv2

    cv2.setNumThreads(1)  # one process per core already
    # Ctrl-C is the parent's to handle (it stops the pool); workers stay quiet instead of each
    # printing a KeyboardInterrupt traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _ping() -> int:
    return os.getpid()


@dataclass
class _Pool:
    executor: ProcessPoolExecutor
    workers: int
    pings: list[Future[int]] = field(default_factory=list)
    warm: bool = False


_POOLS: dict[tuple[str, int], _Pool] = {}
_LOCK = threading.Lock()
_STARTING: set[tuple[str, int]] = set()


def get_pool(start_method: str, workers: int) -> ProcessPoolExecutor:
    """The process's pool of ``workers`` workers (created, and its workers started, on first use)."""
    return _entry(start_method, workers).executor


def start_pool(start_method: str, workers: int) -> None:
    """Start the pool in a background thread: the caller goes on while the processes start.

    Launching a forkserver worker waits until the server has imported the loader; a thread
    keeps that wait off the caller, which reads tiles itself in the meantime.
    """
    key = (start_method, workers)
    with _LOCK:
        if key in _POOLS or key in _STARTING:
            return
        _STARTING.add(key)
    threading.Thread(target=_entry, args=key, name="wsi-her2-pool-start", daemon=True).start()


def _entry(start_method: str, workers: int) -> _Pool:
    key = (start_method, workers)
    with _LOCK:
        entry = _POOLS.get(key)
        if entry is None:
            try:
                entry = _create(start_method, workers)
            finally:
                _STARTING.discard(key)
            _POOLS[key] = entry
        return entry


def _create(start_method: str, workers: int) -> _Pool:
    executor = ProcessPoolExecutor(workers, mp_context=_context(start_method), initializer=init_worker)
    # One trivial job per worker: when all have answered, every worker is up.
    entry = _Pool(executor, workers, [executor.submit(_ping) for _ in range(workers)])
    # A process that is itself a multiprocessing child (a batch job, a Dask worker) never runs
    # atexit: stop the pool from multiprocessing's own exit hooks, before its queues close.
    multiprocessing.util.Finalize(None, shutdown_pools, exitpriority=100)
    return entry


def pool_exists(start_method: str, workers: int) -> bool:
    """True when this process already has that pool (warm or starting)."""
    return (start_method, workers) in _POOLS


def pool_is_warm(start_method: str, workers: int) -> bool:
    """True when the pool exists and all its workers have started."""
    entry = _POOLS.get((start_method, workers))
    if entry is None:
        return False
    if not entry.warm and all(p.done() for p in entry.pings):
        entry.warm = all(p.exception() is None for p in entry.pings)
    return entry.warm


def discard_pool(pool: ProcessPoolExecutor) -> None:
    """Forget a broken pool (the next slide starts a fresh one)."""
    for key, value in list(_POOLS.items()):
        if value.executor is pool:
            del _POOLS[key]
    pool.shutdown(wait=False, cancel_futures=True)


def piece_tiles(batch_size: int, workers: int, chunk_tiles: int) -> int:
    """Tiles per piece when a batch is shared among the workers: whole chunks, at least two.

    A batch read by one worker while the others idle costs its whole reading time at the start of a
    slide and again at its end (the last batches); in pieces, every worker takes part in each batch.
    """
    return max(2 * chunk_tiles, chunk_tiles * -(-batch_size // (workers * chunk_tiles)))


def pieces(job: Any, size: int) -> list[Any]:
    """A batch's job (a dataclass with ``indices``, ``xs``, ``ys``) cut into jobs of ``size`` tiles."""
    return [replace(job, indices=job.indices[a : a + size], xs=job.xs[a : a + size], ys=job.ys[a : a + size],
                    offset=a) for a in range(0, len(job.indices), size)]  # fmt: skip


def joined(results: list[dict[str, Any]], lengths: list[int]) -> dict[str, Any]:
    """A whole batch's result from its pieces' results, in order (``lengths``: tiles per piece).

    Per-tile values a piece lacks (its tile function never returned them) are NaN, arrays None.
    """
    if len(results) == 1:
        return results[0]
    out: dict[str, Any] = {key: np.concatenate([r[key] for r in results]) for key in ("kept", "fractions", "blur")}
    parts = list(zip(results, lengths, strict=True))
    out["measurements"] = {
        key: np.concatenate([r["measurements"].get(key, np.full(n, np.nan)) for r, n in parts])
        for key in dict.fromkeys(k for r in results for k in r["measurements"])
    }  # fmt: skip
    out["arrays"] = {
        key: [a for r, n in parts for a in r["arrays"].get(key, [None] * n)]
        for key in dict.fromkeys(k for r in results for k in r["arrays"])
    }  # fmt: skip
    return out


@atexit.register
def shutdown_pools() -> None:
    """Stop the worker pools (also called at interpreter exit)."""
    for entry in list(_POOLS.values()):
        entry.executor.shutdown(wait=True, cancel_futures=True)
    _POOLS.clear()


_PRELOAD = ["wsi_her2.tiling.loader"]


def _context(method: str) -> BaseContext:
    ctx = mp.get_context(method)
    if method == "forkserver":
        # The server imports the loader once; each worker then forks from it in milliseconds.
        ctx.set_forkserver_preload(_PRELOAD)
    return ctx


def worker_count(requested: int | None) -> int:
    """Workers to use when the user did not say: one per core, at most 16."""
    if requested is not None:
        return requested
    return max(1, min(16, os.cpu_count() or 1))
