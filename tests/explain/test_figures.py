"""Overlays, panels and galleries: sizes, colours, readable PNGs."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from wsi_her2.explain.figures import cam_overlay, class_slug, gallery_figure, panel_figure, upsample


def test_class_slugs_are_file_safe() -> None:
    names = ("0", "1+", "3+", "negative", "a b/c")
    assert [class_slug(c) for c in names] == ["0", "1plus", "3plus", "negative", "a_b_c"]


def test_overlay_is_red_where_the_map_peaks_and_blue_where_it_is_zero() -> None:
    image = np.full((64, 64, 3), 128, np.uint8)
    cam = np.zeros((4, 4), np.float32)
    cam[0, 0] = 1.0
    out = cam_overlay(image, cam)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert out[2, 2, 0] > out[2, 2, 2]  # red at the peak
    assert out[60, 60, 2] > out[60, 60, 0]  # blue at zero
    assert upsample(cam, 8, 16).shape == (16, 8)


def test_panel_and_gallery_are_readable_pngs(tmp_path: Path) -> None:
    image = np.random.default_rng(0).integers(0, 255, (300, 300, 3), dtype=np.uint8)
    maps = [cam_overlay(image, np.eye(4)) for _ in range(4)]
    panel = cv2.imread(str(panel_figure(tmp_path / "panel.png", image, maps, ["a", "b", "c", "d"], title="t")))
    assert panel is not None and panel.shape[1] > 3.5 * panel.shape[0]  # one row of five pictures and a bar
    gallery = cv2.imread(str(gallery_figure(tmp_path / "g.png", [[image, *maps]] * 3, [["x"] * 5] * 3, title="g",
                                            colorbar_label="cam")))  # fmt: skip
    assert gallery is not None and gallery.shape[0] > 3 * 200
    empty = cv2.imread(str(gallery_figure(tmp_path / "e.png", [], [], title="nothing")))
    assert empty is not None
    assert not list(tmp_path.glob(".tmp-*"))
