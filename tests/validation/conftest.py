"""Synthetic cases and their score folders, made once per session for the library tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import fixture_path
from tests.validation.helpers import MPP, write_case_image, write_restained_crop, write_tissue_image

PATTERNS = ("0", "faint6", "1+", "2+", "3+")


@pytest.fixture(scope="session")
def case_images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Pattern name -> a synthetic IHC image of that pattern (PNG, 0.5 µm/px)."""
    root = tmp_path_factory.mktemp("case-images")
    return {p: write_case_image(root / f"{k}.png", p, seed=k) for k, p in enumerate(PATTERNS)}


@pytest.fixture(scope="session")
def scored(case_images: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Pattern name -> the score folder of its image (DAB scorer, default settings, no loader processes)."""
    from wsi_her2.config import LoaderConfig
    from wsi_her2.settings import ScoreSettings, run_score

    root = tmp_path_factory.mktemp("scored")
    settings = ScoreSettings(loader=LoaderConfig(workers=0))
    folders = {}
    for k, (pattern, image) in enumerate(case_images.items()):
        folders[pattern] = root / f"score-{k}"
        run_score(image, folders[pattern], settings, mpp=MPP)
    return folders


@pytest.fixture(scope="session")
def tissue_scored(tmp_path_factory: pytest.TempPathFactory) -> dict[float, Path]:
    """Membrane OD -> the score folder of synthetic tissue with membranes of that OD (0: unstained, 0.06: faint)."""
    from wsi_her2.config import LoaderConfig
    from wsi_her2.pipeline import run_score
    from wsi_her2.settings import ScoreSettings

    root = tmp_path_factory.mktemp("tissue")
    settings = ScoreSettings(loader=LoaderConfig(workers=0))
    folders = {}
    for od in (0.0, 0.06):
        folders[od] = root / f"score-{od}"
        run_score(write_tissue_image(root / f"{od}.png", od, seed=3), folders[od], settings, mpp=MPP)
    return folders


@pytest.fixture(scope="session")
def restained_core(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 2+ core's central quarter with a third of its DAB (a weak chromogen run), as PNG at 0.25 µm/px."""
    source = fixture_path("ihc", "her2-tma-core-score2plus.jpg")
    return write_restained_crop(tmp_path_factory.mktemp("restained") / "core2-dab035.png", source, 0.35)


@pytest.fixture(scope="session")
def restained_scored(restained_core: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The score folder of the restained core (DAB scorer, default settings)."""
    from wsi_her2.config import LoaderConfig
    from wsi_her2.pipeline import run_score
    from wsi_her2.settings import ScoreSettings

    folder = tmp_path_factory.mktemp("restained-scored") / "score"
    run_score(restained_core, folder, ScoreSettings(loader=LoaderConfig(workers=0)), mpp=0.25)
    return folder
