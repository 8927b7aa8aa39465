"""Shared test fixtures: the real data in ../shared/fixtures and synthetic slides made here.

Tests that need the models extra (PyTorch, timm, grad-cam) say so once: a test with
``@pytest.mark.models``, a module that imports torch with ``require_models()`` at its top. On the
default install (``pip install .``, as the second CI configuration runs) they skip with the
reason below; nothing else in the suite checks for torch.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT.parent / "shared" / "fixtures"
MODELS_EXTRA = ("torch", "torchvision", "timm", "safetensors", "pytorch_grad_cam")
MISSING_MODELS = tuple(name for name in MODELS_EXTRA if importlib.util.find_spec(name) is None)
MODELS_REASON = f"needs the models extra (pip install 'wsi-her2[models]'): {', '.join(MISSING_MODELS)} not installed"


def require_models() -> None:
    """Skip the calling test module (at collection) when the models extra is not installed."""
    if MISSING_MODELS:
        pytest.skip(MODELS_REASON, allow_module_level=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``models`` skip, with the reason, when the models extra is not installed."""
    if MISSING_MODELS:
        skip = pytest.mark.skip(reason=MODELS_REASON)
        for item in items:
            if item.get_closest_marker("models") is not None:
                item.add_marker(skip)


def fixture_path(*parts: str) -> Path:
    """A real fixture file, or skip the test with a reason when the folder is absent."""
    path = FIXTURES.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real fixture {path} not present (../shared/fixtures is needed for this test)")
    return path


@pytest.fixture(scope="session")
def synthetic_slide(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """An 8192 x 6144 Aperio-style SVS at 0.25 µm/px with levels 1x/4x/16x and ~40% tissue."""
    from wsi_her2.synthetic import write_synthetic_slide

    path = tmp_path_factory.mktemp("slides") / "synthetic.svs"
    tissue = write_synthetic_slide(path, width=8192, height=6144, mpp=0.25, seed=1)
    return path, tissue


@pytest.fixture(scope="session")
def half_tissue_slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4096 x 4096 slide whose left half is tissue and right half glass (an exact, known mask)."""
    from wsi_her2.synthetic import write_synthetic_slide

    tissue = np.zeros((64, 64), bool)
    tissue[:, :32] = True
    path = tmp_path_factory.mktemp("slides") / "half.svs"
    write_synthetic_slide(path, width=4096, height=4096, mpp=0.5, tissue_map=tissue, seed=2)
    return path
