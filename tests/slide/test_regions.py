from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from wsi_her2.slide import LevelInfo, best_level, open_slide, read_thumbnail, read_tile

LEVELS = (LevelInfo(0, 40000, 30000, 1.0), LevelInfo(1, 10000, 7500, 4.0), LevelInfo(2, 2500, 1875, 16.0))


@pytest.mark.parametrize(
    ("downsample", "level"),
    [(1.0, 0), (3.9, 0), (4.0, 1), (4.57, 1), (15.5, 1), (15.99, 2), (16.0, 2), (100, 2)],
)
def test_best_level_is_the_coarsest_that_does_not_upsample(downsample: float, level: int) -> None:
    assert best_level(LEVELS, downsample).index == level


def test_a_1024_tile_at_224_px_is_read_from_the_4x_level(synthetic_slide: tuple[Path, np.ndarray]) -> None:
    path, _ = synthetic_slide
    with open_slide(path) as reader:
        calls: list[tuple[int, int, int]] = []
        original = reader.read_region

        def spy(x: int, y: int, w: int, h: int, level: int = 0) -> np.ndarray:
            calls.append((level, w, h))
            return original(x, y, w, h, level)

        reader.read_region = spy  # type: ignore[method-assign]
        tile = read_tile(reader, 1024, 2048, 1024, 1024, 224, 224)
    assert tile.shape == (224, 224, 3)
    assert calls == [(1, 256, 256)]


def test_thumbnail_scale_is_exact(synthetic_slide: tuple[Path, np.ndarray]) -> None:
    path, _ = synthetic_slide
    with open_slide(path) as reader:
        thumb, sx, sy = read_thumbnail(reader, 16)
    assert thumb.shape == (384, 512, 3)
    assert (sx, sy) == (16.0, 16.0)


def test_bilinear_resize_of_rgb_is_opencvs_within_one_grey_level() -> None:
    import cv2

    from wsi_her2.slide.regions import resize_area

    rng = np.random.default_rng(0)
    tile = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
    ours = resize_area(tile, 224, 224).astype(int)
    opencv = cv2.resize(tile, (224, 224), interpolation=cv2.INTER_LINEAR).astype(int)
    assert np.abs(ours - opencv).max() <= 1 and np.abs(ours - opencv).mean() < 0.2
    into = np.empty((224, 224, 3), np.uint8)
    assert resize_area(tile, 224, 224, into) is into and np.array_equal(into, ours)
