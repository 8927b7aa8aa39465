"""The loader delivers the right pixels from the right level, in order, in parallel; it drops empty tiles."""

from __future__ import annotations

import functools
import os
import time
from pathlib import Path

import numpy as np
import pytest

from wsi_her2.config import GridConfig, LoaderConfig
from wsi_her2.slide import open_slide, read_tile
from wsi_her2.tiling.grid import build_tile_grid
from wsi_her2.tiling.loader import SlideSource, iter_tile_batches, pixel_check
from wsi_her2.tissue import TissueThresholds, detect_tissue


def _grid(path: Path, **grid: object):
    with open_slide(path) as reader:
        mask = detect_tissue(reader)
        return mask, build_tile_grid(mask, reader.info, GridConfig(**grid))  # type: ignore[arg-type]


def _collect(path: Path, grid, cfg: LoaderConfig, **kwargs: object):
    indices, images, kept, measurements = [], [], [], []
    for batch in iter_tile_batches(SlideSource(str(path)), grid, cfg, **kwargs):  # type: ignore[arg-type]
        indices.append(batch.indices.copy())
        kept.append(batch.kept.copy())
        if batch.images is not None:
            images.append(batch.images.copy())
        measurements.append({k: v.copy() for k, v in batch.measurements.items()})
    return (
        np.concatenate(indices),
        (np.concatenate(images) if images else None),
        np.concatenate(kept),
        measurements,
    )


def test_parallel_workers_deliver_the_same_pixels_in_grid_order(
    synthetic_slide: tuple[Path, np.ndarray],
) -> None:
    path, _ = synthetic_slide
    mask, grid = _grid(path)
    idx0, img0, kept0, _ = _collect(path, grid, LoaderConfig(workers=0, batch_size=7), thresholds=mask.thresholds)
    workers = LoaderConfig(workers=2, batch_size=7, min_parallel_work_s=0)
    idx2, img2, kept2, _ = _collect(path, grid, workers, thresholds=mask.thresholds)
    assert np.array_equal(idx0, np.arange(len(grid))) and np.array_equal(idx2, idx0)
    assert np.array_equal(img0, img2) and np.array_equal(kept0, kept2)
    assert img0.shape == (len(grid), 224, 224, 3)


