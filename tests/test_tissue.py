"""Tissue detection on real H&E and IHC, on a known synthetic mask, and refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from shapely.geometry import box

from tests.conftest import fixture_path
from wsi_her2.config import TissueConfig
from wsi_her2.slide import open_slide
from wsi_her2.tissue import detect_tissue, pen_ink_mask, tissue_mask_from_rgb


@pytest.mark.parametrize(
    ("name", "mpp", "low", "high"),
    [
        ("slides/aperio-cmu1-small-region.svs", None, 0.30, 0.60),  # H&E strip with glass around it
        ("ihc/her2-tma-core-score0.jpg", 0.25, 0.55, 0.80),  # pale score-0 core: faint hematoxylin only
        ("ihc/her2-tma-core-score2plus.jpg", 0.25, 0.55, 0.80),
        ("ihc/ki67-ihc-hamamatsu-crop.ome.tif", None, 0.80, 1.00),
        ("he/he-patch-1000px.png", 0.25, 0.95, 1.00),
    ],
)
def test_tissue_fraction_of_real_slides(name: str, mpp: float | None, low: float, high: float) -> None:
    with open_slide(fixture_path(*name.split("/")), mpp=mpp) as reader:
        mask = detect_tissue(reader)
    assert low <= mask.tissue_fraction <= high
    assert mask.polygons.geoms, "tissue should be outlined"
    assert mask.mpp == pytest.approx(TissueConfig().mask_mpp, rel=0.2) or mask.mask.shape[0] < 300


def test_a_tma_core_is_found_as_one_round_piece() -> None:
    with open_slide(fixture_path("ihc", "her2-tma-core-score0.jpg"), mpp=0.25) as reader:
        mask = detect_tissue(reader)
    biggest = max(mask.polygons.geoms, key=lambda p: p.area)
    # The core is a disc ~1.3 mm across: its outline should be round (area / hull area near 1).
    assert biggest.area / biggest.convex_hull.area > 0.9
    assert biggest.area * 0.25**2 / 1e6 > 1.0  # mm²


def test_fluorescence_slide_has_no_brightfield_tissue_and_says_why() -> None:
    with open_slide(fixture_path("slides", "hamamatsu-fluorescence-dapi.ndpi")) as reader:
        mask = detect_tissue(reader)
    assert mask.is_empty
    assert any("fluorescence" in note for note in mask.notes)


def test_red_pen_ink_is_rejected() -> None:
    with open_slide(fixture_path("he", "he-red-pen-mark.png"), mpp=4.0) as reader:
        rgb = reader.read_region(0, 0, reader.info.width, reader.info.height)
    with_pen, _, notes = tissue_mask_from_rgb(rgb, 4.0, TissueConfig(reject_pen=True))
    without, _, _ = tissue_mask_from_rgb(rgb, 4.0, TissueConfig(reject_pen=False))
    red_ink = (rgb[..., 0] > 150) & (rgb[..., 1] < 60) & (rgb[..., 2] < 60)
    assert red_ink.mean() > 0.05
    assert without[red_ink].mean() > 0.9  # without the filter the ink counts as tissue
    assert with_pen[red_ink].mean() < 0.1
    assert any("ink" in note for note in notes)


def test_pen_colours_are_not_tissue_stains() -> None:
    import cv2

    samples = {
        "green pen": (40, 160, 60),
        "blue pen": (30, 60, 200),
        "red pen": (200, 15, 20),
        "black ink": (30, 30, 35),
        "eosin": (230, 150, 190),
        "strong eosin": (176, 52, 85),
        "hematoxylin": (120, 110, 170),
        "DAB": (150, 100, 60),
        "dark DAB nucleus": (33, 23, 20),
    }
    hsv = cv2.cvtColor(np.array([list(samples.values())], np.uint8), cv2.COLOR_RGB2HSV)
    ink = dict(zip(samples, pen_ink_mask(hsv)[0], strict=True))
    assert all(ink[k] for k in ("green pen", "blue pen", "red pen", "black ink"))
    assert not any(ink[k] for k in ("eosin", "strong eosin", "hematoxylin", "DAB", "dark DAB nucleus"))


def test_known_half_tissue_slide(half_tissue_slide: Path) -> None:
    with open_slide(half_tissue_slide) as reader:
        mask = detect_tissue(reader)
    assert mask.tissue_fraction == pytest.approx(0.5, abs=0.03)
    left, right = box(0, 0, 2048, 4096), box(2048, 0, 4096, 4096)
    assert mask.polygons.intersection(left).area / left.area > 0.95
    assert mask.polygons.intersection(right).area / right.area < 0.03
