"""Every real fixture slide opens with the right backend, size and µm/px; bad files fail clearly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import openslide
import pytest
import tifffile

from tests.conftest import fixture_path
from wsi_her2.errors import ConfigError, InputNotFoundError, MppError, SlideReadError
from wsi_her2.slide import open_slide, require_mpp

# file, backend, vendor, (width, height), levels, metadata µm/px (None = absent or implausible)
REAL_SLIDES = [
    ("slides/aperio-cmu1-small-region.svs", "tifffile", "aperio", (2220, 2967), 1, 0.499),
    ("slides/aperio-tcga-jpeg2000-2levels.svs", "tifffile", "aperio", (4443, 3567), 2, None),
    ("slides/hamamatsu-fluorescence-dapi.ndpi", "openslide", "hamamatsu", (3968, 4864), 7, 0.22817),
    ("slides/aperio-16px.svs", "tifffile", "aperio", (16, 16), 1, 0.499),
    ("slides/generic-tiff-boxes.tiff", "tifffile", "generic-tiff", (300, 250), 4, None),
    ("slides/dicom-boxes/boxes_0.dcm", "openslide", "dicom", (16, 16), 1, 0.499),
    ("slides/ome-tiff-he-crop.ome.tif", "tifffile", "ome-tiff", (1101, 1101), 1, 0.2271),
    ("ihc/ki67-ihc-hamamatsu-crop.ome.tif", "tifffile", "ome-tiff", (2202, 2202), 1, 0.2271),
    ("ihc/her2-tma-core-score0.jpg", "image", "jpeg", (5468, 5468), 2, None),
    ("he/he-red-pen-mark.png", "image", "png", (471, 448), 1, None),
]


@pytest.mark.parametrize(("name", "backend", "vendor", "size", "levels", "mpp"), REAL_SLIDES)
def test_real_slides_open_with_the_expected_facts(
    name: str, backend: str, vendor: str, size: tuple[int, int], levels: int, mpp: float | None
) -> None:
    with open_slide(fixture_path(*name.split("/"))) as reader:
        info = reader.info
        assert (info.backend, info.vendor, (info.width, info.height), len(info.levels)) == (
            backend,
            vendor,
            size,
            levels,
        )
        if mpp is None:
            assert not info.has_mpp
        else:
            assert info.mpp == pytest.approx(mpp, rel=1e-3) and info.mpp_source == "metadata"
        pixels = reader.read_region(0, 0, min(64, info.width), min(64, info.height))
        assert pixels.dtype == np.uint8 and pixels.shape == (min(64, info.height), min(64, info.width), 3)


def test_a_dicom_series_folder_opens_from_its_instances() -> None:
    folder = fixture_path("slides", "dicom-boxes")
    with open_slide(folder) as reader:
        assert reader.info.vendor == "dicom"


def test_implausible_metadata_mpp_names_the_mpp_option() -> None:
    with open_slide(fixture_path("slides", "generic-tiff-boxes.tiff")) as reader:
        assert reader.info.metadata_mpp == pytest.approx(352.78, rel=1e-3)
        with pytest.raises(MppError, match="implausible") as caught:
            require_mpp(reader.info)
    assert "--mpp" in caught.value.user_message()


def test_mpp_override_wins_over_metadata() -> None:
    with open_slide(fixture_path("slides", "aperio-cmu1-small-region.svs"), mpp=0.25) as reader:
        assert reader.info.mpp == 0.25 and reader.info.mpp_source == "override"
        assert reader.info.metadata_mpp == pytest.approx(0.499)


def test_generic_tiff_pixels_equal_the_expected_png() -> None:
    import cv2

    expected = cv2.cvtColor(
        cv2.imread(str(fixture_path("slides", "generic-tiff-boxes.expected.png"))), cv2.COLOR_BGR2RGB
    )
    with open_slide(fixture_path("slides", "generic-tiff-boxes.tiff")) as reader:
        assert np.array_equal(reader.read_region(0, 0, 300, 250), expected)


@pytest.mark.parametrize(
    "name", ["aperio-cmu1-small-region.svs", "aperio-tcga-jpeg2000-2levels.svs", "generic-tiff-boxes.tiff"]
)
def test_direct_tile_reads_equal_openslide(name: str) -> None:
    path = fixture_path("slides", name)
    slide = openslide.OpenSlide(str(path))
    with open_slide(path) as reader:
        for level, info in enumerate(reader.info.levels):
            ds = info.downsample
            # Level-aligned boxes, one of them running past the right and bottom edges.
            # OpenSlide places levels with a non-integer downsample (4.016, 2.0005 here) with sub-pixel
            # interpolation, so only their origin can be compared pixel for pixel.
            integral = ds == round(ds)
            boxes = [(0, 0), (37, 53), (info.width - 20, info.height - 20)] if integral else [(0, 0)]
            for lx, ly in boxes:
                x, y = round(lx * ds), round(ly * ds)
                ours = reader.read_region(x, y, 96, 80, level)
                rgba = np.asarray(slide.read_region((x, y), level, (96, 80)))
                theirs = np.where(rgba[..., 3:] == 0, 255, rgba[..., :3])
                diff = np.abs(ours.astype(int) - theirs)
                assert diff.max() <= 1 and diff.mean() < 0.05, (name, level, lx, ly)


def test_ome_tiff_pixels_equal_tifffile() -> None:
    path = fixture_path("slides", "ome-tiff-he-crop.ome.tif")
    full = tifffile.imread(path)
    with open_slide(path) as reader:
        assert np.array_equal(reader.read_region(100, 200, 700, 500), full[200:700, 100:800])


def test_synthetic_slide_levels_and_metadata(synthetic_slide: tuple[Path, np.ndarray]) -> None:
    path, _ = synthetic_slide
    assert openslide.OpenSlide.detect_format(str(path)) == "aperio"
    with open_slide(path) as reader:
        info = reader.info
        assert [lv.downsample for lv in info.levels] == [1.0, 4.0, 16.0]
        assert info.mpp == 0.25 and info.objective_power == 40
        assert "thumbnail" in info.associated_images
        ours = reader.read_region(2048, 1024, 256, 256, 1)
        theirs = np.asarray(openslide.OpenSlide(str(path)).read_region((2048, 1024), 1, (256, 256)).convert("RGB"))
        assert np.array_equal(ours, theirs)


def test_missing_file_and_folder_and_empty_file(tmp_path: Path) -> None:
    with pytest.raises(InputNotFoundError, match="not found"):
        open_slide(tmp_path / "nope.svs")
    with pytest.raises(SlideReadError, match="folder"):
        open_slide(tmp_path)
    empty = tmp_path / "empty.svs"
    empty.write_bytes(b"")
    with pytest.raises(SlideReadError, match="empty"):
        open_slide(empty)


def test_a_text_file_named_svs_is_not_a_slide(tmp_path: Path) -> None:
    fake = tmp_path / "fake.svs"
    fake.write_text("this is not a slide\n" * 100)
    with pytest.raises(SlideReadError, match="not a slide format"):
        open_slide(fake)


def test_a_truncated_slide_fails_on_open_or_on_read(tmp_path: Path) -> None:
    data = fixture_path("slides", "aperio-cmu1-small-region.svs").read_bytes()
    cut = tmp_path / "cut.svs"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(SlideReadError), open_slide(cut) as reader:
        info = reader.info
        reader.read_region(0, 0, info.width, info.height)


def test_unknown_backend_and_bad_mpp_are_config_errors() -> None:
    path = fixture_path("slides", "aperio-16px.svs")
    with pytest.raises(ConfigError):
        open_slide(path, backend="magic")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        open_slide(path, mpp=-1)


def test_forcing_openslide_reads_the_same_slide() -> None:
    path = fixture_path("slides", "aperio-cmu1-small-region.svs")
    with open_slide(path, backend="openslide") as a, open_slide(path) as b:
        assert a.info.backend == "openslide" and b.info.backend == "tifffile"
        assert np.abs(a.read_region(240, 480, 300, 300).astype(int) - b.read_region(240, 480, 300, 300)).max() <= 1
