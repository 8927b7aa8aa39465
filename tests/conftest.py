"""Shared test fixtures: the real data in ../shared/fixtures and synthetic slides made here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT.parent / "shared" / "fixtures"


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
