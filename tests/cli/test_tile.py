"""wsi-her2 tile end to end: real fixtures, synthetic slides, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import fixture_path
from wsi_her2.outputs.tile_table import read_csv_columns

OUTPUTS = {"tiles.csv", "tissue.geojson", "thumbnail.png", "manifest.json"}


@pytest.mark.parametrize(
    ("name", "extra"),
    [
        ("slides/aperio-cmu1-small-region.svs", ["--tile-size", "512"]),
        ("slides/aperio-tcga-jpeg2000-2levels.svs", ["--mpp", "0.5"]),
        ("slides/ome-tiff-he-crop.ome.tif", ["--tile-size", "256"]),
        ("ihc/ki67-ihc-hamamatsu-crop.ome.tif", []),
        ("ihc/her2-tma-core-score2plus.jpg", ["--mpp", "0.25"]),
        ("he/he-patch-1000px.png", ["--mpp", "0.25", "--tile-size", "256"]),
    ],
)
def test_tiling_real_slides_writes_every_output(run_cli, tmp_path: Path, name: str, extra: list[str]) -> None:
    out = tmp_path / "out"
    result = run_cli("tile", fixture_path(*name.split("/")), "-o", out, "--workers", "0", "-q", *extra)
    assert result.exit_code == 0, result.stderr
    assert {p.name for p in out.iterdir()} == OUTPUTS
    table = read_csv_columns(out / "tiles.csv")
    assert int(sum(v == "true" for v in table["kept"])) > 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["coordinate_space"].startswith("level-0 pixels")
    assert manifest["counts"]["tiles_kept"] == sum(v == "true" for v in table["kept"])
    geo = json.loads((out / "tissue.geojson").read_text())
    assert geo["features"][0]["properties"]["classification"]["name"] == "Tissue"


def test_tile_table_geometry_on_a_synthetic_slide(run_cli, tmp_path: Path, synthetic_slide) -> None:
    path, _ = synthetic_slide
    out = tmp_path / "out"
    result = run_cli("tile", path, "-o", out, "--workers", "2", "-q", "--target-mpp", "0.5", "--tile-size", "512")
    assert result.exit_code == 0, result.stderr
    table = read_csv_columns(out / "tiles.csv")
    xs = np.array(table["x_level0_px"], int)
    size = np.array(table["width_level0_px"], int)
    assert np.all(size == 1024)  # 512 px at 0.5 µm/px on a 0.25 µm/px slide
    assert np.all(xs % 1024 == 0)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["grid"]["target_mpp"] == 0.5
    assert manifest["slide"]["mpp_used"] == 0.25


def test_save_tiles_writes_images_and_an_index(run_cli, tmp_path: Path) -> None:
    import cv2

    saved = tmp_path / "saved"
    result = run_cli(
        "tile",
        fixture_path("slides", "aperio-cmu1-small-region.svs"),
        "-o",
        tmp_path / "out",
        "--save-tiles",
        saved,
        "--save-size",
        "224",
        "--workers",
        "0",
        "-q",
    )
    assert result.exit_code == 0, result.stderr
    index = read_csv_columns(saved / "tiles.csv")
    assert len(index["file"]) > 0
    first = cv2.imread(str(saved / index["file"][0]))
    assert first.shape == (224, 224, 3)


@pytest.mark.parametrize(
    ("make", "code", "words"),
    [
        (lambda d: d / "missing.svs", 3, "not found"),
        (lambda d: d, 4, "folder"),
        (lambda d: _write(d / "notes.svs", b"plain text, not a slide\n" * 50), 4, "not a slide"),
        (lambda d: _write(d / "empty.ndpi", b""), 4, "empty"),
        (lambda d: fixture_path("slides", "generic-tiff-boxes.tiff"), 5, "--mpp"),
        (lambda d: fixture_path("slides", "hamamatsu-fluorescence-dapi.ndpi"), 6, "fluorescence"),
        (lambda d: fixture_path("ihc", "her2-tma-core-score0.jpg"), 5, "--mpp"),
    ],
)
def test_bad_input_is_one_line_an_exit_code_and_nothing_written(
    run_cli, tmp_path: Path, make, code: int, words: str
) -> None:
    out = tmp_path / "out"
    result = run_cli("tile", make(tmp_path), "-o", out, "--workers", "0")
    assert result.exit_code == code, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("wsi-her2: error")]
    assert len(lines) == 1 and words in lines[0]
    assert "Traceback" not in result.stderr
    assert not out.exists() or not any(out.iterdir())


def test_truncated_slide_fails_cleanly(run_cli, tmp_path: Path) -> None:
    data = fixture_path("slides", "aperio-cmu1-small-region.svs").read_bytes()
    cut = _write(tmp_path / "cut.svs", data[: int(len(data) * 0.6)])
    result = run_cli("tile", cut, "-o", tmp_path / "out", "--workers", "0")
    assert result.exit_code == 4, result.stderr
    assert "Traceback" not in result.stderr


def test_debug_shows_the_traceback(run_cli, tmp_path: Path) -> None:
    result = run_cli("tile", tmp_path / "missing.svs", "-o", tmp_path / "o", "--debug")
    assert result.exit_code == 3 and "Traceback" in result.stderr


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path
