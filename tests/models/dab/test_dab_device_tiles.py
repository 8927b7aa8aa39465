"""The DAB scorer on a torch device takes tiles decoded there (``TileBatch.device_images``) as they are.

Run on CPU tensors (the code path a CUDA device takes, with torchvision's libjpeg-turbo instead of
nvJPEG); ``benchmarks/gpu_checks.py`` compares the CUDA run with the CPU scorer on a GPU.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import require_models

require_models()
pytest.importorskip("torchvision")

import torch  # noqa: E402

from tests.conftest import fixture_path  # noqa: E402
from tests.models.dab.conftest import CellSpec, render_tile  # noqa: E402
from wsi_her2.config import LoaderConfig  # noqa: E402
from wsi_her2.models.dab import default_stain_vectors  # noqa: E402
from wsi_her2.models.dab.scorer import DabScorer  # noqa: E402
from wsi_her2.tiling.loader import TileBatch  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:torchvision.*")


def _torch_scorer() -> DabScorer:
    scorer = DabScorer()
    scorer.torch_device = "cpu"  # the CUDA code path, on CPU tensors
    return scorer


def test_the_scorer_takes_tiles_as_tensors_only_on_a_torch_device() -> None:
    assert DabScorer().tile_device is None  # OpenCV in the workers: host arrays
    assert _torch_scorer().tile_device == "cpu"


def test_device_tiles_give_the_same_cells_as_the_same_pixels_from_the_host() -> None:
    tiles = np.stack([render_tile([CellSpec(0.5), CellSpec(0.15, 0.6)], size_px=256, seed=s) for s in range(3)])
    kept = np.array([True, False, True])
    scorer = _torch_scorer()
    scorer.stains = default_stain_vectors()

    def batch(**pixels: object) -> TileBatch:
        return TileBatch(np.arange(3), pixel_tissue_fraction=np.ones(3, np.float32), blur_score=np.ones(3, np.float32),
                         kept=kept, **pixels)  # type: ignore[arg-type]  # fmt: skip

    host = scorer.submit(batch(images=tiles)).result()
    # As the GPU decoder delivers them: a permuted (n, s, s, 3) view, no host array.
    on_device = torch.from_numpy(tiles).permute(0, 3, 1, 2).contiguous().permute(0, 2, 3, 1)
    device = scorer.submit(batch(images=None, device_images=on_device)).result()
    assert host.measurements["n_cells"].tolist() == device.measurements["n_cells"].tolist()
    assert len(device.measurements["n_cells"]) == 2 and min(device.measurements["n_cells"]) > 5
    assert host.tile_arrays.keys() == device.tile_arrays.keys()
    for key, arrays in host.tile_arrays.items():
        assert all(np.array_equal(a, b) for a, b in zip(arrays, device.tile_arrays[key], strict=True))
    with pytest.raises(ValueError, match="needs tile pixels"):
        scorer.submit(batch(images=None))


@pytest.fixture(scope="module")
def core_slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The centre of the real HER2 2+ core (2048 px, 0.25 µm/px) stored as a tiled JPEG SVS."""
    import cv2

    from wsi_her2.synthetic import write_image_slide

    rgb = cv2.cvtColor(cv2.imread(str(fixture_path("ihc", "her2-tma-core-score2plus.jpg"))), cv2.COLOR_BGR2RGB)
    y0, x0 = (rgb.shape[0] - 2048) // 2, (rgb.shape[1] - 2048) // 2
    path = tmp_path_factory.mktemp("core") / "core-2plus.svs"
    write_image_slide(path, rgb[y0 : y0 + 2048, x0 : x0 + 2048], mpp=0.25)
    return path


def test_a_real_core_decoded_on_the_device_scores_as_with_the_cpu_loader(core_slide: Path) -> None:
    from wsi_her2.pipeline import score_slide
    from wsi_her2.settings import ScoreSettings

    results = {}
    for decode in ("cpu", "gpu"):
        settings = ScoreSettings(loader=LoaderConfig(workers=0, decode=decode))
        results[decode] = score_slide(core_slide, _torch_scorer(), settings)
    cpu, dev = results["cpu"], results["gpu"]
    assert cpu.runtime["tile_decode"]["reason"] == "--decode cpu"
    assert dev.runtime["tile_decode"]["decode"] == "device" and dev.runtime["cell_analysis"].startswith("batched")
    assert cpu.predictions is not None and dev.predictions is not None
    assert np.array_equal(cpu.predictions.scored, dev.predictions.scored) and cpu.predictions.scored.sum() == 4
    # Same stored tiles, both decoded by libjpeg-turbo and shrunk 2:1 as OpenCV does: the same cells.
    n_cpu, n_dev = cpu.predictions.measurements["n_cells"], dev.predictions.measurements["n_cells"]
    assert np.all(np.abs(n_cpu - n_dev) <= 0.01 * n_cpu + 1) and n_cpu.min() > 100
    assert cpu.score is not None and dev.score is not None and cpu.score.score == dev.score.score == "2+"
    a, b = cpu.scorer_summary, dev.scorer_summary
    for cls in ("0", "1+", "2+", "3+"):
        assert abs(a["tumour_cells"]["fractions"][cls] - b["tumour_cells"]["fractions"][cls]) < 0.005
    assert abs(a["membrane_index"] - b["membrane_index"]) < 1
