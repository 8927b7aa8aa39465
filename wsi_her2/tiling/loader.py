"""The tile loader: batches of tiles at the size a model needs, read in worker processes.

Each worker opens the slide once, reads every tile from the pyramid level nearest to the output
size (never decoding level 0 to throw most of it away), resizes with area interpolation, runs the
pixel-level empty/blur check, and optionally a tile function (e.g. the DAB scorer) on the pixels.
Pixels travel back through shared memory, not pipes: a worker writes straight into a slot of a
ring that the consumer reads without a copy.

The loader is torch-free; :mod:`wsi_her2.inference` turns its batches into tensors.
"""

from __future__ import annotations

import atexit
import contextlib
import multiprocessing as mp
import multiprocessing.util
import os
import signal
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from multiprocessing import shared_memory
from multiprocessing.context import BaseContext
from typing import Any

import cv2
import numpy as np
from shapely.geometry import MultiPolygon

from wsi_her2.config import LoaderConfig
from wsi_her2.errors import WsiHer2Error
from wsi_her2.slide import open_slide
from wsi_her2.slide.base import SlideReader
from wsi_her2.slide.regions import read_tile
from wsi_her2.tiling.grid import TileGrid
from wsi_her2.tissue import TissueThresholds, tissue_pixels

# A function run on each tile's pixels inside the workers; must be picklable. Scalars become
# per-tile columns (``TileBatch.measurements``); arrays (e.g. a table of the tile's cells) travel
# as they are, one per tile (``TileBatch.tile_arrays``).
TileFunction = Callable[..., Mapping[str, "float | np.ndarray"]]
# The pixel check works on small copies, reduced by an integer factor (OpenCV's fast area path):
# tissue at ~64 px across (a 256-µm tile becomes ~4 µm/px, the resolution the mask's thresholds
# were set at), blur at ~128 px across (~2 µm/px: enough to see whether nuclei have edges).
_TISSUE_CHECK_PX = 64
_BLUR_CHECK_PX = 128


