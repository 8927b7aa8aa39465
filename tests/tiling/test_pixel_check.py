"""The batched pixel check gives the per-tile check's numbers, on synthetic and real tiles."""

from __future__ import annotations

import itertools
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.conftest import fixture_path
from wsi_her2.slide import open_slide, read_tile
from wsi_her2.tiling.pixel_check import pixel_check, pixel_check_batch
from wsi_her2.tissue import TissueThresholds, _saturation_above, detect_tissue


def _assert_same(images: np.ndarray, thresholds: TissueThresholds) -> None:
    expected = np.array([pixel_check(tile, thresholds) for tile in images])
    fractions, blur = pixel_check_batch(images, thresholds)
    assert np.allclose(fractions, expected[:, 0], rtol=0, atol=1e-6)
    assert np.allclose(blur, expected[:, 1], rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("size", [224, 256, 299, 512])
def test_batched_check_equals_the_per_tile_check_on_slide_tiles(
    synthetic_slide: tuple[Path, np.ndarray], size: int
) -> None:
    path, _ = synthetic_slide
    with open_slide(path) as reader:
        mask = detect_tissue(reader)
        xs = range(0, reader.info.width - 1024, 700)
        tiles = [read_tile(reader, x, y, 1024, 1024, size, size) for x, y in itertools.product(xs, (0, 2048, 4096))]
    _assert_same(np.stack(tiles), mask.thresholds)


def test_batched_check_equals_the_per_tile_check_on_real_ihc_and_glass() -> None:
    core = cv2.cvtColor(cv2.imread(str(fixture_path("ihc", "her2-tma-core-score0.jpg"))), cv2.COLOR_BGR2RGB)
    tiles = [core[y : y + 1024, x : x + 1024] for y in range(0, 5000, 1100) for x in range(0, 5000, 1100)]
    small = np.stack([cv2.resize(t, (256, 256), interpolation=cv2.INTER_AREA) for t in tiles])
    blurred = np.stack([cv2.GaussianBlur(t, (0, 0), 3) for t in small])
    glass = np.full((3, 256, 256, 3), 238, np.uint8)
    _assert_same(np.concatenate([small, blurred, glass]), TissueThresholds())


def test_saturation_threshold_matches_opencv_hsv_for_every_colour() -> None:
    rg = np.array(list(itertools.product(range(256), repeat=2)), np.uint8)
    for blue in range(0, 256, 15):
        image = np.concatenate([rg, np.full((len(rg), 1), blue, np.uint8)], axis=1).reshape(256, 256, 3)
        saturation = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)[..., 1]
        for threshold in (0.0, 20.0, 20.5, 254.0, 255.0):
            assert np.array_equal(_saturation_above(image, threshold), saturation > threshold)
