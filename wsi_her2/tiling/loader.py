"""The tile loader: batches of tiles at the size a model needs, read in worker processes.

Each worker opens the slide once, reads every tile from the pyramid level nearest to the output
size (never decoding level 0 to throw most of it away), resizes with area interpolation, runs the
pixel-level empty/blur check, and optionally a tile function (e.g. the DAB scorer) on the pixels.
Pixels travel back through shared memory, not pipes: a worker writes into a slot of a ring that
the consumer reads without a copy; a batch is shared among the workers in pieces (no worker idles
while one reads a slide's first or last batch). Slides too small to pay for worker start-up are read in the
calling process (see :func:`iter_tile_batches`); the pool (:mod:`wsi_her2.tiling.pool`) stays up
for the next slide. Tiles can also be decoded on the model's GPU instead (:mod:`gpu_decode`).

The loader is torch-free; :mod:`wsi_her2.inference` turns its batches into tensors.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from multiprocessing import shared_memory
from typing import Any

import numpy as np
from shapely.geometry import MultiPolygon

from wsi_her2.config import LoaderConfig
from wsi_her2.errors import WsiHer2Error
from wsi_her2.slide import open_slide
from wsi_her2.slide.base import SlideReader
from wsi_her2.slide.regions import read_tile
from wsi_her2.tiling.grid import TileGrid
from wsi_her2.tiling.pixel_check import pixel_check as pixel_check  # re-exported
from wsi_her2.tiling.pixel_check import pixel_check_batch
from wsi_her2.tiling.pool import default_start_method as default_start_method  # re-exported
from wsi_her2.tiling.pool import (
    discard_pool,
    get_pool,
    joined,
    piece_tiles,
    pieces,
    pool_exists,
    pool_is_warm,
    start_pool,
)
from wsi_her2.tiling.pool import shutdown_pools as shutdown_pools  # re-exported
from wsi_her2.tiling.pool import worker_count as worker_count  # re-exported
from wsi_her2.tissue import TissueThresholds

# A function run on each tile's pixels inside the workers; must be picklable. Scalars become
# per-tile columns (``TileBatch.measurements``); arrays (e.g. a table of the tile's cells) travel
# as they are, one per tile (``TileBatch.tile_arrays``).
TileFunction = Callable[..., Mapping[str, "float | np.ndarray"]]


@dataclass(frozen=True)
class SlideSource:
    """How a worker opens the slide (a reader itself cannot cross a process boundary)."""

    path: str
    mpp: float | None = None
    backend: str = "auto"

    def open(self) -> SlideReader:
        """Open the slide."""
        return open_slide(self.path, mpp=self.mpp, backend=self.backend)  # type: ignore[arg-type]


@dataclass
class TileBatch:
    """Tiles delivered together; every array has one entry per tile, in grid order.

    Attributes:
        indices: positions of the tiles in the grid.
        images: (n, size, size, 3) uint8 RGB, or None when images are not returned. May be a view
            into shared memory that is reused once the next batch is requested: copy to keep.
        kept: True where the tile passed the pixel-level check.
        pixel_tissue_fraction: fraction of the tile's pixels that look like tissue.
        blur_score: variance of the Laplacian of the tile (grey levels²); low means blurred or empty.
        measurements: per-tile scalar outputs of the tile function, by name (NaN for tiles it did
            not run on; empty when there is none).
        tile_arrays: per-tile array outputs of the tile function, by name: one entry per tile,
            None for tiles it did not run on.
        device_images: the pixels as a (n, size, size, 3) uint8 torch tensor on the model's device
            when they were decoded there (:mod:`wsi_her2.tiling.gpu_decode`; ``images`` is None).
    """

    indices: np.ndarray
    images: np.ndarray | None
    kept: np.ndarray
    pixel_tissue_fraction: np.ndarray
    blur_score: np.ndarray
    measurements: dict[str, np.ndarray] = field(default_factory=dict)
    tile_arrays: dict[str, list[np.ndarray | None]] = field(default_factory=dict)
    device_images: Any = None

    def __len__(self) -> int:
        return int(self.indices.shape[0])


@dataclass(frozen=True)
class _Task:
    """What every batch of one loader run shares (sent with each job; small, picklable)."""

    source: SlideSource
    tile_size_px: int
    cfg: LoaderConfig
    thresholds: TissueThresholds
    tile_function: TileFunction | None
    roi: MultiPolygon | None
    shm_name: str | None


@dataclass(frozen=True)
class _Job:
    """One batch, or a piece of one: which tiles, and where in shared memory their pixels go."""

    task: _Task
    batch_id: int
    indices: np.ndarray
    xs: np.ndarray
    ys: np.ndarray
    slot: int
    offset: int = 0  # first tile's place in the slot (a piece of a batch)


# Worker-process caches: the pool outlives one slide, so a worker keeps the slides and shared
# memory blocks it has opened (a few of each) instead of reopening them for every batch.
_READERS: OrderedDict[tuple[SlideSource, int, int], SlideReader] = OrderedDict()
_SHMS: OrderedDict[str, shared_memory.SharedMemory] = OrderedDict()
_CACHED_SLIDES = 2


def _reader(source: SlideSource) -> SlideReader:
    try:
        stat = os.stat(source.path)
        key = (source, stat.st_mtime_ns, stat.st_size)  # a replaced file is a different slide
    except OSError:
        key = (source, 0, 0)
    reader = _READERS.get(key)
    if reader is None:
        reader = source.open()
        _READERS[key] = reader
        while len(_READERS) > _CACHED_SLIDES:
            _READERS.popitem(last=False)[1].close()
    _READERS.move_to_end(key)
    return reader


def _shm(name: str) -> shared_memory.SharedMemory:
    block = _SHMS.get(name)
    if block is None:
        block = _attach(name)
        _SHMS[name] = block
        while len(_SHMS) > _CACHED_SLIDES:
            _SHMS.popitem(last=False)[1].close()
    return block


def _attach(name: str) -> shared_memory.SharedMemory:
    # The creating process owns the block's lifetime. Workers share its resource tracker, so
    # attaching (which registers the name again) is harmless before Python 3.13; with 3.13+
    # the worker says outright that it does not track the block.
    try:
        return shared_memory.SharedMemory(name=name, track=False)  # type: ignore[call-arg]
    except TypeError:
        return shared_memory.SharedMemory(name=name)


def _slot_view(shm: shared_memory.SharedMemory, slot: int, slot_shape: tuple[int, ...]) -> np.ndarray:
    size = int(np.prod(slot_shape))
    return np.ndarray(slot_shape, np.uint8, buffer=shm.buf, offset=slot * size)


def _slot_shape(cfg: LoaderConfig) -> tuple[int, int, int, int]:
    return (cfg.batch_size, cfg.output_size_px, cfg.output_size_px, 3)


def _valid_mask(task: _Task, x: int, y: int) -> np.ndarray | None:
    if task.roi is None:
        return None
    from wsi_her2.roi import rasterize

    size = task.cfg.output_size_px
    scale = task.tile_size_px / size
    return rasterize(task.roi, (size, size), scale, scale, offset_xy=(x, y))


# In a worker, tiles are read, checked and handed to the tile function this many at a time, in a
# private buffer small enough to stay in the CPU cache, then copied to the output as one block: the
# check runs once per chunk (a handful of OpenCV calls) and no pass re-reads a whole batch from
# memory (measured: 8 beats 2, 4, 16 and whole batches). In the calling process, whose OpenCV
# uses every core, whole batches are faster.
_CHUNK_TILES = 8


def _run_job(job: _Job, reader: SlideReader, out: np.ndarray | None, chunk_tiles: int = _CHUNK_TILES) -> dict[str, Any]:
    """Read, check and process the tiles of one job, ``chunk_tiles`` at a time; pixels go to ``out``."""
    task = job.task
    cfg = task.cfg
    n = len(job.indices)
    size = cfg.output_size_px
    kept = np.ones(n, bool)
    fractions = np.ones(n, np.float32)
    blur = np.zeros(n, np.float32)
    measured: dict[str, np.ndarray] = {}
    arrays: dict[str, list[np.ndarray | None]] = {}
    chunk = _scratch((chunk_tiles, size, size, 3))
    for c0 in range(0, n, chunk_tiles):
        m = min(chunk_tiles, n - c0)
        tiles = chunk[:m]
        for i in range(m):
            x, y = int(job.xs[c0 + i]), int(job.ys[c0 + i])
            read_tile(reader, x, y, task.tile_size_px, task.tile_size_px, size, size, tiles[i])
        if cfg.pixel_check:
            fractions[c0 : c0 + m], blur[c0 : c0 + m] = pixel_check_batch(tiles, task.thresholds)
            kept[c0 : c0 + m] = (fractions[c0 : c0 + m] >= cfg.min_pixel_tissue_fraction) & (
                blur[c0 : c0 + m] >= cfg.min_blur_score
            )
        if task.tile_function is not None:
            for i in np.flatnonzero(kept[c0 : c0 + m]).tolist():
                k = c0 + i
                values = task.tile_function(tiles[i], _valid_mask(task, int(job.xs[k]), int(job.ys[k])))
                for key, value in values.items():
                    if isinstance(value, np.ndarray):
                        arrays.setdefault(key, [None] * n)[k] = value
                        continue
                    if key not in measured:
                        measured[key] = np.full(n, np.nan, np.float64)
                    measured[key][k] = value
        if out is not None:
            out[c0 : c0 + m] = tiles
    return {"batch_id": job.batch_id, "slot": job.slot, "kept": kept, "fractions": fractions, "blur": blur,
            "measurements": measured, "arrays": arrays}  # fmt: skip


_SCRATCH = threading.local()  # per thread: a Dask worker runs several slides in one process


def _scratch(shape: tuple[int, int, int, int]) -> np.ndarray:
    """A reused per-thread buffer of tiles."""
    buffer = getattr(_SCRATCH, "tiles", None)
    if buffer is None or buffer.shape[1:] != shape[1:] or buffer.shape[0] < shape[0]:
        buffer = _SCRATCH.tiles = np.empty(shape, np.uint8)
    return buffer[: shape[0]]


def _worker_job(job: _Job) -> dict[str, Any]:
    name = job.task.shm_name
    out = None
    if name:
        out = _slot_view(_shm(name), job.slot, _slot_shape(job.task.cfg))[job.offset : job.offset + len(job.indices)]
    return _run_job(job, _reader(job.task.source), out)


def iter_tile_batches(
    source: SlideSource,
    grid: TileGrid,
    cfg: LoaderConfig | None = None,
    *,
    thresholds: TissueThresholds | None = None,
    tile_function: TileFunction | None = None,
    roi: MultiPolygon | None = None,
) -> Iterator[TileBatch]:
    """Deliver the grid's tiles in batches, in grid order.

    With ``cfg.workers`` > 0 and no warm pool in this process yet, the first batches are read in
    this process; the workers are started only when the rest of the slide would take longer than
    ``cfg.min_parallel_work_s`` to read here, and take over once they are up. A small slide never
    waits for worker processes, and a large one loses no time to their start.

    Args:
        source: the slide (path, µm/px override, backend).
        grid: the tiles to read.
        cfg: output size, batch size, workers, pixel check.
        thresholds: tissue thresholds of this slide (from its :class:`~wsi_her2.tissue.TissueMask`).
        tile_function: optional picklable ``f(rgb, valid_mask) -> {name: value}`` run on every
            tile that passes the pixel check, inside the workers.
        roi: optional regions; ``valid_mask`` passed to the tile function marks pixels inside them.

    Yields:
        :class:`TileBatch` objects. Their ``images`` may live in shared memory that is reused
        after the next batch is requested.
    """
    cfg = cfg or LoaderConfig()
    thresholds = thresholds or TissueThresholds()
    n = len(grid)
    if n == 0:
        return
    starts = list(range(0, n, cfg.batch_size))
    task = _Task(source, grid.tile_size_px, cfg, thresholds, tile_function, roi, None)

    def job(k: int, slot: int, task: _Task) -> _Job:
        sl = slice(starts[k], min(starts[k] + cfg.batch_size, n))
        return _Job(task, k, np.arange(sl.start, sl.stop), grid.x[sl], grid.y[sl], slot)

    method = cfg.start_method or default_start_method()
    workers = min(cfg.workers, len(starts))
    k = 0
    if workers == 0 or not pool_is_warm(method, cfg.workers):
        reader: SlideReader | None = None
        busy_s = 0.0
        try:
            while k < len(starts):
                if workers and pool_exists(method, cfg.workers):
                    if pool_is_warm(method, cfg.workers) or cfg.min_parallel_work_s == 0:
                        break  # the workers are up (or asked for outright): they take the rest
                elif workers and cfg.min_parallel_work_s == 0:
                    get_pool(method, cfg.workers)
                    break
                elif workers and k and busy_s / k * (len(starts) - k) > cfg.min_parallel_work_s:
                    start_pool(method, cfg.workers)  # in the background: read on here meanwhile
                reader = reader or source.open()
                t0 = time.perf_counter()
                j = job(k, 0, task)
                images = np.empty((len(j.indices), *_slot_shape(cfg)[1:]), np.uint8) if cfg.return_images else None
                batch = _to_batch(_run_job(j, reader, images, cfg.batch_size), j, images)
                busy_s += time.perf_counter() - t0
                k += 1
                yield batch
        finally:
            if reader is not None:
                reader.close()
    if k < len(starts):
        yield from _parallel_batches(task, starts[k:], job, k, min(workers, len(starts) - k), method)


def _to_batch(result: dict[str, Any], j: _Job, images: np.ndarray | None) -> TileBatch:
    return TileBatch(
        indices=j.indices,
        images=images,
        kept=result["kept"],
        pixel_tissue_fraction=result["fractions"],
        blur_score=result["blur"],
        measurements=result["measurements"],
        tile_arrays=result["arrays"],
    )


def _parallel_batches(
    task: _Task, starts: list[int], job: Callable[[int, int, _Task], _Job], first: int, workers: int, method: str
) -> Iterator[TileBatch]:
    """Batches ``first``, ``first + 1``, ... read by the worker pool, delivered in order."""
    cfg = task.cfg
    n_slots = workers * cfg.prefetch_batches + 1
    slot_shape = _slot_shape(cfg)
    shm = None
    if cfg.return_images:
        shm = shared_memory.SharedMemory(create=True, size=int(np.prod(slot_shape)) * n_slots)
    task = replace(task, shm_name=shm.name if shm else None)
    executor = get_pool(method, cfg.workers)
    piece = piece_tiles(cfg.batch_size, workers, _CHUNK_TILES)
    pending: deque[tuple[_Job, list[int], list[Future[dict[str, Any]]]]] = deque()
    current: list[Future[dict[str, Any]]] = []  # the pieces of the batch being collected
    last = first + len(starts)
    try:
        free = deque(range(n_slots))
        next_k = first

        def submit() -> None:
            nonlocal next_k
            while free and next_k < last and len(pending) < n_slots - 1:
                j = job(next_k, free.popleft(), task)
                parts = pieces(j, piece)
                pending.append((j, [len(p.indices) for p in parts], [executor.submit(_worker_job, p) for p in parts]))
                next_k += 1

        submit()
        while pending:
            j, lengths, current = pending.popleft()
            try:
                result = joined([f.result() for f in current], lengths)
            except BrokenProcessPool as exc:
                discard_pool(executor)
                raise WsiHer2Error(
                    "a tile-reading worker process died (out of memory, or a crash inside a slide library)",
                    hint="retry with --workers 0 to read in one process and see the error",
                ) from exc
            images = _slot_view(shm, j.slot, slot_shape)[: len(j.indices)] if shm else None
            yield _to_batch(result, j, images)
            free.append(j.slot)  # the consumer asked for the next batch: this slot may be reused
            submit()
    finally:
        # Jobs still queued or running would write into the shared memory about to be freed.
        left = current + [future for _, _, futures in pending for future in futures]
        for future in left:
            future.cancel()
        for future in left:
            with contextlib.suppress(Exception):
                future.result()
        if shm is not None:
            shm.close()
            shm.unlink()
