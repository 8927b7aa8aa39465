"""Finding slides: extensions, DICOM folders, companions, images, lists, shards, fingerprints."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.batch.conftest import fixture_or_none
from wsi_her2.batch import (
    discover_slides,
    parse_shard,
    prepare_discovery,
    read_slide_list,
    slide_fingerprint,
    take_shard,
)
from wsi_her2.batch.discovery import SKIP_IMAGE_NO_MPP, SKIP_LISTED_TWICE
from wsi_her2.errors import ConfigError, InputNotFoundError


def _touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "slides"
    for rel in (
        "caseA/slide1.svs",
        "caseB/slide1.svs",  # the same file name in another folder
        "caseB/slide1.ndpi",  # the same stem, another format
        "scanner/x.mrxs",
        "scanner/x/Slidedat.ini",  # MRXS data folder: not slides
        "scanner/x/Data0000.dat",
        "dicom/series1/a.dcm",
        "dicom/series1/b.dcm",
        "vms/s.vms",
        "vms/s.jpg",  # a piece of the VMS slide, not an image to score
        "cores/core1.jpg",
        "cores/core2.png",
        "misc/notes.txt",
        "misc/annotations.geojson",
        ".hidden/s.svs",
        "caseA/._slide1.svs",  # macOS resource fork
        "a.bif",
        "b.scn",
        "c.tiff",
        "d.tif",
        "e.svslide",
    ):
        _touch(root / rel)
    return root


def test_walk_finds_every_format_once_with_unique_names(tree: Path) -> None:
    found = discover_slides(tree)
    names = [s.name for s in found.slides]
    assert names == sorted(names)
    assert set(names) == {
        "caseA/slide1.svs", "caseB/slide1.svs", "caseB/slide1.ndpi", "scanner/x.mrxs", "dicom/series1",
        "vms/s.vms", "cores/core1.jpg", "cores/core2.png", "a.bif", "b.scn", "c.tiff", "d.tif", "e.svslide",
    }  # fmt: skip
    dicom = next(s for s in found.slides if s.name == "dicom/series1")
    assert dicom.path.is_dir()
    assert found.ignored == {"other files (not slides)": 3, "hidden files": 1}  # notes, geojson, VMS piece


def test_images_without_mpp_are_skipped_with_a_reason(tree: Path) -> None:
    found = prepare_discovery(discover_slides(tree), mpp=None, shard=None)
    assert {s.name for s in found.skipped} == {"cores/core1.jpg", "cores/core2.png"}
    assert all(s.reason == SKIP_IMAGE_NO_MPP for s in found.skipped)
    assert found.skip_reasons()[SKIP_IMAGE_NO_MPP] == 2
    with_mpp = prepare_discovery(discover_slides(tree), mpp=0.25, shard=None)
    assert not with_mpp.skipped and len(with_mpp.slides) == 13


def test_the_output_folder_inside_the_slide_folder_is_not_walked(tree: Path) -> None:
    out = tree / "out"
    _touch(out / "caseA/slide1.svs/overlay.png")
    _touch(out / "old.svs")
    names = {s.name for s in discover_slides(tree, exclude=[out]).slides}
    assert not any(n.startswith("out/") for n in names)


def test_a_symlink_loop_does_not_hang(tmp_path: Path) -> None:
    _touch(tmp_path / "s" / "a.svs")
    os.symlink(tmp_path / "s", tmp_path / "s" / "loop")
    assert [s.name for s in discover_slides(tmp_path / "s").slides] == ["a.svs"]


def test_single_file_and_missing_folder(tmp_path: Path) -> None:
    slide = _touch(tmp_path / "one.svs")
    assert [s.name for s in discover_slides(slide).slides] == ["one.svs"]
    with pytest.raises(InputNotFoundError):
        discover_slides(tmp_path / "absent")


def test_a_real_dicom_series_is_one_slide() -> None:
    folder = fixture_or_none("slides", "dicom-boxes")
    if folder is None:
        pytest.skip("../shared/fixtures is needed for this test")
    found = discover_slides(folder.parent)
    assert "dicom-boxes" in [s.name for s in found.slides]
    assert not any(s.name.endswith(".dcm") for s in found.slides)


def test_list_with_header_relative_paths_mpp_and_roi(tmp_path: Path) -> None:
    _touch(tmp_path / "a" / "s1.svs")
    _touch(tmp_path / "b" / "s1.svs")
    _touch(tmp_path / "cores" / "c.jpg")
    listing = tmp_path / "list.csv"
    listing.write_text(
        "Path,MPP,ROI\n# a comment\na/s1.svs,,a/s1.geojson\nb/s1.svs,0.5,\n\ncores/c.jpg,0.25,\na/s1.svs,,\n",
        encoding="utf-8",
    )
    found = read_slide_list(listing)
    assert [s.name for s in found.slides] == ["a/s1.svs", "b/s1.svs", "cores/c.jpg"]
    a, b, c = found.slides
    assert a.roi == tmp_path / "a" / "s1.geojson" and a.mpp is None
    assert b.mpp == 0.5 and c.mpp == 0.25
    assert found.ignored == {SKIP_LISTED_TWICE: 1}
    # an image with its own µm/px in the list is not skipped
    assert not prepare_discovery(found, mpp=None, shard=None).skipped


def test_list_without_header_and_bad_rows(tmp_path: Path) -> None:
    slide = _touch(tmp_path / "x.svs")
    listing = tmp_path / "l.csv"
    listing.write_text(f"{slide},0.25\n", encoding="utf-8")
    found = read_slide_list(listing)
    assert found.slides[0].path == slide and found.slides[0].mpp == 0.25
    listing.write_text(f"{slide},fast\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="line 1"):
        read_slide_list(listing)
    listing.write_text("path,colour\nx.svs,red\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="colour"):
        read_slide_list(listing)
    with pytest.raises(InputNotFoundError):
        read_slide_list(tmp_path / "absent.csv")


@pytest.mark.parametrize("count", [1, 2, 3, 7, 20])
def test_shards_cover_every_slide_exactly_once(tree: Path, count: int) -> None:
    found = prepare_discovery(discover_slides(tree), mpp=None, shard=None)
    every = sorted([s.name for s in found.slides] + [s.name for s in found.skipped])
    parts = []
    for index in range(1, count + 1):
        shard = take_shard(found, (index, count))
        parts.append([s.name for s in shard.slides] + [s.name for s in shard.skipped])
    merged = sorted(n for part in parts for n in part)
    assert merged == every  # each slide in exactly one shard
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1  # round-robin: balanced
    assert take_shard(found, (1, count)).slides == take_shard(found, (1, count)).slides  # deterministic


@pytest.mark.parametrize("text", ["0/3", "4/3", "1-3", "a/b", "3"])
def test_bad_shards_are_refused(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_shard(text)
    assert parse_shard("2/3") == (2, 3) and parse_shard(None) is None


def test_fingerprint_follows_content_and_time(tmp_path: Path) -> None:
    slide = _touch(tmp_path / "s.svs", b"a" * 2000)
    first = slide_fingerprint(slide)["sha256"]
    assert slide_fingerprint(slide)["sha256"] == first
    os.utime(slide, ns=(1, 1))
    second = slide_fingerprint(slide)["sha256"]
    assert second != first
    slide.write_bytes(b"b" * 2000)
    os.utime(slide, ns=(1, 1))
    assert slide_fingerprint(slide)["sha256"] != second  # same size and time, other header
    series = tmp_path / "series"
    _touch(series / "1.dcm", b"1")
    before = slide_fingerprint(series)["sha256"]
    _touch(series / "2.dcm", b"2")
    assert slide_fingerprint(series)["sha256"] != before
    with pytest.raises(InputNotFoundError):
        slide_fingerprint(tmp_path / "absent.svs")
