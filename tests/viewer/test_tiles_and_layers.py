"""The Deep Zoom tiler over the project's slide readers, and the heatmap layers."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.viewer.conftest import CLASSES, TILE, FakeResult
from wsi_her2.viewer.deepzoom import BLANK_RGB, DeepZoomTiler, _crop_resized
from wsi_her2.viewer.errors import RequestError


@pytest.fixture(scope="module")
def gradient_png(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """A 1500 x 1000 plain PNG (one-level image) with a smooth, exactly known pattern."""
    yy, xx = np.mgrid[0:1000, 0:1500]
    rgb = np.stack([xx * 255 // 1499, yy * 255 // 999, (xx + yy) * 255 // 2498], axis=-1).astype(np.uint8)
    path = tmp_path_factory.mktemp("png") / "gradient.png"
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return path, rgb


def test_geometry_follows_the_deep_zoom_rules(gradient_png: tuple[Path, np.ndarray]) -> None:
    from wsi_her2.slide import open_slide

    with open_slide(gradient_png[0], mpp=0.5) as reader:
        tiler = DeepZoomTiler(reader)
        assert tiler.max_level == math.ceil(math.log2(1500)) == 11
        assert tiler.level_size(11) == (1500, 1000) and tiler.level_size(10) == (750, 500)
        assert tiler.level_size(0) == (1, 1)
        assert tiler.tile_grid(11) == (6, 4)
        assert tiler.tile_bounds(11, 0, 0) == (0, 0, 255, 255)
        assert tiler.tile_bounds(11, 1, 1) == (253, 253, 256, 256)
        assert tiler.tile_bounds(11, 5, 3) == (1269, 761, 231, 239)
        assert 'Overlap="1" TileSize="254"' in tiler.dzi() and 'Width="1500" Height="1000"' in tiler.dzi()
        for bad in ((12, 0, 0), (-1, 0, 0), (11, 6, 0), (11, 0, 4), (11, -1, 0)):
            with pytest.raises(RequestError):
                tiler.tile_bounds(*bad)


def test_full_resolution_tiles_are_the_slide_pixels(gradient_png: tuple[Path, np.ndarray]) -> None:
    from wsi_her2.slide import open_slide

    path, rgb = gradient_png
    with open_slide(path, mpp=0.5) as reader:
        tiler = DeepZoomTiler(reader)
        for col, row in ((0, 0), (2, 1), (5, 3)):
            x, y, w, h = tiler.tile_bounds(11, col, row)
            assert np.array_equal(tiler.tile_rgb(11, col, row), rgb[y : y + h, x : x + w])
        # Coarse levels (cut from the overview, or read from the image) match the image shrunk.
        for level in (10, 9, 6):
            w, h = tiler.level_size(level)
            s = tiler.scale(level)  # a Deep Zoom pixel is exactly s x s level-0 pixels: white past the edges
            padded = np.full((h * s, w * s, 3), 255, np.uint8)
            padded[:1000, :1500] = rgb
            expected = cv2.resize(padded, (w, h), interpolation=cv2.INTER_AREA)
            x, y, tw, th = tiler.tile_bounds(level, 0, 0)
            got = tiler.tile_rgb(level, 0, 0).astype(int)
            assert got.shape == (th, tw, 3)
            assert np.abs(got - expected[y : y + th, x : x + tw]).mean() < 2.5, level
        jpeg = tiler.tile_jpeg(10, 1, 1)
        assert jpeg[:2] == b"\xff\xd8" and tiler.tile_jpeg(10, 1, 1) is jpeg  # cached


def test_tiles_of_an_svs_pyramid(viewer_slide: Path) -> None:
    from wsi_her2.slide import open_slide, read_tile

    with open_slide(viewer_slide) as reader:
        tiler = DeepZoomTiler(reader, overview_side_px=512)
        top = tiler.max_level
        x, y, w, h = tiler.tile_bounds(top - 2, 1, 1)  # 4x: the 4x level of the file, as it is
        direct = reader.read_region(x * 4, y * 4, w, h, 1)
        assert np.array_equal(tiler.tile_rgb(top - 2, 1, 1), direct)
        for level, s in ((top - 3, 8), (top - 5, 32)):  # the overview is 8x (a power of two): cut from it
            x, y, w, h = tiler.tile_bounds(level, 0, 0)
            direct = read_tile(reader, x * s, y * s, w * s, h * s, w, h).astype(int)
            assert np.abs(tiler.tile_rgb(level, 0, 0).astype(int) - direct).mean() < 0.5


def test_blank_tiler_and_bad_arguments() -> None:
    tiler = DeepZoomTiler(None, width=1000, height=10)
    tile = tiler.tile_rgb(tiler.max_level, 3, 0)
    assert tile.shape == (10, 1000 - 3 * 254 + 1, 3) and (tile == BLANK_RGB).all()
    with pytest.raises(ValueError):
        DeepZoomTiler(None)
    with pytest.raises(ValueError):
        DeepZoomTiler(None, width=10, height=10, tile_size=0)


def test_crop_resized_pads_with_white() -> None:
    image = np.zeros((100, 100, 3), np.uint8)
    out = _crop_resized(image, 50, 50, 100, 100, 20, 20)
    assert (out[:8, :8] == 0).all() and (out[12:, 12:] == 255).all()
    assert (_crop_resized(image, 200, 200, 10, 10, 5, 5) == 255).all()
    image[:, 50:] = 200
    halves = _crop_resized(image, 0, 0, 100, 100, 2, 2)
    assert (halves[:, 0] == 0).all() and (halves[:, 1] == 200).all()


# -- layers -----------------------------------------------------------------------------------------
def test_layers_colours_windows_and_values(deep_result: FakeResult) -> None:
    from wsi_her2.her2 import CLASS_COLORS_RGB
    from wsi_her2.viewer.layers import HeatmapLayers, viridis_lut

    layers = HeatmapLayers(deep_result.folder / "heatmap.zarr", slide_size=(4000, 3000))
    assert layers.classes == CLASSES and layers.channels[0] == "predicted_class"
    rgba = layers.rgba("predicted_class")
    assert rgba.shape == (6, 8, 4)
    for cls in CLASSES:
        col, row = deep_result.tile_at(cls)
        assert tuple(rgba[row, col]) == (*CLASS_COLORS_RGB[cls], 255)
    assert rgba[0, 0, 3] == 0 and rgba[0, 1, 3] == 0
    p3 = layers.rgba("p(3+)")
    col, row = deep_result.tile_at("3+")
    assert tuple(p3[row, col, :3]) == tuple(viridis_lut()[round(0.85 * 255)])
    assert layers.window("p(3+)") == (0.0, 1.0) and layers.window("predicted_class") == (0.0, 3.0)
    assert layers.values_at(col, row)["p(3+)"] == pytest.approx(0.85)
    assert layers.values_at(0, 0)["p(0)"] is None
    with pytest.raises(RequestError):
        layers.values_at(8, 0)
    with pytest.raises(RequestError, match="unknown heatmap channel"):
        layers.png("p(4+)")
    png = cv2.imdecode(np.frombuffer(layers.png("predicted_class"), np.uint8), cv2.IMREAD_UNCHANGED)
    k = layers.factor
    assert k == 64 and png.shape[0] == math.ceil(3000 / TILE * k) and png.shape[1] == math.ceil(4000 / TILE * k)
    place = layers.placement()
    assert place["width"] == pytest.approx(png.shape[1] * TILE / k)
    lut = viridis_lut()
    assert tuple(lut[0]) == (68, 1, 84) and tuple(lut[-1]) == (253, 231, 37)


def test_overlapping_tiles_are_centred(tmp_path: Path) -> None:
    from wsi_her2.config import GridConfig
    from wsi_her2.outputs.heatmap import write_heatmap
    from wsi_her2.tiling.grid import TileGrid
    from wsi_her2.viewer.layers import HeatmapLayers

    grid = TileGrid(x=np.array([0, 256]), y=np.array([0, 0]), col=np.array([0, 1]), row=np.array([0, 0]),
                    tissue_fraction=np.ones(2), tile_size_px=512, stride_px=256, n_cols=3, n_rows=2, slide_width=1000,
                    slide_height=600, mpp=0.5, positions_on_tissue=2, config=GridConfig())  # fmt: skip
    write_heatmap(tmp_path / "h.zarr", grid, ["x"], np.array([[0.5], [2.0]]), colors=["FFFFFF"], windows=[(0, 1)])
    layers = HeatmapLayers(tmp_path / "h.zarr", classes=("a", "b"))
    assert layers.placement()["x"] == 128 and layers.placement()["width"] == 3 * 256
    assert layers.window("x") == (0.0, 1.0)  # from the OMERO metadata: 2.0 is clipped
    assert layers.legend("x")["kind"] == "continuous"