def _shrink(rgb: np.ndarray, target_px: int) -> np.ndarray:
    factor = round(rgb.shape[1] / target_px)
    if factor <= 1:
        return rgb
    h, w = rgb.shape[0] // factor, rgb.shape[1] // factor
    return cv2.resize(rgb[: h * factor, : w * factor], (w, h), interpolation=cv2.INTER_AREA)


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
    """

    indices: np.ndarray
    images: np.ndarray | None
    kept: np.ndarray
    pixel_tissue_fraction: np.ndarray
    blur_score: np.ndarray
    measurements: dict[str, np.ndarray] = field(default_factory=dict)
    tile_arrays: dict[str, list[np.ndarray | None]] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.indices.shape[0])


def pixel_check(rgb: np.ndarray, thresholds: TissueThresholds) -> tuple[float, float]:
    """Tissue fraction and blur score of one tile.

    Returns:
        (fraction of pixels that are tissue, blur score). The blur score is the variance of the
        Laplacian of the grey tile at ~2 µm/px, divided by the tissue fraction (glass adds no
        edges, so this is about the variance over the tissue alone); 0 when there is no tissue.
    """
    blur_image = _shrink(rgb, _BLUR_CHECK_PX)
    small = _shrink(blur_image, _TISSUE_CHECK_PX)
    fraction = float(np.count_nonzero(tissue_pixels(small, thresholds))) / (small.shape[0] * small.shape[1])
    if fraction < 0.01:
        return fraction, 0.0
    laplacian = cv2.Laplacian(cv2.cvtColor(blur_image, cv2.COLOR_RGB2GRAY), cv2.CV_16S, ksize=1)
    _, std = cv2.meanStdDev(laplacian)
    return fraction, float(std[0, 0]) ** 2 / fraction


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
    """One batch: which tiles, and the shared-memory slot its pixels go to."""

    task: _Task
    batch_id: int
    indices: np.ndarray
    xs: np.ndarray
    ys: np.ndarray
    slot: int


# Worker-process caches: the pool outlives one slide, so a worker keeps the slides and shared
# memory blocks it has opened (a few of each) instead of reopening them for every batch.
_READERS: OrderedDict[tuple[SlideSource, int, int], SlideReader] = OrderedDict()
_SHMS: OrderedDict[str, shared_memory.SharedMemory] = OrderedDict()
_CACHED_SLIDES = 2


def _init_worker() -> None:
    cv2.setNumThreads(1)  # one process per core already
    # Ctrl-C is the parent's to handle (it stops the pool); workers stay quiet instead of each
    # printing a KeyboardInterrupt traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


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


def _run_job(job: _Job, reader: SlideReader, out: np.ndarray | None) -> dict[str, Any]:
    """Read, check and process the tiles of one job; pixels go to ``out`` when given."""
    task = job.task
    cfg = task.cfg
    n = len(job.indices)
    size = cfg.output_size_px
    kept = np.ones(n, bool)
    fractions = np.ones(n, np.float32)
    blur = np.zeros(n, np.float32)
    measured: dict[str, np.ndarray] = {}
    arrays: dict[str, list[np.ndarray | None]] = {}
    for i in range(n):
        x, y = int(job.xs[i]), int(job.ys[i])
        tile = read_tile(reader, x, y, task.tile_size_px, task.tile_size_px, size, size)
        if out is not None:
            out[i] = tile
        if cfg.pixel_check:
            fractions[i], blur[i] = pixel_check(tile, task.thresholds)
            kept[i] = fractions[i] >= cfg.min_pixel_tissue_fraction and blur[i] >= cfg.min_blur_score
        if task.tile_function is not None and kept[i]:
            values = task.tile_function(tile, _valid_mask(task, x, y))
            for key, value in values.items():
                if isinstance(value, np.ndarray):
                    arrays.setdefault(key, [None] * n)[i] = value
                    continue
                if key not in measured:
                    measured[key] = np.full(n, np.nan, np.float64)
                measured[key][i] = value
    return {"batch_id": job.batch_id, "slot": job.slot, "kept": kept, "fractions": fractions, "blur": blur,
            "measurements": measured, "arrays": arrays}  # fmt: skip


def _worker_job(job: _Job) -> dict[str, Any]:
    name = job.task.shm_name
    out = _slot_view(_shm(name), job.slot, _slot_shape(job.task.cfg))[: len(job.indices)] if name else None
    return _run_job(job, _reader(job.task.source), out)


def default_start_method() -> str:
    """Forkserver where it exists, else spawn.

    Plain fork is not safe here: a child forked after OpenCV (or torch) has started its thread
    pool in the parent can deadlock on the first resize, which is exactly what the loader does.
    """
    return "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"


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

    def to_batch(result: dict[str, Any], j: _Job, images: np.ndarray | None) -> TileBatch:
        return TileBatch(
            indices=j.indices,
            images=images,
            kept=result["kept"],
            pixel_tissue_fraction=result["fractions"],
            blur_score=result["blur"],
            measurements=result["measurements"],
            tile_arrays=result["arrays"],
        )

    if cfg.workers == 0:
        reader = source.open()
        try:
            for k in range(len(starts)):
                j = job(k, 0, task)
                images = np.empty((len(j.indices), *_slot_shape(cfg)[1:]), np.uint8) if cfg.return_images else None
                yield to_batch(_run_job(j, reader, images), j, images)
        finally:
            reader.close()
        return

    workers = min(cfg.workers, len(starts))
    n_slots = workers * cfg.prefetch_batches + 1
    slot_shape = _slot_shape(cfg)
    shm = None
    if cfg.return_images:
        shm = shared_memory.SharedMemory(create=True, size=int(np.prod(slot_shape)) * n_slots)
    task = replace(task, shm_name=shm.name if shm else None)
    executor = _pool(cfg.start_method or default_start_method(), cfg.workers)
    pending: deque[tuple[_Job, Future[dict[str, Any]]]] = deque()
    try:
        free = deque(range(n_slots))
        next_k = 0

        def submit() -> None:
            nonlocal next_k
            while free and next_k < len(starts) and len(pending) < n_slots - 1:
                j = job(next_k, free.popleft(), task)
                pending.append((j, executor.submit(_worker_job, j)))
                next_k += 1

        submit()
        while pending:
            j, future = pending.popleft()
            try:
                result = future.result()
            except BrokenProcessPool as exc:
                _discard_pool(executor)
                raise WsiHer2Error(
                    "a tile-reading worker process died (out of memory, or a crash inside a slide library)",
                    hint="retry with --workers 0 to read in one process and see the error",
                ) from exc
            images = _slot_view(shm, j.slot, slot_shape)[: len(j.indices)] if shm else None
            yield to_batch(result, j, images)
            free.append(j.slot)  # the consumer asked for the next batch: this slot may be reused
            submit()
    finally:
        # Jobs still queued or running would write into the shared memory about to be freed.
        for _, future in pending:
            future.cancel()
        for _, future in pending:
            with contextlib.suppress(Exception):
                future.result()
        if shm is not None:
            shm.close()
            shm.unlink()


_POOLS: dict[tuple[str, int], ProcessPoolExecutor] = {}


def _pool(start_method: str, workers: int) -> ProcessPoolExecutor:
    """A worker pool kept for the life of the process: slides after the first start instantly."""
    key = (start_method, workers)
    pool = _POOLS.get(key)
    if pool is None:
        pool = ProcessPoolExecutor(workers, mp_context=_context(start_method), initializer=_init_worker)
        _POOLS[key] = pool
        # A process that is itself a multiprocessing child (a batch job, a Dask worker) never runs
        # atexit: stop the pool from multiprocessing's own exit hooks, before its queues close.
        multiprocessing.util.Finalize(None, shutdown_pools, exitpriority=100)
    return pool


def _discard_pool(pool: ProcessPoolExecutor) -> None:
    for key, value in list(_POOLS.items()):
        if value is pool:
            del _POOLS[key]
    pool.shutdown(wait=False, cancel_futures=True)


@atexit.register
def shutdown_pools() -> None:
    """Stop the worker pools (also called at interpreter exit)."""
    for pool in list(_POOLS.values()):
        pool.shutdown(wait=True, cancel_futures=True)
    _POOLS.clear()


def _context(method: str) -> BaseContext:
    ctx = mp.get_context(method)
    if method == "forkserver":
        # The server imports the loader once; each worker then forks from it in milliseconds.
        ctx.set_forkserver_preload(["wsi_her2.tiling.loader"])
    return ctx


def worker_count(requested: int | None) -> int:
    """Workers to use when the user did not say: one per core, at most 16."""
    if requested is not None:
        return requested
    return max(1, min(16, os.cpu_count() or 1))
