"""Files whose headers promise gigapixels: every command stops within seconds, in bounded memory, exit 4.

Each file is a few kilobytes. The commands run in a fresh process whose address space is capped at
3 GiB (a reader that allocated what the header asks for would die of MemoryError, exit 1), and the
process's peak resident memory is measured, not trusted.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.abuse import craft
from tests.abuse.conftest import GIB, Run, run_limited

# The CLI itself (python, numpy, OpenCV, OpenSlide) peaks at ~100-150 MB; a bomb must add nothing.
BOMB_PEAK_BYTES = 400 << 20
BOMB_SECONDS = 20


def _honest_svs(path: Path, *, lies: dict | None = None, sizes: list | None = None, tile_px: int = 256) -> Path:
    """A 1024 x 1024 SVS with a 256 x 256 level, JPEG tiles of tissue; ``lies`` replace tags per level."""
    tissue = craft.tissue_rgb(1024, seed=2)
    blobs = [craft.jpeg(tissue[r * 256 : (r + 1) * 256, c * 256 : (c + 1) * 256]) for r in range(4) for c in range(4)]
    blobs.append(craft.jpeg(cv2.resize(tissue, (256, 256), interpolation=cv2.INTER_AREA)))
    return craft.write_svs(
        path, sizes or [(1024, 1024), (256, 256)], tile_px, blobs,
        lambda level, c, r: 16 if level else (r * 4 + c) % 16, lies=lies,
    )  # fmt: skip


def _one_strip_200k(folder: Path) -> Path:
    # Deflate data of a few bytes; decoding the strip would need 120 GB.
    return craft.one_strip_tiff(folder / "one-strip-200k.tif", 200_000, 200_000, b"\x78\x9c" + b"\x00" * 64)


def _one_tile_listed(path: Path, side: int, tile: int, *, compression: int = 1) -> Path:
    """A ``side``-px square image in ``tile``-px tiles of which the file lists one (66 or 768 bytes)."""
    tags = craft.rgb_tags(side, side, compression=compression)
    data = b"\x78\x9c" + b"\x00" * 64 if compression == 8 else b"\x80" * 768
    tags.update({craft.TILE_WIDTH: (craft.LONG, [tile]), craft.TILE_LENGTH: (craft.LONG, [tile]),
                 craft.TILE_OFFSETS: (craft.LONG, [8]), craft.TILE_COUNTS: (craft.LONG, [len(data)])})  # fmt: skip
    path.write_bytes(craft.tiff_bytes([tags], data))
    return path


def _absurd_tile_count(folder: Path) -> Path:
    # 1,048,576 x 1,048,576 px in 16-px tiles: 4.3 billion tiles, one listed.
    return _one_tile_listed(folder / "absurd-tile-count.tif", 1 << 20, 16)


def _side_beyond_tiff(folder: Path) -> Path:
    return _one_tile_listed(folder / "four-billion-px.tif", 4_000_000_000, 16)


def _huge_tile(folder: Path) -> Path:
    return _one_tile_listed(folder / "one-65536-px-tile.tif", 65536, 65536, compression=8)


def _too_few_tiles(folder: Path) -> Path:
    # A plausible 4096 x 4096 image in 16-px tiles (65,536 of them) that lists one: reads past the list.
    return _one_tile_listed(folder / "too-few-tiles.tif", 4096, 16)


def _counts_past_the_end(folder: Path) -> Path:
    # Byte counts of 4 GB in a 1-KB file: reading a tile would first allocate 4 GB for its bytes.
    path = _honest_svs(folder / "counts-past-the-end.svs")
    data = bytearray(path.read_bytes())
    import tifffile

    with tifffile.TiffFile(path) as tif:
        tag = tif.pages[0].tags["TileByteCounts"]
        at, count = tag.valueoffset, tag.count
    data[at : at + 4 * count] = np.full(count, 4_000_000_000, "<u4").tobytes()
    path.write_bytes(bytes(data))
    return path


def _jpeg_tile_declares_60000(folder: Path) -> Path:
    tile = craft.declare_jpeg_size(craft.jpeg(np.full((256, 256, 3), 200, np.uint8)), 60_000, 60_000)
    return craft.write_svs(folder / "jpeg-tile-60000.svs", [(512, 512)], 256, [tile], lambda *_: 0)


def _level_larger_than_base(folder: Path) -> Path:
    lies = {1: {craft.WIDTH: (craft.LONG, [100_000]), craft.LENGTH: (craft.LONG, [100_000])}}
    return _honest_svs(folder / "level-larger-than-base.svs", lies=lies)


def _level_with_other_aspect(folder: Path) -> Path:
    # Level 1 claims to shrink x by 4 and y by 1 (and lists tiles for that).
    sizes = [(1024, 1024), (256, 1024)]
    return _honest_svs(folder / "level-other-aspect.svs", sizes=sizes)


def _png_bomb(folder: Path) -> Path:
    return craft.png_bomb(folder / "bomb-30000.png", 30_000)


def _jpeg_bomb(folder: Path) -> Path:
    return craft.jpeg_bomb(folder / "bomb-30000.jpg", 30_000)


# Each is refused when opened: `info` too.
REFUSED_AT_OPEN: dict[str, tuple[Callable[[Path], Path], str]] = {
    "one strip of 200,000 x 200,000 px": (_one_strip_200k, "200000 x 200000"),
    "4.3 billion tiles of 16 px": (_absurd_tile_count, "no pyramid"),
    "4,000,000,000 px wide": (_side_beyond_tiff, "4000000000 x 4000000000"),
    "one 65,536-px tile": (_huge_tile, "65536 x 65536"),
    "a 4096-px image listing 1 of its 65,536 tiles": (_too_few_tiles, "needs 65,536 tiles"),
    "tile byte counts of 4 GB in a tiny file": (_counts_past_the_end, "truncated"),
    "a JPEG tile whose header says 60,000 px": (_jpeg_tile_declares_60000, "60000 x 60000"),
    "a level larger than level 0": (_level_larger_than_base, "larger than level 0"),
    "a level shrinking x by 4 and y by 1": (_level_with_other_aspect, "not a reduction"),
    "a 30,000 x 30,000 PNG (1-bit zeros)": (_png_bomb, "too large to decode"),
    "a JPEG whose header says 30,000 x 30,000": (_jpeg_bomb, "too large to decode"),
}


@pytest.fixture(scope="module")
def bombs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bombs")
    files = {name: make(folder) for name, (make, _) in REFUSED_AT_OPEN.items()}
    assert all(path.stat().st_size < 1_000_000 for path in files.values())  # small on disk
    return files


def _commands(slide: Path, out: Path) -> dict[str, list[object]]:
    return {
        "info": ["info", slide, "--mpp", "0.5"],
        "tile": ["tile", slide, "-o", out, "--mpp", "0.5", "--quiet"],
        "score": ["score", slide, "-o", out, "--mpp", "0.5", "--quiet"],
    }


def assert_refused(run: Run, needle: str, out: Path | None = None) -> None:
    """Exit 4, one line naming the problem, seconds, no gigabytes, nothing written."""
    assert run.exit_code == 4, run.stderr[-2000:]
    assert len(run.message_lines) == 1 and run.message_lines[0].startswith("wsi-her2: error: "), run.stderr
    assert needle in run.message_lines[0]
    assert "Traceback" not in run.stderr
    assert run.seconds < BOMB_SECONDS
    assert 0 < run.peak_rss_bytes < BOMB_PEAK_BYTES, f"peak {run.peak_rss_bytes / 2**20:.0f} MiB"
    if out is not None:
        assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize("command", ["info", "tile", pytest.param("score", marks=pytest.mark.slow)])
@pytest.mark.parametrize("case", list(REFUSED_AT_OPEN))
def test_a_bomb_stops_in_seconds_with_one_line_and_exit_4(
    bombs: dict[str, Path], case: str, command: str, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    run = run_limited(*_commands(bombs[case], out)[command])
    assert_refused(run, REFUSED_AT_OPEN[case][1], out)


def test_a_lie_in_a_later_tile_stops_tile_and_score_from_the_worker_processes(tmp_path: Path) -> None:
    """Tile 0 is honest, so the slide opens; tile 33 declares 60,000 px and is found when a worker decodes it.

    Tissue covers level 0's top-left 4 x 4 tiles; the mask and the overview come from level 1, so
    only the loader's worker processes read level 0.
    """
    tissue = craft.tissue_rgb(1024, seed=3)
    glass = np.full((256, 256, 3), (242, 242, 245), np.uint8)
    pieces = [craft.jpeg(tissue[r * 256 : (r + 1) * 256, c * 256 : (c + 1) * 256]) for r in range(4) for c in range(4)]
    low = glass.copy()
    low[:] = cv2.resize(tissue, (256, 256), interpolation=cv2.INTER_AREA)
    liar = craft.declare_jpeg_size(pieces[5], 60_000, 60_000)
    blobs = [craft.jpeg(glass), craft.jpeg(low), liar, *pieces]

    def choose(level: int, c: int, r: int) -> int:
        if level == 1:
            return 1 if (c, r) == (0, 0) else 0
        if c < 4 and r < 4:
            return 2 if (c, r) == (1, 1) else 3 + r * 4 + c
        return 0

    slide = craft.write_svs(tmp_path / "late-lie.svs", [(8192, 8192), (2048, 2048)], 256, blobs, choose, mpp=0.5)
    assert run_limited("info", slide).exit_code == 0  # the header is fine
    # 256-px tiles delivered at 224 px are read from level 0 (a 1024-px tile would come from level 1).
    for command, extra in (("tile", ["--tile-size", "256"]), ("score", [])):
        out = tmp_path / command
        run = run_limited(command, slide, "-o", out, "--workers", "2", "--quiet", *extra)
        assert_refused(run, "tile 33 of level 0 holds an encoded image of 60000 x 60000", out)


def test_tiles_that_decode_smaller_than_declared_stop_with_exit_4(tmp_path: Path) -> None:
    """Level 1 claims 1024 px in 512-px tiles but stores 256-px JPEGs: the tissue mask would read missing pixels."""
    lies = {1: {craft.WIDTH: (craft.LONG, [1024]), craft.LENGTH: (craft.LONG, [1024]),
                craft.TILE_WIDTH: (craft.LONG, [512]), craft.TILE_LENGTH: (craft.LONG, [512])}}  # fmt: skip
    tissue = craft.tissue_rgb(1024, seed=4)
    blob = craft.jpeg(tissue[:256, :256])
    slide = craft.write_svs(tmp_path / "small-tiles.svs", [(4096, 4096), (512, 512)], 256, [blob],
                            lambda *_: 0, lies=lies)  # fmt: skip
    assert run_limited("info", slide).exit_code == 0
    for command in ("tile", "score"):
        run = run_limited(command, slide, "-o", tmp_path / command, "--mpp", "0.5", "--quiet")
        assert_refused(run, "decodes to 256 x 256 pixels, not the 512 x 512", tmp_path / command)


def test_strips_of_a_large_one_level_image_are_cached_within_a_byte_budget(tmp_path: Path) -> None:
    """A 12,000-px striped image (36 MB per strip) read whole keeps a few strips, not 64 of them."""
    import tifffile

    from wsi_her2.slide import open_slide, read_thumbnail

    path = tmp_path / "striped.tif"
    image = np.zeros((12_000, 12_000, 3), np.uint8)
    image[::7, ::5] = 255
    tifffile.imwrite(path, image, compression="zlib", rowsperstrip=1000, photometric="rgb")
    del image
    with open_slide(path, mpp=0.5) as reader:
        read_thumbnail(reader, 16)
        cached = sum(tile.nbytes for tile in reader._cache.values())  # type: ignore[attr-defined]
        assert reader.info.levels[0].tile_width == 0  # striped
    assert cached <= 256 << 20
    assert cached >= 36_000_000  # it does cache


@pytest.fixture(scope="module")
def wide_slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A legal 200,000 x 100,000 SVS (50 x 25 mm at 0.25 µm/px): tiled, four levels, 2 MB on disk.

    Glass tiles share one encoded blob; 2 x 2 tiles of level 0 at the top-left are tissue, drawn at
    every level, so the tissue mask finds them and four 256-µm tiles are scored.
    """
    tile = 1024
    tissue = craft.tissue_rgb(2 * tile, seed=5)
    glass = np.full((tile, tile, 3), (242, 242, 245), np.uint8)
    blobs = [craft.jpeg(glass)] + [craft.jpeg(tissue[r * tile : (r + 1) * tile, c * tile : (c + 1) * tile])
                                   for r in range(2) for c in range(2)]  # fmt: skip
    for ds in (4, 16, 64):
        low = glass.copy()
        side = 2 * tile // ds
        low[:side, :side] = cv2.resize(tissue, (side, side), interpolation=cv2.INTER_AREA)
        blobs.append(craft.jpeg(low))
    width, height = 200_000, 100_000
    sizes = [(width // ds, height // ds) for ds in (1, 4, 16, 64)]

    def choose(level: int, c: int, r: int) -> int:
        if level == 0:
            return 1 + r * 2 + c if c < 2 and r < 2 else 0
        return 4 + level if c == 0 and r == 0 else 0

    return craft.write_svs(tmp_path_factory.mktemp("wide") / "wide-200k.svs", sizes, tile, blobs, choose)


def test_a_legal_200000_px_pyramidal_slide_opens(wide_slide: Path) -> None:
    run = run_limited("info", wide_slide, "--json")
    assert run.exit_code == 0, run.stderr
    info = json.loads(run.stdout)
    assert (info["width"], info["height"], len(info["levels"])) == (200_000, 100_000, 4)
    assert info["backend"] == "tifffile" and info["mpp_x"] == 0.25
    assert run.peak_rss_bytes < BOMB_PEAK_BYTES


@pytest.mark.slow
def test_a_legal_200000_px_pyramidal_slide_is_tiled_and_scored(wide_slide: Path, tmp_path: Path) -> None:
    run = run_limited("tile", wide_slide, "-o", tmp_path / "tile", "--workers", "0", "--quiet", memory_bytes=4 * GIB)
    assert run.exit_code == 0, run.stderr
    manifest = json.loads((tmp_path / "tile" / "manifest.json").read_text())
    assert manifest["counts"]["tiles_kept"] == 4
    run = run_limited("score", wide_slide, "-o", tmp_path / "score", "--workers", "0", "--quiet", memory_bytes=4 * GIB)
    assert run.exit_code == 0, run.stderr
    report = json.loads((tmp_path / "score" / "report.json").read_text())
    assert report["tiles"]["scored"] == 4 and report["slide"]["width"] == 200_000
    # The tissue mask of a 50 x 25 mm slide (8192 x 4096 px) dominates; nothing scales with level 0.
    assert run.peak_rss_bytes < 2.5 * GIB, f"peak {run.peak_rss_bytes / GIB:.2f} GiB"
    assert math.isfinite(run.seconds)


def test_the_openslide_backend_refuses_tiles_it_would_decode_into_gigabytes(tmp_path: Path) -> None:
    """Aperio JPEG 2000 (33003) goes to OpenSlide; a 16,384-px tile would be 1 GiB of RGBA per read."""
    import imagecodecs

    j2k = bytes(imagecodecs.jpeg2k_encode(np.full((256, 256, 3), 200, np.uint8), level=50, codecformat="J2K"))
    lies = {0: {craft.COMPRESSION: (craft.SHORT, [33003])}}
    slide = craft.write_svs(tmp_path / "j2k-16384.svs", [(16384, 16384)], 16384, [j2k], lambda *_: 0, lies=lies)
    for backend in ("openslide", "auto"):
        run = run_limited("info", slide, "--backend", backend)
        assert_refused(run, "stored tiles of 16384 x 16384 pixels")


@pytest.mark.parametrize(
    "description", ["Aperio Image Library|MPP = abc|AppMag = inf", "Aperio|MPP = nan|AppMag = 1e999"]
)
def test_metadata_that_is_not_a_number_leaves_the_value_unknown(tmp_path: Path, description: str) -> None:
    slide = _honest_svs(tmp_path / "odd-metadata.svs", lies={0: {craft.DESCRIPTION: (craft.ASCII, description)}})
    run = run_limited("info", slide, "--json")
    assert run.exit_code == 0, run.stderr
    info = json.loads(run.stdout)
    assert info["mpp_x"] is None and info["metadata_mpp"] is None and info["objective_power"] is None
    run = run_limited("score", slide, "-o", tmp_path / "out", "--quiet")
    assert run.exit_code == 5 and "--mpp" in run.message_lines[0]
