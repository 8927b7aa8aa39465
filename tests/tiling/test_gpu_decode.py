"""The device decode path, run on CPU tensors: same pixels and kept tiles as the CPU loader.

On a CUDA device the same code decodes with nvJPEG; benchmarks/gpu_checks.py compares that on a GPU.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")

from tests.conftest import fixture_path  # noqa: E402
from wsi_her2.config import GridConfig, InferenceConfig, LoaderConfig  # noqa: E402
from wsi_her2.errors import DeviceError  # noqa: E402
from wsi_her2.slide import open_slide  # noqa: E402
from wsi_her2.tiling.device_pixels import _grey, resize_tiles, shrink_integer  # noqa: E402
from wsi_her2.tiling.gpu_decode import choose_decode, iter_device_tile_batches  # noqa: E402
from wsi_her2.tiling.grid import build_tile_grid  # noqa: E402
from wsi_her2.tiling.loader import SlideSource, iter_tile_batches  # noqa: E402
from wsi_her2.tiling.stored_tiles import read_stored, stored_jpeg_level  # noqa: E402
from wsi_her2.tissue import detect_tissue  # noqa: E402

CPU = torch.device("cpu")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:torchvision.*")


def _both_paths(path: Path, tile_size: int, output: int, mpp: float | None = None):
    with open_slide(path, mpp=mpp) as reader:
        mask = detect_tissue(reader)
        grid = build_tile_grid(mask, reader.info, GridConfig(tile_size_px=tile_size))
        choice = choose_decode("gpu", CPU, reader.info, tile_size, output)
    cfg = LoaderConfig(workers=0, output_size_px=output, batch_size=16)
    cpu = list(iter_tile_batches(SlideSource(str(path), mpp), grid, cfg, thresholds=mask.thresholds))
    dev = list(iter_device_tile_batches(choice, grid, cfg, thresholds=mask.thresholds))
    assert [b.images is None and b.device_images is not None for b in dev] == [True] * len(dev)

    def cat(batches, name):
        return np.concatenate([getattr(b, name) for b in batches])

    pixels = (np.concatenate([b.images for b in cpu]), np.concatenate([b.device_images.numpy() for b in dev]))
    return grid, pixels, (cat(cpu, "kept"), cat(dev, "kept")), (cat(cpu, "blur_score"), cat(dev, "blur_score"))


@pytest.mark.parametrize("output", [256, 224])
def test_device_decoded_tiles_equal_the_cpu_loaders(synthetic_slide: tuple[Path, np.ndarray], output: int) -> None:
    path, _ = synthetic_slide
    grid, (cpu, dev), (kept_cpu, kept_dev), (blur_cpu, blur_dev) = _both_paths(path, 1024, output)
    assert cpu.shape == dev.shape == (len(grid), output, output, 3)
    difference = np.abs(cpu.astype(int) - dev)
    assert difference.max() <= 1 and difference.mean() < 0.01  # bilinear rounding only
    assert np.array_equal(kept_cpu, kept_dev)
    assert np.allclose(blur_cpu, blur_dev, rtol=1e-3, atol=1e-3)


def test_real_aperio_tiles_with_shared_tables_and_rgb_coding_decode_as_the_reader_does() -> None:
    path = fixture_path("slides", "aperio-cmu1-small-region.svs")
    with open_slide(path) as reader:
        level = stored_jpeg_level(reader.info, 240, 240)
        assert not isinstance(level, str) and level.tables is not None and level.rgb_coded
        fd = os.open(str(path), os.O_RDONLY)
        try:
            from torchvision.io import decode_jpeg

            for index in (0, 7, 30):
                stream = read_stored(fd, level, index)
                assert stream is not None
                ours = decode_jpeg(torch.frombuffer(bytearray(stream), dtype=torch.uint8)).permute(1, 2, 0).numpy()
                row, col = divmod(index, level.columns)
                theirs = reader.read_region(col * 240, row * 240, 240, 240)
                assert np.array_equal(ours, theirs)
        finally:
            os.close(fd)


def test_tiles_assembled_from_several_stored_tiles_and_the_slide_edge(  # 480-px tiles over 240-px stored ones
) -> None:
    path = fixture_path("slides", "aperio-cmu1-small-region.svs")
    _, (cpu, dev), (kept_cpu, kept_dev), _ = _both_paths(path, 480, 224)
    assert np.abs(cpu.astype(int) - dev).max() <= 1 and np.array_equal(kept_cpu, kept_dev)


def test_jfif_ome_tiff_tiles_decode_on_the_device_path() -> None:
    path = fixture_path("slides", "ome-tiff-he-crop.ome.tif")
    _, (cpu, dev), (kept_cpu, kept_dev), _ = _both_paths(path, 300, 224, mpp=0.25)
    assert np.abs(cpu.astype(int) - dev).max() <= 1 and np.array_equal(kept_cpu, kept_dev)


def test_jpeg2000_slides_fall_back_to_the_cpu_or_refuse_gpu_in_one_line() -> None:
    path = fixture_path("slides", "aperio-tcga-jpeg2000-2levels.svs")
    with open_slide(path, mpp=0.5) as reader:
        auto = choose_decode("auto", torch.device("cuda"), reader.info, 512, 224)
        assert not auto.on_device and "JPEG2000" in auto.reason
        with pytest.raises(DeviceError, match=r"--decode gpu.*JPEG2000"):
            choose_decode("gpu", CPU, reader.info, 512, 224)


def test_auto_decodes_on_the_cpu_for_a_cpu_model_and_for_the_dab_scorer(synthetic_slide) -> None:
    path, _ = synthetic_slide
    with open_slide(path) as reader:
        assert not choose_decode("auto", CPU, reader.info, 1024, 224).on_device
        assert not choose_decode("cpu", torch.device("cuda"), reader.info, 1024, 224).on_device
        with pytest.raises(DeviceError, match="worker processes"):
            choose_decode("gpu", None, reader.info, 1024, 224, needs_workers=True)


def test_device_grey_and_area_shrink_round_as_opencv() -> None:
    rgb = np.array(list(itertools.product(range(0, 256, 5), repeat=3)), np.uint8).reshape(1, -1, 1, 3)
    grey = _grey(torch.from_numpy(rgb).permute(0, 3, 1, 2)).numpy()[0, :, 0]
    assert np.array_equal(grey, cv2.cvtColor(rgb[0], cv2.COLOR_RGB2GRAY)[:, 0])
    tiles = np.random.default_rng(0).integers(0, 256, (2, 96, 96, 3), dtype=np.uint8)
    for factor in (2, 3, 4):
        ours = shrink_integer(torch.from_numpy(tiles).permute(0, 3, 1, 2), factor).permute(0, 2, 3, 1).numpy()
        theirs = [cv2.resize(t, (96 // factor, 96 // factor), interpolation=cv2.INTER_AREA) for t in tiles]
        assert np.array_equal(ours, np.stack(theirs))
    big = np.random.default_rng(1).integers(0, 256, (1, 512, 512, 3), dtype=np.uint8)
    area = resize_tiles(torch.from_numpy(big).permute(0, 3, 1, 2), 224).permute(0, 2, 3, 1).numpy()[0]
    assert np.abs(area.astype(int) - cv2.resize(big[0], (224, 224), interpolation=cv2.INTER_AREA)).max() <= 1


def test_score_slide_gives_the_same_tiles_and_probabilities_with_device_decoding(synthetic_slide, tmp_path) -> None:
    from wsi_her2.models import load_scorer
    from wsi_her2.models.card import ModelCard
    from wsi_her2.models.loading import save_checkpoint
    from wsi_her2.models.registry import create_model
    from wsi_her2.pipeline import score_slide
    from wsi_her2.settings import ScoreSettings

    path, _ = synthetic_slide
    torch.manual_seed(0)
    card = ModelCard(architecture="test_resnet", classes=("0", "1+", "2+", "3+"), stain="he", name="tiny")
    ckpt = save_checkpoint(create_model("test_resnet", 4), card, tmp_path / "ckpt")
    results = {}
    for decode in ("cpu", "gpu"):
        scorer = load_scorer(str(ckpt), inference=InferenceConfig(device="cpu", batch_size=16))
        settings = ScoreSettings(grid=GridConfig(tile_size_px=1024), grid_user_set=frozenset({"tile_size_px"}),
                                 loader=LoaderConfig(workers=0, decode=decode), check_stain=False)  # fmt: skip
        results[decode] = score_slide(path, scorer, settings)
    cpu, dev = results["cpu"].predictions, results["gpu"].predictions
    assert np.array_equal(cpu.scored, dev.scored) and cpu.scored.sum() > 5
    assert np.abs(cpu.probabilities[cpu.scored] - dev.probabilities[dev.scored]).max() < 1e-3
    assert results["gpu"].runtime["tile_decode"]["decode"] == "device"
    assert results["cpu"].runtime["tile_decode"]["reason"] == "--decode cpu"
