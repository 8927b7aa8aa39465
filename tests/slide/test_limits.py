"""The header sniffers and geometry checks that guard every reader against resource bombs."""

from __future__ import annotations

import imagecodecs
import numpy as np
import pytest

from wsi_her2.errors import MalformedSlideError
from wsi_her2.slide.base import LevelInfo, finite_float
from wsi_her2.slide.limits import MAX_COARSEST_LEVEL_PX, check_levels, check_stream_size, encoded_size

IMAGE = np.random.default_rng(0).integers(0, 255, (200, 300, 3), dtype=np.uint8)


@pytest.mark.parametrize(
    "encode",
    [
        lambda a: imagecodecs.jpeg8_encode(a, level=80),
        lambda a: imagecodecs.jpeg8_encode(a, level=80, subsampling="444"),
        lambda a: imagecodecs.jpeg2k_encode(a, level=50, codecformat="J2K"),
        lambda a: imagecodecs.jpeg2k_encode(a, level=50, codecformat="JP2"),
        lambda a: imagecodecs.webp_encode(a, level=80),
        lambda a: imagecodecs.webp_encode(a, lossless=True),
    ],
    ids=["jpeg-420", "jpeg-444", "j2k", "jp2", "webp", "webp-lossless"],
)
def test_encoded_size_reads_what_real_encoders_write(encode: object) -> None:
    assert encoded_size(bytes(encode(IMAGE))) == (300, 200)  # type: ignore[operator]


def test_encoded_size_is_none_for_other_data() -> None:
    assert encoded_size(b"\x78\x9c" + b"\x00" * 50) is None
    assert encoded_size(b"\xff\xd8\xff") is None  # a truncated JPEG: nothing to read, nothing refused
    assert encoded_size(b"") is None


def test_a_stream_larger_than_its_tile_is_refused_and_a_smaller_one_is_not() -> None:
    data = bytes(imagecodecs.jpeg8_encode(IMAGE))
    check_stream_size("x.svs", data, 300, 200, "tile 0")
    check_stream_size("x.svs", data, 512, 512, "tile 0")
    with pytest.raises(MalformedSlideError, match="300 x 200 pixels in a 256 x 256 tile"):
        check_stream_size("x.svs", data, 256, 256, "tile 0")


def test_real_pyramid_rounding_passes() -> None:
    # NDPI-like: each level halves with rounding up, down to a few pixels.
    sizes = [(3968, 4864), (1984, 2432), (992, 1216), (496, 608), (248, 304), (124, 152), (62, 76), (31, 38), (16, 19)]
    levels = [LevelInfo(i, w, h, 3968 / w, 256, 256) for i, (w, h) in enumerate(sizes)]
    check_levels("x.ndpi", levels)
    check_levels("tiny.svs", [LevelInfo(0, 16, 16, 1.0, 16, 16), LevelInfo(1, 1, 1, 16.0, 16, 16)])


def test_a_one_level_slide_up_to_a_gigapixel_passes_and_beyond_is_refused() -> None:
    check_levels("flat.tif", [LevelInfo(0, 32768, 32768, 1.0, 256, 256)])
    assert MAX_COARSEST_LEVEL_PX >= 32768 * 32768
    with pytest.raises(MalformedSlideError, match="has no pyramid"):
        check_levels("flat.tif", [LevelInfo(0, 40000, 40000, 1.0, 256, 256)])


def test_finite_float() -> None:
    assert finite_float("0.25") == 0.25
    for value in (None, "", "abc", "nan", "inf", "-inf", float("nan"), [1]):
        assert finite_float(value) is None