def test_delivered_tile_is_the_slide_region_resized(synthetic_slide: tuple[Path, np.ndarray]) -> None:
    path, _ = synthetic_slide
    mask, grid = _grid(path)
    _, images, _, _ = _collect(path, grid, LoaderConfig(workers=0), thresholds=mask.thresholds)
    with open_slide(path) as reader:
        for i in (0, len(grid) // 2, len(grid) - 1):
            expected = read_tile(reader, int(grid.x[i]), int(grid.y[i]), 1024, 1024, 224, 224)
            assert np.array_equal(images[i], expected)
            # and it is the same tissue as a level-0 read, shrunk (different level, same place)
            full = reader.read_region(int(grid.x[i]), int(grid.y[i]), 1024, 1024, 0)
            import cv2

            small = cv2.resize(full, (224, 224), interpolation=cv2.INTER_AREA)
            assert np.abs(small.astype(int) - images[i]).mean() < 25


def test_glass_and_blurred_tiles_are_dropped_by_the_pixel_check() -> None:
    import cv2

    thresholds = TissueThresholds()
    rng = np.random.default_rng(0)
    glass = np.full((224, 224, 3), 240, np.uint8) + rng.integers(0, 3, (224, 224, 3), dtype=np.uint8)
    tissue = np.full((224, 224, 3), (225, 160, 195), np.uint8)
    for _ in range(150):
        cx, cy = rng.integers(0, 224, 2)
        cv2.circle(tissue, (int(cx), int(cy)), 4, (85, 55, 140), -1)
    blurred = cv2.GaussianBlur(tissue, (0, 0), 6)
    glass_fraction, _ = pixel_check(glass, thresholds)
    tissue_fraction, sharp = pixel_check(tissue, thresholds)
    _, soft = pixel_check(blurred, thresholds)
    assert glass_fraction < 0.05 and tissue_fraction > 0.9
    assert sharp > 100 * max(soft, 1e-3) or soft < LoaderConfig().min_blur_score < sharp


def test_tile_function_runs_in_the_workers_on_kept_tiles(synthetic_slide: tuple[Path, np.ndarray]) -> None:
    path, _ = synthetic_slide
    mask, grid = _grid(path)
    cfg = LoaderConfig(workers=2, return_images=False, batch_size=16, min_parallel_work_s=0)
    _, images, kept, measured = _collect(path, grid, cfg, thresholds=mask.thresholds, tile_function=_mean_red)
    assert images is None
    reds = np.concatenate([m["mean_red"] for m in measured])
    assert np.all(np.isfinite(reds[kept])) and np.all(reds[kept] > 50)


def _mean_red(rgb: np.ndarray, valid_mask: np.ndarray | None) -> dict[str, float]:
    return {"mean_red": float(rgb[..., 0].mean())}


def _bright_rows(rgb: np.ndarray, valid_mask: np.ndarray | None) -> dict[str, float | np.ndarray]:
    rows = np.flatnonzero(rgb.mean(axis=(1, 2)) > 200).astype(np.int32)
    return {"n_rows": float(len(rows)), "rows": rows}


@pytest.mark.parametrize("workers", [0, 2])
def test_array_outputs_of_a_tile_function_travel_per_tile(
    synthetic_slide: tuple[Path, np.ndarray], workers: int
) -> None:
    path, _ = synthetic_slide
    mask, grid = _grid(path)
    cfg = LoaderConfig(workers=workers, return_images=False, batch_size=5, min_parallel_work_s=0)
    batches = list(
        iter_tile_batches(SlideSource(str(path)), grid, cfg, thresholds=mask.thresholds, tile_function=_bright_rows)
    )
    for batch in batches:
        rows = batch.tile_arrays["rows"]
        assert len(rows) == len(batch)
        for i, kept in enumerate(batch.kept):
            if kept:
                assert rows[i] is not None and len(rows[i]) == batch.measurements["n_rows"][i]
            else:
                assert rows[i] is None


def test_a_broken_worker_becomes_a_clear_error(synthetic_slide: tuple[Path, np.ndarray]) -> None:
    from wsi_her2.errors import WsiHer2Error

    path, _ = synthetic_slide
    _, grid = _grid(path)
    with pytest.raises(WsiHer2Error):
        cfg = LoaderConfig(workers=1, min_parallel_work_s=0)
        list(iter_tile_batches(SlideSource(str(path) + ".missing"), grid, cfg))


def _pid_and_pause_in(parent: int, rgb: np.ndarray, valid_mask: np.ndarray | None) -> dict[str, float]:
    # Slow only in the parent: the workers, once up, overtake it at once.
    if os.getpid() == parent:
        time.sleep(0.02)
    return {"pid": float(os.getpid())}


def test_a_small_slide_is_read_in_process_and_starts_no_workers(synthetic_slide: tuple[Path, np.ndarray]) -> None:
    from wsi_her2.tiling.pool import pool_exists, shutdown_pools

    path, _ = synthetic_slide
    mask, grid = _grid(path)
    shutdown_pools()
    _, in_process, kept0, _ = _collect(path, grid, LoaderConfig(workers=0), thresholds=mask.thresholds)
    _, default, kept2, _ = _collect(path, grid, LoaderConfig(workers=2), thresholds=mask.thresholds)
    assert np.array_equal(in_process, default) and np.array_equal(kept0, kept2)
    assert not pool_exists("forkserver", 2) and not pool_exists("spawn", 2)


def test_workers_take_over_a_long_slide_and_stay_warm_for_the_next(synthetic_slide: tuple[Path, np.ndarray]) -> None:
    from wsi_her2.tiling.pool import shutdown_pools

    path, _ = synthetic_slide
    mask, grid = _grid(path, tile_size_px=256)  # a few hundred tiles
    shutdown_pools()
    slow = functools.partial(_pid_and_pause_in, os.getpid())
    cfg = LoaderConfig(workers=2, batch_size=4, min_parallel_work_s=0.05, return_images=False)
    first = _collect(path, grid, cfg, thresholds=mask.thresholds, tile_function=slow)
    pids = np.concatenate([m["pid"] for m in first[3]])
    order = pids[np.isfinite(pids)]
    # Read here first, then by the workers for the rest of the slide.
    assert order[0] == os.getpid() and order[-1] != os.getpid()
    second = _collect(path, grid, cfg, thresholds=mask.thresholds, tile_function=slow)
    later = np.concatenate([m["pid"] for m in second[3]])
    assert os.getpid() not in later[np.isfinite(later)]  # the pool was warm: no in-process batch
    assert np.array_equal(first[2], second[2])


def _rows_of_some(rgb: np.ndarray, valid_mask: np.ndarray | None) -> dict[str, float | np.ndarray]:
    # A value and an array that only some tiles give: a piece of a batch may lack them entirely.
    values = _bright_rows(rgb, valid_mask)
    return values if rgb[0, 0, 0] % 3 == 0 else {}


def test_a_batch_shared_among_the_workers_arrives_whole_and_as_read_in_one_process(
    synthetic_slide: tuple[Path, np.ndarray],
) -> None:
    from wsi_her2.tiling.pool import piece_tiles

    path, _ = synthetic_slide
    mask, grid = _grid(path, tile_size_px=512)
    assert piece_tiles(48, 2, 8) == 24 and piece_tiles(256, 14, 8) == 24 and piece_tiles(16, 2, 8) == 16
    results = {}
    for workers in (0, 2):  # 48-tile batches: two pieces of 24 tiles each with 2 workers
        cfg = LoaderConfig(workers=workers, batch_size=48, min_parallel_work_s=0)
        batches, images = [], []
        for b in iter_tile_batches(SlideSource(str(path)), grid, cfg, thresholds=mask.thresholds,
                                   tile_function=_rows_of_some):  # fmt: skip
            batches.append(b)
            images.append(b.images.copy())  # type: ignore[union-attr]  # shared memory, reused
        results[workers] = (
            np.concatenate(images),
            np.concatenate([b.kept for b in batches]),
            np.concatenate([b.blur_score for b in batches]),
            np.concatenate([b.measurements.get("n_rows", np.full(len(b), np.nan)) for b in batches]),
            [r for b in batches for r in b.tile_arrays.get("rows", [None] * len(b))],
        )
    (img0, kept0, blur0, n0, rows0), (img2, kept2, blur2, n2, rows2) = results[0], results[2]
    assert len(grid) > 96 and img0.shape == img2.shape and np.array_equal(img0, img2)
    assert np.array_equal(kept0, kept2) and np.array_equal(blur0, blur2)
    assert np.array_equal(n0, n2, equal_nan=True) and 0 < np.isfinite(n2).sum() < kept2.sum()
    assert all((a is None and b is None) or np.array_equal(a, b) for a, b in zip(rows0, rows2, strict=True))
