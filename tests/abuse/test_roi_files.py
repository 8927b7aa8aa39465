"""Malformed ROI GeoJSON given to `tile` and `score`: one line, the right exit code, nothing written.

Not JSON, wrong geometry types, empty, broken structures, NaN and absurd coordinates: exit 2
before the slide is read. A region outside the slide is a slide without tissue to score (exit 6).
A rectangle far larger than the slide (coordinates near 2^31) is a valid region: it must cover the
slide, not wrap around 32-bit drawing coordinates into something else.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.abuse.conftest import CliResult, assert_one_line


def _square(x0: float, y0: float, x1: float, y1: float) -> dict[str, Any]:
    return {"type": "Polygon", "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]}


def _collection(*geometries: Any) -> dict[str, Any]:
    return {"type": "FeatureCollection",
            "features": [{"type": "Feature", "geometry": g, "properties": {}} for g in geometries]}  # fmt: skip


NAN = float("nan")
BAD_ROIS: dict[str, tuple[bytes | Any, str]] = {
    "not JSON": (b"<xml>tumour</xml>", "is not valid JSON"),
    "not UTF-8": (b"\xff\xfe\x00garbage\x80", "is not valid JSON"),
    "empty file": (b"", "is not valid JSON"),
    "nested 100,000 deep": (b"[" * 100_000 + b"]" * 100_000, "is not valid JSON"),
    "empty object": ({}, "holds no polygon"),
    "empty collection": (_collection(), "holds no polygon"),
    "features is a number": ({"type": "FeatureCollection", "features": 5}, "not a GeoJSON object"),
    "features are strings": ({"type": "FeatureCollection", "features": ["a", None]}, "not a GeoJSON object"),
    "points and lines only": (_collection({"type": "Point", "coordinates": [5, 5]},
                                          {"type": "LineString", "coordinates": [[0, 0], [100, 100]]}),
                              "holds no polygon"),
    "unknown geometry type": (_collection({"type": "Circle", "coordinates": [5, 5], "radius": 3}),
                              "invalid geometry"),
    "coordinates are text": (_collection({"type": "Polygon", "coordinates": "abc"}), "invalid geometry"),
    "a ring of two points": (_collection({"type": "Polygon", "coordinates": [[[0, 0], [1, 1]]]}),
                             "invalid geometry"),
    "NaN coordinates": (_collection(_square(0, 0, NAN, 500)), "not finite"),
    "infinite coordinates": (_collection(_square(0, 0, float("inf"), 500)), "not finite"),
    "coordinates of 1e300": (_collection(_square(0, 0, 1e300, 1e300)), "not level-0 pixels of any slide"),
    "a zero-area polygon": (_collection(_square(10, 10, 10, 500)), "holds no polygon"),
}  # fmt: skip


def _write(path: Path, content: bytes | Any) -> Path:
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(json.dumps(content, allow_nan=True), encoding="utf-8")
    return path


@pytest.mark.parametrize("command", ["tile", "score"])
@pytest.mark.parametrize("case", list(BAD_ROIS))
def test_a_malformed_roi_is_one_line_exit_2_and_nothing_is_written(
    cli: Callable[..., CliResult], small_slide: Path, tmp_path: Path, case: str, command: str
) -> None:
    content, needle = BAD_ROIS[case]
    roi = _write(tmp_path / "roi.geojson", content)
    out = tmp_path / "out"
    result = cli(command, small_slide, "-o", out, "--roi", roi, "--quiet", "--workers", "0")
    assert_one_line(result, 2, needle, "roi.geojson")
    assert not out.exists()


def test_a_missing_roi_file_is_exit_3(cli: Callable[..., CliResult], small_slide: Path, tmp_path: Path) -> None:
    result = cli("score", small_slide, "-o", tmp_path / "out", "--roi", tmp_path / "nope.geojson", "--quiet")
    assert_one_line(result, 3, "ROI file not found")


@pytest.mark.parametrize("command", ["tile", "score"])
def test_a_region_outside_the_slide_has_no_tissue(
    cli: Callable[..., CliResult], small_slide: Path, tmp_path: Path, command: str
) -> None:
    roi = _write(tmp_path / "roi.geojson", _collection(_square(50_000, 50_000, 60_000, 60_000)))
    result = cli(command, small_slide, "-o", tmp_path / "out", "--roi", roi, "--quiet", "--workers", "0")
    assert_one_line(result, 6, "regions of interest contain no tissue")


def test_a_region_far_larger_than_the_slide_scores_the_whole_slide(
    cli: Callable[..., CliResult], small_slide: Path, tmp_path: Path
) -> None:
    from wsi_her2.outputs.tile_table import read_csv_columns

    huge = 2.0e9  # fits the limit (2^31) but overflows OpenCV's 32-bit points at 16x sub-pixel precision
    roi = _write(tmp_path / "roi.geojson", _collection(_square(-huge, -huge, huge, huge)))
    plain = cli("score", small_slide, "-o", tmp_path / "plain", "--quiet", "--workers", "0")
    assert plain.exit_code == 0, plain.stderr
    result = cli("score", small_slide, "-o", tmp_path / "roi", "--roi", roi, "--quiet", "--workers", "0")
    assert result.exit_code == 0, result.stderr
    with_roi = read_csv_columns(tmp_path / "roi" / "tiles.csv")
    without = read_csv_columns(tmp_path / "plain" / "tiles.csv")
    assert with_roi["x_level0_px"] == without["x_level0_px"] and with_roi["scored"] == without["scored"]
    assert with_roi["n_cells"] == without["n_cells"]  # every cell of every tile is inside the region


def test_rasterize_clips_far_coordinates_instead_of_wrapping() -> None:
    import numpy as np
    from shapely.geometry import MultiPolygon, Polygon

    from wsi_her2.roi import rasterize

    everything = MultiPolygon([Polygon([(-2e9, -2e9), (2e9, -2e9), (2e9, 2e9), (-2e9, 2e9)])])
    assert rasterize(everything, (64, 64), 1.0, 1.0).all()
    assert rasterize(everything, (64, 64), 16.0, 16.0, offset_xy=(1000.0, 1000.0)).all()
    right_half = MultiPolygon([Polygon([(32, -2e9), (2e9, -2e9), (2e9, 2e9), (32, 2e9)])])
    mask = rasterize(right_half, (64, 64), 1.0, 1.0)
    assert mask[:, 32:].all() and not mask[:, :32].any()
    assert np.count_nonzero(mask) == 64 * 32
